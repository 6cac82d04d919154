"""The thumbnail grid of a dataset, with filters by class and split, a search by file name and a larger preview.

The grid is a QListView in icon mode over ``PictureListModel``. With uniform item sizes and a static layout the
view asks the model only about the items it paints, so only those are decoded.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QLineEdit, QListView, QPushButton,
                               QStackedLayout, QVBoxLayout, QWidget)

from engine.data.scan import DatasetIndex
from gui.steps.data.picture_model import ALL, ClassRole, PathRole, PictureListModel, SplitRole
from gui.support.jobs import Jobs
from gui.widgets.format import plural
from gui.widgets.preview import PreviewDialog
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader

SEARCH_DELAY_MS = 200  # filter this long after the last key press, not on every key
SPLIT_CHOICES = ((ALL, "All splits"), ("train", "Training"), ("val", "Validation"), ("test", "Test"))


class PictureGrid(QListView):
    """The thumbnail grid: a list view in icon mode that lays out items without asking for each one's size."""

    def __init__(self, thumb_size: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)  # the list-mode layout: fast, and no dragging items about
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setUniformItemSizes(True)  # never ask every item for its size (that would decode all of them)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(2000)
        self.setIconSize(QSize(thumb_size, thumb_size))
        self.setGridSize(QSize(thumb_size + 28, thumb_size + 34))
        self.setSpacing(4)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setWordWrap(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(thumb_size // 3)
        self.setToolTip("")  # each picture has its own tooltip

    def visible_rows(self) -> list[int]:
        """The rows whose item lies at least partly inside the visible area."""
        model = self.model()
        if model is None or model.rowCount() == 0:
            return []
        area = self.viewport().rect()
        first = self.indexAt(area.topLeft() + self._inset())
        start = first.row() if first.isValid() else 0
        rows = []
        for row in range(start, model.rowCount()):
            rect = self.visualRect(model.index(row, 0))
            if rect.top() > area.bottom():
                break
            if rect.intersects(area):
                rows.append(row)
        return rows

    def _inset(self):
        from PySide6.QtCore import QPoint

        return QPoint(self.spacing() + 1, self.spacing() + 1)


class DatasetBrowser(QWidget):
    """Filters, the grid and a count; double-click opens the preview. Thumbnails and the preview are decoded on a
    lane of ``jobs`` (the window's job service), or on a service of the browser's own."""

    picture_opened = Signal(str)  # path

    def __init__(self, loader: ThumbnailLoader | None = None, cache: ThumbnailCache | None = None,
                 parent: QWidget | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)
        self.loader = loader or ThumbnailLoader(parent=self, jobs=self.jobs)
        self.model = PictureListModel(self.loader, cache, self)
        self.preview: PreviewDialog | None = None

        self.class_filter = QComboBox()
        self.class_filter.setToolTip("Show the pictures of one class only.")
        self.class_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.split_filter = QComboBox()
        self.split_filter.setToolTip("Show only the pictures used for training, for validation (measuring accuracy "
                                     "during training) or for the final test.")
        for key, label in SPLIT_CHOICES:
            self.split_filter.addItem(label, key)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search file names")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Show only the pictures whose file name contains this text (upper or lower case "
                               "does not matter).")
        self.count = QLabel()
        self.count.setToolTip("How many pictures the filters let through, out of all readable pictures.")

        filters = QHBoxLayout()
        filters.addWidget(self.class_filter)
        filters.addWidget(self.split_filter)
        filters.addWidget(self.search, 1)
        filters.addWidget(self.count)

        self.grid = PictureGrid(self.loader.size)
        self.grid.setModel(self.model)
        self.grid.doubleClicked.connect(self._open)
        self.grid.activated.connect(self._open)  # Enter on a picture, too

        self.empty = QWidget()
        self.empty_text = QLabel("No pictures match these filters.")
        self.empty_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_text.setWordWrap(True)
        clear = QPushButton("Show all pictures")
        clear.setToolTip("Clear the class, split and name filters.")
        clear.clicked.connect(self.clear_filters)
        empty_layout = QVBoxLayout(self.empty)
        empty_layout.addStretch(1)
        empty_layout.addWidget(self.empty_text)
        empty_layout.addWidget(clear, 0, Qt.AlignmentFlag.AlignHCenter)
        empty_layout.addStretch(2)

        self.stack = QStackedLayout()
        self.stack.addWidget(self.grid)
        self.stack.addWidget(self.empty)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addLayout(self.stack, 1)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._apply_filters)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self._apply_filters)
        self.class_filter.currentIndexChanged.connect(self._apply_filters)
        self.split_filter.currentIndexChanged.connect(self._apply_filters)
        self.model.filter_changed.connect(self._update_count)
        self._update_count()

    # -- content ---------------------------------------------------------------------------------------------

    def set_dataset(self, index: DatasetIndex | None) -> None:
        """Show ``index``. The same pictures again (scanned again, split anew) keep the filters and the place in the
        grid; another folder or project (announced by None first, or another root) starts unfiltered, at the top."""
        shown = self.model.dataset
        fresh = index is None or shown is None or index.root != shown.root
        if fresh:
            self._reset_filter_controls()
        self._fill_class_filter(index)
        self.model.set_dataset(index, keep_filter=not fresh)
        if fresh:
            self.grid.scrollToTop()

    def _reset_filter_controls(self) -> None:
        self._search_timer.stop()
        for widget in (self.class_filter, self.split_filter, self.search):
            widget.blockSignals(True)
        self.class_filter.setCurrentIndex(0)
        self.split_filter.setCurrentIndex(0)
        self.search.clear()
        for widget in (self.class_filter, self.split_filter, self.search):
            widget.blockSignals(False)

    def _fill_class_filter(self, index: DatasetIndex | None) -> None:
        current = self.class_filter.currentData() or ALL
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem("All classes", ALL)
        if index is not None:
            totals = {name: 0 for name in index.classes}
            for sample in index.samples:
                totals[index.classes[sample.label]] += 1
            for name in index.classes:
                self.class_filter.addItem(f"{name} ({totals[name]:,})", name)
        position = self.class_filter.findData(current)
        self.class_filter.setCurrentIndex(max(0, position))
        self.class_filter.blockSignals(False)

    # -- filters ---------------------------------------------------------------------------------------------

    def set_filters(self, class_name: str = ALL, split: str = ALL, text: str = "") -> None:
        """Set the three filters at once (what a user does with the controls)."""
        for combo, value in ((self.class_filter, class_name), (self.split_filter, split)):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(0, combo.findData(value)))
            combo.blockSignals(False)
        self.search.blockSignals(True)
        self.search.setText(text)
        self.search.blockSignals(False)
        self._apply_filters()

    def clear_filters(self) -> None:
        self.set_filters()

    def _apply_filters(self) -> None:
        self._search_timer.stop()
        self.model.set_filter(self.class_filter.currentData() or ALL, self.split_filter.currentData() or ALL,
                              self.search.text())
        self.grid.scrollToTop()

    def _update_count(self) -> None:
        shown, total = self.model.rowCount(), self.model.total
        self.count.setText(plural(shown, "picture") if shown == total else f"{shown:,} of {plural(total, 'picture')}")
        self.stack.setCurrentWidget(self.empty if total and not shown else self.grid)

    # -- preview ---------------------------------------------------------------------------------------------

    def _open(self, index) -> None:
        path = index.data(PathRole)
        if not path:
            return
        if self.preview is None:
            self.preview = PreviewDialog(self, jobs=self.jobs)
        self.preview.show_picture(path, index.data(ClassRole) or "", index.data(SplitRole) or "")
        self.preview.show()
        self.preview.raise_()
        self.picture_opened.emit(path)

    def shutdown(self) -> None:
        self.loader.shutdown()
        self.jobs.shutdown()
