"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a finished run -- the teacher -- trains a smaller model.

The student is any catalogue model with its weight source. It trains on the teacher run's own pictures (the same
split), plus, optionally, a folder of unlabelled pictures, with

    loss = (1 - w) * cross-entropy(student, label) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``w`` being the soft weight and ``T`` the temperature (the T^2 keeps the soft term's gradients at the scale of the
hard term's whatever the temperature, as in the paper), plus the feature weight times the distance between the
student's features and the teacher's (engine.train.distillation.feature_loss; on by default for new runs: with few
classes the teacher's answer is little more than the label, its features are much more). Unlabelled pictures have
only the teacher's terms.

The teacher's outputs are computed once per picture before training (on the evaluation transform, by the same fast
inference path as prediction) and looked up per batch: the training dataset's targets are rows of (class, picture,
labelled), and ``DistillationLoss`` -- handed to the training loop through its usual criterion slot -- reads the
picture's soft target from them. When the teacher and the student prepare pictures alike, the teacher also answers
on each training step's own augmented pictures (consistent teaching, Beyer et al. 2022), and those answers are used
instead. Before a new run's first step, the student's BatchNorm statistics are measured again on the training
pictures (engine.train.distillation.recalibrate_batchnorm), as its log says. Everything else is an ordinary run: ``engine.train.trainer.fit`` with a
``[distill]`` section in its config, so the run folder is a normal one (evaluate, predict, export and resume work),
with ``distill.json`` beside it: the teacher-vs-student table (accuracy, parameters, file size, CPU latency).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine import files
from engine.config import DEFAULT_FEATURE_WEIGHT, DistillConfig, ModelConfig, RunConfig
from engine.errors import ConfigError, UserError
from engine.events import Log
from engine.project import runs
from engine.train.distillation import DistillationLoss, distillation, teacher_folder as _teacher_folder  # noqa: F401

__all__ = ["TABLE", "DistillationLoss", "DistillResult", "distill", "distill_config", "distillation", "resume",
           "table_lines", "teacher_student_table"]

TABLE = runs.DISTILL  # the teacher-vs-student table, in the student's run folder
LATENCY_ROUNDS = 30  # timed single-picture passes per model (alternated teacher, student)
DEFAULT_LR = 1e-3


# --- the command ----------------------------------------------------------------------------------------------


def distill_config(teacher_run: str | Path, student: str, weights: str, *, epochs: int | None = None,
                   pool: str | None = None, out: str | None = None, temperature: float | None = None,
                   soft_weight: float | None = None, lr: float | None = None,
                   feature_weight: float | None = None) -> RunConfig:
    """The student's RunConfig: the teacher's pictures, split and training settings; the student model with its
    weights; every layer trains (``fine-tune-deep``; without pretrained weights, all at one rate). ConfigError or
    UserError (a sentence) for what cannot work."""
    from engine.config import load
    from engine.models.build import check_name

    folder = _teacher_folder(teacher_run).resolve()
    teacher = load(folder / runs.CONFIG)
    check_name(student)
    if epochs is not None and epochs < 1:
        raise ConfigError("The number of epochs must be at least 1.")
    random_start = weights == "none"
    train = dataclasses.replace(teacher.train, cache_features=False, fit_head=False,
                                layer_decay=1.0 if random_start else teacher.train.layer_decay)
    defaults = DistillConfig()
    config = RunConfig(
        data=teacher.data, model=ModelConfig(student, weights), strategy="fine-tune-deep",
        epochs=epochs or teacher.total_epochs, lr=lr or DEFAULT_LR, train=train,
        out=str(Path(out).expanduser()) if out else str(folder.parent),
        name=(f"{student.split(':', 1)[-1]}-"
              f"{'labels-only' if soft_weight == 0 and feature_weight == 0 else 'distilled'}")[:60],
        distill=DistillConfig(str(folder), defaults.temperature if temperature is None else float(temperature),
                              defaults.soft_weight if soft_weight is None else float(soft_weight),
                              str(Path(pool).expanduser().resolve()) if pool else "",
                              DEFAULT_FEATURE_WEIGHT if feature_weight is None else float(feature_weight)))
    if pool and not Path(pool).expanduser().is_dir():
        raise UserError(f"The folder of unlabelled pictures {pool} does not exist: choose another folder, or leave "
                        "--pool out.")
    return config.validate()


@dataclass(frozen=True)
class DistillResult:
    run: object  # engine.train.trainer.RunResult
    table: dict | None  # the teacher-vs-student table (distill.json); None unless the run completed


def distill(config: RunConfig, on_event: Callable | None = None, stop: threading.Event | None = None, *,
            latency_rounds: int = LATENCY_ROUNDS) -> DistillResult:
    """Train the student ``config`` describes (see distill_config) on the teacher run's pictures, then measure the
    teacher-vs-student table into the run folder. Never raises for a problem the user can fix (like fit)."""
    from engine.train.checkpoint import dataset_of_run
    from engine.train.trainer import RunResult, fit

    emit = on_event or (lambda event: None)
    try:
        dataset = dataset_of_run(_teacher_folder(config.distill.teacher))
    except UserError as exc:
        from engine.events import Failed

        emit(Failed(str(exc), None))
        return DistillResult(RunResult("failed", None, None, None, 0, str(exc)), None)
    result = fit(config, on_event, stop, dataset=dataset)
    table = None
    if result.status == "completed" and result.run_dir:
        try:
            table = teacher_student_table(config.distill.teacher, result.run_dir, rounds=latency_rounds, stop=stop)
        except UserError as exc:  # stopped, or a picture problem: the run itself is complete
            emit(Log("warning", f"The teacher-vs-student table was not measured ({exc})."))
    return DistillResult(result, table)


def resume(run_dir: str | Path, on_event: Callable | None = None, stop: threading.Event | None = None, *,
           device: str | None = None, workers: int | None = None, latency_rounds: int | None = None):
    """``engine.train.trainer.resume`` (``train --resume RUN`` and the window's *Resume* run it through here), and
    for a distilled run ([distill] teacher) that completes, its teacher-vs-student table measured again into
    ``distill.json``: the table of a run that stopped was never written, or describes weights that have changed
    since. Returns the trainer's RunResult; never raises for a problem the user can fix."""
    from engine.config import load
    from engine.train.trainer import resume as resume_run

    result = resume_run(run_dir, on_event, stop, device=device, workers=workers)
    if result.status != "completed" or not result.run_dir:
        return result
    try:
        teacher = load(Path(result.run_dir) / runs.CONFIG).distill.teacher
    except Exception:  # not readable as a run's settings: the trainer has said what it could
        return result
    if teacher:
        emit = on_event or (lambda event: None)
        try:
            table = teacher_student_table(teacher, result.run_dir, rounds=latency_rounds or LATENCY_ROUNDS, stop=stop)
            emit(Log("info", "The teacher-vs-student table, measured again after the resumed run:\n"
                     + "\n".join(table_lines(table))))
        except UserError as exc:  # stopped, the teacher gone, a picture problem: the run itself is complete
            emit(Log("warning", f"The teacher-vs-student table was not measured ({exc})."))
    return result


# --- the teacher-vs-student table -----------------------------------------------------------------------------


def _val_pictures(run: Path) -> tuple[list[str], list[int]]:
    info = json.loads((run / runs.DATASET).read_text(encoding="utf-8"))
    val = [s for s in info["samples"] if s["split"] == "val"]
    return [s["path"] for s in val], [int(s["label"]) for s in val]


def teacher_student_table(teacher_run: str | Path, student_run: str | Path, *, rounds: int = LATENCY_ROUNDS,
                          stop: threading.Event | None = None) -> dict:
    """Accuracy on the student's validation pictures, parameters, weight-file size and CPU latency per picture
    (PyTorch, one picture at a time, the median of ``rounds`` passes, teacher and student alternated so that a busy
    machine slows both alike) of both runs; written to the student's ``distill.json`` and returned."""
    import numpy as np

    from engine.results.predict import infer, load_run_model

    teacher_dir, student_dir = Path(teacher_run), Path(student_run)
    paths, labels = _val_pictures(student_dir)
    rows, bundles = {}, {}
    for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
        bundle = bundles[role] = load_run_model(folder, device="cpu")
        probs, errors = infer(bundle, paths, stop=stop)
        good = [i for i, e in enumerate(errors) if e is None]
        accuracy = float(np.mean(probs[good].argmax(1) == np.asarray(labels)[good])) if good else None
        rows[role] = {"run": str(folder), "model": bundle.architecture, "accuracy": accuracy,
                      "parameters": int(sum(p.numel() for p in bundle.model.parameters())),
                      "file_bytes": (folder / runs.BEST).stat().st_size}
    example = None
    for path in paths:
        try:
            example = bundles["student"].preprocess(path).unsqueeze(0)
            teacher_example = bundles["teacher"].preprocess(path).unsqueeze(0)
            break
        except Exception:  # an unreadable picture: the next one
            continue
    if example is None:
        raise UserError("none of the validation pictures can be read")
    times: dict[str, list[float]] = {"teacher": [], "student": []}
    inputs = {"teacher": teacher_example, "student": example}
    with torch.inference_mode():
        for role in times:  # warm-up
            for _ in range(3):
                bundles[role].model(inputs[role])
        for _ in range(rounds):
            if stop is not None and stop.is_set():
                raise UserError("it was stopped")
            for role in times:
                began = time.perf_counter()
                bundles[role].model(inputs[role])
                times[role].append(time.perf_counter() - began)
    for role in times:
        rows[role]["latency_ms"] = round(1000 * statistics.median(times[role]), 2)
    table = {**rows, "pictures": len(paths), "latency": f"PyTorch on the CPU, one picture at a time, median of "
             f"{rounds} passes each, teacher and student alternated ({torch.get_num_threads()} threads)",
             "accuracy_on": "accuracy on the student run's validation pictures (those of the teacher's split)"}
    files.atomic_write_json(student_dir / TABLE, table)
    return table


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def table_lines(table: dict) -> list[str]:
    """The table as aligned text lines, for the command line and the log."""
    t, s = table["teacher"], table["student"]

    def acc(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    w = max(14, len(t["model"]), len(s["model"])) + 2
    lines = [f"{'':12}{'teacher':>{w}}{'student':>{w}}",
             f"{'model':12}{t['model']:>{w}}{s['model']:>{w}}",
             f"{'accuracy':12}{acc(t['accuracy']):>{w}}{acc(s['accuracy']):>{w}}",
             f"{'parameters':12}{t['parameters']:>{w},}{s['parameters']:>{w},}",
             f"{'file size':12}{_size(t['file_bytes']):>{w}}{_size(s['file_bytes']):>{w}}",
             f"{'CPU latency':12}{t['latency_ms']:>{w - 3}.1f} ms{s['latency_ms']:>{w - 3}.1f} ms",
             f"(accuracy on {table['pictures']} validation pictures; latency: {table['latency']})"]
    return lines
