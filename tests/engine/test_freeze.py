"""Each strategy's plan, pinned down: which parameters train, which BatchNorm layers stay in eval mode, and the
learning rate of each optimizer group."""

from __future__ import annotations

import math

import pytest
import torch.nn as nn

from engine.config import Phase, RunConfig, TrainConfig
from engine.errors import ConfigError
from engine.train.strategies import (LP_FT_LR_SCALE, SHALLOW_LR_MULT, apply_phase, param_groups, resolve_phases,
                           set_train_mode)
from engine.models.layers import build_layer_tree
from engine.models.build import build_model

LR = 0.01


@pytest.fixture(scope="module")
def resnet():
    built = build_model("timm:resnet18", "none", 3)
    return built.model, build_layer_tree(built.model, built.head)


@pytest.fixture(scope="module")
def mobilenet():
    built = build_model("torchvision:mobilenet_v2", "none", 3)
    return built.model, build_layer_tree(built.model, built.head)


def plan(strategy: str, tree, epochs: int = 4, **train):
    return resolve_phases(RunConfig(strategy=strategy, epochs=epochs, lr=LR, train=TrainConfig(**train)), tree)


def trained_stages(model, tree) -> set[str]:
    return {tree.stage_of_param(n) for n, p in model.named_parameters() if p.requires_grad}


def bn_training(model, tree) -> dict[str, set[bool]]:
    """For each stage, the training flags of its BatchNorm layers."""
    stages = tree.module_stages(model)
    out: dict[str, set[bool]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out.setdefault(stages[name], set()).add(module.training)
    return out


def group_lrs(model, tree, phase) -> dict[str, float]:
    lrs: dict[str, float] = {}
    for group in param_groups(model, tree, phase, weight_decay=0.05):
        assert lrs.setdefault(group["stage"], group["lr"]) == group["lr"]  # decay and no-decay groups agree
    return lrs


def apply(model, tree, phase):
    apply_phase(model, tree, phase)
    set_train_mode(model, tree, phase, tree.module_stages(model))


def test_feature_extraction_trains_only_the_head_with_frozen_statistics(resnet):
    model, tree = resnet
    (phase,) = plan("feature-extraction", tree)
    apply(model, tree, phase)
    assert trained_stages(model, tree) == {"head"}
    assert all(flags == {False} for flags in bn_training(model, tree).values())
    assert model.fc.training  # the head itself is in train mode
    assert group_lrs(model, tree, phase) == {"head": LR}


def test_fine_tune_shallow_trains_the_last_quarter_of_the_body(mobilenet):
    model, tree = mobilenet
    (phase,) = plan("fine-tune-shallow", tree)
    apply(model, tree, phase)
    body = [s.name for s in tree.body]
    assert len(body) == 19
    top = set(body[-math.ceil(19 / 4):])  # features.14 ... features.18
    assert top == {f"features.{i}" for i in range(14, 19)}
    assert trained_stages(model, tree) == top | {"head"}
    flags = bn_training(model, tree)
    assert all(flags[s] == {True} for s in top)  # BatchNorm adapts where the body retrains
    assert all(flags[s] == {False} for s in body if s not in top)
    lrs = group_lrs(model, tree, phase)
    assert lrs == {**{s: pytest.approx(LR * SHALLOW_LR_MULT) for s in top}, "head": LR}


def test_fine_tune_deep_trains_everything_with_layer_decay(resnet):
    model, tree = resnet
    (phase,) = plan("fine-tune-deep", tree, layer_decay=0.5)
    apply(model, tree, phase)
    assert all(p.requires_grad for p in model.parameters())
    assert tree.names == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    lrs = group_lrs(model, tree, phase)
    assert lrs == {"head": LR, "layer4": LR / 2, "layer3": LR / 4, "layer2": LR / 8, "layer1": LR / 16,
                   "stem": LR / 32}
    assert all(flags == {True} for flags in bn_training(model, tree).values())


def test_progressive_unfreezes_one_more_stage_per_phase(resnet):
    model, tree = resnet
    phases = plan("progressive", tree, epochs=7, layer_decay=0.5)
    assert len(phases) == 6  # head alone, then layer4, layer3, layer2, layer1, stem added one by one
    assert sum(p.epochs for p in phases) == 7
    expected = [["head"], ["layer4", "head"], ["layer3", "layer4", "head"]]
    for phase, stages in zip(phases, expected):
        apply(model, tree, phase)
        assert trained_stages(model, tree) == set(stages)
    assert set(phases[-1].stages) == set(tree.names)
    assert group_lrs(model, tree, phases[2]) == {"head": LR, "layer4": LR / 2, "layer3": LR / 4}
    assert phases[0].bn == "frozen" and phases[1].bn == "train"


def test_progressive_with_few_epochs_stops_unfreezing_early(resnet):
    _, tree = resnet
    phases = plan("progressive", tree, epochs=2)
    assert [set(p.stages) for p in phases] == [{"head"}, {"layer4", "head"}]


def test_lp_ft_probes_then_fine_tunes_everything_slower(mobilenet):
    model, tree = mobilenet
    probe, tune = plan("lp-ft", tree, epochs=5)
    assert (probe.epochs, tune.epochs) == (2, 3)
    apply(model, tree, probe)
    assert trained_stages(model, tree) == {"head"}
    assert all(flags == {False} for flags in bn_training(model, tree).values())
    apply(model, tree, tune)
    assert trained_stages(model, tree) == set(tree.names)
    assert all(lr == pytest.approx(LR * LP_FT_LR_SCALE) for lr in group_lrs(model, tree, tune).values())


def test_custom_phases_are_used_as_written(resnet):
    model, tree = resnet
    custom = (Phase("mine", 2, 0.1, {"layer2": 0.3, "head": 1.0}, bn="frozen"),)
    phases = resolve_phases(RunConfig(strategy="custom", phases=custom), tree)
    assert phases == custom
    apply(model, tree, phases[0])
    assert trained_stages(model, tree) == {"layer2", "head"}
    assert all(flags == {False} for flags in bn_training(model, tree).values())  # bn="frozen" everywhere
    assert group_lrs(model, tree, phases[0]) == {"layer2": pytest.approx(0.03), "head": 0.1}


def test_a_stage_the_model_does_not_have_is_refused(resnet):
    model, tree = resnet
    with pytest.raises(ConfigError, match="does not have"):
        apply_phase(model, tree, Phase("x", 1, 0.1, {"blocks.99": 1.0}))


def test_biases_and_norm_weights_get_no_weight_decay(resnet):
    model, tree = resnet
    (phase,) = plan("fine-tune-deep", tree)
    apply_phase(model, tree, phase)
    for group in param_groups(model, tree, phase, weight_decay=0.05):
        one_d = {p.ndim <= 1 for p in group["params"]}
        assert len(one_d) == 1
        assert group["weight_decay"] == (0.0 if one_d.pop() else 0.05)
