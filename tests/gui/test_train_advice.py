"""The Train step's learning-rate finder (curve, suggestion, one click to use it) and the training doctor's verdicts
after a run (each button changes the next run's settings)."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.trainer import RunResult

pytestmark = pytest.mark.usefixtures("quick_training")


@pytest.fixture
def panel(qtbot, tmp_path):
    from gui.steps.train.panel import TrainPanel

    widget = TrainPanel()
    qtbot.addWidget(widget)
    yield widget
    widget.shutdown()


def test_the_finder_draws_its_curve_and_its_suggestion_becomes_the_learning_rate(panel, qtbot, tiny_dataset, tmp_path):
    config = RunConfig(data=DataConfig(source=str(tiny_dataset)), model=ModelConfig("timm:test_resnet", "none"),
                       strategy="feature-extraction", epochs=2, lr=0.001,
                       train=TrainConfig(batch_size=8, workers=0, augment="none"), out=str(tmp_path / "runs"))
    panel.set_config(config)
    changed = []
    panel.configChanged.connect(changed.append)
    qtbot.mouseClick(panel.settings.find_lr, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.lr_plot.finding is not None or "stopped" in panel.status.text().lower()
                    or panel.jobs.idle(), timeout=120_000)
    finding = panel.lr_plot.finding
    assert finding is not None, panel.status.text()
    assert panel.tabs.currentWidget() is panel.lr_plot
    assert len(panel.lr_plot.curve.getData()[0]) == len(finding.lrs)
    assert panel.lr_plot.apply_button.isEnabled()
    panel.lr_plot.apply_button.click()
    chosen = float(f"{finding.suggestion:.2g}")
    assert panel.config().lr == pytest.approx(chosen)
    assert panel.settings.lr.value() == pytest.approx(chosen, rel=0.05)
    assert changed and changed[-1].lr == pytest.approx(chosen)


def test_the_doctor_shows_its_verdicts_after_a_run_and_a_button_applies_the_next_step(panel, tiny_run, tmp_path):
    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    config = RunConfig(data=DataConfig(source=str(tmp_path)), model=ModelConfig("timm:test_resnet", "none"),
                       strategy="feature-extraction", epochs=2, lr=0.001, train=TrainConfig(augment="light"),
                       out=str(tmp_path / "runs"))
    panel.set_config(config)
    panel.on_finished(RunResult("completed", str(run), 0.5, 1, 1, None))
    assert panel.tabs.currentWidget() is panel.doctor
    labels = [b.text() for b in panel.doctor.buttons]
    assert "Use strong augmentation" in labels  # eight pictures a class: too few
    panel.doctor.buttons[labels.index("Use strong augmentation")].click()
    assert panel.config().train.augment == "strong"
    assert panel.settings.augment.currentData() == "strong"


def test_a_run_without_findings_says_so(panel, tmp_path):
    from gui.widgets.doctor import HEALTHY

    panel.doctor.show_verdicts([], "run")
    assert panel.doctor.heading.text() == HEALTHY and not panel.doctor.buttons
