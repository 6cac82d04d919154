"""Training: ``fit(config, on_event, stop) -> RunResult``.

One function runs a whole experiment: scan the data, build the model, resolve the strategy into phases, write the
run folder, then train phase by phase, reporting plain-data events and checking the stop token before every batch.
Expected problems (data, weights, settings, a diverging loss) end the run as ``failed`` with a sentence; nothing is
raised to the caller, so the window and the command line handle every outcome the same way.
"""

from __future__ import annotations

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
from engine.config import Phase, RunConfig, dumps
from engine.data import DatasetIndex, scan
from engine.errors import UserError
from engine.events import EpochEnded, Failed, Finished, Log, PhaseStarted, RunStarted, StepEnded
from engine.freeze import apply_phase, check_phase, param_groups, resolve_phases, set_train_mode
from engine.layers import HEAD, LayerTree, build_layer_tree
from engine.loaders import ImageDataset, auto_workers, build_transforms, decode_size, make_loader
from engine.models import build_model

EventCallback = Callable[[object], None]
WARMUP_START_FACTOR = 0.01  # linear warm-up starts at this share of each group's learning rate


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
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and device.type == "cuda")
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

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, dataset: DatasetIndex | None) -> RunResult:
        try:
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
        runtime = resolve_runtime(config)
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
        train_tf, eval_tf = build_transforms(built.data_config, config.train.augment)
        draft = decode_size(built.data_config)
        workers = auto_workers(config.train.workers, len(train_samples))
        pin = runtime.device.type == "cuda"
        bs = config.train.batch_size
        train_loader = make_loader(
            ImageDataset([s.path for s in train_samples], [s.label for s in train_samples], train_tf, draft),
            bs, shuffle=True, workers=workers, seed=config.train.seed, pin_memory=pin,
            drop_last=len(train_samples) > bs)  # a last batch of one would upset BatchNorm in train mode
        val_loader = make_loader(
            ImageDataset([s.path for s in val_samples], [s.label for s in val_samples], eval_tf, draft),
            bs, shuffle=False, workers=workers, pin_memory=pin)
        module_stages = tree.module_stages(model)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
        scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)

        epoch = 0
        for index, phase in enumerate(phases):
            trainable = apply_phase(model, tree, phase)
            optimizer = make_optimizer(param_groups(model, tree, phase, config.train.weight_decay), config, phase)
            scheduler = make_scheduler(optimizer, phase, len(train_loader), config)
            self.emit(PhaseStarted(index, phase.name, phase.epochs, phase.lr, trainable, tree.total_params,
                                   tuple(phase.stages)))
            self._log(f"Phase {index + 1}/{len(phases)} '{phase.name}': {trainable:,} of {tree.total_params:,} "
                      f"parameters train ({', '.join(phase.stages)}), {phase.epochs} epochs.")
            since_best = 0
            for _ in range(phase.epochs):
                epoch += 1
                began = time.monotonic()
                set_train_mode(model, tree, phase, module_stages)
                train_loss, train_acc = self._train_epoch(model, train_loader, criterion, optimizer, scheduler,
                                                          scaler, runtime, index, epoch)
                val_loss, val_acc = evaluate_loader(model, val_loader, runtime, self.stop)
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
                patience = config.train.early_stopping
                if patience and since_best >= patience and epoch < total_epochs:
                    self._log(f"Early stopping: no better validation accuracy for {patience} epochs; "
                              f"ending phase '{phase.name}'.")
                    break

    def _train_epoch(self, model, loader, criterion, optimizer, scheduler, scaler, runtime: Runtime,
                     phase_index: int, epoch: int) -> tuple[float, float]:
        total_loss, correct, seen = 0.0, 0, 0
        began = time.monotonic()
        steps = len(loader)
        for step, (images, labels) in enumerate(loader, start=1):
            if self.stop.is_set():
                raise _Stopped()
            images, labels = _to_device(images, labels, runtime)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                enabled=runtime.amp_dtype is not None):
                logits = model(images)
                loss = criterion(logits.float(), labels)
            if not torch.isfinite(loss):
                raise UserError(f"The training loss became {loss.item()} (it diverged) in epoch {epoch}: lower the "
                                f"learning rate (for example to {head_lr(optimizer) / 10:.2g}) and start again.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = labels.size(0)
            total_loss += loss.item() * n
            correct += (logits.argmax(1) == labels).sum().item()
            seen += n
            self.emit(StepEnded(phase_index, epoch, step, steps, loss.item(), head_lr(optimizer),
                                seen / max(time.monotonic() - began, 1e-9)))
        return total_loss / max(seen, 1), correct / max(seen, 1)

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


def _to_device(images: torch.Tensor, labels: torch.Tensor, runtime: Runtime):
    non_blocking = runtime.device.type == "cuda"
    images = images.to(runtime.device, non_blocking=non_blocking)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(runtime.device, non_blocking=non_blocking)


def evaluate_loader(model: nn.Module, loader, runtime: Runtime, stop: threading.Event | None = None
                    ) -> tuple[float, float]:
    """Mean cross-entropy (without label smoothing) and accuracy over a loader, in eval mode."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            if stop is not None and stop.is_set():
                raise _Stopped()
            images, labels = _to_device(images, labels, runtime)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                enabled=runtime.amp_dtype is not None):
                logits = model(images).float()
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def fit(config: RunConfig, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
        dataset: DatasetIndex | None = None) -> RunResult:
    """Run the experiment ``config`` describes. Never raises for a problem the user can fix: the result (and a
    ``Failed`` event) carries a sentence instead. ``stop.set()`` ends the run within one batch as ``stopped``."""
    return Trainer(config, on_event, stop).run(dataset)


def result_json(result: RunResult) -> str:
    return json.dumps(dataclasses.asdict(result))
