"""Fitting a multi-task run's heads properly and calibrating them, task by task (engine.train.multitask).

The trainer calls ``fit_task_heads`` where a single-task run's head is solved by engine.train.headfit (a head-only
phase on stored outputs), and ``calibrate_tasks`` where a single-task run gets its temperature
(engine.train.calibrate). A module of its own: engine.train.multitask is imported by the checkpoint code, which the
calibration's imports reach, so these could not live there without a cycle.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from engine.train.multitask import MISSING, MultiTaskHead, Task, decode, slices


def task_head_module(suffix: nn.Module) -> MultiTaskHead | None:
    """The MultiTaskHead a head-only suffix is (alone, or after a moved dropout: torchvision's classifier), or None."""
    if isinstance(suffix, MultiTaskHead):
        return suffix
    if isinstance(suffix, nn.Sequential):
        inner = list(suffix)
        if inner and isinstance(inner[-1], MultiTaskHead) and all(isinstance(m, nn.Dropout) for m in inner[:-1]):
            return inner[-1]
    return None


def fit_task_heads(fast, phase_name: str, smoothing: float, log, tasks: Sequence[Task]) -> dict:
    """engine.train.headfit for a multi-task run: each task's linear head solved to convergence (L-BFGS, the L2
    strength chosen on the validation pictures that have a label for the task) on the stored frozen outputs of the
    training pictures that have a label for it. The task's weight in the loss does not change its own head's optimum
    (only the shared backbone feels the weights, and it is frozen here), so the heads are solved one by one. Returns
    {task: HeadFit}; a task whose labelled pictures are too few (no validation picture) is left to the epochs."""
    from engine.train.headfit import MAX_ELEMENTS, fit_head

    head = task_head_module(fast.split.train_suffix)
    if head is None:
        log(f"Phase '{phase_name}': the heads are not one linear layer per task, so they are trained by their epochs "
            "alone.")
        return {}
    outputs, codes = fast.train_set.outputs, fast.train_set.labels
    val = fast.val_loader.dataset
    if outputs.numel() > MAX_ELEMENTS:
        log(f"Phase '{phase_name}': too many stored outputs to solve the heads in one go; they are trained by their "
            "epochs alone.")
        return {}
    x, vx = outputs.reshape(-1, *outputs.shape[2:]), val.outputs.reshape(-1, *val.outputs.shape[2:])
    y, vy = decode(codes.reshape(-1), tasks), decode(val.labels.reshape(-1), tasks)
    done: dict = {}
    for t, (task, key) in enumerate(zip(tasks, head.keys)):
        mine, vmine = (y[:, t] != MISSING).nonzero().flatten(), (vy[:, t] != MISSING).nonzero().flatten()
        if not len(mine) or not len(vmine):
            log(f"Phase '{phase_name}': task '{task.name}' has too few labelled pictures to solve its head; it is "
                "trained by the epochs alone.")
            continue
        result = fit_head(getattr(head, key), x[mine.to(x.device)], y[mine, t], vx[vmine.to(vx.device)],
                          vy[vmine, t], smoothing)
        if result is None:
            continue
        done[task.name] = result
        log(f"Task '{task.name}': " + result.sentence(phase_name).replace("the new head", "its head"))
    return done


def calibrate_tasks(session, val_loader, folder, tasks: Sequence[Task], log) -> dict | None:
    """engine.train.calibrate.calibrate_run for a multi-task run: the best weights back into the model, the validation
    pictures' outputs, and one temperature per task fitted on that task's log-probabilities over its labelled
    pictures (dividing log-probabilities by T gives the same softmax as dividing the logits: they differ by a
    constant per picture). ``model.json`` gets ``task_temperatures``, the summary ``task_calibration``
    ({task: calibration}). None when the run has no best weights or was stopped meanwhile."""
    import json

    from safetensors.torch import load_file

    from engine import files
    from engine.project import runs
    from engine.train.calibrate import calibrate, collect_logits
    from engine.train.lora import load_plain_state

    best = folder.path / runs.BEST
    if not best.is_file():
        return None
    load_plain_state(session.model, load_file(str(best)))
    got = collect_logits(session.model, val_loader, session.runtime, session.stop, backoff=session.backoff,
                         normalize=session.normalize)
    if got is None:
        return None
    logits, codes = got
    labels = decode(codes, tasks)
    results = {}
    for t, (task, sl) in enumerate(zip(tasks, slices(tasks))):
        mine = labels[:, t] != MISSING
        if not bool(mine.any()):
            continue
        results[task.name] = calibrate(logits[mine, sl], labels[mine, t])
        log(f"Task '{task.name}': " + results[task.name].sentence())

    def write_model_json():
        path = folder.path / runs.MODEL
        info = json.loads(path.read_text(encoding="utf-8"))
        info["task_temperatures"] = {name: round(r.temperature, 6) for name, r in results.items()}
        files.atomic_write_json(path, info)

    folder.write("the model's description", write_model_json)
    folder.summary_extra["task_calibration"] = {name: r.to_dict() for name, r in results.items()}
    return results
