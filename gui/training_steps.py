"""Plugs the Model, Layers and Train steps into the main window and keeps them in step with the project.

The project's RunConfig stays the single source of truth: each page edits it through the ProjectModel and redraws
itself from ``config_changed``. Kept out of MainWindow so that the window stays a thin shell.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMessageBox

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.models import catalogue
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
        self.picker = ModelPicker(window, runs_folder=config.out, jobs=window.jobs)
        self.editor = LayerEditor(window, jobs=window.jobs)
        self.train = TrainPanel(window)
        window.steps.set_page("model", self.picker)
        window.steps.set_page("layers", self.editor)
        window.steps.set_page("train", self.train)
        self.train.set_dataset(self.project.dataset)
        self._built_for: tuple | None = None
        self._shown_model: tuple[str, str] | None = None  # the (model, weights) the picker was last set to
        self._catalogue_error: str | None = None

        self.picker.modelChosen.connect(self._model_chosen)
        self.picker.catalogueLoaded.connect(self._weights_changed)
        self.picker.weightsArrived.connect(self._weights_changed)
        self.picker.catalogueFailed.connect(self._catalogue_failed)
        self.editor.planChanged.connect(self._plan_changed)
        self.train.configChanged.connect(self._set_config)
        self.train.runFinished.connect(self._run_finished)
        self.train.history.runsChanged.connect(lambda _count: self._update_states(self.project.config)
                                               if self.project.is_open else None)
        self.project.config_changed.connect(self._config_changed)
        self.project.dataset_changed.connect(self._dataset_changed)
        self.project.project_replaced.connect(self._project_replaced)
        self._refresh()

    # --- project -> pages -------------------------------------------------------------------------------------

    def _dataset_changed(self, dataset) -> None:
        self.train.set_dataset(dataset)
        self._refresh()

    def _refresh(self) -> None:
        self._config_changed(self.project.config)

    def _project_replaced(self, *_) -> None:
        self._shown_model = None  # another project: the catalogue shows its model, whatever was browsed before
        self._refresh()

    def _weights_changed(self) -> None:
        """The catalogue has loaded, or weights were downloaded: whether the model can start may have changed."""
        config = self.project.config
        self._open_model(config)
        self._update_states(config)

    def _catalogue_failed(self, message: str) -> None:
        self._catalogue_error = message
        self._update_states(self.project.config)

    def _config_changed(self, config: RunConfig) -> None:
        shown = (config.model.name, config.model.weights)
        if shown != self._shown_model:  # the catalogue highlights the project's model and weights
            self._shown_model = shown
            self.picker.set_config(config)
        else:
            self.picker.set_runs_folder(config.out)
            self.picker.data_source = config.data.source  # "Suggest models" scores on the project's pictures
        self.editor.set_config(config)
        self.train.set_config(config)
        self._open_model(config)
        self._update_states(config)

    def _open_model(self, config: RunConfig) -> None:
        """Build the chosen model for the Layers step once the number of classes is known (off the GUI thread)."""
        dataset = self.project.dataset
        if dataset is None or self.model_state(config)[0] is not StepState.DONE:
            return  # not before the weights are on this computer: no surprise download, no build that must fail
        key = (config.model.name, config.model.weights, len(dataset.classes))
        if key != self._built_for:
            self._built_for = key
            self.editor.open_model(*key)

    def _update_states(self, config: RunConfig) -> None:
        steps = self.window.steps
        has_data = self.project.dataset is not None
        model_state, model_reason = self.model_state(config)
        steps.set_state("model", model_state, model_reason)
        if not has_data:
            reason = "Open a folder of pictures first: the new head needs to know your classes."
            steps.set_state("layers", StepState.BLOCKED, reason)
            self._train_state(StepState.BLOCKED, "Open a folder of pictures first.")
            return
        if model_state is not StepState.DONE:
            if model_state is StepState.ATTENTION:
                reason = f"First choose weights in the Model step. {model_reason}"
            else:
                reason = "Waiting for the Model step to find out where the model's weights are ..."
            steps.set_state("layers", StepState.BLOCKED, reason)
            self._train_state(StepState.BLOCKED, reason)
            return
        problem = self.editor.problem()
        steps.set_state("layers", StepState.ATTENTION if problem else StepState.DONE,
                        problem or f"Strategy: {config.strategy}.")
        if not self.train.running:
            result = self.train.last_result
            done = result is not None and result.status == "completed"
            # A project reopened with a trained model is as done as one whose run just ended.
            earlier = any(info.status == "completed" for info in self.train.history.infos)
            self._train_state(StepState.DONE if done or earlier else StepState.READY,
                              "A run has finished: see Evaluate." if done else
                              "This project has a trained model: see Evaluate, or train again." if earlier else
                              "Ready to train.")
        else:
            self.train.set_blocked("")

    def _train_state(self, state: StepState, reason: str) -> None:
        """The Train step's state in the sidebar; Start is disabled while the step is blocked, saying why."""
        self.window.steps.set_state("train", state, reason)
        self.train.set_blocked(reason if state is StepState.BLOCKED else "")

    def model_state(self, config: RunConfig) -> tuple[StepState, str]:
        """The Model step's state: done only when the model can start from its weights on this computer now
        (pretrained weights in a local cache, a weight file that exists, or random weights); needs attention, with
        what to do, otherwise. Quick, and never touches the network."""
        name, weights = config.model.name, config.model.weights
        arch = name.split(":", 1)[-1]
        if weights == "pretrained" and not self.picker.catalogue_ready():
            if self._catalogue_error:
                return StepState.ATTENTION, self._catalogue_error
            return StepState.READY, f"Checking whether the pretrained weights of {arch} are on this computer ..."
        problem = catalogue.weights_problem(name, weights)
        if problem:
            return StepState.ATTENTION, problem
        if weights == "pretrained":
            return StepState.DONE, f"{arch} with pretrained weights (on this computer)."
        if weights == "none":
            return StepState.DONE, f"{arch} with random weights (no pretraining)."
        return StepState.DONE, f"{arch} starting from the weight file {Path(weights).name}."

    # --- pages -> project -------------------------------------------------------------------------------------

    def _set_config(self, config: RunConfig) -> None:
        if not self.project.is_open:  # a page reporting a change after the project was closed: nothing to change
            return
        try:
            self.project.set_config(config)
        except ConfigError as exc:
            self.window.show_status(str(exc))

    def _model_chosen(self, name: str, weights: str) -> None:
        if self.project.is_open:
            self.project.update_model(name=name, weights=weights)

    def _plan_changed(self, phases, strategy) -> None:
        if not self.project.is_open:
            return
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
        """Stop the training run (the picker's and the editor's jobs stop with the window's job service)."""
        self.train.shutdown()
