"""The unlabelled pool: a folder of pictures nobody has sorted yet, scanned like the labelled data (the same picture
checks and the same health report), and never used for training until a picture is labelled.

Pictures anywhere under the folder count (sub-folders too, sorted by path); hidden entries and files that are not
pictures are skipped; pictures that cannot be decoded are reported and left out. Pictures that are already part of
the labelled data (a pool folder that overlaps the dataset) are left out too, so that a suggestion is always a
picture the model has not been taught.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from engine.data.images import check_image, is_image_path
from engine.data.scan import Advice, DataError, HealthReport, Problem
from engine.words import plural as _plural

__all__ = ["Pool", "scan_pool"]


@dataclass
class Pool:
    """The readable, unlabelled pictures of a pool folder (absolute paths, sorted) and its health report."""

    root: str
    paths: list[str]
    health: HealthReport
    overlap: int = 0  # pictures left out because the labelled data holds them already

    def to_dict(self) -> dict:
        return {"root": self.root, "pictures": len(self.paths), "overlap": self.overlap,
                "health": self.health.to_dict()}


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def scan_pool(folder: str | os.PathLike, *, known: Iterable[str] = (), verify: bool = True,
              workers: int | None = None, on_progress: Callable[[int, int], None] | None = None,
              stop: threading.Event | None = None) -> Pool:
    """Index the pictures of a pool folder; raise DataError (a sentence) when it cannot be used.

    ``known`` are pictures of the labelled data, left out of the pool. With ``verify`` every picture is decoded
    (at a reduced size, as :func:`engine.data.scan.scan` does) on ``workers`` threads, ``on_progress(done, total)``
    reporting from the calling thread; setting ``stop`` cancels."""
    root = Path(os.path.abspath(Path(folder).expanduser()))
    if not root.exists():
        raise DataError(f"The pool folder {root} does not exist: choose the folder of pictures still to label.")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: choose the folder that holds the pictures still to label.")
    found: list[str] = []
    ignored = 0
    problems: list[Problem] = []

    def unreadable(error: OSError) -> None:
        reason = (error.strerror or "unknown error").lower()
        problems.append(Problem(str(error.filename), f"The folder cannot be read ({reason})."))

    for current, folders, names in os.walk(root, onerror=unreadable):
        if stop is not None and stop.is_set():
            raise DataError("Reading the pool folder was cancelled.")
        kept = sorted(d for d in folders if not _hidden(d))
        ignored += len(folders) - len(kept)
        folders[:] = kept
        for name in names:
            if _hidden(name) or not is_image_path(name):
                ignored += 1
            else:
                found.append(os.path.join(current, name))
    known_keys = {os.path.normcase(os.path.abspath(p)) for p in known}
    candidates = sorted(p for p in found if os.path.normcase(p) not in known_keys)
    overlap = len(found) - len(candidates)
    reasons = _verify(candidates, workers, on_progress, stop) if verify else [None] * len(candidates)
    paths = [p for p, r in zip(candidates, reasons) if r is None]
    problems += [Problem(p, r) for p, r in zip(candidates, reasons) if r is not None]
    problems.sort(key=lambda problem: problem.path)
    advice: list[Advice] = []
    if overlap:
        verb = "are" if overlap > 1 else "is"
        advice.append(Advice("pool-overlap", f"{_plural(overlap, 'picture')} of the pool {verb} already in the labelled "
                             "data and left out of the pool."))
    if problems:
        advice.append(Advice("unreadable", f"{_plural(len(problems), 'file')} could not be used and "
                             f"{'were' if len(problems) > 1 else 'was'} left out: fix or remove them (the list says "
                             "what is wrong with each)."))
    if not paths:
        if problems:
            raise DataError(f"None of the pictures in the pool folder {root} can be used; the first problem is "
                            f"{problems[0].path}: {problems[0].reason}")
        if overlap:
            raise DataError(f"Every picture in the pool folder {root} is already in the labelled data: choose a "
                            "folder of pictures that are not labelled yet.")
        raise DataError(f"No pictures were found in the pool folder {root}: put the pictures still to label there "
                        "(JPEG, PNG, TIFF, ...).")
    return Pool(str(root), paths, HealthReport(unreadable=problems, ignored=ignored, advice=advice), overlap)


def _verify(paths: list[str], workers: int | None, on_progress, stop) -> list[str | None]:
    """Decode every picture on a thread pool (as engine.data.scan does for the labelled data)."""
    total = len(paths)
    reasons: list[str | None] = [None] * total
    if on_progress is not None:
        on_progress(0, total)
    pool = ThreadPoolExecutor(max_workers=max(1, workers or min(8, (os.cpu_count() or 1) * 2)))
    try:
        futures = {pool.submit(check_image, path): i for i, path in enumerate(paths)}
        for done, future in enumerate(as_completed(futures), start=1):
            if stop is not None and stop.is_set():
                raise DataError("Reading the pool folder was cancelled.")
            reasons[futures[future]] = future.result()
            if on_progress is not None:
                on_progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return reasons
