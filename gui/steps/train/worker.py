"""The one training thread: a QObject worker moved to a QThread runs the engine's ``fit`` and turns its plain-data
events into Qt signals. One shutdown path: ``shutdown()`` sets the stop token, lets ``fit`` end within a batch,
then quits and waits for the thread."""

from __future__ import annotations

import gc
import sys
import threading

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine import events as ev
from engine.config import RunConfig
from engine.data.scan import DatasetIndex
from engine.edge.distill import resume  # the trainer's resume; a distilled run's table is measured again
from engine.train.trainer import RunResult, fit
from gui.support import gc_guard

# The window's thread shares Python's interpreter lock with the training thread (and its picture-checking threads).
# A thread that wants the lock waits up to the switch interval (5 ms by default) each time, and painting the plots
# takes it many times: a 1 ms interval keeps the window responsive while training; the cost to training is nil
# (PyTorch releases the lock in its heavy operations).
INTERACTIVE_SWITCH_INTERVAL = 0.001

# What a run imports on its first use (about 1,500 modules: timm, torchvision, the Hugging Face client, and the
# compiler stack that torch.optim loads on its first step). Importing holds the interpreter lock for long stretches,
# which froze the window for up to 200 ms at the start of a run; preloading them in the background once the user opens
# the Train step moves that cost out of the run. Not earlier: they also cost memory, which a user who only browses
# pictures need not pay.
PRELOAD_MODULES = ("timm", "timm.data", "timm.optim", "timm.scheduler", "torchvision.models", "safetensors.torch",
                   "torch._dynamo", "torch.onnx", "onnxruntime", "huggingface_hub", "engine.train.fastpath", "engine.data.cache")
_preloaded = threading.Event()
_preload_started = threading.Lock()


def training_modules_preloaded() -> threading.Event:
    """Set once ``preload_training_modules`` has finished."""
    return _preloaded


def preload_training_modules() -> threading.Event:
    """Start importing what a run needs on a background thread (once per process); the event is set when done."""
    if _preload_started.acquire(blocking=False):
        def work() -> None:
            import importlib

            try:
                for name in PRELOAD_MODULES:
                    try:
                        importlib.import_module(name)
                    except Exception:  # only a lost speed-up: the run imports (and reports) it itself
                        pass
            finally:
                _preloaded.set()

        threading.Thread(target=work, name="preload", daemon=True).start()
    return _preloaded


TRAINING_NICENESS = 5  # added to the training thread's niceness (Linux), so the window's thread gets the CPU first


def _lower_priority_of_this_thread() -> None:
    """Give the training thread (and the loader processes and compute threads it starts) a lower CPU priority than
    the window's thread: on a machine whose cores training keeps busy, the window otherwise waits its turn behind
    them. Training loses nothing when the window is idle. Linux only (elsewhere the priority applies per process)."""
    import os

    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + TRAINING_NICENESS)
        except (OSError, AttributeError):
            pass


class TrainWorker(QObject):
    """Lives in the training thread. Pausing blocks the engine inside its event callback (between two batches), so the
    engine needs no notion of pausing; stopping also releases a pause."""

    event = Signal(object)  # an engine event dataclass (immutable plain data)
    done = Signal(object)  # the RunResult

    def __init__(self, config: RunConfig | None, dataset: DatasetIndex | None = None,
                 resume_dir: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.dataset = dataset
        self.resume_dir = resume_dir  # continue this run from its checkpoint instead of starting ``config``
        self._stop = threading.Event()
        self._running = threading.Event()  # set = not paused
        self._running.set()

    @Slot()
    def run(self) -> None:
        _lower_priority_of_this_thread()
        if self.resume_dir is not None:
            result = resume(self.resume_dir, self._on_event, self._stop)
        else:
            result = fit(self.config, self._on_event, self._stop, dataset=self.dataset)
        self.done.emit(result)

    def _on_event(self, event) -> None:
        if isinstance(event, (ev.RunStarted, ev.PhaseStarted, ev.EpochEnded)):
            gc.freeze()  # the model and the run's own objects too (see TrainingController._start)
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

    started = Signal(object)  # the RunConfig (None when a run is resumed)
    event = Signal(object)
    finished = Signal(object)  # the RunResult

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: TrainWorker | None = None
        gc_guard.install()  # garbage is collected on this (the GUI) thread, never on the training thread

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def paused(self) -> bool:
        return self._worker is not None and self._worker.paused

    def start(self, config: RunConfig, dataset: DatasetIndex | None = None) -> None:
        """Train ``config``; ``dataset``, when given, is the scan the window already made of config.data.source (its
        pictures checked, its split drawn), so that the run trains on exactly what the user saw."""
        self._start(TrainWorker(config, dataset))

    def continue_run(self, run_dir: str) -> None:
        """Resume the stopped, failed or interrupted run in ``run_dir`` from its checkpoint, in the same folder."""
        self._start(TrainWorker(None, resume_dir=str(run_dir)))

    def _start(self, worker: TrainWorker) -> None:
        if self.running:
            raise RuntimeError("a run is already in progress")
        sys.setswitchinterval(min(sys.getswitchinterval(), INTERACTIVE_SWITCH_INTERVAL))
        # Python's full garbage collections walk every object the app holds (PyTorch, Qt, timm: millions) while
        # holding the interpreter lock: one, set off by the training thread's allocations, froze the window for
        # 165-330 ms when the best weights were written. Objects alive now (the app's modules and widgets) are moved
        # out of the collector's way while the run lasts (_on_done hands them back, so that garbage among them is
        # still collected, once nothing is being trained).
        gc.freeze()
        gc_guard.training(True)
        thread = QThread(self)
        thread.setObjectName("training")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.event.connect(self.event)
        worker.done.connect(self._on_done)
        self._thread, self._worker = thread, worker
        thread.start()
        self.started.emit(worker.config)

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
        gc.unfreeze()
        gc_guard.training(False)
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
        gc.unfreeze()
        gc_guard.training(False)
