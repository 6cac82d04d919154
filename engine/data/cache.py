"""The decoded-image cache: each picture decoded, turned upright and resized once, then reused across epochs and runs.

A picture is decoded with :func:`engine.data.images.load_rgb` (EXIF orientation, any mode to 8-bit RGB), resized so that
its shorter side is the run's *working size* -- the size the model's evaluation transform resizes to before it crops
(256 for a 224 crop with ``crop_pct`` 0.875), with the same interpolation -- and stored as raw uint8 pixels in a
small ``.npy`` file. The aspect ratio is kept, so the evaluation transform
(resize, centre crop) gives exactly the pixels it gives on the original file, and augmentation (random resized
crops, flips) sees the same picture at the working size. Pictures already smaller than the working size are stored
as they are (never enlarged).

Entries are keyed by (absolute path, working size, interpolation, modification time in ns, file size): a file that is
changed, replaced or touched gets a new key and is decoded again; the stale entry is never read and is removed by
the size policy below. Lab pictures (DICOM, 16-bit and float TIFF, slides' tiles: engine.data.formats) add the data
settings to their key -- another window, stretch or channel choice is another picture -- and a tile or frame is
keyed by its own name and its file's time and size.

Where: ``engine.paths.user_cache_dir()/images``, or the folder in ``$TRANSFER_STUDIO_CACHE``.

Size policy: the cache holds at most ``$TRANSFER_STUDIO_CACHE_MAX_MB`` megabytes (default 10 GiB) and always leaves
1 GiB free on its disk. When a run starts (:meth:`ImageCache.prepare`), the least recently used entries that the
run does not need are removed to make room for the run's pictures; if the run's pictures alone do not fit, the
pictures beyond the limit are decoded every time as usual, never cached. Each use of an entry counts as a use
(its modification time is refreshed once per process).

Writes are atomic (a temporary file renamed over the entry), so several processes -- data-loader workers, or two
runs at once -- can share the cache; an entry that cannot be read back is treated as missing. Any failure of the
cache itself (disk full, read-only folder) only makes the run decode pictures as usual.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from engine import diskcache
from engine.data import formats as _formats
from engine.data.images import load_rgb
from engine.paths import user_cache_dir

__all__ = ["CACHE_ENV", "MAX_MB_ENV", "CachePlan", "ImageCache", "cache_root", "working_side"]

CACHE_ENV = "TRANSFER_STUDIO_CACHE"
MAX_MB_ENV = "TRANSFER_STUDIO_CACHE_MAX_MB"
DEFAULT_MAX_BYTES = 10 * 2**30
FORMAT = 1  # part of every key: a change of the stored format makes old entries unreachable (then trimmed)


_ORDINARY_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # keyed exactly as before


def cache_root() -> Path:
    """The folder of the decoded-image cache (``$TRANSFER_STUDIO_CACHE`` or the user cache folder)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return user_cache_dir() / "images"


def working_side(data_config: dict) -> int:
    """The shorter side a picture is resized to before the centre crop: ``floor(crop / crop_pct)``, as timm's
    evaluation transform computes it (256 for a 224 crop at 0.875)."""
    crop = max(int(v) for v in data_config["input_size"][-2:])
    return int(math.floor(crop / float(data_config.get("crop_pct") or 0.875)))


@dataclass(frozen=True)
class CachePlan:
    """What :meth:`ImageCache.prepare` found and did, for the message to the user."""

    pictures: int  # pictures the run uses
    cached: int  # ... already in the cache
    to_add: int  # ... that will be added as they are decoded
    uncached: int  # ... that do not fit under the size limit and are decoded every time
    freed_bytes: int  # bytes of least-recently-used entries removed to make room
    folder: str
    writable: bool

    def message(self) -> str:
        if not self.writable:
            return (f"The picture cache folder {self.folder} cannot be written: pictures are decoded every epoch "
                    "(slower, same results).")
        text = (f"Decoded pictures are kept in {self.folder}: {self.cached} of {self.pictures} are there already, "
                f"the other {self.to_add + self.uncached} are decoded once.")
        if self.uncached:
            text += (f" {self.uncached} pictures do not fit under the cache's size limit and are decoded every "
                     f"epoch (raise {MAX_MB_ENV} to cache them).")
        return text


class ImageCache:
    """Decoded, resized pictures on disk. Cheap to pickle: data-loader workers each get a copy."""

    def __init__(self, side: int, interpolation: str = "bilinear", root: str | os.PathLike | None = None,
                 max_bytes: int | None = None, formats: "_formats.FormatSettings | None" = None):
        self.side = int(side)
        # How lab pictures are read (the process's active settings unless given): part of their keys.
        self.formats = formats or _formats.active()
        self.interpolation = str(interpolation)
        self.root = Path(root) if root is not None else cache_root()
        if max_bytes is None:
            max_bytes = diskcache.max_bytes_from_env(MAX_MB_ENV, DEFAULT_MAX_BYTES)
        self.max_bytes = int(max_bytes)
        self.writable = True
        # When set, only these paths may be added (the run's pictures that fit under the size limit).
        self.allowed: frozenset[str] | None = None
        self._touched: set[str] = set()

    @classmethod
    def for_data_config(cls, data_config: dict, root: str | os.PathLike | None = None,
                        max_bytes: int | None = None) -> "ImageCache":
        stored = data_config.get("formats")  # a trained model's own settings (engine.models.build.adapt_to_data)
        settings = _formats.FormatSettings.from_dict(stored) if stored else None
        return cls(working_side(data_config), data_config.get("interpolation", "bilinear"), root, max_bytes, settings)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_touched"] = set()
        return state

    # -- keys --------------------------------------------------------------------------------------------------

    def key(self, path: str | os.PathLike) -> str | None:
        """The entry name for the file as it is now; None when the file cannot be found."""
        try:
            absolute = os.path.abspath(path)
            text_path = os.fspath(path)
            lab = not text_path.lower().endswith(_ORDINARY_SUFFIXES)
            st = os.stat(_formats.real_path(absolute) if lab else absolute)
        except OSError:
            return None
        text = f"{FORMAT}|{absolute}|{self.side}|{self.interpolation}|{st.st_mtime_ns}|{st.st_size}"
        if lab:
            text += f"|{self.formats.key()}"
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]

    def entry_path(self, key: str) -> Path:
        return diskcache.entry_path(self.root, key)

    # -- reading and writing -------------------------------------------------------------------------------------

    def get(self, path: str | os.PathLike) -> "Image.Image | np.ndarray | None":
        """The cached picture, or None when it is not cached (or its entry is damaged)."""
        key = self.key(path)
        return None if key is None else self._read(key)

    def load(self, path: str | os.PathLike) -> "Image.Image | np.ndarray":
        """The picture at the working size: from the cache, or decoded, resized and added to the cache.

        Raises :class:`engine.data.images.ImageError` like ``load_rgb`` when the file cannot be used. With the
        channels setting "all", an HxWxC uint8 array with every channel (engine.data.formats.open_array)."""
        key = self.key(path)
        if key is not None:
            image = self._read(key)
            if image is not None:
                return image
        if self.formats.all_channels:
            image = self.resize_array(_formats.open_array(path, self.formats, draft_size=(self.side, self.side)))
        else:
            image = self.resize(load_rgb(path, draft_size=(self.side, self.side), settings=self.formats))
        if key is not None and self.writable and (self.allowed is None or os.path.abspath(path) in self.allowed):
            self._write(key, image)
        return image

    def resize(self, image: Image.Image) -> Image.Image:
        """Shorter side to the working size, with the transform's own resize (torchvision's, as timm uses), so
        that the evaluation transform's resize leaves the result untouched."""
        if min(image.size) <= self.side:
            return image
        from timm.data.transforms import str_to_interp_mode
        from torchvision.transforms import functional as TF

        return TF.resize(image, self.side, interpolation=str_to_interp_mode(self.interpolation))

    def resize_array(self, pixels: np.ndarray) -> np.ndarray:
        """``resize`` for an HxWxC array of any number of channels (torchvision's tensor resize, antialiased)."""
        if min(pixels.shape[:2]) <= self.side:
            return pixels
        import torch
        from timm.data.transforms import str_to_interp_mode
        from torchvision.transforms import functional as TF

        t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        t = TF.resize(t, self.side, interpolation=str_to_interp_mode(self.interpolation), antialias=True)
        return t.permute(1, 2, 0).contiguous().numpy()

    def _read(self, key: str) -> "Image.Image | np.ndarray | None":
        entry = self.entry_path(key)
        try:
            # Read into memory in one go (a picture at the working size is a few hundred kB): about 0.1 ms, against
            # 0.2-0.25 ms to map the file and copy the mapping out (measured on 2 shared cores).
            pixels = diskcache.read(entry)
            if pixels is None:
                return None
            if self.formats.all_channels:  # every channel: the array itself (any number of channels)
                if pixels.dtype != np.uint8 or pixels.ndim != 3:
                    raise ValueError("not a picture")
                image = pixels
            else:
                if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
                    raise ValueError("not an RGB picture")
                image = Image.fromarray(pixels)
        except ValueError:  # cut short (a crash while writing) or damaged: decode again
            diskcache.drop(entry)
            return None
        if key not in self._touched:
            self._touched.add(key)
            diskcache.touch(entry)
        return image

    def _write(self, key: str, image: Image.Image) -> None:
        if not diskcache.write(self.entry_path(key), np.asarray(image, dtype=np.uint8)):
            self.writable = False  # disk full, read-only folder...: decode as usual from now on

    # -- size policy -------------------------------------------------------------------------------------------

    def entries(self) -> list[tuple[Path, int, int]]:
        """Every entry as (path, size in bytes, last use in ns)."""
        return diskcache.entries(self.root)

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def prepare(self, paths: Iterable[str | os.PathLike], expected_bytes_each: int | None = None) -> CachePlan:
        """Before a run: count what is cached, remove least-recently-used entries the run does not need so that its
        pictures fit under the limit, and allow adding only the pictures that fit."""
        paths = [os.path.abspath(p) for p in paths]
        if not diskcache.writable(self.root):
            self.writable = False
            return CachePlan(len(paths), 0, 0, len(paths), 0, str(self.root), False)
        keys = {p: self.key(p) for p in paths}
        needed = {self.entry_path(k).name for k in keys.values() if k}
        entries = self.entries()
        present = {e.name for e, _, _ in entries}
        missing = [p for p, k in keys.items() if k and self.entry_path(k).name not in present]
        cached = len(paths) - len(missing) - sum(1 for k in keys.values() if not k)
        # A picture at the working size: side x side*4/3 x 3 bytes (a typical 4:3 photo), unless told otherwise.
        each = expected_bytes_each or int(self.side * self.side * 4 / 3 * 3) + 128
        limit, used, freed = diskcache.make_room(self.root, entries, needed, each * len(missing), self.max_bytes)
        room = max(0, limit - used)
        fit = min(len(missing), room // each) if each else len(missing)
        self.allowed = frozenset(missing[:fit]) if fit < len(missing) else None
        return CachePlan(len(paths), cached, fit, len(missing) - fit, freed, str(self.root), True)

    def clear(self) -> None:
        """Remove every entry (the folder stays)."""
        for entry, _, _ in self.entries():
            try:
                entry.unlink()
            except OSError:
                pass


def cache_for_run(data_config: dict, paths: Sequence[str]) -> tuple[ImageCache, CachePlan]:
    """An image cache for a run's preprocessing, prepared for its pictures."""
    cache = ImageCache.for_data_config(data_config)
    return cache, cache.prepare(paths)
