"""A multi-task model's results, task by task: evaluation, predictions and the ONNX export.

A multi-task model (engine.train.multitask) outputs its tasks' log-probabilities side by side. The app's usual
inference pass (engine.results.predict.infer) takes a softmax over the whole output, which gives every task's
probabilities divided by the number of tasks; ``task_probs`` renormalises each task's columns, which gives them back
exactly. Everything here is plain data.

- ``evaluate_tasks``: each task's metrics, confusion matrix and calibration on the run's validation (and test) pictures
  that have a label for it, computed by the single-task code (engine.results.evaluate.compute_split), so a task's
  numbers are exactly those a single-task evaluation of the same predictions gives. ``evaluation.json`` keeps its
  single-task keys (``classes`` and ``splits``: the first task's) and adds ``tasks: {name: {classes, splits}}``.
- ``predict_tasks`` / ``write_task_csv``: one row per picture with the columns ``<task>`` and ``<task>_confidence``.
- ``export_onnx_tasks``: an ONNX file with one output per task, named after it (the task's log-probabilities:
  softmax gives its probabilities, the largest is its class).
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from engine import files
from engine.errors import UserError
from engine.train.multitask import MISSING, Task, code_names, decode, slices, tasks_from_json


def tasks_of_bundle(bundle) -> list[Task] | None:
    """The tasks of a loaded model (engine.results.predict.ModelBundle), None for a single-task one."""
    value = bundle.info.get("tasks")
    return tasks_from_json(value) if value else None


def task_probs(probs: np.ndarray, tasks: Sequence[Task], temperatures: Sequence[float] | None = None
               ) -> list[np.ndarray]:
    """Each task's probabilities from the softmax over the whole output (see the module's docstring), calibrated
    with each task's temperature when given (engine.train.multitask.calibrate_tasks: ``model.json``'s
    ``task_temperatures``)."""
    from engine.train.calibrate import apply_temperature

    out = []
    for t, sl in enumerate(slices(tasks)):
        part = probs[:, sl].astype(np.float64)
        part = part / np.clip(part.sum(1, keepdims=True), 1e-30, None)
        out.append(apply_temperature(part, temperatures[t]) if temperatures is not None else part)
    return out


def bundle_temperatures(bundle) -> list[float]:
    """Each task's temperature (1: not calibrated)."""
    from engine.train.multitask import task_temperatures

    return task_temperatures(bundle.info, tasks_of_bundle(bundle))


# -- evaluation --------------------------------------------------------------------------------------------------


def _folder_items(data, tasks: Sequence[Task], stop) -> tuple[str, list[tuple[str, int]], list[tuple[str, str]]]:
    """Every picture of a CSV with the model's task columns, as (path, code in the model's classes)."""
    from engine.train.multitask import MultiTaskIndex, encode, scan_tasks, task_columns, wants_tasks

    if not wants_tasks(data):
        raise UserError(f"A multi-task model is evaluated on a CSV file with its task columns "
                        f"({', '.join(t.name for t in tasks)}); {data} is not one.")
    missing = [t.name for t in tasks if t.name not in (task_columns(data) or [])]
    if missing:
        raise UserError(f"The CSV file {data} has no column '{missing[0]}': give it the model's task columns "
                        f"({', '.join(t.name for t in tasks)}).")
    index = scan_tasks(data, [t.name for t in tasks], val_fraction=0.0, stop=stop)
    labels = index.task_labels() if isinstance(index, MultiTaskIndex) else torch.tensor(
        [[s.label] for s in index.samples])
    own = index.tasks if isinstance(index, MultiTaskIndex) else [Task(tasks[0].name, tuple(index.classes))]
    items = []
    for i, s in enumerate(index.samples):
        row = []
        for t, (task, mine) in enumerate(zip(tasks, own)):
            k = int(labels[i, t])
            name = mine.classes[k] if k != MISSING else None
            if name is not None and name not in task.classes:
                raise UserError(f"The class '{name}' of task '{task.name}' in {data} is unknown to the model (its "
                                f"classes: {', '.join(task.classes)}).")
            row.append(task.classes.index(name) if name is not None else MISSING)
        items.append((s.path, encode(row, tasks)))
    return index.root, items, [(p.path, p.reason) for p in index.health.unreadable]


def evaluate_tasks(bundle, folder: Path, data, on_progress: Callable[[int, int], None] | None,
                   stop: threading.Event | None, batch_size: int, began: float, ev):
    """engine.results.evaluate.evaluate_run for a multi-task model: every task evaluated, evaluation.json written.
    ``ev`` is the module engine.results.evaluate itself, handed over by it (it calls this function: importing it
    here would make the two modules import each other)."""
    EVALUATION, Evaluation, calibration_bins, compute_split = (
        ev.EVALUATION, ev.Evaluation, ev.calibration_bins, ev.compute_split)
    _run_samples = ev._run_samples

    tasks = tasks_of_bundle(bundle)
    temperatures = bundle_temperatures(bundle)
    if data is None:
        splits, source, left_out = _run_samples(folder, code_names(tasks)), "run", []
    else:
        source, items, left_out = _folder_items(data, tasks, stop)
        splits = {"data": items}
    per_task: dict[str, dict] = {t.name: {} for t in tasks}
    for name, items, probs, good, unreadable in ev.inferred_splits(bundle, splits, on_progress, stop, batch_size):
        labels = decode(torch.tensor([items[i][1] for i in good]), tasks).numpy()
        raw_all = task_probs(probs[good], tasks)
        for t, (task, p) in enumerate(zip(tasks, task_probs(probs[good], tasks, temperatures))):
            mine = np.flatnonzero(labels[:, t] != MISSING)
            if not len(mine):
                continue
            split = compute_split(name, task.classes, labels[mine, t], p[mine], [items[good[i]][0] for i in mine])
            split.unreadable = (left_out if name == "data" else []) + unreadable
            split.temperature = temperatures[t]  # the task's own (engine.train.multitask.calibrate_tasks)
            raw = raw_all[t][mine]
            split.ece_before = calibration_bins(raw.max(1), raw.argmax(1) == labels[mine, t])[1]
            per_task[task.name][name] = split
    first = tasks[0]
    evaluation = Evaluation(str(folder), bundle.architecture, first.classes, source, per_task[first.name],
                            bundle.device, time.monotonic() - began, time.strftime("%Y-%m-%dT%H:%M:%S"))
    evaluation.tasks = {t.name: Evaluation(str(folder), bundle.architecture, t.classes, source, per_task[t.name],
                                           bundle.device) for t in tasks}
    try:
        files.atomic_write_json(folder / EVALUATION, evaluation.to_dict())
    except OSError as exc:
        raise UserError(f"{folder / EVALUATION} cannot be written ({exc.strerror or exc}): check that the run "
                        "folder is writable and the disk is not full.") from None
    return evaluation


# -- predictions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPrediction:
    path: str
    answers: tuple[tuple[str, str, float], ...] = ()  # (task, class, confidence) per task
    error: str | None = None
    # Per task, its classes most probable first, with their (calibrated) probabilities, and the model's output
    # column of its answer (a heat map explains that column).
    tops: tuple[tuple[tuple[str, float], ...], ...] = ()
    columns: tuple[int, ...] = ()

    def prediction(self, task: str):
        """This picture's answer for one task as an ordinary engine.results.predict.Prediction (what the window's
        table, picture panel and summary show); ``class_index`` is the model's output column of the answer."""
        from engine.results.predict import Prediction

        if self.error is not None:
            return Prediction(self.path, error=self.error)
        names = [a[0] for a in self.answers]
        if task not in names:
            raise KeyError(task)
        t = names.index(task)
        _, name, confidence = self.answers[t]
        return Prediction(self.path, name, self.columns[t] if self.columns else None, confidence,
                          self.tops[t] if self.tops else ((name, confidence),))


def predict_tasks(bundle, paths_or_folders: Iterable[str | os.PathLike], *,
                  on_progress: Callable[[int, int], None] | None = None,
                  stop: threading.Event | None = None, top_k: int = 3) -> list[TaskPrediction]:
    """One row per picture (folders opened), each task's most probable class and its probability (calibrated with
    the task's temperature), and its ``top_k`` most probable classes."""
    from engine.results.predict import expand_paths, infer

    tasks = tasks_of_bundle(bundle)
    items = expand_paths(list(paths_or_folders))
    readable = [i for i, (_, error) in enumerate(items) if error is None]
    probs, errors = infer(bundle, [items[i][0] for i in readable], on_progress=on_progress, stop=stop)
    rows = [TaskPrediction(path, error=error) for path, error in items]
    per_task = task_probs(probs, tasks, bundle_temperatures(bundle)) if len(readable) else []
    starts = [sl.start for sl in slices(tasks)]
    for j, (i, error) in enumerate(zip(readable, errors)):
        if error is not None:
            rows[i] = TaskPrediction(items[i][0], error=error)
            continue
        answers, tops, columns = [], [], []
        for task, p, start in zip(tasks, per_task, starts):
            order = np.argsort(-p[j], kind="stable")[:max(1, top_k)]
            k = int(order[0])
            answers.append((task.name, task.classes[k], float(p[j, k])))
            tops.append(tuple((task.classes[int(o)], float(p[j, o])) for o in order))
            columns.append(start + k)
        rows[i] = TaskPrediction(items[i][0], tuple(answers), tops=tuple(tops), columns=tuple(columns))
    return rows


def task_csv_text(rows: Sequence[TaskPrediction], tasks: Sequence[Task]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path"] + [c for t in tasks for c in (t.name, f"{t.name}_confidence")] + ["error"])
    for r in rows:
        cells = [r.path]
        if r.error is None:
            for _, name, confidence in r.answers:
                cells += [name, f"{confidence:.6f}"]
        else:
            cells += [""] * (2 * len(tasks))
        writer.writerow(cells + [r.error or ""])
    return buffer.getvalue()


def write_task_csv(rows: Sequence[TaskPrediction], path: str | os.PathLike, tasks: Sequence[Task]) -> Path:
    path = Path(path).expanduser()
    try:
        files.atomic_write_text(path, task_csv_text(rows, tasks))
    except OSError as exc:
        raise UserError(f"The predictions could not be written to {path} ({exc.strerror or exc}).") from None
    return path


def prediction_lines(rows: Sequence[TaskPrediction]) -> list[str]:
    """The command line's lines: ``path: species ant 0.93, stage adult 0.81``."""
    return [f"{r.path}: {r.error}" if r.error is not None else
            f"{r.path}: " + ", ".join(f"{task} {name} {conf:.3f}" for task, name, conf in r.answers) for r in rows]


# -- ONNX --------------------------------------------------------------------------------------------------------


class TaskOutputs(torch.nn.Module):
    """The model with its output cut into one tensor per task (each task's log-probabilities)."""

    def __init__(self, model: torch.nn.Module, tasks: Sequence[Task], temperatures: Sequence[float] | None = None):
        super().__init__()
        self.model = model
        self.bounds = [(sl.start, sl.stop) for sl in slices(tasks)]
        self.temperatures = [float(t) for t in (temperatures or [1.0] * len(tasks))]

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        return tuple(out[:, a:b] if t == 1.0 else out[:, a:b] / t for (a, b), t in zip(self.bounds, self.temperatures))


def onnx_output_names(tasks: Sequence[Task]) -> list[str]:
    return [t.name for t in tasks]


def onnx_tasks_exporter(file_name: str, input_name: str, first_line: Callable[[Exception], str]):
    """engine.results.export's ONNX exporter for a multi-task model, with that module's file name, input name and
    error wording (handed over by it: importing it here would make the two modules import each other)."""
    def export(bundle, out: Path, inputs: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
        return export_onnx_tasks(bundle, out, inputs, reference, file_name, input_name, first_line)
    return export


def export_onnx_tasks(bundle, out: Path, inputs: torch.Tensor, reference: torch.Tensor, file_name: str = "model.onnx",
                      input_name: str = "input", first_line: Callable[[Exception], str] = str) -> tuple[float, float]:
    """model.onnx with one output per task, named after it; checked with ONNX Runtime against the PyTorch model.
    Returns the largest differences (log-probabilities, probabilities), over all tasks."""
    import onnxruntime as ort

    ONNX_INPUT, _first_line = input_name, first_line
    tasks = tasks_of_bundle(bundle)
    names = onnx_output_names(tasks)
    path = out / file_name
    temperatures = bundle_temperatures(bundle)  # folded in: softmax of each output gives calibrated probabilities
    module = TaskOutputs(bundle.model, tasks, temperatures).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            files.atomic_write(path, lambda tmp: torch.onnx.export(
                module, (inputs[:2],), str(tmp), dynamo=False, input_names=[ONNX_INPUT], output_names=names,
                dynamic_axes={ONNX_INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=18))
    except Exception as exc:
        raise UserError(f"The model could not be exported to ONNX ({_first_line(exc)}); the bundle and "
                        "TorchScript formats may still work.") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = session.run(names, {ONNX_INPUT: inputs.numpy()})
    except Exception as exc:
        raise UserError(f"The ONNX file was written but onnxruntime cannot run it ({_first_line(exc)}): use the "
                        "bundle or TorchScript format instead.") from None
    logits = probs = 0.0
    for (a, b), t, got in zip(module.bounds, temperatures, outputs):
        ref, got = reference[:, a:b] / t, torch.as_tensor(np.asarray(got, dtype=np.float32))
        logits = max(logits, (ref - got).abs().max().item())
        probs = max(probs, (ref.softmax(1) - got.softmax(1)).abs().max().item())
    return float(logits), float(probs)


def export_metadata(info: dict) -> dict:
    """What an export's model.json adds for a multi-task model: its tasks, and the ONNX outputs' names."""
    from engine.train.multitask import task_temperatures

    tasks = tasks_from_json(info["tasks"])
    temperatures = task_temperatures(info, tasks)
    return {"tasks": info["tasks"], "task_weighting": info.get("task_weighting", "fixed"),
            "task_temperatures": {t.name: T for t, T in zip(tasks, temperatures)},
            "onnx_outputs": {t.name: {"output": t.name, "classes": list(t.classes), "temperature_folded": True,
                                      "values": "log-probabilities divided by the task's temperature (softmax gives "
                                                "the task's calibrated probabilities)"}
                             for t in tasks}}


# -- the model card ----------------------------------------------------------------------------------------------


def card_title(info: dict) -> str:
    tasks = tasks_from_json(info["tasks"])
    return (f"# Model card: {info.get('model', 'model')} for {len(tasks)} tasks: "
            + ", ".join(f"{t.name} ({len(t.classes)} classes)" for t in tasks))


def card_lines(info: dict, evaluation, dataset: dict) -> list[str]:
    """The model card's section on a multi-task model: each task's classes, training pictures, and (once evaluated)
    accuracy and expected calibration error on the validation (and test) pictures, with its temperature."""
    from engine.train.multitask import task_temperatures

    tasks = tasks_from_json(info["tasks"])
    temperatures = task_temperatures(info, tasks)
    counts = (dataset.get("tasks") or {}) if isinstance(dataset, dict) else {}
    weighting = info.get("task_weighting", "fixed")
    weights = info.get("task_weights") or [1.0] * len(tasks)
    lines = ["", "## Tasks", "",
             "One backbone, one linear head per task; the loss was "
             + ("weighted by learnt uncertainties (Kendall et al. 2018)." if weighting == "uncertainty" else
                "the sum of the tasks' losses weighted " + ", ".join(f"{t.name} {w:g}" for t, w in zip(tasks, weights))
                + "."),
             "Each task's confidences are calibrated with its own temperature (1: not calibrated). A picture without "
             "a label for a task counts for the other tasks only.", ""]
    splits = [s for s in (evaluation.splits if evaluation is not None else {})]
    head = "| task | classes | training pictures (unlabelled) | temperature |"
    rule = "|---|---|---:|---:|"
    for s in splits:
        head += f" {s} accuracy | {s} ECE (before calibration) |"
        rule += "---:|---:|"
    lines += [head, rule]
    for task, t in zip(tasks, temperatures):
        train = (counts.get(task.name, {}).get("counts", {}).get("train") or {})
        labelled = sum(n for c, n in train.items() if c)
        row = (f"| {task.name} | {', '.join(task.classes)} | {labelled} ({train.get('', 0)}) | {t:.3g} |")
        mine = evaluation.tasks.get(task.name) if evaluation is not None and evaluation.tasks else None
        for s in splits:
            split = mine.splits.get(s) if mine is not None else None
            if split is None:
                row += " - | - |"
                continue
            before = f" ({split.ece_before:.3f})" if split.ece_before is not None else ""
            row += f" {100 * split.accuracy:.1f} % | {split.ece:.3f}{before} |"
        lines.append(row)
    if evaluation is None:
        lines += ["", "Each task's accuracy and calibration: not measured yet (`python main.py evaluate RUN`, then "
                      "export again, adds them here)."]
    return lines
