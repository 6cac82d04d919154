"""Background work for the Evaluate and Predict & Export steps: evaluation, predictions, heat maps and exports run on
a small thread pool, never on the GUI thread, and each can be cancelled.

``Jobs.start(kind, function, on_done, ...)`` runs ``function(on_progress, stop)`` on the pool; its result, its
failure sentence or its progress come back to the callbacks on the GUI thread. Starting a job of a kind that is
already running cancels the older one (a newer heat map replaces the one still being computed), and a cancelled
job's late result is dropped. ``shutdown()`` sets every stop token and waits for the pool (the engine checks its
token once per batch).

``ModelCache`` keeps the last model loaded for heat maps and predictions, so that the second picture does not load
the model again; a lock makes the jobs that use it take turns (Grad-CAM puts hooks on the model, which another
thread's forward pass must not run through).
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from engine.errors import UserError

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress signals a second
Progress = Callable[[int, int], None]
Work = Callable[[Progress, threading.Event], Any]


class Job(QObject):
    """One piece of work. Its signals are emitted on a pool thread and delivered to ``Jobs`` on the GUI thread."""

    result = Signal(object, object)  # job, value
    error = Signal(object, str)  # job, sentence
    stopped = Signal(object)  # job
    progressed = Signal(object, int, int)  # job, done, total

    def __init__(self, kind: str, work: Work, what: str) -> None:
        super().__init__()
        self.kind = kind
        self.work = work
        self.what = what  # "The evaluation", "The export", ...: begins the sentence of an unexpected failure
        self.stop = threading.Event()
        self.callbacks: dict[str, Callable | None] = {}
        self._last = 0.0

    def _progress(self, done: int, total: int) -> None:
        if self.stop.is_set():
            return
        now = time.monotonic()
        if done in (0, total) or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self.progressed.emit(self, int(done), int(total))

    def run(self) -> None:  # on a pool thread
        try:
            value = self.work(self._progress, self.stop)
        except UserError as exc:  # engine.results.predict.Stopped is one too
            if self.stop.is_set():
                self.stopped.emit(self)
            else:
                self.error.emit(self, str(exc))
        except MemoryError:
            self.error.emit(self, f"{self.what} ran out of memory: close other programs, or use fewer or smaller "
                                  "pictures.")
        except Exception as exc:  # a bug: still a sentence for the user, never a traceback
            log.exception("%s failed", self.what)
            text = str(exc).strip().splitlines()
            detail = f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__
            self.error.emit(self, f"{self.what} failed because of an unexpected problem ({detail}).")
        else:
            if self.stop.is_set():
                self.stopped.emit(self)
            else:
                self.result.emit(self, value)


class _Runnable(QRunnable):
    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.setAutoDelete(True)

    def run(self) -> None:
        self.job.run()


class Jobs(QObject):
    """Runs jobs on its own small pool; at most one job of each kind counts at a time."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._current: dict[str, Job] = {}  # kind -> the job whose results are wanted
        self._alive: set[Job] = set()  # every job whose pool thread has not reported yet
        self._closed = False

    def start(self, kind: str, work: Work, on_done: Callable[[Any], None], *,
              on_error: Callable[[str], None] | None = None, on_progress: Callable[[int, int], None] | None = None,
              on_cancel: Callable[[], None] | None = None, what: str = "The work") -> Job | None:
        """Run ``work(on_progress, stop)`` in the background; a running job of the same ``kind`` is cancelled."""
        if self._closed:
            return None
        self.cancel(kind, notify=False)
        job = Job(kind, work, what)
        job.callbacks = {"done": on_done, "error": on_error, "progress": on_progress, "cancel": on_cancel}
        job.result.connect(self._on_result)
        job.error.connect(self._on_error)
        job.stopped.connect(self._on_stopped)
        job.progressed.connect(self._on_progress)
        was_busy = self.busy
        self._current[kind] = job
        self._alive.add(job)
        self.pool.start(_Runnable(job))
        if not was_busy:
            self.busy_changed.emit(True)
        return job

    def running(self, kind: str) -> bool:
        return kind in self._current

    @property
    def busy(self) -> bool:
        return bool(self._current)

    def cancel(self, kind: str, notify: bool = True) -> None:
        """Stop the job of ``kind``; its ``on_cancel`` is called at once and nothing else of it arrives."""
        job = self._current.pop(kind, None)
        if job is None:
            return
        job.stop.set()
        callback = job.callbacks.get("cancel")
        if notify and callback is not None:
            callback()
        if not self.busy:
            self.busy_changed.emit(False)

    def cancel_all(self) -> None:
        for kind in list(self._current):
            self.cancel(kind)

    def shutdown(self) -> None:
        """Stop every job and wait for the pool threads (the window is closing); safe to call more than once."""
        self._closed = True
        self._current.clear()
        for job in list(self._alive):
            job.stop.set()
        self.pool.waitForDone()

    def idle(self) -> bool:
        """True when no job is running or waiting, cancelled ones included (tests wait for this)."""
        return not self._alive

    # -- results (GUI thread) --------------------------------------------------------------------------------

    def _finish(self, job: Job) -> Callable | None:
        self._alive.discard(job)
        if self._current.get(job.kind) is not job:
            return None  # cancelled or replaced: its result is not wanted
        del self._current[job.kind]
        if not self.busy:
            self.busy_changed.emit(False)
        return job

    @Slot(object, object)
    def _on_result(self, job: Job, value) -> None:
        if self._finish(job) is not None:
            job.callbacks["done"](value)

    @Slot(object, str)
    def _on_error(self, job: Job, message: str) -> None:
        if self._finish(job) is not None and job.callbacks.get("error") is not None:
            job.callbacks["error"](message)

    @Slot(object)
    def _on_stopped(self, job: Job) -> None:
        if self._finish(job) is not None and job.callbacks.get("cancel") is not None:
            job.callbacks["cancel"]()

    @Slot(object, int, int)
    def _on_progress(self, job: Job, done: int, total: int) -> None:
        if self._current.get(job.kind) is job and job.callbacks.get("progress") is not None:
            job.callbacks["progress"](done, total)


class ModelCache:
    """The model of one run (or bundle) folder, loaded once and shared by the jobs that take turns with ``use``."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._bundle = None

    @staticmethod
    def _key_of(folder: str | os.PathLike) -> tuple:
        folder = Path(folder)
        stamps = []
        for name in ("best.safetensors", "model.safetensors"):
            try:
                stamps.append((folder / name).stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        return (str(folder.resolve()), *stamps)

    @contextmanager
    def use(self, folder: str | os.PathLike):
        """The folder's ModelBundle, loaded on first use (raises UserError with a sentence when it cannot be)."""
        from engine.results.predict import load_run_model

        with self._lock:
            key = self._key_of(folder)
            if key != self._key or self._bundle is None:
                self._bundle, self._key = None, None
                self._bundle = load_run_model(folder, self.device)
                self._key = key
            yield self._bundle

    def forget(self) -> None:
        with self._lock:
            self._bundle, self._key = None, None


# --- pictures for the views (pool threads) --------------------------------------------------------------------

VIEW_SIZE = 1024  # the longer side of a picture shown large


def to_qimage(image) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels (safe to hand to the GUI thread)."""
    image = image.convert("RGB")
    data = image.tobytes("raw", "RGB")
    return QImage(data, image.width, image.height, 3 * image.width, QImage.Format.Format_RGB888).copy()


def load_view(path: str, size: int = VIEW_SIZE):
    """The picture (upright RGB) at most ``size`` pixels on its longer side, as a PIL image; raises UserError."""
    from PIL import Image

    from engine.data.images import ImageError, load_rgb

    try:
        image = load_rgb(path, draft_size=(size, size))
    except ImageError as exc:
        raise UserError(f"{os.path.basename(path)} cannot be shown: {exc}") from None
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return image


def heat_map_view(cache: ModelCache, folder: str, path: str, target_class: int | None = None,
                  size: int = VIEW_SIZE) -> tuple[QImage, QImage, str]:
    """(the picture, the picture with its heat map laid over, a sentence saying what the map explains)."""
    from engine.results.cam import overlay
    from engine.data.images import ImageError, load_rgb
    from engine.results.predict import heat_map

    try:
        original = load_rgb(path)
    except ImageError as exc:
        raise UserError(f"{os.path.basename(path)} cannot be shown: {exc}") from None
    with cache.use(folder) as bundle:
        result = heat_map(bundle, original, target_class)
    from PIL import Image

    view = original.copy()
    view.thumbnail((size, size), Image.Resampling.BILINEAR)
    mixed = overlay(view, result.cam)
    words = (f"Bright areas show what made the model think '{result.class_name}' "
             f"({100 * result.probability:.0f} % sure); dark areas mattered little.")
    return to_qimage(view), to_qimage(mixed), words
