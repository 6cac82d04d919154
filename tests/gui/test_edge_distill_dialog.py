"""The Predict & Export step's *Distil into a smaller model* dialog: its settings reach the engine, the work runs as a
background job and ends with the teacher-vs-student table and a new run; a bad student name is a sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.config import DEFAULT_FEATURE_WEIGHT, load
from gui.widgets.distill import DistillDialog

pytestmark = pytest.mark.usefixtures("quick_training")


def test_the_dialog_distils_with_its_settings_and_shows_the_table(qtbot, tiny_run):
    dialog = DistillDialog(str(tiny_run))
    qtbot.addWidget(dialog)
    dialog.student_combo.setCurrentText("timm:test_efficientnet")
    dialog.weights_combo.setCurrentIndex(dialog.weights_combo.findData("none"))
    dialog.epochs_spin.setValue(1)
    dialog.soft_spin.setValue(0.4)
    dialog.temperature_spin.setValue(3.0)
    assert dialog.feature_spin.value() == DEFAULT_FEATURE_WEIGHT  # the recommended weight, shown
    dialog.feature_spin.setValue(2.5)
    assert dialog.hard_label.text() == "labels: 0.60"
    with qtbot.waitSignal(dialog.distilled, timeout=180_000) as signal:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()  # running in the background
    run = Path(signal.args[0])
    qtbot.waitUntil(lambda: not dialog.jobs.running("distill"), timeout=10_000)
    config = load(run / "config.toml")
    assert config.model.name == "timm:test_efficientnet" and config.model.weights == "none"
    assert (config.distill.soft_weight, config.distill.temperature, config.epochs) == (0.4, 3.0, 1)
    assert config.distill.feature_weight == 2.5
    assert Path(config.distill.teacher) == tiny_run.resolve()
    assert "Teacher" in dialog.table.text() and "timm:test_efficientnet" in dialog.table.text()
    assert run.name in dialog.status.text() and "Distillation: the teacher" in dialog.log.toPlainText()
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_a_student_that_does_not_exist_is_a_sentence(qtbot, tiny_run):
    dialog = DistillDialog(str(tiny_run))
    qtbot.addWidget(dialog)
    dialog.student_combo.setCurrentText("timm:no_such_model")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.jobs.running("distill"), timeout=30_000)
    assert "no_such_model" in dialog.status.text() and "Traceback" not in dialog.status.text()


def test_a_failure_with_quotes_reads_as_a_sentence(qtbot, tiny_run):
    from PySide6.QtGui import QTextDocument

    dialog = DistillDialog(str(tiny_run))
    qtbot.addWidget(dialog)
    dialog._failed("The weights are not here: choose a weight file or 'none'.")  # noqa: SLF001
    text, shown = dialog.status.text(), QTextDocument()
    # What the label shows: its text as HTML when set to rich text, or when Qt's guess (auto) takes it for HTML.
    rich = dialog.status.textFormat() == Qt.TextFormat.RichText or (
        dialog.status.textFormat() == Qt.TextFormat.AutoText and Qt.mightBeRichText(text))
    shown.setHtml(text) if rich else shown.setPlainText(text)
    assert shown.toPlainText() == "The weights are not here: choose a weight file or 'none'."
