"""The Qt application: ``run_app`` opens the main window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

APP_NAME = "Transfer Studio"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


class MainWindow(QMainWindow):
    """Placeholder until the window issues land: the title and a sentence saying what works today."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(APP_NAME)
        label = QLabel(
            "<h2>Transfer Studio</h2>"
            "<p>The window is being built. Everything already works from the command line:</p>"
            "<p><code>python main.py train --data FOLDER --model torchvision:mobilenet_v2 --weights pretrained</code></p>"
            "<p>Run <code>python main.py --help</code> for the commands.</p>"
        )
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setMargin(24)
        self.setCentralWidget(label)
        self.resize(900, 600)


def run_app(argv: list[str] | None = None) -> int:
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setWindowIcon(QIcon(str(RESOURCES / "icon.svg")))
    window = MainWindow()
    window.show()
    return app.exec()
