"""The frozen layers' outputs kept on disk (issue #23): a run stopped during the frozen pass resumes from what was
computed, a second run with the same frozen part reads them back, and a changed picture, other weights or another
preprocessing are computed again. Pictures passed through the frozen layers are counted."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

import engine.train.prefix
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.project import runs
from engine.train.store import FrozenStore, prefix_identity
from engine.train.trainer import fit, resume

MODEL = "timm:test_resnet"

pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy="feature-extraction", epochs=2, **train) -> RunConfig:
    train = TrainConfig(**{"batch_size": 4, "workers": 0, "warmup_epochs": 0.0, "augment": "none",
                           "precision": "fp32", "label_smoothing": 0.0, **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=epochs, lr=0.01, train=train, out=str(out))


class Counted(nn.Module):
    """The fast prefix, counting the pictures it is given."""

    def __init__(self, inner: nn.Module, counter: list[int]):
        super().__init__()
        self.inner, self.counter = inner, counter

    def forward(self, x):
        self.counter[0] += x.shape[0]
        return self.inner(x)


@pytest.fixture
def computed(monkeypatch) -> list[int]:
    """[pictures passed through the frozen layers]; batches of 4 and a Preparing event after each batch."""
    counter = [0]
    real = engine.train.prefix.feats.fast_prefix

    def counting(split, example, **kw):
        module, how = real(split, example, **kw)
        return Counted(module, counter), how

    monkeypatch.setattr(engine.train.prefix.feats, "fast_prefix", counting)
    monkeypatch.setattr(engine.train.prefix, "PREFIX_BATCH", {"cpu": 4})
    monkeypatch.setattr(engine.train.prefix, "PREPARING_EVERY_S", 0.0)
    return counter


class Recorder:
    def __init__(self, stop_when=None):
        self.events, self.stop, self.stop_when = [], threading.Event(), stop_when

    def __call__(self, event):
        self.events.append(event)
        if self.stop_when and self.stop_when(event):
            self.stop.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def store_folder() -> Path:
    """Where the store is in tests: beside the test's own picture cache (the quick_training fixture)."""
    return Path(os.environ["TRANSFER_STUDIO_CACHE"]) / "frozen"


def metrics(result) -> list[dict]:
    assert result.status == "completed", result.error
    lines = (Path(result.run_dir) / runs.METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.mark.parametrize("augment,views", [("none", 1), ("light", 2)])
def test_a_run_stopped_during_the_frozen_pass_resumes_from_the_stored_outputs(tiny_dataset, tmp_path, computed,
                                                                               augment, views):
    config = config_for(tiny_dataset, tmp_path / "runs", augment=augment, feature_views=views)
    total = 6 + 18 * views  # validation pictures, then each view of the training pictures
    whole = fit(config)
    reference = metrics(whole)
    shutil.rmtree(store_folder())  # the next run starts with an empty store
    computed[0] = 0

    first = Recorder(stop_when=lambda e: isinstance(e, ev.Preparing) and e.done >= 12)
    stopped = fit(config, first, first.stop)
    assert stopped.status == "stopped" and stopped.epochs_completed == 0
    done_before = computed[0]
    assert 12 <= done_before < total
    assert runs.resume_problem(stopped.run_dir) is None  # a checkpoint to resume from

    computed[0] = 0
    second = Recorder()
    done = resume(stopped.run_dir, second)
    assert done.status == "completed", done.error
    assert computed[0] == total - done_before  # what was computed before the stop is read back, not recomputed
    assert any(f"{done_before} of the {total} frozen layers' outputs were computed before" in e.message
               for e in second.of(ev.Log))
    assert metrics(done) == reference  # the same training as the uninterrupted run


def test_a_second_run_with_the_same_frozen_part_reads_them_back(tiny_dataset, tmp_path, computed):
    config = config_for(tiny_dataset, tmp_path / "runs")
    first = fit(config)
    assert computed[0] == 24
    computed[0] = 0
    rec = Recorder()
    second = fit(config, rec)
    assert computed[0] == 0
    assert metrics(second) == metrics(first)
    preparing = rec.of(ev.Preparing)
    assert preparing and (preparing[-1].done, preparing[-1].total) == (24, 24)
    # Fine-tuning its last stage on the same frozen stages after feature extraction: other stages, other outputs.
    computed[0] = 0
    fit(config_for(tiny_dataset, tmp_path / "runs", strategy="fine-tune-shallow"))
    assert computed[0] == 24


def test_stored_outputs_of_a_changed_picture_or_other_weights_are_not_used(tiny_dataset, tmp_path, computed):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    config = config_for(data, tmp_path / "runs")
    fit(config)
    picture = sorted((data / "red").glob("*.png"))[0]
    Image.new("RGB", (40, 32), (255, 255, 0)).save(picture)
    computed[0] = 0
    fit(config)
    assert computed[0] == 1  # only the changed picture

    computed[0] = 0
    weights = tmp_path / "weights.pt"
    torch.manual_seed(5)
    from engine.models.build import build_model

    torch.save(build_model(MODEL, "none", 3).model.state_dict(), weights)
    other = config_for(data, tmp_path / "runs")
    other = RunConfig(data=other.data, model=ModelConfig(MODEL, str(weights)), strategy=other.strategy,
                      epochs=other.epochs, lr=other.lr, train=other.train, out=other.out)
    result = fit(other)
    assert result.status == "completed", result.error
    assert computed[0] == 24  # other weights: everything again


def test_another_preprocessing_or_precision_has_other_keys():
    class Split:
        kind, frozen, output_shape, prefix = "head", ("stem",), (8,), nn.Linear(2, 2).requires_grad_(False)

    config = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
              "crop_pct": 0.875, "crop_mode": "center"}

    def key(data_config=config, precision="None", dtype=torch.float32):
        return FrozenStore(prefix_identity(MODEL, Split, precision, data_config, dtype), root="/nonexistent").key(
            "eval", "/p.png|1|2")

    assert key() == key()
    assert key(dict(config, input_size=(3, 160, 160))) != key()
    assert key(dict(config, interpolation="bicubic")) != key()
    assert key(dict(config, mean=(0.4,) * 3)) != key()
    assert key(precision="torch.float16", dtype=torch.float16) != key()
    with torch.no_grad():
        Split.prefix.weight.add_(1)
    assert key() != FrozenStore(prefix_identity(MODEL, Split, "None", config, torch.float32), "/x").key("eval", "")


def test_a_damaged_entry_is_computed_again(tiny_dataset, tmp_path, computed):
    config = config_for(tiny_dataset, tmp_path / "runs")
    first = fit(config)
    entries = sorted(store_folder().glob("*/*.npy"))
    assert len(entries) == 24
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # cut short by a crash
    computed[0] = 0
    second = fit(config)
    assert computed[0] == 1
    assert metrics(second) == metrics(first)


def test_the_store_keeps_under_its_size_limit(tiny_dataset, tmp_path, computed, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_FROZEN_CACHE_MAX_MB", "0")  # nothing may be kept
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path / "runs"), rec)
    assert result.status == "completed", result.error
    assert not list(store_folder().glob("*/*.npy"))
    assert any("do not fit under the store's size limit" in e.message for e in rec.of(ev.Log))


def test_evaluation_and_prediction_take_the_fast_path_with_the_same_results(tiny_run, tiny_run_data, monkeypatch):
    """Evaluation and prediction use training's fast path (ONNX Runtime on a CPU, pictures prepared ahead, the
    picture cache): the same probabilities as the plain model."""
    import engine.results.predict as predict

    bundle = predict.load_run_model(tiny_run, "cpu")
    paths = sorted(str(p) for p in Path(tiny_run_data).rglob("*.png"))
    monkeypatch.setattr(predict, "FAST_FROM", 10**9)
    plain, _ = predict.infer(bundle, paths)
    monkeypatch.setattr(predict, "FAST_FROM", 1)
    fast, errors = predict.infer(bundle, paths)
    assert bundle._fast is not bundle.model  # a faster module was made and checked
    assert errors == [None] * len(paths)
    assert fast == pytest.approx(plain, abs=1e-4)


def test_the_pass_for_the_unlike_score_and_drift_takes_the_fast_path_too(tiny_run, tiny_run_data, monkeypatch):
    """The pass that keeps each picture's penultimate features (the OOD flag of a prediction, the drift report,
    adaptation) runs on prediction's fast path, with the same logits and features as the plain model's hook."""
    import engine.results.predict as predict
    from engine.shift.features import run_pass

    bundle = predict.load_run_model(tiny_run, "cpu")
    paths = sorted(str(p) for p in Path(tiny_run_data).rglob("*.png"))
    monkeypatch.setattr(predict, "FAST_FROM", 10**9)
    plain = run_pass(bundle, paths)
    monkeypatch.setattr(predict, "FAST_FROM", 1)
    fast = run_pass(bundle, paths)
    made = bundle._fast_features
    assert not isinstance(made, predict._WithFeatures)  # a faster module was made and checked, not the hooked model
    assert plain.features is not None and plain.features.shape == fast.features.shape
    assert fast.logits == pytest.approx(plain.logits, abs=1e-4)
    assert fast.features == pytest.approx(plain.features, abs=1e-4)
    linear = predict.last_linear(bundle.model, bundle.head)
    assert plain.features.shape[1] == linear.in_features
