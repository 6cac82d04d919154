"""The command line's exit status, one per outcome (issue #23): completed 0, failed 1, bad input 2, stopped 3 (Ctrl-C;
the run keeps a checkpoint), said in --help. Ctrl-C is a real SIGINT sent to ``python main.py train``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import main
from conftest import REPO
from engine.errors import EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED
from engine.project import runs

pytestmark = pytest.mark.usefixtures("quick_training")


def train_args(data, out, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "timm:test_resnet", "--weights", "none", "--batch-size", "4",
            "--workers", "0", "--out", str(out), *extra]


def test_the_codes_are_distinct_and_told_in_help(capsys):
    assert len({EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED}) == 4 and EXIT_COMPLETED == 0
    with pytest.raises(SystemExit):
        main.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in (f"{EXIT_COMPLETED} completed", f"{EXIT_FAILED} failed", f"{EXIT_BAD_INPUT} bad input",
                  f"{EXIT_STOPPED} stopped"):
        assert words in text


def test_a_completed_run_exits_0(tiny_dataset, tmp_path):
    assert main.main(train_args(tiny_dataset, tmp_path, "--epochs", "1")) == EXIT_COMPLETED


def test_a_failed_run_exits_1(tiny_dataset, tmp_path, capsys):
    # A diverging loss ends the run as failed, with its sentence.
    assert main.main(train_args(tiny_dataset, tmp_path, "--epochs", "1", "--lr", "1e30")) == EXIT_FAILED
    assert "error: The training loss became" in capsys.readouterr().err


def test_bad_input_exits_2(tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["train", "--no-such-option"])
    assert exit_.value.code == EXIT_BAD_INPUT
    assert main.main(train_args(tmp_path / "missing", tmp_path)) == EXIT_BAD_INPUT
    assert main.main(["evaluate", str(tmp_path / "no-run")]) == EXIT_BAD_INPUT


def test_a_stopped_evaluation_exits_3(tiny_run, monkeypatch, capsys):
    def stopped_at_once(work, *_):
        stop = threading.Event()
        stop.set()
        return work(stop)

    monkeypatch.setattr(main, "_with_stop", stopped_at_once)
    assert main.main(["evaluate", str(tiny_run)]) == EXIT_STOPPED
    assert "stopped:" in capsys.readouterr().err


def test_ctrl_c_stops_a_run_with_3_and_it_can_be_resumed(tiny_dataset, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *train_args(tiny_dataset, tmp_path, "--epochs",
                                                                               "200")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # wait until it trains: the first epoch's line
            if line.startswith("epoch 1/200"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STOPPED, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped:")
    assert "train --resume" in err and "Traceback" not in err
    run_dir = last.rsplit(": ", 1)[-1]
    assert runs.resume_problem(run_dir) is None
