"""Plugs the Model, Layers and Train steps into the main window and keeps them in step with the project.

The project's RunConfig stays the single source of truth: each page edits it through the ProjectModel and redraws
itself from ``config_changed``. Kept out of MainWindow so that the window stays a thin shell.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMessageBox

from engine.config import RunConfig
from engine.errors import ConfigError
from gui.steps.layers import LayerEditor
from gui.steps.model import ModelPicker
from gui.sidebar import StepState
from gui.steps.train.panel import TrainPanel


class TrainingSteps(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.project = window.project
        config = self.project.config
        self.picker = ModelPicker(window, runs_folder=config.out)
        self.editor = LayerEditor(window)
        self.train = TrainPanel(window)
        window.steps.set_page("model", self.picker)
        window.steps.set_page("layers", self.editor)
        window.steps.set_page("train", self.train)
        self.train.set_dataset(self.project.dataset)
        self._built_for: tuple | None = None

        self.picker.modelChosen.connect(self._model_chosen)
        self.editor.planChanged.connect(self._plan_changed)
        self.train.configChanged.connect(self._set_config)
        self.train.runFinished.connect(self._run_finished)
        self.project.config_changed.connect(self._config_changed)
        self.project.dataset_changed.connect(self._dataset_changed)
        self.project.project_replaced.connect(self._refresh)
        self._refresh()

    # --- project -> pages -------------------------------------------------------------------------------------

    def _dataset_changed(self, dataset) -> None:
        self.train.set_dataset(dataset)
        self._refresh()

    def _refresh(self) -> None:
        self._config_changed(self.project.config)

    def _config_changed(self, config: RunConfig) -> None:
        self.picker.set_runs_folder(config.out)
        self.editor.set_config(config)
        self.train.set_config(config)
        self._open_model(config)
        self._update_states(config)

    def _open_model(self, config: RunConfig) -> None:
        """Build the chosen model for the Layers step once the number of classes is known (off the GUI thread)."""
        dataset = self.project.dataset
        if dataset is None:
            return
        key = (config.model.name, config.model.weights, len(dataset.classes))
        if key != self._built_for:
            self._built_for = key
            self.editor.open_model(*key)

    def _update_states(self, config: RunConfig) -> None:
        steps = self.window.steps
        has_data = self.project.dataset is not None
        steps.set_state("model", StepState.DONE, f"{config.model.name} with weights: {config.model.weights}.")
        if not has_data:
            reason = "Open a folder of pictures first: the new head needs to know your classes."
            steps.set_state("layers", StepState.BLOCKED, reason)
            steps.set_state("train", StepState.BLOCKED, "Open a folder of pictures first.")
            return
        problem = self.editor.problem()
        steps.set_state("layers", StepState.ATTENTION if problem else StepState.DONE,
                        problem or f"Strategy: {config.strategy}.")
        if not self.train.running:
            result = self.train.last_result
            done = result is not None and result.status == "completed"
            steps.set_state("train", StepState.DONE if done else StepState.READY,
                            "A run has finished: see Evaluate." if done else "Ready to train.")

    # --- pages -> project -------------------------------------------------------------------------------------

    def _set_config(self, config: RunConfig) -> None:
        try:
            self.project.set_config(config)
        except ConfigError as exc:
            self.window.show_status(str(exc))

    def _model_chosen(self, name: str, weights: str) -> None:
        self.project.update_model(name=name, weights=weights)

    def _plan_changed(self, phases, strategy) -> None:
        if self.editor.problem() is None:
            self._set_config(self.editor.apply_to(self.project.config))
        else:
            self._update_states(self.project.config)

    def _run_finished(self, result) -> None:
        self.picker.refresh_offline()  # a finished run is a model one can start from
        self._update_states(self.project.config)

    # --- the window's close path ------------------------------------------------------------------------------

    def confirm_close(self) -> bool:
        """Ask before closing during a run; the run is then stopped and saved by ``shutdown``."""
        if not self.train.running:
            return True
        answer = QMessageBox.question(
            self.window, "Training in progress",
            "A model is training. Stop the run and close? Everything trained so far is saved in its run folder.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        self.train.shutdown()
