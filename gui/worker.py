"""The one training thread: a QObject worker moved to a QThread runs the engine's ``fit`` and turns its plain-data
events into Qt signals. One shutdown path: ``shutdown()`` sets the stop token, lets ``fit`` end within a batch,
then quits and waits for the thread."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine.config import RunConfig
from engine.train import RunResult, fit


class TrainWorker(QObject):
    """Lives in the training thread. Pausing blocks the engine inside its event callback (between two batches), so the
    engine needs no notion of pausing; stopping also releases a pause."""

    event = Signal(object)  # an engine event dataclass (immutable plain data)
    done = Signal(object)  # the RunResult

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config
        self._stop = threading.Event()
        self._running = threading.Event()  # set = not paused
        self._running.set()

    @Slot()
    def run(self) -> None:
        result = fit(self.config, self._on_event, self._stop)
        self.done.emit(result)

    def _on_event(self, event) -> None:
        self.event.emit(event)
        while not self._running.wait(0.2):  # paused: wait here, between two batches
            if self._stop.is_set():
                break

    # Called from the GUI thread: only thread-safe Events are touched.
    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()


class TrainingController(QObject):
    """Owns at most one training thread at a time. ``started``/``event``/``finished`` are delivered in the GUI
    thread."""

    started = Signal(object)  # the RunConfig
    event = Signal(object)
    finished = Signal(object)  # the RunResult

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: TrainWorker | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def paused(self) -> bool:
        return self._worker is not None and self._worker.paused

    def start(self, config: RunConfig) -> None:
        if self.running:
            raise RuntimeError("a run is already in progress")
        thread = QThread(self)
        thread.setObjectName("training")
        worker = TrainWorker(config)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.event.connect(self.event)
        worker.done.connect(self._on_done)
        self._thread, self._worker = thread, worker
        thread.start()
        self.started.emit(config)

    def pause(self) -> None:
        if self._worker:
            self._worker.pause()

    def resume(self) -> None:
        if self._worker:
            self._worker.resume()

    def stop(self) -> None:
        if self._worker:
            self._worker.stop()

    @Slot(object)
    def _on_done(self, result: RunResult) -> None:
        self._finish_thread()
        self.finished.emit(result)

    def _finish_thread(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        if thread is not None:
            thread.quit()
            thread.wait()
            worker.deleteLater()
            thread.deleteLater()

    def shutdown(self) -> None:
        """Stop a run and wait for its thread (the window's close path). ``fit`` ends within a batch and writes the
        run's summary as ``stopped`` before the thread ends; ``finished`` follows when the event loop runs again."""
        if self._worker is None:
            return
        self._worker.stop()
        self._thread.quit()  # takes effect once run() returns, i.e. once fit has saved and ended
        self._thread.wait()
        self._finish_thread()
