"""The training loop: a phase epoch by epoch, an epoch step by step, then validation and the epoch's record.

``run_phase(session, run)`` trains one phase: ``Session`` holds what every phase of a run trains with, ``PhaseRun``
what this phase trains (its optimizer, modules and loaders). The stop token is checked before every batch
(``Stopped``). ``TrainStep`` is one optimizer step, ``evaluate_loader`` one pass over validation pictures; both take a
batch in pieces when memory runs short (``Backoff``). ``Order`` shuffles the batches of each epoch with a position that
a checkpoint saves, so that a resumed epoch continues with the same pictures in the same order.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from engine.config import TrainConfig
from engine.data.loaders import BatchNormalize, ImageDataset
from engine.errors import UserError
from engine.events import EpochEnded, Log, StepEnded
from engine.models.layers import LayerTree
from engine.train.activity import Activity, for_phase
from engine.train.checkpoint import NO_PARTIAL, Checkpointer, EpochProgress, Live, Mark, RunState
from engine.train.fastpath import FastPath
from engine.train.optim import head_lr
from engine.train.runtime import Runtime, cpu_bf16_islands
from engine.train.strategies import set_train_mode


class Stopped(Exception):
    """The stop token was set: the run ends as 'stopped'."""


class Listener:
    """``on_event``, timed: the seconds it kept the run waiting (the window's Pause) are not training time."""

    def __init__(self, on_event: Callable[[object], None] | None):
        self.listener = on_event or (lambda event: None)
        self.held = 0.0  # seconds the listener kept the run waiting

    def __call__(self, event) -> None:
        began = time.monotonic()
        self.listener(event)
        self.held += time.monotonic() - began


@dataclass
class Data:
    """The run's pictures, as datasets."""

    train: ImageDataset  # training pictures, training transform
    val: ImageDataset  # validation pictures, evaluation transform
    train_eval: ImageDataset  # training pictures, evaluation transform
    workers: int
    pin: bool


class Order(Sampler):
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


def shuffled_loader(dataset, order: Order, *, workers: int = 0, seed: int = 0, pin_memory: bool = False,
                    collate_fn=None) -> DataLoader:
    """engine.data.loaders.make_loader(shuffle=True), the batches coming from ``order``."""
    from engine.data.loaders import _one_thread

    extra = {"collate_fn": collate_fn} if collate_fn is not None else {}
    return DataLoader(dataset, batch_sampler=order, num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                      worker_init_fn=_one_thread if workers > 0 else None, **extra)


def to_device(images: torch.Tensor, labels: torch.Tensor, runtime: Runtime, normalize=None):
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
                    backoff: Backoff | None = None, normalize=None, criterion=None) -> tuple[float, float]:
    """Mean cross-entropy (without label smoothing) and accuracy over a loader, in eval mode; a ``criterion`` with
    ``evaluate_sums`` (several tasks: engine.train.multitask) computes both itself."""
    model.eval()
    backoff = backoff or Backoff(runtime)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            if stop is not None and stop.is_set():
                raise Stopped()
            images, labels = to_device(images, labels, runtime, normalize)
            with torch.autocast(runtime.device.type, dtype=runtime.amp_dtype or torch.float32,
                                enabled=runtime.amp_dtype is not None):
                logits = backoff.forward(model, images).float()
            if hasattr(criterion, "evaluate_sums"):
                loss_sum, right = criterion.evaluate_sums(logits, labels)
                total_loss, correct = total_loss + loss_sum, correct + right
                seen += labels.size(0)
                continue
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@dataclass
class Session:
    """What every phase of a run trains with; the Trainer makes one when the model and the run folder are ready."""

    model: nn.Module
    tree: LayerTree
    runtime: Runtime  # the run's: validation and the frozen layers' outputs use it
    train: TrainConfig
    state: RunState
    checkpoints: Checkpointer
    stop: threading.Event
    emit: Listener
    backoff: Backoff
    normalize: BatchNormalize | None  # 8-bit pictures normalised on the device (engine.data.loaders.BatchNormalize)
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    total_epochs: int
    model_name: str = ""  # the catalogue name: part of the keys of the frozen layers' stored outputs
    module_stages: dict[str, str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.module_stages = self.tree.module_stages(self.model)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(level, message))

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()


@dataclass
class PhaseRun:
    """What a phase trains: the model's modules it calls, its loaders, and its training steps' runtime."""

    live: Live
    fast: FastPath | None  # trained on the frozen prefix's outputs; None: the normal way
    train_module: Callable
    eval_module: Callable
    train_loader: object
    val_loader: object
    step_runtime: Runtime  # the training steps' (engine.train.runtime.step_runtime)
    resume_at: tuple[int, tuple] | None = None  # a resumed epoch: batches already trained, their sums


@dataclass
class TrainStep:
    """One optimizer step on a batch, in pieces when memory ran short earlier (``backoff``)."""

    model: Callable
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    runtime: Runtime
    backoff: Backoff

    def __call__(self, images, labels, epoch: int, activity: Activity | None = None, report: bool = False):
        """Returns (summed loss, correct predictions, the loss, pieces used)."""
        n = labels.size(0)
        optimizer, scaler = self.optimizer, self.scaler
        while True:
            # The batch in pieces when memory ran short earlier: each piece's loss is weighted by its share of the
            # batch, so the summed gradients are those of the whole batch.
            pieces = min(self.backoff.pieces, n)
            try:
                optimizer.zero_grad(set_to_none=True)
                batch_loss, batch_correct = 0.0, 0
                for x, y in zip(images.tensor_split(pieces), labels.tensor_split(pieces)):
                    with torch.autocast(self.runtime.device.type, dtype=self.runtime.amp_dtype or torch.float32,
                                        enabled=self.runtime.amp_dtype is not None):
                        logits = self.model(x)
                        loss = self.criterion(logits.float(), y)
                    if not torch.isfinite(loss):
                        raise UserError(f"The training loss became {loss.item()} (it diverged) in epoch {epoch}: "
                                        f"lower the learning rate (for example to {head_lr(optimizer) / 10:.2g}) "
                                        "and start again.")
                    scaler.scale(loss if pieces == 1 else loss * (y.size(0) / n)).backward()
                    step_loss = loss.item()
                    batch_loss += step_loss * y.size(0)
                    # (distillation's targets are rows of class, picture, labelled: engine.train.distillation)
                    batch_correct += (self.criterion.correct(logits, y) if hasattr(self.criterion, "correct") else
                                      (logits.argmax(1) == (y if y.dim() == 1 else y[:, 0])).sum().item())
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


def run_phase(s: Session, run: PhaseRun) -> None:
    """Train the phase's remaining epochs (from ``run.resume_at`` when resumed), validating and recording each;
    early stopping may end it sooner."""
    live = run.live
    activity = for_phase(s.model, s.tree, s.runtime.device)
    s.checkpoints.last = time.monotonic()
    resume_at = run.resume_at
    while live.epochs_done < live.phase.epochs:
        s.state.epoch += 1
        skip, partial = resume_at or (0, NO_PARTIAL)
        resume_at = None
        began = time.monotonic() - float(partial[3])
        set_train_mode(s.model, s.tree, live.phase, s.module_stages)
        if run.fast is not None:
            run.fast.begin_epoch(s.state.epoch)
        progress = EpochProgress(skip, float(partial[0]), int(partial[1]), int(partial[2]), began)
        train = train_epoch(s, run, progress, activity)
        val = evaluate_loader(run.eval_module, run.val_loader, s.runtime, s.stop, backoff=s.backoff,
                              normalize=s.normalize, criterion=s.criterion)
        if _end_epoch(s, live, began, train, val):
            break


def _end_epoch(s: Session, live: Live, began: float, train: tuple[float, float], val: tuple[float, float]) -> bool:
    """The epoch's checkpoint, record, best weights, metrics and summary, and its event; whether early stopping
    ends the phase."""
    state, phase, epoch = s.state, live.phase, s.state.epoch
    (train_loss, train_acc), (val_loss, val_acc) = train, val
    improved = state.best_acc is None or val_acc > state.best_acc or (
        val_acc == state.best_acc and val_loss < state.best_loss)
    best = (val_acc, val_loss, epoch) if improved else state.best
    task_best, model_is_best, extra = getattr(s.criterion, "task_best", None), improved, {}
    if task_best is not None:  # several tasks: their figures, and a best epoch per task (engine.train.task_fit)
        improved, best, extra, model_is_best = task_best.end_epoch(epoch, s.criterion.take_tally(), improved, best)
    seconds = time.monotonic() - began
    lr = head_lr(live.optimizer)
    record = {"epoch": epoch, "phase": phase.name, "train_loss": train_loss, "train_acc": train_acc,
              "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": round(seconds, 3), **extra}
    since_best = 0 if improved else live.since_best + 1
    patience = s.train.early_stopping
    early = bool(patience) and since_best >= patience and epoch < s.total_epochs
    phase_done = early or live.epochs_done + 1 >= phase.epochs
    # The checkpoint first: it holds this epoch's record and weights, so that whatever happens to the
    # files written after it, a resumed run rewrites them from the checkpoint.
    s.checkpoints.save(Mark(completed=epoch, step=0, partial=NO_PARTIAL, records=state.records + [record], best=best,
                            since_best=since_best, phase_epochs=live.epochs_done + 1, phase_done=phase_done,
                            best_is_model=model_is_best))
    live.epochs_done += 1
    live.since_best = since_best
    state.records.append(record)
    folder = s.checkpoints.folder
    if improved:
        folder.save_best(s.model) if task_best is None else task_best.save_best(folder, s.model)
    state.best_acc, state.best_loss, state.best_epoch = best
    folder.append_metrics(record)
    state.epochs_completed = epoch
    folder.write_running()
    s.emit(EpochEnded(live.index, phase.name, epoch, s.total_epochs, train_loss, train_acc, val_loss, val_acc, lr,
                      seconds, improved))
    if early:
        s.log(f"Early stopping: no better validation accuracy for {patience} epochs; ending phase '{phase.name}'.")
    return early


def train_epoch(s: Session, run: PhaseRun, progress: EpochProgress,
                activity: Activity | None) -> tuple[float, float]:
    """Train one epoch (from batch ``progress.step + 1`` when resumed, with ``progress`` holding the sums of the
    batches before); returns the epoch's mean loss and accuracy."""
    s.state.progress = progress
    live, state, epoch = run.live, s.state, s.state.epoch
    steps = len(run.train_loader)
    step_once = TrainStep(run.train_module, s.criterion, live.optimizer, s.scaler, run.step_runtime, s.backoff)
    seen_before, session_began, held_before = progress.seen, time.monotonic(), s.emit.held
    if progress.step < steps:
        live.order.skip = progress.step
        batches = iter(run.train_loader)
        with cpu_bf16_islands(s.model, run.step_runtime):
            for step in range(progress.step + 1, steps + 1):
                # Checked before the batch is made: making it draws random numbers (augmentation), which a
                # checkpoint written on stopping must not have drawn yet.
                s.check_stop()
                images, labels = next(batches)
                images, labels = to_device(images, labels, run.step_runtime, s.normalize)
                n = labels.size(0)
                report = activity is not None and (step == steps or activity.due(state.global_step + 1))
                batch_loss, batch_correct, step_loss, pieces = step_once(images, labels, epoch, activity, report)
                live.scheduler.step()
                state.global_step += 1
                progress.step = step
                progress.loss += batch_loss
                progress.correct += batch_correct
                progress.seen += n
                training = time.monotonic() - session_began - (s.emit.held - held_before)
                s.emit(StepEnded(live.index, epoch, step, steps, step_loss if pieces == 1 else batch_loss / n,
                                 head_lr(live.optimizer), (progress.seen - seen_before) / max(training, 1e-9)))
                if activity is not None:
                    activity.step_ended()
                if report:
                    s.emit(activity.event(epoch, state.global_step))
                if step < steps and s.checkpoints.due():
                    s.checkpoints.save_mid_epoch()
        live.order.epoch_done()
    return progress.loss / max(progress.seen, 1), progress.correct / max(progress.seen, 1)
