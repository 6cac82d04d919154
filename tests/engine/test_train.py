"""Training end to end on a tiny generated dataset: the run folder, events, stopping, repeatability, failures."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import events as ev
from engine.project import runs
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load
from engine.models.build import build_model
from engine.train.trainer import fit

MODEL = "timm:resnet18"


def config_for(data, out, **overrides) -> RunConfig:
    train = TrainConfig(**{"batch_size": 8, "workers": 0, "warmup_epochs": 0.0, **overrides.pop("train", {})})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=overrides.pop("strategy", "feature-extraction"), epochs=overrides.pop("epochs", 2),
                     lr=overrides.pop("lr", 0.01), train=train, out=str(out), **overrides)


class Recorder:
    def __init__(self, stop_when=None):
        self.events = []
        self.stop = threading.Event()
        self.stop_when = stop_when

    def __call__(self, event):
        self.events.append(event)
        if self.stop_when and self.stop_when(event):
            self.stop.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def epoch_records(run_dir):
    return [json.loads(line) for line in (runs.Path(run_dir) / runs.METRICS).read_text().splitlines()]


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path_factory.mktemp("runs")), rec, rec.stop)
    return result, rec


def test_run_folder_holds_the_contract(finished_run, tiny_dataset):
    result, _ = finished_run
    assert result.status == "completed" and result.error is None
    d = runs.Path(result.run_dir)
    for name in (runs.CONFIG, runs.LABELS, runs.METRICS, runs.SUMMARY, runs.BEST, runs.MODEL, runs.DATASET):
        assert (d / name).is_file(), name
    assert json.loads((d / runs.LABELS).read_text()) == ["blue", "green", "red"]
    records = epoch_records(d)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "phase", "train_loss", "val_loss", "val_acc", "lr", "seconds"} <= r.keys()
        assert r["phase"] == "head"
    summary = json.loads((d / runs.SUMMARY).read_text())
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["epochs_completed"] == 2
    assert summary["best_val_acc"] == max(r["val_acc"] for r in records) == result.best_val_acc
    assert records[summary["best_epoch"] - 1]["val_acc"] == summary["best_val_acc"]
    # The resolved config spells out the phases, and the weights load back into the model.
    config = load(d / runs.CONFIG)
    assert config.phases and config.phases[0].stages == {"head": 1.0}
    assert config.data.source == str(tiny_dataset)
    model = build_model(MODEL, "none", 3).model
    model.load_state_dict(load_file(d / runs.BEST))


def test_events_are_plain_data_in_order(finished_run):
    _, rec = finished_run
    kinds = [type(e) for e in rec.events if not isinstance(e, (ev.Log, ev.StepEnded, ev.LayerActivity))]
    # Preparing: the frozen layers' outputs computed once before the phase trains (one or more, the last when done).
    kinds = [k for i, k in enumerate(kinds) if not (k is ev.Preparing and kinds[i + 1] is ev.Preparing)]
    assert kinds == [ev.RunStarted, ev.Preparing, ev.PhaseStarted, ev.EpochEnded, ev.EpochEnded, ev.Finished]
    steps = rec.of(ev.StepEnded)
    assert len(steps) == 2 * 2  # 18 training pictures, batches of 8, the last incomplete batch dropped
    plain = (int, float, str, bool, type(None))
    for event in rec.events:
        for value in dataclasses.asdict(event).values():
            items = value if isinstance(value, tuple) else (value,)
            assert all(isinstance(v, plain) for v in items), (event, value)


def test_feature_extraction_changes_only_the_head(tiny_dataset, tmp_path):
    torch.manual_seed(1)
    source = build_model(MODEL, "none", 3).model.state_dict()
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, weights)
    config = dataclasses.replace(config_for(tiny_dataset, tmp_path / "runs"), model=ModelConfig(MODEL, str(weights)))
    result = fit(config)
    best = load_file(runs.Path(result.run_dir) / runs.BEST)
    changed = {k for k in best if not torch.equal(best[k], source[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics included: the body is untouched


def test_fine_tuning_moves_the_body_and_its_batchnorm_statistics(tiny_dataset, tmp_path):
    torch.manual_seed(1)
    source = build_model(MODEL, "none", 3).model.state_dict()
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, weights)
    config = dataclasses.replace(config_for(tiny_dataset, tmp_path / "runs", strategy="fine-tune-shallow",
                                            epochs=1), model=ModelConfig(MODEL, str(weights)))
    result = fit(config)
    best = load_file(runs.Path(result.run_dir) / runs.BEST)
    changed = {k.split(".")[0] for k in best if not torch.equal(best[k], source[k])}
    assert changed == {"layer3", "layer4", "fc"}  # the last quarter of 5 body stages, rounded up: 2
    assert not torch.equal(best["layer4.0.bn1.running_mean"], source["layer4.0.bn1.running_mean"])


def test_stop_token_ends_the_run_within_one_batch(tiny_dataset, tmp_path):
    rec = Recorder(stop_when=lambda e: isinstance(e, ev.StepEnded))
    result = fit(config_for(tiny_dataset, tmp_path, epochs=3), rec, rec.stop)
    assert result.status == "stopped"
    assert len(rec.of(ev.StepEnded)) == 1
    assert rec.of(ev.Finished)[0].status == "stopped"
    summary = runs.read_summary(result.run_dir)
    assert summary["status"] == "stopped" and summary["epochs_completed"] == 0


def test_stopping_after_an_epoch_keeps_its_results(tiny_dataset, tmp_path):
    rec = Recorder(stop_when=lambda e: isinstance(e, ev.EpochEnded))
    result = fit(config_for(tiny_dataset, tmp_path, epochs=3), rec, rec.stop)
    assert result.status == "stopped" and result.epochs_completed == 1
    assert len(epoch_records(result.run_dir)) == 1
    assert (runs.Path(result.run_dir) / runs.BEST).is_file()
    assert runs.read_summary(result.run_dir)["best_epoch"] == 1


def test_same_seed_same_run_and_config_toml_repeats_it(tiny_dataset, tmp_path):
    config = config_for(tiny_dataset, tmp_path, train={"augment": "light"})
    first = fit(config)
    second = fit(config)
    repeat = fit(load(runs.Path(first.run_dir) / runs.CONFIG))
    assert len({first.run_dir, second.run_dir, repeat.run_dir}) == 3
    baseline = without_time(epoch_records(first.run_dir))
    assert without_time(epoch_records(second.run_dir)) == baseline
    assert without_time(epoch_records(repeat.run_dir)) == baseline
    other = fit(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=7)))
    assert without_time(epoch_records(other.run_dir)) != baseline


def test_lp_ft_runs_two_named_phases(tiny_dataset, tmp_path):
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, strategy="lp-ft", epochs=2), rec)
    assert result.status == "completed"
    assert [r["phase"] for r in epoch_records(result.run_dir)] == ["linear-probe", "fine-tune"]
    first, second = rec.of(ev.PhaseStarted)
    assert first.trainable_params < second.trainable_params == second.total_params
    assert second.lr == pytest.approx(0.001)


@pytest.mark.parametrize("train", [
    {"optimizer": "sgd", "schedule": "onecycle", "augment": "strong", "batch_size": 4},
    {"optimizer": "adamw", "schedule": "constant", "augment": "none", "warmup_epochs": 1.0, "label_smoothing": 0.0},
])
def test_optimizer_schedule_and_augmentation_choices_train(tiny_dataset, tmp_path, train):
    result = fit(config_for(tiny_dataset, tmp_path, epochs=1, train=train))
    assert result.status == "completed", result.error


def test_warm_up_then_cosine_reaches_the_set_rate_and_decays(tiny_dataset, tmp_path):
    rec = Recorder()
    fit(config_for(tiny_dataset, tmp_path, epochs=3, lr=0.02, train={"warmup_epochs": 1.0}), rec)
    lrs = [e.lr for e in rec.of(ev.StepEnded)]  # the rate after each step: 2 steps an epoch
    assert lrs[0] < lrs[1] == pytest.approx(0.02)
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4] > lrs[5]


def test_a_diverging_loss_fails_with_advice(tiny_dataset, tmp_path):
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, lr=1e30, train={"optimizer": "sgd"}), rec)
    assert result.status == "failed"
    assert "learning rate" in result.error
    assert rec.of(ev.Failed)[0].message == result.error
    summary = runs.read_summary(result.run_dir)
    assert summary["status"] == "failed" and summary["error"] == result.error


def test_early_stopping_ends_a_phase_without_progress(tiny_dataset, tmp_path, monkeypatch):
    import engine.train.loop

    monkeypatch.setattr(engine.train.loop, "evaluate_loader", lambda *a, **k: (1.0, 0.5))  # validation never improves
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, epochs=5, train={"early_stopping": 2}), rec)
    assert result.status == "completed" and result.epochs_completed == 3
    assert any("Early stopping" in e.message for e in rec.of(ev.Log))


def test_bad_input_fails_with_a_sentence_and_no_run_folder(tmp_path):
    rec = Recorder()
    result = fit(config_for(tmp_path / "nowhere", tmp_path / "runs"), rec)
    assert result.status == "failed" and result.run_dir is None
    assert "does not exist" in result.error
    assert rec.of(ev.Failed)[0].message == result.error
    assert not (tmp_path / "runs").exists()
