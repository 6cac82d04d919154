"""The first page: open a folder of pictures, open a project, try the demo, or pick a recent project."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QCommandLinkButton, QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QSizePolicy, QVBoxLayout, QWidget)

from gui import style


class WelcomePage(QWidget):
    open_folder_requested = Signal()
    open_project_requested = Signal()
    open_demo_requested = Signal()
    recent_requested = Signal(str)  # the project file

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        logo = QLabel()
        logo.setPixmap(style.app_icon().pixmap(64, 64))
        title = QLabel("<h1 style='margin:0'>Transfer Studio</h1>")
        tagline = QLabel("Teach a pretrained image model to recognise your own pictures, on this computer.")
        tagline.setWordWrap(True)
        heading = QHBoxLayout()
        heading.addWidget(logo, 0, Qt.AlignmentFlag.AlignTop)
        words = QVBoxLayout()
        words.addWidget(title)
        words.addWidget(tagline)
        heading.addLayout(words, 1)

        self.open_folder = self._action_button(
            "open-folder", "Open image folder...", "Start a new project from a folder with one sub-folder per class.",
            "Choose a folder whose sub-folders are your classes (for example cats/ and dogs/), or that has train/ "
            "and val/ folders. You can also drop a folder on this window.")
        self.open_project = self._action_button(
            "open-project", "Open project...", "Continue a project you saved before.",
            "Open a Transfer Studio project file (.tsproj).")
        self.open_demo = self._action_button(
            "demo", "Open demo project", "Try everything on a small set of generated pictures; no download needed.",
            "Makes 180 small pictures of three patterns (checks, dots, stripes) in your data folder and sets up "
            "a small model that learns them in under a minute, without downloading anything.")
        self.open_folder.clicked.connect(self.open_folder_requested)
        self.open_project.clicked.connect(self.open_project_requested)
        self.open_demo.clicked.connect(self.open_demo_requested)

        actions = QVBoxLayout()
        actions.setSpacing(10)
        for button in (self.open_folder, self.open_project, self.open_demo):
            actions.addWidget(button)
        actions.addStretch(1)

        self.recent_title = QLabel("<b>Recent projects</b>")
        self.recent = QListWidget()
        self.recent.setToolTip("Projects you opened or saved recently. Click one to open it.")
        self.recent.setIconSize(QSize(18, 18))
        self.recent.itemActivated.connect(self._open_recent)
        self.recent.itemClicked.connect(self._open_recent)
        self.recent_empty = QLabel("Projects you save will be listed here.")
        self.recent_empty.setEnabled(False)
        self.recent_empty.setWordWrap(True)
        recent = QVBoxLayout()
        recent.addWidget(self.recent_title)
        recent.addWidget(self.recent, 1)
        recent.addWidget(self.recent_empty)
        recent.addStretch(0)

        columns = QHBoxLayout()
        columns.setSpacing(32)
        columns.addLayout(actions, 3)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.VLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        columns.addWidget(line)
        columns.addLayout(recent, 2)

        self.drop_hint = QLabel("Tip: drop a folder of pictures anywhere on this window to open it.")
        self.drop_hint.setEnabled(False)

        body = QVBoxLayout()
        body.setSpacing(24)
        body.addLayout(heading)
        body.addLayout(columns, 1)
        body.addWidget(self.drop_hint)
        panel = QWidget()
        panel.setLayout(body)
        panel.setMaximumWidth(900)
        panel.setMaximumHeight(620)
        panel.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(panel, 20)
        row.addStretch(1)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(40, 32, 40, 32)
        outer.addStretch(1)
        outer.addLayout(row, 12)
        outer.addStretch(1)
        self.set_recent([])

    def _action_button(self, icon: str, title: str, detail: str, tip: str) -> QCommandLinkButton:
        button = QCommandLinkButton(title, detail)
        button.setIcon(style.icon(icon))
        button.setIconSize(QSize(28, 28))
        button.setToolTip(tip)
        button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        return button

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        for path in paths:
            item = QListWidgetItem(style.icon("recent"), Path(path).stem)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            self.recent.addItem(item)
        self.recent.setVisible(bool(paths))
        self.recent_empty.setVisible(not paths)

    def _open_recent(self, item: QListWidgetItem) -> None:
        self.recent_requested.emit(item.data(Qt.ItemDataRole.UserRole))
