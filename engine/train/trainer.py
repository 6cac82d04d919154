"""Training: ``fit(config, on_event, stop) -> RunResult``.

One function runs a whole experiment: scan the data, build the model, resolve the strategy into phases, write the
run folder, then train phase by phase, reporting plain-data events and checking the stop token before every batch.
Expected problems (data, weights, settings, a diverging loss) end the run as ``failed`` with a sentence; nothing is
raised to the caller, so the window and the command line handle every outcome the same way.

Checkpoints and resuming: at the end of every epoch, every CHECKPOINT_EVERY_S seconds within an epoch, and when the
run is stopped, ``checkpoint.pt`` in the run folder receives everything needed to continue exactly there (see
``Trainer._save_checkpoint``): the weights, the optimizer, schedule and gradient-scaler states, the phase, epoch and
step, the best epoch and the early-stopping count, the metrics so far, the random states and the shuffled order's
position. ``resume(run_dir)`` continues a stopped, failed or killed run from it, in the same folder; on the CPU, with
no loader processes, the result is the same as that of a run that was never interrupted (tests/engine/test_resume.py).
With loader processes, a run resumed within an epoch sees the same pictures in the same order, but their random
augmentation differs from the uninterrupted run's (the processes' random states are not saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import threading
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from engine import files
from engine.project import runs
from engine.train import fastpath as feats
from engine.data.cache import ImageCache
from engine.config import Phase, RunConfig, dumps
from engine.data.scan import DatasetIndex, scan
from engine.errors import ConfigError, UserError
from engine.events import EpochEnded, Failed, Finished, LayerActivity, Log, PhaseStarted, RunStarted, StepEnded
from engine.train.strategies import apply_phase, check_phase, param_groups, resolve_phases, set_train_mode
from engine.models.layers import HEAD, LayerTree, build_layer_tree
from engine.data.loaders import (BatchNormalize, ImageDataset, auto_workers, build_transforms, decode_size,
                            make_loader, outputs_uint8)
from engine.models.build import build_model

EventCallback = Callable[[object], None]
WARMUP_START_FACTOR = 0.01  # linear warm-up starts at this share of each group's learning rate
# Pictures per batch when a frozen prefix's outputs are computed: no gradients, so larger batches than in training.
# On the CPU, larger batches mean fewer meetings of the threads per picture (MobileNetV2 on 2 busy cores: 13
# pictures/s at 16, 33 at 64).
PREFIX_BATCH = {"cuda": 128, "cpu": 64}
PROGRESS_EVERY_S = 10.0  # a progress line at most this often while the frozen outputs are computed
CHECKPOINT_EVERY_S = 300.0  # within an epoch, a checkpoint at least this often (besides one at each epoch's end)
CHECKPOINT_FORMAT = 1  # checkpoint.pt's layout; a checkpoint of another layout is not resumed
# A phase that trains less than this share of the parameters saves the rest once, in checkpoint-base.pt, when it
# starts; its checkpoints then hold only the trained parameters (and the buffers). Feature extraction on a large model
# writes kilobytes each epoch instead of the whole model.
BASE_SHARE = 0.5
LAYER_ACTIVITY_EVERY = 10  # a LayerActivity event every this many steps (and at each epoch's end); 0: none
# Measuring the gradient norms may take at most this share of the training time: when steps are so quick that
# measuring each would cost more (a head trained on cached outputs), only every n-th step is measured.
LAYER_ACTIVITY_SHARE = 0.01
LAYER_ACTIVITY_MIN_S = 0.1  # ... and at most this often within an epoch: a heat map needs no more than 10 a second


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
    # rounding). On the CPU, automatic precision is fp32 here; training steps may still use bf16 autocast, chosen per
    # phase once the batch size is known (Trainer._step_runtime, engine.train.runtime.cpu_bf16_pays).
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
    files.atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def save_checkpoint(state: dict, path: Path) -> None:
    """A checkpoint as a torch file of tensors, numbers, strings, lists and dicts only: ``torch.load(path,
    weights_only=True)`` reads it back, without running any code from the file."""
    files.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


class Trainer:
    """One run. Use ``fit()`` or ``resume()``; the class only keeps the run's pieces together."""

    def __init__(self, config: RunConfig | None, on_event: EventCallback | None, stop: threading.Event | None):
        self.config = config
        self.emit = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.run_dir: Path | None = None
        self.best_acc: float | None = None
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.epochs_completed = 0
        self.started = time.monotonic()
        self.seconds_before = 0.0  # training time before the run was resumed
        self.summary_extra: dict = {}
        self.backoff = Backoff()
        self._compiled: dict = {}
        self._told_bf16 = False  # the log said that training steps use bf16 on this CPU
        self.epoch = 0  # the epoch being trained (1-based, over the whole run), or the last one completed
        self.global_step = 0  # optimizer steps over the whole run
        self.normalize = None
        self.phases: tuple[Phase, ...] = ()
        self.records: list[dict] = []  # metrics.jsonl's lines so far; every checkpoint holds them
        self.checkpoint: dict | None = None  # what a resumed run continues from
        self.resume_dir: Path | None = None
        self.model_info: dict = {}
        self._model: nn.Module | None = None
        self._scaler = None
        self._live: _Live | None = None  # the phase being trained
        self._progress: _EpochProgress | None = None  # the epoch being trained
        self._normal_order: _Order | None = None  # the picture order of the normal path, shared by its phases
        self._last_checkpoint = time.monotonic()
        self._checkpoint_step: int | None = None  # global_step at the last checkpoint written; None: none yet
        self._checkpoint_where = ""  # where the last checkpoint stands, in words

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, dataset: DatasetIndex | None) -> RunResult:
        with contextlib.ExitStack() as self._held:  # the run folder's lock, held until the summary is written
            return self._run_and_report(dataset)

    def resume(self, run_dir: Path, *, device: str | None = None, workers: int | None = None) -> RunResult:
        with contextlib.ExitStack() as self._held:
            try:
                self._open_for_resume(run_dir, device, workers)
            except Exception as exc:  # nothing was changed in the folder
                error = str(exc) if isinstance(exc, UserError) else (
                    f"The run in {run_dir} could not be resumed because of an unexpected error "
                    f"({exc.__class__.__name__}: {exc}).")
                summary = runs.read_summary(run_dir)
                result = RunResult("failed", str(run_dir), summary.get("best_val_acc"), summary.get("best_epoch"),
                                   summary.get("epochs_completed") or 0, error)
                self.emit(Failed(error, str(run_dir)))
                return result
            return self._run_and_report(None)

    def _run_and_report(self, dataset: DatasetIndex | None) -> RunResult:
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
        folder = self.run_dir or self.resume_dir
        result = RunResult(status, str(folder) if folder else None, self.best_acc, self.best_epoch,
                           self.epochs_completed, error)
        if self.run_dir is not None:
            try:
                self._write_summary(status, error)
            except OSError as exc:
                error = error or f"The run's summary could not be written ({exc.strerror or exc})."
                result = dataclasses.replace(result, status="failed", error=error)
                status = "failed"
            if status == "completed":  # nothing left to resume: the checkpoint's disk space goes back
                for name in (runs.CHECKPOINT, runs.CHECKPOINT_BASE):
                    with contextlib.suppress(OSError):
                        (self.run_dir / name).unlink(missing_ok=True)
        if status == "failed":
            self.emit(Failed(result.error or "The run failed.", result.run_dir))
        else:
            self.emit(Finished(status, result.run_dir or "", self.best_acc, self.best_epoch, self.epochs_completed,
                               self._seconds()))
        return result

    def _unexpected(self, exc: Exception) -> str:
        where = ""
        if self.run_dir is not None:
            try:
                (self.run_dir / runs.ERROR_LOG).write_text(traceback.format_exc(), encoding="utf-8")
                where = f" Details are in {self.run_dir / runs.ERROR_LOG}."
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in runs.FULL_DISK:
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
        ckpt = self.checkpoint
        if ckpt is not None:
            dataset = self._dataset_of_run()
        elif dataset is None:
            self._log(f"Scanning {config.data.source} ...")
            dataset = scan(config.data.source, val_fraction=config.data.val_fraction,
                           test_fraction=config.data.test_fraction, seed=config.data.split_seed,
                           split=config.data.split, stop=self.stop)
        if ckpt is None and (dataset.health.advice or dataset.health.unreadable):
            for line in dataset.health.lines():
                self._log(line, "warning")
        train_samples, val_samples = dataset.split("train"), dataset.split("val")
        if not train_samples or not val_samples:
            raise UserError("Training needs pictures for both training and validation: add pictures, or set a "
                            "validation fraction above 0.")
        if config.train.batch_size == 0:  # automatic: chosen for the device and the data, then written down
            from engine.train.runtime import auto_batch_size

            bs = auto_batch_size(runtime.device, len(train_samples))
            config = self.config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=bs))
            self._log(f"Batch size: {bs} pictures per step (chosen automatically for this device and data).")
        # A resumed run takes its weights from the checkpoint, and its preprocessing from model.json.
        built = build_model(config.model.name, "none" if ckpt is not None else config.model.weights,
                            len(dataset.classes))
        if ckpt is not None:
            built = dataclasses.replace(built, data_config=self.model_info.get("data_config") or built.data_config)
        else:
            self._log(built.weights_note)
        model = self._model = built.model
        tree = build_layer_tree(model, built.head)
        phases = self.phases = resolve_phases(config, tree)
        for phase in phases:
            check_phase(phase, tree)
        if ckpt is not None:
            self._reopen_run_dir(config, model)
        else:
            resolved = dataclasses.replace(config, phases=phases, data=dataclasses.replace(
                config.data, source=str(Path(dataset.root).resolve())))
            self._create_run_dir(resolved, dataset, built, tree)
        total_epochs = sum(p.epochs for p in phases)
        self.emit(RunStarted(str(self.run_dir), tuple(dataset.classes), len(train_samples), len(val_samples),
                             runtime.description, total_epochs, tree.total_params, resumed=ckpt is not None,
                             epochs_done=self.epochs_completed))
        if ckpt is not None:
            self._log(f"Resuming the run in {self.run_dir} from its checkpoint {self._checkpoint_where}.")
        self._log(f"{len(train_samples)} training and {len(val_samples)} validation pictures, "
                  f"{len(dataset.classes)} classes; training on {runtime.description}.")

        model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
        if runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        t = config.train
        # 8-bit pictures from the loaders, normalised by batch on the device (see engine.data.loaders.BatchNormalize).
        train_tf, eval_tf = build_transforms(built.data_config, t.augment, uint8=True)
        self.normalize = (BatchNormalize(built.data_config["mean"], built.data_config["std"])
                          if outputs_uint8(t.augment) else None)
        draft = decode_size(built.data_config)
        image_cache = None
        if t.cache_images:
            image_cache = ImageCache.for_data_config(built.data_config)
            plan = image_cache.prepare([s.path for s in train_samples + val_samples])
            self._log(plan.message(), "info" if plan.writable else "warning")
        # Not whether the pictures are in the cache yet: the same settings must give the same loaders (and so the
        # same augmentation) on a later run as on the first.
        workers = auto_workers(t.workers, len(train_samples), cached=image_cache is not None,
                               device=runtime.device.type)
        pin = runtime.device.type == "cuda"
        data = _Data(
            train=ImageDataset([s.path for s in train_samples], [s.label for s in train_samples], train_tf, draft,
                               image_cache),
            val=ImageDataset([s.path for s in val_samples], [s.label for s in val_samples], eval_tf, draft,
                             image_cache),
            train_eval=ImageDataset([s.path for s in train_samples], [s.label for s in train_samples], eval_tf,
                                    draft, image_cache),
            workers=workers, pin=pin)
        criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        scaler = self._scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp_dtype == torch.float16)
        self.backoff = Backoff(runtime, self._log)
        if ckpt is not None:
            scaler.load_state_dict(ckpt["scaler"])
            self.backoff.pieces = int(ckpt["pieces"])
        try:
            self._train_phases(model, tree, built, runtime, data, criterion, scaler, total_epochs)
        except _Stopped:
            self._checkpoint_on_stop()
            raise

    def _train_phases(self, model, tree, built, runtime: Runtime, data: "_Data", criterion, scaler,
                      total_epochs: int) -> None:
        config, t, ckpt = self.config, self.config.train, self.checkpoint
        bs = t.batch_size
        drop_last = len(data.train) > bs  # a last batch of one would upset BatchNorm in train mode
        module_stages = tree.module_stages(model)
        normal_loaders = None
        first = ckpt["phase"] if ckpt is not None else 0
        for index, phase in enumerate(self.phases):
            if index < first:
                continue
            resuming = ckpt is not None and index == first
            if resuming:  # the random state this phase began with: its augmented views come out the same
                _set_rng_state(ckpt["phase_rng"])
            phase_rng = _rng_state()
            trainable = apply_phase(model, tree, phase)
            fast = self._fast_path(model, tree, phase, index, built, runtime, data, module_stages)
            if fast is not None:
                train_loader, val_loader, order = fast.train_loader, fast.val_loader, fast.order
                train_module = self._maybe_compile(fast.split.train_suffix, runtime)
                eval_module = self._maybe_compile(fast.split.eval_suffix, runtime)
            else:
                if normal_loaders is None:
                    self._normal_order = _Order(len(data.train), bs, drop_last, t.seed)
                    if ckpt is not None and ckpt.get("normal_order") is not None:
                        self._normal_order.generator.set_state(ckpt["normal_order"])
                    normal_loaders = (
                        _shuffled_loader(data.train, self._normal_order, workers=data.workers, seed=t.seed,
                                         pin_memory=data.pin),
                        make_loader(data.val, bs, shuffle=False, workers=data.workers, pin_memory=data.pin))
                train_loader, val_loader = normal_loaders
                order = self._normal_order
                train_module = eval_module = self._maybe_compile(model, runtime)
            optimizer = make_optimizer(param_groups(model, tree, phase, t.weight_decay), config, phase)
            scheduler = make_scheduler(optimizer, phase, len(train_loader), config)
            live = _Live(index, phase, optimizer, scheduler, order, fast is not None, phase_rng)
            resume_at = None
            if resuming and ckpt["optimizer"] is not None and ckpt.get("base"):
                live.base = ckpt["base"]  # the weights this phase does not train are saved already
            elif trainable < BASE_SHARE * tree.total_params:
                live.base = self._save_base(model)
            if resuming and ckpt["optimizer"] is not None:  # within the phase: its optimizer, schedule, order
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                if fast is not None:
                    order.generator.set_state(ckpt["fast_order"])
                live.epochs_done, live.since_best = int(ckpt["phase_epochs"]), int(ckpt["since_best"])
                resume_at = (int(ckpt["step"]), tuple(ckpt["partial"]))
                _set_rng_state(ckpt["rng"])  # (at a phase's start, the state is phase_rng, set above)
            self._live = live
            self.emit(PhaseStarted(index, phase.name, phase.epochs, phase.lr, trainable, tree.total_params,
                                   tuple(phase.stages)))
            self._log(f"Phase {index + 1}/{len(self.phases)} '{phase.name}': {trainable:,} of "
                      f"{tree.total_params:,} parameters train ({', '.join(phase.stages)}), {phase.epochs} epochs.")
            # Training only a head on stored outputs is a stream of tiny operations: on the CPU one thread does them
            # fastest (several threads spend more time meeting each other than computing, worst on a busy machine).
            threads = (_threads(1) if fast is not None and fast.split.kind == "head" and runtime.device.type == "cpu"
                       else contextlib.nullcontext())
            with threads:
                self._run_phase(model, tree, live, fast, train_module, eval_module, train_loader, val_loader,
                                criterion, scaler, runtime, self._step_runtime(runtime, fast), module_stages,
                                total_epochs, resume_at)
            # The cached outputs' memory goes back before the next phase computes its own.
            self._live = None
            fast = train_loader = val_loader = train_module = eval_module = live = None

    def _step_runtime(self, runtime: Runtime, fast: "_FastPath | None") -> Runtime:
        """The runtime of the phase's training steps: the run's, except that automatic precision on a CPU with native
        bf16 arithmetic trains in bf16 autocast when the batch is large enough for it to pay
        (engine.train.runtime.cpu_bf16_pays). Not for a head trained alone on stored outputs (a few small matrix products:
        nothing to gain), and never for validation, the frozen layers' stored outputs, evaluation or export, which
        stay in fp32 so that their figures are those a user gets later from the saved model."""
        if (self.config.train.precision != "auto" or runtime.device.type != "cpu" or runtime.amp_dtype is not None
                or (fast is not None and fast.split.kind == "head")):
            return runtime
        from engine.train.runtime import cpu_bf16_pays

        if not cpu_bf16_pays(self.config.train.batch_size):
            return runtime
        if not self._told_bf16:
            self._told_bf16 = True
            self._log("Training steps use bfloat16 mixed precision: this CPU computes bf16 natively, which trains "
                      "faster than full precision with the same accuracy (validation stays in full precision). "
                      "Choose 'Full precision (fp32)' to turn it off.")
        return dataclasses.replace(runtime, amp_dtype=torch.bfloat16)

    def _run_phase(self, model, tree, live: "_Live", fast, train_module, eval_module, train_loader, val_loader,
                   criterion, scaler, runtime, step_runtime, module_stages, total_epochs,
                   resume_at: tuple[int, tuple] | None) -> None:
        phase, index = live.phase, live.index
        activity = _Activity(model, tree, runtime.device) if LAYER_ACTIVITY_EVERY > 0 else None
        self._last_checkpoint = time.monotonic()
        while live.epochs_done < phase.epochs:
            self.epoch += 1
            epoch = self.epoch
            skip, partial = resume_at or (0, (0.0, 0, 0, 0.0))
            resume_at = None
            began = time.monotonic() - float(partial[3])
            set_train_mode(model, tree, phase, module_stages)
            if fast is not None:
                fast.split.train_extra()
                fast.train_set.set_epoch(epoch)
            train_loss, train_acc = self._train_epoch(train_module, train_loader, live, criterion, scaler,
                                                      step_runtime, epoch, activity, skip, partial, began)
            val_loss, val_acc = evaluate_loader(eval_module, val_loader, runtime, self.stop, backoff=self.backoff,
                                                normalize=self.normalize)
            improved = self.best_acc is None or val_acc > self.best_acc or (
                val_acc == self.best_acc and val_loss < self.best_loss)
            best = (val_acc, val_loss, epoch) if improved else (self.best_acc, self.best_loss, self.best_epoch)
            seconds = time.monotonic() - began
            lr = head_lr(live.optimizer)
            record = {"epoch": epoch, "phase": phase.name, "train_loss": train_loss, "train_acc": train_acc,
                      "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": round(seconds, 3)}
            since_best = 0 if improved else live.since_best + 1
            patience = self.config.train.early_stopping
            early = bool(patience) and since_best >= patience and epoch < total_epochs
            phase_done = early or live.epochs_done + 1 >= phase.epochs
            # The checkpoint first: it holds this epoch's record and weights, so that whatever happens to the
            # files written after it, a resumed run rewrites them from the checkpoint.
            self._save_checkpoint(completed=epoch, step=0, partial=(0.0, 0, 0, 0.0), records=self.records + [record],
                                  best=best, since_best=since_best, phase_epochs=live.epochs_done + 1,
                                  phase_done=phase_done, best_is_model=improved)
            live.epochs_done += 1
            live.since_best = since_best
            self.records.append(record)
            if improved:
                self._write("the best weights", lambda: save_weights(model, self.run_dir / runs.BEST))
            self.best_acc, self.best_loss, self.best_epoch = best
            self._write("the epoch's metrics", lambda: runs.append_jsonl(self.run_dir / runs.METRICS, record))
            self.epochs_completed = epoch
            self._write("the run's summary", lambda: self._write_summary("running", None))
            self.emit(EpochEnded(index, phase.name, epoch, total_epochs, train_loss, train_acc, val_loss,
                                 val_acc, lr, seconds, improved))
            if early:
                self._log(f"Early stopping: no better validation accuracy for {patience} epochs; "
                          f"ending phase '{phase.name}'.")
                break

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def _save_checkpoint(self, *, completed: int, step: int, partial: tuple, records: list[dict], best: tuple,
                         since_best: int, phase_epochs: int, phase_done: bool, best_is_model: bool) -> None:
        """Write checkpoint.pt: everything a resumed run needs to continue exactly here (see CHECKPOINT_FORMAT)."""
        live = self._live
        rng = _rng_state()
        # The weights the phase does not train are in checkpoint-base.pt, except at the end of a phase that another
        # follows: the next phase replaces that file, so this checkpoint holds all the weights.
        base = live.base if not (phase_done and live.index + 1 < len(self.phases)) else None
        state = {
            "format": CHECKPOINT_FORMAT,
            "phases": [[p.name, p.epochs] for p in self.phases],
            "epochs_completed": completed,
            "phase": live.index + 1 if phase_done else live.index,  # the phase to continue (or to start)
            "phase_epochs": 0 if phase_done else phase_epochs,  # its epochs complete
            "step": step,  # batches of the next epoch already trained
            "partial": [float(partial[0]), int(partial[1]), int(partial[2]), float(partial[3])],
            "global_step": self.global_step,
            "since_best": 0 if phase_done else since_best,
            "best": {"acc": best[0], "loss": float(best[1]), "epoch": best[2]},
            "best_is_model": best_is_model,  # the weights below are the best epoch's
            "records": records,
            "model": self._model_state(trained_only=base is not None),
            "base": base,  # the token of checkpoint-base.pt, which holds the other weights; None: all are here
            "optimizer": None if phase_done else live.optimizer.state_dict(),
            "scheduler": None if phase_done else live.scheduler.state_dict(),
            "fast_order": live.order.position() if live.fast and not phase_done else None,
            "normal_order": self._normal_order.position() if self._normal_order is not None else None,
            "scaler": self._scaler.state_dict(),
            "pieces": self.backoff.pieces,
            "rng": rng,
            "phase_rng": rng if phase_done else live.rng,
            "seconds": self._seconds(),
        }
        self._write("the checkpoint", lambda: save_checkpoint(state, self.run_dir / runs.CHECKPOINT))
        self._last_checkpoint = time.monotonic()
        self._checkpoint_step = self.global_step
        self._checkpoint_where = _where(completed, step)

    def _model_state(self, trained_only: bool) -> dict[str, torch.Tensor]:
        """The model's state dict; with ``trained_only``, its trained parameters and all its buffers (BatchNorm
        statistics: small, and those of trained stages change)."""
        state = self._model.state_dict(keep_vars=True)
        return {k: v.detach() for k, v in state.items()
                if not trained_only or not isinstance(v, nn.Parameter) or v.requires_grad}

    def _save_base(self, model: nn.Module) -> str:
        """Write checkpoint-base.pt (all the weights, as the phase begins); returns the token that ties the phase's
        checkpoints to it."""
        token = os.urandom(8).hex()  # not from the seeded random generators: the run's random numbers stay the same
        state = {"format": CHECKPOINT_FORMAT, "token": token, "model": self._model_state(trained_only=False)}
        self._write("the checkpoint", lambda: save_checkpoint(state, self.run_dir / runs.CHECKPOINT_BASE))
        return token

    def _save_mid_epoch(self) -> None:
        p, live = self._progress, self._live
        self._save_checkpoint(completed=self.epoch - 1, step=p.step,
                              partial=(p.loss, p.correct, p.seen, time.monotonic() - p.began), records=self.records,
                              best=(self.best_acc, self.best_loss, self.best_epoch), since_best=live.since_best,
                              phase_epochs=live.epochs_done, phase_done=False, best_is_model=False)

    def _checkpoint_on_stop(self) -> None:
        """A stopped run keeps the steps it made since the last checkpoint: resuming it loses nothing."""
        if self._live is None or self._progress is None or self.global_step == self._checkpoint_step:
            return
        try:
            self._save_mid_epoch()
        except UserError as exc:
            self._log(f"The run stopped, but its last steps could not be saved: {exc}", "warning")

    def _open_for_resume(self, run_dir: Path, device: str | None, workers: int | None) -> None:
        """Check that the run can continue, hold its lock and read its settings and checkpoint; RunFolderError
        (a sentence) otherwise, with nothing in the folder changed."""
        from engine.config import load

        problem = runs.resume_problem(run_dir)
        if problem:
            raise runs.RunFolderError(problem)
        self._held.enter_context(runs.run_lock(run_dir))
        config = load(run_dir / runs.CONFIG)
        train = {k: v for k, v in {"device": device, "workers": workers}.items() if v is not None}
        if train:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train))
        again = f"start the run again from its {runs.CONFIG}"
        try:
            ckpt = torch.load(run_dir / runs.CHECKPOINT, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise runs.RunFolderError(f"The run in {run_dir} has no checkpoint to resume from: {again}.") from None
        except Exception as exc:  # unpickling refused, a cut file, ...: the checkpoint cannot be trusted
            raise runs.RunFolderError(f"The checkpoint in {run_dir} cannot be read ({exc.__class__.__name__}): it is "
                                      f"damaged or was not written by Transfer Studio; {again}.") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise runs.RunFolderError(f"The checkpoint in {run_dir} was written by another version of Transfer "
                                      f"Studio and cannot be continued: {again}.")
        if ckpt.get("base"):  # the weights the phase does not train
            try:
                base = torch.load(run_dir / runs.CHECKPOINT_BASE, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise runs.RunFolderError(f"The checkpoint's saved weights ({runs.CHECKPOINT_BASE}) in {run_dir} "
                                          f"cannot be read ({exc.__class__.__name__}): {again}.") from None
            if not isinstance(base, dict) or base.get("token") != ckpt["base"]:
                raise runs.RunFolderError(f"The files {runs.CHECKPOINT} and {runs.CHECKPOINT_BASE} in {run_dir} do "
                                          f"not belong together (one was replaced): {again}.")
            ckpt["model"] = {**base["model"], **ckpt["model"]}
        try:
            self.model_info = json.loads((run_dir / runs.MODEL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise runs.RunFolderError(f"The run's {runs.MODEL} in {run_dir} cannot be read: {again}.") from None
        self.config, self.checkpoint, self.resume_dir = config, ckpt, run_dir

    def _dataset_of_run(self) -> DatasetIndex:
        """The pictures the run trained on, from its dataset.json: a resumed run continues on exactly them."""
        from engine.data.scan import HealthReport, Sample

        d = self.resume_dir
        try:
            info = json.loads((d / runs.DATASET).read_text(encoding="utf-8"))
            samples = [Sample(s["path"], int(s["label"]), s["split"]) for s in info["samples"]]
            dataset = DatasetIndex(info["root"], info["layout"], list(info["classes"]), samples, HealthReport(),
                                   info["split_source"])
        except (OSError, ValueError, KeyError, TypeError):
            raise runs.RunFolderError(f"The run's list of pictures ({runs.DATASET}) in {d} cannot be read, so it "
                                      f"cannot continue on the same pictures: start it again from its "
                                      f"{runs.CONFIG}.") from None
        missing = [s.path for s in samples if s.split in ("train", "val") and not Path(s.path).is_file()]
        if missing:
            raise runs.RunFolderError(f"{len(missing)} of the pictures the run trained on are no longer there (for "
                                      f"example {missing[0]}): put them back to resume it, or start a new run.")
        return dataset

    def _reopen_run_dir(self, config: RunConfig, model: nn.Module) -> None:
        """The resumed run's folder: the weights and counters from the checkpoint, metrics.jsonl cut back to the
        epochs the checkpoint holds, the summary 'running' again."""
        ckpt, d = self.checkpoint, self.resume_dir
        if [list(p) for p in ckpt["phases"]] != [[p.name, p.epochs] for p in self.phases]:
            raise runs.RunFolderError(f"The phases in {d / runs.CONFIG} differ from those the run was trained with "
                                      f"(the file was changed): start a new run from it instead.")
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, KeyError, TypeError):
            raise runs.RunFolderError(f"The checkpoint in {d} does not fit the model of its {runs.CONFIG} (one of "
                                      "them was changed): start a new run instead.") from None
        self.run_dir = d  # from here on, the summary says what happened
        for stale in d.glob(".*.tmp"):  # half-written files of a process that was killed while writing them
            with contextlib.suppress(OSError):
                stale.unlink()
        self.epoch = self.epochs_completed = int(ckpt["epochs_completed"])
        best = ckpt["best"]
        self.best_acc, self.best_loss, self.best_epoch = best["acc"], best["loss"], best["epoch"]
        self.records = list(ckpt["records"])
        self.global_step = self._checkpoint_step = int(ckpt["global_step"])
        self.seconds_before = float(ckpt["seconds"])
        self._checkpoint_where = _where(self.epochs_completed, int(ckpt["step"]))
        self.summary_extra = {"model": config.model.name, "strategy": config.strategy,
                              "weights": config.model.weights, "total_epochs": sum(p.epochs for p in self.phases)}
        self._write("the metrics", lambda: runs.rewrite_jsonl(d / runs.METRICS, self.records))
        if ckpt["best_is_model"]:  # written after the checkpoint: perhaps not yet
            self._write("the best weights", lambda: save_weights(model, d / runs.BEST))
        self._write("the run's summary", lambda: self._write_summary("running", None))

    def _write(self, what: str, write: Callable[[], None]) -> None:
        """``write()``, a file of the run folder; a full disk or a read-only folder becomes a sentence that says
        what is kept and how to go on."""
        try:
            write()
        except OSError as exc:
            sentence = runs.write_problem(what, self.run_dir, exc)
            if self._checkpoint_step is not None:
                best = " and the best weights" if self.best_epoch is not None else ""
                sentence += (f", then resume the run (python main.py train --resume {self.run_dir}): its last "
                             f"checkpoint ({self._checkpoint_where}){best} {'are' if best else 'is'} kept.")
            else:
                sentence += ", then start the run again."
            raise runs.RunFolderError(sentence) from None

    def _seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

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
        # Shuffled like the normal path's pictures (the same order for the same seed), with a resumable position.
        order = _Order(n_train, t.batch_size, n_train > t.batch_size, t.seed)
        return _FastPath(
            split, train_set,
            _shuffled_loader(train_set, order, seed=t.seed, pin_memory=pin, collate_fn=feats._as_is),
            feats.feature_loader(val_set, t.batch_size, shuffle=False, pin_memory=pin), order)

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

    def _train_epoch(self, model, loader, live: "_Live", criterion, scaler, runtime: Runtime, epoch: int,
                     activity: "_Activity | None", skip: int, partial: tuple, began: float) -> tuple[float, float]:
        """Train one epoch (from batch ``skip + 1`` when resumed, with ``partial`` sums of the batches before)."""
        progress = self._progress = _EpochProgress(skip, float(partial[0]), int(partial[1]), int(partial[2]), began)
        steps = len(loader)
        optimizer, scheduler = live.optimizer, live.scheduler
        seen_before, session_began = progress.seen, time.monotonic()
        if skip < steps:
            live.order.skip = skip
            batches = iter(loader)
            with _cpu_bf16_islands(self._model, runtime):
                for step in range(skip + 1, steps + 1):
                    # Checked before the batch is made: making it draws random numbers (augmentation), which a
                    # checkpoint written on stopping must not have drawn yet.
                    if self.stop.is_set():
                        raise _Stopped()
                    images, labels = next(batches)
                    images, labels = _to_device(images, labels, runtime, self.normalize)
                    n = labels.size(0)
                    report = activity is not None and (step == steps or activity.due(self.global_step + 1))
                    batch_loss, batch_correct, step_loss, pieces = self._train_step(
                        model, images, labels, criterion, optimizer, scaler, runtime, epoch, activity, report)
                    scheduler.step()
                    self.global_step += 1
                    progress.step = step
                    progress.loss += batch_loss
                    progress.correct += batch_correct
                    progress.seen += n
                    self.emit(StepEnded(live.index, epoch, step, steps, step_loss if pieces == 1 else batch_loss / n,
                                        head_lr(optimizer), (progress.seen - seen_before) / max(
                                            time.monotonic() - session_began, 1e-9)))
                    if activity is not None:
                        activity.step_ended()
                    if report:
                        self.emit(activity.event(epoch, self.global_step))
                    if step < steps and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_S:
                        self._save_mid_epoch()
            live.order.epoch_done()
        return progress.loss / max(progress.seen, 1), progress.correct / max(progress.seen, 1)

    def _train_step(self, model, images, labels, criterion, optimizer, scaler, runtime: Runtime, epoch: int,
                    activity: "_Activity | None" = None, report: bool = False):
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
        before = None
        if activity is not None and activity.wants(report):
            if scaler.is_enabled():
                scaler.unscale_(optimizer)  # true gradients; scaler.step() knows they are unscaled
            activity.add_gradients()
            if report:
                before = activity.snapshot()
        scaler.step(optimizer)
        scaler.update()
        if before is not None:
            activity.add_update(before)
        return batch_loss, batch_correct, step_loss, pieces

    # -- the run folder --------------------------------------------------------------------------------------

    def _create_run_dir(self, config: RunConfig, dataset: DatasetIndex, built, tree: LayerTree) -> None:
        self.run_dir = runs.create_run_dir(config.out, config.model.name, config.strategy, config.name)
        d = self.run_dir
        self._held.enter_context(runs.run_lock(d))

        def write():
            files.atomic_write_text(d / runs.CONFIG, dumps(config))
            files.atomic_write_json(d / runs.LABELS, list(dataset.classes))
            files.atomic_write_json(d / runs.DATASET, {
                "root": dataset.root, "layout": dataset.layout, "split_source": dataset.split_source,
                "classes": list(dataset.classes), "counts": dataset.counts(),
                "samples": [{"path": s.path, "label": s.label, "split": s.split} for s in dataset.samples],
                "health": dataset.health.to_dict()})
            files.atomic_write_json(d / runs.MODEL, {
                "model": config.model.name, "weights": config.model.weights, "weights_note": built.weights_note,
                "license": built.license, "head": built.head, "num_classes": len(dataset.classes),
                "data_config": built.data_config,
                "stages": [{"name": s.name, "params": s.params} for s in tree.stages]})
            self.summary_extra = {"model": config.model.name, "strategy": config.strategy,
                                  "weights": config.model.weights, "total_epochs": config.total_epochs}
            self._write_summary("running", None)

        self._write("the run's settings", write)

    def _write_summary(self, status: str, error: str | None) -> None:
        files.atomic_write_json(self.run_dir / runs.SUMMARY, {
            "status": status, "best_val_acc": self.best_acc, "best_epoch": self.best_epoch,
            "epochs_completed": self.epochs_completed, "error": error,
            "seconds": round(self._seconds(), 2), **self.summary_extra})

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
    order: "_Order"


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
def _cpu_bf16_islands(model: nn.Module, runtime: Runtime):
    """During bf16 autocast on the CPU, strided depthwise convolutions (MobileNet's and EfficientNet's downsampling
    blocks) compute in fp32: oneDNN's bf16 kernels for them train 2 to 5 times slower than its fp32 ones (measured
    backward passes on 2 cores, batch 16: 96 channels 3x3 at 112 pixels 78 against 36 ms, 144 channels 5x5 at 56
    pixels 85 against 16 ms), while every other convolution is as fast or faster in bf16. MobileNetV2 then trains
    at 52 pictures/s instead of 36 (fp32 throughout: 37). The modules' own ``forward`` is shadowed for the epoch and
    restored after it; the weights and what is saved do not change."""
    if runtime.amp_dtype != torch.bfloat16 or runtime.device.type != "cpu":
        yield
        return
    patched = [m for m in model.modules()
               if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels and max(m.stride) > 1
               and "forward" not in vars(m)]
    for module in patched:
        module.forward = types.MethodType(_fp32_forward, module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return type(self).forward(self, x.float())


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


def _rng_state() -> dict:
    """Python's, NumPy's and torch's random states (CUDA's too, once used), as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _where(completed: int, step: int) -> str:
    return f"at epoch {completed + 1}, step {step}" if step else f"after epoch {completed}"


class _Order(Sampler):
    """The batches of each epoch in a shuffled order (one ``randperm`` of the pictures per epoch, cut into batches),
    with a position that can be saved and resumed.

    The generator is the order's own (the loader has another for its processes' seeds), and each epoch draws from it
    exactly once, when its first batch is asked for: the order depends only on the seed and the epoch, whatever the
    number of loader processes and however far they read ahead."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int):
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.skip = 0  # batches to leave out of the next epoch (a resumed epoch's first ones)
        self.started: torch.Tensor | None = None  # the generator's state when the current epoch began

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        self.started = self.generator.get_state()
        skip, self.skip = self.skip, 0
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for i in range(skip, len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]

    def epoch_done(self) -> None:
        """Call when an epoch's batches were all trained (the loader may have drawn the order earlier)."""
        self.started = None

    def position(self) -> torch.Tensor:
        """The generator state to resume from: that of the current epoch's start, or of the next epoch's."""
        return self.started if self.started is not None else self.generator.get_state()


def _shuffled_loader(dataset, order: _Order, *, workers: int = 0, seed: int = 0, pin_memory: bool = False,
                     collate_fn=None) -> DataLoader:
    """engine.data.loaders.make_loader(shuffle=True), the batches coming from ``order``."""
    from engine.data.loaders import _one_thread

    extra = {"collate_fn": collate_fn} if collate_fn is not None else {}
    return DataLoader(dataset, batch_sampler=order, num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                      worker_init_fn=_one_thread if workers > 0 else None, **extra)


@dataclass
class _Live:
    """The phase being trained."""

    index: int
    phase: Phase
    optimizer: torch.optim.Optimizer
    scheduler: object
    order: _Order
    fast: bool  # trained on cached outputs
    rng: dict  # the random state the phase began with
    base: str | None = None  # the token of checkpoint-base.pt when the phase's checkpoints hold only what trains
    epochs_done: int = 0
    since_best: int = 0  # epochs without a better validation accuracy (early stopping)


@dataclass
class _EpochProgress:
    """The epoch being trained: batches done and their sums."""

    step: int
    loss: float
    correct: int
    seen: int
    began: float


class _Activity:
    """Per-stage gradient norms, averaged over the steps between two LayerActivity events, and the last step's
    update/weight ratio, for the phase's trained parameters (a frozen stage reports 0).

    Cheap by construction: one fused norm over all gradients per measured step (``torch._foreach_norm``, as in
    ``clip_grad_norm_``) summed into the stages on the device, no synchronisation until an event is made (one
    ``tolist()`` for all stages); the update ratio needs one copy of the trained weights, on the reporting steps only.
    Each step is measured unless measuring would take more than LAYER_ACTIVITY_SHARE of a step's time (tiny steps);
    then every n-th step is, and always the reporting step. Reports come every LAYER_ACTIVITY_EVERY steps but no more
    often than every LAYER_ACTIVITY_MIN_S seconds, and at the end of each epoch."""

    def __init__(self, model: nn.Module, tree: LayerTree, device: torch.device):
        self.stages = tuple(tree.names)
        where = {name: i for i, name in enumerate(self.stages)}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.index = torch.tensor([where[tree.stage_of_param(n)] for n, _ in named], dtype=torch.long,
                                  device=device)
        self.total = torch.zeros(len(self.stages), device=device)
        self.count = 0
        self.ratios: torch.Tensor | None = None
        self.measure_updates = True
        self.step_seconds: float | None = None  # a training step's duration (moving average)
        self.cost_seconds: float | None = None  # a measurement's duration (moving average)
        self.skipped = 0
        self._last = time.perf_counter()
        self._reported = -math.inf

    def due(self, step: int) -> bool:
        """Whether global step ``step`` (1-based) reports: every LAYER_ACTIVITY_EVERY steps, LAYER_ACTIVITY_MIN_S
        apart at least."""
        return step % LAYER_ACTIVITY_EVERY == 0 and time.perf_counter() - self._reported >= LAYER_ACTIVITY_MIN_S

    def step_ended(self) -> None:
        now = time.perf_counter()
        took, self._last = now - self._last, now
        self.step_seconds = took if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * took

    def wants(self, report: bool) -> bool:
        """Whether to measure this step: always when it reports, else as often as the time share allows."""
        if report or self.step_seconds is None or self.cost_seconds is None:
            self.skipped = 0
            return True
        stride = math.ceil(self.cost_seconds / (LAYER_ACTIVITY_SHARE * max(self.step_seconds, 1e-9)))
        if self.skipped + 1 >= min(stride, LAYER_ACTIVITY_EVERY):
            self.skipped = 0
            return True
        self.skipped += 1
        return False

    def _per_stage(self, tensors: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        norms = torch._foreach_norm(tensors)
        squares = torch.stack([x.float() for x in norms]).square()
        return torch.zeros(len(self.stages), device=squares.device).index_add_(0, index, squares).sqrt()

    def add_gradients(self) -> None:
        """After the backward pass (gradients unscaled): add this step's norm of each stage's gradients."""
        began = time.perf_counter()
        self._add_gradients()
        took = time.perf_counter() - began
        self.cost_seconds = took if self.cost_seconds is None else 0.9 * self.cost_seconds + 0.1 * took

    def _add_gradients(self) -> None:
        self.count += 1
        grads = [p.grad for p in self.params]
        index = self.index
        if any(g is None for g in grads):  # parameters the step did not reach
            keep = [i for i, g in enumerate(grads) if g is not None]
            grads = [grads[i] for i in keep]
            index = self.index[torch.tensor(keep, dtype=torch.long, device=self.index.device)]
        if grads:
            self.total += torch.nan_to_num(self._per_stage(grads, index), nan=0.0, posinf=0.0)

    def snapshot(self) -> list[torch.Tensor] | None:
        """The trained weights before the optimizer step (None when there is no memory to spare for them)."""
        if not self.measure_updates or not self.params:
            return None
        try:
            return [p.detach().clone() for p in self.params]
        except torch.OutOfMemoryError:
            self.measure_updates = False  # the gradient norms go on; the ratios are left out from now on
            return None

    def add_update(self, before: list[torch.Tensor]) -> None:
        """After the optimizer step: |w_before - w_after| / |w_before| for each stage."""
        weights = self._per_stage(before, self.index)
        torch._foreach_sub_(before, [p.detach() for p in self.params])
        self.ratios = self._per_stage(before, self.index) / weights.clamp_min(1e-12)

    def event(self, epoch: int, step: int) -> LayerActivity:
        n = len(self.stages)
        values = self.total / max(self.count, 1)
        if self.ratios is not None:
            values = torch.cat([values, self.ratios])
        out = values.tolist()  # the one synchronisation with the device
        self._reported = time.perf_counter()
        self.total.zero_()
        self.count = 0
        self.ratios = None
        return LayerActivity(epoch, step, self.stages, tuple(out[:n]), tuple(out[n:]))


def fit(config: RunConfig, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
        dataset: DatasetIndex | None = None) -> RunResult:
    """Run the experiment ``config`` describes. Never raises for a problem the user can fix: the result (and a
    ``Failed`` event) carries a sentence instead. ``stop.set()`` ends the run within one batch as ``stopped``."""
    return Trainer(config, on_event, stop).run(dataset)


def resume(run_dir: str | Path, on_event: EventCallback | None = None, stop: threading.Event | None = None, *,
           device: str | None = None, workers: int | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, with the settings of its config.toml (``device`` and
    ``workers`` may differ: the computer may have changed), in the same folder: metrics.jsonl is cut back to the
    epochs the checkpoint holds, so that each epoch appears once, and summary.json says 'running' again, then how
    the run ended. Never raises for a problem the user can fix: a run that completed, is still training elsewhere,
    or has no checkpoint gets a sentence (in the result and a ``Failed`` event), and its folder is left as it was.
    """
    return Trainer(None, on_event, stop).resume(Path(run_dir).expanduser(), device=device, workers=workers)


def result_json(result: RunResult) -> str:
    return json.dumps(dataclasses.asdict(result))
