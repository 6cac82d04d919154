"""Evaluation of a run: where the model is right and wrong, and how far its confidence can be trusted.

``evaluate_run(run_dir)`` predicts the run's own validation split (and its test split when it has one), exactly as
recorded in the run's ``dataset.json``, or every picture of another folder (``data=``) whose classes the model knows.
For each split it computes accuracy, per-class precision / recall / F1 / support, the confusion matrix (and which
pictures lie behind each cell), the mistakes sorted by confidence with their top-3 classes, and the calibration
(reliability-diagram bins and the expected calibration error), then writes it all to ``evaluation.json`` in the run
folder (atomically). ``load_evaluation(run_dir)`` reads it back.

Everything here is plain data (numbers, strings, lists), ready for the window's tables and plots.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine import files
from engine.project import runs
from engine.errors import UserError

__all__ = ["EVALUATION", "N_BINS", "CalibrationBin", "ClassMetrics", "Evaluation", "SampleResult",
           "SplitEvaluation", "compute_split", "evaluate_run", "load_evaluation"]

EVALUATION = "evaluation.json"
N_BINS = 15  # reliability-diagram bins over [0, 1] (as torchmetrics' and Guo et al.'s expected calibration error)
TOP_K = 3
SPLIT_NAMES = {"val": "validation", "test": "test", "data": "folder"}


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int  # pictures of this class in the split


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence of the predictions in the bin (0 when empty)
    accuracy: float  # share of them that were right (0 when empty)


@dataclass(frozen=True)
class SampleResult:
    path: str
    label: int  # the true class
    predicted: int
    confidence: float  # probability of the predicted class
    top: tuple[tuple[int, float], ...]  # the top-3 (class index, probability), most probable first

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


@dataclass
class SplitEvaluation:
    """The evaluation of one split; sample indices index ``samples``."""

    name: str  # "val", "test" or "data"
    classes: tuple[str, ...]
    accuracy: float
    macro_precision: float  # means over the classes present in the split (support > 0)
    macro_recall: float
    macro_f1: float
    weighted_f1: float  # mean weighted by support
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # confusion[true][predicted]
    samples: list[SampleResult]
    calibration: list[CalibrationBin]
    ece: float  # expected calibration error over ``calibration``
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): left out of the numbers
    # Calibration (temperature scaling, engine.train.calibrate): the confidences above are divided-logit ones;
    # ``ece_before`` is the error of the model's own softmax, ``ece`` the error after (None: not measured).
    temperature: float = 1.0
    ece_before: float | None = None

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def correct(self) -> int:
        return sum(s.correct for s in self.samples)

    def cell(self, true: int, predicted: int) -> list[int]:
        """The samples behind one confusion-matrix cell (true class, predicted class), most confident first."""
        hits = [i for i, s in enumerate(self.samples) if s.label == true and s.predicted == predicted]
        return sorted(hits, key=lambda i: -self.samples[i].confidence)

    @property
    def mistakes(self) -> list[int]:
        """The wrongly predicted samples, most confident mistake first."""
        wrong = [i for i, s in enumerate(self.samples) if not s.correct]
        return sorted(wrong, key=lambda i: -self.samples[i].confidence)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "pictures": self.count, "correct": self.correct, "accuracy": self.accuracy,
            "macro_precision": self.macro_precision, "macro_recall": self.macro_recall, "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1, "ece": self.ece,
            "temperature": self.temperature, "ece_before": self.ece_before, "ece_after": self.ece,
            "per_class": [asdict(c) for c in self.per_class],
            "confusion": self.confusion,
            "mistakes": self.mistakes,
            "calibration": [asdict(b) for b in self.calibration],
            "samples": [{"path": s.path, "label": s.label, "predicted": s.predicted, "confidence": s.confidence,
                         "top": [list(t) for t in s.top]} for s in self.samples],
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
        }

    @classmethod
    def from_dict(cls, d: dict, classes: Sequence[str]) -> "SplitEvaluation":
        return cls(
            name=d["name"], classes=tuple(classes), accuracy=d["accuracy"], macro_precision=d["macro_precision"],
            macro_recall=d["macro_recall"], macro_f1=d["macro_f1"], weighted_f1=d["weighted_f1"],
            per_class=[ClassMetrics(**c) for c in d["per_class"]], confusion=d["confusion"],
            samples=[SampleResult(s["path"], s["label"], s["predicted"], s["confidence"],
                                  tuple((int(i), float(p)) for i, p in s["top"])) for s in d["samples"]],
            calibration=[CalibrationBin(**b) for b in d["calibration"]], ece=d["ece"],
            unreadable=[(u["path"], u["reason"]) for u in d.get("unreadable", [])],
            temperature=d.get("temperature", 1.0), ece_before=d.get("ece_before"))

    def summary(self) -> str:
        return (f"{SPLIT_NAMES.get(self.name, self.name)}: accuracy {self.accuracy:.3f} ({self.correct}/{self.count})"
                f", macro F1 {self.macro_f1:.3f}, ECE {self.ece:.3f}")


@dataclass
class Evaluation:
    run_dir: str
    model: str
    classes: tuple[str, ...]
    data: str  # "run" (the run's own splits) or the folder evaluated
    splits: dict[str, SplitEvaluation]  # "val" then "test", or "data"
    device: str = ""
    seconds: float = 0.0
    created: str = ""
    # A multi-task run (engine.results.multitask): every task's evaluation; ``classes`` and ``splits`` are the first's.
    tasks: dict[str, "Evaluation"] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return str(Path(self.run_dir) / EVALUATION)

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "model": self.model, "classes": list(self.classes), "data": self.data,
                "device": self.device, "seconds": round(self.seconds, 3), "created": self.created,
                "splits": {name: s.to_dict() for name, s in self.splits.items()},
                **({"tasks": {t: {"classes": list(e.classes), "splits": {n: s.to_dict() for n, s in e.splits.items()}}
                              for t, e in self.tasks.items()}} if self.tasks else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        classes = tuple(d["classes"])
        return cls(d["run_dir"], d["model"], classes, d["data"],
                   {name: SplitEvaluation.from_dict(s, classes) for name, s in d["splits"].items()},
                   d.get("device", ""), d.get("seconds", 0.0), d.get("created", ""),
                   {t: cls.from_dict({**d, "classes": e["classes"], "splits": e["splits"], "tasks": {}})
                    for t, e in d.get("tasks", {}).items()})


# --- the numbers ----------------------------------------------------------------------------------------------


def calibration_bins(confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
                     ) -> tuple[list[CalibrationBin], float]:
    """Reliability-diagram bins over [0, 1] and the expected calibration error computed from those very bins.

    By hand rather than torchmetrics' ``multiclass_calibration_error``, which returns only the number: the window
    draws the bins, and the error shown must be the one the bars add up to. Bins are [lower, upper) except the last,
    which includes 1.0 (a confidence of exactly 1 is common in float32); the tests compare with torchmetrics."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidences, side="right") - 1, 0, n_bins - 1)
    n = max(len(confidences), 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        conf = float(confidences[inside].mean()) if count else 0.0
        acc = float(correct[inside].mean()) if count else 0.0
        ece += count / n * abs(acc - conf)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
    return bins, float(ece)


def compute_split(name: str, classes: Sequence[str], labels: Sequence[int], probs: np.ndarray,
                  paths: Sequence[str] | None = None, n_bins: int = N_BINS) -> SplitEvaluation:
    """The evaluation of one split from true labels and class probabilities (N, C)."""
    import torch
    from torchmetrics.functional.classification import (multiclass_confusion_matrix, multiclass_f1_score,
                                                        multiclass_precision, multiclass_recall)

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    c = len(classes)
    if probs.ndim != 2 or probs.shape != (len(labels), c):
        raise ValueError(f"probs must be ({len(labels)}, {c}), got {probs.shape}")
    paths = list(paths) if paths is not None else [""] * len(labels)
    if not len(labels):
        raise UserError(f"There are no pictures to evaluate in the {SPLIT_NAMES.get(name, name)} split.")
    predicted = probs.argmax(1)
    confidence = probs[np.arange(len(labels)), predicted]
    pred_t, true_t = torch.from_numpy(predicted), torch.from_numpy(labels)
    kw = {"num_classes": c, "average": None, "zero_division": 0}
    precision = multiclass_precision(pred_t, true_t, **kw).double().numpy()
    recall = multiclass_recall(pred_t, true_t, **kw).double().numpy()
    f1 = multiclass_f1_score(pred_t, true_t, **kw).double().numpy()
    confusion = multiclass_confusion_matrix(pred_t, true_t, num_classes=c).numpy()
    support = confusion.sum(1)
    present = support > 0
    top_k = min(TOP_K, c)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    samples = [SampleResult(paths[i], int(labels[i]), int(predicted[i]), float(confidence[i]),
                            tuple((int(j), float(probs[i, j])) for j in order[i])) for i in range(len(labels))]
    bins, ece = calibration_bins(confidence, predicted == labels, n_bins)
    return SplitEvaluation(
        name=name, classes=tuple(classes), accuracy=float((predicted == labels).mean()),
        macro_precision=float(precision[present].mean()), macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()), weighted_f1=float((f1 * support).sum() / support.sum()),
        per_class=[ClassMetrics(classes[k], float(precision[k]), float(recall[k]), float(f1[k]), int(support[k]))
                   for k in range(c)],
        confusion=confusion.astype(int).tolist(), samples=samples, calibration=bins, ece=ece)


# --- a run ----------------------------------------------------------------------------------------------------


def _run_samples(run_dir: Path, classes: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    try:
        dataset = json.loads((run_dir / runs.DATASET).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"The run in {run_dir} has no {runs.DATASET}, so its validation pictures are unknown: "
                        "evaluate a folder of pictures with --data instead.") from None
    except (OSError, ValueError):
        raise UserError(f"{run_dir / runs.DATASET} cannot be read: evaluate a folder of pictures with --data "
                        "instead.") from None
    if list(dataset.get("classes", [])) != list(classes):
        raise UserError(f"The classes in {run_dir / runs.DATASET} differ from the model's labels: the run folder "
                        "was changed by hand; train again.")
    splits = {}
    for split in ("val", "test"):
        items = [(s["path"], int(s["label"])) for s in dataset.get("samples", []) if s.get("split") == split]
        if items:
            splits[split] = items
    if not splits:
        raise UserError(f"The run in {run_dir} has no validation or test pictures to evaluate: evaluate a folder "
                        "of pictures with --data.")
    return splits


def _folder_samples(data: str | os.PathLike, classes: Sequence[str], stop
                    ) -> tuple[str, list[tuple[str, int]], list[tuple[str, str]]]:
    from engine.data.scan import scan

    index = scan(data, val_fraction=0.0, stop=stop)
    unknown = [c for c in index.classes if c not in classes]
    if unknown:
        raise UserError(f"The classes in {index.root} ({', '.join(index.classes)}) do not match the model's "
                        f"({', '.join(classes)}): {', '.join(repr(c) for c in unknown)} "
                        f"{'is' if len(unknown) == 1 else 'are'} unknown to it; name the class folders like the "
                        "model's classes.")
    position = {name: i for i, name in enumerate(classes)}
    return (index.root, [(s.path, position[index.classes[s.label]]) for s in index.samples],
            [(p.path, p.reason) for p in index.health.unreadable])


def inferred_splits(bundle, splits: dict[str, list], on_progress, stop, batch_size: int):
    """For each split of ``splits`` ({name: [(path, label), ...]}): (name, items, the model's uncalibrated
    probabilities, indices of the pictures read, [(path, why)] of those that could not be), progress counted over all
    splits; UserError when none of a split's pictures can be read (evaluate_run and its multi-task form share it)."""
    from engine.results.predict import infer  # imported when used, as the rest of this module uses predict

    total = sum(len(v) for v in splits.values())
    done = 0
    for name, items in splits.items():
        offset = done
        progress = (lambda d, n, offset=offset: on_progress(offset + d, total)) if on_progress else None
        raw, errors = infer(bundle, [p for p, _ in items], batch_size=batch_size, on_progress=progress,
                            stop=stop, stop_message="The evaluation was stopped; nothing was written.",
                            temperature=1.0)
        done += len(items)
        good = [i for i, e in enumerate(errors) if e is None]
        unreadable = [(items[i][0], e) for i, e in enumerate(errors) if e is not None]
        if not good:
            path, reason = unreadable[0]
            raise UserError(f"None of the {len(items)} {SPLIT_NAMES[name]} pictures could be read (for example "
                            f"{path}: {reason}): if the dataset was moved, evaluate its new place with --data.")
        yield name, items, raw, good, unreadable


def evaluate_run(run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                 on_progress: Callable[[int, int], None] | None = None, stop: threading.Event | None = None, *,
                 device: str = "auto", batch_size: int = 32) -> "Evaluation":
    """Evaluate a run on its own validation (and test) split, or on every picture of the folder ``data``; write
    ``evaluation.json`` into the run folder and return the evaluation. ``on_progress(done, total)`` counts
    pictures; setting ``stop`` ends it (raising ``Stopped``) without writing anything."""
    from engine.results.predict import load_run_model
    from engine.train.calibrate import apply_temperature

    began = time.monotonic()
    bundle = load_run_model(run_dir, device)
    if bundle.kind != "run":
        raise UserError(f"{bundle.source} is an exported model, not a run folder: evaluate the run it came from, "
                        "or give a run folder.")
    folder = Path(bundle.source)
    if bundle.info.get("tasks"):  # several tasks: each evaluated (engine.results.multitask)
        from engine.results.multitask import evaluate_tasks

        return evaluate_tasks(bundle, folder, data, on_progress, stop, batch_size, began, sys.modules[__name__])
    if data is None:
        splits, source, left_out = _run_samples(folder, bundle.classes), "run", []
    else:
        source, items, left_out = _folder_samples(data, bundle.classes, stop)
        splits = {"data": items}
    results: dict[str, SplitEvaluation] = {}
    for name, items, raw, good, unreadable in inferred_splits(bundle, splits, on_progress, stop, batch_size):
        probs = apply_temperature(raw, bundle.temperature)
        split = compute_split(name, bundle.classes, [items[i][1] for i in good], probs[good],
                              [items[i][0] for i in good])
        split.unreadable = (left_out if name == "data" else []) + unreadable
        split.temperature = bundle.temperature
        labels = np.asarray([items[i][1] for i in good])
        split.ece_before = calibration_bins(raw[good].max(1), raw[good].argmax(1) == labels)[1]
        results[name] = split
    evaluation = Evaluation(str(folder), bundle.architecture, bundle.classes, source, results, bundle.device,
                            time.monotonic() - began, time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        files.atomic_write_json(folder / EVALUATION, evaluation.to_dict())
    except OSError as exc:
        raise UserError(f"{folder / EVALUATION} cannot be written ({exc.strerror or exc}): check that the run "
                        "folder is writable and the disk is not full.") from None
    return evaluation


def load_evaluation(run_dir: str | os.PathLike) -> Evaluation | None:
    """The run's last evaluation, or None when it has none (or it cannot be read)."""
    try:
        return Evaluation.from_dict(json.loads((Path(run_dir) / EVALUATION).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
