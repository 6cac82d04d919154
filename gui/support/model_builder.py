"""Work the model picker and the layer editor hand to the job service (``gui.support.jobs``), so that the window
never freezes.

- ``ModelBuilder`` downloads pretrained weights when needed (with progress) and builds a model with its layer tree;
  a newer request supersedes an older one (its result is dropped).
- ``CatalogueService`` loads the catalogue (timm's import alone takes seconds), then counts parameters of the
  models the picker shows, latest request first, caching the counts on disk.

Each runs its jobs on a lane of its own in the ``Jobs`` it is given (the window's job service), or on a service of
its own when made alone (a test, a benchmark).
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import threading
import time
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from engine.errors import UserError
from engine.models import catalogue
from gui.support.jobs import Jobs, Progress

BUILD = "build"  # the kind of the builder's jobs: a newer download or build replaces an older one
CATALOGUE = "catalogue"


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


def build_now(name: str, weights: str, num_classes: int) -> BuildResult:
    """Build on the calling thread (a job's, or a test's)."""
    from engine.models.layers import ModuleTree, build_layer_tree
    from engine.models.build import build_model

    began = time.perf_counter()
    built = build_model(name, weights, num_classes)
    tree = build_layer_tree(built.model, built.head)
    modules = ModuleTree(built.model, tree)
    return BuildResult(name, weights, num_classes, built, tree, modules, time.perf_counter() - began)


def _download_and_build(name: str, weights: str, num_classes: int, build: bool, progress: Progress,
                        stop: threading.Event) -> BuildResult | None:
    """The builder's job: fetch the pretrained weights when they are not on this computer (``progress.send`` says
    where they went), then build the model when asked to."""
    arch = name.split(":", 1)[-1]
    if weights == "pretrained" and not catalogue.pretrained_availability(name).offline:
        progress.say(f"Downloading the pretrained weights of {arch} ...")
        try:
            where = catalogue.download_pretrained(name, progress, stop)
        except catalogue.DownloadCancelled:
            raise UserError("The download was stopped; nothing was changed.") from None
        progress.send(where)
    if not build:
        return None
    progress.say(f"Building {arch} ...")
    return build_now(name, weights, num_classes)


class ModelBuilder(QObject):
    """Builds (or only downloads) one model at a time off the GUI thread; the latest request wins.

    Signals: ``progress(text, done, total)`` (total 0 = no measure yet), ``built(BuildResult)``,
    ``downloaded(where)`` and ``failed(sentence)``; ``busyChanged(bool)``.
    """

    progress = Signal(str, object, object)  # Python ints: weight files can be larger than 2**31 bytes
    built = Signal(object)
    downloaded = Signal(str)
    failed = Signal(str)
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)
        self._busy = False
        self._text = ""

    def build(self, name: str, weights: str, num_classes: int) -> None:
        self._start(name, weights, num_classes, build=True)

    def download(self, name: str) -> None:
        """Fetch the pretrained weights of ``name`` into the local cache (no model is built)."""
        self._start(name, "pretrained", 0, build=False)

    def cancel(self) -> None:
        """Stop a download at once; a build in progress finishes in the background and is dropped."""
        self.jobs.cancel(BUILD, notify=False)
        self._set_busy(False)

    def is_busy(self) -> bool:
        return self._busy

    def shutdown(self) -> None:
        """Stop and wait (for a builder made on its own; in the window, the window's job service does this)."""
        self.jobs.shutdown()

    def _start(self, name: str, weights: str, num_classes: int, build: bool) -> None:
        # The module's build_now is looked up when the job runs, so that a test can stand in for it.
        job = self.jobs.start(BUILD, lambda progress, stop: _download_and_build(name, weights, num_classes, build,
                                                                                progress, stop),
                              self._done, on_error=self._failed, on_progress=self._on_progress,
                              on_phase=self._on_phase, on_item=self.downloaded.emit, what="Building the model")
        self._set_busy(job is not None)

    def _on_phase(self, text: str) -> None:
        self._text = text
        self.progress.emit(text, 0, 0)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.emit(self._text, done, total)

    def _done(self, result: BuildResult | None) -> None:
        self._set_busy(False)
        if result is not None:
            self.built.emit(result)

    def _failed(self, message: str) -> None:
        self._set_busy(False)
        self.failed.emit(message)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busyChanged.emit(busy)


# --- the catalogue and parameter counts -------------------------------------------------------------------------


class CatalogueService(QObject):
    """The model catalogue loaded off the GUI thread (``loaded(models)``, or ``failed(sentence)``), and parameter
    counts on request (``counted(name, count)``)."""

    loaded = Signal(object)  # tuple[ModelInfo, ...]
    failed = Signal(str)
    counted = Signal(str, object)  # name, int | None

    SAVE_EVERY = 20  # counts between two writes of the cache file
    MAX_PENDING = 200

    def __init__(self, parent: QObject | None = None, cache_dir=None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.counts = catalogue.ParamCounts(cache_dir)
        self.jobs = Jobs(self, service=jobs)
        self._lock = threading.Lock()
        self._wanted: list[str] = []  # names to count, the next first
        self._counting = False  # a counting job is on its way (it clears this, under the lock, when it ends)
        self.jobs.start(CATALOGUE, lambda progress, stop: catalogue.all_models(), self.loaded.emit,
                        on_error=self.failed.emit, what="Loading the model catalogue")

    def want(self, names: list[str]) -> None:
        """Count these next, before what was wanted earlier. Only the latest MAX_PENDING stay queued: rows scrolled
        past long ago can wait until they are shown again."""
        with self._lock:
            self._wanted = (list(names) + [n for n in self._wanted if n not in names])[:self.MAX_PENDING]
            start = not self._counting
            self._counting = True
        # One counting job at a time (the flag says so), started without a kind: a new one never cancels an older
        # one that is just ending, whose last counts are still on their way.
        if start and self.jobs.start(None, self._count, lambda _: None, on_item=self._counted,
                                     what="Counting parameters") is None:
            with self._lock:
                self._counting = False

    def _counted(self, item: tuple[str, int | None]) -> None:
        self.counted.emit(*item)

    def _count(self, progress: Progress, stop: threading.Event) -> None:
        """The counting job: count what is wanted, one model at a time, until nothing is (or the service stops)."""
        fresh, ended = 0, False
        try:
            while True:
                with self._lock:
                    if stop.is_set() or not self._wanted:
                        self._counting, ended = False, True
                        return
                    name = self._wanted.pop(0)
                cached = self.counts.known(name)
                progress.send((name, self.counts.count(name)))
                fresh += not cached
                if fresh >= self.SAVE_EVERY:
                    self.counts.save()
                    fresh = 0
        finally:
            if not ended:  # an exception: let the next request start another job
                with self._lock:
                    self._counting = False
            self.counts.save()
