"""What the trainer reports through ``on_event``: plain dataclasses of numbers and strings, never tensors, so that
the window (on another thread) and the command line can show them without touching the engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    classes: tuple[str, ...]
    train_images: int
    val_images: int
    device: str
    total_epochs: int
    total_params: int


@dataclass(frozen=True)
class PhaseStarted:
    index: int  # 0-based
    name: str
    epochs: int
    lr: float
    trainable_params: int
    total_params: int
    stages: tuple[str, ...]  # the stages that train in this phase


@dataclass(frozen=True)
class StepEnded:
    phase: int
    epoch: int  # 1-based, counted over the whole run
    step: int  # 1-based within the epoch
    steps: int  # steps in this epoch
    loss: float
    lr: float
    images_per_s: float


@dataclass(frozen=True)
class EpochEnded:
    phase: int
    phase_name: str
    epoch: int
    total_epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    is_best: bool


@dataclass(frozen=True)
class LayerActivity:
    """How much each stage is learning: the mean gradient norm of its parameters over the last few steps (0 for a
    frozen stage), so that a user can see a frozen stage stay still and an unfrozen one move."""

    epoch: int
    step: int  # counted over the whole run
    stages: tuple[str, ...]  # input first, head last
    grad_norms: tuple[float, ...]


@dataclass(frozen=True)
class Log:
    level: str  # "info" or "warning"
    message: str


@dataclass(frozen=True)
class Finished:
    status: str  # "completed" or "stopped"
    run_dir: str
    best_val_acc: float | None
    best_epoch: int | None
    epochs_completed: int
    seconds: float


@dataclass(frozen=True)
class Failed:
    message: str  # one sentence for the user
    run_dir: str | None


Event = RunStarted | PhaseStarted | StepEnded | EpochEnded | LayerActivity | Log | Finished | Failed
