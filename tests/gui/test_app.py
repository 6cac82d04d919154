"""The window opens with its title (offscreen)."""

from __future__ import annotations

from gui.app import APP_NAME, MainWindow


def test_main_window_is_titled_transfer_studio(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "Transfer Studio" == APP_NAME
    assert "command line" in window.centralWidget().text()
