"""Knowledge distillation inside a training run: the loss, and the trainer's hook (engine.edge.distill has the
command, the student's settings and the teacher-vs-student table).

``distillation`` runs once before training when the run's config has a ``[distill]`` teacher: the teacher's outputs
are computed once per training (and unlabelled) picture on its own preprocessing, and the run's training dataset
hands out, with each picture, a target row (class, picture, labelled) instead of the class alone; ``DistillationLoss``
-- the training loop's criterion -- looks the picture's soft target up from it:

    loss = (1 - w) * cross-entropy(student, label) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton, Vinyals and Dean, 2015; the T^2 keeps the soft term's gradients at the scale of the hard term's), plus, with
a feature weight ``f`` above 0, the teacher's features -- what its classification head reads, a few hundred numbers
per picture where its answer over two classes is one -- as a hint for the student's own (FitNets, Romero et al. 2015):

    + f * mean((student features - teacher features)^2) / mean(teacher features^2)

when both have as many features (the same family at another width, as MobileNetV2 at half width and its teacher);
otherwise the two batches' similarity matrices are compared instead (similarity-preserving distillation, Tung and
Mori 2019: which pictures of the batch each model finds alike), which needs no equal sizes. Unlabelled pictures
have only the teacher's terms. A resumed run computes the teacher's outputs again (the same, in eval mode).

Consistent teaching (Beyer et al., 2022, "Knowledge distillation: a good teacher is patient and consistent"): when
the teacher and the student see pictures the same way (input size, mean and standard deviation), the teacher also
answers each training step on the very augmented view the student sees (``OnlineTeacher``, a forward pre-hook on the
student), so that the student matches the teacher's function on every crop and flip, not only on the one centred
view; the outputs computed once before training remain the fallback (and give the unlabelled pictures' guesses).

Before a new run's first step, the student's BatchNorm statistics are measured again on the training pictures
(``recalibrate_batchnorm``): a student whose weights were cut from a wider network, or trained on other pictures,
carries running means and variances that do not describe what its layers now compute, and evaluation uses them.
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

__all__ = ["ASKING", "DistillationLoss", "OnlineTeacher", "distillation", "recalibrate_batchnorm", "teacher_folder",
           "teacher_log_probs"]

ASKING = "asking the teacher"  # Preparing.what while the teacher's soft targets are computed


class DistillationLoss(nn.Module):
    """Soft targets and hard labels, weighted (see the module's docstring). ``teacher_log_probs`` holds, per picture
    of the training dataset, the teacher's log-probabilities at temperature 1; the targets are rows of (class,
    picture, labelled), or plain class labels (then the loss is the cross-entropy alone). With a ``feature_weight``
    above 0, ``features`` (a StudentFeatures hook on the student's head) and an ``online`` teacher that answers with
    its features after its logits, the features term is added (see ``feature_loss``)."""

    def __init__(self, teacher_log_probs: torch.Tensor, temperature: float, soft_weight: float,
                 label_smoothing: float = 0.0, online: "OnlineTeacher | None" = None, feature_weight: float = 0.0,
                 features: "StudentFeatures | None" = None):
        super().__init__()
        self.register_buffer("teacher", teacher_log_probs.float(), persistent=False)
        self.temperature = float(temperature)
        self.soft_weight = float(soft_weight)
        self.label_smoothing = float(label_smoothing)
        self.online = online  # the teacher's answer on the step's own pictures (consistent teaching), when given
        self.feature_weight = float(feature_weight)
        self.features = features

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 1:
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        classes, picture, labelled = target.unbind(1)
        w, t, k = self.soft_weight, self.temperature, self.teacher.shape[1]
        loss = logits.new_zeros(())
        if w < 1:
            mask = labelled.bool()
            if bool(mask.all()):
                hard = F.cross_entropy(logits, classes, label_smoothing=self.label_smoothing)
            else:  # the mean over the labelled pictures of the batch (none: nothing)
                hard = F.cross_entropy(logits[mask], classes[mask], label_smoothing=self.label_smoothing,
                                       reduction="sum") / mask.sum().clamp(min=1)
            loss = loss + (1 - w) * hard
        answered = self.online.take(logits.shape[0]) if self.online is not None else None
        if w > 0:
            if answered is not None:
                answer = answered[:, :k]
            else:  # the outputs computed once, on the picture's centred view
                answer = self.teacher[picture.to(self.teacher.device)]
            # log p / T, normalised again, is log softmax(teacher logits / T): the log-probabilities suffice.
            teacher = (answer.to(logits.device) / t).log_softmax(1)
            student = (logits / t).log_softmax(1)
            loss = loss + w * t * t * F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        if self.feature_weight > 0 and self.features is not None:
            mine = self.features.take(logits.shape[0])
            if mine is not None and answered is not None and answered.shape[1] > k:
                loss = loss + self.feature_weight * feature_loss(mine, answered[:, k:].to(logits.device))
        return loss


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """How far the student's features are from the teacher's on the same pictures, relative to the size of the
    teacher's (0: equal; 1: as far as all-zero features would be). Same number of features: the mean squared
    difference (FitNets' hint, here without a regressor: the student's own features must become the teacher's).
    Different numbers: the batch's similarity matrices (each picture's features against every other picture's,
    rows normalised) compared the same way -- similarity-preserving distillation (Tung and Mori, 2019), here on
    features centred on the batch's mean: features after a ReLU all point the same way, and uncentred their
    similarities are all near 1 and say little."""
    s, t = student.float().flatten(1), teacher.float().flatten(1)
    if s.shape[1] != t.shape[1]:
        s, t = s - s.mean(0), t - t.mean(0)
        s, t = F.normalize(s @ s.T, dim=1), F.normalize(t @ t.T, dim=1)
    return (s - t).pow(2).mean() / t.pow(2).mean().clamp(min=1e-12)


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
    """The teacher run's model (its best epoch) in eval mode on ``device``, its classes, preprocessing and the name
    of its classification head."""
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
    return built.model.eval().to(device), classes, data_config, built.head


class LogitsAndFeatures(nn.Module):
    """A model that answers with its logits followed by its features -- the input of its classification head,
    flattened -- in one tensor (so that one ONNX Runtime pass gives both). ``model`` is changed: its head is taken
    out (an identity in its place)."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        parent_name, _, leaf = head.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        self.head = getattr(parent, leaf)
        setattr(parent, leaf, nn.Identity())
        self.body = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        return torch.cat([self.head(features).flatten(1), features.flatten(1)], 1)


@dataclasses.dataclass
class TeacherRunner:
    """The teacher as a callable on normalised batches (eval mode, no gradients), its preprocessing, its number of
    classes, and how many features follow the logits in each answer (0: logits only)."""

    model: Callable
    data_config: dict
    classes: int
    features: int = 0
    head: nn.Module | None = None  # the teacher's classification head, when its features are read apart


def _with_features(model: nn.Module, head: str, example: torch.Tensor) -> tuple[nn.Module, int]:
    """The teacher answering with its features after its logits, when taking its head out leaves exactly its
    logits (checked on ``example``); else the model itself and 0."""
    import copy

    with torch.inference_mode():
        reference = model(example).float()
    try:
        both = LogitsAndFeatures(copy.deepcopy(model), head).eval()
        with torch.inference_mode():
            answer = both(example).float()
    except Exception:  # a head whose input is not a plain tensor of features: logits only
        return model, 0
    k = reference.shape[1]
    if answer.shape[1] <= k or not torch.allclose(answer[:, :k], reference, rtol=1e-4, atol=1e-4):
        return model, 0
    return both, answer.shape[1] - k


def _teacher_runner(folder: Path, device: torch.device, pictures: int, features: bool = False) -> TeacherRunner:
    """The teacher, for 64 pictures or more on a CPU through the frozen pass's ONNX Runtime path
    (engine.train.fastpath.fast_inference, checked against the model); with ``features``, answering with its
    features after its logits where it can (TeacherRunner.features says how many)."""
    from engine.train.fastpath import PROBE_BATCH, fast_inference

    model, classes, data_config, head = _teacher(folder, device)
    example = torch.randn(PROBE_BATCH, *data_config["input_size"], generator=torch.Generator().manual_seed(0))
    width, teacher_head = 0, None
    if features:
        model, width = _with_features(model, head, example.to(device))
        teacher_head = model.head if width else None
    if device.type == "cpu" and pictures >= 64:
        try:
            model, _ = fast_inference(model, example)
        except Exception:  # any export problem: the model itself
            pass
    return TeacherRunner(model, data_config, len(classes), width, teacher_head)


def teacher_log_probs(folder: Path, paths: list[str], device: torch.device, workers: int, emit: Callable,
                      stop: threading.Event, runner: TeacherRunner | None = None) -> torch.Tensor:
    """The teacher's log-probabilities (temperature 1) for each picture, computed once, on its own preprocessing
    (the evaluation transform); NaN rows for pictures that cannot be read. ``runner``: the teacher and its
    preprocessing from _teacher_runner (made here when not given)."""
    from engine.data.cache import ImageCache
    from engine.data.loaders import BatchNormalize, ImageDataset, build_transforms, decode_size, make_loader
    from engine.train.loop import Stopped

    runner = runner or _teacher_runner(folder, device, len(paths))
    model, data_config = runner.model, runner.data_config
    eval_tf = build_transforms(data_config, "none", uint8=True)[1]
    normalize = BatchNormalize(data_config["mean"], data_config["std"])
    # The label of each picture is its index: a picture that cannot be read is replaced by a neighbour, whose own
    # index then comes back with it.
    dataset = ImageDataset(paths, list(range(len(paths))), eval_tf, decode_size(data_config),
                           ImageCache.for_data_config(data_config))
    out = torch.full((len(paths), runner.classes), float("nan"))
    done = 0
    for images, index in make_loader(dataset, 64, shuffle=False, workers=workers):
        if stop.is_set():
            raise Stopped()
        with torch.inference_mode():
            logits = model(normalize(images.to(device))).float().cpu()[:, :runner.classes]
        out[index] = logits.log_softmax(1)
        done += len(index)
        emit(Preparing(ASKING, done, len(paths), None))
    emit(Preparing(ASKING, len(paths), len(paths), 0.0))
    return out


class _HandOff:
    """What a hook on the student keeps from a training forward pass for the loss to take once: ``latest`` (set by
    the hook), ``take`` (for a batch of ``n`` pictures, or None) and ``detach``."""

    def __init__(self):
        self.latest: torch.Tensor | None = None
        self.handle = None

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def take(self, n: int) -> torch.Tensor | None:
        """What the hook kept for the batch just passed through the student (``n`` pictures), once; None when there
        is none."""
        latest, self.latest = self.latest, None
        return latest if latest is not None and latest.shape[0] == n else None


class OnlineTeacher(_HandOff):
    """Consistent teaching: a forward pre-hook on the student that, on every training forward pass (the student in
    training mode, gradients on), asks the teacher about the same batch -- the same augmented, normalised pictures
    -- and keeps its logits for the loss (``take``; None: the loss uses the outputs computed before training). Only
    when the teacher and the student preprocess alike (same input size, mean and standard deviation), so that the
    student's batch is a valid input for the teacher."""

    def __init__(self, runner: Callable):
        super().__init__()
        self.runner = runner

    def attach(self, student: nn.Module) -> "OnlineTeacher":
        self.handle = student.register_forward_pre_hook(self._ask)
        return self

    def _ask(self, module: nn.Module, args) -> None:
        if not module.training or not torch.is_grad_enabled() or not args:
            return
        x = args[0]
        # Plain no_grad (not inference_mode): the loss keeps these logits as the KL divergence's target for backward.
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            self.latest = self.runner(x.float().contiguous()).float()


class StudentFeatures(_HandOff):
    """The student's features on each training forward pass: a forward hook on its classification head that keeps
    the head's input (training mode, gradients on), for the features term of the loss (``take``)."""

    def attach(self, student: nn.Module, head: str) -> "StudentFeatures":
        self.handle = student.get_submodule(head).register_forward_hook(self._keep)
        return self

    def _keep(self, module: nn.Module, args, output) -> None:
        if module.training and torch.is_grad_enabled() and args:
            self.latest = args[0]


def same_preprocessing(a: dict, b: dict) -> bool:
    return all(tuple(a[k]) == tuple(b[k]) for k in ("input_size", "mean", "std"))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, stop: threading.Event | None = None) -> int:
    """Measure the running means and variances of every BatchNorm layer of ``model`` again, as the plain average
    over ``batches`` (normalised input tensors, on the model's device), weights untouched; returns the number of
    layers measured (0: none, nothing done). torch.optim.swa_utils.update_bn does the work (reset the statistics,
    momentum None = a cumulative average, training mode for the pass, the mode restored)."""
    from torch.optim.swa_utils import update_bn

    from engine.train.loop import Stopped

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return 0

    def checked():
        for x in batches:
            if stop is not None and stop.is_set():
                raise Stopped()
            yield x

    update_bn(checked(), model)
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def distillation(config: RunConfig, t: TrainConfig, runtime, data_config: dict, dataset, data, emit: Callable,
                 stop: threading.Event, model: nn.Module | None = None, fresh: bool = False, head: str = ""):
    """The trainer's hook for a run with a ``[distill]`` teacher: the teacher's soft targets for every training
    (and unlabelled) picture, computed once; returns the run's data with the targets the loss reads, the loss, and
    the training settings (the frozen-outputs path is off: its stored outputs do not carry the soft targets).
    With the student ``model``: its BatchNorm statistics measured again on the training pictures when the run is
    ``fresh`` (not resumed), and consistent teaching when both preprocess alike and the soft weight is above 0;
    with the name of its classification ``head`` too, the features term when the feature weight is above 0."""
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
    if pool and d.soft_weight == 0 and d.feature_weight == 0:
        log("The unlabelled pictures are not used: with a soft weight and a feature weight of 0 only the labels "
            "teach.", "warning")
        pool = []
    paths = list(train.paths) + pool
    total = len(paths)

    began = time.monotonic()
    wants_features = d.feature_weight > 0 and model is not None and bool(head) and CONSISTENT
    runner = _teacher_runner(folder, runtime.device, total, features=wants_features)
    log_probs = teacher_log_probs(folder, paths, runtime.device, data.workers, emit, stop, runner=runner)
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
        f"from the teacher at temperature T = {d.temperature:g}"
        + (f" + {d.feature_weight:g} x the distance from the teacher's features." if d.feature_weight > 0 else "."))
    if t.cache_features or t.fit_head:
        t = dataclasses.replace(t, cache_features=False, fit_head=False)
        log("Distillation trains the normal way: every picture goes through the whole student each epoch (the "
            "stored frozen outputs and the head's direct solve know only the labels).")
    online = features = None
    if model is not None:
        if fresh:
            _recalibrate_student(model, runtime, data_config, data, emit, stop)
        if (d.soft_weight > 0 or d.feature_weight > 0) and CONSISTENT:
            if same_preprocessing(runner.data_config, data_config):
                online = OnlineTeacher(runner.model).attach(model)
                log("Consistent teaching: the teacher also answers on each training step's own pictures (the same "
                    "random crops and flips the student sees), as Beyer et al. (2022) recommend; this costs one "
                    "teacher pass per step.")
            else:
                log("The teacher and the student prepare pictures differently (size or normalisation): the student "
                    "learns from the teacher's answers on the centred pictures, computed once.")
        if d.feature_weight > 0:
            features = _features_term(model, head, runner, online, log, d.soft_weight)
            if features is not None and fresh and REUSE_HEAD:
                _reuse_teacher_head(model, head, runner, log)
    loss = DistillationLoss(log_probs, d.temperature, d.soft_weight, t.label_smoothing, online, d.feature_weight,
                            features)
    return data, loss, t


def _reuse_teacher_head(model: nn.Module, head: str, runner: TeacherRunner, log: Callable) -> bool:
    """A new student whose head reads as many features as the teacher's and answers as many classes starts with a
    copy of the teacher's head (Chen et al., 2022, "Knowledge distillation with the reused teacher classifier"):
    as the features term brings the student's features to the teacher's, the teacher's head already reads them
    right, instead of a random head chasing features that are still moving. It trains on like any head."""
    mine, theirs = model.get_submodule(head), runner.head
    if not (isinstance(mine, nn.Linear) and isinstance(theirs, nn.Linear) and mine.weight.shape == theirs.weight.shape
            and (mine.bias is None) == (theirs.bias is None)):
        return False
    with torch.no_grad():
        mine.weight.copy_(theirs.weight.to(mine.weight.device, mine.weight.dtype))
        if mine.bias is not None:
            mine.bias.copy_(theirs.bias.to(mine.bias.device, mine.bias.dtype))
    log(f"The student's head starts as a copy of the teacher's (both read {mine.in_features:,} features and answer "
        f"{mine.out_features} classes): as the student's features come to resemble the teacher's, the teacher's head "
        "already reads them (Chen et al., 2022). It goes on training with the rest.")
    return True


def _features_term(model: nn.Module, head: str, runner: TeacherRunner, online: "OnlineTeacher | None",
                   log: Callable, soft_weight: float) -> "StudentFeatures | None":
    """The hook that gives the loss the student's features, and a sentence saying how they are compared; None
    (said) when they cannot be: the teacher answers on the student's own pictures only with consistent teaching."""
    if online is None or runner.features == 0 or not head:
        why = ("the teacher's features are compared only on the very pictures the student sees, and here the teacher "
               "answers on its own centred pictures" if online is None else
               "the teacher's features could not be read apart from its answers (its head does not read a plain list "
               "of features)")
        rest = "The soft targets and the labels teach." if soft_weight > 0 else "Only the labels teach."
        log(f"The feature weight is not used: {why}. {rest}", "warning")
        return None
    hook = StudentFeatures().attach(model, head)
    probe = model.get_submodule(head)
    mine = getattr(probe, "in_features", None)
    if mine == runner.features:
        how = "the mean squared difference of the two models' features"
    elif mine:
        how = (f"the similarity of each picture to the others in the batch, as each model sees it (the student has "
               f"{mine} features, the teacher {runner.features})")
    else:  # a head that does not say how many features it reads: decided on the first batch (feature_loss)
        how = ("the mean squared difference of the two models' features if they have as many, else the similarity "
               "of each picture to the others in the batch, as each model sees it")
    log(f"The teacher's features (the {runner.features} numbers its head reads for each picture) teach the student's "
        f"too: the loss adds {how}, relative to the size of the teacher's features.")
    return hook


CONSISTENT = True  # consistent teaching when possible (bench/bench_edge.py measures it against the fixed answers)
REUSE_HEAD = True  # a student head of the teacher's shape starts as the teacher's (bench_edge.py measures it without)


def _recalibrate_student(model: nn.Module, runtime, data_config: dict, data, emit: Callable,
                         stop: threading.Event) -> None:
    """BatchNorm recalibration before a new run's first step, on the training pictures as evaluation sees them,
    said in the log with how far the running means moved."""
    from engine.data.loaders import BatchNormalize, make_loader
    from engine.train.loop import to_device

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    before = [m.running_mean.detach().clone() for m in norms]
    normalize = BatchNormalize(data_config["mean"], data_config["std"])
    began = time.monotonic()
    batches = (to_device(images, labels, runtime, normalize)[0]
               for images, labels in make_loader(data.train_eval, 64, shuffle=False, workers=data.workers))
    layers = recalibrate_batchnorm(model, batches, stop)
    moved = max(float((m.running_mean - b).abs().max()) for m, b in zip(norms, before))
    emit(Log("info", f"BatchNorm recalibration: the running statistics of the student's {layers} BatchNorm layers "
             f"were measured again on the {len(data.train_eval)} training pictures before training "
             f"({time.monotonic() - began:.1f} s; the largest change of a running mean was {moved:.3g}), so that "
             "evaluation does not use statistics from another network's width or other pictures. The weights are "
             "unchanged."))
