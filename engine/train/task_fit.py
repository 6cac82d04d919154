"""Fitting a multi-task run's heads properly and calibrating them, task by task (engine.train.multitask).

The trainer calls ``fit_task_heads`` where a single-task run's head is solved by engine.train.headfit (a head-only
phase on stored outputs), and ``calibrate_tasks`` where a single-task run gets its temperature
(engine.train.calibrate). A module of its own: engine.train.multitask is imported by the checkpoint code, which the
calibration's imports reach, so these could not live there without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
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

    tracker = getattr(session.criterion, "task_best", None)  # each task's best epoch (TaskBest)
    if tracker is not None and tracker.sentence():
        log(tracker.sentence())
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


class TaskBest:
    """A multi-task run's best epoch, task by task (the loop asks it at the end of every epoch; engine.train.loop).

    Every multi-task epoch's record gets each task's validation accuracy and loss over the pictures labelled for it
    (``tasks`` in metrics.jsonl), and the summary each task's best (``task_best``).

    When every phase trains the heads alone (the backbone frozen: feature extraction), the heads are independent of
    each other: each reads the same frozen outputs, and its loss and gradients touch its own weights only. Then each
    task keeps its own best epoch, by the rule a single-task run keeps its best epoch (validation accuracy, then
    loss), and ``best.safetensors`` combines them: each head's weights from its task's best epoch, the frozen layers
    as they are. The run's best accuracy is then the mean of its tasks' best accuracies, its best epoch the latest of
    theirs. Where the backbone trains, a head from one epoch does not fit the backbone of another: the run keeps one
    best epoch for all tasks (the loop's own rule on its mean accuracy), and ``task_best`` gives each task's figures
    at that epoch.

    Resuming: the tasks' bests are read back from the records (which the checkpoint holds) and their heads' weights
    from ``best.safetensors``."""

    def __init__(self, tasks: Sequence[Task], phases, model: nn.Module, records: Sequence[dict], folder):
        from engine.models.layers import HEAD

        self.tasks = list(tasks)
        self.per_task = bool(phases) and all(set(p.stages) == {HEAD} for p in phases)
        self.head_name, self.head = next(((n, m) for n, m in model.named_modules() if isinstance(m, MultiTaskHead)),
                                         ("", None))
        if self.head is None:
            self.per_task = False
        self.best: dict[str, tuple[float, float, int]] = {}  # task: (accuracy, loss, epoch) of its best epoch
        self.weights: dict[str, dict[str, torch.Tensor]] = {}  # task: its head's weights at its best epoch
        self.folder = folder
        shared_best = None
        for record in records:  # a resumed run: the bests so far, from the records
            figures = {n: (v["val_acc"], v["val_loss"], 0) for n, v in (record.get("tasks") or {}).items()}
            if self.per_task:
                for name in self._better(figures):
                    self.best[name] = (figures[name][0], figures[name][1], int(record["epoch"]))
            elif figures and (shared_best is None or (record["val_acc"], -record["val_loss"]) > shared_best):
                shared_best = (record["val_acc"], -record["val_loss"])
                self.best = {n: (a, loss, int(record["epoch"])) for n, (a, loss, _) in figures.items()}
        best_file = Path(folder.path) / "best.safetensors" if folder.path is not None else None
        if self.per_task and self.best and best_file is not None and best_file.is_file():
            from safetensors.torch import load_file

            saved = load_file(str(best_file))
            for name in self.best:
                linear = self._linear(name)
                prefix = f"{self.head_name}.{self.head.keys[self.head.task_names.index(name)]}."
                self.weights[name] = {k: saved[prefix + k].clone() for k in linear.state_dict()}
        self._write_summary()

    def _linear(self, name: str) -> nn.Module:
        return getattr(self.head, self.head.keys[self.head.task_names.index(name)])

    def _better(self, figures: dict) -> list[str]:
        """The tasks whose figures beat their best so far (accuracy, then loss: a single-task run's rule)."""
        out = []
        for name, (acc, loss, _) in figures.items():
            old = self.best.get(name)
            if old is None or acc > old[0] or (acc == old[0] and loss < old[1]):
                out.append(name)
        return out

    def end_epoch(self, epoch: int, figures: dict, improved: bool, best: tuple) -> tuple[bool, tuple, dict, bool]:
        """The epoch's verdict: (whether the best weights change, the run's (accuracy, loss, epoch) best, what the
        epoch's record adds, whether the model's weights now are the best weights). ``figures``: the criterion's
        ``take_tally()``; ``improved`` and ``best``: the loop's own verdict on the mean accuracy."""
        record = {"tasks": {n: {"val_acc": a, "val_loss": loss} for n, (a, loss, _) in figures.items()}}
        if not self.per_task:
            if improved:
                self.best = {n: (a, loss, epoch) for n, (a, loss, _) in figures.items()}
                self._write_summary()
            return improved, best, record, improved
        better = self._better(figures)
        for name in better:
            self.best[name] = (figures[name][0], figures[name][1], epoch)
            self.weights[name] = {k: v.detach().clone() for k, v in self._linear(name).state_dict().items()}
        if better:
            self._write_summary()
        values = list(self.best.values())
        run_best = (sum(v[0] for v in values) / len(values), sum(v[1] for v in values) / len(values),
                    max(v[2] for v in values)) if values else best
        return bool(better), run_best, record, all(v[2] == epoch for v in values)

    def save_best(self, folder, model: nn.Module) -> None:
        """best.safetensors: the model with each task's head from its own best epoch (per task), else as it is."""
        if not self.per_task:
            folder.save_best(model)
            return
        now = {name: {k: v.detach().clone() for k, v in self._linear(name).state_dict().items()}
               for name in self.weights}
        try:
            with torch.no_grad():
                for name, weights in self.weights.items():
                    self._linear(name).load_state_dict(weights)
            folder.save_best(model)
        finally:
            with torch.no_grad():
                for name, weights in now.items():
                    self._linear(name).load_state_dict(weights)

    def _write_summary(self) -> None:
        self.folder.summary_extra["task_best"] = {
            name: {"epoch": e, "val_acc": a, "val_loss": loss} for name, (a, loss, e) in self.best.items()}
        self.folder.summary_extra["best_epoch_per_task"] = self.per_task

    def sentence(self) -> str | None:
        """What the log says at the end: each task's best epoch."""
        if not self.best:
            return None
        each = ", ".join(f"'{n}' epoch {e} ({a:.1%})" for n, (a, _, e) in self.best.items())
        if self.per_task:
            return (f"Only the heads trained, so each task keeps its own best epoch (its head's weights from it): "
                    f"{each}.")
        return f"The layers the tasks share trained, so the run keeps one best epoch for all tasks: {each}."
