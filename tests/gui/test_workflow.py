"""The whole workflow in the real window, as a user goes through it: open a folder, choose a model, choose what to
retrain in the Layers step, save the project, train from the Train step. What the editor showed is what the project
file holds and what the run folder records and trains."""

from __future__ import annotations

from pathlib import Path

import dataclasses

from PySide6.QtCore import Qt

from engine import events as ev
from engine.config import load as load_config
from engine.train.strategies import apply_phase
from engine.models.layers import build_layer_tree
from engine.models.build import build_model
from engine.project.project import open_project
from gui.widgets.format import format_count
from gui.sidebar import StepState
from tests.gui.test_main_window import make_window, wait_scanned

MODEL = "timm:resnet18"


def test_the_plan_chosen_in_the_layers_step_is_saved_and_trained(qtbot, tmp_path, tiny_dataset):
    window = make_window(qtbot, tmp_path / "home")
    try:
        window.open_folder(tiny_dataset)
        wait_scanned(qtbot, window)
        project = window.project
        project.update_model(name=MODEL, weights="none")
        project.update_train(batch_size=8, workers=0)
        project.set_config(dataclasses.replace(project.config, epochs=1, out=str(tmp_path / "runs")))

        # Layers: the model is built off the GUI thread; then the user picks shallow fine-tuning.
        editor = window.training.editor
        qtbot.waitUntil(lambda: editor._tree is not None and editor.stack.currentIndex() == 2, timeout=120_000)
        qtbot.mouseClick(editor.preset_buttons["fine-tune-shallow"], Qt.MouseButton.LeftButton)
        assert project.config.strategy == "fine-tune-shallow"
        phases = editor.phases()  # what the editor shows
        assert phases and len(phases) == 1
        shown = editor.summary_label.text()  # "... of ... parameters will train (..%)"
        assert window.steps.state("layers")[0] is StepState.DONE
        assert window.steps.state("train")[0] is not StepState.BLOCKED

        # Save: the project file holds exactly that plan.
        path = tmp_path / "bees.tsproj"
        assert window._save_to(str(path))
        saved = open_project(path).project.config
        assert saved.strategy == "fine-tune-shallow" and saved.phases in ((), phases)  # a preset is stored by name

        # Train from the Train step.
        panel = window.training.train
        trainable = []
        panel.controller.event.connect(lambda e: trainable.append(e.trainable_params)
                                       if isinstance(e, ev.PhaseStarted) else None)
        with qtbot.waitSignal(panel.runFinished, timeout=300_000) as finished:
            qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        result = finished.args[0]
        assert result.status == "completed", result.error

        # The run folder records the same plan, and the engine trained the parameters the editor counted.
        recorded = load_config(Path(result.run_dir) / "config.toml")
        assert recorded.phases == phases and recorded.strategy == "fine-tune-shallow"
        built = build_model(MODEL, "none", 3)
        expected = apply_phase(built.model, build_layer_tree(built.model, built.head), phases[0])
        assert trainable == [expected]
        assert f"<b>{format_count(expected)} of" in shown
        frozen = [n for n, p in built.model.named_parameters() if not p.requires_grad]
        assert frozen and "conv1.weight" in frozen  # shallow fine-tuning leaves the first layers as they were
    finally:
        window.shutdown()
