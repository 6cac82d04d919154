"""A phase's frozen-prefix fast path: whether the phase trains on its frozen layers' outputs, computed once before it
starts, and computing them.

``fast_path`` takes the path when some stages below the trained ones are frozen, the settings allow it
(``cache_features``), the model splits (engine.train.fastpath does the splitting and checks it) and the outputs fit
in memory: on the GPU, else in main memory, with fewer augmented views if need be. Either way the log says which
path the phase takes and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from engine.config import Phase
from engine.data.loaders import make_loader
from engine.train import fastpath as feats
from engine.train.fastpath import FastPath
from engine.train.loop import Data, Order, Session, shuffled_loader, to_device
from engine.train.strategies import set_train_mode

# Pictures per batch when a frozen prefix's outputs are computed: no gradients, so larger batches than in training.
# On the CPU, larger batches mean fewer meetings of the threads per picture (MobileNetV2 on 2 busy cores: 13
# pictures/s at 16, 33 at 64).
PREFIX_BATCH = {"cuda": 128, "cpu": 64}
PROGRESS_EVERY_S = 10.0  # a progress line at most this often while the frozen outputs are computed


class _Progress:
    """A progress line at most every PROGRESS_EVERY_S seconds while frozen outputs are computed."""

    def __init__(self, log: Callable[[str], None], total: int):
        self.log, self.total, self.done = log, total, 0
        self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            self.last = now
            self.log(f"Computing the frozen layers' outputs: {self.done} of {self.total} pictures.")


@dataclass
class _Plan:
    """A phase that takes the fast path: its split model, and where and how many of its outputs are kept."""

    name: str  # the phase, in the log's words
    split: feats.Split
    example: torch.Tensor  # the probe batch the split was verified on
    views: int  # augmented views of each training picture
    keep_on: torch.device  # where the outputs are kept


def fast_path(s: Session, data: Data, built, phase: Phase, index: int) -> FastPath | None:
    """Train phase number ``index`` on the frozen prefix's outputs, computed once, when the model allows it; None
    for the normal path. Tells the user which path the phase takes and why."""
    plan = _plan(s, data, built, phase)
    if plan is None:
        return None
    t, split = s.train, plan.split
    # ONNX Runtime for the CPU's fp32 prefix; otherwise the BatchNorm-folded graph.
    prefix, how = feats.fast_prefix(split, plan.example, onnx=s.runtime.amp_dtype is None)
    if s.runtime.channels_last and how == "fused":
        prefix = prefix.to(memory_format=torch.channels_last)
    n_train, n_val, views = len(data.train), len(data.val), plan.views
    what = (f"{views} augmented view{'s' if views > 1 else ''} of each of the {n_train} training pictures"
            if t.augment != "none" else f"each of the {n_train} training pictures")
    s.log(f"{plan.name}: {split.describe()} do not change, so they run once per picture ({what}, and each of "
          f"the {n_val} validation pictures); each epoch then trains only "
          f"{'the head' if split.kind == 'head' else ', '.join(phase.stages)} on their outputs.")
    began = time.monotonic()
    train_set, val_set, pin = _compute(s, data, plan, prefix, index)
    seconds = time.monotonic() - began
    engine = {"onnx": ", run by ONNX Runtime", "fused": ", BatchNorm folded into the convolutions"}.get(how, "")
    s.log(f"{plan.name}: the frozen layers' outputs are ready ({n_val + n_train * views} pictures in {seconds:.1f} s"
          f"{engine}).")
    # Shuffled like the normal path's pictures (the same order for the same seed), with a resumable position.
    order = Order(n_train, t.batch_size, n_train > t.batch_size, t.seed)
    return FastPath(split, train_set,
                    shuffled_loader(train_set, order, seed=t.seed, pin_memory=pin, collate_fn=feats.as_is),
                    feats.feature_loader(val_set, t.batch_size, shuffle=False, pin_memory=pin), order)


def _plan(s: Session, data: Data, built, phase: Phase) -> _Plan | None:
    """The phase's split and where its outputs fit; None (with a log line that says why, unless everything trains)
    for the normal path."""
    t = s.train
    if not feats.frozen_prefix_stages(s.tree, phase):
        return None  # everything trains: nothing to compute once
    name = f"Phase '{phase.name}'"
    if not t.cache_features:
        s.log(f"{name} trains the normal way: computing the frozen layers once is turned off "
              "(cache_features = false).")
        return None
    views = feats.auto_views(t.feature_views, t.augment, phase.epochs)
    input_size = tuple(built.data_config["input_size"])
    # A probe batch from its own generator: the run's random numbers stay those of the normal path.
    example = torch.randn(feats.PROBE_BATCH, *input_size, generator=torch.Generator().manual_seed(0))
    example = example.to(s.runtime.device)
    if s.runtime.channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    try:
        split = feats.split_model(s.model, s.tree, phase, built.head, example,
                                  lambda: set_train_mode(s.model, s.tree, phase, s.module_stages))
    except feats.NoSplit as exc:
        s.log(f"{name} trains the normal way (the frozen layers run again every epoch): {exc}.")
        return None
    n_train, n_val = len(data.train), len(data.val)
    keep_on = s.runtime.device
    if keep_on.type == "cuda" and feats.bytes_needed(split, n_train, n_val, views) > feats.memory_budget(keep_on):
        keep_on = torch.device("cpu")  # too large for the GPU: kept in (pinned) main memory
    budget = feats.memory_budget(keep_on)
    while views > 1 and feats.bytes_needed(split, n_train, n_val, views) > budget:
        views -= 1
    needed = feats.bytes_needed(split, n_train, n_val, views)
    if needed > budget:
        s.log(f"{name} trains the normal way: the frozen layers' outputs would need {needed / 2**30:.1f} GB, "
              f"more than the memory can spare ({budget / 2**30:.1f} GB).")
        return None
    return _Plan(name, split, example, views, keep_on)


def _compute(s: Session, data: Data, plan: _Plan, prefix: nn.Module,
             index: int) -> tuple[feats.FeatureSet, feats.FeatureSet, bool]:
    """The prefix's outputs for the validation pictures and each view of the training pictures; returns the
    training and validation sets, and whether they are in pinned memory."""
    t, n_train = s.train, len(data.train)
    progress = _Progress(s.log, len(data.val) + n_train * plan.views)
    bs = PREFIX_BATCH.get(s.runtime.device.type, 32)
    pin = data.pin and plan.keep_on.type == "cpu"
    run_batch = _prefix_batch(s, progress)

    def run(loader, out):
        return feats.compute_features(prefix, loader, run_batch, s.check_stop, plan.keep_on, out_like=out)

    val_out, val_labels = run(make_loader(data.val, bs, shuffle=False, workers=data.workers, pin_memory=data.pin),
                              None)
    train_source = data.train if t.augment != "none" else data.train_eval
    loader = make_loader(train_source, bs, shuffle=False, workers=data.workers, seed=t.seed + 7919 * (index + 1),
                         pin_memory=data.pin)
    outputs = torch.empty((plan.views, n_train, *plan.split.output_shape), dtype=val_out.dtype, device=plan.keep_on)
    labels = torch.empty((plan.views, n_train), dtype=torch.long)
    for view in range(plan.views):
        _, labels[view] = run(loader, outputs[view])
    del loader
    if pin:
        outputs, val_out = outputs.pin_memory(), val_out.pin_memory()
    return (feats.FeatureSet(outputs, labels, seed=t.seed), feats.FeatureSet(val_out.unsqueeze(0),
                                                                              val_labels.unsqueeze(0)), pin)


def _prefix_batch(s: Session, progress: _Progress):
    """The prefix on one batch of pictures, on the run's device and in its precision, in pieces when memory runs
    short."""
    runtime = s.runtime

    def run(prefix: nn.Module, images: torch.Tensor) -> torch.Tensor:
        images, _ = to_device(images, images.new_empty(0), runtime, s.normalize)
        # no_grad rather than inference_mode: the outputs are later the input of training steps.
        with torch.no_grad(), torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                             enabled=runtime.amp_dtype is not None):
            out = s.backoff.forward(prefix, images)
        progress.advance(images.shape[0])
        return out
    return run
