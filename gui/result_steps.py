"""Plugs the Evaluate and Predict & Export steps into the main window and keeps them in step with the project.

Both pages list the project's runs (``project.config.out``); the list is read again when the runs folder changes,
when another project opens and when a training run ends (the new run is then chosen). The steps say how they stand:
not yet possible until a run has completed, ready, then done once the chosen run is evaluated (Evaluate) or a model
was exported (Predict & Export). Kept out of MainWindow so that the window stays a thin shell. Their background
work runs on lanes of the window's job service, which the window shuts down when it closes.
"""

from __future__ import annotations

from gui.support import qt_compat  # noqa: F401  (first: guards against a PySide6 bug, see the module)

from PySide6.QtCore import QObject

from gui.steps.evaluate import EvaluatePage
from gui.steps.predict import PredictPage
from gui.widgets.format import plural
from gui.support.jobs import ModelCache
from gui.sidebar import StepState

EVALUATE, EXPORT = "evaluate", "export"


class ResultSteps(QObject):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.project = window.project
        self.cache = ModelCache()  # one model in memory for both pages' heat maps and predictions
        self.evaluate = EvaluatePage(jobs=window.jobs, cache=self.cache)
        self.predict = PredictPage(jobs=window.jobs, cache=self.cache)
        window.steps.set_page(EVALUATE, self.evaluate)
        window.steps.set_page(EXPORT, self.predict)
        self._closed = False

        self.project.config_changed.connect(lambda config: self._set_folder(config.out))
        self.project.project_replaced.connect(self.refresh)
        self.evaluate.evaluated.connect(lambda _: self._update_states())
        self.evaluate.runsChanged.connect(self._update_states)
        self.evaluate.run_chooser.runChosen.connect(self._update_states)
        self.predict.exported.connect(lambda _: self._update_states())
        training = getattr(window, "training", None)
        if training is not None:
            training.train.runFinished.connect(self._run_finished)
        self.refresh()

    def refresh(self) -> None:
        folder = self.project.config.out if self.project.is_open else None
        self.evaluate.set_runs_folder(folder)
        self.predict.set_runs_folder(folder)
        self.evaluate.refresh_runs()
        self.predict.refresh_runs()
        self._update_states()

    def _set_folder(self, folder: str) -> None:
        self.evaluate.set_runs_folder(folder)
        self.predict.set_runs_folder(folder)
        self._update_states()

    def _run_finished(self, result) -> None:
        """A training run ended: list it, and choose it when it completed."""
        select = result.run_dir if getattr(result, "status", None) == "completed" and result.run_dir else None
        self.evaluate.refresh_runs(select)
        self.predict.refresh_runs(select)
        self._update_states()

    def _update_states(self) -> None:
        steps = self.window.steps
        if not self.project.is_open:
            reason = "Open a project and train a model first."
            steps.set_state(EVALUATE, StepState.BLOCKED, reason)
            steps.set_state(EXPORT, StepState.BLOCKED, reason)
            return
        if not self.evaluate.completed_runs():
            reason = ("No model has finished training yet: train one in the Train step first."
                      if not self.evaluate.infos else
                      "No run has completed yet: train a model to the end in the Train step first.")
            steps.set_state(EVALUATE, StepState.BLOCKED, reason)
            steps.set_state(EXPORT, StepState.BLOCKED, reason)
            return
        if self.evaluate.evaluation is not None:
            split = next(iter(self.evaluate.evaluation.splits.values()))
            steps.set_state(EVALUATE, StepState.DONE, f"Evaluated: {split.accuracy:.1%} right on the "
                                                      f"{plural(split.count, 'picture')}.")
        else:
            steps.set_state(EVALUATE, StepState.READY, "A trained model is ready: press Evaluate to measure it.")
        if self.predict.last_export is not None:
            steps.set_state(EXPORT, StepState.DONE, f"Exported to {self.predict.last_export.out_dir}.")
        else:
            steps.set_state(EXPORT, StepState.READY, "Classify new pictures, or export the model.")

    def shutdown(self) -> None:
        """Stop the pages' background work and wait for it (the window's shutdown does this for every step); safe to
        call twice."""
        if self._closed:
            return
        self._closed = True
        self.evaluate.shutdown()
        self.predict.shutdown()
