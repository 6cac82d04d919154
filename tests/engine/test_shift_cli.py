"""The command line of engine.shift: predict's flag, the drift report, and adapt printing the new run folder on its
last line, as train does; a problem is one sentence and exit status 2, never a traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from main import main
from tests.engine.shift_support import copy_pictures, invert, noise_pictures, train_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("shift-cli"), seed=1)


@pytest.fixture(scope="module")
def shifted(run, tmp_path_factory) -> Path:
    return copy_pictures(run, tmp_path_factory.mktemp("inverted") / "new", invert, times=2)


def test_predict_flags_and_answers_unknown(run, tmp_path, capsys):
    noise = noise_pictures(tmp_path / "noise", n=4)
    assert main(["predict", str(run), str(noise), "--csv", str(tmp_path / "p.csv"), "--unknown"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2].startswith("4 of 4 unlike the training pictures")
    table = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["prediction"], r["in_domain"]) for r in table] == [("unknown", "false")] * 4
    assert main(["predict", str(run), str(noise), "--no-flag"]) == 0
    assert "unlike" not in capsys.readouterr().out


def test_drift_json_and_sentence(run, shifted, capsys):
    assert main(["drift", str(run), str(shifted), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pictures"] == 90 and report["verdict"] == "strong" and report["expected_share"] == 0.05
    assert main(["drift", str(run), str(shifted)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("Strong drift")


def test_adapt_prints_the_new_run_folder_last(run, shifted, tmp_path, capsys):
    assert main(["adapt", str(run), "--data", str(shifted), "--out", str(tmp_path / "adapted")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert Path(last).parent == tmp_path / "adapted" and (Path(last) / "best.safetensors").is_file()
    assert main(["evaluate", last]) == 0


def test_adapt_problems_are_sentences(run, tmp_path, capsys):
    assert main(["adapt", str(run), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "is not a folder" in err and "Traceback" not in err
