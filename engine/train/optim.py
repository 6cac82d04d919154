"""A phase's optimizer and learning-rate schedule, made from the run's settings and the phase's parameter groups
(engine.train.strategies.param_groups: one group per stage, each with its own learning rate)."""

from __future__ import annotations

import torch

from engine.config import Phase, RunConfig
from engine.models.layers import HEAD

WARMUP_START_FACTOR = 0.01  # linear warm-up starts at this share of each group's learning rate


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
    """The head's learning rate now (the one the events report), or the largest when no group is the head's."""
    for group in optimizer.param_groups:
        if group.get("stage") == HEAD:
            return float(group["lr"])
    return float(max(g["lr"] for g in optimizer.param_groups))
