"""The dataset's health: what to fix before training (few pictures, imbalance, missing validation pictures, ...),
each with what to do about it, and the list of files left out with the reason for each."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QHeaderView, QLabel, QScrollArea, QSizePolicy, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from engine.data.scan import DatasetIndex
from gui import style

MAX_ROWS = 8  # the list of left-out files shows this many rows before it scrolls

# Advice that makes training worse or impossible; anything else is for information.
ATTENTION = frozenset({"few-images", "missing-in-train", "imbalance", "no-validation", "missing-in-val", "unreadable",
                       "empty-class", "small-pictures"})
TITLES = {
    "few-images": "Few pictures",
    "missing-in-train": "No training pictures",
    "imbalance": "Unbalanced classes",
    "no-validation": "No validation pictures",
    "missing-in-val": "Not measurable",
    "empty-class": "Empty class",
    "outside-class": "Pictures outside classes",
    "duplicate-path": "Repeated rows",
    "unreadable": "Unreadable files",
    "small-pictures": "Pictures smaller than the model's input",
}


class HealthPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary_icon = QLabel()
        self.summary = QLabel("Open a folder of pictures to check it.")
        self.summary.setWordWrap(True)
        font = self.summary.font()
        font.setBold(True)
        self.summary.setFont(font)
        head = QHBoxLayout()
        head.addWidget(self.summary_icon)
        head.addWidget(self.summary, 1)

        self.advice_box = QWidget()
        self.advice_layout = QVBoxLayout(self.advice_box)
        self.advice_layout.setContentsMargins(0, 0, 0, 0)
        self.advice_layout.setSpacing(8)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.advice_box)
        scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.advice_scroll = scroll

        self.files_title = QLabel()
        self.files = QTreeWidget()
        self.files.setColumnCount(2)
        self.files.setHeaderLabels(["File", "Why it was left out"])
        self.files.setRootIsDecorated(False)
        self.files.setUniformRowHeights(True)
        self.files.setAlternatingRowColors(True)
        self.files.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.files.header().setStretchLastSection(True)
        self.files.setColumnWidth(0, 170)
        self.files.setToolTip("Files that cannot be used, and why. Double-click one to open its folder; fix or "
                              "remove the file, then scan again.")
        self.files.itemDoubleClicked.connect(self._reveal)
        self.skipped = QLabel()
        self.skipped.setWordWrap(True)
        self.skipped.setEnabled(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(scroll, 3)
        layout.addWidget(self.files_title)
        layout.addWidget(self.files, 2)
        layout.addWidget(self.skipped)
        layout.addStretch(0)
        self.items: list[tuple[str, str]] = []  # (kind, message) shown, for tests and the status line
        self.model, self.index = "", None  # the project's model: its input size decides the small-pictures advice
        self.set_dataset(None)

    @property
    def attention_count(self) -> int:
        return sum(1 for kind, _ in self.items if kind in ATTENTION)

    def set_model(self, model: str) -> None:
        """The project's model (another one may change the small-pictures advice)."""
        if model != self.model:
            self.model = model
            if self.index is not None:
                self.set_dataset(self.index)

    def set_dataset(self, index: DatasetIndex | None, model: str | None = None) -> None:
        from engine.advise.picture_size import small_pictures_for

        self.index, self.model = index, (self.model if model is None else model)
        while self.advice_layout.count():
            item = self.advice_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.files.clear()
        if index is None:
            self.items = []
            self.summary_icon.setPixmap(style.icon("info").pixmap(22, 22))
            self.summary.setText("Open a folder of pictures to check it.")
            self.advice_scroll.hide()
            self.files_title.hide()
            self.files.hide()
            self.skipped.hide()
            return
        health = index.health
        small = small_pictures_for(index, self.model)
        found = list(health.advice) + ([small] if small is not None else [])
        self.items = [(a.kind, a.message) for a in found]
        attention = self.attention_count
        if attention:
            self.summary_icon.setPixmap(style.icon("warning").pixmap(22, 22))
            self.summary.setText(f"{attention} thing{'s' if attention > 1 else ''} to look at before training")
        else:
            self.summary_icon.setPixmap(style.icon("ok").pixmap(22, 22))
            self.summary.setText("No problems found: the pictures are ready for training.")
        self.advice_scroll.setVisible(bool(found))
        for advice in sorted(found, key=lambda a: a.kind not in ATTENTION):
            self.advice_layout.addWidget(_AdviceRow(advice.kind, advice.message))
        self.advice_layout.addStretch(1)

        root = index.root if os.path.isdir(index.root) else os.path.dirname(index.root)
        for problem in health.unreadable:
            shown = os.path.relpath(problem.path, root) if problem.path.startswith(root) else problem.path
            item = QTreeWidgetItem([shown, problem.reason])
            item.setToolTip(0, problem.path)
            item.setToolTip(1, problem.reason)
            item.setData(0, Qt.ItemDataRole.UserRole, problem.path)
            self.files.addTopLevelItem(item)
        count = len(health.unreadable)
        # As tall as its rows (up to MAX_ROWS), so that the advice above keeps the room.
        rows = min(max(count, 1), MAX_ROWS)
        row_height = self.files.fontMetrics().height() + 6
        self.files.setMaximumHeight(self.files.header().sizeHint().height() + rows * row_height
                                    + 2 * self.files.frameWidth() + 4)
        self.files_title.setText(f"Left out ({count:,} file{'s' if count != 1 else ''}):")
        self.files_title.setVisible(count > 0)
        self.files.setVisible(count > 0)
        if health.ignored:
            what = ("1 hidden file or file that is not a picture was" if health.ignored == 1 else
                    f"{health.ignored:,} hidden files or files that are not pictures were")
            self.skipped.setText(f"{what} skipped (that is fine).")
        self.skipped.setVisible(bool(health.ignored))

    def _reveal(self, item: QTreeWidgetItem) -> None:
        path = item.data(0, Qt.ItemDataRole.UserRole)
        if path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(os.path.dirname(path)))


class _AdviceRow(QWidget):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__()
        self.kind, self.message = kind, message
        icon = QLabel()
        icon.setPixmap(style.icon("warning" if kind in ATTENTION else "info").pixmap(18, 18))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        title = QLabel(f"<b>{TITLES.get(kind, kind)}</b>")
        text = QLabel(message)
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setToolTip(message)
        column = QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(title)
        column.addWidget(text)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(column, 1)
