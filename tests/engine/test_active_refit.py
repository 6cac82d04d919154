"""Retrain in seconds: after a feature-extraction run, *Retrain* refits the head on the frozen layers' stored outputs,
passing only the newly labelled pictures through the frozen layers, and makes a normal run (it loads and predicts).
Other strategies keep the full retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_class_folders
from engine.active import read_labels, retrain, scan_pool
from engine.active.refit import HEAD_REFIT
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train import store as store_module
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("quick_training")


def _config(tmp_path, data, strategy="feature-extraction", augment="none") -> RunConfig:
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                     model=ModelConfig("timm:test_resnet", "none"), strategy=strategy, epochs=2,
                     train=TrainConfig(batch_size=8, workers=0, augment=augment, seed=0),
                     out=str(tmp_path / "runs"))


@pytest.fixture
def counted_puts(monkeypatch):
    """Every frozen-layer output computed is put into the store: counting the puts counts the outputs computed."""
    calls = []
    real = store_module.FrozenStore.put

    def put(self, key, output):
        calls.append(key)
        return real(self, key, output)

    monkeypatch.setattr(store_module.FrozenStore, "put", put)
    return calls


@pytest.mark.parametrize("augment", ["none", "light"])
def test_a_feature_extraction_retrain_refits_the_head_on_stored_outputs(tmp_path, tiny_dataset, counted_puts,
                                                                        augment):
    pool = scan_pool(make_class_folders(tmp_path / "pool", per_class=2, seed=5)).paths
    config = _config(tmp_path, tiny_dataset, augment=augment)
    first = fit(config)
    assert first.status == "completed", first.error
    computed_first = len(counted_puts)
    assert computed_first > 0  # the first run computed (and stored) every output
    labels = read_labels(tmp_path / "p-labels.csv")
    new = [p for p in pool if "/blue/" in p or "/red/" in p]
    for p in new:
        labels.set(p, Path(p).parent.name)
    counted_puts.clear()
    done = retrain(config, labels, start_run=first.run_dir)
    result, summary, round_ = done
    assert result.status == "completed", result.error
    assert done.refit is not None, "the feature-extraction retrain should refit the head on the stored outputs"
    views = done.refit.computed // len(new)
    # Only the newly labelled pictures passed through the frozen layers (each of their views); none stored before.
    assert done.refit.computed == len(counted_puts) == len(new) * views and views >= 1
    assert done.refit.read_back == computed_first
    assert "head refitted on stored outputs in" in done.refit.sentence()
    run = Path(result.run_dir)
    summary_json = json.loads((run / "summary.json").read_text())
    assert summary_json["status"] == "completed" and summary_json[HEAD_REFIT]["computed"] == len(new) * views
    assert "temperature" in json.loads((run / "model.json").read_text())
    trained = json.loads((run / "dataset.json").read_text())
    assert {s["path"] for s in trained["samples"] if s["split"] == "train"} >= set(new)
    assert round_ is not None and round_.val_accuracy == result.best_val_acc
    # A normal run: it loads and predicts.
    from engine.results.predict import load_run_model, predict_paths

    bundle = load_run_model(result.run_dir, "cpu")
    blue = sorted((tiny_dataset / "blue").glob("*.png"))
    predictions = predict_paths(bundle, [str(p) for p in blue])
    assert all(p.error is None and p.class_name in ("red", "green", "blue") for p in predictions)
    assert sum(p.class_name == "blue" for p in predictions) >= len(blue) // 2  # it learnt something

def test_other_strategies_keep_the_full_retrain(tmp_path, tiny_dataset, counted_puts):
    pool = scan_pool(make_class_folders(tmp_path / "pool", per_class=1, seed=5)).paths
    config = _config(tmp_path, tiny_dataset, strategy="fine-tune-deep")
    first = fit(config)
    assert first.status == "completed", first.error
    labels = read_labels(tmp_path / "p-labels.csv")
    labels.set(pool[0], Path(pool[0]).parent.name)
    done = retrain(config, labels, start_run=first.run_dir)
    assert done.result.status == "completed", done.result.error
    assert done.refit is None
    assert HEAD_REFIT not in json.loads((Path(done.result.run_dir) / "summary.json").read_text())


def test_without_stored_outputs_the_retrain_trains_the_normal_way(tmp_path, tiny_dataset, counted_puts):
    pool = scan_pool(make_class_folders(tmp_path / "pool", per_class=1, seed=5)).paths
    config = _config(tmp_path, tiny_dataset)
    labels = read_labels(tmp_path / "p-labels.csv")
    labels.set(pool[0], Path(pool[0]).parent.name)
    events = []
    done = retrain(config, labels, on_event=events.append)
    assert done.result.status == "completed", done.result.error
    assert done.refit is None
    assert any("trains the normal way" in getattr(e, "message", "") for e in events)
