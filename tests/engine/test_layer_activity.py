"""LayerActivity (issue #5, engine side): which stages learn. Frozen stages report 0, trained ones their mean gradient
norm and their last update relative to their weights, on the normal path and on cached outputs alike."""

from __future__ import annotations

import math
import threading

import pytest

import engine.train.activity
from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import fit

MODEL = "timm:test_resnet"
STAGES = ("stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "head")


pytestmark = pytest.mark.usefixtures("quick_training")


def config_for(data, out, strategy, epochs=2, **train) -> RunConfig:
    # 18 training pictures in batches of 4: 4 steps an epoch.
    train = TrainConfig(**{"batch_size": 4, "workers": 0, "warmup_epochs": 0.0, "augment": "none",
                           "label_smoothing": 0.0, **train})
    return RunConfig(data=DataConfig(source=str(data), val_fraction=0.25), model=ModelConfig(MODEL, "none"),
                     strategy=strategy, epochs=epochs, lr=0.01, train=train, out=str(out))


class Recorder:
    def __init__(self):
        self.events = []
        self.stop = threading.Event()

    def __call__(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def activity_by_phase(self) -> list[tuple[ev.PhaseStarted, list[ev.LayerActivity]]]:
        phases = []
        for e in self.events:
            if isinstance(e, ev.PhaseStarted):
                phases.append((e, []))
            elif isinstance(e, ev.LayerActivity):
                phases[-1][1].append(e)
        return phases


def moving(event: ev.LayerActivity) -> set[str]:
    """The stages whose gradients and weights moved."""
    grads = {s for s, g in zip(event.stages, event.grad_norms) if g > 0}
    updates = {s for s, r in zip(event.stages, event.update_ratios) if r > 0}
    assert grads == updates, event
    return grads


def check_plain(event: ev.LayerActivity) -> None:
    assert event.stages == STAGES
    assert len(event.grad_norms) == len(event.update_ratios) == len(STAGES)
    for value in event.grad_norms + event.update_ratios:
        assert type(value) is float and math.isfinite(value) and value >= 0
    assert all(r < 1 for r in event.update_ratios)  # a step changes a stage by a small fraction of its weights


@pytest.mark.parametrize("cache_features", [True, False], ids=["cached-outputs", "normal-path"])
def test_feature_extraction_moves_only_the_head(tiny_dataset, tmp_path, cache_features):
    rec = Recorder()
    result = fit(config_for(tiny_dataset, tmp_path, "feature-extraction", cache_features=cache_features), rec)
    assert result.status == "completed", result.error
    events = rec.of(ev.LayerActivity)
    assert events
    for e in events:
        check_plain(e)
        assert moving(e) == {"head"}


def test_fine_tune_deep_moves_every_stage(tiny_dataset, tmp_path):
    rec = Recorder()
    assert fit(config_for(tiny_dataset, tmp_path, "fine-tune-deep"), rec).status == "completed"
    for e in rec.of(ev.LayerActivity):
        check_plain(e)
        assert moving(e) == set(STAGES)


def test_progressive_moves_one_more_stage_each_phase(tiny_dataset, tmp_path):
    """Phases 2-4 train a suffix on the cached outputs of the frozen stages below it: those report 0, the suffix
    reports its own activity."""
    rec = Recorder()
    assert fit(config_for(tiny_dataset, tmp_path, "progressive", epochs=4), rec).status == "completed"
    seen = []
    for phase, events in rec.activity_by_phase():
        assert events, phase
        for e in events:
            check_plain(e)
            assert moving(e) == set(phase.stages)
        seen.append(set(phase.stages))
    assert seen == [{"head"}, {"head", "layer4.0"}, {"head", "layer4.0", "layer3.0"},
                    {"head", "layer4.0", "layer3.0", "layer2.0"}]
    logs = " ".join(e.message for e in rec.of(ev.Log))
    assert "the frozen stages stem to layer3.0 do not change" in logs  # phase 2 did train on cached outputs


def test_events_come_every_few_steps_and_at_each_epoch_end(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_EVERY", 3)
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_MIN_S", 0.0)  # however quick the steps
    rec = Recorder()
    assert fit(config_for(tiny_dataset, tmp_path, "fine-tune-deep", epochs=2), rec).status == "completed"
    assert [(e.epoch, e.step) for e in rec.of(ev.LayerActivity)] == [(1, 3), (1, 4), (2, 6), (2, 8)]
    # each right after the step it reports
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in rec.events
             if isinstance(e, (ev.StepEnded, ev.LayerActivity))]
    assert kinds[kinds.index(("LayerActivity", 3)) - 1] == ("StepEnded", 3)


@pytest.mark.parametrize("share", [1.0, 1e-9], ids=["every-step", "every-nth-step"])
def test_the_norms_are_each_stages_gradient_norm_averaged_over_the_steps(tiny_dataset, tmp_path, monkeypatch,
                                                                          share):
    """Checked against a plain computation (each stage's parameters' gradients, squared and summed, per measured
    step). With a tiny allowed time share, only the reporting steps are measured; the events still come."""
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_EVERY", 3)
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_MIN_S", 0.0)
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_SHARE", share)
    measured = []  # per measured step: each stage's gradient norm
    add = engine.train.activity.Activity.add_gradients

    def spy(self):
        sums = [0.0] * len(self.stages)
        for p, i in zip(self.params, self.index.tolist()):
            if p.grad is not None:
                sums[i] += float(p.grad.double().pow(2).sum())
        measured.append([math.sqrt(s) for s in sums])
        add(self)

    monkeypatch.setattr(engine.train.activity.Activity, "add_gradients", spy)
    marks = [0]  # how many steps were measured when each event came

    class Marking(Recorder):
        def __call__(self, event):
            super().__call__(event)
            if isinstance(event, ev.LayerActivity):
                marks.append(len(measured))

    rec = Marking()
    assert fit(config_for(tiny_dataset, tmp_path, "fine-tune-shallow", epochs=3), rec).status == "completed"
    events = rec.of(ev.LayerActivity)
    assert [e.step for e in events] == [3, 4, 6, 8, 9, 12]
    if share == 1.0:
        assert len(measured) == 12  # every step
    else:
        assert len(measured) < 12  # the first step and the reporting ones
    for e, a, b in zip(events, marks, marks[1:]):
        assert b > a  # a reporting step is always measured
        expected = [sum(step[i] for step in measured[a:b]) / (b - a) for i in range(len(STAGES))]
        assert e.grad_norms == pytest.approx(expected, rel=1e-5, abs=1e-12)
        assert moving(e) == {"head", "layer3.0", "layer4.0"}  # fine-tune-shallow: the last 2 body stages


def test_no_events_when_turned_off(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(engine.train.activity, "LAYER_ACTIVITY_EVERY", 0)
    rec = Recorder()
    assert fit(config_for(tiny_dataset, tmp_path, "feature-extraction", epochs=1), rec).status == "completed"
    assert not rec.of(ev.LayerActivity)
