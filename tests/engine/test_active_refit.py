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


def test_a_refit_computes_and_calibrates_as_a_pass_over_the_pictures_would(tmp_path, monkeypatch):
    """The refit takes shortcuts -- the new pictures through the run's fast frozen layers (ONNX Runtime on the CPU),
    the temperature fitted on stored outputs instead of on the pictures -- yet the user gets the same numbers: the
    new pictures' stored outputs are the features the finished model computes from those pictures, and the
    temperature is the one fitted on the validation pictures' logits computed from the pictures themselves."""
    import numpy as np
    import torch

    from engine.results.predict import infer_outputs, load_run_model
    from engine.train.calibrate import calibrate
    from engine.train.store import picture_key

    pool = scan_pool(make_class_folders(tmp_path / "pool", per_class=2, seed=5)).paths
    data = make_class_folders(tmp_path / "data", per_class=28, seed=3)  # 21 validation pictures: a temperature fits
    for source, target in (("red", "green"), ("green", "blue"), ("blue", "red")):  # some mistakes to calibrate on
        for picture in sorted((data / source).glob("*.png"))[:6]:
            picture.rename(data / target / f"from-{source}-{picture.name}")
    config = _config(tmp_path, data)
    first = fit(config)
    assert first.status == "completed", first.error
    puts = {}
    real = store_module.FrozenStore.put

    def put(self, key, output):
        puts[key] = (self, output.clone())
        return real(self, key, output)

    monkeypatch.setattr(store_module.FrozenStore, "put", put)
    labels = read_labels(tmp_path / "p-labels.csv")
    for p in pool:
        labels.set(p, Path(p).parent.name)
    done = retrain(config, labels, start_run=first.run_dir)
    assert done.result.status == "completed", done.result.error
    assert done.refit is not None and done.refit.computed == len(pool)
    bundle = load_run_model(done.result.run_dir, "cpu")
    import engine.results.stored

    # From the pictures themselves, not from the outputs the store holds (engine.results.stored).
    monkeypatch.setattr(engine.results.stored, "read_back", lambda *a, **k: None)
    # The new pictures' outputs, against the finished model's features of the same pictures (its head's input).
    _, features, errors = infer_outputs(bundle, pool, features=True, use_cache=False)
    assert features is not None and not any(errors)
    store = next(iter(puts.values()))[0]
    stored = np.stack([puts[store.key("eval", picture_key(p))][1].float().numpy() for p in pool])
    np.testing.assert_allclose(stored, features, rtol=1e-3, atol=1e-4)
    # The temperature, against one fitted on the validation pictures' logits computed from the pictures.
    run = Path(done.result.run_dir)
    val = [s for s in json.loads((run / "dataset.json").read_text())["samples"] if s["split"] == "val"]
    logits, _, errors = infer_outputs(bundle, [s["path"] for s in val], use_cache=False)
    assert not any(errors)
    truth = torch.as_tensor([s["label"] for s in val])
    from_pictures = calibrate(torch.from_numpy(logits), truth)
    assert from_pictures.fitted and from_pictures.temperature != pytest.approx(1.0, abs=1e-3)
    from_pictures = from_pictures.temperature
    assert json.loads((run / "model.json").read_text())["temperature"] == pytest.approx(from_pictures, rel=1e-3)
