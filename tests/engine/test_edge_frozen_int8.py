"""Feature extraction's frozen pass in int8 (engine.train.prefix): used when its measured accuracy holds, said in the
log with the measurement; the training outputs computed again in fp32 when it does not; not where int8 is not faster;
never with precision fp32."""

from __future__ import annotations

import threading

import pytest
import torch

import engine.train.prefix as prefix
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("quick_training")


def run(data, out, precision="auto"):
    logs: list[str] = []
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig("timm:test_resnet", "none"),
                       strategy="feature-extraction", epochs=1, lr=0.01,
                       train=TrainConfig(batch_size=8, workers=0, augment="none", precision=precision), out=str(out))
    result = fit(config, lambda e: logs.append(e.message) if isinstance(e, ev.Log) else None, threading.Event())
    assert result.status == "completed", result.error
    return "\n".join(logs)


@pytest.fixture
def every_run_tries_int8(monkeypatch, tmp_path):
    monkeypatch.setattr(prefix, "INT8_FROM", 0)  # the tiny set is far below the size where int8 pays
    monkeypatch.setattr(prefix, "INT8_MIN_SPEEDUP", 0.0)  # and whether it is faster is not what these tests check
    monkeypatch.setenv("TRANSFER_STUDIO_FROZEN_CACHE", str(tmp_path / "frozen"))


def test_int8_outputs_are_kept_when_the_probe_keeps_its_accuracy(tiny_dataset, tmp_path, every_run_tries_int8,
                                                                  monkeypatch):
    monkeypatch.setattr(prefix, "INT8_TOLERANCE", 1.0)  # any difference passes
    logs = run(tiny_dataset, tmp_path / "runs")
    assert "The frozen layers ran in int8 for the training pictures" in logs
    assert "validation pictures at" in logs and "so the int8 outputs are kept" in logs
    assert "the training pictures' in int8)" in logs  # the ready line says which precision was used


def test_the_training_outputs_are_computed_again_in_fp32_when_int8_loses_accuracy(tiny_dataset, tmp_path,
                                                                                   every_run_tries_int8, monkeypatch):
    monkeypatch.setattr(prefix, "INT8_TOLERANCE", -1.0)  # no difference can pass
    logs = run(tiny_dataset, tmp_path / "runs")
    assert "computed again in full precision (fp32)" in logs
    assert "in int8)" not in logs


def test_int8_is_not_used_where_it_is_not_faster(tiny_dataset, tmp_path, every_run_tries_int8, monkeypatch):
    monkeypatch.setattr(prefix, "INT8_MIN_SPEEDUP", 1e9)  # as if int8 were never faster on this computer
    logs = run(tiny_dataset, tmp_path / "runs")
    assert "in int8 they are not faster on this computer" in logs and "in int8)" not in logs


def test_precision_fp32_keeps_the_frozen_pass_in_fp32(tiny_dataset, tmp_path, every_run_tries_int8):
    logs = run(tiny_dataset, tmp_path / "runs", precision="fp32")
    assert "int8" not in logs


def test_the_probe_measures_accuracy_on_each_set_of_outputs():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 4
    labels = torch.arange(60) % 3
    train = centres[labels] + torch.randn(60, 16, generator=generator)
    val = centres[labels] + torch.randn(60, 16, generator=generator)
    noise = torch.randn(60, 16, generator=generator) * 50  # outputs that lost what told the classes apart
    clean, spoiled = prefix.probe_accuracies(train, labels, [val, noise], labels)
    assert clean == 1.0 and spoiled < 0.7


def test_the_int8_frozen_layers_are_quantised_once_and_read_back_by_the_next_run(tiny_dataset, tmp_path,
                                                                                 every_run_tries_int8, monkeypatch):
    monkeypatch.setattr(prefix, "INT8_TOLERANCE", 1.0)
    from engine.models import quantize

    calls = []
    real = quantize.quantize_file
    monkeypatch.setattr(quantize, "quantize_file", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = run(tiny_dataset, tmp_path / "first")
    assert len(calls) == 1 and "quantised in an earlier run" not in first
    second = run(tiny_dataset, tmp_path / "second")  # the same frozen layers and pictures, the same store
    assert len(calls) == 1, "the second run quantised again"
    assert "quantised in an earlier run with the same layers and pictures: read back" in second
    assert "the training pictures' in int8)" in second


def test_with_several_tasks_each_task_is_probed_on_its_own_labels():
    """A multi-task run's check probes each task on the pictures labelled for it (the label combinations of two
    tasks, some pictures without a label, are no class of their own), and keeps int8 only when every task holds."""
    from types import SimpleNamespace

    from engine.train.multitask import MISSING, Task, encode

    tasks = [Task("shape", ("round", "square")), Task("size", ("small", "large"))]
    generator = torch.Generator().manual_seed(1)
    n = 80
    shape, size = torch.arange(n) % 2, (torch.arange(n) // 2) % 2
    size_known = torch.arange(n) % 5 != 0  # every fifth picture has no size label

    def outputs():
        x = torch.randn(n, 8, generator=generator)
        x[:, 0] += 6 * shape
        x[:, 1] += 6 * size
        return x

    codes = torch.tensor([encode([int(a), int(b) if k else MISSING], tasks)
                          for a, b, k in zip(shape, size, size_known)])
    logs: list[str] = []
    session = SimpleNamespace(criterion=SimpleNamespace(tasks=tasks), log=lambda message, *a: logs.append(message))
    train, val = outputs(), outputs()
    assert prefix._int8_kept(session, val, val.clone(), codes, train, codes)  # noqa: SLF001
    assert "; size " in logs[-1] and logs[-1].count("(+0.0 points)") == 2
    spoiled = val.clone()
    spoiled[:, 1] = torch.randn(n, generator=generator) * 20  # int8 lost what tells the sizes apart
    assert not prefix._int8_kept(session, val, spoiled, codes, train, codes)  # noqa: SLF001
    assert "computed again in full precision" in logs[-1] and logs[-1].count("(+0.0 points)") == 1  # shape held
