"""Evaluation and prediction read back the frozen layers' outputs that training stored (issue #23).

A feature-extraction run (or any run whose last phase keeps a frozen part below the layers it trains) passed each of
its validation pictures -- and, without augmentation, each training picture -- through its frozen layers once, and
kept the outputs on disk (engine.train.store). Those layers did not change afterwards, so for those pictures the
saved model's answer is its trained layers applied to the stored output. Evaluating a run right after training,
measuring its training pictures for the unlike-the-training-pictures flag (engine.shift.ood), or predicting pictures
it trained on then needs no picture decoded and no frozen layer run again.

Nothing is trusted that the key does not prove: an entry is found only for the same model, the same frozen layers'
weights and buffers (hashed from the loaded run's own tensors), the same preprocessing, full precision, the same
picture file (path, modification time, size) and its un-augmented view. Anything else -- a new picture, a touched
one, another run's weights, a fine-tuned frozen part, an emptied store -- is computed as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ["StoredPart", "frozen_part", "read_back"]

EVAL_VIEW = "eval"  # the view name of un-augmented outputs in the store's keys (engine.train.prefix)
FULL_PRECISION = str(None)  # the runtime's amp_dtype of an fp32 pass, as the store's keys spell it


@dataclasses.dataclass
class StoredPart:
    """Where a run's frozen part keeps its outputs, and the layers that turn one into the model's output."""

    store: object  # engine.train.store.FrozenStore
    suffix: nn.Module  # the layers above the frozen part (the model's own), in eval mode


def frozen_part(bundle) -> StoredPart | None:
    """The run's frozen part and its store; None for an exported bundle, a GPU (whose stored outputs may come from
    another precision), several tasks, adapters, or a run whose last phase trains every layer or cannot be split.
    Kept on the bundle after the first call."""
    if "_stored_part" in vars(bundle):
        return vars(bundle)["_stored_part"]
    part = None
    try:
        part = _frozen_part(bundle)
    except Exception:  # a config that no longer reads, a model that will not split...: compute as before
        part = None
    object.__setattr__(bundle, "_stored_part", part)
    return part


def _frozen_part(bundle) -> StoredPart | None:
    if bundle.kind != "run" or torch.device(bundle.device).type != "cpu" or bundle.info.get("tasks"):
        return None
    from engine import config as run_config
    from engine.models.layers import build_layer_tree
    from engine.project import runs
    from engine.train import fastpath
    from engine.train.store import FrozenStore, prefix_identity
    from engine.train.strategies import apply_phase, resolve_phases, set_train_mode

    folder = Path(bundle.source)
    config = run_config.load(folder / runs.CONFIG)
    if config.strategy == "lora" or not config.train.cache_features:
        return None
    model = bundle.model
    tree = build_layer_tree(model, bundle.head)
    phase = resolve_phases(config, tree)[-1]  # the last phase's frozen part is the saved model's
    if not fastpath.frozen_prefix_stages(tree, phase):
        return None
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        apply_phase(model, tree, phase)  # which layers train decides the cut and what the key hashes
        stages = tree.module_stages(model)
        example = torch.randn(fastpath.PROBE_BATCH, *bundle.data_config["input_size"],
                              generator=torch.Generator().manual_seed(0))
        split = fastpath.split_model(model, tree, phase, bundle.head, example,
                                     lambda: set_train_mode(model, tree, phase, stages))
        store = FrozenStore(prefix_identity(config.model.name, split, FULL_PRECISION, bundle.data_config,
                                            split.output_dtype))
    except fastpath.NoSplit:
        return None
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.eval()
    if not store.root.is_dir():
        return None
    return StoredPart(store, split.eval_suffix.eval())


def _run_pictures(bundle) -> frozenset[str]:
    """The absolute paths of the pictures the run trained and validated on (its dataset.json): the only pictures
    whose outputs its training can have stored; empty when they cannot be read. Kept on the bundle."""
    if "_run_pictures" not in vars(bundle):
        pictures: frozenset[str] = frozenset()
        if bundle.kind == "run":
            from engine.project import runs

            try:
                info = json.loads((Path(bundle.source) / runs.DATASET).read_text(encoding="utf-8"))
                pictures = frozenset(os.path.abspath(str(s["path"])) for s in info["samples"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        object.__setattr__(bundle, "_run_pictures", pictures)
    return vars(bundle)["_run_pictures"]


def read_back(bundle, paths: Sequence[str], linear: nn.Linear | None
              ) -> tuple[list[int], np.ndarray, np.ndarray | None] | None:
    """(indices of ``paths`` whose frozen output is stored, their raw logits, their penultimate features when
    ``linear`` -- the classifier's last linear layer -- is given), or None when nothing is stored for them."""
    own = _run_pictures(bundle)
    candidates = [i for i, path in enumerate(paths) if os.path.abspath(path) in own]
    if not candidates:  # new pictures: not worth cutting the model to look for them
        return None
    part = frozen_part(bundle)
    if part is None:
        return None
    from engine.train.store import picture_key

    found, outputs = [], []
    for i in candidates:
        path = paths[i]
        key = part.store.key(EVAL_VIEW, picture_key(path))
        output = part.store.get(key) if key is not None else None
        if output is not None:
            found.append(i)
            outputs.append(output)
    if not found:
        return None
    caught: list[torch.Tensor] = []
    hook = linear.register_forward_hook(lambda m, inputs, out: caught.append(inputs[0])) if linear is not None \
        else None
    logits, features = [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(outputs), 256):
                caught.clear()
                logits.append(part.suffix(torch.stack(outputs[start:start + 256])).float().numpy())
                if linear is not None:
                    if not caught:  # the suffix does not go through the model's own classifier layer
                        return None
                    features.append(caught[-1].flatten(1).float().numpy())
    finally:
        if hook is not None:
            hook.remove()
    return found, np.concatenate(logits), np.concatenate(features) if linear is not None else None
