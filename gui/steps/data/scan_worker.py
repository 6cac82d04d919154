"""Scanning a dataset off the GUI thread, as a job of the window's job service (``gui.support.jobs``).

``Scanner.start(...)`` begins a scan (cancelling any scan still running); the window hears ``phase``, ``progress``,
``finished(DatasetIndex, extra)``, ``failed(sentence)`` or ``cancelled``. The engine checks the stop token between
pictures, so a cancelled scan (or the window closing, which shuts the job service down) ends within one picture's
decode.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.config import DataConfig
from engine.data.scan import scan
from gui.support.jobs import Jobs, Progress

SCAN = "scan"  # the kind of the scanner's jobs

# A step run before the scan (e.g. making the demo pictures): (on_progress, stop) -> the DataConfig to scan with and a
# value handed back with the result.
Prepare = Callable[[Callable[[int, int], None], threading.Event], tuple[DataConfig, Any]]


def _prepare_and_scan(source: str, val: float, test: float, seed: int, split: str, prepare: Prepare | None,
                      progress: Progress, stop: threading.Event, formats: DataConfig | None = None) -> tuple[Any, Any]:
    """The scan job: (the DatasetIndex, what ``prepare`` returned besides its DataConfig, or None). ``formats``: the
    data settings lab pictures are read with (DICOM, 16-bit TIFF, channels, slides)."""
    extra = None
    if prepare is not None:
        progress.say("Preparing the pictures ...")
        data, extra = prepare(progress, stop)
        source, val, test, seed, split = data.source, data.val_fraction, data.test_fraction, data.split_seed, data.split
        formats = data
    progress.say("Checking pictures ...")
    from engine.train.multitask import scan_tasks, wants_tasks  # a CSV of several task columns (issue #17)

    tasks = (formats or DataConfig()).tasks
    if wants_tasks(source, tasks):
        return scan_tasks(source, tasks, val_fraction=val, test_fraction=test, seed=seed, split=split, stop=stop), extra
    index = scan(source, val_fraction=val, test_fraction=test, seed=seed, split=split, on_progress=progress, stop=stop,
                 formats=formats or DataConfig())
    return index, extra


class Scanner(QObject):
    """Starts scans, one at a time, and forwards the current scan's news (a cancelled scan's never arrive)."""

    started = Signal(str)  # the source
    phase = Signal(str)  # what is happening, in words
    progress = Signal(int, int)  # done, total
    finished = Signal(object, object)  # DatasetIndex, the value returned by prepare (or None)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, parent: QObject | None = None, jobs: Jobs | None = None) -> None:
        super().__init__(parent)
        self.jobs = Jobs(self, service=jobs)

    @property
    def running(self) -> bool:
        return self.jobs.running(SCAN)

    def start(self, source: str, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0,
              prepare: Prepare | None = None, split: str = "auto", formats: DataConfig | None = None) -> None:
        self.cancel()
        job = self.jobs.start(
            SCAN, lambda progress, stop: _prepare_and_scan(source, val_fraction, test_fraction, seed, split, prepare,
                                                           progress, stop, formats),
            lambda result: self.finished.emit(*result), on_error=self.failed.emit, on_progress=self.progress.emit,
            on_phase=self.phase.emit, on_cancel=self.cancelled.emit, what="The scan of the folder")
        if job is not None:
            self.started.emit(source)

    def cancel(self) -> None:
        """Ask the current scan to stop; ``cancelled`` is emitted at once, the job ends within one picture."""
        self.jobs.cancel(SCAN)
