"""What one look at each picture tells: its content hash, perceptual hashes and the plain facts the suspicious-picture
checks need (size, brightness spread, colour).

The perceptual hash is the classic DCT hash (pHash: the 32 x 32 greyscale picture's lowest 8 x 8 frequencies, each
bit above or below their median) plus the same hash of the mirrored picture, so that a mirrored copy is found too.
It is written here with numpy (a fixed 32 x 32 DCT matrix: two small matrix products per picture) rather than taken
from ``imagehash``, which would add SciPy and PyWavelets to the app for these few lines, and because the search needs
the hashes as bit arrays for matrix products anyway (engine.advise.neighbours), not as hash objects.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.data.images import ImageError, load_rgb

HASH_SIDE = 32  # the greyscale picture the DCT hash is computed from
HASH_BITS = 8  # the lowest HASH_BITS x HASH_BITS frequencies make the 64-bit hash
STATS_SIDE = 64  # brightness and colour are judged on a picture this small (plenty for "blank" and "greyscale")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Look:
    """One picture's hashes and facts; ``error`` is the reason it could not be read (then the rest is empty)."""

    content: str = ""  # blake2b of the file's bytes: equal for byte-identical copies
    phash: np.ndarray | None = None  # 64 bools
    phash_mirror: np.ndarray | None = None  # the hash of the picture flipped left to right
    width: int = 0
    height: int = 0
    spread: float = 0.0  # standard deviation of the grey levels (0-255) of the small picture
    colourful: float = 0.0  # mean absolute difference between the colour channels (0 = greyscale)
    error: str = ""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(HASH_SIDE)


def phash_of(grey: np.ndarray) -> np.ndarray:
    """The 64-bit DCT hash (as 64 bools) of a HASH_SIDE x HASH_SIDE greyscale array."""
    freq = _DCT @ grey.astype(np.float64) @ _DCT.T
    low = freq[:HASH_BITS, :HASH_BITS].ravel()
    return low > np.median(low[1:])  # the DC term says only how bright the picture is


def content_hash(path: str | os.PathLike) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def look(path: str) -> Look:
    """Hash and measure one picture (decoded at a reduced size where the format allows it)."""
    try:
        digest = content_hash(path)
        with Image.open(path) as img:
            width, height = img.size  # the file's own size (read from its header; nothing decoded yet)
        rgb = load_rgb(path, draft_size=(STATS_SIDE * 2, STATS_SIDE * 2))  # JPEG: decoded at 1/2 ... 1/8 scale
    except ImageError as exc:
        return Look(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure is a reason, never a crash
        return Look(error=f"The picture cannot be read ({exc.__class__.__name__}).")
    small = np.asarray(rgb.resize((STATS_SIDE, STATS_SIDE), Image.Resampling.BILINEAR), dtype=np.float32)
    grey_small = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    colourful = float(np.mean(np.abs(small - small.mean(axis=2, keepdims=True))))
    grey = np.asarray(rgb.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    return Look(digest, phash_of(grey), phash_of(grey[:, ::-1]), width, height, float(grey_small.std()), colourful)


def look_all(paths: Sequence[str], *, workers: int | None = None,
             on_progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None) -> list[Look]:
    """``look`` at every picture on a thread pool (decoding releases the interpreter lock); in order."""
    total = len(paths)
    out: list[Look] = []
    workers = max(1, workers or min(8, (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        step = 256
        for start in range(0, total, step):
            if stop is not None and stop.is_set():
                break
            out.extend(pool.map(look, paths[start:start + step]))
            if on_progress is not None:
                on_progress(len(out), total)
    return out
