"""The pictures of a scanned dataset as a Qt list model, filtered by class, split and file name.

The model keeps the filtered rows itself (a list of indices into the dataset's samples) instead of using a
QSortFilterProxyModel: with 50,000 pictures, one list comprehension per filter change is much faster than a Python
``filterAcceptsRow`` call per row. Thumbnails come from a ``ThumbnailLoader`` when an item is painted and are cached
by file path, so they survive filtering and re-splitting.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import os
import re

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap

from engine.data.formats import display_name
from engine.data.scan import SPLITS, DatasetIndex, Sample
from gui.widgets.thumbnails import ThumbnailCache, ThumbnailLoader, placeholder_pixmap

ALL = ""  # the "any class" / "any split" filter value

PathRole = Qt.ItemDataRole.UserRole + 1
ClassRole = Qt.ItemDataRole.UserRole + 2
SplitRole = Qt.ItemDataRole.UserRole + 3

SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def display_order(index: DatasetIndex) -> list[int]:
    """The order the grid shows the samples in: training pictures first, then validation, then test (as the work
    goes); within a split by class, then by file name."""
    rank = {name: i for i, name in enumerate(SPLITS)}
    samples = index.samples
    return sorted(range(len(samples)), key=lambda i: (rank.get(samples[i].split, len(rank)), samples[i].label,
                                                      natural_key(os.path.basename(samples[i].path)), samples[i].path))


def natural_key(name: str) -> list:
    """'img-2.png' before 'img-10.png', as a file manager sorts them: digit runs compare as numbers. The pieces
    alternate text and number, so two keys always compare text with text and number with number."""
    parts = re.split(r"(\d+)", name.lower())
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]


class PictureListModel(QAbstractListModel):
    filter_changed = Signal()

    def __init__(self, loader: ThumbnailLoader, cache: ThumbnailCache | None = None, parent=None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.cache = cache or ThumbnailCache()
        self._index: DatasetIndex | None = None
        self._order: list[int] = []  # indices into self._index.samples, in display order (see display_order)
        self._rows: list[int] = []  # those of self._order that the filters let through
        self._row_of: dict[str, int] = {}  # path -> row, for the rows shown
        self._broken: dict[str, str] = {}  # path -> why its thumbnail cannot be made
        self._filter = (ALL, ALL, "")
        self._formats: dict | None = None  # the data settings of the dataset shown (engine.data.formats)
        self._placeholder = placeholder_pixmap(loader.size, QColor(128, 128, 128, 40))
        self._broken_pixmap = placeholder_pixmap(loader.size, QColor(213, 94, 0, 90))  # Okabe-Ito vermillion
        loader.loaded.connect(self._on_loaded)
        loader.failed.connect(self._on_failed)

    # -- content ---------------------------------------------------------------------------------------------

    @property
    def dataset(self) -> DatasetIndex | None:
        return self._index

    def set_dataset(self, index: DatasetIndex | None, keep_filter: bool = True) -> None:
        """Show ``index`` (keeping the filters that still make sense, or none with ``keep_filter=False``); None
        empties the grid."""
        self.loader.cancel_pending()
        settings = (index.formats or {}).get("settings") if index is not None else None
        if settings != self._formats:  # lab pictures read with other settings: the thumbnails made before are stale
            self._formats = settings
            self.cache.clear()
            self._broken.clear()
        self._index = index
        self._order = display_order(index) if index is not None else []
        class_name, split, text = self._filter if keep_filter else (ALL, ALL, "")
        if index is None or class_name not in index.classes:
            class_name = ALL
        self._apply(class_name, split, text)

    def set_filter(self, class_name: str = ALL, split: str = ALL, text: str = "") -> None:
        if (class_name, split, text.strip()) == self._filter:
            return
        self.loader.cancel_pending()  # the pictures asked for may not be shown any more
        self._apply(class_name, split, text.strip())

    @property
    def filter(self) -> tuple[str, str, str]:
        return self._filter

    @property
    def total(self) -> int:
        return len(self._index.samples) if self._index else 0

    def sample(self, row: int) -> Sample:
        return self._index.samples[self._rows[row]]

    def row_of(self, path: str) -> int | None:
        return self._row_of.get(path)

    def _apply(self, class_name: str, split: str, text: str) -> None:
        self.beginResetModel()
        self._filter = (class_name, split, text)
        if self._index is None:
            self._rows = []
        else:
            samples = self._index.samples
            label = self._index.classes.index(class_name) if class_name else -1
            needle = text.lower()
            self._rows = [
                i for i in self._order
                if (label < 0 or samples[i].label == label) and (not split or samples[i].split == split)
                and (not needle or needle in os.path.basename(samples[i].path).lower())
            ]
        self._row_of = {self._index.samples[i].path: row for row, i in enumerate(self._rows)} if self._index else {}
        self.endResetModel()
        self.filter_changed.emit()

    # -- Qt model --------------------------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self._index is None:
            return None
        sample = self._index.samples[self._rows[index.row()]]
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbnail(sample.path)
        if role == Qt.ItemDataRole.DisplayRole:
            return display_name(sample.path, short=True)  # the file name (a slide's tile, a DICOM's frame), no tag
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [display_name(sample.path), f"Class: {self._index.classes[sample.label]}",
                     f"Used for: {SPLIT_WORDS.get(sample.split, sample.split)}", sample.path]
            if sample.path in self._broken:
                lines.append(self._broken[sample.path])
            lines.append("Double-click for a larger view.")
            return "\n".join(lines)
        if role == PathRole:
            return sample.path
        if role == ClassRole:
            return self._index.classes[sample.label]
        if role == SplitRole:
            return sample.split
        return None

    def flags(self, index):
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    # -- thumbnails ------------------------------------------------------------------------------------------

    def _thumbnail(self, path: str) -> QPixmap:
        pixmap = self.cache.get(path)
        if pixmap is not None:
            return pixmap
        if path in self._broken:
            return self._broken_pixmap
        self.loader.request(path)
        return self._placeholder

    def has_thumbnail(self, row: int) -> bool:
        path = self._index.samples[self._rows[row]].path
        return path in self.cache or path in self._broken

    def _on_loaded(self, path: str, image: QImage) -> None:
        self.cache.put(path, QPixmap.fromImage(image))
        self._changed(path)

    def _on_failed(self, path: str, reason: str) -> None:
        self._broken[path] = reason
        self._changed(path)

    def _changed(self, path: str) -> None:
        row = self._row_of.get(path)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
