"""Work the model picker and the layer editor hand to background threads, so that the window never freezes.

- ``ModelBuilder`` downloads pretrained weights when needed (with progress) and builds a model with its layer tree;
  a newer request supersedes an older one (its result is dropped).
- ``CatalogueService`` loads the catalogue (timm's import alone takes seconds), then counts parameters of the
  models the picker shows, one at a time, latest request first, caching the counts on disk.

Each is a worker QObject moved to its own QThread, the pattern the design notes prescribe. Threads are kept in a
module-level set until they have finished, so that a widget closed mid-build never destroys a running thread, and
``shutdown()`` (connected to the application's ``aboutToQuit``) stops and joins them.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from engine.models import catalogue
from engine.errors import UserError

_RUNNING: set[tuple[QThread, QObject, threading.Event]] = set()


class _Reaper(QObject):
    """Lives on the GUI thread and forgets threads once they have really ended (never a running one)."""

    @Slot()
    def reap(self) -> None:
        for record in [r for r in _RUNNING if r[0].isFinished()]:
            _RUNNING.discard(record)


_REAPER: _Reaper | None = None


def _start(worker: QObject, stop: threading.Event) -> QThread:
    """Run ``worker.run()`` on a new thread that ends (and is forgotten) when the worker emits ``done``."""
    global _REAPER
    if _REAPER is None:
        _REAPER = _Reaper()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(shutdown)
        atexit.register(shutdown)  # also for scripts and tests that never run the event loop to its end
    thread = QThread()
    worker.moveToThread(thread)
    _RUNNING.add((thread, worker, stop))
    thread.started.connect(worker.run)
    worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)  # quit() is thread-safe
    thread.finished.connect(_REAPER.reap, Qt.ConnectionType.QueuedConnection)
    thread.start()
    return thread


def shutdown(timeout_ms: int = 30000) -> None:
    """Stop every background job (downloads stop at once; a model being built finishes first) and wait for it."""
    for thread, worker, stop in list(_RUNNING):
        stop.set()
        if hasattr(worker, "wake"):
            worker.wake()
        thread.quit()
        thread.wait(timeout_ms)
    _RUNNING.clear()


# --- building a model -------------------------------------------------------------------------------------------


@dataclass
class BuildResult:
    """A model built off the GUI thread: the engine's model and its layer trees (plain data for the editor)."""

    name: str
    weights: str
    num_classes: int
    built: object  # engine.models.build.BuiltModel
    tree: object  # engine.models.layers.LayerTree
    modules: object  # engine.models.layers.ModuleTree
    seconds: float


class _BuildWorker(QObject):
    progress = Signal(int, str, int, int)  # request id, what happens, bytes done, bytes in all (0: unknown)
    built = Signal(int, object)
    downloaded = Signal(int, str)
    failed = Signal(int, str)
    done = Signal()

    def __init__(self, request: int, name: str, weights: str, num_classes: int, stop: threading.Event,
                 build: bool) -> None:
        super().__init__()
        self.request, self.name, self.weights, self.num_classes = request, name, weights, num_classes
        self.stop, self.build = stop, build

    @Slot()
    def run(self) -> None:
        try:
            if self.weights == "pretrained" and not catalogue.pretrained_availability(self.name).offline:
                label = f"Downloading the pretrained weights of {self.name.split(':', 1)[1]} ..."
                self.progress.emit(self.request, label, 0, 0)
                where = catalogue.download_pretrained(
                    self.name, lambda done, total: self.progress.emit(self.request, label, done, total), self.stop)
                self.downloaded.emit(self.request, where)
            if self.build:
                self.progress.emit(self.request, f"Building {self.name.split(':', 1)[1]} ...", 0, 0)
                self.built.emit(self.request, build_now(self.name, self.weights, self.num_classes))
        except catalogue.DownloadCancelled:
            self.failed.emit(self.request, "The download was stopped; nothing was changed.")
        except UserError as exc:
            self.failed.emit(self.request, str(exc))
        except Exception as exc:  # noqa: BLE001 - a user never sees a traceback
            self.failed.emit(self.request, f"The model could not be built ({exc.__class__.__name__}: {exc}).")
        finally:
            self.done.emit()


def build_now(name: str, weights: str, num_classes: int) -> BuildResult:
    """Build on the calling thread (the worker's, or a test's)."""
    from engine.models.layers import ModuleTree, build_layer_tree
    from engine.models.build import build_model

    began = time.perf_counter()
    built = build_model(name, weights, num_classes)
    tree = build_layer_tree(built.model, built.head)
    modules = ModuleTree(built.model, tree)
    return BuildResult(name, weights, num_classes, built, tree, modules, time.perf_counter() - began)


class ModelBuilder(QObject):
    """Builds (or only downloads) one model at a time off the GUI thread; the latest request wins.

    Signals: ``progress(text, done, total)`` (total 0 = no measure yet), ``built(BuildResult)``,
    ``downloaded(where)`` and ``failed(sentence)``; ``busyChanged(bool)``.
    """

    progress = Signal(str, int, int)
    built = Signal(object)
    downloaded = Signal(str)
    failed = Signal(str)
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._request = 0
        self._stop: threading.Event | None = None
        self._busy = False

    def build(self, name: str, weights: str, num_classes: int) -> None:
        self._start(name, weights, num_classes, build=True)

    def download(self, name: str) -> None:
        """Fetch the pretrained weights of ``name`` into the local cache (no model is built)."""
        self._start(name, "pretrained", 0, build=False)

    def cancel(self) -> None:
        """Stop a download at once; a build in progress finishes in the background and is dropped."""
        if self._stop is not None:
            self._stop.set()
        self._request += 1
        self._set_busy(False)

    def is_busy(self) -> bool:
        return self._busy

    def _start(self, name: str, weights: str, num_classes: int, build: bool) -> None:
        if self._stop is not None:
            self._stop.set()  # a download still running for an older request stops
        self._request += 1
        self._stop = threading.Event()
        worker = _BuildWorker(self._request, name, weights, num_classes, self._stop, build)
        worker.progress.connect(self._on_progress)
        worker.built.connect(self._on_built)
        worker.downloaded.connect(self._on_downloaded)
        worker.failed.connect(self._on_failed)
        self._set_busy(True)
        _start(worker, self._stop)

    def _current(self, request: int) -> bool:
        return request == self._request

    @Slot(int, str, int, int)
    def _on_progress(self, request: int, text: str, done: int, total: int) -> None:
        if self._current(request):
            self.progress.emit(text, done, total)

    @Slot(int, str)
    def _on_downloaded(self, request: int, where: str) -> None:
        if self._current(request):
            self.downloaded.emit(where)

    @Slot(int, object)
    def _on_built(self, request: int, result: object) -> None:
        if self._current(request):
            self._set_busy(False)
            self.built.emit(result)

    @Slot(int, str)
    def _on_failed(self, request: int, message: str) -> None:
        if self._current(request):
            self._set_busy(False)
            self.failed.emit(message)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busyChanged.emit(busy)


# --- the catalogue and parameter counts -------------------------------------------------------------------------


class _CatalogueWorker(QObject):
    loaded = Signal(object)  # tuple[ModelInfo, ...]
    counted = Signal(str, object)  # name, int | None
    done = Signal()

    SAVE_EVERY = 20  # counts between two writes of the cache file
    MAX_PENDING = 200

    def __init__(self, counts: catalogue.ParamCounts, stop: threading.Event) -> None:
        super().__init__()
        self.counts, self.stop = counts, stop
        self._wanted: list[str] = []
        self._cond = threading.Condition()

    def want(self, names: list[str]) -> None:
        """Count these next, before what was wanted earlier (called from the GUI thread). Only the latest
        MAX_PENDING stay queued: rows scrolled past long ago can wait until they are shown again."""
        with self._cond:
            self._wanted = (list(names) + [n for n in self._wanted if n not in names])[:self.MAX_PENDING]
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    @Slot()
    def run(self) -> None:
        try:
            self.loaded.emit(catalogue.all_models())
            fresh = 0
            while not self.stop.is_set():
                with self._cond:
                    while not self._wanted and not self.stop.is_set():
                        self._cond.wait()
                    if self.stop.is_set():
                        break
                    name = self._wanted.pop(0)
                cached = self.counts.known(name)
                self.counted.emit(name, self.counts.count(name))
                fresh += not cached
                if fresh >= self.SAVE_EVERY:
                    self.counts.save()
                    fresh = 0
        finally:
            self.counts.save()
            self.done.emit()


class CatalogueService(QObject):
    """The model catalogue loaded off the GUI thread (``loaded(models)``), and parameter counts on request
    (``counted(name, count)``)."""

    loaded = Signal(object)
    counted = Signal(str, object)

    def __init__(self, parent: QObject | None = None, cache_dir=None) -> None:
        super().__init__(parent)
        self.counts = catalogue.ParamCounts(cache_dir)
        self._stop = threading.Event()
        self._worker = _CatalogueWorker(self.counts, self._stop)
        self._worker.loaded.connect(self.loaded)
        self._worker.counted.connect(self.counted)
        _start(self._worker, self._stop)
        # The worker waits for requests until told to stop: tell it when the widget that owns this goes away.
        stop, worker = self._stop, self._worker
        self.destroyed.connect(lambda: (stop.set(), worker.wake()))

    def want(self, names: list[str]) -> None:
        self._worker.want(names)

    def stop(self) -> None:
        self._stop.set()
        self._worker.wake()


# --- any short job ----------------------------------------------------------------------------------------------


class _CallWorker(QObject):
    result = Signal(object)
    failed = Signal(str)
    done = Signal()

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    @Slot()
    def run(self) -> None:
        try:
            self.result.emit(self.fn())
        except UserError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - a user never sees a traceback
            self.failed.emit(f"Something went wrong ({exc.__class__.__name__}: {exc}).")
        finally:
            self.done.emit()


class BackgroundCall(QObject):
    """Run ``fn()`` on a background thread; ``result(value)`` or ``failed(sentence)`` arrive on this object's
    thread (the GUI's). Keep a reference until one of them has arrived."""

    result = Signal(object)
    failed = Signal(str)

    def __init__(self, fn, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker = _CallWorker(fn)
        self._worker.result.connect(self.result)
        self._worker.failed.connect(self.failed)
        _start(self._worker, threading.Event())
