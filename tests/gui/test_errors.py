"""No exception reaches only the terminal: one that nothing caught (in a slot, on a worker thread, while the window
opens) is counted, logged in the data folder's logs/ and shown as a sentence with "Copy details", one box at a time.

The app's handler passes each exception on to the hook that was there before it: here a recorder standing in for the
terminal's (pytest-qt's own capture is off in this module, since these exceptions are raised on purpose)."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, QThread, QTimer, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from engine.errors import UserError
from gui.main_window import MainWindow
from gui.settings import file_settings
from gui.support import errors

pytestmark = pytest.mark.qt_no_exception_capture


@pytest.fixture(autouse=True)
def terminal(monkeypatch):
    """The hook before the app's (the terminal's): records what reaches it."""
    reached = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc_info: reached.append(exc_info))
    return reached


def make_window(qtbot, tmp_path) -> MainWindow:
    window = MainWindow(settings=file_settings(tmp_path / "settings.ini"), data_dir=tmp_path / "data")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def broken_button(window, exc: Exception) -> QPushButton:
    button = QPushButton("Broken", window)

    def fail():
        raise exc

    button.clicked.connect(fail)
    return button


def visible_boxes() -> list[QMessageBox]:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def test_a_slot_that_raises_shows_a_sentence_logs_the_traceback_and_is_counted(qtbot, tmp_path, terminal):
    window = make_window(qtbot, tmp_path)
    reporter = window.error_reporter
    assert reporter.count == 0
    button = broken_button(window, ZeroDivisionError("division by zero"))
    button.click()
    qtbot.waitUntil(lambda: reporter.box is not None and reporter.box.isVisible())
    assert len(terminal) == 1  # passed on to the hook that was there before
    assert reporter.count == 1

    box = reporter.box
    assert box.text() == errors.sentence_for(ZeroDivisionError())
    assert "Traceback" not in box.text() + box.informativeText()
    log = tmp_path / "data" / "logs" / "errors.log"
    assert str(log) in box.informativeText()
    assert "ZeroDivisionError: division by zero" in log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in box.detailedText()
    assert "in fail" in box.detailedText()

    reporter.copy_button.click()  # copies, and the box stays open
    assert "ZeroDivisionError: division by zero" in QGuiApplication.clipboard().text()
    assert box.isVisible()
    box.button(QMessageBox.StandardButton.Close).click()
    assert not box.isVisible()
    window.shutdown()


def test_an_exception_that_repeats_opens_one_box_not_hundreds(qtbot, tmp_path, terminal):
    window = make_window(qtbot, tmp_path)
    reporter = window.error_reporter
    timer = QTimer(window)
    timer.setInterval(0)
    ticks = []

    def tick():
        ticks.append(1)
        if len(ticks) >= 200:
            timer.stop()
        raise RuntimeError("a timer that fails every time")

    timer.timeout.connect(tick)
    timer.start()
    qtbot.waitUntil(lambda: not timer.isActive())
    qtbot.waitUntil(lambda: reporter.box is not None and "200 times" in reporter.box.informativeText())
    assert len(terminal) == reporter.count == 200
    assert len(visible_boxes()) == 1

    # Once dismissed, the same problem is only logged and counted (and said in the status bar).
    reporter.box.button(QMessageBox.StandardButton.Close).click()
    timer.start()
    qtbot.waitUntil(lambda: reporter.count == 201)
    qtbot.waitUntil(lambda: "happened again" in window.statusBar().currentMessage())
    timer.stop()
    assert visible_boxes() == []
    log = (tmp_path / "data" / "logs" / "errors.log").read_text(encoding="utf-8")
    assert log.count("RuntimeError: a timer that fails every time") == 201
    window.shutdown()


def test_a_problem_the_user_can_fix_is_shown_in_its_own_words(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    reporter = window.error_reporter
    button = broken_button(window, UserError("The folder /pictures has no sub-folders: make one per class."))
    button.click()
    qtbot.waitUntil(lambda: reporter.box is not None and reporter.box.isVisible())
    assert reporter.box.text() == "The folder /pictures has no sub-folders: make one per class."
    window.shutdown()


class Worker(QObject):
    @Slot()
    def run(self):
        raise ValueError("raised on the training thread")


def test_an_exception_on_a_worker_thread_is_shown_by_the_window(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    reporter = window.error_reporter
    thread = QThread()
    worker = Worker()
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    thread.start()
    qtbot.waitUntil(lambda: reporter.box is not None and reporter.box.isVisible())
    thread.quit()
    thread.wait()
    assert reporter.count == 1
    assert "raised on the training thread" in reporter.box.detailedText()
    window.shutdown()


def test_the_log_is_rotated_and_capped(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(errors, "LOG_MAX_BYTES", 3_000)
    reporter = errors.install(tmp_path / "logs")
    button = broken_button(None, KeyError("x" * 500))
    for _ in range(40):
        button.click()
    assert reporter.count == 40
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["errors.log", "errors.log.1", "errors.log.2", "errors.log.3"]
    assert all(p.stat().st_size < 6_000 for p in (tmp_path / "logs").iterdir())


def test_a_second_window_replaces_the_handler_rather_than_adding_one(qtbot, tmp_path, terminal):
    first = make_window(qtbot, tmp_path / "one")
    second = make_window(qtbot, tmp_path / "two")
    button = broken_button(second, OSError(13, "Permission denied", "/pictures/cat.jpg"))
    button.click()
    qtbot.waitUntil(lambda: second.error_reporter.box is not None)
    assert len(terminal) == 1
    assert (first.error_reporter.count, second.error_reporter.count) == (0, 1)
    assert second.error_reporter.box.text() == "Transfer Studio could not use /pictures/cat.jpg: Permission denied."
    assert not (tmp_path / "one" / "data" / "logs").exists()
    first.shutdown()
    second.shutdown()


class Broken(Exception):
    pass


def test_a_window_that_cannot_open_says_so_instead_of_vanishing(qtbot, tmp_path, monkeypatch):
    """``python main.py`` when the main window fails while opening: a box with the sentence (closing it ends the
    app, with exit status 1) rather than a traceback on a terminal the user may not have."""
    import gui.app

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    def broken_window(*args, **kwargs):
        raise Broken("the window could not be built")

    monkeypatch.setattr(gui.app, "MainWindow", broken_window)
    seen = {"looks": 0}

    def look():  # once the box is on screen, note what it says and close it: the app ends
        reporter = errors.current()
        seen["looks"] += 1
        if reporter is not None and reporter.box is not None and reporter.box.isVisible():
            seen["text"] = reporter.box.text()
            seen["details"] = reporter.box.detailedText()
            reporter.box.close()
            QApplication.instance().exit(0)
        elif seen["looks"] > 3000:
            QApplication.instance().exit(2)  # no box after 3,000 looks: end the event loop, the test fails below
        else:
            QTimer.singleShot(10, look)

    QTimer.singleShot(0, look)
    code = gui.app.run_app([])
    assert code == 1
    assert seen["text"] == errors.sentence_for(Broken())
    assert "the window could not be built" in seen["details"]
    log = tmp_path / "xdg" / "Transfer Studio" / "logs" / "errors.log"
    assert "Broken: the window could not be built" in log.read_text(encoding="utf-8")


def test_a_box_that_cannot_be_shown_does_not_set_off_another_report(qtbot, tmp_path, monkeypatch):
    reporter = errors.install(tmp_path / "logs")

    def no_box(*args, **kwargs):
        raise RuntimeError("no box today")

    monkeypatch.setattr(errors, "QMessageBox", no_box)
    broken_button(None, ValueError("first")).click()
    log = tmp_path / "logs" / "errors.log"
    qtbot.waitUntil(lambda: "could not be shown" in log.read_text(encoding="utf-8"))
    assert reporter.count == 1  # the box's own failure was logged, not reported again (and again)
    assert "RuntimeError: no box today" in log.read_text(encoding="utf-8")
