"""Freeze plans: strategies resolved into phases, applied to a model, and turned into optimizer parameter groups.

Each strategy is a short list of named rules over the layer tree's stages (input first, ``head`` last):

- feature-extraction: only the head trains; every BatchNorm keeps its pretrained statistics.
- fine-tune-shallow: the head and the last SHALLOW_SHARE of the body's stages train, the body at SHALLOW_LR_MULT.
- fine-tune-deep: everything trains; each stage further from the head learns ``layer_decay`` times slower.
- progressive: the head first, then one more stage (from the top down) each phase, with the same layer decay.
- lp-ft: a linear probe (head only, LP_SHARE of the epochs), then everything at LP_FT_LR_SCALE times the rate.
- lora: LoRA adapters (engine.train.lora) in the chosen stages (``config.lora.stages``; empty: every stage) train with
  the head; the pretrained weights stay frozen and every BatchNorm keeps its statistics. In a model that carries
  adapters, a trained body stage trains only its adapters (``apply_phase``); the head always trains fully.

A stage that does not train is frozen completely: no gradients, and its modules stay in eval mode (BatchNorm uses
its stored statistics, dropout is off), so a frozen stage computes exactly what it computed before training.
"""

from __future__ import annotations

import math

import torch.nn as nn

from engine.config import Phase, RunConfig
from engine.models.layers import HEAD, LayerTree

SHALLOW_SHARE = 0.25  # fine-tune-shallow: this share of the body's stages (at least one) trains with the head
SHALLOW_LR_MULT = 0.1  # ... at this multiple of the head's learning rate
LP_SHARE = 0.5  # lp-ft: this share of the epochs (at least one) trains the head alone
LP_FT_LR_SCALE = 0.1  # lp-ft: the second phase trains everything at this multiple of the learning rate
BN_WHEN_TRAINING_BODY = "train"  # strategies that retrain body stages let their BatchNorm statistics adapt


def decayed(stages: list[str], decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay: the head gets 1, the stage below it ``decay``, the next ``decay**2``, ..."""
    return {name: round(decay ** depth, 6) for depth, name in enumerate(reversed(stages))}


def resolve_phases(config: RunConfig, tree: LayerTree) -> tuple[Phase, ...]:
    """The phases a run trains: the config's own when it lists them, otherwise its strategy's."""
    if config.phases:
        return config.phases
    body = [s.name for s in tree.body]
    epochs, lr, decay = config.epochs, config.lr, config.train.layer_decay
    strategy = config.strategy
    if strategy == "feature-extraction":
        return (Phase("head", epochs, lr, {HEAD: 1.0}, bn="frozen"),)
    if strategy == "fine-tune-shallow":
        top = body[-max(1, math.ceil(SHALLOW_SHARE * len(body))):]
        stages = {name: SHALLOW_LR_MULT for name in top} | {HEAD: 1.0}
        return (Phase("shallow", epochs, lr, stages, bn=BN_WHEN_TRAINING_BODY),)
    if strategy == "fine-tune-deep":
        return (Phase("deep", epochs, lr, decayed(body + [HEAD], decay), bn=BN_WHEN_TRAINING_BODY),)
    if strategy == "progressive":
        count = min(epochs, len(body) + 1)  # one phase per added stage, as many as the epochs allow
        per, extra = divmod(epochs, count)
        phases = []
        for i in range(count):
            trained = body[len(body) - i:] if i else []
            phases.append(Phase(
                "head" if i == 0 else f"+{body[len(body) - i]}",
                per + (1 if i >= count - extra else 0),  # the remainder goes to the last, deepest phases
                lr,
                decayed(trained + [HEAD], decay),
                bn="frozen" if i == 0 else BN_WHEN_TRAINING_BODY,
            ))
        return tuple(phases)
    if strategy == "lp-ft":
        if epochs < 2:
            return (Phase("linear-probe", epochs, lr, {HEAD: 1.0}, bn="frozen"),)
        probe = min(epochs - 1, max(1, round(LP_SHARE * epochs)))
        return (
            Phase("linear-probe", probe, lr, {HEAD: 1.0}, bn="frozen"),
            Phase("fine-tune", epochs - probe, lr * LP_FT_LR_SCALE, {n: 1.0 for n in body + [HEAD]},
                  bn=BN_WHEN_TRAINING_BODY),
        )
    if strategy == "lora":
        from engine.train.lora import adapted_stages

        stages = adapted_stages(tree) or [name for name in body if not config.lora.stages or name in config.lora.stages]
        return (Phase("lora", epochs, lr, {name: 1.0 for name in stages} | {HEAD: 1.0}, bn="frozen"),)
    raise ValueError(f"no phases for strategy {strategy!r}")  # custom without phases is refused by validate()


def check_phase(phase: Phase, tree: LayerTree) -> None:
    from engine.errors import ConfigError

    unknown = [s for s in phase.stages if s not in tree.names]
    if unknown:
        raise ConfigError(f"Phase '{phase.name}' names a stage this model does not have ('{unknown[0]}'); "
                          f"its stages are: {', '.join(tree.names)}.")


def apply_phase(model: nn.Module, tree: LayerTree, phase: Phase) -> int:
    """Set ``requires_grad`` from the plan; returns the number of parameters that will train. In a model with LoRA
    adapters, a trained body stage trains its adapters only (engine.train.lora.trains)."""
    from engine.train.lora import trains

    check_phase(phase, tree)
    trainable = 0
    for name, param in model.named_parameters():
        stage = tree.stage_of_param(name)
        param.requires_grad_(stage in phase.stages and trains(name, stage, model))
        trainable += param.numel() if param.requires_grad else 0
    return trainable


def set_train_mode(model: nn.Module, tree: LayerTree, phase: Phase, module_stages: dict[str, str | None]) -> None:
    """``model.train()``, then eval mode for every module of a frozen stage, and for every BatchNorm when the
    phase's BatchNorm policy is ``frozen``. Call at the start of each training epoch."""
    model.train()
    for name, module in model.named_modules():
        stage = module_stages.get(name)
        frozen_stage = stage is not None and stage not in phase.stages
        frozen_bn = phase.bn == "frozen" and isinstance(module, nn.modules.batchnorm._BatchNorm)
        if frozen_stage or frozen_bn:
            module.training = False  # this module only: module.eval() would recurse into children


def param_groups(model: nn.Module, tree: LayerTree, phase: Phase, weight_decay: float) -> list[dict]:
    """One optimizer group per trained stage and decay kind, each with ``lr = phase.lr * multiplier``.

    Biases and normalisation weights (1-D tensors) get no weight decay, as in timm's param_groups_weight_decay.
    The groups are built over the whole model and frozen parameters dropped afterwards (cf. timm issue #2691), and
    the multiplier is applied here rather than through a scheduler's ``lr_scale``. Written by hand because timm's
    grouping knows only timm models' group_matcher, while our stages also cover torchvision models.
    """
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        stage = tree.stage_of_param(name)
        if stage not in phase.stages or not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias")
        key = (stage, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "stage": stage, "lr": phase.lr * phase.stages[stage],
                           "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(param)
    return list(groups.values())
