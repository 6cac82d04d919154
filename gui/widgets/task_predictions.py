"""The Predict step's side of a multi-task model (engine.results.multitask): a task chooser, and the predictions of
every task kept so that the table, the picture panel and the summary show the chosen task's answer and confidence
like a single-task model's, while *Save as CSV...* writes every task's columns (``<task>``, ``<task>_confidence``).

The page's background job returns ``TaskBatch`` (its model's tasks and one TaskPrediction per picture) for a
multi-task model; ``take`` keeps it and gives the page ordinary Predictions of the chosen task. A single-task model's
Predictions pass through untouched and hide the chooser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.results.multitask import TaskPrediction, write_task_csv
from engine.results.predict import Prediction
from engine.train.multitask import Task, slices
from gui.widgets.task_chooser import TaskChooser


@dataclass(frozen=True)
class TaskBatch:
    """A batch of a multi-task model's predictions: its tasks and a row per picture."""

    tasks: tuple[Task, ...]
    rows: tuple[TaskPrediction, ...]


class TaskPredictions:
    """The predictions of every task, and which task the page shows (``chooser``). ``changed`` is called with the
    chosen task's rows when the user picks another task."""

    def __init__(self, changed: Callable[[list[Prediction]], None]) -> None:
        self.chooser = TaskChooser()
        self.chooser.combo.setToolTip("This model answers several questions (tasks) about each picture, each with its "
                                      "own head; choose the task whose answers and confidences the table shows. "
                                      "Save as CSV writes every task's answer and confidence.")
        self.tasks: tuple[Task, ...] = ()
        self.rows: list[TaskPrediction] = []
        self._changed = changed
        self.chooser.chosen.connect(lambda _: self._changed(self.shown()))

    @property
    def active(self) -> bool:
        return bool(self.tasks)

    def clear(self) -> None:
        self.rows = []

    def forget(self) -> None:
        """Another model: no tasks until its predictions come."""
        self.tasks, self.rows = (), []
        self.chooser.set_tasks([])

    def take(self, result) -> list[Prediction]:
        """The page's rows from a job's result: a TaskBatch kept (the chosen task's rows returned), Predictions as
        they are."""
        if not isinstance(result, TaskBatch):
            if self.tasks:
                self.forget()
            return list(result)
        if result.tasks != self.tasks:
            self.tasks, self.rows = result.tasks, []
            self.chooser.set_tasks([(t.name, len(t.classes)) for t in result.tasks])
        known = {r.path for r in self.rows}
        self.rows += [r for r in result.rows if r.path not in known]
        return self.for_task(result.rows)

    def current(self) -> str | None:
        return self.chooser.current() if self.tasks else None

    def for_task(self, rows: Sequence[TaskPrediction]) -> list[Prediction]:
        name = self.current()
        return [r.prediction(name) for r in rows]

    def shown(self) -> list[Prediction]:
        """Every picture's answer for the chosen task."""
        return self.for_task(self.rows)

    def columns(self) -> list[str | None]:
        """The model's output columns, named by the chosen task's classes (None for the other tasks' columns): the
        heat map's choice of class finds the chosen task's column by its class name."""
        if not self.tasks:
            return []
        out: list[str | None] = [None] * sum(len(t.classes) for t in self.tasks)
        for task, sl in zip(self.tasks, slices(self.tasks)):
            if task.name == self.current():
                out[sl] = list(task.classes)
        return out

    def write_csv(self, path: str) -> Path:
        """Every picture with each task's answer and confidence (engine.results.multitask.write_task_csv)."""
        return write_task_csv(self.rows, path, self.tasks)
