"""Evaluation and prediction read back the frozen layers' outputs that training stored (issue #23): after a
feature-extraction run, its validation pictures (and, without augmentation, its training pictures) are not passed
through the frozen layers again, the answers are the same as computing them, and a changed picture, another
strategy or an emptied store are computed as before. Pictures computed are counted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine.results.predict as predict
import engine.results.stored as stored
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.results.evaluate import evaluate_run
from engine.shift.features import run_pass
from engine.train.trainer import fit
from tests.engine.test_frozen_store import Counted  # the module counting the pictures it is given

MODEL = "timm:test_resnet"

pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy="feature-extraction", augment="none") -> RunConfig:
    train = TrainConfig(batch_size=4, workers=0, warmup_epochs=0.0, augment=augment, precision="fp32",
                        label_smoothing=0.0)
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=1, lr=0.01, train=train, out=str(out))


@pytest.fixture
def computed(monkeypatch) -> list[int]:
    """[pictures passed through the whole model by evaluation or prediction]."""
    counter = [0]
    real = predict._fast_model

    def counting(*args, **kw):
        module, with_features = real(*args, **kw)
        return Counted(module, counter), with_features

    monkeypatch.setattr(predict, "_fast_model", counting)
    monkeypatch.setattr(predict, "FAST_FROM", 1)
    return counter


def trained(data, out, **kw) -> Path:
    result = fit(config_for(data, out, **kw))
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def pictures(data) -> list[str]:
    return sorted(str(p) for p in Path(data).rglob("*.png"))


def computing_everything(bundle, paths, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(stored, "read_back", lambda *a, **k: None)
        return predict.infer_outputs(bundle, paths, **kw)


def test_after_feature_extraction_no_picture_is_computed_again(tiny_dataset, tmp_path, computed, monkeypatch):
    run = trained(tiny_dataset, tmp_path / "runs")
    bundle = predict.load_run_model(run, "cpu")
    paths = pictures(tiny_dataset)

    logits, features, errors = predict.infer_outputs(bundle, paths, features=True)
    assert computed[0] == 0  # every picture's frozen output was read back: only the head ran
    assert errors == [None] * len(paths)
    plain_logits, plain_features, _ = computing_everything(bundle, paths, monkeypatch, features=True)
    assert computed[0] == len(paths)
    assert logits == pytest.approx(plain_logits, abs=1e-4)
    assert features == pytest.approx(plain_features, abs=1e-4)

    computed[0] = 0
    result = evaluate_run(run)  # the validation pictures, read back
    assert computed[0] == 0
    assert len(result.splits["val"].samples) == 6
    with monkeypatch.context() as m:
        m.setattr(stored, "read_back", lambda *a, **k: None)
        again = evaluate_run(run)
    assert computed[0] == 6
    assert again.splits["val"].confusion == result.splits["val"].confusion
    assert again.splits["val"].ece == pytest.approx(result.splits["val"].ece, abs=1e-4)
    computed[0] = 0
    assert run_pass(bundle, paths).features.shape == plain_features.shape
    assert computed[0] == 0


def test_a_changed_picture_a_new_one_or_an_emptied_store_are_computed(tiny_dataset, tmp_path, computed,
                                                                       monkeypatch):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    run = trained(data, tmp_path / "runs")
    changed = pictures(data)[0]
    Image.new("RGB", (40, 32), (255, 255, 0)).save(changed)
    new = tmp_path / "new.png"
    Image.new("RGB", (40, 32), (0, 255, 255)).save(new)
    bundle = predict.load_run_model(run, "cpu")
    paths = pictures(data) + [str(new)]

    logits, _, _ = predict.infer_outputs(bundle, paths)
    assert computed[0] == 2  # the changed picture and the new one
    plain, _, _ = computing_everything(bundle, paths, monkeypatch)
    assert logits == pytest.approx(plain, abs=1e-4)

    cut = []
    real = stored._frozen_part
    monkeypatch.setattr(stored, "_frozen_part", lambda b: cut.append(b) or real(b))
    fresh = predict.load_run_model(run, "cpu")
    predict.infer_outputs(fresh, [str(new)] * 70)
    assert cut == []  # pictures the run never saw: the model is not even cut to look for them
    import os

    shutil.rmtree(Path(os.environ["TRANSFER_STUDIO_CACHE"]) / "frozen")
    computed[0] = 0
    predict.infer_outputs(predict.load_run_model(run, "cpu"), paths)
    assert computed[0] == len(paths)


def test_with_augmentation_only_the_validation_pictures_are_read_back(tiny_dataset, tmp_path, computed):
    run = trained(tiny_dataset, tmp_path / "runs", augment="light")
    bundle = predict.load_run_model(run, "cpu")
    paths = pictures(tiny_dataset)
    predict.infer_outputs(bundle, paths)
    assert computed[0] == 18  # the training pictures' stored outputs are of augmented views: not the saved model's


def test_a_run_that_fine_tuned_its_last_stage_reads_back_the_stages_below(tiny_dataset, tmp_path, computed,
                                                                            monkeypatch):
    run = trained(tiny_dataset, tmp_path / "runs", strategy="fine-tune-shallow")
    bundle = predict.load_run_model(run, "cpu")
    paths = pictures(tiny_dataset)
    logits, _, _ = predict.infer_outputs(bundle, paths)
    assert computed[0] == 0  # the frozen stages' outputs are stored; the trained stage and the head run on them
    plain, _, _ = computing_everything(bundle, paths, monkeypatch)
    assert logits == pytest.approx(plain, abs=1e-4)


def test_a_run_that_trained_every_layer_reads_nothing_back(tiny_dataset, tmp_path, computed):
    trained(tiny_dataset, tmp_path / "fe")  # its outputs are in the store, but they are not this run's frozen part
    run = trained(tiny_dataset, tmp_path / "runs", strategy="fine-tune-deep")
    bundle = predict.load_run_model(run, "cpu")
    logits, _, _ = predict.infer_outputs(bundle, pictures(tiny_dataset))
    assert computed[0] == 24
    assert np.isfinite(logits).all()
