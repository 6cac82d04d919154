"""The frozen layers' pass has its own progress in the Train step (issue #22 item 7): the epoch bar says
'Preparing: computing the frozen layers once - 1,173 of 9,545 - about 1 min left' instead of 'Epoch: 0 %', then goes
back to the epoch once training steps begin."""

from __future__ import annotations

import pytest

from engine import events as ev
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.prefix import PREPARING
from gui.steps.train.panel import TrainPanel


@pytest.fixture
def panel(qtbot, tiny_dataset, tmp_path):
    panel = TrainPanel()
    qtbot.addWidget(panel)
    panel.set_config(RunConfig(data=DataConfig(source=str(tiny_dataset)), model=ModelConfig("timm:test_resnet", "none"),
                               strategy="feature-extraction", epochs=2, out=str(tmp_path / "runs"),
                               train=TrainConfig(workers=0)))
    panel.show()
    yield panel
    panel.shutdown()


def test_the_frozen_pass_shows_its_own_progress_then_the_epoch(panel, tmp_path):
    panel.on_event(ev.RunStarted(str(tmp_path / "run"), ("a", "b"), 3068, 600, "CPU", 2, 1000))
    panel.on_event(ev.Preparing(PREPARING, 0, 9545, None))
    assert panel.epoch_bar.text() == "Preparing: 0 of 9,545"
    panel.on_event(ev.Preparing(PREPARING, 1173, 9545, 70.0))
    text = "Preparing: computing the frozen layers once \u2014 1,173 of 9,545 \u2014 about 1 min left"
    assert panel.epoch_bar.text() == "Preparing: 1,173 of 9,545 \u2014 about 1 min left"
    assert panel.epoch_bar.value() == 12
    assert panel.status.text() == text
    panel.on_event(ev.Preparing(PREPARING, 9545, 9545, 0.0))
    assert panel.epoch_bar.value() == 100 and panel.epoch_bar.text().endswith("9,545 of 9,545 \u2014 done")
    panel.on_event(ev.StepEnded(0, 1, 3, 10, 0.5, 0.01, 100.0))
    assert panel.epoch_bar.text() == "Epoch: 30 %"
    assert panel.status.text().startswith("Epoch 1: step 3 of 10")


def test_a_new_run_starts_with_the_epoch_bar(panel, tmp_path):
    panel.on_event(ev.Preparing(PREPARING, 10, 100, 30.0))  # a run stopped while preparing
    panel.on_event(ev.RunStarted(str(tmp_path / "run"), ("a", "b"), 10, 5, "CPU", 2, 1000))
    assert panel.epoch_bar.text() == "Epoch: 0 %"
