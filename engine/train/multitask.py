"""Multi-task learning: one backbone, one head per task, a masked and weighted loss.

Data: a CSV whose columns other than ``path`` (and ``split``) are tasks (``path,species,stage``), or the subset the
config names (``DataConfig.tasks``, ``--tasks species,stage``). A picture may lack a label for some tasks (an empty
cell): its loss for that task is left out (masked); a row with no label at all is left out of the data.

How the labels travel: each picture's labels are one whole number, a mixed-radix code (task ``t`` contributes
``(label_t + 1) * prod_{s<t} (classes_s + 1)``, 0 meaning "no label"), so the rest of the engine -- the picture
loaders, the shuffled order, the stored frozen outputs (engine.train.store: shared by all tasks), checkpoints and
``dataset.json`` -- carries it like any class index. ``decode`` turns a batch of codes back into one column per task,
-1 where the label is missing.

The model: the classifier is replaced by ``MultiTaskHead``, one linear layer per task on the backbone's features.
Its output is the tasks' log-probabilities side by side (``log_softmax`` within each task's columns): the loss is
each task's cross-entropy on its columns, the softmax over the whole output is every task's probabilities divided by
the number of tasks (so the app's usual inference pass still gives each task's probabilities exactly, renormalised
within its columns), and an exported model has one output per task (engine.results.multitask).

The loss (``MultiTaskLoss``) is the weighted sum of the tasks' mean cross-entropies over their labelled pictures:
weights are the config's ``task_weights`` (1 for a task not listed: equal by default), or, with ``task_weighting =
"uncertainty"``, learnt (Kendall, Gal & Cipolla 2018: ``exp(-s_t) * L_t + s_t / 2`` with ``s_t = log sigma_t^2`` a
parameter of the head, trained with it). The accuracy the loop reports is each picture's share of its labelled tasks
predicted right, averaged; evaluation gives every task its own metrics.

With one task, nothing here changes the model: the run is an ordinary single-task run on that column.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.data.scan import (SPLIT_FOLDER_NAMES, SPLITS, Advice, DatasetIndex, DataError, HealthReport, Problem,
                              Sample, stratified_split)
from engine.errors import ConfigError, ModelError

RESERVED = ("path", "split")
WEIGHTINGS = ("fixed", "uncertainty")
MISSING = -1


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[str, ...]


# -- the labels' code --------------------------------------------------------------------------------------------


def radices(tasks: Sequence[Task]) -> list[int]:
    out, r = [], 1
    for task in tasks:
        out.append(r)
        r *= len(task.classes) + 1
    return out


def encode(labels: Sequence[int], tasks: Sequence[Task]) -> int:
    """One picture's labels (class index or MISSING per task) as one whole number."""
    return sum((y + 1) * r for y, r in zip(labels, radices(tasks)))


def decode(codes: torch.Tensor, tasks: Sequence[Task]) -> torch.Tensor:
    """Codes (N,) -> labels (N, tasks), MISSING where a picture has no label for the task."""
    codes = codes.long()
    columns = [(codes // r) % (len(t.classes) + 1) - 1 for t, r in zip(tasks, radices(tasks))]
    return torch.stack(columns, 1)


def slices(tasks: Sequence[Task]) -> list[slice]:
    """Each task's columns in the model's output."""
    out, start = [], 0
    for task in tasks:
        out.append(slice(start, start + len(task.classes)))
        start += len(task.classes)
    return out


def flat_classes(tasks: Sequence[Task]) -> list[str]:
    """The output columns' names, ``task: class``."""
    return [f"{t.name}: {c}" for t in tasks for c in t.classes]


MAX_CODES = 4096  # combinations of labels (each task's classes and "no label") a multi-task dataset may have


def code_names(tasks: Sequence[Task]) -> list[str]:
    """A readable name for every code, indexed by it (``colour: red · shape: round``; a missing label as ``-``):
    a multi-task dataset's ``classes``, so that whatever shows a picture's class shows its labels."""
    n = 1
    for t in tasks:
        n *= len(t.classes) + 1
    labels = decode(torch.arange(n), tasks).tolist()
    return [" \u00b7 ".join(f"{t.name}: {t.classes[y] if y != MISSING else '-'}" for t, y in zip(tasks, row))
            for row in labels]


def task_words(tasks: Sequence[Task]) -> str:
    """'2 tasks: species (4 classes), stage (4 classes)': what the log says of a multi-task run's labels (its
    dataset's ``classes`` are the combinations of labels, not classes a picture is sorted into)."""
    return f"{len(tasks)} tasks: " + ", ".join(f"{t.name} ({len(t.classes)} classes)" for t in tasks)


def tasks_to_json(tasks: Sequence[Task]) -> list[dict]:
    return [{"name": t.name, "classes": list(t.classes)} for t in tasks]


def tasks_from_json(value: Any) -> list[Task]:
    try:
        tasks = [Task(str(t["name"]), tuple(str(c) for c in t["classes"])) for t in value]
    except (TypeError, KeyError):
        raise ModelError("The model's list of tasks (model.json) is damaged: train or export the model again.") from None
    return tasks


# -- the data ----------------------------------------------------------------------------------------------------


@dataclass
class MultiTaskIndex(DatasetIndex):
    """A DatasetIndex whose labels are codes (see the module's docstring) and whose ``classes`` name every code
    (``code_names``): picture lists, counts and filters show each picture's labels without knowing about tasks."""

    tasks: list[Task] = dataclasses.field(default_factory=list)

    def task_labels(self, samples: Sequence[Sample] | None = None) -> torch.Tensor:
        samples = self.samples if samples is None else samples
        return decode(torch.tensor([s.label for s in samples], dtype=torch.long), self.tasks)

    def task_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{task: {split: {class: pictures}}}, and each task's unlabelled pictures under the class ``""``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for t, task in enumerate(self.tasks):
            out[task.name] = {}
            for split in SPLITS:
                mine = self.split(split)
                labels = self.task_labels(mine)[:, t] if mine else torch.zeros(0, dtype=torch.long)
                row = {c: int((labels == k).sum()) for k, c in enumerate(task.classes)}
                row[""] = int((labels == MISSING).sum())
                out[task.name][split] = row
        return out

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        summary = super().to_dict(with_samples=False)
        summary["tasks"] = {t.name: {"classes": list(t.classes), "counts": c}
                            for t, c in zip(self.tasks, self.task_counts().values())}
        if with_samples:
            labels = self.task_labels()
            summary["samples"] = [
                {"path": s.path, "label": s.label, "split": s.split,
                 **{t.name: (t.classes[int(labels[i, j])] if labels[i, j] >= 0 else "")
                    for j, t in enumerate(self.tasks)}}
                for i, s in enumerate(self.samples)]
        return summary


def csv_columns(source: str | os.PathLike) -> list[str] | None:
    """The header of a CSV source (lower-cased, stripped), or None when the source is not a readable CSV file."""
    path = Path(source)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return [h.strip() for h in header]


def task_columns(source: str | os.PathLike, chosen: Sequence[str] = ()) -> list[str] | None:
    """The task columns a CSV source gives: ``chosen`` (checked), or every column but path and split. None when the
    source is not a CSV; ConfigError when a chosen task is not one of its columns."""
    header = csv_columns(source)
    if header is None:
        if chosen and Path(source).suffix.lower() == ".csv" and not Path(source).exists():
            raise DataError(f"The CSV file {source} does not exist.")
        if chosen:
            raise ConfigError(f"Tasks ({', '.join(chosen)}) can only be chosen from the columns of a CSV file; "
                              f"{source} is not one.")
        return None
    available = [h for h in header if h and h.lower() not in RESERVED]
    if chosen:
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise ConfigError(f"The CSV file {source} has no column '{unknown[0]}': its task columns are "
                              f"{', '.join(available) or 'none'}.")
        if len(set(chosen)) != len(chosen):
            raise ConfigError("Each task can be chosen once.")
        return list(chosen)
    return available


def wants_tasks(source: str | os.PathLike, chosen: Sequence[str] = ()) -> bool:
    """Whether a source is read here rather than by engine.data.scan: a CSV with chosen tasks, or with task columns
    other than a single ``label``."""
    columns = task_columns(source, chosen)
    return columns is not None and (bool(chosen) or columns != ["label"])


def read_tasks(source: str | os.PathLike, chosen: Sequence[str] = ()) -> list[Task] | None:
    """The tasks of a task CSV and their classes from its cells alone (no picture opened: quick enough for the
    window to show one head per task before a scan); None when the source gives fewer than two tasks."""
    try:
        if not wants_tasks(source, chosen):
            return None
        names = task_columns(source, chosen)
        with Path(source).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            cols = [header.index(n) for n in names]
            classes: list[set[str]] = [set() for _ in names]
            for row in reader:
                for j, c in enumerate(cols):
                    if c < len(row) and row[c].strip():
                        classes[j].add(row[c].strip())
    except (ConfigError, OSError, UnicodeDecodeError, csv.Error, ValueError):
        return None
    tasks = [Task(n, tuple(sorted(c))) for n, c in zip(names, classes)]
    return tasks if len(tasks) > 1 and all(len(t.classes) >= 2 for t in tasks) else None


def scan_tasks(source: str | os.PathLike, tasks: Sequence[str] = (), *, val_fraction: float = 0.2,
               test_fraction: float = 0.0, seed: int = 0, split: str = "auto",
               stop: threading.Event | None = None) -> DatasetIndex:
    """The pictures of a multi-column CSV and their labels for ``tasks`` (default: every column but path and
    split). Several tasks give a MultiTaskIndex; one task an ordinary DatasetIndex on that column.

    Each picture is decoded once to check it (engine.data.images.check_image). The split: the CSV's ``split`` column
    when it has one (and ``split`` is auto), else drawn at random, stratified by the first task's classes."""
    from engine.data.images import check_image

    csv_path = Path(source).expanduser().resolve()
    names = task_columns(csv_path, tasks)
    if not names:
        raise DataError(f"The CSV file {csv_path} has no task column: give it the columns path and one column per "
                        "task (for example path,species,stage).")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"The CSV file {csv_path} cannot be read ({exc.__class__.__name__}): save it as UTF-8 "
                        "text.") from None
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "path" not in lower:
        raise DataError(f"The CSV file {csv_path} must have a 'path' column (found: {','.join(header)}).")
    path_col, split_col = lower.index("path"), (lower.index("split") if "split" in lower else None)
    cols = [header.index(n) for n in names]
    problems: list[Problem] = []
    entries: list[tuple[str, list[str], str | None]] = []
    seen: set[str] = set()
    repeats = 0
    for line, row in enumerate(rows[1:], start=2):
        if stop is not None and stop.is_set():
            from engine.errors import Stopped

            raise Stopped("The scan was stopped.")
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        raw = cells[path_col]
        path = os.path.normpath(os.path.join(csv_path.parent, raw)) if raw else f"{csv_path}:{line}"
        values = [cells[c] for c in cols]
        if not raw:
            problems.append(Problem(path, f"Line {line} of the CSV file has no path."))
            continue
        if not any(values):
            problems.append(Problem(path, f"Line {line} of the CSV file has no label for any task."))
            continue
        given_split = None
        if split_col is not None:
            given_split = SPLIT_FOLDER_NAMES.get(cells[split_col].lower())
            if given_split is None:
                problems.append(Problem(path, f"Line {line} of the CSV file has the split "
                                              f"'{cells[split_col]}': use train, val or test."))
                continue
        if path in seen:
            repeats += 1
            continue
        seen.add(path)
        if not os.path.isfile(path):
            problems.append(Problem(path, "The file does not exist."))
            continue
        entries.append((path, values, given_split))
    reasons = [check_image(p) for p, _, _ in entries]
    problems += [Problem(p, r) for (p, _, _), r in zip(entries, reasons) if r is not None]
    entries = sorted((e for e, r in zip(entries, reasons) if r is None), key=lambda e: e[0])
    task_list = [Task(n, tuple(sorted({e[1][j] for e in entries if e[1][j]}))) for j, n in enumerate(names)]
    combinations = 1
    for t in task_list:
        combinations *= len(t.classes) + 1
    if len(task_list) > 1 and combinations > MAX_CODES:
        raise DataError(f"The tasks {', '.join(names)} have too many combinations of classes ({combinations:,}) for "
                        f"one run: choose fewer tasks with --tasks (or merge rare classes).")
    few = [t.name for t in task_list if len(t.classes) < 2]
    if few:
        raise DataError(f"The task '{few[0]}' has fewer than two classes among the readable pictures of "
                        f"{csv_path}: a task needs at least two classes (or leave it out with --tasks).")
    index_of = [{c: k for k, c in enumerate(t.classes)} for t in task_list]
    labels = [[index_of[j][v] if v else MISSING for j, v in enumerate(values)] for _, values, _ in entries]
    own = split_col is not None and all(s is not None for _, _, s in entries)
    if own and split == "auto":
        splits, split_source = [s for _, _, s in entries], "folders"
    else:
        first = [lab[0] for lab in labels]  # stratified by the first task (its missing cells as one more group)
        splits, split_source = stratified_split(first, val_fraction, test_fraction, seed), "random"
    health = HealthReport(unreadable=problems)
    if repeats:
        health.advice.append(Advice("duplicate-path", f"{repeats} rows of the CSV file repeat a picture listed above "
                                                      "and were ignored: list each picture once."))
    if len(task_list) == 1:
        samples = [Sample(p, lab[0], s) for (p, _, _), lab, s in zip(entries, labels, splits) if lab[0] != MISSING]
        index = DatasetIndex(str(csv_path), "csv", list(task_list[0].classes), samples, health, split_source,
                             own_split=own)
    else:
        samples = [Sample(p, encode(lab, task_list), s) for (p, _, _), lab, s in zip(entries, labels, splits)]
        index = MultiTaskIndex(str(csv_path), "csv", code_names(task_list), samples, health, split_source,
                               own_split=own, tasks=task_list)
    _advice(index)
    return index


def _advice(index: DatasetIndex) -> None:
    """The scan's health advice, task by task (a class with few training pictures, or none for validation)."""
    from engine.data.scan import class_advice

    if not isinstance(index, MultiTaskIndex):
        index.health.advice += class_advice(index.counts(), index.split_source)
        return
    for task, counts in index.task_counts().items():
        per_split = {split: {c: n for c, n in row.items() if c} for split, row in counts.items()}
        for item in class_advice(per_split, index.split_source):
            index.health.advice.append(Advice(item.kind, f"Task '{task}': {item.message}"))


def tasks_of(dataset: DatasetIndex | None, model_info: dict | None = None) -> list[Task] | None:
    """A run's tasks (two or more), from its scan or (resuming) its model.json; None for a single-task run."""
    if isinstance(dataset, MultiTaskIndex):
        return dataset.tasks
    if model_info and model_info.get("tasks"):
        return tasks_from_json(model_info["tasks"])
    return None


# -- the model ---------------------------------------------------------------------------------------------------


def _key(name: str, used: set[str]) -> str:
    key = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "task"
    key = f"t_{key}" if key[0].isdigit() else key
    base, n = key, 2
    while key in used:
        key, n = f"{base}_{n}", n + 1
    used.add(key)
    return key


class MultiTaskHead(nn.Module):
    """One linear classifier per task on the same features; the output is the tasks' log-probabilities side by
    side. ``log_vars`` (uncertainty weighting only) are the tasks' learnt log-variances."""

    def __init__(self, in_features: int, tasks: Sequence[Task], uncertainty: bool = False):
        super().__init__()
        # Each head a child named after its task (``fc.species.weight``), so the layer tree shows one row per task.
        used: set[str] = {name for name in dir(nn.Module)} | {"task_names", "keys", "log_vars"}
        self.task_names = [t.name for t in tasks]
        self.keys = [_key(t.name, used) for t in tasks]
        for key, task in zip(self.keys, tasks):
            self.add_module(key, nn.Linear(in_features, len(task.classes)))
        if uncertainty:
            self.log_vars = nn.Parameter(torch.zeros(len(tasks)))
        else:
            self.log_vars = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.log_softmax(getattr(self, key)(x), dim=-1) for key in self.keys], dim=-1)


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def install_head(model: nn.Module, head_name: str, tasks: Sequence[Task], uncertainty: bool = False) -> MultiTaskHead:
    """Replace the classifier ``head_name`` (a linear layer, or the last linear layer inside it: torchvision's
    ``classifier`` is dropout then linear) with a MultiTaskHead, in place."""
    old = _get(model, head_name)
    if not isinstance(old, nn.Linear):
        inner = [name for name, m in old.named_modules() if isinstance(m, nn.Linear)]
        if len(inner) == 1:
            head_name, old = f"{head_name}.{inner[0]}", _get(old, inner[0])
    if not isinstance(old, nn.Linear):
        raise ModelError(f"This model's classifier ({head_name}) is not a linear layer, so it cannot get one head per "
                         "task: choose another model for a multi-task run.")
    head = MultiTaskHead(old.in_features, tasks, uncertainty).to(old.weight.device, old.weight.dtype)
    parent, _, leaf = head_name.rpartition(".")
    setattr(_get(model, parent) if parent else model, leaf, head)
    return head


def head_of(model: nn.Module) -> MultiTaskHead | None:
    for module in model.modules():
        if isinstance(module, MultiTaskHead):
            return module
    return None


# -- the loss ----------------------------------------------------------------------------------------------------


class MultiTaskLoss(nn.Module):
    """The weighted sum of the tasks' masked cross-entropies (see the module's docstring). Also counts right
    predictions for the loop (``correct``) and sums losses for validation (``evaluate_sums``)."""

    def __init__(self, tasks: Sequence[Task], weights: Sequence[float], label_smoothing: float = 0.0,
                 head: MultiTaskHead | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.weights = [float(w) for w in weights]
        self.smoothing = label_smoothing
        self.head = [head]  # a list: the head's parameters belong to the model, not to the loss
        self.slices = slices(tasks)
        self.tally: list[list] | None = None  # the validation pass's sums per task (``evaluate_sums``)
        self.task_best = None  # the run's best epoch per task (engine.train.task_fit.TaskBest; set by the trainer)

    def task_losses(self, logits: torch.Tensor, codes: torch.Tensor, smoothing: float | None = None,
                    reduction: str = "mean") -> list[torch.Tensor | None]:
        """Each task's cross-entropy over its labelled pictures (None when the batch has none)."""
        labels = decode(codes, self.tasks).to(logits.device)
        smoothing = self.smoothing if smoothing is None else smoothing
        out = []
        for t, sl in enumerate(self.slices):
            mask = labels[:, t] != MISSING
            if not bool(mask.any()):
                out.append(None)
                continue
            out.append(F.cross_entropy(logits[mask, sl], labels[mask, t], label_smoothing=smoothing,
                                       reduction=reduction))
        return out

    def forward(self, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        head = self.head[0]
        log_vars = head.log_vars if head is not None else None
        total = logits.new_zeros(())
        for t, loss in enumerate(self.task_losses(logits, codes)):
            if loss is None:
                continue
            if log_vars is not None:  # Kendall et al. 2018, classification: exp(-s) L + s / 2
                total = total + torch.exp(-log_vars[t]) * loss + 0.5 * log_vars[t]
            else:
                total = total + self.weights[t] * loss
        return total

    def correct(self, logits: torch.Tensor, codes: torch.Tensor) -> float:
        """The sum over pictures of each picture's share of its labelled tasks predicted right."""
        labels = decode(codes, self.tasks).to(logits.device)
        right = torch.zeros(labels.shape[0], device=logits.device)
        for t, sl in enumerate(self.slices):
            right += ((logits[:, sl].argmax(1) == labels[:, t]) & (labels[:, t] != MISSING)).float()
        labelled = (labels != MISSING).sum(1).clamp(min=1)
        return float((right / labelled).sum().item())

    def evaluate_sums(self, logits: torch.Tensor, codes: torch.Tensor) -> tuple[float, float]:
        """(summed validation loss without smoothing, correct as in ``correct``): the loss is each picture's
        weighted sum of its labelled tasks' cross-entropies."""
        labels = decode(codes, self.tasks).to(logits.device)
        if self.tally is None:
            self.tally = [[0.0, 0, 0] for _ in self.tasks]
        total = 0.0
        for t, sl in enumerate(self.slices):
            mask = labels[:, t] != MISSING
            if bool(mask.any()):
                weight = self.weights[t] if self.head[0] is None or self.head[0].log_vars is None else 1.0
                task_loss = F.cross_entropy(logits[mask, sl].float(), labels[mask, t], reduction="sum").item()
                total += weight * task_loss
                sums = self.tally[t]  # each task's own figures, as its single-task run would measure them
                sums[0] += task_loss
                sums[1] += int((logits[mask, sl].argmax(1) == labels[mask, t]).sum().item())
                sums[2] += int(mask.sum().item())
        return total, self.correct(logits, codes)

    def take_tally(self) -> dict[str, tuple[float, float, int]]:
        """The last validation pass's figures per task, {task: (accuracy, mean loss, labelled pictures)}, over the
        pictures labelled for it (a task with none is left out); the sums start again for the next pass."""
        tally, self.tally = self.tally or [], None
        return {task.name: (right / n, loss / n, n) for task, (loss, right, n) in zip(self.tasks, tally) if n}


def weights_for(tasks: Sequence[Task], given: dict[str, float]) -> list[float]:
    unknown = [name for name in given if name not in {t.name for t in tasks}]
    if unknown:
        raise ConfigError(f"A task weight names '{unknown[0]}', which is not a task of this run (its tasks: "
                          f"{', '.join(t.name for t in tasks)}).")
    weights = [float(given.get(t.name, 1.0)) for t in tasks]
    if not any(w > 0 for w in weights):
        raise ConfigError("At least one task needs a weight above 0.")
    return weights


# -- the trainer's hooks -----------------------------------------------------------------------------------------


def scan_for(config, stop: threading.Event | None) -> DatasetIndex | None:
    """The run's pictures when its source is a task CSV (see ``wants_tasks``); None: engine.data.scan reads it."""
    d = config.data
    if not wants_tasks(d.source, d.tasks):
        return None
    return scan_tasks(d.source, d.tasks, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                      seed=d.split_seed, split=d.split, stop=stop)


def prepare_model(built, tasks: Sequence[Task] | None, train_config) -> MultiTaskHead | None:
    """A multi-task run's heads in place of the classifier (before the layer tree is built)."""
    if not tasks:
        return None
    if train_config.task_weighting not in WEIGHTINGS:
        raise ConfigError(f"The task weighting must be one of {', '.join(WEIGHTINGS)}.")
    weights_for(tasks, dict(train_config.task_weights))  # checked before anything is written
    return install_head(built.model, built.head, tasks, train_config.task_weighting == "uncertainty")


def criterion_for(model: nn.Module, tasks: Sequence[Task], train_config) -> MultiTaskLoss:
    return MultiTaskLoss(tasks, weights_for(tasks, dict(train_config.task_weights)), train_config.label_smoothing,
                         head_of(model))


def model_json(tasks: Sequence[Task] | None, train_config) -> dict:
    """What model.json adds for a multi-task run: its tasks and how their losses were weighted."""
    if not tasks:
        return {}
    return {"tasks": tasks_to_json(tasks), "task_weighting": train_config.task_weighting,
            "task_weights": weights_for(tasks, dict(train_config.task_weights))}


def rebuild_head(model: nn.Module, head_name: str, info: dict) -> list[Task] | None:
    """A trained multi-task model's heads, put back before its weights are loaded (engine.results.predict)."""
    if not info.get("tasks"):
        return None
    tasks = tasks_from_json(info["tasks"])
    install_head(model, head_name, tasks, info.get("task_weighting") == "uncertainty")
    return tasks


def learnt_weights(model: nn.Module) -> dict[str, float] | None:
    """Uncertainty weighting: each task's learnt weight exp(-s_t)."""
    head = head_of(model)
    if head is None or head.log_vars is None:
        return None
    return {n: round(math.exp(-float(s)), 4) for n, s in zip(head.task_names, head.log_vars.detach().cpu())}


# -- the command line --------------------------------------------------------------------------------------------


def parse_task_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError("--tasks needs the names of CSV columns, separated by commas (for example species,stage).")
    return names


def parse_task_weights(text: str) -> dict[str, float]:
    """``species=2,stage=1`` -> {"species": 2.0, "stage": 1.0}."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, eq, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not eq or not name.strip() or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--task-weights takes task=weight pairs separated by commas (for example "
                              f"species=2,stage=1); '{part}' is not one.")
        out[name.strip()] = weight
    return out


def with_cli_options(config, *, tasks: str | None = None, task_weights: str | None = None,
                     task_weighting: str | None = None, lora_rank: int | None = None,
                     lora_alpha: float | None = None, lora_stages: str | None = None):
    """The config with the train command's multi-task and LoRA options applied (None: as in the config)."""
    data, train, lora = config.data, config.train, config.lora
    if tasks is not None:
        data = dataclasses.replace(data, tasks=parse_task_list(tasks))
    if task_weights is not None:
        train = dataclasses.replace(train, task_weights=parse_task_weights(task_weights))
    if task_weighting is not None:
        train = dataclasses.replace(train, task_weighting=task_weighting)
    extra = {k: v for k, v in {"rank": lora_rank, "alpha": lora_alpha}.items() if v is not None}
    if lora_stages is not None:
        extra["stages"] = tuple(s.strip() for s in lora_stages.split(",") if s.strip())
    if extra:
        lora = dataclasses.replace(lora, **extra)
    return dataclasses.replace(config, data=data, train=train, lora=lora)


# -- per-task accuracy of outputs -----------------------------------------------------------------------------


def task_accuracies(outputs: dict[str, Any], codes: Sequence[int], tasks: Sequence[Task]) -> dict[str, dict]:
    """Each task's accuracy over the pictures labelled for it, for several versions of a model's output (``outputs``:
    {version: array (pictures, every task's columns side by side)}; ``codes``: the pictures' labels):
    {task: {version: accuracy, "pictures": n}} (engine.results.int8 compares fp32 and int8 with it)."""
    labels = decode(torch.as_tensor(list(codes), dtype=torch.long), tasks)
    out: dict[str, dict] = {}
    for t, (task, sl) in enumerate(zip(tasks, slices(tasks))):
        mine = labels[:, t] != MISSING
        if not bool(mine.any()):
            continue
        out[task.name] = {"pictures": int(mine.sum())}
        for version, values in outputs.items():
            guess = torch.as_tensor(values)[:, sl].argmax(1)
            out[task.name][version] = float((guess[mine] == labels[mine, t]).float().mean())
    return out


# -- calibration ----------------------------------------------------------------------------------------------


def task_temperatures(info: dict, tasks: Sequence[Task]) -> list[float]:
    """Each task's temperature from a model.json (1 for a task without one: not calibrated)."""
    given = info.get("task_temperatures") or {}
    out = []
    for task in tasks:
        value = given.get(task.name, 1.0) if isinstance(given, dict) else 1.0
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        out.append(float(value) if ok else 1.0)
    return out


def task_probability(info: dict, probs, column: int) -> float:
    """The calibrated probability of output column ``column`` within its task, from the softmax over the whole
    output of a multi-task model (``info``: its model.json): the task's columns renormalised, then its temperature."""
    tasks = tasks_from_json(info["tasks"])
    row = torch.as_tensor(probs, dtype=torch.float64).flatten()
    for sl, t in zip(slices(tasks), task_temperatures(info, tasks)):
        if sl.start <= column < sl.stop:
            part = row[sl] / row[sl].sum().clamp(min=1e-30)
            return float((part.clamp(min=1e-300).log() / t).softmax(0)[column - sl.start])
    raise IndexError(column)
