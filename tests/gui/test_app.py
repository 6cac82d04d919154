"""`python main.py` opens the main window on the welcome page, with the demo project one click away (offscreen; the
user's own settings and data folder are replaced by temporary ones)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from gui.app import APP_NAME, MainWindow, open_main_window
from gui.settings import file_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_main_window_is_titled_transfer_studio(qtbot, tmp_path):
    window = MainWindow(settings=file_settings(tmp_path / "s.ini"), data_dir=tmp_path / "data")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "Transfer Studio" == APP_NAME
    assert window.stack.currentWidget() is window.welcome
    window.shutdown()


def test_the_app_opens_the_welcome_page_with_the_users_settings(qtbot, tmp_path, monkeypatch):
    # What `python main.py` shows (run_app is open_main_window followed by the event loop).
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "config"))
    window = open_main_window([])
    qtbot.addWidget(window)
    qtbot.waitExposed(window)
    assert window.isVisible() and window.windowTitle() == "Transfer Studio"
    assert window.stack.currentWidget() is window.welcome
    assert window.welcome.open_demo.isVisible() and window.welcome.open_demo.isEnabled()
    assert window.data_dir == tmp_path / "data" / "Transfer Studio"
    assert window.settings.fileName().startswith(str(tmp_path / "config"))
    assert QApplication.instance().organizationName() == "Transfer Studio"
    window.shutdown()


def test_garbage_is_collected_on_the_gui_thread_only(tmp_path):
    """In a fresh process, as the app starts: no automatic collection is left that could start on a worker thread and
    free Qt objects there; the GUI thread's timer collects instead."""
    import subprocess
    import sys

    code = ("import gc, sys; from PySide6.QtWidgets import QApplication; app = QApplication([]); "
            "assert gc.isenabled(); from gui.main_window import MainWindow; from gui.settings import file_settings; "
            f"w = MainWindow(settings=file_settings({str(tmp_path / 's.ini')!r}), data_dir={str(tmp_path / 'd')!r}); "
            "print('enabled' if gc.isenabled() else 'disabled'); w.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}, cwd=str(REPO_ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "disabled"
