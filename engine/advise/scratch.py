"""Does transfer help? The same run trained from scratch, and the difference it made.

``scratch_config(run_dir)`` is the run's own configuration (its config.toml: the same pictures and split, batch
size, augmentation, seed, phases with their epochs and learning rates, so the same budget) with ``weights = none``.
A network with random weights has nothing worth keeping, so every phase retrains every stage (multiplier 1, BatchNorm
statistics updated): that is training from scratch. Kept frozen, random layers would only measure random features.

When the scratch run has completed, ``record_comparison(run_dir, scratch_dir)`` writes into the run's summary.json
``scratch_comparison``: both best validation accuracies, the difference in percentage points, and the sentence
"Transfer gained N points over training from scratch (...)". The scratch run's summary gets ``scratch_for``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from engine import files
from engine.config import RunConfig
from engine.errors import UserError
from engine.project import runs

COMPARISON_KEY = "scratch_comparison"
SCRATCH_FOR_KEY = "scratch_for"
NAME_SUFFIX = "scratch"


def _stage_names(run_dir: Path) -> list[str]:
    try:
        model = json.loads((run_dir / runs.MODEL).read_text(encoding="utf-8"))
        names = [s["name"] for s in model["stages"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"The run in {run_dir} has no readable {runs.MODEL}, so it cannot be repeated from "
                        "scratch.") from None
    if not names:
        raise UserError(f"The run's {runs.MODEL} in {run_dir} names no layers.")
    return names


def comparison_problem(run_dir: str | os.PathLike) -> str | None:
    """Why the run cannot be compared with training from scratch (a sentence), or None when it can."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        return f"{run_dir} is not a run folder (it has no {runs.CONFIG})."
    summary = runs.read_summary(run_dir)
    if summary.get(SCRATCH_FOR_KEY):
        return "This run is itself a training from scratch."
    if summary.get("status") != "completed":
        return "Only a completed run can be compared with training from scratch."
    try:
        config = _load(run_dir)
    except UserError as exc:
        return str(exc)
    if config.model.weights == "none":
        return "This run already started from random weights: it is a training from scratch."
    return None


def _load(run_dir: Path) -> RunConfig:
    from engine.project.project import load_run_config

    return load_run_config(run_dir / runs.CONFIG)


def scratch_config(run_dir: str | os.PathLike) -> RunConfig:
    """The run's configuration with random weights, every stage retrained, and the same budget."""
    run_dir = Path(run_dir)
    problem = comparison_problem(run_dir)
    if problem:
        raise UserError(problem)
    config = _load(run_dir)
    stages = {name: 1.0 for name in _stage_names(run_dir)}
    phases = tuple(dataclasses.replace(p, stages=dict(stages), bn="train") for p in config.phases)
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, weights="none"), strategy="custom", phases=phases,
        out=str(run_dir.parent), name=f"{run_dir.name}-{NAME_SUFFIX}"[-100:]).validate()


def points_sentence(transfer: float, scratch: float, epochs: int) -> str:
    points = 100 * (transfer - scratch)
    budget = f"{transfer:.1%} against {scratch:.1%}, the same {epochs} epoch{'s' if epochs != 1 else ''} each"
    if points >= 0.05:
        return f"Transfer gained {points:.1f} points over training from scratch ({budget})."
    if points <= -0.05:
        return (f"Training from scratch did {-points:.1f} points better than transfer ({budget}): the pretrained "
                "weights do not suit these pictures; try another source model or deeper fine-tuning.")
    return f"Transfer gained nothing over training from scratch ({budget})."


def record_comparison(run_dir: str | os.PathLike, scratch_dir: str | os.PathLike) -> dict | None:
    """Write the comparison into the run's summary.json (atomically) once the scratch run has completed; returns it,
    or None when the scratch run did not complete (a stopped run had a smaller budget: nothing is claimed)."""
    run_dir, scratch_dir = Path(run_dir), Path(scratch_dir)
    scratch = runs.read_summary(scratch_dir)
    summary = runs.read_summary(run_dir)
    if scratch.get("status") != "completed" or summary.get("best_val_acc") is None \
            or scratch.get("best_val_acc") is None:
        return None
    transfer_acc, scratch_acc = float(summary["best_val_acc"]), float(scratch["best_val_acc"])
    epochs = int(scratch.get("epochs_completed") or 0)
    comparison = {
        "scratch_run": str(scratch_dir), "transfer_acc": transfer_acc, "scratch_acc": scratch_acc,
        "points": round(100 * (transfer_acc - scratch_acc), 2), "epochs": epochs,
        "sentence": points_sentence(transfer_acc, scratch_acc, epochs)}
    try:
        files.atomic_write_json(run_dir / runs.SUMMARY, {**summary, COMPARISON_KEY: comparison})
        files.atomic_write_json(scratch_dir / runs.SUMMARY, {**scratch, SCRATCH_FOR_KEY: str(run_dir)})
    except OSError as exc:
        raise UserError(runs.write_problem("the comparison with training from scratch", run_dir, exc) + ".") from None
    return comparison


def comparison_of(run_dir: str | os.PathLike) -> dict | None:
    """The comparison recorded in the run's summary, or None."""
    value = runs.read_summary(run_dir).get(COMPARISON_KEY)
    return value if isinstance(value, dict) else None
