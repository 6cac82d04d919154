"""Training: ``fit(config, on_event, stop) -> RunResult``.

One function runs a whole experiment: scan the data, build the model, resolve the strategy into phases, write the
run folder, then train phase by phase, reporting plain-data events and checking the stop token before every batch.
Expected problems (data, weights, settings, a diverging loss) end the run as ``failed`` with a sentence; nothing is
raised to the caller, so the window and the command line handle every outcome the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import runs
from engine import features as feats
from engine.cache import ImageCache
from engine.config import Phase, RunConfig, dumps
from engine.data import DatasetIndex, scan
from engine.errors import ConfigError, UserError
from engine.events import EpochEnded, Failed, Finished, Log, PhaseStarted, RunStarted, StepEnded
from engine.freeze import apply_phase, check_phase, param_groups, resolve_phases, set_train_mode
from engine.layers import HEAD, LayerTree, build_layer_tree
from engine.loaders import (BatchNormalize, ImageDataset, auto_workers, build_transforms, decode_size,
                            make_loader, outputs_uint8)
from engine.models import build_model

EventCallback = Callable[[object], None]
WARMUP_START_FACTOR = 0.01  # linear warm-up starts at this share of each group's learning rate
# Pictures per batch when a frozen prefix's outputs are computed: no gradients, so larger batches than in training.
# On the CPU, larger batches mean fewer meetings of the threads per picture (MobileNetV2 on 2 busy cores: 13
# pictures/s at 16, 33 at 64).
PREFIX_BATCH = {"cuda": 128, "cpu": 64}
PROGRESS_EVERY_S = 10.0  # a progress line at most this often while the frozen outputs are computed


@dataclass(frozen=True)
class RunResult:
    status: str  # "completed", "stopped" or "failed"
    run_dir: str | None
    best_val_acc: float | None
    best_epoch: int | None
    epochs_completed: int
    error: str | None


class _Stopped(Exception):
    pass


@dataclass(frozen=True)
class Runtime:
    """How the run uses the machine, resolved from the config's ``auto`` settings."""

    device: torch.device
    description: str
    amp_dtype: torch.dtype | None  # autocast dtype, None for full fp32
    channels_last: bool


def resolve_runtime(config: RunConfig) -> Runtime:
    t = config.train
    spec = t.device
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("A CUDA GPU was chosen, but none is available on this computer: choose the CPU.")
    if spec == "mps" and not _mps_available():
        raise UserError("Apple's GPU (MPS) was chosen, but it is not available on this computer: choose the CPU.")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"'{t.device}' is not a device: choose auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UserError(f"There is no GPU number {index} on this computer.")
        description = f"GPU {index}: {torch.cuda.get_device_name(index)}"
    else:
        description = {"cpu": f"CPU ({torch.get_num_threads()} threads)", "mps": "Apple GPU (MPS)"}[device.type]
    precision = t.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # channels_last: on CUDA, and on the CPU too, where oneDNN's convolutions are about twice as fast in it (measured
    # on 2-core machines: MobileNetV2 inference 24 -> 51 pictures/s, a training step 8 -> 15; same results up to
    # rounding). bf16 autocast stays off on the CPU unless chosen: on CPUs without native bf16 (AVX2 only, such as
    # the project's AMD EPYC machines) it ran ten times slower than fp32.
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and device.type in ("cuda", "cpu"))
    return Runtime(device, description, amp, channels_last)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(groups: list[dict], config: RunConfig, phase: Phase) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    opt = {"adamw": "adamw", "sgd": "sgd"}[config.train.optimizer]  # timm's "sgd" is SGD with Nesterov momentum
    return create_optimizer_v2(groups, opt=opt, lr=phase.lr, weight_decay=config.train.weight_decay,
                               momentum=config.train.momentum)


def make_scheduler(optimizer: torch.optim.Optimizer, phase: Phase, steps_per_epoch: int, config: RunConfig):
    """A per-step schedule over the phase: linear warm-up, then cosine decay, one-cycle, or constant.

    torch's own schedulers rather than timm's: they scale every parameter group from its own learning rate, which is
    how the stage multipliers are stored, and torch has one-cycle."""
    from torch.optim import lr_scheduler as S

    total = max(1, phase.epochs * steps_per_epoch)
    warmup = min(total - 1, round(config.train.warmup_epochs * steps_per_epoch))
    schedule = config.train.schedule
    if schedule == "onecycle" and total >= 3:  # one-cycle needs two steps up and one down; shorter: cosine
        rise = min(max(warmup, 2), total - 1)
        return S.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
                            pct_start=rise / total, anneal_strategy="cos")
    after = (S.ConstantLR(optimizer, factor=1.0, total_iters=0) if schedule == "constant"
             else S.CosineAnnealingLR(optimizer, T_max=total - warmup))
    if warmup <= 0:
        return after
    warm = S.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [warm, after], milestones=[warmup])


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    for group in optimizer.param_groups:
        if group.get("stage") == HEAD:
            return float(group["lr"])
    return float(max(g["lr"] for g in optimizer.param_groups))


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # Contiguous CPU copies: safetensors refuses views, channels_last layouts and shared storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = state_dict_for_saving(model)
    runs.atomic_write(path, lambda tmp: save_file(state, str(tmp)))


class Trainer:
    """One run. Use ``fit()``; the class only keeps the run's pieces together."""

    def __init__(self, config: RunConfig, on_event: EventCallback | None, stop: threading.Event | None):
        self.config = config
        self.emit = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.run_dir: Path | None = None
        self.best_acc: float | None = None
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.epochs_completed = 0
        self.started = time.monotonic()
        self.summary_extra: dict = {}
        self.backoff = Backoff()
        self._compiled: dict = {}
        self.epoch = 0
        self.normalize = None

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, dataset: DatasetIndex | None) -> RunResult:
        try:
            with contextlib.ExitStack() as self._resources:
                self._run(dataset)
            status, error = "completed", None
        except _Stopped:
            status, error = "stopped", None
        except UserError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a bug, or a machine fault: still a sentence, and the details in error.log
            status, error = "failed", self._unexpected(exc)
        result = RunResult(status, str(self.run_dir) if self.run_dir else None, self.best_acc, self.best_epoch,
                           self.epochs_completed, error)
        if self.run_dir is not None:
            try:
                self._write_summary(status, error)
            except OSError as exc:
                error = error or f"The run's summary could not be written ({exc.strerror or exc})."
                result = dataclasses.replace(result, status="failed", error=error)
                status = "failed"
        if status == "failed":
            self.emit(Failed(result.error or "The run failed.", result.run_dir))
        else:
            self.emit(Finished(status, result.run_dir or "", self.best_acc, self.best_epoch, self.epochs_completed,
                               time.monotonic() - self.started))
        return result

    def _unexpected(self, exc: Exception) -> str:
        where = ""
        if self.run_dir is not None:
            try:
                (self.run_dir / runs.ERROR_LOG).write_text(traceback.format_exc(), encoding="utf-8")
                where = f" Details are in {self.run_dir / runs.ERROR_LOG}."
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno == 28:
            return "The disk is full: free some space and start the run again." + where
        if isinstance(exc, torch.OutOfMemoryError):
            return "The model ran out of memory: choose a smaller batch size or a smaller model." + where
        return f"Training stopped because of an unexpected error ({exc.__class__.__name__}: {exc})." + where

    def _run(self, dataset: DatasetIndex | None) -> None:
        config = self.config.validate()
        if config.train.feature_views < 0:
            raise ConfigError("The number of augmented views (feature_views) cannot be negative; 0 chooses it.")
        runtime = resolve_runtime(config)
        if runtime.device.type == "cpu":
            self._resources.enter_context(_cpu_allocator_for_training())
        seed_everything(config.train.seed)
        if dataset is None:
            self._log(f"Scanning {config.data.source} ...")
            dataset = scan(config.data.source, val_fraction=config.data.val_fraction,
                           test_fraction=config.data.test_fraction, seed=config.data.split_seed, stop=self.stop)
        if dataset.health.advice or dataset.health.unreadable:
            for line in dataset.health.lines():
                self._log(line, "warning")
        train_samples, val_samples = dataset.split("train"), dataset.split("val")
        if not train_samples or not val_samples:
            raise UserError("Training needs pictures for both training and validation: add pictures, or set a "
                            "validation fraction above 0.")
        built = build_model(config.model.name, config.model.weights, len(dataset.classes))
        self._log(built.weights_note)
        model = built.model
        tree = build_layer_tree(model, built.head)
        phases = resolve_phases(config, tree)
        for phase in phases:
            check_phase(phase, tree)
        resolved = dataclasses.replace(config, phases=phases, data=dataclasses.replace(
            config.data, source=str(Path(dataset.root).resolve())))
        self._create_run_dir(resolved, dataset, built, tree)
        total_epochs = resolved.total_epochs
        self.emit(RunStarted(str(self.run_dir), tuple(dataset.classes), len(train_samples), len(val_samples),
                             runtime.description, total_epochs, tree.total_params))
        self._log(f"{len(train_samples)} training and {len(val_samples)} validation pictures, "
                  f"{len(dataset.classes)} classes; training on {runtime.description}.")

        model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
        if runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        t = config.train
        # 8-bit pictures from the loaders, normalised by batch on the device (see engine.loaders.BatchNormalize).
        train_tf, eval_tf = build_transforms(built.data_config, t.augment, uint8=True)
        self.normalize = (BatchNormalize(built.data_config["mean"], built.data_config["std"])
                          if outputs_uint8(t.augment) else None)
        draft = decode_size(built.data_config)
        image_cache = None
        if t.cache_images:
            image_cache = ImageCache.for_data_config(built.data_config)
            plan = image_cache.prepare([s.path for s in train_samples + val_samples])
            self._log(plan.message(), "info" if plan.writable else "warning")
        workers = auto_workers(t.workers, len(train_samples), cached=image_cache is not None)
        pin = runtime.device.type == "cuda"
        bs = t.batch_size
        data = _Data(
            train=ImageDataset([s.path for s in train_samples], [s.label for s in train_samples], train_tf, draft,
                               image_cache),
            val=ImageDataset([s.path for s in val_samples], [s.label for s in val_samples], eval_tf, draft,
                             image_cache),
            train_eval=ImageDataset([s.path for s in train_samples], [s.label for s in train_samples], eval_tf,
                                    draft, image_cache),
            workers=workers, pin=pin)
        drop_last = len(train_samples) > bs  # a last batch of one would upset BatchNorm in train mode
        module_stages = tree.module_stages(model)
        criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        self.backoff = Backoff(runtime, self._log)
        normal_loaders = None

        self.epoch = 0
        for index, phase in enumerate(phases):
            trainable = apply_phase(model, tree, phase)
            fast = self._fast_path(model, tree, phase, index, built, runtime, data, module_stages)
            if fast is not None:
                train_loader, val_loader = fast.train_loader, fast.val_loader
                train_module = self._maybe_compile(fast.split.train_suffix, runtime)
                eval_module = self._maybe_compile(fast.split.eval_suffix, runtime)
            else:
                if normal_loaders is None:
                    normal_loaders = (
                        make_loader(data.train, bs, shuffle=True, workers=workers, seed=t.seed, pin_memory=pin,
                                    drop_last=drop_last),
                        make_loader(data.val, bs, shuffle=False, workers=workers, pin_memory=pin))
                train_loader, val_loader = normal_loaders
                train_module = eval_module = self._maybe_compile(model, runtime)
            optimizer = make_optimizer(param_groups(model, tree, phase, t.weight_decay), config, phase)
            scheduler = make_scheduler(optimizer, phase, len(train_loader), config)
            self.emit(PhaseStarted(index, phase.name, phase.epochs, phase.lr, trainable, tree.total_params,
                                   tuple(phase.stages)))
            self._log(f"Phase {index + 1}/{len(phases)} '{phase.name}': {trainable:,} of {tree.total_params:,} "
                      f"parameters train ({', '.join(phase.stages)}), {phase.epochs} epochs.")
            # Training only a head on stored outputs is a stream of tiny operations: on the CPU one thread does them
            # fastest (several threads spend more time meeting each other than computing, worst on a busy machine).
            threads = (_threads(1) if fast is not None and fast.split.kind == "head" and runtime.device.type == "cpu"
                       else contextlib.nullcontext())
            with threads:
                self._run_phase(model, tree, phase, index, fast, train_module, eval_module, train_loader, val_loader,
                                optimizer, scheduler, criterion, scaler, runtime, module_stages, total_epochs)
            # The cached outputs' memory goes back before the next phase computes its own.
            fast = train_loader = val_loader = train_module = eval_module = None

    def _run_phase(self, model, tree, phase, index, fast, train_module, eval_module, train_loader, val_loader,
                   optimizer, scheduler, criterion, scaler, runtime, module_stages, total_epochs) -> None:
        since_best = 0
        for _ in range(phase.epochs):
            self.epoch += 1
            epoch = self.epoch
            began = time.monotonic()
            set_train_mode(model, tree, phase, module_stages)
            if fast is not None:
                fast.split.train_extra()
                fast.train_set.set_epoch(epoch)
            train_loss, train_acc = self._train_epoch(train_module, train_loader, criterion, optimizer, scheduler,
                                                      scaler, runtime, index, epoch)
            val_loss, val_acc = evaluate_loader(eval_module, val_loader, runtime, self.stop, backoff=self.backoff,
                                                normalize=self.normalize)
            improved = self.best_acc is None or val_acc > self.best_acc or (
                val_acc == self.best_acc and val_loss < self.best_loss)
            if improved:
                self.best_acc, self.best_loss, self.best_epoch = val_acc, val_loss, epoch
                save_weights(model, self.run_dir / runs.BEST)
            seconds = time.monotonic() - began
            lr = head_lr(optimizer)
            runs.append_jsonl(self.run_dir / runs.METRICS, {
                "epoch": epoch, "phase": phase.name, "train_loss": train_loss, "train_acc": train_acc,
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": round(seconds, 3)})
            self.epochs_completed = epoch
            self._write_summary("running", None)
            self.emit(EpochEnded(index, phase.name, epoch, total_epochs, train_loss, train_acc, val_loss,
                                 val_acc, lr, seconds, improved))
            since_best = 0 if improved else since_best + 1
            patience = self.config.train.early_stopping
            if patience and since_best >= patience and epoch < total_epochs:
                self._log(f"Early stopping: no better validation accuracy for {patience} epochs; "
                          f"ending phase '{phase.name}'.")
                break

    # -- speed ---------------------------------------------------------------------------------------------------

    def _fast_path(self, model: nn.Module, tree: LayerTree, phase: Phase, index: int, built, runtime: Runtime,
                   data: "_Data", module_stages) -> "_FastPath | None":
        """Train this phase on the frozen prefix's outputs, computed once, when the model allows it; None for the
        normal path. Tells the user which path the phase takes and why."""
        t = self.config.train
        frozen = feats.frozen_prefix_stages(tree, phase)
        if not frozen:
            return None  # everything trains: nothing to compute once
        name = f"Phase '{phase.name}'"
        if not t.cache_features:
            self._log(f"{name} trains the normal way: computing the frozen layers once is turned off "
                      "(cache_features = false).")
            return None
        views = feats.auto_views(t.feature_views, t.augment, phase.epochs)
        input_size = tuple(built.data_config["input_size"])
        # A probe batch from its own generator: the run's random numbers stay those of the normal path.
        example = torch.randn(feats.PROBE_BATCH, *input_size, generator=torch.Generator().manual_seed(0))
        example = example.to(runtime.device)
        if runtime.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        try:
            split = feats.split_model(model, tree, phase, built.head, example,
                                      lambda: set_train_mode(model, tree, phase, module_stages))
        except feats.NoSplit as exc:
            self._log(f"{name} trains the normal way (the frozen layers run again every epoch): {exc}.")
            return None
        n_train, n_val = len(data.train), len(data.val)
        keep_on = runtime.device
        if keep_on.type == "cuda" and feats.bytes_needed(split, n_train, n_val, views) > feats.memory_budget(keep_on):
            keep_on = torch.device("cpu")  # too large for the GPU: kept in (pinned) main memory
        budget = feats.memory_budget(keep_on)
        while views > 1 and feats.bytes_needed(split, n_train, n_val, views) > budget:
            views -= 1
        needed = feats.bytes_needed(split, n_train, n_val, views)
        if needed > budget:
            self._log(f"{name} trains the normal way: the frozen layers' outputs would need {needed / 2**30:.1f} GB, "
                      f"more than the memory can spare ({budget / 2**30:.1f} GB).")
            return None
        # ONNX Runtime for the CPU's fp32 prefix; otherwise the BatchNorm-folded graph.
        prefix, how = feats.fast_prefix(split, example, onnx=runtime.amp_dtype is None)
        if runtime.channels_last and how == "fused":
            prefix = prefix.to(memory_format=torch.channels_last)
        augmented = t.augment != "none"
        what = (f"{views} augmented view{'s' if views > 1 else ''} of each of the {n_train} training pictures"
                if augmented else f"each of the {n_train} training pictures")
        self._log(f"{name}: {split.describe()} do not change, so they run once per picture ({what}, and each of "
                  f"the {n_val} validation pictures); each epoch then trains only "
                  f"{'the head' if split.kind == 'head' else ', '.join(phase.stages)} on their outputs.")
        began = time.monotonic()
        total = n_val + n_train * views
        progress = _Progress(self._log, total)
        bs = PREFIX_BATCH.get(runtime.device.type, 32)
        pin = data.pin and keep_on.type == "cpu"

        def run(loader, out):
            return feats.compute_features(prefix, loader, self._prefix_batch(runtime, progress), self._check_stop,
                                          keep_on, out_like=out)

        val_out, val_labels = run(make_loader(data.val, bs, shuffle=False, workers=data.workers, pin_memory=data.pin),
                                  None)
        train_source = data.train if augmented else data.train_eval
        loader = make_loader(train_source, bs, shuffle=False, workers=data.workers, seed=t.seed + 7919 * (index + 1),
                             pin_memory=data.pin)
        outputs = torch.empty((views, n_train, *split.output_shape), dtype=val_out.dtype, device=keep_on)
        labels = torch.empty((views, n_train), dtype=torch.long)
        for view in range(views):
            _, labels[view] = run(loader, outputs[view])
        del loader
        if pin:
            outputs, val_out = outputs.pin_memory(), val_out.pin_memory()
        seconds = time.monotonic() - began
        engine = {"onnx": ", run by ONNX Runtime", "fused": ", BatchNorm folded into the convolutions"}.get(how, "")
        self._log(f"{name}: the frozen layers' outputs are ready ({total} pictures in {seconds:.1f} s{engine}).")
        train_set = feats.FeatureSet(outputs, labels, seed=t.seed)
        val_set = feats.FeatureSet(val_out.unsqueeze(0), val_labels.unsqueeze(0))
        return _FastPath(
            split, train_set,
            feats.feature_loader(train_set, t.batch_size, shuffle=True, seed=t.seed,
                                 drop_last=n_train > t.batch_size, pin_memory=pin),
            feats.feature_loader(val_set, t.batch_size, shuffle=False, pin_memory=pin))

    def _prefix_batch(self, runtime: Runtime, progress: "_Progress"):
        def run(prefix: nn.Module, images: torch.Tensor) -> torch.Tensor:
            images, _ = _to_device(images, images.new_empty(0), runtime, self.normalize)
            # no_grad rather than inference_mode: the outputs are later the input of training steps.
            with torch.no_grad(), torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                                 enabled=runtime.amp_dtype is not None):
                out = self.backoff.forward(prefix, images)
            progress.advance(images.shape[0])
            return out
        return run

    def _maybe_compile(self, module: nn.Module, runtime: Runtime):
        if not self.config.train.compile:
            return module
        if module not in self._compiled:
            self._compiled[module] = _Compiled(module, self._log)
        return self._compiled[module]

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped()

    def _train_epoch(self, model, loader, criterion, optimizer, scheduler, scaler, runtime: Runtime,
                     phase_index: int, epoch: int) -> tuple[float, float]:
        total_loss, correct, seen = 0.0, 0, 0
        began = time.monotonic()
        steps = len(loader)
        for step, (images, labels) in enumerate(loader, start=1):
            if self.stop.is_set():
                raise _Stopped()
            images, labels = _to_device(images, labels, runtime, self.normalize)
            n = labels.size(0)
            batch_loss, batch_correct, step_loss, pieces = self._train_step(model, images, labels, criterion,
                                                                            optimizer, scaler, runtime, epoch)
            scheduler.step()
            total_loss += batch_loss
            correct += batch_correct
            seen += n
            self.emit(StepEnded(phase_index, epoch, step, steps, step_loss if pieces == 1 else batch_loss / n,
                                head_lr(optimizer), seen / max(time.monotonic() - began, 1e-9)))
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def _train_step(self, model, images, labels, criterion, optimizer, scaler, runtime: Runtime, epoch: int):
        """One optimizer step on a batch; returns (summed loss, correct predictions, the loss, pieces used)."""
        n = labels.size(0)
        while True:
            # The batch in pieces when memory ran short earlier: each piece's loss is weighted by its share of the
            # batch, so the summed gradients are those of the whole batch.
            pieces = min(self.backoff.pieces, n)
            try:
                optimizer.zero_grad(set_to_none=True)
                batch_loss, batch_correct = 0.0, 0
                for x, y in zip(images.tensor_split(pieces), labels.tensor_split(pieces)):
                    with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                        enabled=runtime.amp_dtype is not None):
                        logits = model(x)
                        loss = criterion(logits.float(), y)
                    if not torch.isfinite(loss):
                        raise UserError(f"The training loss became {loss.item()} (it diverged) in epoch {epoch}: "
                                        f"lower the learning rate (for example to {head_lr(optimizer) / 10:.2g}) "
                                        "and start again.")
                    scaler.scale(loss if pieces == 1 else loss * (y.size(0) / n)).backward()
                    step_loss = loss.item()
                    batch_loss += step_loss * y.size(0)
                    batch_correct += (logits.argmax(1) == y).sum().item()
                break
            except torch.OutOfMemoryError:
                logits = loss = None
                optimizer.zero_grad(set_to_none=True)
                self.backoff.shrink(n)
        scaler.step(optimizer)
        scaler.update()
        return batch_loss, batch_correct, step_loss, pieces

    # -- the run folder --------------------------------------------------------------------------------------

    def _create_run_dir(self, config: RunConfig, dataset: DatasetIndex, built, tree: LayerTree) -> None:
        self.run_dir = runs.create_run_dir(config.out, config.model.name, config.strategy, config.name)
        d = self.run_dir
        runs.atomic_write_text(d / runs.CONFIG, dumps(config))
        runs.atomic_write_json(d / runs.LABELS, list(dataset.classes))
        runs.atomic_write_json(d / runs.DATASET, {
            "root": dataset.root, "layout": dataset.layout, "split_source": dataset.split_source,
            "classes": list(dataset.classes), "counts": dataset.counts(),
            "samples": [{"path": s.path, "label": s.label, "split": s.split} for s in dataset.samples],
            "health": dataset.health.to_dict()})
        runs.atomic_write_json(d / runs.MODEL, {
            "model": config.model.name, "weights": config.model.weights, "weights_note": built.weights_note,
            "license": built.license, "head": built.head, "num_classes": len(dataset.classes),
            "data_config": built.data_config,
            "stages": [{"name": s.name, "params": s.params} for s in tree.stages]})
        self.summary_extra = {"model": config.model.name, "strategy": config.strategy,
                              "weights": config.model.weights, "total_epochs": config.total_epochs}
        self._write_summary("running", None)

    def _write_summary(self, status: str, error: str | None) -> None:
        runs.atomic_write_json(self.run_dir / runs.SUMMARY, {
            "status": status, "best_val_acc": self.best_acc, "best_epoch": self.best_epoch,
            "epochs_completed": self.epochs_completed, "error": error,
            "seconds": round(time.monotonic() - self.started, 2), **self.summary_extra})

    def _log(self, message: str, level: str = "info") -> None:
        self.emit(Log(level, message))


def _to_device(images: torch.Tensor, labels: torch.Tensor, runtime: Runtime, normalize=None):
    non_blocking = runtime.device.type == "cuda"
    images = images.to(runtime.device, non_blocking=non_blocking)
    if normalize is not None:
        images = normalize(images)
    if runtime.channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(runtime.device, non_blocking=non_blocking)


class Backoff:
    """Automatic batch size: after an out-of-memory error, batches are processed in 2, 4, ... pieces (training
    adds up the pieces' gradients, so a step still uses the whole batch). Raised again once a piece is one picture.

    Any device that raises ``torch.OutOfMemoryError`` (CUDA does) is handled; the CPU's allocator failures are plain
    RuntimeErrors and end the run with the usual sentence."""

    def __init__(self, runtime: Runtime | None = None, log: Callable[[str, str], None] | None = None):
        self.pieces = 1
        self.runtime = runtime
        self.log = log or (lambda message, level="info": None)

    def shrink(self, batch: int) -> None:
        """Call inside ``except torch.OutOfMemoryError``: more pieces, or the error again when none are left."""
        if self.pieces >= batch:
            raise
        self.pieces = min(batch, self.pieces * 2)
        if self.runtime is not None and self.runtime.device.type == "cuda":
            torch.cuda.empty_cache()
        per = math.ceil(batch / self.pieces)
        self.log(f"The {'GPU' if self.runtime and self.runtime.device.type == 'cuda' else 'computer'} ran out of "
                 f"memory with {batch} pictures at once: continuing with {per} at a time (the results stay the same; "
                 "BatchNorm layers that train see the smaller batches).", "warning")

    def forward(self, model, images: torch.Tensor) -> torch.Tensor:
        """``model(images)`` in pieces, as many as memory requires (for evaluation and frozen outputs)."""
        n = images.shape[0]
        while True:
            pieces = min(self.pieces, n)
            try:
                if pieces == 1:
                    return model(images)
                return torch.cat([model(x) for x in images.tensor_split(pieces)])
            except torch.OutOfMemoryError:
                self.shrink(n)


def evaluate_loader(model: nn.Module, loader, runtime: Runtime, stop: threading.Event | None = None, *,
                    backoff: Backoff | None = None, normalize=None) -> tuple[float, float]:
    """Mean cross-entropy (without label smoothing) and accuracy over a loader, in eval mode."""
    model.eval()
    backoff = backoff or Backoff(runtime)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            if stop is not None and stop.is_set():
                raise _Stopped()
            images, labels = _to_device(images, labels, runtime, normalize)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                enabled=runtime.amp_dtype is not None):
                logits = backoff.forward(model, images).float()
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@dataclass
class _Data:
    train: ImageDataset  # training pictures, training transform
    val: ImageDataset  # validation pictures, evaluation transform
    train_eval: ImageDataset  # training pictures, evaluation transform
    workers: int
    pin: bool


@dataclass
class _FastPath:
    split: feats.Split
    train_set: feats.FeatureSet
    train_loader: object
    val_loader: object


@contextlib.contextmanager
def _cpu_allocator_for_training():
    """glibc's malloc tuned for training on the CPU while a run lasts, then restored and trimmed.

    glibc hands out every block above a few megabytes (activations, gradients) as a fresh memory mapping and unmaps it
    when freed, so every training step pays page faults for all its large tensors. Keeping large blocks on the heap
    and not trimming it during the run lets the steps reuse the same memory: MobileNetV2 ran 45 instead of 22
    pictures/s on the project's 2-core machines. This is the in-process equivalent of the jemalloc/tcmalloc advice
    in PyTorch's CPU performance guide; at the end the defaults come back and the memory is returned (malloc_trim).
    Linux with glibc only; elsewhere nothing changes."""
    libc = None
    try:
        import ctypes
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, -1)
            libc.mallopt(_M_TOP_PAD, 64 * 2**20)
    except (OSError, AttributeError):
        libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, 65536)  # glibc's defaults
            libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
            libc.mallopt(_M_TOP_PAD, 128 * 1024)
            libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # mallopt parameters, from glibc's malloc.h


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


class _Compiled:
    """``torch.compile`` of a module, or the module itself once compiling fails (no compiler, an unsupported layer):
    the run goes on, slower, and says why."""

    def __init__(self, module: nn.Module, log: Callable[[str, str], None]):
        self.module = module
        self.compiled = torch.compile(module)
        self.log = log
        self.failed = False

    def __call__(self, x):
        if not self.failed:
            try:
                return self.compiled(x)
            except (torch.OutOfMemoryError, UserError, KeyboardInterrupt):
                raise
            except Exception as exc:  # the compiler's many error types: fall back to the plain module
                self.failed = True
                self.log(f"torch.compile could not compile the model ({exc.__class__.__name__}); training goes on "
                         "without it.", "warning")
        return self.module(x)

    def eval(self):
        self.module.eval()
        return self


def fit(config: RunConfig, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
        dataset: DatasetIndex | None = None) -> RunResult:
    """Run the experiment ``config`` describes. Never raises for a problem the user can fix: the result (and a
    ``Failed`` event) carries a sentence instead. ``stop.set()`` ends the run within one batch as ``stopped``."""
    return Trainer(config, on_event, stop).run(dataset)


def result_json(result: RunResult) -> str:
    return json.dumps(dataclasses.asdict(result))
