"""The command-line contract, run as a user runs it: ``python main.py ...`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HYMENOPTERA, MOBILENET_WEIGHTS, REPO, make_class_folders, require_shared


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_one_sentence_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-runs")
    proc = run("train", "--data", str(tiny_dataset), "--model", "timm:resnet18", "--weights", "none",
               "--strategy", "feature-extraction", "--epochs", "2", "--batch-size", "8", "--out", str(out))
    return proc, out


def test_train_prints_the_run_folder_and_a_summary(trained):
    proc, out = trained
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("completed: 2 epochs, best validation accuracy")
    run_dir = Path(last.rsplit(": ", 1)[1])
    assert run_dir.parent == out
    for name in ("config.toml", "labels.json", "metrics.jsonl", "summary.json", "best.safetensors"):
        assert (run_dir / name).is_file()
    assert "epoch 2/2" in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


def test_train_config_toml_repeats_the_run(trained, tmp_path):
    proc, _ = trained
    first = Path(proc.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    again = run("train", str(first / "config.toml"), "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    second = Path(again.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    metrics = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (first, second)]
    assert metrics[0] == metrics[1]


def test_scan_reports_counts_and_health(tmp_path):
    data = make_class_folders(tmp_path / "data", per_class=5)
    (data / "red" / "broken.jpg").write_bytes(b"not a picture")
    (data / "notes.txt").write_text("ignored")
    proc = run("scan", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "broken.jpg" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "3 classes, 12 train / 3 val pictures, 1 unreadable"
    as_json = run("scan", str(data), "--json")
    summary = json.loads(as_json.stdout)
    assert summary["classes"] == ["blue", "green", "red"]
    assert len(summary["health"]["unreadable"]) == 1


def test_models_lists_both_catalogues():
    proc = run("models", "resnet18")
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert "timm:resnet18" in names and "torchvision:resnet18" in names
    assert "models" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, words", [
    (["train", "--data", "/no/such/folder", "--model", "timm:resnet18", "--weights", "none"], ["does not exist"]),
    (["train", "--data", "DATA", "--model", "timm:no_such_net", "--weights", "none"], ["no_such_net"]),
    (["train", "--data", "DATA", "--model", "timm:resnet18", "--weights", "WEIGHTS"], ["damaged"]),
    (["train", "--data", "DATA"], ["--model"]),
    (["train", "/no/such/config.toml"], ["does not exist"]),
    (["scan", "/no/such/folder"], ["does not exist"]),
    (["train", "--data", "DATA", "--model", "timm:resnet18", "--epochs", "many"], ["invalid int"]),
])
def test_mistakes_exit_non_zero_with_one_sentence(tiny_dataset, tmp_path, args, words):
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(b"\x00" * 100)
    args = [str(tiny_dataset) if a == "DATA" else str(weights) if a == "WEIGHTS" else a for a in args]
    proc = run(*args, "--out", str(tmp_path / "runs")) if args[0] == "train" else run(*args)
    assert_one_sentence_error(proc, *words)
    assert not (tmp_path / "runs").exists()  # a mistake leaves no half-made run folder behind


@pytest.mark.shared
@pytest.mark.slow
def test_transfer_is_real_on_hymenoptera(tmp_path):
    """The acceptance run: pretrained MobileNetV2 features on ants vs bees (2 epochs here; 5 in the closing note)."""
    require_shared(HYMENOPTERA, MOBILENET_WEIGHTS)
    proc = run("train", "--data", str(HYMENOPTERA), "--model", "torchvision:mobilenet_v2", "--weights",
               str(MOBILENET_WEIGHTS), "--strategy", "feature-extraction", "--epochs", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1])
    assert json.loads((run_dir / "summary.json").read_text())["best_val_acc"] >= 0.9
