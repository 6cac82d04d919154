"""Faults during a run (issue #8): a diverging loss, running out of GPU memory, a full disk, a read-only run folder.
Each ends in a sentence (or, for memory, goes on with smaller pieces), and what was saved before stays loadable."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import engine.train.loop
import engine.train.trainer
from engine import events as ev
from engine import files
from engine.project import runs
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.checkpoint import load_checkpoint
from engine.train.trainer import fit, resume

MODEL = "timm:test_resnet"


pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy="feature-extraction", epochs=3, **train) -> RunConfig:
    # fp32: these tests compare paths number by number, and bf16 steps (automatic on some CPUs) round differently.
    train = TrainConfig(**{"batch_size": 8, "workers": 0, "warmup_epochs": 0.0, "augment": "none", "precision": "fp32",
                           "label_smoothing": 0.0, "schedule": "constant", **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=epochs, lr=0.01, train=train, out=str(out))


class Recorder:
    def __init__(self, on_epoch=None):
        self.events = []
        self.stop = threading.Event()
        self.on_epoch = on_epoch

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, ev.EpochEnded) and self.on_epoch:
            self.on_epoch(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def warnings(self) -> list[str]:
        return [e.message for e in self.of(ev.Log) if e.level == "warning"]


def wrap_model(monkeypatch, wrapper):
    """``wrapper(forward) -> forward`` around the model's forward in every run built from now on."""
    build = engine.train.trainer.build_model

    def wrapped(*args, **kwargs):
        built = build(*args, **kwargs)
        built.model.forward = wrapper(built.model.forward)
        return built

    monkeypatch.setattr(engine.train.trainer, "build_model", wrapped)


def assert_failed_with(result, rec, *words) -> None:
    assert result.status == "failed"
    for word in words:
        assert word in result.error, result.error
    assert "Traceback" not in result.error
    assert rec.of(ev.Failed)[0].message == result.error
    summary = runs.read_summary(result.run_dir)
    assert summary["status"] in ("failed", "running")  # 'running' only where the folder cannot be written at all


def epochs_of(run_dir) -> list[int]:
    return [r["epoch"] for r in runs.read_metrics(run_dir)]


# --- a diverging loss -------------------------------------------------------------------------------------------


def test_a_loss_that_becomes_nan_fails_with_advice_and_keeps_epoch_1(tiny_dataset, tmp_path, monkeypatch):
    poisoned = threading.Event()

    def nan_after_epoch_1(forward):
        def run(x):
            out = forward(x)
            return out * float("nan") if poisoned.is_set() else out
        return run

    wrap_model(monkeypatch, nan_after_epoch_1)
    rec = Recorder(on_epoch=lambda e: poisoned.set())
    result = fit(config_for(tiny_dataset, tmp_path, "fine-tune-deep"), rec)
    assert_failed_with(result, rec, "loss became nan", "epoch 2", "lower the learning rate", "0.001")
    assert runs.read_summary(result.run_dir)["status"] == "failed"
    d = Path(result.run_dir)
    assert epochs_of(d) == [1]
    assert load_checkpoint(d / runs.CHECKPOINT)["epochs_completed"] == 1  # still resumable, e.g. after a fix
    load_file(d / runs.BEST)


def test_a_huge_learning_rate_fails_with_the_same_advice(tiny_dataset, tmp_path):
    rec = Recorder()
    config = dataclasses.replace(config_for(tiny_dataset, tmp_path, "fine-tune-deep", optimizer="sgd"), lr=1e30)
    result = fit(config, rec)
    assert_failed_with(result, rec, "diverged", "lower the learning rate")


# --- out of memory ----------------------------------------------------------------------------------------------


class OutOfMemory:
    """``torch.OutOfMemoryError`` from the model's forward for its first ``times`` calls with more than one picture
    (as CUDA raises it), or for every call when ``times`` is None."""

    def __init__(self, times: int | None):
        self.times = times
        self.raised = 0

    def __call__(self, forward):
        def run(x):
            if x.shape[0] > 1 and (self.times is None or self.raised < self.times):
                self.raised += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return forward(x)
        return run


def test_out_of_memory_backs_off_the_batch_and_gives_the_same_results(tiny_dataset, tmp_path, monkeypatch):
    # The normal path (the model's own forward trains) and frozen BatchNorm: the pieces add up to the whole batch.
    config = config_for(tiny_dataset, tmp_path, cache_features=False)
    normal = fit(config)
    oom = OutOfMemory(3)
    wrap_model(monkeypatch, oom)
    rec = Recorder()
    squeezed = fit(config, rec)
    assert squeezed.status == "completed", squeezed.error
    assert oom.raised == 3
    warnings = rec.warnings()
    assert [w for w in warnings if "ran out of memory" in w] == [
        f"The computer ran out of memory with 8 pictures at once: continuing with {k} at a time (the results stay "
        "the same; BatchNorm layers that train see the smaller batches)." for k in (4, 2, 1)]
    a, b = runs.read_metrics(normal.run_dir), runs.read_metrics(squeezed.run_dir)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key
    wa, wb = (load_file(Path(r.run_dir) / runs.BEST) for r in (normal, squeezed))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-4, atol=1e-5) for k in wa)


def test_out_of_memory_with_one_picture_fails_with_advice(tiny_dataset, tmp_path, monkeypatch):
    wrap_model(monkeypatch, OutOfMemory(None))
    monkeypatch.setattr(engine.train.loop.Backoff, "shrink", lambda self, batch: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory (simulated)")))  # as when the pieces are single pictures
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, cache_features=False), rec)
    assert_failed_with(result, rec, "ran out of memory", "smaller batch size")


# --- a full disk, a read-only folder -----------------------------------------------------------------------------


def improving_validation(monkeypatch):
    """Every epoch is the best so far, so that every epoch writes best.safetensors."""
    scores = iter([(1.0 - 0.1 * i, 0.3 + 0.1 * i) for i in range(100)])
    monkeypatch.setattr(engine.train.loop, "evaluate_loader", lambda *a, **k: next(scores))


class Saved:
    """The bytes of the checkpoint and the best weights as they were after epoch 1."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def keep(self, run_dir: Path) -> None:
        self.files = {name: (run_dir / name).read_bytes() for name in (runs.CHECKPOINT, runs.BEST)}

    def assert_intact(self, run_dir: Path, *names: str) -> None:
        for name in names:
            assert (run_dir / name).read_bytes() == self.files[name], name
        assert load_checkpoint(run_dir / runs.CHECKPOINT)["epochs_completed"] >= 1  # weights_only=True
        load_file(run_dir / runs.BEST)
        assert not list(run_dir.glob(".*.tmp"))  # no half-written file left


@pytest.mark.parametrize("victim", [runs.CHECKPOINT, runs.BEST])
def test_a_full_disk_fails_with_a_sentence_and_keeps_what_was_saved(tiny_dataset, tmp_path, monkeypatch, victim):
    improving_validation(monkeypatch)
    original = files.atomic_write
    full = threading.Event()

    def atomic_write(path, write):
        if full.is_set() and Path(path).name == victim:
            def half(tmp):  # the first part of the file, then the disk is full
                Path(tmp).write_bytes(b"\0" * 4096)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            return original(path, half)
        return original(path, write)

    monkeypatch.setattr(files, "atomic_write", atomic_write)
    saved = Saved()

    def after_epoch(event):
        if event.epoch == 1:
            saved.keep(Path(rec.of(ev.RunStarted)[0].run_dir))
            full.set()

    rec = Recorder(on_epoch=after_epoch)
    result = fit(config_for(tiny_dataset, tmp_path), rec)
    d = Path(result.run_dir)
    assert_failed_with(result, rec, "The disk is full", "could not be written", "Free some space",
                       f"python main.py train --resume {d}",
                       f"its last checkpoint (after epoch {1 if victim == runs.CHECKPOINT else 2}) and the best "
                       "weights are kept")
    assert result.epochs_completed == 1 and epochs_of(d) == [1]
    # The file that could not be written is as it was after epoch 1; a checkpoint that was written holds epoch 2.
    saved.assert_intact(d, victim)
    assert load_checkpoint(d / runs.CHECKPOINT)["epochs_completed"] == (1 if victim == runs.CHECKPOINT else 2)
    summary = runs.read_summary(d)
    assert summary["status"] == "failed" and summary["best_epoch"] == 1 and summary["error"] == result.error

    full.clear()  # space was freed: the run goes on from its checkpoint
    done = resume(d)
    assert done.status == "completed", done.error
    assert epochs_of(d) == [1, 2, 3] and runs.read_summary(d)["best_epoch"] == 3


def _read_only(folder: Path, on: bool) -> None:
    if os.geteuid() == 0:  # root ignores permissions; the immutable flag stops it from creating files too
        subprocess.run(["chattr", "+i" if on else "-i", str(folder)], check=True, capture_output=True)
    else:
        folder.chmod(0o555 if on else 0o755)


@pytest.fixture
def read_only_works(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _read_only(probe, True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this computer cannot make a folder read-only here")
    try:
        (probe / "x").write_text("x")
        pytest.skip("a read-only folder still takes new files here")
    except OSError:
        pass
    finally:
        _read_only(probe, False)


def test_a_read_only_run_folder_fails_with_a_sentence_and_keeps_what_was_saved(tiny_dataset, tmp_path,
                                                                               read_only_works, monkeypatch):
    improving_validation(monkeypatch)
    saved = Saved()
    folder: list[Path] = []

    def after_epoch(event):
        if event.epoch == 1:
            folder.append(Path(rec.of(ev.RunStarted)[0].run_dir))
            saved.keep(folder[0])
            _read_only(folder[0], True)

    rec = Recorder(on_epoch=after_epoch)
    try:
        result = fit(config_for(tiny_dataset, tmp_path), rec)
        d = folder[0]
        assert_failed_with(result, rec, f"The run folder {d} cannot be written to", "Make the folder writable",
                           "--resume")
        assert result.epochs_completed == 1 and epochs_of(d) == [1]
        saved.assert_intact(d, runs.CHECKPOINT, runs.BEST)
        assert json.loads((d / runs.SUMMARY).read_text())["epochs_completed"] == 1
    finally:
        for d in folder:
            _read_only(d, False)
    done = resume(folder[0])
    assert done.status == "completed", done.error
    assert epochs_of(folder[0]) == [1, 2, 3]


def test_a_full_disk_when_the_run_starts_leaves_a_sentence(tiny_dataset, tmp_path, monkeypatch):
    def no_space(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "atomic_write", no_space)
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path), rec)
    assert result.status == "failed" and "The disk is full" in result.error and "start the run again" in result.error
    assert rec.of(ev.Failed)[0].message == result.error
