"""The frozen pass in int8 decides its check after the first augmented view (engine.train.prefix._compute): a refused
int8 prefix computes only that view in int8 before the fp32 fall-back, and a kept one computes every view in int8."""

from __future__ import annotations

import threading

import pytest

import engine.train.prefix as prefix
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import fit

pytestmark = pytest.mark.usefixtures("quick_training")
VIEWS = 3


@pytest.fixture
def int8_pictures(monkeypatch, tmp_path):
    """Every run tries int8 (the tiny set is below INT8_FROM; speed is not what is checked); counts the pictures the
    int8 prefix computes."""
    monkeypatch.setattr(prefix, "INT8_FROM", 0)
    monkeypatch.setattr(prefix, "_int8_faster", lambda *args: True)  # not timed: only the outputs' pictures count
    monkeypatch.setenv("TRANSFER_STUDIO_FROZEN_CACHE", str(tmp_path / "frozen"))
    counted = {"pictures": 0}
    make = prefix.feats.int8_prefix

    def counting(*args, **kwargs):
        low = make(*args, **kwargs)
        if low is not None:
            forward = low.forward

            def run(x):
                counted["pictures"] += int(x.shape[0])
                return forward(x)
            low.forward = run
        return low

    monkeypatch.setattr(prefix.feats, "int8_prefix", counting)
    return counted


def run(data, out):
    logs: list[str] = []
    config = RunConfig(data=DataConfig(source=str(data), val_fraction=0.25),
                       model=ModelConfig("timm:test_resnet", "none"), strategy="feature-extraction", epochs=VIEWS,
                       lr=0.01, train=TrainConfig(batch_size=8, workers=0, augment="light", feature_views=VIEWS,
                                                  precision="auto"), out=str(out))
    result = fit(config, lambda e: logs.append(e.message) if isinstance(e, ev.Log) else None, threading.Event())
    assert result.status == "completed", result.error
    return "\n".join(logs), result


def pictures(logs: str) -> tuple[int, int]:
    import re

    found = re.search(r"each of the (\d+) training pictures, and each of the (\d+) validation pictures", logs)
    return int(found.group(1)), int(found.group(2))


def test_a_refused_int8_prefix_computes_one_view_before_falling_back(tiny_dataset, tmp_path, int8_pictures,
                                                                     monkeypatch):
    monkeypatch.setattr(prefix, "INT8_TOLERANCE", -1.0)  # no difference can pass
    logs, result = run(tiny_dataset, tmp_path / "runs")
    n_train, n_val = pictures(logs)
    assert "computed again in full precision (fp32)" in logs and "in int8)" not in logs
    assert int8_pictures["pictures"] == n_val + n_train  # the check's validation pictures and one view, not three
    assert 0.0 <= result.best_val_acc <= 1.0


def test_a_kept_int8_prefix_computes_every_view(tiny_dataset, tmp_path, int8_pictures, monkeypatch):
    monkeypatch.setattr(prefix, "INT8_TOLERANCE", 1.0)  # any difference passes
    logs, _ = run(tiny_dataset, tmp_path / "runs")
    n_train, n_val = pictures(logs)
    assert "so the int8 outputs are kept" in logs and "the training pictures' in int8)" in logs
    assert int8_pictures["pictures"] == n_val + VIEWS * n_train
