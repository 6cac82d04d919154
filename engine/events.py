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
    resumed: bool = False  # the run continues from its checkpoint (engine.train.trainer.resume) in the same run folder
    epochs_done: int = 0  # epochs already complete when it (re)started: their records are in metrics.jsonl


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
    frozen stage), so that a user can see a frozen stage stay still and an unfrozen one move.

    Sent every few steps (engine.train.activity.LAYER_ACTIVITY_EVERY, at most 10 a second) and at the end of each epoch; the
    norms are the mean over the steps since the previous event (over every n-th of them when steps are so quick that
    measuring each would slow training by more than 1 %). ``update_ratios`` is the
    size of the last step's change of each stage's weights relative to the weights themselves (|dw| / |w|, 0 when
    frozen): unlike the gradient, it includes the stage's learning rate; around 1e-3 is typical of healthy training.
    """

    epoch: int
    step: int  # counted over the whole run
    stages: tuple[str, ...]  # input first, head last
    grad_norms: tuple[float, ...]
    update_ratios: tuple[float, ...] = ()  # same order as ``stages``; empty when it could not be measured


@dataclass(frozen=True)
class Preparing:
    """Work before an epoch can start, with its own progress: computing the frozen layers' outputs once (``what`` is a
    short phrase such as "computing the frozen layers once"). Sent at most a few times a second and when done."""

    what: str
    done: int  # pictures (or augmented views) done so far
    total: int
    seconds_left: float | None  # None until there is enough to estimate it


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


Event = RunStarted | PhaseStarted | Preparing | StepEnded | EpochEnded | LayerActivity | Log | Finished | Failed
