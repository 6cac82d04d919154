"""Resuming a run (issue #8): after ``kill -9``, after a stop, after a crash within an epoch. The resumed run continues
exactly where the checkpoint stands, metrics.jsonl holds each epoch once, and resuming what cannot be resumed says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import engine.train.checkpoint
import engine.train.trainer
from conftest import REPO
from engine import events as ev
from engine import files
from engine.project import runs
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.models.build import build_model
from engine.train.checkpoint import load_checkpoint
from engine.train.trainer import fit, resume

MODEL = "timm:test_resnet"  # a ResNet of 0.4 M parameters (BatchNorm, several stages): fast, and the real code paths
KILL_DEADLINE_S = 300  # generous: the machine may be busy; the test polls and never waits this long when all is well


pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy="fine-tune-deep", epochs=4, **train) -> RunConfig:
    # 18 training pictures in batches of 4: 4 steps an epoch (the incomplete last batch is dropped).
    train = TrainConfig(**{"batch_size": 4, "workers": 0, "warmup_epochs": 0.5, "augment": "none",
                           "label_smoothing": 0.0, **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=epochs, lr=0.01, train=train, out=str(out))


class Recorder:
    def __init__(self, stop_when=None, crash_when=None):
        self.events = []
        self.stop = threading.Event()
        self.stop_when = stop_when
        self.crash_when = crash_when

    def __call__(self, event):
        self.events.append(event)
        if self.stop_when and self.stop_when(self, event):
            self.stop.set()
        if self.crash_when and self.crash_when(self, event):
            raise RuntimeError("simulated crash")

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def nth_step(n):
    return lambda rec, e: isinstance(e, ev.StepEnded) and len(rec.of(ev.StepEnded)) == n


def epochs_of(run_dir) -> list[int]:
    return [r["epoch"] for r in runs.read_metrics(run_dir)]


def without_time(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_metrics(run_dir)]


@pytest.fixture
def models(monkeypatch):
    """The model each run builds, kept: its weights after the run are the run's final weights."""
    built = []
    build = engine.train.trainer.build_model

    def keep(*args, **kwargs):
        b = build(*args, **kwargs)
        built.append(b.model)
        return b

    monkeypatch.setattr(engine.train.trainer, "build_model", keep)
    return built


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


# --- kill -9 ----------------------------------------------------------------------------------------------------

PRELUDE = "import sys, engine.train.checkpoint as t; t.CHECKPOINT_EVERY_S = float(sys.argv.pop(1)); import main; " \
          "sys.exit(main.main(sys.argv[1:]))"


def main_py(checkpoint_every: float, *args: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE, str(checkpoint_every), *args]


@pytest.mark.parametrize("checkpoint_every", [300.0, 0.0], ids=["epoch-checkpoints", "checkpoint-every-step"])
def test_kill_9_then_resume_holds_each_epoch_once(tiny_dataset, tmp_path, checkpoint_every):
    """A real SIGKILL in the middle of a command-line run, then ``train --resume RUN`` to the end. With the interval at
    0 a checkpoint follows every step, so the kill usually lands within an epoch whose first steps are saved."""
    epochs = 16
    out = tmp_path / "runs"
    env = {**os.environ, "TRANSFER_STUDIO_CACHE": str(tmp_path / "picture-cache")}
    proc = subprocess.Popen(main_py(checkpoint_every, "train", "--data", str(tiny_dataset), "--model", MODEL,
                                    "--weights", "none", "--strategy", "fine-tune-deep", "--epochs", str(epochs),
                                    "--batch-size", "4", "--workers", "0", "--augment", "none", "--out", str(out)),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + KILL_DEADLINE_S
        run_dir = None
        while True:  # poll until an epoch is on disk (and its checkpoint with it), then kill
            assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no epoch was written in time"
            found = [d for d in out.iterdir() if d.is_dir()] if out.is_dir() else []
            if found:
                run_dir = found[0]
                if runs.read_metrics(run_dir) and (run_dir / runs.CHECKPOINT).is_file():
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert runs.read_summary(run_dir)["status"] == "running"  # what a killed run leaves behind
    killed_at = len(runs.read_metrics(run_dir))
    assert 1 <= killed_at < epochs

    again = subprocess.run(main_py(checkpoint_every, "train", "--resume", str(run_dir)), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert "(resumed after" in again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith(f"completed: {epochs} epochs")
    assert epochs_of(run_dir) == list(range(1, epochs + 1))  # each epoch exactly once
    summary = runs.read_summary(run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == epochs and summary["error"] is None
    records = runs.read_metrics(run_dir)
    assert summary["best_val_acc"] == max(r["val_acc"] for r in records)
    assert records[summary["best_epoch"] - 1]["val_acc"] == summary["best_val_acc"]
    model = build_model(MODEL, "none", 3).model
    model.load_state_dict(load_file(run_dir / runs.BEST))
    assert not (run_dir / runs.CHECKPOINT).exists()  # a completed run gives the checkpoint's space back
    assert not list(run_dir.glob(".*.tmp"))  # a write cut by the kill left nothing behind

    if checkpoint_every:
        return
    # Resuming it once more: a sentence, not a traceback, and the folder as it was.
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--resume", str(run_dir)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "already completed" in done.stderr and "nothing to resume" in done.stderr
    assert epochs_of(run_dir) == list(range(1, epochs + 1))


def test_resume_takes_no_other_settings_on_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--resume", str(tmp_path), "--epochs",
                           "9", "--lr", "0.1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--epochs" in errors[0] and "--lr" in errors[0]


# --- in-process: exactly the same run ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy,augment", [
    ("fine-tune-deep", "none"),  # the normal path: every stage trains
    ("progressive", "light"),  # cached outputs (with augmented views) in phase 1, then deeper phases, a shared order
])
def test_stopping_and_resuming_gives_the_same_weights_as_one_run(tiny_dataset, tmp_path, models, strategy,
                                                                   augment):
    """On the CPU with no loader processes, a run stopped twice (within an epoch, then at another point) and resumed
    twice ends with exactly the weights and metrics of a run that was never interrupted: equality, not closeness,
    because the checkpoint restores every random state and the order of the pictures."""
    config = config_for(tiny_dataset, tmp_path, strategy, epochs=4, augment=augment)
    whole = fit(config)
    assert whole.status == "completed", whole.error
    reference = models[-1]

    first = Recorder(stop_when=nth_step(3))  # within epoch 1
    stopped = fit(config, first, first.stop)
    assert stopped.status == "stopped" and stopped.epochs_completed == 0
    checkpoint = load_checkpoint(Path(stopped.run_dir) / runs.CHECKPOINT)  # weights_only=True
    assert (checkpoint["epochs_completed"], checkpoint["step"]) == (0, 3)  # the steps before the stop are kept

    # Then stopped at the end of epoch 2 (for progressive, also the end of a phase).
    second = Recorder(stop_when=lambda rec, e: isinstance(e, ev.EpochEnded) and e.epoch == 2)
    again = resume(stopped.run_dir, second, second.stop)
    assert again.status == "stopped" and again.run_dir == stopped.run_dir and again.epochs_completed == 2
    started = second.of(ev.RunStarted)[0]
    assert started.resumed and started.epochs_done == 0
    assert [(e.epoch, e.step) for e in second.of(ev.StepEnded)][:2] == [(1, 4), (2, 1)]  # on with the 4th batch
    assert runs.read_summary(stopped.run_dir)["status"] == "stopped"

    third = Recorder()
    done = resume(stopped.run_dir, third)
    assert done.status == "completed", done.error
    assert third.of(ev.RunStarted)[0].epochs_done == 2
    assert without_time(done.run_dir) == without_time(whole.run_dir)
    assert_same_weights(models[-1], reference)
    assert (done.best_val_acc, done.best_epoch) == (whole.best_val_acc, whole.best_epoch)
    best, best_whole = (load_file(Path(r.run_dir) / runs.BEST) for r in (done, whole))
    assert all(torch.equal(best[k], best_whole[k]) for k in best)


def test_a_crash_within_an_epoch_resumes_from_the_timed_checkpoint(tiny_dataset, tmp_path, models, monkeypatch):
    """The checkpoint 'every few minutes' within an epoch, with the interval made tiny: after a crash at step 6
    (epoch 2, step 2) the checkpoint holds epoch 2's first step; resuming gives the uninterrupted run's weights."""
    monkeypatch.setattr(engine.train.checkpoint, "CHECKPOINT_EVERY_S", 0.0)
    config = config_for(tiny_dataset, tmp_path, epochs=3)
    whole = fit(config)
    reference = models[-1]
    rec = Recorder(crash_when=nth_step(6))
    crashed = fit(config, rec)
    assert crashed.status == "failed" and "simulated crash" in crashed.error
    checkpoint = load_checkpoint(Path(crashed.run_dir) / runs.CHECKPOINT)
    assert (checkpoint["epochs_completed"], checkpoint["step"], checkpoint["global_step"]) == (1, 1, 5)
    assert epochs_of(crashed.run_dir) == [1]
    done = resume(crashed.run_dir)
    assert done.status == "completed", done.error
    assert without_time(done.run_dir) == without_time(whole.run_dir)
    assert_same_weights(models[-1], reference)


def test_resume_rewrites_metrics_to_the_checkpoint_and_keeps_the_best_weights(tiny_dataset, tmp_path, monkeypatch):
    """A process killed after its checkpoint but before the epoch's metrics line and best weights (simulated: the
    metrics write fails at epoch 2), plus a line cut short and a stray duplicate in metrics.jsonl: the resumed run
    rewrites metrics.jsonl from the checkpoint, writes the best weights the checkpoint holds, and ends with each
    epoch once."""
    config = config_for(tiny_dataset, tmp_path, strategy="feature-extraction", epochs=4)
    append = runs.append_jsonl

    def dies_at_epoch_2(path, record):
        if record["epoch"] == 2:
            raise RuntimeError("killed")
        append(path, record)

    monkeypatch.setattr(runs, "append_jsonl", dies_at_epoch_2)
    crashed = fit(config)
    monkeypatch.setattr(runs, "append_jsonl", append)
    d = Path(crashed.run_dir)
    assert crashed.status == "failed" and epochs_of(d) == [1]
    assert load_checkpoint(d / runs.CHECKPOINT)["epochs_completed"] == 2
    with open(d / runs.METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(runs.read_metrics(d)[0]) + "\n" + '{"epoch": 3, "phase": "he')
    rec = Recorder()
    done = resume(d, rec)
    assert done.status == "completed", done.error
    assert epochs_of(d) == [1, 2, 3, 4]
    assert rec.of(ev.RunStarted)[0].epochs_done == 2
    assert [e.epoch for e in rec.of(ev.EpochEnded)] == [3, 4]
    summary = runs.read_summary(d)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 4
    records = runs.read_metrics(d)
    assert records[summary["best_epoch"] - 1]["val_acc"] == summary["best_val_acc"] == max(r["val_acc"]
                                                                                            for r in records)
    load_file(d / runs.BEST)


# --- what cannot be resumed ---------------------------------------------------------------------------------------


@pytest.fixture
def stopped_run(tiny_dataset, tmp_path):
    rec = Recorder(stop_when=lambda rec, e: isinstance(e, ev.EpochEnded))
    result = fit(config_for(tiny_dataset, tmp_path, strategy="feature-extraction", epochs=3), rec, rec.stop)
    assert result.status == "stopped" and result.epochs_completed == 1
    return Path(result.run_dir)


def resume_fails(run_dir, *words) -> str:
    before = {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file()} if Path(run_dir).is_dir() \
        else {}
    rec = Recorder()
    result = resume(run_dir, rec)
    assert result.status == "failed"
    for word in words:
        assert word in result.error
    assert rec.of(ev.Failed)[0].message == result.error
    assert not rec.of(ev.RunStarted)
    after = {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file() and p.name != runs.LOCK} \
        if Path(run_dir).is_dir() else {}
    assert after == {k: v for k, v in before.items() if k != runs.LOCK}  # the folder is left as it was
    return result.error


def test_a_completed_run_says_there_is_nothing_to_resume(tiny_dataset, tmp_path):
    result = fit(config_for(tiny_dataset, tmp_path, strategy="feature-extraction", epochs=1))
    resume_fails(result.run_dir, "already completed", "nothing to resume")


def test_a_run_without_a_checkpoint_says_so(stopped_run):
    (stopped_run / runs.CHECKPOINT).unlink()
    resume_fails(stopped_run, "no checkpoint")


def test_a_folder_that_is_not_a_run_says_so(tmp_path):
    resume_fails(tmp_path, "not a run folder")
    resume_fails(tmp_path / "nowhere", "does not exist")


def test_a_run_still_training_elsewhere_is_not_resumed(stopped_run):
    with runs.run_lock(stopped_run):  # as the process training it holds it
        assert runs.run_is_active(stopped_run)
        resume_fails(stopped_run, "still training")
    assert not runs.run_is_active(stopped_run)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_a_damaged_or_unsafe_checkpoint_is_refused(stopped_run):
    path = stopped_run / runs.CHECKPOINT
    path.write_bytes(path.read_bytes()[:1000])  # cut short
    resume_fails(stopped_run, "cannot be read", "damaged")
    torch.save({"format": 1, "payload": Payload()}, path)  # would run code if unpickled without weights_only
    resume_fails(stopped_run, "cannot be read")
    torch.save({"format": 99}, path)
    resume_fails(stopped_run, "another version")


def test_missing_pictures_are_named_before_anything_changes(stopped_run, tiny_dataset, tmp_path):
    import shutil

    data = shutil.copytree(tiny_dataset, tmp_path / "moved")
    dataset = json.loads((stopped_run / runs.DATASET).read_text())
    for s in dataset["samples"]:
        s["path"] = s["path"].replace(str(tiny_dataset), str(data))
    files.atomic_write_json(stopped_run / runs.DATASET, dataset)
    gone = Path(dataset["samples"][0]["path"])
    gone.unlink()
    rec = Recorder()
    result = resume(stopped_run, rec)
    assert result.status == "failed" and "no longer there" in result.error and str(gone) in result.error
    assert (stopped_run / runs.CHECKPOINT).is_file()  # still resumable once the picture is back
    shutil.copy(tiny_dataset / gone.parent.name / gone.name, gone)
    assert resume(stopped_run).status == "completed"
    assert epochs_of(stopped_run) == [1, 2, 3]


def test_resume_may_change_the_device_and_workers_only(stopped_run, monkeypatch):
    seen = []
    run = engine.train.trainer.Trainer._run

    def spy(self, dataset):
        seen.append(dataclasses.replace(self.config))
        return run(self, dataset)

    monkeypatch.setattr(engine.train.trainer.Trainer, "_run", spy)
    result = resume(stopped_run, device="cpu", workers=0)
    assert result.status == "completed", result.error
    assert (seen[0].train.device, seen[0].train.workers) == ("cpu", 0)


def test_a_phase_that_trains_little_checkpoints_only_what_it_trains(tiny_dataset, tmp_path, models):
    """Feature extraction: the frozen weights go into checkpoint-base.pt once; each checkpoint holds the head and the
    buffers only, and resuming puts the two together again."""
    config = config_for(tiny_dataset, tmp_path, "feature-extraction", epochs=3)
    whole = fit(config)
    reference = models[-1]
    rec = Recorder(stop_when=lambda rec, e: isinstance(e, ev.EpochEnded) and e.epoch == 1)
    stopped = fit(config, rec, rec.stop)
    d = Path(stopped.run_dir)
    checkpoint, base = load_checkpoint(d / runs.CHECKPOINT), load_checkpoint(d / runs.CHECKPOINT_BASE)
    assert checkpoint["base"] == base["token"]
    buffers = {k for k, _ in reference.named_buffers()}
    assert set(checkpoint["model"]) - buffers == {"fc.weight", "fc.bias"}
    assert set(base["model"]) == set(reference.state_dict())
    assert (d / runs.CHECKPOINT).stat().st_size < (d / runs.CHECKPOINT_BASE).stat().st_size / 5

    good = base
    torch.save({**good, "token": "another"}, d / runs.CHECKPOINT_BASE)  # a base from another phase or run
    resume_fails(d, "do not belong together")
    (d / runs.CHECKPOINT_BASE).unlink()
    resume_fails(d, runs.CHECKPOINT_BASE, "cannot be read")
    torch.save(good, d / runs.CHECKPOINT_BASE)

    done = resume(d)
    assert done.status == "completed", done.error
    assert without_time(d) == without_time(whole.run_dir)
    assert_same_weights(models[-1], reference)
    assert not (d / runs.CHECKPOINT).exists() and not (d / runs.CHECKPOINT_BASE).exists()
