"""The frozen-output store: the frozen layers' output for each picture (and each augmented view), kept on disk as it is
computed, so that a stopped, crashed or resumed run -- and a later run with the same frozen part -- reads back what was
done instead of computing it again.

Keys. An entry belongs to one picture passed through one frozen part with one preprocessing:

- the *frozen part* (:func:`prefix_identity`): the model's name, the frozen stages, the kind of split, the output's
  shape and type, the precision it was computed in, and a hash of the frozen layers' own weights and buffers (their
  actual values, whatever file or tag they came from: a fine-tuned run's weights, another weight file, other
  BatchNorm statistics all give other keys);
- the *preprocessing*: the model's input size, interpolation, crop, mean and standard deviation, the augmentation
  preset, and for an augmented view its number and the run's seed (which draw the view's random crop);
- the *picture*: its absolute path, modification time (ns) and size, like the picture cache (engine.data.cache): a
  changed, replaced or touched picture gets a new key.

A picture's augmented view is drawn from random numbers seeded by its own key (:func:`view_seed`), not by its place in
the run: the same picture gets the same view whether it is computed in one pass, after a stop, or in another run.

Where: ``engine.paths.user_cache_dir()/frozen``, or ``$TRANSFER_STUDIO_FROZEN_CACHE``, or (for tests and
benchmarks that move the picture cache) ``$TRANSFER_STUDIO_CACHE/frozen``. One small ``.npy`` file per entry, under a
sub-folder named by the key's first two characters, written atomically (a temporary file renamed over the entry; no
fsync: an entry cut short fails its size check when read and is computed again).

Size policy: at most ``$TRANSFER_STUDIO_FROZEN_CACHE_MAX_MB`` megabytes (default 5 GiB), always leaving 1 GiB free on
the disk. Before a pass (:meth:`FrozenStore.prepare`), the least recently used entries that the run does not need are
removed to make room; entries beyond the limit are computed as usual and not stored. Any failure of the store (disk
full, read-only folder) only makes the run compute the outputs as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from engine import diskcache
from engine.data.cache import CACHE_ENV
from engine.paths import user_cache_dir

__all__ = ["FROZEN_ENV", "FROZEN_MAX_MB_ENV", "FrozenStore", "StorePlan", "picture_key", "prefix_identity",
           "store_root", "view_seed"]

FROZEN_ENV = "TRANSFER_STUDIO_FROZEN_CACHE"
FROZEN_MAX_MB_ENV = "TRANSFER_STUDIO_FROZEN_CACHE_MAX_MB"
DEFAULT_MAX_BYTES = 5 * 2**30
FORMAT = 1  # part of every key: a change of the stored layout makes old entries unreachable (then trimmed)
_SUFFIX = diskcache.SUFFIX


def store_root() -> Path:
    override = os.environ.get(FROZEN_ENV)
    if override:
        return Path(override).expanduser()
    pictures = os.environ.get(CACHE_ENV)  # the picture cache moved: keep both caches together
    if pictures:
        return Path(pictures).expanduser() / "frozen"
    return user_cache_dir() / "frozen"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tensors_hash(state: dict[str, torch.Tensor]) -> str:
    """A hash of tensors' names, types, shapes and values (the frozen layers' weights and buffers)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.to("cpu").contiguous()
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights and buffers of ``module``'s layers that do not train (a layer with a trained parameter is left
    out, buffers included: the head that a prefix module may still hold changes as the run trains)."""
    state = {}
    for name, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if any(p.requires_grad for _, p in own):
            continue
        for n, t in own + list(sub.named_buffers(recurse=False)):
            state[f"{name}.{n}" if name else n] = t
    return state


def prefix_identity(model_name: str, split, precision: str, data_config: dict, dtype: torch.dtype) -> dict:
    """What makes the frozen part's outputs what they are, apart from the picture and its view (see the module's
    docstring)."""
    return {
        "format": FORMAT, "model": model_name, "kind": split.kind, "frozen": list(split.frozen),
        "output_shape": list(split.output_shape), "output_dtype": str(dtype), "precision": precision,
        "weights": tensors_hash(frozen_state(split.prefix)),
        "preprocessing": {k: data_config.get(k) for k in ("input_size", "interpolation", "mean", "std", "crop_pct",
                                                          "crop_mode")},
    }


def picture_key(path: str) -> str | None:
    """The picture as it is now (absolute path, modification time, size); None when it cannot be found."""
    try:
        absolute = os.path.abspath(path)
        st = os.stat(absolute)
    except OSError:
        return None
    return f"{absolute}|{st.st_mtime_ns}|{st.st_size}"


def view_seed(picture: str, view: str) -> int:
    """The seed of a picture's augmented view: from the picture and the view only, not its place in the run."""
    return int(_digest(f"{view}|{picture}")[:15], 16)


@dataclass(frozen=True)
class StorePlan:
    """What :meth:`FrozenStore.prepare` found, for the log."""

    entries: int  # outputs the pass needs
    stored: int  # ... found in the store
    to_add: int  # ... computed and added
    unstored: int  # ... computed but not kept (beyond the size limit, or the store cannot be written)
    folder: str
    writable: bool


class FrozenStore:
    """Frozen-layer outputs on disk (see the module's docstring). ``namespace`` is :func:`prefix_identity`'s dict."""

    def __init__(self, namespace: dict, root: str | os.PathLike | None = None, max_bytes: int | None = None):
        self.namespace = _digest(json.dumps(namespace, sort_keys=True, default=str))
        self.shape = tuple(int(s) for s in namespace["output_shape"])
        self.dtype = getattr(torch, str(namespace["output_dtype"]).replace("torch.", ""))
        self.nbytes = int(np.prod(self.shape)) * torch.empty((), dtype=self.dtype).element_size()
        self.root = Path(root) if root is not None else store_root()
        if max_bytes is None:
            max_bytes = diskcache.max_bytes_from_env(FROZEN_MAX_MB_ENV, DEFAULT_MAX_BYTES)
        self.max_bytes = int(max_bytes)
        self.writable = True
        self.room = None  # entries that may still be added (None: no limit); set by prepare()

    def key(self, view: str, picture: str | None) -> str | None:
        """The entry's name for one picture (``picture_key``) in one view ("eval", or "train:<seed>:<n>")."""
        return None if picture is None else _digest(f"{self.namespace}|{view}|{picture}")[:40]

    def entry_path(self, key: str) -> Path:
        return diskcache.entry_path(self.root, key)

    # -- reading and writing -------------------------------------------------------------------------------------

    def get(self, key: str) -> torch.Tensor | None:
        """The stored output, or None when it is missing or damaged (a damaged entry is removed)."""
        entry = self.entry_path(key)
        try:
            raw = diskcache.read(entry)
            if raw is None:
                return None
            if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size != self.nbytes:
                raise ValueError("not an output of this frozen part")
        except ValueError:
            diskcache.drop(entry)
            return None
        diskcache.touch(entry)
        return torch.from_numpy(raw).view(self.dtype).reshape(self.shape)

    def put(self, key: str | None, output: torch.Tensor) -> None:
        """Store one picture's output (a CPU tensor of this store's shape and type), when there is room."""
        if key is None or not self.writable or (self.room is not None and self.room <= 0):
            return
        raw = output.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        if not diskcache.write(self.entry_path(key), raw):
            self.writable = False  # disk full, read-only folder...: compute as before from now on
            return
        if self.room is not None:
            self.room -= 1

    # -- size policy -------------------------------------------------------------------------------------------

    def entries(self) -> list[tuple[Path, int, int]]:
        """Every entry (of any frozen part) as (path, size in bytes, last use in ns)."""
        return diskcache.entries(self.root)

    def prepare(self, keys: Sequence[str | None]) -> StorePlan:
        """Before a pass: count the stored outputs, remove least-recently-used entries the run does not need so that
        the missing ones fit under the limit, and allow adding only as many as fit."""
        if not diskcache.writable(self.root):
            self.writable = False
            return StorePlan(len(keys), 0, 0, len(keys), str(self.root), False)
        needed = {k + _SUFFIX for k in keys if k}
        entries = self.entries()
        present = {e.name for e, _, _ in entries}
        missing = sum(1 for k in keys if not k or k + _SUFFIX not in present)
        each = self.nbytes + 128  # the .npy header
        limit, used, _ = diskcache.make_room(self.root, entries, needed, each * missing, self.max_bytes)
        room = max(0, limit - used) // each
        self.room = None if room >= missing else int(room)
        fit = min(missing, room)
        return StorePlan(len(keys), len(keys) - missing, fit, missing - fit, str(self.root), True)
