"""Knowledge distillation inside a training run: the loss, and the trainer's hook (engine.edge.distill has the
command, the student's settings and the teacher-vs-student table).

``distillation`` runs once before training when the run's config has a ``[distill]`` teacher: the teacher's outputs
are computed once per training (and unlabelled) picture on its own preprocessing, and the run's training dataset
hands out, with each picture, a target row (class, picture, labelled) instead of the class alone; ``DistillationLoss``
-- the training loop's criterion -- looks the picture's soft target up from it:

    loss = (1 - w) * cross-entropy(student, label) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton, Vinyals and Dean, 2015; the T^2 keeps the soft term's gradients at the scale of the hard term's). Unlabelled
pictures have only the soft term. A resumed run computes the teacher's outputs again (the same, in eval mode).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.config import RunConfig, TrainConfig
from engine.errors import UserError
from engine.events import Log, Preparing
from engine.project import runs

__all__ = ["ASKING", "DistillationLoss", "distillation", "teacher_folder", "teacher_log_probs"]

ASKING = "asking the teacher"  # Preparing.what while the teacher's soft targets are computed


class DistillationLoss(nn.Module):
    """Soft targets and hard labels, weighted (see the module's docstring). ``teacher_log_probs`` holds, per picture
    of the training dataset, the teacher's log-probabilities at temperature 1; the targets are rows of (class,
    picture, labelled), or plain class labels (then the loss is the cross-entropy alone)."""

    def __init__(self, teacher_log_probs: torch.Tensor, temperature: float, soft_weight: float,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("teacher", teacher_log_probs.float(), persistent=False)
        self.temperature = float(temperature)
        self.soft_weight = float(soft_weight)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 1:
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        classes, picture, labelled = target.unbind(1)
        w, t = self.soft_weight, self.temperature
        loss = logits.new_zeros(())
        if w < 1:
            mask = labelled.bool()
            if bool(mask.all()):
                hard = F.cross_entropy(logits, classes, label_smoothing=self.label_smoothing)
            else:  # the mean over the labelled pictures of the batch (none: nothing)
                hard = F.cross_entropy(logits[mask], classes[mask], label_smoothing=self.label_smoothing,
                                       reduction="sum") / mask.sum().clamp(min=1)
            loss = loss + (1 - w) * hard
        if w > 0:
            # log p / T, normalised again, is log softmax(teacher logits / T): the log-probabilities suffice.
            teacher = (self.teacher[picture.to(self.teacher.device)].to(logits.device) / t).log_softmax(1)
            student = (logits / t).log_softmax(1)
            loss = loss + w * t * t * F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        return loss


class _Targets:
    """The training dataset's targets: one (class, picture, labelled) row per picture (a list-like for
    engine.data.loaders.ImageDataset, which hands ``labels[i]`` out with picture ``i``)."""

    def __init__(self, classes: list[int], labelled: list[int]):
        self.rows = torch.stack([torch.as_tensor(classes, dtype=torch.long), torch.arange(len(classes)),
                                 torch.as_tensor(labelled, dtype=torch.long)], 1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.rows[index]

    def __iter__(self):
        return iter(self.rows)


# --- inside a training run -------------------------------------------------------------------------------------


def teacher_folder(teacher: str | Path) -> Path:
    folder = Path(teacher).expanduser()
    if not folder.is_dir():
        raise UserError(f"The teacher run {folder} does not exist: choose the folder of a finished run.")
    if not (folder / runs.MODEL).is_file() or not (folder / runs.DATASET).is_file():
        raise UserError(f"{folder} is not a run folder: the teacher must be a run trained in Transfer Studio.")
    if not (folder / runs.BEST).is_file():
        raise UserError(f"The teacher run {folder} has no trained weights yet (it ended before its first epoch): "
                        "train it first.")
    return folder


def _pool_pictures(pool: str, known: set[str]) -> list[str]:
    from engine.data.images import is_image_path

    folder = Path(pool).expanduser()
    if not folder.is_dir():
        raise UserError(f"The folder of unlabelled pictures {folder} does not exist: choose another folder, or "
                        "leave it out.")
    found = []
    for root, dirs, names in os.walk(folder):  # hidden folders and macOS's __MACOSX left out, sorted
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".") and is_image_path(n)]
    return [p for p in found if str(Path(p).resolve()) not in known]


def _teacher(folder: Path, device: torch.device):
    """The teacher run's model (its best epoch) in eval mode on ``device``, its classes and preprocessing."""
    from engine.models.build import build_model
    from engine.models.weights import read_weight_file

    try:
        info = json.loads((folder / runs.MODEL).read_text(encoding="utf-8"))
        classes = [str(c) for c in json.loads((folder / runs.LABELS).read_text(encoding="utf-8"))]
        data_config = dict(info["data_config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"The teacher run {folder} is incomplete (its {runs.MODEL} or {runs.LABELS} cannot be "
                        "read): choose another run.") from None
    for key in ("input_size", "mean", "std"):
        data_config[key] = tuple(data_config[key])
    built = build_model(info["model"], "none", len(classes), allow_download=False)
    try:
        built.model.load_state_dict(read_weight_file(folder / runs.BEST), strict=True)
    except RuntimeError:
        raise UserError(f"The weights in {folder / runs.BEST} do not fit the teacher's model: the run folder was "
                        "changed by hand; choose another teacher.") from None
    return built.model.eval().to(device), classes, data_config


def teacher_log_probs(folder: Path, paths: list[str], device: torch.device, workers: int, emit: Callable,
                      stop: threading.Event) -> torch.Tensor:
    """The teacher's log-probabilities (temperature 1) for each picture, computed once, on its own preprocessing
    (the evaluation transform); NaN rows for pictures that cannot be read. On a CPU through the frozen pass's ONNX
    Runtime path (engine.train.fastpath.fast_inference), checked against the model."""
    from engine.data.cache import ImageCache
    from engine.data.loaders import BatchNormalize, ImageDataset, build_transforms, decode_size, make_loader
    from engine.train.fastpath import PROBE_BATCH, fast_inference
    from engine.train.loop import Stopped

    model, _, data_config = _teacher(folder, device)
    if device.type == "cpu" and len(paths) >= 64:
        example = torch.randn(PROBE_BATCH, *data_config["input_size"], generator=torch.Generator().manual_seed(0))
        try:
            model, _ = fast_inference(model, example)
        except Exception:  # any export problem: the model itself
            pass
    eval_tf = build_transforms(data_config, "none", uint8=True)[1]
    normalize = BatchNormalize(data_config["mean"], data_config["std"])
    # The label of each picture is its index: a picture that cannot be read is replaced by a neighbour, whose own
    # index then comes back with it.
    dataset = ImageDataset(paths, list(range(len(paths))), eval_tf, decode_size(data_config),
                           ImageCache.for_data_config(data_config))
    out = torch.full((len(paths), 0), float("nan"))
    done = 0
    for images, index in make_loader(dataset, 64, shuffle=False, workers=workers):
        if stop.is_set():
            raise Stopped()
        with torch.inference_mode():
            logits = model(normalize(images.to(device))).float().cpu()
        if out.shape[1] == 0:
            out = torch.full((len(paths), logits.shape[1]), float("nan"))
        out[index] = logits.log_softmax(1)
        done += len(index)
        emit(Preparing(ASKING, done, len(paths), None))
    emit(Preparing(ASKING, len(paths), len(paths), 0.0))
    return out


def distillation(config: RunConfig, t: TrainConfig, runtime, data_config: dict, dataset, data, emit: Callable,
                 stop: threading.Event):
    """The trainer's hook for a run with a ``[distill]`` teacher: the teacher's soft targets for every training
    (and unlabelled) picture, computed once; returns the run's data with the targets the loss reads, the loss, and
    the training settings (the frozen-outputs path is off: its stored outputs do not carry the soft targets)."""
    from engine.data.loaders import ImageDataset

    d = config.distill
    log = lambda message, level="info": emit(Log(level, message))  # noqa: E731
    folder = teacher_folder(d.teacher)
    teacher_classes = json.loads((folder / runs.LABELS).read_text(encoding="utf-8"))
    if list(teacher_classes) != list(dataset.classes):
        raise UserError(f"The teacher run {folder} knows the classes {', '.join(teacher_classes)}, but these pictures "
                        f"have {', '.join(dataset.classes)}: distil on the teacher's own pictures.")
    train = data.train
    known = {str(Path(p).resolve()) for p in train.paths} | {str(Path(p).resolve()) for p in data.val.paths}
    pool = _pool_pictures(d.pool, known) if d.pool else []
    if pool and d.soft_weight == 0:
        log("The unlabelled pictures are not used: with a soft weight of 0 only the labels teach.", "warning")
        pool = []
    paths = list(train.paths) + pool
    total = len(paths)

    began = time.monotonic()
    log_probs = teacher_log_probs(folder, paths, runtime.device, data.workers, emit, stop)
    unreadable = torch.isnan(log_probs).any(1)
    log_probs[unreadable] = 0.0  # unreadable pictures: never handed out (ImageDataset skips them)
    readable_pool = [i for i in range(len(train.paths), total) if not unreadable[i]]
    keep = list(range(len(train.paths))) + readable_pool
    guesses = log_probs.argmax(1)
    classes = [int(c) for c in train.labels] + [int(guesses[i]) for i in readable_pool]
    labelled = [1] * len(train.paths) + [0] * len(readable_pool)
    log_probs = log_probs[keep]
    new_train = ImageDataset([paths[i] for i in keep], _Targets(classes, labelled), train.transform, train.draft,
                             train.cache)
    data = dataclasses.replace(data, train=new_train)
    extra = f" and {len(readable_pool)} unlabelled pictures" if readable_pool else ""
    log(f"Distillation: the teacher (run {folder.name}) gave its soft targets for "
        f"{len(train.paths)} training pictures{extra} in {time.monotonic() - began:.1f} s. The loss is "
        f"{1 - d.soft_weight:.2g} x cross-entropy with the labels + {d.soft_weight:.2g} x T\u00b2 x KL divergence "
        f"from the teacher at temperature T = {d.temperature:g}.")
    if t.cache_features or t.fit_head:
        t = dataclasses.replace(t, cache_features=False, fit_head=False)
        log("Distillation trains the normal way: every picture goes through the whole student each epoch (the "
            "stored frozen outputs and the head's direct solve know only the labels).")
    return data, DistillationLoss(log_probs, d.temperature, d.soft_weight, t.label_smoothing), t
