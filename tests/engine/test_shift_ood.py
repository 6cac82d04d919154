"""The "unlike my training pictures" flag (engine.shift.ood): the threshold lets about 95 % of the validation pictures
pass and is stored with the run, predictions and their CSV carry ood_score and in_domain, "unknown" replaces the class
of flagged pictures on request, and the statistics travel with an exported bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from engine.results.predict import load_run_model, write_csv
from engine.shift import ood as ood_mod
from engine.shift.features import run_pass
from tests.engine.shift_support import noise_pictures, train_run, val_pictures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("shift-ood"))


@pytest.fixture(scope="module")
def bundle(run):
    return load_run_model(run, device="cpu")


@pytest.fixture(scope="module")
def ood(bundle):
    return ood_mod.ensure(bundle)


def test_the_threshold_lets_about_95_percent_of_the_validation_pictures_pass(run, bundle, ood):
    info = json.loads((run / "model.json").read_text())["ood"]
    assert info["method"] == "mahalanobis" and info["threshold"] == pytest.approx(ood.threshold)
    assert info["pictures"] == {"train": 45, "val": 45}
    assert (run / "ood.safetensors").is_file()
    # Scored again from the pictures themselves: 43 of the 45 pass (95.6 %).
    scores = ood.scores(run_pass(bundle, [p for p, _ in val_pictures(run)]))
    passed = float(np.mean(scores <= ood.threshold))
    assert 0.93 <= passed <= 0.97
    assert info["val_pass"]["mahalanobis"] == pytest.approx(passed)


def test_stored_statistics_are_reused_and_fitted_again_for_new_weights(run, bundle, ood, monkeypatch):
    fitted = []
    real_fit = ood_mod.fit
    monkeypatch.setattr(ood_mod, "fit", lambda *a, **k: fitted.append(1) or real_fit(*a, **k))
    again = ood_mod.ensure(bundle)
    assert not fitted and again.threshold == pytest.approx(ood.threshold)
    best = run / "best.safetensors"
    best.write_bytes(best.read_bytes())  # the same weights written again: other weights as far as a stamp can tell
    ood_mod.ensure(bundle)
    assert fitted == [1]


def test_predictions_csv_has_ood_score_and_in_domain(run, bundle, ood, tmp_path):
    noise = noise_pictures(tmp_path / "noise")
    data = Path(val_pictures(run)[0][0]).parents[1]
    rows = ood_mod.predict_paths(bundle, [data, noise], ood, top_k=2)
    write_csv(rows, tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[-2:] == ["ood_score", "in_domain"]
    assert list(table[0])[:3] == ["path", "prediction", "confidence"]  # the existing columns, unchanged
    noisy = [r for r in table if "noise_" in r["path"]]
    clean = [r for r in table if "noise_" not in r["path"]]
    assert len(noisy) == 12 and all(r["in_domain"] == "false" for r in noisy)
    assert sum(r["in_domain"] == "true" for r in clean) / len(clean) >= 0.85
    assert all(float(r["ood_score"]) > ood.threshold for r in noisy)
    assert ood_mod.flag_words(rows).startswith(f"{sum(r['in_domain'] == 'false' for r in table)} of {len(table)}")


def test_unknown_answers_flagged_pictures(run, bundle, ood, tmp_path):
    noise = noise_pictures(tmp_path / "noise", n=3)
    rows = ood_mod.predict_paths(bundle, [noise], ood, unknown=True)
    assert [r.class_name for r in rows] == ["unknown"] * 3
    assert all(r.confidence is None and len(r.top) == 3 for r in rows)
    write_csv(rows, tmp_path / "u.csv")
    assert {r["prediction"] for r in csv.DictReader(open(tmp_path / "u.csv"))} == {"unknown"}


def test_exported_bundle_carries_the_threshold_and_scores_alike(run, bundle, ood, tmp_path):
    from engine.results.export import export_run

    export_run(run, "bundle", tmp_path / "export")
    out = tmp_path / "export"
    meta = json.loads((out / "model.json").read_text())
    assert meta["ood"]["threshold"] == pytest.approx(ood.threshold) and (out / "ood.safetensors").is_file()
    exported = load_run_model(out, device="cpu")
    carried = ood_mod.ensure(exported)
    noise = noise_pictures(tmp_path / "noise", n=2)
    paths = [p for p, _ in val_pictures(run)[:5]] + sorted(str(p) for p in noise.iterdir())
    a = ood.scores(run_pass(bundle, paths))
    b = carried.scores(run_pass(exported, paths))
    assert np.allclose(a, b, rtol=1e-4)


def test_mahalanobis_beats_chance_and_ledoit_wolf_inverts_few_pictures():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 50))  # fewer pictures than dimensions: the plain covariance is singular
    cov = ood_mod.ledoit_wolf(x - x.mean(0))
    assert np.linalg.eigvalsh(cov).min() > 0
    assert ood_mod.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert ood_mod.auroc(np.array([1.0]), np.array([1.0])) == 0.5
