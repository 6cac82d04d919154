"""Widgets shared by the Evaluate and Predict & Export steps: a list of pictures with thumbnails, a large view of one
picture, and the picture panel with its heat-map switch (computed in the background by ``gui.support.jobs``)."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import html
import os
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QHBoxLayout, QLabel, QListView, QSizePolicy,
                               QVBoxLayout, QWidget)

from gui.support.jobs import Jobs, ModelCache, heat_map_view, load_view, to_qimage
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader, placeholder_pixmap

VERMILLION = "#D55E00"
GREEN = "#009E73"

MAX_OVERLAYS = 24  # heat maps kept for going back and forth between pictures
PathRole = Qt.ItemDataRole.UserRole + 1
KeyRole = Qt.ItemDataRole.UserRole + 2


def square_pixmap(image: QImage, size: int) -> QPixmap:
    """The thumbnail centred on a transparent square, so that every item of a list or grid has the same size and
    the captions line up."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.drawImage((size - image.width()) // 2, (size - image.height()) // 2, image)
    painter.end()
    return pixmap


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def error_html(message: str) -> str:
    return f"<span style='color:{VERMILLION}'>{html.escape(message)}</span>"


@dataclass(frozen=True)
class PictureItem:
    path: str
    text: str  # shown under (grid) or beside (list) the thumbnail; may hold line breaks
    tooltip: str
    key: object = None  # what the page needs to find the item again (a sample index, a row ...)
    wrong: bool = False  # drawn with a vermillion mark


class PictureItemsModel(QAbstractListModel):
    """Pictures with a caption; thumbnails are decoded off the GUI thread when an item is painted."""

    def __init__(self, loader: ThumbnailLoader, cache: ThumbnailCache | None = None, parent=None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.cache = cache or ThumbnailCache()
        self.items: list[PictureItem] = []
        self._rows: dict[str, list[int]] = {}
        self._broken: dict[str, str] = {}
        self._placeholder = placeholder_pixmap(loader.size, QColor(128, 128, 128, 40))
        self._broken_pixmap = placeholder_pixmap(loader.size, QColor(213, 94, 0, 90))
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(self._on_failed)

    def set_items(self, items: list[PictureItem]) -> None:
        self.loader.cancel_pending()
        self.beginResetModel()
        self.items = list(items)
        self._rows = {}
        for row, item in enumerate(self.items):
            self._rows.setdefault(item.path, []).append(row)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def data(self, index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.text
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self.cache.get(item.path)
            if pixmap is not None:
                return pixmap
            if item.path in self._broken:
                return self._broken_pixmap
            self.loader.request(item.path)
            return self._placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            extra = f"\n{self._broken[item.path]}" if item.path in self._broken else ""
            return item.tooltip + extra
        if role == Qt.ItemDataRole.ForegroundRole and item.wrong:
            return QColor(VERMILLION)
        if role == PathRole:
            return item.path
        if role == KeyRole:
            return item.key
        return None

    def _on_loaded(self, path: str, image: QImage) -> None:
        self.cache.put(path, square_pixmap(image, self.loader.size))
        self._changed(path)

    def _on_failed(self, path: str, reason: str) -> None:
        self._broken[path] = reason
        self._changed(path)

    def _changed(self, path: str) -> None:
        for row in self._rows.get(path, []):
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class Gallery(QListView):
    """Thumbnails in a wrapping grid (``grid=True``) or a list with a longer caption beside each picture."""

    def __init__(self, model: PictureItemsModel, thumb: int, grid: bool = True, lines: int = 2,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModel(model)
        self.setIconSize(QSize(thumb, thumb))
        self.setUniformItemSizes(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        line = self.fontMetrics().height()
        if grid:
            self.setViewMode(QListView.ViewMode.IconMode)
            self.setMovement(QListView.Movement.Static)
            self.setResizeMode(QListView.ResizeMode.Adjust)
            self.setWrapping(True)
            self.setWordWrap(True)
            self.setGridSize(QSize(max(thumb + 24, 132), thumb + 12 + lines * line))
            self.setTextElideMode(Qt.TextElideMode.ElideRight)
        else:
            self.setViewMode(QListView.ViewMode.ListMode)
            self.setWordWrap(True)
            self.setSpacing(2)
            self.setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def select_row(self, row: int) -> None:
        index = self.model().index(row, 0)
        self.setCurrentIndex(index)
        self.scrollTo(index)


class ImageView(QWidget):
    """One picture, scaled to fit and centred, or a sentence when there is none."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image: QImage | None = None
        self.placeholder = placeholder
        self.setMinimumSize(160, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: QImage | None) -> None:
        self.image = image
        self.update()

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(360, 300)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        rect = self.rect()
        if self.image is None or self.image.isNull():
            painter.setPen(self.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText))
            painter.drawText(rect.adjusted(12, 12, -12, -12), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        size = self.image.size().scaled(rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = (rect.width() - size.width()) / 2
        y = (rect.height() - size.height()) / 2
        painter.drawImage(QRectF(x, y, size.width(), size.height()), self.image)


class PicturePanel(QWidget):
    """The picture chosen in a gallery or table, shown large, with a switch for its heat map (Grad-CAM).

    ``folder()`` gives the run (or bundle) folder whose model explains the picture. Loading the picture and making
    the heat map happen on ``jobs``; the model is taken from ``cache``."""

    heatMapShown = Signal(bool)  # True when the overlay is on screen, False when the plain picture is

    def __init__(self, jobs: Jobs, cache: ModelCache, folder: Callable[[], str | None],
                 placeholder: str = "Choose a picture to see it larger.", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs, self.cache, self.folder = jobs, cache, folder
        self.path: str | None = None
        self.base: QImage | None = None  # the picture of ``path`` as last loaded
        self.overlays: dict[tuple, tuple[QImage, QImage, str]] = {}  # (folder, path, class) -> views and words
        self.showing_overlay = False

        self.view = ImageView(placeholder)
        self.view.setAccessibleName("Chosen picture")
        self.heat = QCheckBox("Show the heat map")
        self.heat.setToolTip("Lay a heat map over the picture: bright areas are the parts that made the model choose "
                             "the class (Grad-CAM). Useful to check that it looks at the right thing, not at the "
                             "background, a ruler or a label.")
        self.target = QComboBox()
        self.target.setToolTip("Which class the heat map explains: by default the model's answer; choose another "
                               "class to see what in the picture speaks for it.")
        self.target.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        row = QHBoxLayout()
        row.addWidget(self.heat)
        self.for_label = QLabel("for")
        row.addWidget(self.for_label)
        row.addWidget(self.target)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)
        layout.addWidget(self.info)
        layout.addWidget(self.status)
        self.heat.toggled.connect(self._refresh)
        self.target.currentIndexChanged.connect(lambda _: self._refresh() if self.heat.isChecked() else None)
        self.clear()

    def clear(self) -> None:
        self.jobs.cancel("picture")
        self.jobs.cancel("heatmap")
        self.path = None
        self.base = None
        self.showing_overlay = False
        self.view.set_image(None)
        self.info.setText("")
        self.status.setText("")
        self.target.clear()
        for w in (self.heat, self.target, self.for_label):
            w.setEnabled(False)

    def forget_heat_maps(self) -> None:
        self.overlays.clear()

    def show_picture(self, path: str, info_html: str, classes: list[tuple[int, str]] | None = None) -> None:
        """Show ``path`` with ``info_html`` below it; ``classes`` (index, words) fill the heat map's class choice,
        the model's answer first."""
        self.path = path
        self.base = None
        self.info.setText(info_html)
        self.target.blockSignals(True)
        self.target.clear()
        for index, words in classes or []:
            self.target.addItem(words, index)
        self.target.blockSignals(False)
        for w in (self.heat, self.target, self.for_label):
            w.setEnabled(True)
        self.target.setVisible(self.target.count() > 1)
        self.for_label.setVisible(self.target.count() > 1)
        self._refresh()

    def _key(self) -> tuple:
        return (self.folder(), self.path, self.target.currentData())

    def _refresh(self) -> None:
        path = self.path
        self.status.setText("")
        if path is None:
            return
        if self.heat.isChecked():
            key = self._key()
            if key in self.overlays:
                self._show_overlay(key, self.overlays[key])
                return
            folder = self.folder()
            if not folder:
                self.status.setText(error_html("Choose a model first."))
                return
            target = self.target.currentData()
            self.status.setText("Making the heat map ...")
            self.jobs.cancel("picture", notify=False)
            self.jobs.start("heatmap", lambda progress, stop: heat_map_view(self.cache, folder, path, target),
                            lambda result, key=key: self._heat_done(key, result), on_error=self._failed,
                            on_cancel=lambda: None, what="The heat map")
        else:
            self.jobs.cancel("heatmap", notify=False)
            self.showing_overlay = False
            if self.base is not None:
                self.view.set_image(self.base)
                self.heatMapShown.emit(False)
                return
            self.view.set_image(None)
            self.view.set_placeholder("Loading the picture ...")
            self.jobs.start("picture", lambda progress, stop: to_qimage(load_view(path)),
                            lambda image, path=path: self._picture_done(path, image), on_error=self._failed,
                            what="Showing the picture")

    def _picture_done(self, path: str, image: QImage) -> None:
        if path != self.path:
            return
        self.base = image
        if not self.heat.isChecked():
            self.view.set_image(image)
            self.heatMapShown.emit(False)

    def _heat_done(self, key: tuple, result: tuple[QImage, QImage, str]) -> None:
        self.overlays[key] = result
        while len(self.overlays) > MAX_OVERLAYS:  # a few MB each: keep the latest only
            del self.overlays[next(iter(self.overlays))]
        if key == self._key() and self.heat.isChecked():
            self._show_overlay(key, result)

    def _show_overlay(self, key: tuple, result: tuple[QImage, QImage, str]) -> None:
        base, mixed, words = result
        self.base = base
        self.view.set_image(mixed)
        self.status.setText(html.escape(words, quote=False))
        self.showing_overlay = True
        self.heatMapShown.emit(True)

    def _failed(self, message: str) -> None:
        self.view.set_placeholder("")
        self.status.setText(error_html(message))
        self.showing_overlay = False


def file_name(path: str) -> str:
    return os.path.basename(path) or path
