"""The app-wide handler of exceptions nothing else caught: a sentence on screen, the traceback in a log file.

PySide6 hands an exception raised in a slot, a timer or an overridden Qt method (``paintEvent``...) to
``sys.excepthook``, on whichever thread it happened; Python threads use ``threading.excepthook``. ``install`` puts an
``ErrorReporter`` in both, in front of whatever hook was there (the terminal's, or pytest-qt's in tests), so that
such an exception never reaches the terminal alone:

- it is counted (``count``: a "click everything" test asserts that it stays 0),
- its traceback goes to ``errors.log`` in the app's data folder (``logs/``; rotated at 1 MB, 3 old files kept),
- a non-modal box says in a sentence what happened, with the details one click away and a *Copy details* button.

One box at a time: exceptions raised while it is open are added to it ("happened 3 times") rather than opening
another, and a problem the user has already dismissed once is then only logged and counted (a failing timer would
otherwise open a box twenty times a second).
"""

from __future__ import annotations

import logging
import logging.handlers
import platform
import sys
import threading
import traceback
import weakref
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

LOG_NAME = "errors.log"
LOG_MAX_BYTES = 1_000_000  # then errors.log.1, .2, .3 (the oldest is dropped)
LOG_BACKUPS = 3
MAX_DETAILS = 5  # distinct problems whose details one box keeps (the log has every one)

__all__ = ["ErrorReporter", "install", "current", "sentence_for"]


def sentence_for(exc: BaseException) -> str:
    """What happened, in words a user who does not code can act on."""
    from engine.errors import UserError

    if isinstance(exc, UserError):
        return str(exc)  # already a sentence written for the user
    if isinstance(exc, MemoryError):
        return ("The computer ran out of memory. Close other programs, or train with a smaller batch size, and try "
                "again.")
    if isinstance(exc, OSError) and exc.filename:
        reason = exc.strerror or "it cannot be read or written"
        return f"Transfer Studio could not use {exc.filename}: {reason.rstrip('.')}."
    return "Something went wrong that Transfer Studio did not expect, so the last action may not have finished."


def _signature(exc_type, tb) -> tuple:
    """The same problem again: the same kind of exception raised at the same line."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    where = (frames[-1].filename, frames[-1].lineno) if frames else ("", 0)
    return (getattr(exc_type, "__qualname__", str(exc_type)),) + where


def _environment() -> str:
    from PySide6 import __version__ as pyside

    parts = [f"Python {platform.python_version()}", f"PySide6 {pyside}", platform.platform()]
    torch = sys.modules.get("torch")  # only when loaded: reporting must not import it
    if torch is not None:
        parts.insert(2, f"torch {getattr(torch, '__version__', '?')}")
    return ", ".join(parts)


class ErrorReporter(QObject):
    """Counts, logs and shows the exceptions handed to it; ``excepthook`` and ``thread_excepthook`` are the hooks."""

    _report = Signal(object, str, str)  # signature, sentence, details: to the GUI thread, whoever raised

    def __init__(self, log_dir: str | Path, window: QWidget | None = None) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / LOG_NAME
        self._window = weakref.ref(window) if window is not None else None
        self._lock = threading.Lock()
        self._count = 0
        self.previous_hook = sys.__excepthook__
        self.previous_thread_hook = threading.__excepthook__
        self.box: QMessageBox | None = None  # the one box shown at a time
        self.copy_button = None
        self._box_times = 0
        self._box_details: list[tuple[tuple, str]] = []  # (signature, details) of each problem the box shows
        self._dismissed: set[tuple] = set()
        self.log_failed: str | None = None  # why the last report could not be written to the log, if it could not
        self._report.connect(self._show, Qt.ConnectionType.QueuedConnection)

    @property
    def count(self) -> int:
        """Exceptions seen since this reporter was installed."""
        return self._count

    # --- the hooks (any thread) -------------------------------------------------------------------------------

    def excepthook(self, exc_type, exc, tb) -> None:
        try:
            if not issubclass(exc_type, KeyboardInterrupt):
                self.report(exc_type, exc, tb)
        finally:
            self.previous_hook(exc_type, exc, tb)

    def thread_excepthook(self, args) -> None:
        try:
            if args.exc_type is not SystemExit and not issubclass(args.exc_type, KeyboardInterrupt):
                self.report(args.exc_type, args.exc_value, args.exc_traceback)
        finally:
            self.previous_thread_hook(args)

    def report(self, exc_type, exc, tb) -> None:
        """Count and log an exception now; its box follows on the GUI thread (never raises)."""
        with self._lock:
            self._count += 1
        try:
            sentence = sentence_for(exc) if isinstance(exc, BaseException) else sentence_for(Exception())
            stamp = datetime.now().isoformat(timespec="seconds")
            trace = "".join(traceback.format_exception(exc_type, exc, tb))
            details = f"{stamp}  {sentence}\n{_environment()}, thread {threading.current_thread().name}\n\n{trace}"
            self._write_log(details)
            self._report.emit(_signature(exc_type, tb), sentence, details)
        except Exception:  # noqa: BLE001 - the handler of last resort must not raise in its turn
            pass

    def _write_log(self, details: str) -> None:
        # A rotating file, opened for each report and closed again: exceptions are rare, and no file stays open.
        with self._lock:
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                handler = logging.handlers.RotatingFileHandler(self.log_path, maxBytes=LOG_MAX_BYTES,
                                                               backupCount=LOG_BACKUPS, encoding="utf-8")
                try:
                    handler.setFormatter(logging.Formatter("%(message)s"))
                    handler.handle(logging.LogRecord("transfer_studio", logging.ERROR, "", 0, details + "\n",
                                                     None, None))
                finally:
                    handler.close()
                self.log_failed = None
            except OSError as exc:
                self.log_failed = exc.strerror or str(exc)

    # --- the box (GUI thread) ---------------------------------------------------------------------------------

    def window(self) -> QWidget | None:
        from shiboken6 import isValid

        window = self._window() if self._window is not None else None
        return window if window is not None and isValid(window) else None

    def _show(self, signature: tuple, sentence: str, details: str) -> None:
        try:
            self._show_box(signature, sentence, details)
        except Exception:  # noqa: BLE001 - raised again, it would come back here: only the log hears of it
            self._write_log("The box of the problem above could not be shown:\n" + traceback.format_exc())

    def _show_box(self, signature: tuple, sentence: str, details: str) -> None:
        box = self.box
        if box is not None and box.isVisible():
            self._box_times += 1
            known = {s for s, _ in self._box_details}
            if signature not in known:
                if len(known) == 1:
                    box.setText(f"Several things went wrong. The first: {box.text()}")
                if len(self._box_details) < MAX_DETAILS:
                    self._box_details.append((signature, details))
            self._fill(box)
            return
        if signature in self._dismissed:
            window = self.window()
            if window is not None and hasattr(window, "statusBar"):
                window.statusBar().showMessage(f"The same problem happened again (details in {self.log_path}).",
                                               10_000)
            return
        self._box_times, self._box_details = 1, [(signature, details)]
        box = QMessageBox(self.window())
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Something went wrong")
        box.setText(sentence)
        box.setWindowModality(Qt.WindowModality.NonModal)
        copy = box.addButton("Copy details", QMessageBox.ButtonRole.ActionRole)
        copy.setToolTip("Put the details on the clipboard, to paste into a message to whoever helps you.")
        copy.clicked.disconnect()  # a message box closes on any button; this one copies and stays open
        copy.clicked.connect(self.copy_details)
        self.copy_button = copy
        box.addButton(QMessageBox.StandardButton.Close)
        box.finished.connect(lambda _result, s=signature: self._dismissed.add(s))
        self.box = box
        self._fill(box)
        box.show()

    def _fill(self, box: QMessageBox) -> None:
        times = f"It happened {self._box_times} times. " if self._box_times > 1 else ""
        where = (f"The details are saved in {self.log_path}" if self.log_failed is None
                 else f"The details could not be saved in {self.log_path} ({self.log_failed})")
        box.setInformativeText(f"{times}Your saved projects and runs are not affected. {where}; "
                               f"\u201cCopy details\u201d puts them on the clipboard.")
        box.setDetailedText(self.details())

    def details(self) -> str:
        """The open box's details, as Copy details puts them on the clipboard."""
        return "\n\n".join(d for _, d in self._box_details)

    def copy_details(self) -> None:
        QGuiApplication.clipboard().setText(self.details())
        if self.copy_button is not None:
            self.copy_button.setText("Copied")


_current: ErrorReporter | None = None


def current() -> ErrorReporter | None:
    """The installed reporter, if any."""
    return _current


def install(log_dir: str | Path, window: QWidget | None = None) -> ErrorReporter:
    """Make a new reporter (count 0, boxes over ``window``, log in ``log_dir``) the app's handler of uncaught
    exceptions. A reporter installed before it is replaced, not chained: each exception is shown and counted once."""
    global _current
    reporter = ErrorReporter(log_dir, window)
    previous, previous_thread = sys.excepthook, threading.excepthook
    old = _current
    if old is not None:
        if previous == old.excepthook:
            previous = old.previous_hook
        if previous_thread == old.thread_excepthook:
            previous_thread = old.previous_thread_hook
    reporter.previous_hook, reporter.previous_thread_hook = previous, previous_thread
    sys.excepthook = reporter.excepthook
    threading.excepthook = reporter.thread_excepthook
    _current = reporter
    return reporter
