"""The data doctor (engine.advise.doctor) on a CSV of several tasks (engine.train.multitask): every check task by task.

A multi-task dataset's pictures carry one label per task (or none for some), coded into one class per combination of
labels. Judging labels, counting classes or weighing imbalance on those combinations would be wrong twice over: a
combination is not a class anyone labelled, and a rare combination is not a rare class. So here:

- **Class counts and balance, per task**: each task's pictures per split and class, its pictures without a label, and
  the scan's advice for that task (a class with too few training pictures, none for validation, an imbalance of 5 to 1
  or more), in the summary's sentences and under ``tasks`` in the JSON.
- **Likely wrong labels, per task**: confident learning (engine.advise.labels) on the pictures labelled for the task,
  against that task's classes; each finding's ``given`` and ``suggested`` name the task (``stage: larva``), so the
  JSON keeps the single-task keys.
- **Copies and suspicious pictures** do not depend on labels: the same checks as for one task (a copy's labels are
  the picture's labels for every task; copies whose labels differ on any task are conflicts).

``diagnose_any(index, ...)`` picks this for a MultiTaskIndex and engine.advise.doctor.diagnose otherwise: the command
line (``main.py doctor``) and the window's review call it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.advise import doctor as dr
from engine.data.scan import DatasetIndex, Sample
from engine.train.multitask import MISSING, MultiTaskIndex, scan_tasks, wants_tasks


@dataclass
class TaskDoctorReport(dr.DoctorReport):
    """A DoctorReport with each task's counts and advice (``tasks``)."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # {task: {classes, counts, unlabelled, advice}}

    def task_lines(self) -> list[str]:
        """One sentence per task: its classes and training pictures, then its advice."""
        out = []
        for name, t in self.tasks.items():
            train = t["counts"].get("train", {})
            shown = ", ".join(f"{c} {n}" for c, n in train.items())
            unlabelled = sum(t["unlabelled"].values())
            out.append(f"Task '{name}': {len(t['classes'])} classes (training pictures: {shown})"
                       + (f"; {dr._plural(unlabelled, 'picture')} without a label for it" if unlabelled else "")
                       + ".")
            out += [f"Task '{name}': {a}" for a in t["advice"]]
        return out

    def summary(self) -> list[str]:
        found = super().summary()
        if found == ["No likely mistakes found."] and any(t["advice"] for t in self.tasks.values()):
            found = []
        return self.task_lines() + found

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "tasks": self.tasks}


def scan_for_doctor(data, on_progress=None, stop: threading.Event | None = None) -> DatasetIndex | None:
    """The pictures of a task CSV (a DataConfig's source with several task columns), or None: engine.data.scan reads
    the source."""
    if not wants_tasks(data.source, data.tasks):
        return None
    return scan_tasks(data.source, data.tasks, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                      seed=data.split_seed, split=data.split, stop=stop)


def diagnose_any(index: DatasetIndex, **kwargs) -> dr.DoctorReport:
    """engine.advise.doctor.diagnose, task by task when ``index`` has several tasks."""
    if isinstance(index, MultiTaskIndex):
        return diagnose_tasks(index, **kwargs)
    return dr.diagnose(index, **kwargs)


def _task_summary(index: MultiTaskIndex) -> dict[str, dict[str, Any]]:
    from engine.data.scan import class_advice

    out = {}
    for task, counts in zip(index.tasks, index.task_counts().values()):
        per_split = {split: {c: n for c, n in row.items() if c} for split, row in counts.items()}
        advice = [a.message for a in class_advice(per_split, index.split_source)]
        out[task.name] = {"classes": list(task.classes), "counts": per_split,
                          "unlabelled": {split: row.get("", 0) for split, row in counts.items()}, "advice": advice}
    return out


def diagnose_tasks(index: MultiTaskIndex, *, model: str = "timm:resnet18", weights: str = "pretrained",
                   device: str = "auto", features: np.ndarray | None = None, seed: int = 0,
                   use_cache: bool = True, on_progress: dr.Progress | None = None,
                   stop: threading.Event | None = None) -> TaskDoctorReport:
    """engine.advise.doctor.diagnose for a multi-task dataset (see the module's docstring); the same arguments."""
    samples = index.samples
    report = TaskDoctorReport(index.root, list(index.classes), model=model, pictures=len(samples),
                              tasks=_task_summary(index))

    def label_issues(vectors: np.ndarray, ok: np.ndarray) -> list:
        found = []
        labels = index.task_labels()
        for t, task in enumerate(index.tasks):
            rows = np.flatnonzero((labels[:, t] != MISSING).numpy())
            # The task's pictures as a single-task dataset, its class names prefixed with the task.
            view = DatasetIndex(index.root, index.layout, [f"{task.name}: {c}" for c in task.classes],
                                [Sample(samples[i].path, int(labels[i, t]), samples[i].split) for i in rows],
                                index.health, index.split_source)
            found += dr._label_issues(view, vectors[rows], ok[rows], seed, stop)
            dr._check_stop(stop)
        return sorted(found, key=lambda x: (-x.score, x.path))

    return dr.run_checks(index, report, label_issues, model=model, weights=weights, device=device,
                         features=features, use_cache=use_cache, on_progress=on_progress, stop=stop)
