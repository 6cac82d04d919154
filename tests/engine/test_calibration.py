"""Calibrated confidence: temperature scaling fitted at the end of a run, applied to every confidence the app shows
or writes (prediction, evaluation, exports)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.calibrate import apply_temperature, calibrate, fit_temperature, nll
from conftest import make_class_folders

pytestmark = pytest.mark.usefixtures("quick_training")


def _overconfident(n=600, classes=4, scale=3.0, seed=0):
    """Logits whose softmax is ``scale`` times too sharp: labels drawn from softmax(true), logits = scale * true."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(true.softmax(1), 1, generator=g).squeeze(1)
    return true * scale, labels


def test_temperature_recovers_the_sharpening_and_lowers_nll_without_changing_a_prediction():
    logits, labels = _overconfident(scale=3.0)
    t = fit_temperature(logits, labels)
    assert 2.3 < t < 3.8  # the logits were 3 times too sharp
    assert nll(logits, labels, t) < nll(logits, labels) - 0.1
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))
    result = calibrate(logits, labels)
    assert result.fitted and result.ece_after < result.ece_before


def test_too_few_pictures_leave_the_temperature_at_one():
    logits, labels = _overconfident(n=10)
    result = calibrate(logits, labels)
    assert not result.fitted and result.temperature == 1.0


def test_apply_temperature_to_probabilities_equals_dividing_the_logits():
    logits, _ = _overconfident(n=20)
    probs = logits.softmax(1).numpy()
    probs[3] = np.nan  # an unreadable picture's row
    calibrated = apply_temperature(probs, 2.0)
    expected = (logits / 2.0).softmax(1).numpy()
    assert np.allclose(np.delete(calibrated, 3, 0), np.delete(expected, 3, 0), atol=1e-5)
    assert np.isnan(calibrated[3]).all()


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A run with enough validation pictures (30) for a temperature to be fitted."""
    root = tmp_path_factory.mktemp("calibrated")
    data = make_class_folders(root / "colours", per_class=20, seed=3)
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.5), model=ModelConfig("timm:test_resnet", "none"),
                       strategy="fine-tune-deep", epochs=2, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, augment="none"), out=str(root / "runs"))
    from engine.train.trainer import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(config)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "completed", result.error
    return result.run_dir


def test_a_completed_run_records_its_temperature_and_evaluation_reports_ece_before_and_after(calibrated_run):
    from engine.project import runs
    from engine.results.evaluate import evaluate_run, load_evaluation
    from engine.results.predict import infer, load_run_model

    info = json.loads((Path(calibrated_run) / runs.MODEL).read_text())
    summary = runs.read_summary(calibrated_run)
    t = info["temperature"]
    assert t > 0 and t != 1.0
    cal = summary["calibration"]
    assert cal["temperature"] == pytest.approx(t) and cal["nll_after"] < cal["nll_before"]
    assert {c["name"] for c in summary["val_per_class"]} == {"red", "green", "blue"}

    evaluation = evaluate_run(calibrated_run, device="cpu")
    split = evaluation.splits["val"]
    bundle = load_run_model(calibrated_run, "cpu")
    paths = [s.path for s in split.samples]
    raw, _ = infer(bundle, paths, temperature=1.0)
    calibrated, _ = infer(bundle, paths)
    assert bundle.temperature == pytest.approx(t)
    # The same predictions, hence the same accuracy; other confidences.
    assert np.array_equal(raw.argmax(1), calibrated.argmax(1))
    assert split.accuracy == pytest.approx(float(np.mean(raw.argmax(1) == [s.label for s in split.samples])))
    assert [s.confidence for s in split.samples] == pytest.approx(calibrated.max(1).tolist(), abs=1e-6)
    assert not np.allclose(raw.max(1), calibrated.max(1))
    saved = json.loads(Path(evaluation.path).read_text())["splits"]["val"]
    assert saved["ece_after"] == saved["ece"] and saved["ece_before"] is not None
    assert saved["temperature"] == pytest.approx(t)
    assert load_evaluation(calibrated_run).splits["val"].ece_before == pytest.approx(saved["ece_before"])


@pytest.fixture(scope="module")
def hot_run(tiny_run, tmp_path_factory):
    """The tiny run with a temperature of 2.5 written into its model.json."""
    from engine.project import runs

    target = tmp_path_factory.mktemp("hot") / tiny_run.name
    shutil.copytree(tiny_run, target)
    info = json.loads((target / runs.MODEL).read_text())
    info["temperature"] = 2.5
    (target / runs.MODEL).write_text(json.dumps(info))
    return target


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "bundle"])
def test_exports_give_the_apps_calibrated_probabilities(hot_run, tmp_path, fmt):
    from engine.results.export import export_run
    from engine.results.predict import infer, load_run_model

    out = tmp_path / fmt
    result = export_run(hot_run, fmt, out)
    meta = json.loads((out / "model.json").read_text())
    assert meta["temperature"] == 2.5
    assert result.max_abs_diff_probs < 1e-4
    assert "temperature scaling" in (out / "MODEL_CARD.md").read_text()
    bundle = load_run_model(hot_run, "cpu")
    samples = json.loads((hot_run / "dataset.json").read_text())["samples"]
    paths = [s["path"] for s in samples if s["split"] == "val"]
    app, _ = infer(bundle, paths)
    x = torch.stack([bundle.preprocess(p) for p in paths])
    with torch.inference_mode():
        uncalibrated = bundle.model(x).softmax(1).numpy()
    assert not np.allclose(app, uncalibrated, atol=1e-3)  # the temperature does change the confidences
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"input": x.numpy()})[0]
    elif fmt == "torchscript":
        logits = torch.jit.load(str(out / "model.torchscript.pt")).eval()(x).detach().numpy()
    else:
        exported = load_run_model(out, "cpu")
        assert exported.temperature == 2.5
        logits = None
        probs, _ = infer(exported, paths)
    if logits is not None:
        probs = torch.from_numpy(logits).softmax(1).numpy()
    assert np.allclose(probs, app, atol=1e-5)

