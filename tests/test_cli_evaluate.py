"""The evaluate, predict and export commands, run as a user runs them (``python main.py ...``), and their mistakes:
one sentence and a non-zero exit, never a traceback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
from conftest import REPO, make_class_folders
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import fit


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("cli-eval") / "colours", per_class=8)


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains fastest on one thread
    try:
        result = fit(RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                               model=ModelConfig("timm:test_resnet", "none"), strategy="fine-tune-deep", epochs=1,
                               lr=0.01, train=TrainConfig(batch_size=8, workers=0, warmup_epochs=0.0, augment="none"),
                               out=str(tmp_path_factory.mktemp("cli-eval-runs"))))
    finally:
        torch.set_num_threads(before)
    assert result.status == "completed", result.error
    return Path(result.run_dir)


def test_evaluate_prints_the_metrics_and_writes_evaluation_json(run_dir):
    proc = run("evaluate", str(run_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    val = evaluation["splits"]["val"]
    assert lines[-1] == (f"validation: accuracy {val['accuracy']:.3f} ({val['correct']}/6), macro F1 "
                         f"{val['macro_f1']:.3f}, ECE {val['ece']:.3f}; written to {run_dir / 'evaluation.json'}")
    assert "confusion matrix (rows: true class, columns: predicted class)" in proc.stdout
    for c in val["per_class"]:  # the per-class table
        assert any(line.split()[:2] == [c["name"], f"{c['precision']:.3f}"] for line in lines)


def test_evaluate_json_prints_the_whole_evaluation(run_dir, capsys):
    assert main.main(["evaluate", str(run_dir), "--json", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["classes"] == ["blue", "green", "red"] and list(printed["splits"]) == ["val"]
    assert len(printed["splits"]["val"]["samples"]) == 6
    assert err.strip().splitlines()[-1].startswith("validation: accuracy")


def test_predict_writes_a_csv_and_reports_unreadable_pictures(run_dir, data, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code = main.main(["predict", str(run_dir), str(data / "red"), str(tmp_path / "missing.png"), "--csv", str(out),
                      "--top", "2", "--device", "cpu"])
    assert code == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.strip().splitlines()[-1] == f"9 pictures: 8 predicted, 1 could not be read; CSV written to {out}"
    assert f"{tmp_path / 'missing.png'}: The file does not exist." in stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and list(rows[0]) == ["path", "prediction", "confidence", "top2", "top2_confidence",
                                                "error", "ood_score", "in_domain"]  # engine.shift.ood's flag
    assert all(r["prediction"] in ("blue", "green", "red") for r in rows[:8])


def test_predict_prints_each_picture_and_can_save_heat_maps(run_dir, data, tmp_path, capsys):
    pictures = [str(data / "blue" / "blue_00.png"), str(data / "green" / "green_01.png")]
    maps = tmp_path / "maps"
    assert main.main(["predict", str(run_dir), *pictures, "--heatmaps", str(maps), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines[:2]] == pictures
    assert all(line.split(": ")[1].split()[0] in ("blue", "green", "red") for line in lines[:2])
    assert lines[-1] == f"2 pictures: 2 predicted, 0 could not be read; 2 heat maps in {maps}"
    from PIL import Image

    saved = sorted(maps.iterdir())
    assert len(saved) == 2 and all(Image.open(p).size == (40, 32) for p in saved)


def test_export_reports_the_largest_difference_and_the_bundle_predicts(run_dir, data, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main.main(["export", str(run_dir), "--format", "bundle", "--out", str(bundle)]) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.strip().splitlines()[-1] == (
        f"bundle export written to {bundle / 'model.safetensors'}; largest difference to PyTorch on 6 validation "
        "pictures: 0 in probability (0 in logits)")
    for name in ("model.safetensors", "model.json", "MODEL_CARD.md"):
        assert f"wrote {bundle / name}" in stderr
    picture = str(data / "green" / "green_03.png")
    assert main.main(["predict", str(run_dir), picture, "--device", "cpu"]) == 0
    from_run = capsys.readouterr().out
    assert main.main(["predict", str(bundle), picture, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == from_run


def assert_one_sentence(code: int, err: str, *words: str) -> None:
    assert code == main.EXIT_USER_ERROR
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args, words", [
    (["evaluate", "/no/such/run"], ["does not exist"]),
    (["evaluate", "DATA"], ["not a run folder"]),
    (["evaluate", "RUN", "--data", "/no/such/folder"], ["does not exist"]),
    (["evaluate", "RUN", "--data", "OTHER"], ["'purple' is unknown to it"]),
    (["predict", "RUN", "/no/such/picture.png"], ["None of the 1 pictures could be predicted", "does not exist"]),
    (["predict", "RUN", "DATA", "--top", "0"], ["at least 1"]),
    (["predict", "RUN", "DATA", "--csv", "/no/such/folder/out.csv"], ["does not exist"]),
    (["export", "RUN", "--format", "bundle", "--out", "RUN"], ["is a run folder"]),
])
def test_mistakes_end_with_one_sentence(run_dir, data, tmp_path, capsys, args, words):
    other = make_class_folders(tmp_path / "other", per_class=2, classes=("red", "green"))
    (other / "green").rename(other / "purple")
    names = {"RUN": str(run_dir), "DATA": str(data), "OTHER": str(other)}
    code = main.main([names.get(a, a) for a in args])
    assert_one_sentence(code, capsys.readouterr().err, *words)


def test_an_unknown_export_format_is_refused_by_the_parser(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["export", str(run_dir), "--format", "pickle"])
    assert exit_.value.code == main.EXIT_USER_ERROR
    assert "invalid choice: 'pickle'" in capsys.readouterr().err
