"""The Data step: the project's pictures scanned in the background, shown as a grid with the class counts, the split
controls and the health report beside it.

The page scans whenever the project's dataset changes; split changes re-split the scanned pictures at once
(``engine.data.split.resplit``: no picture is decoded again) and are written to the project's RunConfig.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QSplitter,
                               QStackedLayout, QVBoxLayout, QWidget)

from engine.data.scan import DatasetIndex, apply_overrides
from gui import style
from gui.steps.data.class_chart import ClassCountChart
from gui.steps.data.format_controls import FormatControls
from gui.steps.data.browser import DatasetBrowser
from gui.widgets.format import plural
from gui.steps.data.health import HealthPanel
from gui.project import ProjectModel
from gui.steps.data.scan_worker import Prepare, Scanner
from gui.steps.data.review import ReviewView
from gui.steps.data.split_controls import SplitControls
from engine.data.split import resplit
from gui.support.jobs import Jobs
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader


class ScanBar(QWidget):
    """Progress of the running scan, with Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("Checking pictures ...")
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setToolTip("Every picture is opened once to find the ones that cannot be read.")
        self.cancel = QPushButton("Cancel")
        self.cancel.setIcon(style.icon("cancel"))
        self.cancel.setToolTip("Stop checking the pictures. Nothing is changed; you can scan again later.")
        self.cancel.clicked.connect(self.cancel_requested)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel)

    def set_phase(self, text: str) -> None:
        self.label.setText(text)
        self.bar.setRange(0, 0)  # busy until the first count arrives

    def set_progress(self, done: int, total: int) -> None:
        if total <= 0:
            self.bar.setRange(0, 0)
            return
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        self.bar.setFormat(f"{done:,} of {total:,}")


class DataPage(QWidget):
    """Emits ``status(sentence)`` for the status bar and ``state_changed`` when the step's state should be updated.
    Scans, thumbnails and the preview run on lanes of ``jobs`` (the window's job service), or of the page's own."""

    status = Signal(str)
    state_changed = Signal()
    open_folder_requested = Signal()
    prepared = Signal(object)  # what a scan's prepare step returned (the demo project), just before its dataset

    def __init__(self, project: ProjectModel, thumbnails: ThumbnailLoader | None = None,
                 cache: ThumbnailCache | None = None, parent: QWidget | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.jobs = Jobs(self, service=jobs)
        self.scanner = Scanner(self, jobs=self.jobs)
        self.error: str = ""  # the last scan's failure, as a sentence
        self.scanning = False
        self.scanned: DatasetIndex | None = None  # the last scan, without the review's decisions (overrides)

        # header: where the pictures are
        self.source = QLabel()
        self.source.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.source.setToolTip("The folder (or CSV file) the pictures come from.")
        self.change = QPushButton("Choose another folder...")
        self.change.setIcon(style.icon("open-folder"))
        self.change.setToolTip("Use the pictures of another folder in this project.")
        self.change.clicked.connect(self.open_folder_requested)
        self.rescan = QPushButton("Scan again")
        self.rescan.setIcon(style.icon("refresh"))
        self.rescan.setToolTip("Look at the folder again, after you added, removed or fixed pictures.")
        self.rescan.clicked.connect(self.start_scan)
        self.review_button = QPushButton("Review...")
        self.review_button.setIcon(style.icon("review"))  # not a warning: nothing was found before a review ran
        self.review_button.setToolTip("Look for likely wrong labels, copies (also between training and validation) "
                                      "and suspicious pictures, and decide what to do with each.")
        self.review_button.clicked.connect(self.show_review)
        self.review_button.setEnabled(False)
        header = QHBoxLayout()
        header.addWidget(self.source, 1)
        header.addWidget(self.review_button)
        header.addWidget(self.rescan)
        header.addWidget(self.change)

        self.scan_bar = ScanBar()
        self.scan_bar.cancel_requested.connect(self.cancel_scan)
        self.scan_bar.hide()

        # the grid
        self.browser = DatasetBrowser(thumbnails, cache, jobs=self.jobs)

        # the side: counts, split, health
        self.chart = ClassCountChart()
        self.split = SplitControls()
        self.split.split_changed.connect(self._on_split_changed)
        self.health = HealthPanel()
        self.formats = FormatControls()
        self.formats.settings_changed.connect(self._on_formats_changed)
        boxes = {}
        for title, widget in (("Pictures per class", self.chart), ("Training and validation", self.split),
                              ("How pictures are read", self.formats), ("Health", self.health)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(widget)
            boxes[title] = box
        # The split controls keep their natural height below the chart; the chart and the health report share the
        # rest, and the user can move the line between them.
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(boxes["Training and validation"])
        lower_layout.addWidget(boxes["How pictures are read"])  # shown for DICOM, 16-bit TIFF, channels, slides
        lower_layout.addWidget(boxes["Health"], 1)
        self.formats_box = boxes["How pictures are read"]
        self.formats_box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)  # never squashed
        self.formats_box.hide()
        self.side = QSplitter(Qt.Orientation.Vertical)
        self.side.setChildrenCollapsible(False)
        self.side.addWidget(boxes["Pictures per class"])
        self.side.addWidget(lower)
        self.side.setStretchFactor(0, 2)
        self.side.setStretchFactor(1, 3)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.browser)
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        # what shows instead of the grid when there is nothing to show
        self.message = QLabel()
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message_button = QPushButton("Open image folder...")
        self.message_button.setIcon(style.icon("open-folder"))
        self.message_button.setToolTip("Choose a folder with one sub-folder of pictures per class.")
        self.message_button.clicked.connect(self.open_folder_requested)
        empty = QWidget()
        empty_layout = QVBoxLayout(empty)
        empty_layout.addStretch(1)
        empty_layout.addWidget(self.message)
        empty_layout.addWidget(self.message_button, 0, Qt.AlignmentFlag.AlignHCenter)
        empty_layout.addStretch(2)
        self.empty = empty

        self.review = ReviewView(project, self.jobs)
        self.review.overrides_changed.connect(self._apply_overrides)
        self.review.rescan_requested.connect(self.start_scan)
        self.review.back_requested.connect(lambda: self.body.setCurrentWidget(self.splitter))
        self.review.status.connect(self.status)

        self.body = QStackedLayout()
        self.body.addWidget(self.splitter)
        self.body.addWidget(self.empty)
        self.body.addWidget(self.review)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addLayout(header)
        layout.addWidget(self.scan_bar)
        layout.addLayout(self.body, 1)

        self.scanner.phase.connect(self.scan_bar.set_phase)
        self.scanner.progress.connect(self.scan_bar.set_progress)
        self.scanner.finished.connect(self._on_scanned)
        self.scanner.failed.connect(self._on_failed)
        self.scanner.cancelled.connect(self._on_cancelled)
        project.project_replaced.connect(self._on_project_replaced)
        project.dataset_changed.connect(self._show_dataset)
        project.config_changed.connect(lambda config: self.health.set_model(config.model.name))
        self._show_dataset(None)

    # -- scanning --------------------------------------------------------------------------------------------

    def start_scan(self, prepare: Prepare | None = None) -> None:
        """Scan the project's dataset; or run ``prepare`` first (it makes the pictures, as for the demo) and scan the
        folder it returns; what it returns besides is announced with ``prepared`` before the dataset is shown."""
        prepare = prepare if callable(prepare) else None  # a button's clicked(bool) also lands here
        data = self.project.config.data
        if prepare is None and (not self.project.is_open or not data.source):
            self._show_dataset(None)
            return
        self.scanner.cancel()  # a scan still running ends first (its "cancelled" must not end this one)
        self.error = ""
        self.scanning = True
        self.scan_bar.set_phase("Checking pictures ...")
        self.scan_bar.show()
        self.rescan.setEnabled(False)
        self._show_message("Checking the pictures ...", button=False)
        if prepare is not None:
            self.source.setText("<b>Pictures:</b> being prepared ...")
        self.status.emit("Preparing the pictures ..." if prepare else f"Checking the pictures in {data.source} ...")
        self.scanner.start(data.source, data.val_fraction, data.test_fraction, data.split_seed, prepare, data.split,
                           formats=data)
        self.state_changed.emit()

    def cancel_scan(self) -> None:
        self.scanner.cancel()

    def shutdown(self) -> None:
        """Stop the scan and the thumbnails, and wait for them (the window's job service also does this)."""
        self.browser.shutdown()
        self.review.shutdown()
        self.jobs.shutdown()

    def _on_scanned(self, index: DatasetIndex, extra) -> None:
        self._scan_ended()
        if extra is not None:
            self.prepared.emit(extra)
        self.scanned = index
        self.review.set_index(index)
        data = self.project.config.data
        index = apply_overrides(index, data.exclude, data.relabel)
        self.project.set_dataset(index)
        counts = index.counts()
        sizes = ", ".join(f"{sum(counts[s].values()):,} {w}" for s, w in
                          (("train", "training"), ("val", "validation"), ("test", "test")) if any(counts[s].values()))
        from gui.widgets.task_heads import class_words  # several tasks: their classes, not the combinations (#17)

        self.status.emit(f"{class_words(index)}: {sizes} pictures.")

    def _on_failed(self, message: str) -> None:
        self._scan_ended()
        self.error = message
        self.scanned = None
        self.review.set_index(None)
        self.project.set_dataset(None)
        self._show_message(message + "\n\nChoose another folder, or fix this one and scan again.", button=True)
        self.status.emit(message)
        self.state_changed.emit()

    def _on_cancelled(self) -> None:
        self._scan_ended()
        self.error = "The scan was cancelled."
        if self.project.dataset is None:
            self._show_message("Checking the pictures was cancelled. Press 'Scan again' to look at them.",
                               button=False)
        self.status.emit("Scan cancelled.")
        self.state_changed.emit()

    def _scan_ended(self) -> None:
        self.scanning = False
        self.scan_bar.hide()
        self.rescan.setEnabled(True)

    # -- showing ---------------------------------------------------------------------------------------------

    def _on_project_replaced(self) -> None:
        self.scanner.cancel()
        self.error = ""
        self.scanned = None
        self.review.set_index(None)
        self._show_dataset(None)

    def _show_dataset(self, index: DatasetIndex | None) -> None:
        source = self.project.config.data.source if self.project.is_open else ""
        self.source.setText(f"<b>Pictures:</b> {source}" if source else "<b>Pictures:</b> none chosen yet")
        self.rescan.setVisible(bool(source))
        self.browser.set_dataset(index)
        self.split.set_state(index, self.project.config.data)
        self.formats.set_state(index, self.project.config.data)
        self.formats_box.setVisible(FormatControls.relevant(index, self.project.config.data))
        self.health.set_dataset(index, self.project.config.model.name)
        self.review_button.setEnabled(index is not None and self.scanned is not None)
        if index is None:
            self.chart.set_counts([], {})
            if not self.scanning and not self.error:
                self._show_message("Drop a folder of pictures here, or choose one.\nThe folder should hold one "
                                   "sub-folder per class (for example cats/ and dogs/), or train/ and val/ folders.",
                                   button=True)
        else:
            from gui.widgets.task_counts import chart_counts  # several tasks: bars per task and class (issue #17)

            self.chart.set_counts(*chart_counts(index))
            if self.body.currentWidget() is not self.review:
                self.body.setCurrentWidget(self.splitter)
        self.state_changed.emit()

    def _show_message(self, text: str, button: bool) -> None:
        self.message.setText(text)
        self.message_button.setVisible(button)
        self.body.setCurrentWidget(self.empty)

    # -- how pictures are read ---------------------------------------------------------------------------------

    def _on_formats_changed(self, values: dict) -> None:
        """A data setting changed (DICOM window, stretch, channels, tiles ...): keep it and read the pictures again."""
        data = self.project.config.data
        changes = {name: value for name, value in values.items() if getattr(data, name) != value}
        if not changes:
            return
        self.project.update_data(**changes)
        self.status.emit("Reading the pictures again with the new settings ...")
        self.start_scan()

    # -- splitting -------------------------------------------------------------------------------------------

    def _on_split_changed(self, val: float, test: float, seed: int) -> None:
        index = self.scanned
        if index is None:
            return
        mode = self.split.mode()
        self.project.update_data(val_fraction=val, test_fraction=test, split_seed=seed, split=mode)
        self.scanned = resplit(index, val, test, seed, mode)
        self.review.set_index(self.scanned)
        self._apply_overrides()

    # -- the review --------------------------------------------------------------------------------------------

    def show_review(self) -> None:
        """The Review view: the data doctor's findings and the user's decisions."""
        if self.scanned is not None:
            self.body.setCurrentWidget(self.review)

    def _apply_overrides(self) -> None:
        """The dataset with the review's decisions, for the grid, the counts, the health report and training."""
        if self.scanned is None:
            return
        data = self.project.config.data
        self.project.set_dataset(apply_overrides(self.scanned, data.exclude, data.relabel))
