"""The Qt application: ``run_app`` opens the main window (the welcome page, or the draft left by a crash).

From the start, an exception that nothing caught is shown as a sentence and logged in the data folder's ``logs/``
(gui.support.errors); the main window then puts the log in its own data folder."""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from engine.paths import resources_dir, user_data_dir
from gui.main_window import APP_NAME, MainWindow
from gui.settings import APPLICATION, ORGANIZATION
from gui.style import app_icon
from gui.support import errors

RESOURCES = resources_dir()

__all__ = ["APP_NAME", "MainWindow", "open_main_window", "run_app"]


def open_main_window(argv: list[str] | None = None, project: str | None = None) -> MainWindow:
    """Set up the application (names, icon) and show the main window with the user's own settings and data folder;
    a draft left by a crash is offered as soon as the event loop runs."""
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName(APPLICATION)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())
    errors.install(user_data_dir() / "logs")  # until the window installs its own: a failure while it opens
    window = MainWindow()
    window.show()
    QTimer.singleShot(0, window.restore_draft)  # after the window is on screen, so the question has a parent
    if project is not None:  # a project given on the command line (a double-click on a .tsproj file)
        QTimer.singleShot(0, lambda: window.open_project_file(project))
    return window


def run_app(argv: list[str] | None = None, project: str | None = None) -> int:
    try:
        window = open_main_window(argv, project)
    except Exception:  # noqa: BLE001 - the window could not open: say so in a box (closing it ends the app)
        reporter = errors.current()
        if reporter is None:
            raise
        reporter.report(*sys.exc_info())
        return QApplication.instance().exec() or 1
    code = QApplication.instance().exec()
    del window
    return code
