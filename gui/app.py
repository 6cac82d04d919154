"""The Qt application: ``run_app`` opens the main window (the welcome page, or the draft left by a crash)."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from gui.main_window import APP_NAME, MainWindow
from gui.settings import APPLICATION, ORGANIZATION
from gui.style import app_icon

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

__all__ = ["APP_NAME", "MainWindow", "open_main_window", "run_app"]


def open_main_window(argv: list[str] | None = None) -> MainWindow:
    """Set up the application (names, icon) and show the main window with the user's own settings and data folder;
    a draft left by a crash is offered as soon as the event loop runs."""
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName(APPLICATION)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())
    window = MainWindow()
    window.show()
    QTimer.singleShot(0, window.restore_draft)  # after the window is on screen, so the question has a parent
    return window


def run_app(argv: list[str] | None = None) -> int:
    window = open_main_window(argv)
    code = QApplication.instance().exec()
    del window
    return code
