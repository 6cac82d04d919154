"""One pass of a model over pictures that keeps, for each picture, its logits and its penultimate features (the input
of the classifier's last linear layer), as the OOD score, the drift report and adaptation need them.

The pass runs the PyTorch model itself (not the ONNX fast path of engine.results.predict.infer: a hook on the last
linear layer is needed), in eval mode, pictures prepared by the bundle's own transform (from the picture cache when it
holds them) on a few threads while the model computes.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.data.images import ImageError
from engine.errors import Stopped

BATCH = 32
ProgressCallback = Callable[[int, int], None]


@dataclass
class Pass:
    """What one pass gives: rows follow the paths; pictures that could not be read have NaN rows and a sentence."""

    logits: np.ndarray  # float32 (n, classes), the model's raw logits (before the temperature)
    features: np.ndarray | None  # float32 (n, dim), None when the model has no linear classifier to hook
    errors: list[str | None]

    @property
    def good(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def last_linear(model: nn.Module, head: str) -> nn.Linear | None:
    """The classifier's last linear layer: the head itself, or the last nn.Linear inside it; None when there is
    none (a convolutional head)."""
    try:
        module = model.get_submodule(head) if head else model
    except AttributeError:
        module = model
    if isinstance(module, nn.Linear):
        return module
    found = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def loader(bundle):
    """``load(path) -> (tensor | None, error | None)`` with the bundle's preprocessing, from its picture cache when
    it holds the picture."""
    def load(path: str):
        try:
            image = bundle.cache.get(path) if bundle.cache is not None else None
            return (bundle.preprocess(path) if image is None else bundle.transform(image)), None
        except ImageError as exc:
            return None, str(exc)
        except OSError as exc:  # the cache's folder, a file that vanished
            return None, f"The picture cannot be read ({exc.strerror or exc})."
    return load


def batches(bundle, paths: Sequence[str], batch_size: int = BATCH, stop: threading.Event | None = None,
            stop_message: str = "The work was stopped."):
    """(indices, tensor batch | None, errors) per chunk of ``paths``, the next chunk prepared while this one is
    used."""
    load = loader(bundle)
    chunks = [list(range(s, min(len(paths), s + batch_size))) for s in range(0, len(paths), batch_size)]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(load, paths[i]) for i in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):
            if stop is not None and stop.is_set():
                for future in pending:
                    future.cancel()
                raise Stopped(stop_message)
            loaded = [f.result() for f in pending]
            pending = [pool.submit(load, paths[i]) for i in chunks[k + 1]] if k + 1 < len(chunks) else []
            good = [j for j, (t, _) in enumerate(loaded) if t is not None]
            errors = [e for _, e in loaded]
            batch = torch.stack([loaded[j][0] for j in good]) if good else None
            yield [chunk[j] for j in good], batch, dict(zip(chunk, errors))


def run_pass(bundle, paths: Sequence[str], *, model: nn.Module | None = None, batch_size: int = BATCH,
             on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
             stop_message: str = "The work was stopped.") -> Pass:
    """Logits and penultimate features of ``paths`` through ``model`` (default: the bundle's), in eval mode."""
    model = bundle.model if model is None else model
    device = torch.device(bundle.device)
    n = len(paths)
    logits = np.full((n, len(bundle.classes)), np.nan, dtype=np.float32)
    features: np.ndarray | None = None
    errors: list[str | None] = [None] * n
    linear = last_linear(model, bundle.head)
    caught: list[torch.Tensor] = []
    hook = None
    if linear is not None:
        hook = linear.register_forward_hook(lambda m, inputs, out: caught.append(inputs[0].detach()))
    was_training = model.training
    model.eval()
    done = 0
    try:
        for indices, batch, errs in batches(bundle, paths, batch_size, stop, stop_message):
            for i, e in errs.items():
                errors[i] = e
            if batch is not None:
                caught.clear()
                with torch.inference_mode():
                    out = model(batch.to(device)).float().cpu().numpy()
                logits[indices] = out
                if caught:
                    f = caught[-1].float().flatten(1).cpu().numpy()
                    if features is None:
                        features = np.full((n, f.shape[1]), np.nan, dtype=np.float32)
                    features[indices] = f
            done += len(errs)
            if on_progress is not None:
                on_progress(done, n)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return Pass(logits, features, errors)
