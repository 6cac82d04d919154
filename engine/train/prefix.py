"""A phase's frozen-prefix fast path: whether the phase trains on its frozen layers' outputs, computed once before it
starts, and computing them.

``fast_path`` takes the path when some stages below the trained ones are frozen, the settings allow it
(``cache_features``), the model splits (engine.train.fastpath does the splitting and checks it) and the outputs fit
in memory: on the GPU, else in main memory, with fewer augmented views if need be. Either way the log says which
path the phase takes and why.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from engine.config import Phase
from engine.data.loaders import make_loader
from engine.events import Preparing
from engine.train import fastpath as feats
from engine.train.fastpath import FastPath
from engine.train.loop import Data, Order, Session, shuffled_loader, to_device
from engine.train.runtime import threads
from engine.train.store import (FROZEN_MAX_MB_ENV, FrozenStore, picture_key, prefix_identity, store_root,
                                view_seed)
from engine.train.strategies import set_train_mode

# Pictures per batch when a frozen prefix's outputs are computed: no gradients, so larger batches than in training.
# On the CPU, larger batches mean fewer meetings of the threads per picture (MobileNetV2 on 2 busy cores: 13
# pictures/s at 16, 33 at 64).
PREFIX_BATCH = {"cuda": 128, "cpu": 64}
PROGRESS_EVERY_S = 10.0  # a progress line in the log at most this often while the frozen outputs are computed
PREPARING_EVERY_S = 0.25  # a Preparing event (the window's and the command line's progress) at most this often
PREPARING = "computing the frozen layers once"  # Preparing.what
# The frozen pass in int8 (ONNX Runtime's static quantisation of the ONNX prefix, as the int8 export): tried on the
# CPU's full-precision ONNX path when precision is automatic and at least INT8_FROM training outputs are to be
# computed (below that, quantising costs more than it saves); its activation ranges are calibrated on
# INT8_CALIBRATION training pictures. Kept only when the validation accuracy of a linear probe changes by at most
# INT8_TOLERANCE (half a point) between the validation pictures' int8 and full-precision outputs; else the training
# outputs are computed again in full precision. bf16 is not used for the frozen pass: ONNX Runtime's CPU provider
# has no bf16 convolutions, and PyTorch's bf16 (even with native AVX-512 BF16) ran MobileNetV2's prefix slower
# than ONNX Runtime in fp32 (see docs/edge.md).
INT8_FROM = 512
INT8_CALIBRATION = 16  # min-max ranges (see engine.train.fastpath.int8_prefix); the check below guards them
INT8_TOLERANCE = 0.005
INT8_MIN_SPEEDUP = 1.2  # int8 is used only when it computes the validation pictures at least this much faster


def time_left(seconds: float | None) -> str:
    """'about 40 s left', 'about 3 min left', 'about 1 h 20 min left'; '' before it can be estimated."""
    if seconds is None:
        return ""
    if seconds < 55:
        return f"about {max(5, 5 * round(seconds / 5))} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


def preparing_text(event: Preparing) -> str:
    """The progress line of a Preparing event, for the window and the command line: 'Preparing: computing the
    frozen layers once - 1,173 of 9,545 - about 1 min left'."""
    parts = [f"Preparing: {event.what}", f"{event.done:,} of {event.total:,}"]
    if event.done >= event.total:
        parts.append("done")
    elif event.seconds_left is not None:
        parts.append(time_left(event.seconds_left))
    return " \u2014 ".join(parts)


class _Progress:
    """The frozen pass's progress: a Preparing event at most every PREPARING_EVERY_S seconds and at the end, a log
    line at most every PROGRESS_EVERY_S seconds. Outputs read back from the store count as done; the time left is
    estimated from the pace of those computed."""

    def __init__(self, s: Session, total: int):
        self.s, self.total, self.done = s, total, 0
        self.computed, self.computing = 0, 0.0  # outputs computed, and the seconds spent computing them
        self.began = time.monotonic()
        self.last_log = self.last_event = self.began

    def seconds_left(self) -> float | None:
        if self.computed < 1 or self.computing < 1.0:
            return None  # too early to tell
        return (self.total - self.done) * self.computing / self.computed

    def read_back(self, n: int) -> None:
        self.done += n
        self._report()

    def advance(self, n: int, seconds: float) -> None:
        self.done += n
        self.computed += n
        self.computing += seconds
        self._report()

    def finish(self) -> None:
        self.s.emit(Preparing(PREPARING, self.total, self.total, 0.0))

    def _report(self) -> None:
        now = time.monotonic()
        if self.done >= self.total:
            return  # finish() says it
        if now - self.last_event >= PREPARING_EVERY_S:
            self.last_event = now
            self.s.emit(Preparing(PREPARING, self.done, self.total, self.seconds_left()))
        if now - self.last_log >= PROGRESS_EVERY_S:
            self.last_log = now
            self.s.log(f"Computing the frozen layers' outputs: {self.done:,} of {self.total:,} pictures.")


class _SeededViews(Dataset):
    """A dataset whose item ``i`` is drawn with the random numbers of its own seed: a picture's augmented view is the
    same whichever pictures are computed with it, in whichever process, in whichever run (engine.train.store)."""

    def __init__(self, dataset: Dataset, seeds: list[int]):
        self.dataset, self.seeds = dataset, seeds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        seed = self.seeds[index]
        random.seed(seed)
        np.random.seed(seed % 2**32)
        # The CPU generator only (the one saved and restored here, and the one the transforms draw from):
        # torch.manual_seed would also seed every accelerator, about 20 times slower per picture.
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


@dataclass
class _Plan:
    """A phase that takes the fast path: its split model, and where and how many of its outputs are kept."""

    name: str  # the phase, in the log's words
    split: feats.Split
    example: torch.Tensor  # the probe batch the split was verified on
    views: int  # augmented views of each training picture
    keep_on: torch.device  # where the outputs are kept


def fast_path(s: Session, data: Data, built, phase: Phase, index: int, phase_rng: dict) -> FastPath | None:
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
    if s.state.saved_step is None:
        # Nothing to resume from yet: a checkpoint of the phase's start, so that a run stopped or killed during the
        # frozen pass resumes here, reading back the outputs the store kept.
        s.checkpoints.save_start(index, phase_rng)
    began = time.monotonic()
    low = _int8_prefix(s, data, plan, prefix, how)
    train_set, val_set, pin, used = _compute(s, data, plan, prefix, built.data_config, low)
    seconds = time.monotonic() - began
    engine = {"onnx": ", run by ONNX Runtime", "fused": ", BatchNorm folded into the convolutions"}.get(how, "")
    engine += ", the training pictures' in int8" if used == "int8" else ""
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


def _store(s: Session, plan: _Plan, data_config: dict, dtype: torch.dtype, low: str = "") -> FrozenStore | None:
    """The on-disk store of this frozen part's outputs (``low``: "int8" for those of the int8 prefix); None when the
    frozen layers cannot be hashed."""
    precision = str(s.runtime.amp_dtype) + (f"+{low}" if low else "")
    try:
        return FrozenStore(prefix_identity(s.model_name, plan.split, precision, data_config, dtype))
    except Exception as exc:  # a tensor type numpy cannot hold, ...: compute as before, without the store
        s.log(f"The frozen layers' outputs are computed without being kept on disk ({exc.__class__.__name__}).")
        return None


def _compute(s: Session, data: Data, plan: _Plan, prefix: nn.Module, data_config: dict, low: nn.Module | None = None
             ) -> tuple[feats.FeatureSet, feats.FeatureSet, bool, str]:
    """The prefix's outputs for the validation pictures and each view of the training pictures -- read back from the
    store (engine.train.store) where it holds them, else computed and added to it; returns the training and
    validation sets, whether they are in pinned memory, and the training outputs' precision ("int8" when ``low``, the
    int8 prefix, computed them and passed the check, else "fp32"). The validation outputs are always the prefix's."""
    t, n_train, n_val = s.train, len(data.train), len(data.val)
    augmented = t.augment != "none"
    run_batch = _prefix_batch(s)
    dtype = plan.split.output_dtype
    if s.runtime.amp_dtype is not None:  # the outputs' type under autocast (fp16 on a GPU, or fp32 for some layers)
        with feats._eval(prefix):  # noqa: SLF001
            dtype = run_batch(prefix, plan.example).dtype
    store = _store(s, plan, data_config, dtype)
    train_pictures = [picture_key(p) for p in data.train.paths]
    val_pictures = [picture_key(p) for p in data.val.paths]
    # (dataset, the view's name in the keys, the pictures' seeds or None, the pictures)
    passes = [(data.val, "eval", None, val_pictures)]
    for view in range(plan.views):
        if augmented:
            name = f"train:{t.augment}:{t.seed}:{view}"
            seeds = [view_seed(k or path, name) for k, path in zip(train_pictures, data.train.paths)]
            passes.append((data.train, name, seeds, train_pictures))
        else:
            passes.append((data.train_eval, "eval", None, train_pictures))
    keys = [[store.key(name, k) if store else None for k in pictures] for _, name, _, pictures in passes]
    low_store = _store(s, plan, data_config, dtype, "int8") if low is not None else None
    low_keys = [[low_store.key(name, k) if low_store else None for k in pictures] for _, name, _, pictures in passes]
    if low_store is not None:
        low_store.prepare([k for pass_keys in low_keys[1:] for k in pass_keys])
    if store is not None:
        found = store.prepare([k for pass_keys in keys for k in pass_keys])
        if not found.writable:
            s.log(f"The frozen layers' outputs cannot be kept in {found.folder} (the folder cannot be written): a "
                  "stopped run will compute them again.", "warning")
        elif found.stored:
            s.log(f"{found.stored:,} of the {found.entries:,} frozen layers' outputs were computed before (kept in "
                  f"{found.folder}): they are read back, the other {found.entries - found.stored:,} computed.")
        if found.unstored and found.writable:
            s.log(f"{found.unstored:,} frozen layers' outputs do not fit under the store's size limit and are not "
                  f"kept on disk (raise {FROZEN_MAX_MB_ENV} to keep them).")
    progress = _Progress(s, n_val + n_train * plan.views)
    pin = data.pin and plan.keep_on.type == "cpu"
    val_out = torch.empty((1, n_val, *plan.split.output_shape), dtype=dtype, device=plan.keep_on)
    val_labels = torch.as_tensor(data.val.labels, dtype=torch.long).unsqueeze(0).clone()
    outputs = torch.empty((plan.views, n_train, *plan.split.output_shape), dtype=dtype, device=plan.keep_on)
    labels = torch.as_tensor(data.train.labels, dtype=torch.long).unsqueeze(0).repeat(plan.views, 1)
    targets = [(val_out[0], val_labels[0])] + [(outputs[v], labels[v]) for v in range(plan.views)]

    def fill(index: int, module: nn.Module, store, pass_keys, target=None, twin=None) -> None:
        """``twin`` (a second module, where its outputs go, and a dict of [pictures, seconds] per module): when
        every picture of the pass is computed, each batch also goes through the twin, both timed alternately."""
        (dataset, _, seeds, _), (out, out_labels) = passes[index], target or targets[index]
        missing = _read_back(store, pass_keys, out, progress) if store is not None else list(range(len(pass_keys)))
        if not missing:
            return
        twin = twin if twin is not None and len(missing) == len(pass_keys) else None
        source = Subset(_SeededViews(dataset, seeds) if seeds is not None else dataset, missing)
        loader = make_loader(source, PREFIX_BATCH.get(s.runtime.device.type, 32), shuffle=False,
                             workers=data.workers, pin_memory=data.pin)
        filled = 0
        with feats._eval(module), _torch_side(module, twin):  # noqa: SLF001
            for images, batch_labels in loader:
                s.check_stop()
                began = time.monotonic()
                result = run_batch(module, images)
                where = torch.as_tensor(missing[filled:filled + result.shape[0]], dtype=torch.long)
                filled += result.shape[0]
                out[where.to(out.device)] = result.to(out.device, out.dtype)
                out_labels[where] = batch_labels
                if store is not None:
                    rows = result.to("cpu")
                    for i, row in zip(where.tolist(), rows):
                        store.put(pass_keys[i], row)
                progress.advance(result.shape[0], time.monotonic() - began)
                if twin is not None:
                    twin[2]["fp32"][0] += result.shape[0]
                    twin[2]["fp32"][1] += time.monotonic() - began
                    began = time.monotonic()
                    twin[1][where] = run_batch(twin[0], images).to("cpu", twin[1].dtype)
                    twin[2]["int8"][0] += result.shape[0]
                    twin[2]["int8"][1] += time.monotonic() - began
        del loader

    # The validation pictures in fp32 -- and, when the int8 prefix is tried, in int8 too, batch by batch from the
    # same loader (no second pass over the pictures): the check's outputs, and the two speeds on the same batches.
    timed = {"fp32": [0, 0.0], "int8": [0, 0.0]}
    val_low = torch.empty_like(val_out[0], device="cpu") if low is not None else None
    fill(0, prefix, store, keys[0], twin=(low, val_low, timed) if low is not None else None)
    if low is not None:
        if timed["int8"][0] < n_val:  # some fp32 outputs were stored: the int8 ones in a pass of their own
            progress.total += n_val
            fill(0, low, None, [None] * n_val, target=(val_low, val_labels[0].clone()))

        def rate(k):
            return timed[k][0] / timed[k][1] if timed[k][0] >= 16 and timed[k][1] > 0 else None

        if not _int8_faster(s, prefix, low, rate("fp32"), rate("int8")):
            low = None
    used, first = "fp32", 1
    if low is not None:
        # The check's probe is fitted on the first view's outputs alone: it is decided before the other views are
        # computed, so that a refusal costs one view in int8, not all of them.
        fill(1, low, low_store, low_keys[1])
        if _int8_kept(s, val_out[0], val_low, val_labels[0], outputs[0], labels[0]):
            used, first = "int8", 2
        else:  # the training pictures' outputs again, in full precision
            progress.total += n_train
            low = None
    for index in range(first, len(passes)):
        fill(index, low if low is not None else prefix, low_store if low is not None else store,
             (low_keys if low is not None else keys)[index])
    progress.finish()
    if pin:
        outputs, val_out = outputs.pin_memory(), val_out.pin_memory()
    return feats.FeatureSet(outputs, labels, seed=t.seed), feats.FeatureSet(val_out, val_labels), pin, used


# --- the frozen pass in int8 ----------------------------------------------------------------------------------------


def _torch_side(module: nn.Module, twin) -> contextlib.AbstractContextManager:
    """While ONNX Runtime computes the outputs in its own threads, torch's part of the pass (the pictures' crops in
    this process, batching, normalising, copying the outputs) runs on one thread: torch's second thread would only
    wait at every small operation for a core that ONNX Runtime or the other work on the computer holds (measured on 2
    shared cores: copying a picture into channels-first order took 1.0 ms with 2 threads, 0.19 ms with one)."""
    onnx = hasattr(module, "session") and (twin is None or hasattr(twin[0], "session"))
    return threads(1) if onnx and torch.get_num_threads() > 1 else contextlib.nullcontext()


def _int8_prefix(s: Session, data: Data, plan: _Plan, prefix: nn.Module, how: str) -> nn.Module | None:
    """The int8 prefix to compute the training pictures' outputs with (see INT8_FROM), or None. Quantised once per
    frozen part and calibration pictures: kept beside the stored outputs (engine.train.store) for later runs. Whether
    it is faster here is measured on the validation pictures, which it computes anyway for its check (_compute)."""
    if (how != "onnx" or s.train.precision != "auto" or plan.keep_on.type != "cpu"
            or len(data.train) * plan.views < INT8_FROM):
        return None
    chosen = sorted(set(np.linspace(0, len(data.train) - 1, INT8_CALIBRATION).round().astype(int).tolist()))
    images = torch.stack([data.train_eval[i][0] for i in chosen])
    calibration, _ = to_device(images, images.new_empty(0), s.runtime, s.normalize)
    low = feats.int8_prefix(prefix, calibration, store_root())
    if low is None:
        s.log("The frozen layers run in full precision: ONNX Runtime could not quantise them to int8.")
        return None
    low.calibration = calibration  # for _int8_faster, when the validation outputs were all stored
    if getattr(low, "from_cache", False):
        s.log("The frozen layers' int8 version was quantised in an earlier run with the same layers and pictures: "
              "read back.")
    return low


def _int8_faster(s: Session, prefix: nn.Module, low: nn.Module, fp32_rate: float | None, int8_rate: float | None
                 ) -> bool:
    """Whether the int8 prefix computes at least INT8_MIN_SPEEDUP times the pictures per second of the fp32 one,
    from the rates measured on the validation pictures (both passes computed them); when the fp32 outputs were read
    back from the store instead, timed on the calibration pictures (the faster of two tries each, alternated)."""
    n = None
    if not fp32_rate or not int8_rate:
        calibration = low.calibration
        n = len(calibration)
        seconds = {"fp32": [], "int8": []}
        with torch.no_grad():
            for _ in range(2):
                for name, module in (("fp32", prefix), ("int8", low)):
                    began = time.perf_counter()
                    module(calibration)
                    seconds[name].append(time.perf_counter() - began)
        fp32_rate, int8_rate = n / min(seconds["fp32"]), n / min(seconds["int8"])
    if int8_rate < INT8_MIN_SPEEDUP * fp32_rate:
        on = f"on {n} training pictures" if n else "on the validation pictures"
        s.log(f"The frozen layers run in full precision: in int8 they are not faster on this computer "
              f"({int8_rate:.0f} against {fp32_rate:.0f} pictures/s {on}).")
        return False
    return True


def _pooled(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(2).mean(2) if x.dim() > 2 else x.float()


def probe_accuracies(train_x: torch.Tensor, train_y: torch.Tensor, evaluated: list[torch.Tensor],
                     val_y: torch.Tensor) -> list[float]:
    """A linear probe (multinomial logistic regression, a little L2, L-BFGS to convergence; feature maps averaged
    over their positions) fitted on ``train_x``, and its accuracy on each of ``evaluated``. Hand-written: a dozen lines
    of torch, where scikit-learn would be a new dependency. On one thread: a few hundred small steps, which two
    threads only slow down by waiting for each other (on 2 shared cores: 0.2-0.3 s on one thread against 1 to 5 s
    on two, for 732 x 1280 outputs)."""
    with threads(1):
        return _probe(train_x, train_y, evaluated, val_y)


def _probe(train_x: torch.Tensor, train_y: torch.Tensor, evaluated: list[torch.Tensor], val_y: torch.Tensor
           ) -> list[float]:
    x = _pooled(train_x)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    classes = int(max(train_y.max().item(), val_y.max().item())) + 1
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight + bias, train_y) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return [(((_pooled(v) - mean) / std @ weight + bias).argmax(1) == val_y).float().mean().item()
                for v in evaluated]


def _int8_kept(s: Session, val_fp32: torch.Tensor, val_int8: torch.Tensor, val_labels: torch.Tensor,
               train_int8: torch.Tensor, train_labels: torch.Tensor) -> bool:
    """Whether the training pictures' int8 outputs are kept: a linear probe fitted on them must classify the
    validation pictures from their int8 outputs within INT8_TOLERANCE of its accuracy from their full-precision ones
    (the outputs training is validated on). Says which precision was used, and the measurement."""
    tasks = getattr(s.criterion, "tasks", None)
    if tasks:  # several tasks: each task's own probe, on the pictures labelled for it (not the label combinations)
        from engine.train.multitask import decode

        train_y, val_y = decode(train_labels.cpu(), tasks), decode(val_labels.cpu(), tasks)
        parts, kept = [], True
        for j, task in enumerate(tasks):
            tm, vm = train_y[:, j] >= 0, val_y[:, j] >= 0
            if int(vm.sum()) == 0 or train_y[tm, j].unique().numel() < 2:
                continue
            full, int8 = probe_accuracies(train_int8.cpu()[tm], train_y[tm, j],
                                          [val_fp32.cpu()[vm], val_int8.cpu()[vm]], val_y[vm, j])
            kept = kept and full - int8 <= INT8_TOLERANCE
            parts.append(f"{task.name} {100 * int8:.1f} % from their int8 outputs and {100 * full:.1f} % from their "
                         f"full-precision ones ({100 * (int8 - full):+.1f} points)")
        measured = ("a linear probe per task, fitted on the training pictures' int8 outputs, classifies the "
                    f"validation pictures: {'; '.join(parts)}")
    else:
        full, int8 = probe_accuracies(train_int8.cpu(), train_labels, [val_fp32.cpu(), val_int8.cpu()], val_labels)
        kept = full - int8 <= INT8_TOLERANCE
        measured = (f"a linear probe fitted on the training pictures' int8 outputs classifies the {len(val_labels)} "
                    f"validation pictures at {100 * int8:.1f} % from their int8 outputs and {100 * full:.1f} % from "
                    f"their full-precision ones ({100 * (int8 - full):+.1f} points)")
    if kept:
        s.log(f"The frozen layers ran in int8 for the training pictures (ONNX Runtime's static quantisation, "
              f"calibrated on {INT8_CALIBRATION} of them): {measured}, within the half point allowed, so the int8 "
              "outputs are kept; the validation pictures' outputs are in full precision.")
    else:
        s.log(f"The frozen layers' int8 outputs lose accuracy on these pictures: {measured}, more than the half "
              "point allowed, so the training pictures' outputs are computed again in full precision (fp32).")
    return kept


READ_BACK_CHUNK = 512  # stored outputs copied to where they are kept this many at a time


def _read_back(store: FrozenStore, keys: list[str | None], out: torch.Tensor, progress: _Progress) -> list[int]:
    """Fill ``out`` with the stored outputs; returns the indices of those that must be computed."""
    missing, rows, where = [], [], []

    def flush():
        if rows:
            out[torch.as_tensor(where, device=out.device)] = torch.stack(rows).to(out.device, out.dtype)
            progress.read_back(len(rows))
            rows.clear()
            where.clear()

    for i, key in enumerate(keys):
        stored = store.get(key) if key is not None else None
        if stored is None:
            missing.append(i)
            continue
        rows.append(stored)
        where.append(i)
        if len(rows) >= READ_BACK_CHUNK:
            flush()
    flush()
    return missing


def _prefix_batch(s: Session):
    """The prefix on one batch of pictures, on the run's device and in its precision, in pieces when memory runs
    short."""
    runtime = s.runtime

    def run(prefix: nn.Module, images: torch.Tensor) -> torch.Tensor:
        images, _ = to_device(images, images.new_empty(0), runtime, s.normalize)
        # no_grad rather than inference_mode: the outputs are later the input of training steps.
        with torch.no_grad(), torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                             enabled=runtime.amp_dtype is not None):
            return s.backoff.forward(prefix, images)
    return run
