"""A task chooser for the results of a multi-task run (engine.results.multitask): which task the page shows.

``set_evaluation(evaluation)`` (or ``set_tasks``: the Predict step) lists the evaluation's tasks (hidden for a single-task run, keeping the chosen task
when the new evaluation has it); ``view(evaluation)`` is the chosen task's evaluation, which the page shows like any
single-task one; ``chosen`` is emitted when the user picks another task.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget


class TaskChooser(QWidget):
    chosen = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Task:"))
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.combo.setToolTip("This model answers several questions (tasks) about each picture, each with its own "
                              "head; choose the task whose numbers, confusion matrix and mistakes are shown.")
        layout.addWidget(self.combo)
        self.combo.currentIndexChanged.connect(self._changed)
        self._updating = False
        self.hide()

    def current(self) -> str | None:
        return self.combo.currentData()

    def set_evaluation(self, evaluation) -> None:
        tasks = list(getattr(evaluation, "tasks", None) or {}) if evaluation is not None else []
        self.set_tasks([(name, len(evaluation.tasks[name].classes)) for name in tasks])

    def set_tasks(self, tasks: list[tuple[str, int]]) -> None:
        """(task, number of classes) of each task, in the model's order; none: hidden (a single-task model). The
        chosen task stays chosen when the new list has it."""
        names = [name for name, _ in tasks]
        previous = self.current()
        self._updating = True
        try:
            self.combo.clear()
            for name, classes in tasks:
                self.combo.addItem(f"{name} ({classes} classes)", name)
            if previous in names:
                self.combo.setCurrentIndex(names.index(previous))
        finally:
            self._updating = False
        self.setVisible(bool(tasks))

    def view(self, evaluation):
        """The chosen task's evaluation (the evaluation itself for a single-task run)."""
        name = self.current()
        if evaluation is None or not getattr(evaluation, "tasks", None) or name not in evaluation.tasks:
            return evaluation
        return evaluation.tasks[name]

    def _changed(self) -> None:
        if not self._updating and self.current() is not None:
            self.chosen.emit(self.current())
