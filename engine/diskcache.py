"""A folder of cache entries with a size limit: one ``.npy`` file per entry in two-letter sub-folders, least recently
used out first, never filling the disk. The decoded-picture cache (engine.data.cache) and the store of frozen-layer
outputs (engine.train.store) are both such folders; what an entry holds and how its key is made is theirs.

Written by hand rather than with a cache library: entries must be plain ``.npy`` files shared by several processes
(the loaders), which the usual key-value caches do not offer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

KEEP_FREE_BYTES = 2**30  # never fill the disk: leave this much free
SUFFIX = ".npy"

Entry = tuple[Path, int, int]  # path, size in bytes, last use in ns


def max_bytes_from_env(name: str, default: int) -> int:
    """A size limit given in MB by the environment variable ``name`` (``default`` bytes when unset or not a
    number)."""
    value = os.environ.get(name, "")
    try:
        return max(0, int(float(value) * 2**20)) if value else default
    except ValueError:
        return default


def entry_path(root: Path, key: str) -> Path:
    return root / key[:2] / (key + SUFFIX)


def read(entry: Path) -> np.ndarray | None:
    """The entry's array, or None when it is missing. A damaged entry (cut short by a crash while writing) raises
    ValueError; ``drop`` it and make it again."""
    try:
        return np.load(entry, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, EOFError) as exc:
        raise ValueError(str(exc)) from None


def drop(entry: Path) -> None:
    try:
        entry.unlink()
    except OSError:
        pass


def touch(entry: Path) -> None:
    """Least-recently-used bookkeeping: a use refreshes the entry's time."""
    try:
        os.utime(entry)
    except OSError:
        pass


def write(entry: Path, array: np.ndarray) -> bool:
    """Write ``array`` as the entry (temporary file, then rename: readers never see half of it). No fsync: an entry
    cut short by a power cut fails its check when read and is made again, and fsync per entry is slow. False when it
    could not be written (disk full, read-only folder ...)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.stem}.", suffix=".tmp", dir=entry.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, entry)
        except BaseException:
            drop(Path(tmp))
            raise
    except OSError:
        return False
    return True


def writable(root: Path) -> bool:
    """Whether entries can be written under ``root`` (made when missing)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=root, prefix=".probe.", delete=True).close()
    except OSError:
        return False
    return True


def entries(root: Path) -> list[Entry]:
    """Every entry (and stale temporary file) under ``root``."""
    found: list[Entry] = []
    try:
        subfolders = [d for d in os.scandir(root) if d.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    for sub in subfolders:
        try:
            with os.scandir(sub.path) as it:
                for e in it:
                    if e.name.endswith(SUFFIX) or e.name.endswith(".tmp"):
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        found.append((Path(e.path), st.st_size, st.st_mtime_ns))
        except OSError:
            continue
    return found


def make_room(root: Path, found: list[Entry], needed: Iterable[str], adding_bytes: int, max_bytes: int
              ) -> tuple[int, int, int]:
    """Before adding ``adding_bytes``: remove least-recently-used entries whose names are not ``needed`` (stale
    temporary files first of all) until everything fits under ``max_bytes`` and the disk keeps KEEP_FREE_BYTES free.
    Returns (the limit, the bytes used afterwards, the bytes freed)."""
    limit = max_bytes
    used = sum(size for _, size, _ in found)
    try:
        limit = min(limit, shutil.disk_usage(root).free + used - KEEP_FREE_BYTES)
    except OSError:
        pass
    want, freed = used + adding_bytes, 0
    if want > limit:
        keep = set(needed)
        for entry, size, _ in sorted((e for e in found if e[0].name not in keep),
                                     key=lambda e: (not e[0].name.endswith(".tmp"), e[2])):
            if want <= limit:
                break
            try:
                entry.unlink()
            except OSError:
                continue
            freed += size
            want -= size
    return limit, used - freed, freed
