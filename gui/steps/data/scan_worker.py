"""Scanning a dataset off the GUI thread: a worker QObject moved to a QThread, with progress and a stop token.

``Scanner.start(...)`` begins a scan (cancelling any scan still running); the window hears ``progress``,
``finished(DatasetIndex)``, ``failed(sentence)`` or ``cancelled``. There is one shutdown path, ``shutdown()``:
set the stop token, ``quit()`` the thread and ``wait()`` for it; the engine checks the token between pictures, so
this returns within one picture's decode.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.config import DataConfig
from engine.data.scan import scan
from engine.errors import UserError

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress signals a second: enough for a smooth bar, cheap for 50,000 files

# A step run before the scan (e.g. making the demo pictures): (on_progress, stop) -> the DataConfig to scan with and a
# value handed back with the result.
Prepare = Callable[[Callable[[int, int], None], threading.Event], tuple[DataConfig, Any]]


class ScanWorker(QObject):
    """Runs one scan in its thread. Emits exactly one of finished / failed / cancelled."""

    phase = Signal(str)  # what is happening, in words
    progress = Signal(int, int)  # done, total
    finished = Signal(object, object)  # DatasetIndex, the value returned by prepare (or None)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, source: str, val_fraction: float, test_fraction: float, seed: int,
                 prepare: Prepare | None = None, split: str = "auto") -> None:
        super().__init__()
        self.source = source
        self.split = split
        self.fractions = (val_fraction, test_fraction, seed)
        self.prepare = prepare
        self.stop = threading.Event()
        self._last_emit = 0.0

    def _on_progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - self._last_emit >= PROGRESS_INTERVAL_S:
            self._last_emit = now
            self.progress.emit(done, total)

    @Slot()
    def run(self) -> None:
        extra = None
        try:
            source = self.source
            val, test, seed = self.fractions
            if self.prepare is not None:
                self.phase.emit("Preparing the pictures ...")
                data, extra = self.prepare(self._on_progress, self.stop)
                source, val, test, seed = data.source, data.val_fraction, data.test_fraction, data.split_seed
                self.split = data.split
            self.phase.emit("Checking pictures ...")
            index = scan(source, val_fraction=val, test_fraction=test, seed=seed, split=self.split,
                         on_progress=self._on_progress, stop=self.stop)
        except UserError as exc:
            if self.stop.is_set():
                self.cancelled.emit()
            else:
                self.failed.emit(str(exc))
        except Exception as exc:  # a bug: still a sentence for the user, never a traceback
            self.failed.emit(f"The folder could not be scanned because of an unexpected problem "
                             f"({exc.__class__.__name__}: {exc}).")
        else:
            if self.stop.is_set():
                self.cancelled.emit()
            else:
                self.finished.emit(index, extra)


class Scanner(QObject):
    """Starts scans, one at a time, and forwards the current scan's signals (a cancelled scan's are dropped).

    The worker's signals reach this object's slots through queued connections (it lives in the GUI thread), and
    ``sender()`` tells which scan they come from.
    """

    started = Signal(str)  # the source
    phase = Signal(str)
    progress = Signal(int, int)
    finished = Signal(object, object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._current: ScanWorker | None = None
        self._threads: dict[ScanWorker, QThread] = {}  # every scan whose thread has not ended yet

    @property
    def running(self) -> bool:
        return self._current is not None

    def start(self, source: str, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0,
              prepare: Prepare | None = None, split: str = "auto") -> None:
        self.cancel()
        thread = QThread(self)
        thread.setObjectName("scan")
        worker = ScanWorker(source, val_fraction, test_fraction, seed, prepare, split)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.phase.connect(self._on_phase)
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        for signal in (worker.finished, worker.failed, worker.cancelled):
            signal.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        self._threads[worker] = thread
        self._current = worker
        thread.start()
        self.started.emit(source)

    def cancel(self) -> None:
        """Ask the current scan to stop; ``cancelled`` is emitted at once, the thread ends within one picture."""
        if self._current is None:
            return
        worker, self._current = self._current, None
        worker.stop.set()
        self.cancelled.emit()

    def shutdown(self) -> None:
        """Stop every scan and wait for its thread (the window calls this when it closes)."""
        self._current = None
        pairs = list(self._threads.items())
        for worker, thread in pairs:
            worker.stop.set()
            thread.quit()
        for worker, thread in pairs:
            thread.wait()
        self._threads.clear()

    # -- slots (GUI thread) ----------------------------------------------------------------------------------

    def _is_current(self) -> bool:
        return self.sender() is not None and self.sender() is self._current

    @Slot(str)
    def _on_phase(self, text: str) -> None:
        if self._is_current():
            self.phase.emit(text)

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        if self._is_current():
            self.progress.emit(done, total)

    @Slot(object, object)
    def _on_finished(self, index, extra) -> None:
        if self._is_current():
            self._current = None
            self.finished.emit(index, extra)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._is_current():
            self._current = None
            self.failed.emit(message)

    @Slot()
    def _on_cancelled(self) -> None:
        if self._is_current():  # stopped from inside (not through cancel(), which already said so)
            self._current = None
            self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self.sender()
        for worker, t in list(self._threads.items()):
            if t is thread:
                del self._threads[worker]
                t.wait()
                t.deleteLater()  # the worker (no parent) goes with its last Python reference
