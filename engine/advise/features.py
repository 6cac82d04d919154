"""Pooled features of a frozen pretrained model for a set of pictures: what the doctor compares pictures by.

The model is the one the user trains (``engine.models.build_model``, any weight source) with its classifier replaced
by ``Identity``, in eval mode: its output is the pooled feature vector a new head would learn from. Pictures go
through the model's own evaluation preprocessing, the same one training and evaluation use.

Features are kept on disk per model and weight source (``<cache folder>/features``), keyed by each file's path, size
and modification time, so a second look at the same pictures (after a review, with a few pictures added) computes
only the new ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from engine.data.images import ImageError, load_rgb
from engine.data.loaders import BatchNormalize, auto_workers, build_transforms, decode_size
from engine.errors import UserError
from engine.files import atomic_write
from engine.models.build import build_model
from engine.paths import user_cache_dir

FEATURES_ENV = "TRANSFER_STUDIO_FEATURES"  # another folder for the feature cache (tests use it)
FORMAT = 1


@dataclass(frozen=True)
class Features:
    vectors: np.ndarray  # (n, d) float32, one row per path; zeros where ``ok`` is False
    ok: np.ndarray  # (n,) bool: the picture could be read
    model: str
    note: str  # where the weights came from, as a sentence
    computed: int  # how many were computed now (the rest came from the cache)


def feature_cache_dir() -> Path:
    override = os.environ.get(FEATURES_ENV)
    return Path(override).expanduser() if override else user_cache_dir() / "features"


class _Pictures(Dataset):
    def __init__(self, paths: Sequence[str], transform, draft: tuple[int, int]) -> None:
        self.paths, self.transform, self.draft = list(paths), transform, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(load_rgb(self.paths[i], draft_size=self.draft)), True
        except ImageError:
            return None, False


def _collate(items):
    good = [t for t, ok in items if ok]
    ok = torch.tensor([ok for _, ok in items], dtype=torch.bool)
    return (torch.stack(good) if good else None), ok


def feature_extractor(model_name: str, weights: str) -> tuple[nn.Module, dict, str]:
    """The model without its classifier, frozen and in eval mode; its preprocessing; where its weights came from."""
    with torch.random.fork_rng(devices=[]):  # random weights ("none") drawn the same way every time: reproducible
        torch.manual_seed(0)
        built = build_model(model_name, weights, 2)
    parent_name, _, child = built.head.rpartition(".")
    parent = built.model.get_submodule(parent_name) if parent_name else built.model
    setattr(parent, child, nn.Identity())
    model = built.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, built.data_config, built.weights_note


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _cache_file(model_name: str, weights: str) -> Path:
    source = weights
    if weights not in ("pretrained", "none"):
        source = _stamp(weights) or weights  # a changed weight file gives other features
    key = hashlib.sha256(f"{FORMAT}|{model_name}|{source}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return feature_cache_dir() / f"{key}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            stamps = json.loads(str(data["stamps"]))
            vectors = data["vectors"]
            return dict(zip(stamps, vectors))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return {}  # no cache yet, or a damaged one: compute again


def _write_cache(path: Path, stamps: list[str], vectors: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, stamps=np.array(json.dumps(stamps)), vectors=vectors.astype(np.float16))
        tmp.write_bytes(buffer.getvalue())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        pass  # a cache that cannot be written only costs time next time


def extract_features(paths: Sequence[str], model_name: str, weights: str, *, device: str = "auto",
                     batch_size: int = 32, use_cache: bool = True,
                     on_progress: Callable[[int, int], None] | None = None,
                     stop: threading.Event | None = None) -> Features:
    """Pooled features of ``paths`` (see the module). ``on_progress(done, total)`` after each batch; setting ``stop``
    raises UserError("... cancelled")."""
    cache_file = _cache_file(model_name, weights)
    cached = _read_cache(cache_file) if use_cache else {}
    stamps = [_stamp(p) for p in paths]
    todo = [i for i, s in enumerate(stamps) if not s or s not in cached]
    model, data_config, note = feature_extractor(model_name, weights)
    dim = _dimension(model, data_config, cached)
    vectors = np.zeros((len(paths), dim), dtype=np.float32)
    ok = np.ones(len(paths), dtype=bool)
    for i, s in enumerate(stamps):
        if s and s in cached:
            vectors[i] = cached[s]
    total = len(paths)
    done = total - len(todo)
    if on_progress is not None:
        on_progress(done, total)
    if todo:
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
        model.to(dev)
        _, eval_tf = build_transforms(data_config, "none", uint8=True)
        normalize = BatchNormalize(data_config["mean"], data_config["std"])
        todo_paths = [paths[i] for i in todo]
        workers = auto_workers(-1, len(todo_paths), device=dev.type)
        loader = DataLoader(_Pictures(todo_paths, eval_tf, decode_size(data_config)), batch_size=batch_size,
                            num_workers=workers, collate_fn=_collate)
        position = 0
        from engine.train.runtime import cpu_allocator_for_training  # no page faults for every batch (see there)

        allocator = cpu_allocator_for_training() if dev.type == "cpu" else contextlib.nullcontext()
        with allocator, torch.inference_mode():
            for images, good in loader:
                if stop is not None and stop.is_set():
                    raise UserError("Looking at the pictures was cancelled.")
                rows = np.array(todo[position:position + len(good)])
                position += len(good)
                if images is not None:
                    out = model(normalize(images.to(dev)))
                    vectors[rows[good.numpy()]] = out.float().flatten(1).cpu().numpy()
                ok[rows[~good.numpy()]] = False
                done += len(good)
                if on_progress is not None:
                    on_progress(done, total)
        if use_cache:
            keep = [i for i, s in enumerate(stamps) if s and ok[i]]
            _write_cache(cache_file, [stamps[i] for i in keep], vectors[keep])
    return Features(vectors, ok, model_name, note, len(todo))


def _dimension(model: nn.Module, data_config: dict, cached: dict[str, np.ndarray]) -> int:
    if cached:
        return int(next(iter(cached.values())).shape[0])
    side = data_config["input_size"][1:]
    with torch.inference_mode():
        return int(model(torch.zeros(1, 3, *side)).flatten(1).shape[1])
