"""The learning-rate finder: Smith's range test ("Cyclical Learning Rates for Training Neural Networks", 2017; what
fastai's ``lr_find`` does) for the first phase of a configuration, on the user's own pictures.

A short training run whose learning rate grows exponentially from ``start_lr`` to ``end_lr``, one step per rate, on
a copy of the model with the phase's freeze plan, stage multipliers, optimizer, weight decay and label smoothing. The
loss (smoothed by an exponential moving average, bias-corrected, as fastai does) first stays flat (the rate is too
small to change anything), then falls, then shoots up (the rate is too large); the sweep ends once the smoothed loss
exceeds DIVERGE_FACTOR times its lowest value. The suggestion is the end of the descent: the smoothed curve's
minimum moved back by the moving average's mean delay (SMOOTHING / (1 - SMOOTHING) = 9 steps, a factor of about 4
in rate with 100 steps over seven decades), so at or a little below the rate where the loss itself was lowest, and
never below the point where the smoothed loss fell fastest. Those are the largest rates that still learn; the
schedule's warm-up and decay keep the run from diverging at them.

Why not fastai's rules: its "steep" (where the loss falls fastest, this finder's first rule) and "valley" (two thirds
down the longest descent) gave 4-9x less than the best of a 5-point sweep of 3-epoch fine-tuning runs on both
benchmark data sets (docs/advisor.md, item c); "a tenth of the minimum" suits fastai's heavier smoothing (0.98, whose
delay pushes its minimum much further right) and gave 5x less on one of them. The end of the descent was about 1.1x
and 2.2x from the sweep's best. The rule was chosen looking at those two curves: that figure is in-sample.

When the phase freezes the layers below some stage, their outputs are computed once for a sample of the training
pictures (the frozen-prefix split of engine.train.fastpath, verified the same way) and the sweep trains only what
the phase trains on them: seconds instead of minutes on a CPU. Otherwise each step runs the whole model.

The model the sweep trains is its own (built from the configuration and thrown away): the run that follows starts
from the untouched weights. ``find_lr`` raises ``UserError`` with a sentence for a problem the user can fix, and
``Stopped`` (a UserError) when its stop token is set.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from engine.config import RunConfig
from engine.errors import UserError

START_LR = 1e-7
END_LR = 1.0
STEPS = 100  # one optimizer step per rate
MAX_PICTURES = 512  # the sweep draws its batches from at most this many training pictures (class by class)
DIVERGE_FACTOR = 4.0  # the sweep ends once the smoothed loss is this many times its lowest
SMOOTHING = 0.9  # exponential moving average of the loss (fastai uses 0.98 over its 100 steps' noisier losses)
SKIP_START = 0.1  # the first 10 % of the rates (loss still flat and noisy) never give the suggestion
LAG = round(SMOOTHING / (1 - SMOOTHING))  # the moving average's mean delay, in steps


class Stopped(UserError):
    """The search was stopped on request."""


@dataclass(frozen=True)
class LRFinding:
    """The sweep's rates and smoothed losses, and the suggested rate (the head's; other stages keep their multiple)."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float
    phase: str  # the phase swept
    pictures: int  # training pictures the batches came from
    frozen_outputs: bool  # True: trained on the frozen layers' stored outputs
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sentence(self) -> str:
        return (f"Suggested learning rate {self.suggestion:.2g}: the end of the loss's descent in a sweep of "
                f"{len(self.lrs)} rates from {self.lrs[0]:.0e} to {self.lrs[-1]:.0e} (phase '{self.phase}', "
                f"{self.pictures} training pictures, {self.seconds:.0f} s).")


def suggest(lrs: np.ndarray, losses: np.ndarray, lag: int = LAG) -> float:
    """The end of the descent: the minimum of the smoothed ``losses`` (an exponential moving average, delayed by
    ``lag`` steps on average) moved back by ``lag`` steps, and never below the rate of steepest descent of the
    smoothed loss over log-rate before its minimum (after the first SKIP_START of the sweep); the minimum's tenth
    when the curve never falls."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    low = int(np.argmin(losses))
    start = int(len(lrs) * SKIP_START)
    if low - start < 2:
        return float(lrs[low] / 10)
    slope = np.gradient(losses[start:low + 1], np.log(lrs[start:low + 1]))
    steepest = start + int(np.argmin(slope))
    return float(lrs[max(steepest, low - lag)])


def _sample(samples, limit: int, seed: int):
    """Up to ``limit`` samples, drawn class by class in proportion (every class keeps at least one)."""
    if len(samples) <= limit:
        return list(samples)
    rng = random.Random(seed)
    by_class: dict[int, list] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    share = limit / len(samples)
    chosen = []
    for items in by_class.values():
        chosen += rng.sample(items, max(1, round(share * len(items))))
    rng.shuffle(chosen)
    return chosen[:limit]


def find_lr(config: RunConfig, *, dataset=None, on_progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None, start_lr: float = START_LR, end_lr: float = END_LR,
            steps: int = STEPS, max_pictures: int = MAX_PICTURES) -> LRFinding:
    """Run the range test for the first phase of ``config`` (on ``dataset``, a scan of its pictures, or a new scan)
    and return the curve and the suggested learning rate. ``on_progress(done, total)`` counts steps (and pictures
    while frozen outputs are computed)."""
    from engine.data.cache import ImageCache
    from engine.data.loaders import BatchNormalize, ImageDataset, build_transforms, decode_size, outputs_uint8
    from engine.data.scan import scan
    from engine.models.build import build_model
    from engine.models.layers import build_layer_tree
    from engine.train.checkpoint import seed_everything
    from engine.train.optim import make_optimizer
    from engine.train.runtime import auto_batch_size, resolve_runtime
    from engine.train.strategies import apply_phase, param_groups, resolve_phases, set_train_mode

    began = time.monotonic()
    stop = stop or threading.Event()
    if not 0 < start_lr < end_lr:
        raise UserError("The learning-rate sweep needs a start rate below its end rate, both above 0.")
    config = config.validate()
    t = config.train
    runtime = resolve_runtime(config)
    device = runtime.device
    seed_everything(t.seed)
    if dataset is None:
        dataset = scan(config.data.source, val_fraction=config.data.val_fraction,
                       test_fraction=config.data.test_fraction, seed=config.data.split_seed, split=config.data.split,
                       stop=stop, exclude=config.data.exclude, relabel=config.data.relabel)
    train = _sample(dataset.split("train"), max_pictures, t.seed)
    if len(train) < 2:
        raise UserError("The learning-rate search needs training pictures: add pictures in the Data step.")
    built = build_model(config.model.name, config.model.weights, len(dataset.classes))
    model, tree = built.model, build_layer_tree(built.model, built.head)
    phase = resolve_phases(config, tree)[0]
    apply_phase(model, tree, phase)
    model.to(device)
    module_stages = tree.module_stages(model)
    bs = t.batch_size or auto_batch_size(device, len(train))
    bs = max(1, min(bs, len(train)))
    dc = built.data_config
    train_tf, _ = build_transforms(dc, t.augment, uint8=True)
    cache = ImageCache.for_data_config(dc) if t.cache_images else None
    pictures = ImageDataset([s.path for s in train], [s.label for s in train], train_tf, decode_size(dc), cache)
    normalize = BatchNormalize(dc["mean"], dc["std"]) if outputs_uint8(t.augment) else None
    loader = torch.utils.data.DataLoader(pictures, batch_size=bs, shuffle=True, num_workers=0, drop_last=len(train) > bs,
                                         generator=torch.Generator().manual_seed(t.seed))

    def prepare(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        return normalize(images) if normalize is not None else images

    def check() -> None:
        if stop.is_set():
            raise Stopped("The learning-rate search was stopped.")

    # The frozen layers' outputs, once, when the phase freezes some (as training's fast path would).
    train_module, batches, frozen = model, None, False
    split = _split(model, tree, phase, built, dc, device, module_stages)
    if split is not None:
        outputs, labels = [], []
        done = 0
        with torch.no_grad():
            split.prefix.eval()
            for images, y in loader:
                check()
                outputs.append(split.prefix(prepare(images)))
                labels.append(y)
                done += len(y)
                if on_progress:
                    on_progress(done, len(train) + steps)
        features, targets = torch.cat(outputs), torch.cat(labels).to(device)
        train_module, frozen = split.train_suffix, True

        def next_batches():
            g = torch.Generator().manual_seed(t.seed)
            while True:
                order = torch.randperm(len(targets), generator=g)
                for i in range(0, len(order) - bs + 1 if len(order) > bs else 1, bs):
                    idx = order[i:i + bs].to(features.device)
                    yield features[idx], targets[idx]
        batches = next_batches()
    else:
        def next_batches():
            while True:
                for images, y in loader:
                    yield prepare(images), y.to(device)
        batches = next_batches()

    groups = param_groups(model, tree, phase, t.weight_decay)
    optimizer = make_optimizer(groups, config, phase)
    multipliers = [g["lr"] / phase.lr for g in optimizer.param_groups]
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    rates = start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(1, steps - 1))
    lrs, losses = [], []
    average, best = 0.0, math.inf
    set_train_mode(model, tree, phase, module_stages)
    if split is not None:
        split.train_extra()
    offset = len(train) if frozen else 0
    for i, lr in enumerate(rates):
        check()
        for group, m in zip(optimizer.param_groups, multipliers):
            group["lr"] = float(lr) * m
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(train_module(x).float(), y)
        value = float(loss.item())
        if not math.isfinite(value):
            break
        loss.backward()
        optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (i + 1))
        lrs.append(float(lr))
        losses.append(smoothed)
        best = min(best, smoothed)
        if on_progress:
            on_progress(offset + i + 1, offset + steps)
        if i > steps * SKIP_START and smoothed > DIVERGE_FACTOR * best:
            break
    if len(lrs) < 5:
        raise UserError("The learning-rate search found no usable range: the loss diverged at once. Check the "
                        "pictures and labels, or choose a smaller starting rate.")
    return LRFinding(tuple(lrs), tuple(losses), suggest(np.array(lrs), np.array(losses)), phase.name, len(train),
                     frozen, time.monotonic() - began)


def _split(model, tree, phase, built, dc, device, module_stages):
    """The phase's verified frozen-prefix split (engine.train.fastpath), or None when everything trains or the
    model cannot be split."""
    from engine.train import fastpath as feats
    from engine.train.strategies import set_train_mode

    if not feats.frozen_prefix_stages(tree, phase):
        return None
    example = torch.randn(feats.PROBE_BATCH, *tuple(dc["input_size"]), generator=torch.Generator().manual_seed(0))
    try:
        return feats.split_model(model, tree, phase, built.head, example.to(device),
                                 lambda: set_train_mode(model, tree, phase, module_stages))
    except feats.NoSplit:
        return None


def with_lr(config: RunConfig, lr: float) -> RunConfig:
    """``config`` with the head's learning rate ``lr`` (phases resolved again from the strategy, unless custom)."""
    lr = float(f"{lr:.2g}")
    if config.strategy == "custom" and config.phases:
        first = config.phases[0]
        scale = lr / first.lr
        phases = tuple(dataclasses.replace(p, lr=float(f"{p.lr * scale:.2g}")) for p in config.phases)
        return dataclasses.replace(config, lr=lr, phases=phases).validate()
    return dataclasses.replace(config, lr=lr, phases=()).validate()
