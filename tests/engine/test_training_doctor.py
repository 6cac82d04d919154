"""The training doctor: each verdict fires on a metrics history made to show it, and none on a healthy run."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.advise.training_doctor import Verdict, advise_run, apply_action, diagnose, read_advice
from engine.config import RunConfig

SETTINGS = {"epochs": 10, "lr": 0.001, "strategy": "feature-extraction", "augment": "light", "label_smoothing": 0.1,
            "early_stopping": 0}
BALANCED = {"ants": 120, "bees": 121}
BALANCED_RECALL = [{"name": "ants", "pictures": 70, "recall": 0.93}, {"name": "bees", "pictures": 83, "recall": 0.95}]
CALIBRATED = {"temperature": 1.05, "ece_before": 0.03, "ece_after": 0.02, "pictures": 153, "fitted": True}


def history(train_loss, val_loss, train_acc, val_acc):
    return [{"epoch": i + 1, "phase": "head", "train_loss": tl, "val_loss": vl, "train_acc": ta, "val_acc": va,
             "lr": 0.001} for i, (tl, vl, ta, va) in enumerate(zip(train_loss, val_loss, train_acc, val_acc))]


HEALTHY = history([0.90, 0.55, 0.42, 0.36, 0.33, 0.31, 0.30, 0.295, 0.29, 0.288],
                  [0.60, 0.40, 0.33, 0.30, 0.29, 0.285, 0.283, 0.282, 0.282, 0.281],
                  [0.70, 0.84, 0.88, 0.90, 0.91, 0.92, 0.92, 0.93, 0.93, 0.93],
                  [0.80, 0.88, 0.90, 0.91, 0.92, 0.92, 0.92, 0.92, 0.92, 0.92])


def kinds(records=HEALTHY, per_class=BALANCED_RECALL, counts=BALANCED, calibration=CALIBRATED, settings=SETTINGS):
    return [v.kind for v in diagnose(records, per_class=per_class, train_counts=counts, calibration=calibration,
                                     settings=settings)]


def test_a_healthy_run_gets_no_verdict():
    assert kinds() == []


def test_overfitting_fires_when_validation_loss_climbs_while_training_loss_falls():
    records = history([0.9, 0.5, 0.3, 0.2, 0.12, 0.08, 0.05, 0.04],
                      [0.6, 0.40, 0.35, 0.37, 0.42, 0.48, 0.55, 0.6],
                      [0.7, 0.85, 0.92, 0.95, 0.97, 0.99, 1.0, 1.0],
                      [0.8, 0.88, 0.90, 0.89, 0.88, 0.87, 0.86, 0.86])
    verdicts = diagnose(records, settings=SETTINGS)
    assert [v.kind for v in verdicts] == ["overfitting"]
    assert "epoch 3" in verdicts[0].evidence and verdicts[0].action["settings"] == {"augment": "strong"}


def test_underfitting_fires_when_even_the_training_pictures_are_not_learnt():
    records = history([1.6, 1.5, 1.45, 1.44, 1.44], [1.6, 1.52, 1.49, 1.49, 1.49],
                      [0.40, 0.45, 0.48, 0.49, 0.50], [0.42, 0.46, 0.47, 0.48, 0.48])
    verdicts = diagnose(records, settings=SETTINGS)
    assert [v.kind for v in verdicts] == ["underfitting"]
    assert verdicts[0].action["settings"] == {"strategy": "fine-tune-shallow"}


def test_not_converged_fires_when_the_last_epochs_still_improve():
    records = history([0.9, 0.7, 0.55, 0.45, 0.38], [0.8, 0.62, 0.50, 0.42, 0.36],
                      [0.80, 0.85, 0.88, 0.90, 0.91], [0.82, 0.85, 0.87, 0.89, 0.90])
    verdicts = diagnose(records, settings=SETTINGS)
    assert [v.kind for v in verdicts] == ["not_converged"]
    assert verdicts[0].action["settings"] == {"epochs": 20}


def test_unstable_fires_on_a_loss_spike():
    records = history([0.9, 0.5, 0.4, 1.3, 0.6, 0.35, 0.33, 0.32], [0.6, 0.4, 0.35, 0.9, 0.45, 0.33, 0.33, 0.33],
                      [0.7, 0.85, 0.9, 0.6, 0.8, 0.9, 0.91, 0.91], [0.8, 0.88, 0.9, 0.7, 0.86, 0.9, 0.9, 0.9])
    verdicts = diagnose(records, settings=SETTINGS)
    assert [v.kind for v in verdicts] == ["unstable"]
    assert "epoch 4" in verdicts[0].evidence and verdicts[0].action["settings"] == {"lr": 0.00033}


def test_a_class_with_too_few_pictures_is_named():
    verdicts = diagnose(HEALTHY, per_class=BALANCED_RECALL, train_counts={"ants": 120, "bees": 9},
                        settings=SETTINGS)
    assert [v.kind for v in verdicts] == ["few_pictures"]
    assert "'bees' (9)" in verdicts[0].evidence


def test_imbalance_fires_when_the_small_class_is_missed():
    per_class = [{"name": "ants", "recall": 0.97}, {"name": "bees", "recall": 0.60}, {"name": "wasps", "recall": 0.95}]
    counts = {"ants": 200, "bees": 40, "wasps": 180}
    assert kinds(per_class=per_class, counts=counts) == ["imbalance"]
    # The same imbalance with a well-recognised small class: nothing to say.
    fine = [dict(c, recall=0.94) for c in per_class]
    assert kinds(per_class=fine, counts=counts) == []


def test_over_and_under_confidence_follow_the_temperature():
    over = dict(CALIBRATED, temperature=1.8, ece_before=0.12)
    under = dict(CALIBRATED, temperature=0.6, ece_before=0.09)
    assert kinds(calibration=over) == ["overconfident"]
    assert kinds(calibration=under) == ["underconfident"]
    verdict = diagnose(HEALTHY, calibration=over, settings=SETTINGS)[0]
    assert verdict.action["settings"] == {"label_smoothing": 0.2}


def test_apply_action_changes_the_next_runs_settings():
    config = RunConfig(strategy="feature-extraction", epochs=10, lr=0.001)
    assert apply_action(config, {"settings": {"epochs": 20}}).epochs == 20
    assert apply_action(config, {"settings": {"augment": "strong"}}).train.augment == "strong"
    assert apply_action(config, {"settings": {"strategy": "fine-tune-shallow"}}).strategy == "fine-tune-shallow"
    assert apply_action(config, {"label": "Add pictures", "step": "data"}) == config


def test_advise_run_writes_the_verdicts_into_the_summary(tiny_run, tmp_path):
    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    verdicts = advise_run(run)
    summary = json.loads((run / "summary.json").read_text())
    assert [Verdict.from_dict(d) for d in summary["advice"]] == verdicts == read_advice(run)
    # Eight pictures a class: the doctor says so, with the evidence.
    few = [v for v in verdicts if v.kind == "few_pictures"]
    assert few and set(few[0].to_dict()) >= {"kind", "sentence", "evidence"}
