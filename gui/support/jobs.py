"""The one job service for the window's background work: scans, thumbnails, building and downloading models, the
catalogue and its parameter counts, evaluation, predictions, heat maps, exports (the training run alone has its own
thread, ``gui.steps.train.worker``). Nothing of it runs on the GUI thread, and all of it keeps the same contract:

- ``Jobs.start(kind, work, on_done, ...)`` runs ``work(progress, stop)`` on a pool thread. The work reports through
  ``progress``: ``progress(done, total)`` for a bar (at most ~20 reports a second reach the window, the first and the
  last always), ``progress.say(text)`` for what it is doing, in words, and ``progress.send(value)`` for a part of the
  result that is shown before the job ends (a thumbnail, a parameter count). Each comes back, in order, to its
  callback on the GUI thread, and then one of: the result (``on_done``), a failure sentence (``on_error``), or
  ``on_cancel`` when the work stopped on its own.
- Cancel: ``cancel(kind)`` sets the job's stop token, which the engine checks at least once per picture or batch,
  and calls ``on_cancel`` at once; starting a job of a kind that is running cancels the older one silently (a newer
  heat map replaces the one still being made). Nothing of a cancelled job reaches its callbacks afterwards. Jobs
  started with ``kind=None`` run side by side (the thumbnail decoders) and stop only with ``shutdown()``.
- Errors are sentences: a ``UserError`` is the engine's own sentence; running out of memory says what to do; any
  other exception (a bug) is logged with its traceback and reaches the window as "<what> failed because of an
  unexpected problem (...)", never as a traceback.
- Shutdown: the main window owns one ``Jobs`` and hands it to each part of the window, which runs on a lane of its
  own in it: ``Jobs(part, threads, service=jobs)``, with its own kinds, its own ``busy_changed`` and its own few
  pool threads (a long evaluation never holds up the thumbnails). ``shutdown()`` of the window's ``Jobs``, called
  when the window closes, sets the stop token of every job of every lane and waits until their threads have ended.
  A part made on its own (a test, a benchmark) gets ``service=None`` and so a service of its own, which its own
  ``shutdown`` stops; its jobs are also told to stop when it is destroyed.

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

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from engine.errors import UserError

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress reports a second: a smooth bar, cheap for 50,000 pictures


class Progress:
    """What a job's work reports through (see the module): callable as ``progress(done, total)``, which is what the
    engine's ``on_progress`` callbacks expect, plus ``say(text)`` and ``send(value)``."""

    def __init__(self, job: "Job") -> None:
        self._job = job
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self._job.stop.is_set():
            return
        now = time.monotonic()
        if done in (0, total) or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self._job.relay.progressed.emit(self._job, int(done), int(total))

    def say(self, text: str) -> None:
        if not self._job.stop.is_set():
            self._job.relay.said.emit(self._job, str(text))

    def send(self, value: Any) -> None:
        if not self._job.stop.is_set():
            self._job.relay.sent.emit(self._job, value)


Work = Callable[[Progress, threading.Event], Any]


class _Relay(QObject):
    """Carries what the pool threads report to the GUI thread (one per ``Jobs``; jobs themselves are plain objects,
    so that none is ever freed on a pool thread)."""

    result = Signal(object, object)  # job, value
    error = Signal(object, str)  # job, sentence
    stopped = Signal(object)  # job
    progressed = Signal(object, object, object)  # job, done, total (Python ints: a download counts past 2**31 bytes)
    said = Signal(object, str)  # job, what happens now
    sent = Signal(object, object)  # job, a part of the result


class Job:
    """One piece of work: its kind, its stop token, and ``ended`` (set on the pool thread once the work returned)."""

    def __init__(self, kind: str | None, work: Work, what: str, relay: _Relay,
                 callbacks: dict[str, Callable | None]) -> None:
        self.kind = kind
        self.work = work
        self.what = what  # "The evaluation", "The export", ...: begins the sentence of an unexpected failure
        self.relay = relay
        self.callbacks = callbacks
        self.stop = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:  # on a pool thread
        relay = self.relay
        try:
            if self.stop.is_set():  # cancelled while it waited for a thread
                relay.stopped.emit(self)
                return
            value = self.work(Progress(self), self.stop)
        except UserError as exc:  # engine.results.predict.Stopped is one too
            if self.stop.is_set():
                relay.stopped.emit(self)
            else:
                relay.error.emit(self, str(exc))
        except MemoryError:
            relay.error.emit(self, f"{self.what} ran out of memory: close other programs, or use fewer or smaller "
                                   "pictures.")
        except Exception as exc:  # a bug: still a sentence for the user, never a traceback
            log.exception("%s failed", self.what)
            relay.error.emit(self, unexpected(self.what, exc))
        else:
            if self.stop.is_set():
                relay.stopped.emit(self)
            else:
                relay.result.emit(self, value)
        finally:
            self.ended.set()


def unexpected(what: str, exc: BaseException) -> str:
    """The sentence for a failure nobody foresaw: what failed, and the exception's class and first line."""
    text = str(exc).strip().splitlines()
    detail = f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__
    return f"{what} failed because of an unexpected problem ({detail})."


class _Runnable(QRunnable):
    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.setAutoDelete(True)

    def run(self) -> None:
        self.job.run()


def _stop_every(jobs: set[Job]) -> None:
    for job in list(jobs):
        job.stop.set()


class Jobs(QObject):
    """The job service, or a lane of ``service``: runs jobs on its own small pool, one job of each kind at a time,
    and is shut down with ``service``."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, threads: int = 2, service: "Jobs | None" = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)  # the first child: destroyed, and waited for, before the relay
        self.pool.setMaxThreadCount(max(1, threads))
        self._relay = _Relay(self)
        self._relay.result.connect(self._on_result)
        self._relay.error.connect(self._on_error)
        self._relay.stopped.connect(self._on_stopped)
        self._relay.progressed.connect(self._on_progress)
        self._relay.said.connect(self._on_said)
        self._relay.sent.connect(self._on_sent)
        self._current: dict[str, Job] = {}  # kind -> the job whose results are wanted
        self._side: set[Job] = set()  # jobs without a kind whose results are wanted
        self._alive: set[Job] = set()  # every job whose pool thread has not reported its end yet
        self._lanes: list[Jobs] = []
        self._closed = False
        if service is not None:
            service._adopt(self)
        # Destroyed without shutdown() (a widget made on its own): stop its jobs, so that the pool's destructor,
        # which waits for them, returns within a picture or a batch.
        alive = self._alive
        self.destroyed.connect(lambda *_: _stop_every(alive))

    # -- lanes -----------------------------------------------------------------------------------------------

    def _adopt(self, lane: "Jobs") -> None:
        self._lanes = [j for j in self._lanes if shiboken6.isValid(j)]
        self._lanes.append(lane)
        if self._closed:
            lane._closed = True

    def _tree(self) -> list["Jobs"]:
        """This service and every lane of it still alive, lanes of lanes included."""
        found, todo = [], [self]
        while todo:
            jobs = todo.pop()
            if shiboken6.isValid(jobs):
                found.append(jobs)
                todo.extend(jobs._lanes)
        return found

    # -- starting and stopping -------------------------------------------------------------------------------

    def start(self, kind: str | None, work: Work, on_done: Callable[[Any], None], *,
              on_error: Callable[[str], None] | None = None, on_progress: Callable[[int, int], None] | None = None,
              on_phase: Callable[[str], None] | None = None, on_item: Callable[[Any], None] | None = None,
              on_cancel: Callable[[], None] | None = None, what: str = "The work") -> Job | None:
        """Run ``work(progress, stop)`` in the background; a running job of the same ``kind`` is cancelled first.
        None when the service has shut down (the window is closing)."""
        if self._closed:
            return None
        if kind is not None:
            self.cancel(kind, notify=False)
        callbacks = {"done": on_done, "error": on_error, "progress": on_progress, "phase": on_phase,
                     "item": on_item, "cancel": on_cancel}
        job = Job(kind, work, what, self._relay, callbacks)
        was_busy = self.busy
        if kind is None:
            self._side.add(job)
        else:
            self._current[kind] = job
        self._alive.add(job)
        self.pool.start(_Runnable(job))
        if not was_busy:
            self.busy_changed.emit(True)
        return job

    def running(self, kind: str) -> bool:
        return kind in self._current

    def current(self, kind: str) -> Job | None:
        """The job of ``kind`` whose results are wanted, if one runs."""
        return self._current.get(kind)

    @property
    def busy(self) -> bool:
        return bool(self._current or self._side)

    @property
    def closed(self) -> bool:
        return self._closed

    def cancel(self, kind: str, notify: bool = True) -> None:
        """Stop the job of ``kind``; its ``on_cancel`` is called at once (unless ``notify`` is False) and nothing
        else of it arrives."""
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
        """Stop every job of this service and of its lanes, and wait until their threads have ended (the window is
        closing); later ``start`` calls do nothing. Safe to call more than once."""
        tree = self._tree()
        for jobs in tree:
            jobs._closed = True
            jobs._current.clear()
            jobs._side.clear()
            _stop_every(jobs._alive)
        for jobs in tree:
            jobs.pool.waitForDone()
            jobs._alive.clear()

    def idle(self) -> bool:
        """True when no job is running or waiting, cancelled ones included (tests wait for this)."""
        return not self._alive

    # -- what comes back (GUI thread) ------------------------------------------------------------------------

    def _wanted(self, job: Job) -> bool:
        return job in self._side if job.kind is None else self._current.get(job.kind) is job

    def _finish(self, job: Job) -> bool:
        """The job has ended: True when its result is still wanted."""
        self._alive.discard(job)
        if not self._wanted(job):
            return False  # cancelled or replaced: its result is not wanted
        if job.kind is None:
            self._side.discard(job)
        else:
            del self._current[job.kind]
        if not self.busy:
            self.busy_changed.emit(False)
        return True

    @Slot(object, object)
    def _on_result(self, job: Job, value) -> None:
        if self._finish(job):
            job.callbacks["done"](value)

    @Slot(object, str)
    def _on_error(self, job: Job, message: str) -> None:
        if self._finish(job) and job.callbacks.get("error") is not None:
            job.callbacks["error"](message)

    @Slot(object)
    def _on_stopped(self, job: Job) -> None:
        if self._finish(job) and job.callbacks.get("cancel") is not None:
            job.callbacks["cancel"]()

    def _report(self, job: Job, name: str, *args) -> None:
        callback = job.callbacks.get(name)
        if callback is not None and self._wanted(job):
            callback(*args)

    @Slot(object, object, object)
    def _on_progress(self, job: Job, done: int, total: int) -> None:
        self._report(job, "progress", done, total)

    @Slot(object, str)
    def _on_said(self, job: Job, text: str) -> None:
        self._report(job, "phase", text)

    @Slot(object, object)
    def _on_sent(self, job: Job, value) -> None:
        self._report(job, "item", value)


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
    from engine.results.slides import is_slide_path

    try:
        if is_slide_path(path):  # a whole slide (predicted tile by tile): its thumbnail
            return _slide_view(path, size)
        image = load_rgb(path, draft_size=(size, size))
    except ImageError as exc:
        raise UserError(f"{os.path.basename(path)} cannot be shown: {exc}") from None
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return image


def _slide_view(path: str, size: int):
    from engine.data.formats.slide import slide_thumbnail
    from engine.data.images import ImageError

    try:
        return slide_thumbnail(path, size)
    except Exception as exc:  # openslide raises its own types on damaged files
        raise ImageError(f"the slide could not be read ({exc.__class__.__name__}).") from None


def heat_map_view(cache: ModelCache, folder: str, path: str, target_class: int | None = None,
                  size: int = VIEW_SIZE) -> tuple[QImage, QImage, str]:
    """(the picture, the picture with its heat map laid over, a sentence saying what the map explains)."""
    from engine.results.cam import overlay
    from engine.data.images import ImageError, load_rgb
    from engine.results.predict import heat_map
    from engine.results.slides import is_slide_path

    if is_slide_path(path):
        return _slide_heat_map_view(cache, folder, path, target_class, size)
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


def _slide_heat_map_view(cache: ModelCache, folder: str, path: str, target_class: int | None,
                         size: int) -> tuple[QImage, QImage, str]:
    """A whole slide's map: each tissue tile coloured by its probability of the class (the slide's answer by
    default), laid over the slide's thumbnail; glass tiles (skipped by the tissue test) keep the plain slide."""
    import numpy as np
    from PIL import Image

    from engine.data.formats.slide import open_slide, slide_grid, viridis
    from engine.data.images import ImageError
    from engine.results.slide_maps import slide_heat_map

    try:
        view = _slide_view(path, size)
    except ImageError as exc:
        raise UserError(f"{os.path.basename(path)} cannot be shown: {exc}") from None
    with cache.use(folder) as bundle:
        result = slide_heat_map(bundle, path, target_class)
        grid = slide_grid(path, bundle.formats)
    # The tiles cover columns x step of the slide's width (the last partial tile is not cut): scale to that part.
    width, height = open_slide(path).dimensions
    covered = (max(1, round(view.width * grid.columns * grid.step / width)),
               max(1, round(view.height * grid.rows * grid.step / height)))
    colours = Image.fromarray(viridis(result.scores)).resize(covered, Image.Resampling.NEAREST)
    tissue = Image.fromarray(np.where(np.isfinite(result.scores), 140, 0).astype(np.uint8)).resize(
        covered, Image.Resampling.NEAREST)
    mixed = view.copy()
    mixed.paste(colours, (0, 0), tissue)  # about half colour, half slide, on the scored tiles only
    words = (f"Each of the slide's {result.tiles} tissue tiles coloured by how sure the model is of "
             f"'{result.class_name}' (yellow: sure, purple: not); the slide's answer is the mean, "
             f"{100 * result.probability:.0f} %. Glass was skipped.")
    return to_qimage(view), to_qimage(mixed), words
