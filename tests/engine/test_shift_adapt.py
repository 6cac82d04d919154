"""Adaptation without labels (engine.shift.adapt) and the drift report (engine.shift.drift): AdaBN changes only
BatchNorm running statistics, the adapted run is a run folder linked to its parent that evaluates, predicts and
exports unchanged, adaptation is refused with a reason when it is not expected to help, a model without BatchNorm
gets a sentence, and the drift report tells a shifted folder from one like the training pictures."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import load
from engine.errors import UserError
from engine.results.predict import expand_paths, load_run_model
from engine.shift import adapt as adapt_mod
from engine.shift import drift as drift_mod
from engine.shift import ood as ood_mod
from tests.engine.shift_support import copy_pictures, invert, train_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("shift-adapt"))


@pytest.fixture(scope="module")
def bundle(run):
    return load_run_model(run, device="cpu")


@pytest.fixture(scope="module")
def shifted(run, tmp_path_factory) -> Path:
    """The validation pictures with their colours inverted, twice over (90 pictures), no class folders."""
    return copy_pictures(run, tmp_path_factory.mktemp("inverted") / "new", invert, times=2)


@pytest.fixture(scope="module")
def alike(run, tmp_path_factory) -> Path:
    return copy_pictures(run, tmp_path_factory.mktemp("alike") / "same", times=2)


def test_adabn_changes_only_batchnorm_running_statistics(bundle, shifted):
    model = copy.deepcopy(bundle.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    paths = [p for p, _ in expand_paths([shifted])]
    layers, total, weight = adapt_mod.adabn(model, bundle, paths)
    assert (layers, total) == (math.ceil(adapt_mod.DEPTH * total), 15)
    assert weight == pytest.approx(len(paths) / (len(paths) + adapt_mod.PRIOR))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("running_mean", "running_var")) for k in changed)
    chosen = {id(m) for m in adapt_mod.batchnorm_layers(model)[:layers]}
    names = {n for n, m in model.named_modules() if id(m) in chosen}
    assert {k.rsplit(".", 1)[0] for k in changed} <= names  # only the adapted layers
    assert not model.training


def test_adapted_run_is_linked_and_evaluates_predicts_and_exports(run, shifted, tmp_path):
    from engine.results.evaluate import evaluate_run
    from engine.results.export import export_run
    from engine.results.predict import predict_paths

    result = adapt_mod.adapt_run(run, shifted, "tent", tmp_path / "adapted", device="cpu", tent_epochs=1)
    new = Path(result.run_dir)
    assert new.parent == tmp_path / "adapted" and new != run
    config = load(new / "config.toml")
    assert config.adapted_from == str(run) and config.adapted_data == str(shifted) and config.adapted_method == "tent"
    assert json.loads((new / "summary.json").read_text())["status"] == "completed"
    assert json.loads((new / "model.json").read_text())["adaptation"]["method"] == "tent"
    # Its weights differ from the parent's in BatchNorm only (TENT: statistics, scale and shift).
    a, b = load_run_model(run, "cpu").model.state_dict(), load_run_model(new, "cpu").model.state_dict()
    bn = {n for n, m in load_run_model(new, "cpu").model.named_modules()
          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and {k.rsplit(".", 1)[0] for k in changed} <= bn
    evaluation = evaluate_run(new, device="cpu")
    assert evaluation.splits["val"].count == 45
    rows = predict_paths(load_run_model(new, "cpu"), [shifted])
    assert len(rows) == 90 and all(r.error is None for r in rows)
    export_run(new, "bundle", tmp_path / "export")
    assert load_run_model(tmp_path / "export", "cpu").classes == ("blue", "green", "red")
    assert "Adapted to 90 new pictures" in result.sentence()


def test_no_drift_no_adaptation(run, alike, tmp_path):
    with pytest.raises(adapt_mod.NotExpectedToHelp, match="not expected to help"):
        adapt_mod.adapt_run(run, alike, "adabn", tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())  # no run folder written


def test_too_few_pictures_are_refused(run, tmp_path):
    few = copy_pictures(run, tmp_path / "few", invert)
    for p in sorted(few.iterdir())[20:]:
        p.unlink()
    with pytest.raises(UserError, match="at least 32"):
        adapt_mod.adapt_run(run, few, "adabn", tmp_path / "out", device="cpu")


def test_a_model_without_batchnorm_gets_a_sentence(tmp_path_factory, tmp_path):
    vit = train_run(tmp_path_factory.mktemp("vit"), "timm:test_vit", per_class=6)
    with pytest.raises(adapt_mod.NoBatchNorm) as caught:
        adapt_mod.adapt_run(vit, tmp_path, "adabn", device="cpu")
    assert "has no BatchNorm layers" in str(caught.value) and "Adapt with labels" in str(caught.value)


def test_drift_report_tells_shifted_pictures_from_alike_ones(bundle, shifted, alike):
    ood = ood_mod.ensure(bundle)
    moved = drift_mod.drift_report(bundle, shifted, ood)
    same = drift_mod.drift_report(bundle, alike, ood)
    assert moved.verdict == "strong" and moved.flagged_share > 0.5 and moved.domain_auc > 0.9
    assert same.verdict == "none" and same.flagged_share < 0.15 and same.domain_auc < 0.65
    d = moved.to_dict()
    assert {"flagged_share", "expected_share", "domain_auc", "class_mix", "class_mix_shift", "verdict",
            "sentence"} <= set(d)
    assert d["sentence"].startswith("Strong drift") and "expected" in d["sentence"]
    h = moved.histogram()
    assert len(h["edges"]) == len(h["new"]) + 1 and sum(h["new"]) == pytest.approx(1.0)


def test_binomial_tail_matches_the_sum():
    n, p = 30, 0.05
    exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(4, n + 1))
    assert drift_mod.binomial_tail(4, n, p) == pytest.approx(exact)
    assert drift_mod.binomial_tail(0, n, p) == 1.0


def test_adapt_with_labels_compares_both_models_on_held_out_pictures(run, tmp_path):
    labelled = copy_pictures(run, tmp_path / "labelled", invert, by_class=True, times=2)
    result = adapt_mod.adapt_with_labels(run, labelled, epochs=1, out=tmp_path / "runs", device="cpu")
    assert result.status == "completed" and result.pictures == 27  # 30 % of 90, class by class
    assert 0 <= result.before <= 1 and 0 <= result.after <= 1
    config = load(Path(result.run_dir) / "config.toml")
    assert config.adapted_method == "labels" and config.adapted_from == str(run)
    assert config.model.weights == str(run / "best.safetensors")
    assert result.keep == ("adapted" if result.after >= result.before else "original")
    assert f"On {result.pictures} labelled new pictures" in result.sentence()


def test_adapt_with_labels_needs_the_models_classes(run, tmp_path):
    wrong = copy_pictures(run, tmp_path / "wrong", by_class=True)
    (wrong / "red").rename(wrong / "purple")
    with pytest.raises(UserError, match="sub-folders named like the model's classes"):
        adapt_mod.adapt_with_labels(run, wrong, epochs=1, device="cpu")


def test_tent_that_collapses_the_predictions_is_refused(run, shifted, tmp_path, monkeypatch):
    def collapsing_tent(model, bundle, paths, **kwargs):  # what a runaway entropy minimisation does
        head = model.get_submodule(bundle.head)
        with torch.no_grad():
            head.bias[0] += 1e4

    monkeypatch.setattr(adapt_mod, "tent", collapsing_tent)
    with pytest.raises(adapt_mod.NotExpectedToHelp, match="TENT was not kept"):
        adapt_mod.adapt_run(run, shifted, "tent", tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())
