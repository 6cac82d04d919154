"""Which model, where to freeze, and whether transfer helps at all: transferability scores on the user's own pictures,
without training.

``advise(dataset, candidates)`` runs each candidate (model, weights) once, frozen and in eval mode, over a stratified
sample of the pictures (at most ``SAMPLE_LIMIT``), keeps the globally pooled output of every stage of its layer tree
(forward hooks) and the features its head sees, and scores them with LogME (engine.advise.logme):

- the models, ranked by the score of the features their new head would see (``Advice.models``, best first), with the
  time per epoch to expect on this computer, their size and licence;
- every stage of the chosen model (``Advice.stages``, from the input to the head) and the suggested freeze point:
  the deepest stage whose score is within ``FREEZE_TOLERANCE`` of the best stage's (features further up got more
  specific to the source task than useful here, so the stages after the freeze point retrain);
- the negative-transfer check: the chosen model's pretrained features against the same architecture with random
  weights, on the same pictures (``Advice.transfer``). The difference of the two LogME values times the number of
  pictures is the log Bayes factor of the two feature sets for the labels (average over classes); the pretrained
  features are "clearly better" when it is at least ``log(100)`` ("decisive" on Jeffreys' scale). When they are not,
  the advice says so in words and what to do.

Plain functions and dataclasses; progress through ``on_progress(done, total)``, ``stop`` checked every batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from engine.advise.logme import logme
from engine.data.scan import DatasetIndex, Sample
from engine.errors import ModelError, UserError

SAMPLE_LIMIT = 2000  # pictures scored at most (stratified by class)
CHECK_LIMIT = 500  # pictures the negative-transfer check scores (both weight sets, the same pictures)
BATCH_SIZE = 32
FREEZE_TOLERANCE = 0.05  # share of the stages' score range below the best that still counts as "as good"
DECISIVE_LOG_BAYES = math.log(100)  # Jeffreys' "decisive" evidence
FULL_STEP_FORWARDS = 3.0  # a training step of the whole network costs about three forward passes (forward + backward)
RANDOM_SEED = 0  # the random weights of the negative-transfer check

ProgressCallback = Callable[[int, int], None]


class Stopped(UserError):
    """The user stopped the advice (nothing was written)."""


@dataclass(frozen=True)
class Candidate:
    """A model with weights that are on this computer: ``weights`` is "pretrained", "none" or a weight file."""

    model: str
    weights: str
    label: str = ""  # how the window names it ("resnet18, pretrained", "my-run (3 classes)")
    origin: str = "pretrained"  # "pretrained", "file" (imported into the model library), "run" (an earlier run), "given"


@dataclass(frozen=True)
class StageScore:
    stage: str
    score: float
    features: int  # the width of the stage's pooled output


@dataclass(frozen=True)
class ModelScore:
    model: str
    weights: str
    label: str
    score: float  # LogME of the features the new head sees
    stages: tuple[StageScore, ...]
    params: int
    licence: str | None
    seconds_per_picture: float  # one forward pass on this computer, measured on the sample
    epoch_seconds_frozen: float  # an epoch of the training pictures with the body kept as is (one forward pass each)
    epoch_seconds_full: float  # an epoch retraining every layer (about three forward passes each)
    size_mb: float  # the weights in float32


@dataclass(frozen=True)
class TransferCheck:
    """Pretrained against random weights of the same architecture, on the same pictures."""

    model: str
    weights: str
    pretrained_score: float
    random_score: float
    pictures: int
    log_bayes_factor: float
    clearly_better: bool
    sentence: str


@dataclass(frozen=True)
class Advice:
    pictures: int  # in the scored sample
    classes: tuple[str, ...]
    models: tuple[ModelScore, ...]  # best first
    chosen: str  # "model | weights" of the model whose stages are given
    stages: tuple[StageScore, ...]  # the chosen model's, from the input to the head
    suggested_freeze: str | None
    freeze_sentence: str
    transfer: TransferCheck | None
    seconds: float
    skipped: tuple[str, ...] = field(default=())  # candidates that could not be scored, each as a sentence

    def to_dict(self) -> dict:
        """The JSON of ``main.py advise --json`` (``models``, ``stages`` and ``suggested_freeze`` are a contract)."""
        return {
            "models": [{"model": m.model, "weights": m.weights, "score": m.score, "label": m.label,
                        "params": m.params, "licence": m.licence, "size_mb": m.size_mb,
                        "seconds_per_picture": m.seconds_per_picture,
                        "epoch_seconds_frozen": m.epoch_seconds_frozen, "epoch_seconds_full": m.epoch_seconds_full,
                        "stages": [asdict(s) for s in m.stages]} for m in self.models],
            "stages": [{"stage": s.stage, "score": s.score, "features": s.features} for s in self.stages],
            "suggested_freeze": self.suggested_freeze,
            "freeze_sentence": self.freeze_sentence,
            "transfer": asdict(self.transfer) if self.transfer is not None else None,
            "chosen": self.chosen,
            "pictures": self.pictures,
            "classes": list(self.classes),
            "seconds": self.seconds,
            "skipped": list(self.skipped),
        }


# --- candidates ------------------------------------------------------------------------------------------------


def candidates(runs_dir: str | os.PathLike | None = None, library=None) -> list[Candidate]:
    """Every (model, weights) on this computer: pretrained weights in the Hugging Face or PyTorch hub cache, weight
    files imported into the model library (with a known architecture), and the models of earlier runs in
    ``runs_dir``. Looks at local files only."""
    from engine.models import catalogue
    from engine.project.library import ModelLibrary, trained_models

    found: list[Candidate] = []
    index = catalogue.OfflineIndex()
    for item in catalogue.all_models():
        if index.pretrained(item):
            found.append(Candidate(item.name, "pretrained", f"{item.arch}, pretrained", "pretrained"))
    library = library if library is not None else ModelLibrary()
    for entry in library.imported():
        if entry.architecture:
            found.append(Candidate(entry.architecture, entry.path,
                                   f"{entry.architecture.split(':', 1)[-1]}, {entry.label}", "file"))
    if runs_dir is not None:
        for run in trained_models(runs_dir):
            found.append(Candidate(run.architecture, run.path, f"{run.architecture.split(':', 1)[-1]}, {run.label}",
                                   "run"))
    seen, unique = set(), []
    for c in found:
        if (c.model, c.weights) not in seen:
            seen.add((c.model, c.weights))
            unique.append(c)
    return unique


# --- the pictures ----------------------------------------------------------------------------------------------


def stratified_sample(samples: Sequence[Sample], limit: int = SAMPLE_LIMIT, seed: int = 0) -> list[Sample]:
    """At most ``limit`` samples, each class keeping its share (at least one picture each), drawn with ``seed``;
    in path order within each class."""
    if len(samples) <= limit:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    quota = {c: max(1, int(round(limit * len(items) / len(samples)))) for c, items in by_class.items()}
    while sum(quota.values()) > limit:  # rounding up may overshoot by a few: take them from the largest classes
        largest = max(quota, key=lambda c: quota[c])
        quota[largest] -= 1
    chosen = []
    for c, items in sorted(by_class.items()):
        picks = sorted(rng.choice(len(items), size=min(quota[c], len(items)), replace=False))
        chosen.extend(items[i] for i in picks)
    return chosen


def _scored_samples(dataset: DatasetIndex, limit: int, seed: int) -> list[Sample]:
    pool = dataset.split("train") or dataset.samples
    chosen = stratified_sample(pool, limit, seed)
    if len({s.label for s in chosen}) < 2:
        raise UserError("Scoring models needs labelled pictures of at least two classes.")
    return chosen


# --- features ----------------------------------------------------------------------------------------------------


@dataclass
class Features:
    stages: dict[str, np.ndarray]  # stage -> (N, C), from the input to the last body stage
    head: np.ndarray  # (N, D): what the new head sees
    seconds_per_picture: float


def _pool(output) -> torch.Tensor | None:
    """A stage's output as one vector per picture: the spatial (or token) mean."""
    if isinstance(output, (tuple, list)):
        output = next((o for o in output if isinstance(o, torch.Tensor)), None)
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        return None
    output = output.detach().float()
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output.mean(dim=1)
    return output.flatten(1)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``Sequential`` into the
    convolution (the BatchNorm becomes ``Identity``, at the same name), and return how many were folded. The outputs
    are the same up to rounding and a forward pass skips one pass over every activation (about a tenth of
    MobileNetV2's time on a CPU). Only for a model used for inference and thrown away: ``advise`` builds its own.
    Subclasses (timm's BatchNormAct2d, which also applies an activation) are left alone. The arithmetic is
    torch.nn.utils.fusion.fuse_conv_bn_eval's; the walk over the Sequentials is written here (torch.fx's fusion
    needs a traceable model, which not every timm model is)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
                    and bn.track_running_stats and bn.running_mean is not None and conv.out_channels == bn.num_features):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
                folded += 1
    return folded


def extract_features(built, tree, samples: Sequence[Sample], *, device: str = "auto",
                     on_progress: Callable[[int], None] | None = None, stop: threading.Event | None = None,
                     cache: bool = True, fast: bool = True, stages: bool = True) -> Features:
    """Run ``built.model`` (an engine.models.build.BuiltModel), frozen and in eval mode, over ``samples`` with its
    evaluation preprocessing, keeping each stage's pooled output (unless ``stages`` is False) and the head's input.

    ``fast`` (the default) folds the BatchNorms into their convolutions (:func:`fold_batchnorm`: this changes
    ``built.model``) and decodes to 8-bit tensors normalised a batch at a time (engine.data.loaders.BatchNormalize),
    as training's loaders do; the features are the same up to rounding. ``fast=False`` is the plain path, kept for
    the benchmark's before/after (bench/bench_advisor.py, item e)."""
    from engine.data.cache import ImageCache
    from engine.data.loaders import BatchNormalize, ImageDataset, build_transforms, decode_size, make_loader
    from engine.train.runtime import resolve_device

    model: nn.Module = built.model
    torch_device = resolve_device(device)
    model.eval().to(torch_device)
    if fast:
        fold_batchnorm(model)
    _, eval_tf = build_transforms(built.data_config, "none", uint8=fast)
    normalize = BatchNormalize(built.data_config["mean"], built.data_config["std"])  # a no-op on float batches
    image_cache = ImageCache.for_data_config(built.data_config) if cache else None
    dataset = ImageDataset([s.path for s in samples], [s.label for s in samples], eval_tf,
                           decode_size(built.data_config), image_cache)
    loader = make_loader(dataset, BATCH_SIZE, shuffle=False, workers=0)

    # The rows of each stage (the largest modules wholly inside it); a stage's output is the output of the one of
    # them that ran last in the forward pass.
    module_stages = tree.module_stages(model)
    modules = dict(model.named_modules())
    body = [s.name for s in tree.body]
    rows: dict[str, list[str]] = {name: [] for name in body}
    for name, stage in module_stages.items():
        parent = name.rpartition(".")[0]
        if name and stage in rows and module_stages.get(parent) != stage:
            rows[stage].append(name)
    current: dict[str, torch.Tensor] = {}
    head_input: list[torch.Tensor] = []
    handles = []

    def stage_hook(stage: str):
        def hook(_module, _inputs, output):
            pooled = _pool(output)
            if pooled is not None:
                current[stage] = pooled
        return hook

    def head_hook(_module, inputs):
        pooled = _pool(inputs[0] if inputs else None)
        if pooled is not None:
            head_input.append(pooled)

    for stage, names in rows.items() if stages else ():
        for name in names:
            handles.append(modules[name].register_forward_hook(stage_hook(stage)))
    handles.append(modules[tree.head_module].register_forward_pre_hook(head_hook))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in body}
    heads: list[np.ndarray] = []
    done = 0
    seconds = 0.0
    from engine.train.runtime import cpu_allocator_for_training

    # On a CPU, glibc keeps its large blocks while the pass lasts: without it every batch's activations were fresh
    # mappings, and a warm 2,000-picture `advise` spent as long in the kernel's page faults as in the model.
    allocator = cpu_allocator_for_training() if torch_device.type == "cpu" else contextlib.nullcontext()
    try:
        with allocator, torch.inference_mode():
            for images, _labels in loader:
                if stop is not None and stop.is_set():
                    raise Stopped("The scores were stopped.")
                current.clear()
                head_input.clear()
                started = time.perf_counter()
                model(normalize(images.to(torch_device)))
                seconds += time.perf_counter() - started
                for stage in body:
                    if stage in current:
                        collected[stage].append(current[stage].cpu().numpy())
                if head_input:
                    heads.append(head_input[-1].cpu().numpy())
                done += len(images)
                if on_progress is not None:
                    on_progress(done)
    finally:
        for handle in handles:
            handle.remove()
    stages = {s: np.concatenate(parts) for s, parts in collected.items() if len(parts) and
              sum(len(p) for p in parts) == done}
    if not heads:
        raise ModelError("The model's head received nothing to score: this architecture cannot be scored.")
    return Features(stages, np.concatenate(heads), seconds / max(1, done))


# --- scores ------------------------------------------------------------------------------------------------------


def suggest_freeze(stages: Sequence[StageScore], tolerance: float = FREEZE_TOLERANCE) -> tuple[str | None, str]:
    """The deepest stage whose score is within ``tolerance`` of the score range below the best one, and the sentence
    that says what it means."""
    if not stages:
        return None, "No stage could be scored."
    scores = np.array([s.score for s in stages])
    best = float(scores.max())
    spread = best - float(scores.min())
    good = [i for i, s in enumerate(scores) if s >= best - tolerance * spread]
    index = max(good)
    name = stages[index].stage
    if index == len(stages) - 1:
        return name, ("The features transfer best at the top of the network: keep every layer as is and retrain "
                      "only the new head (feature extraction).")
    after = len(stages) - 1 - index
    return name, (f"The features transfer best up to {name}; the {after} stage{'s' if after != 1 else ''} after it "
                  "became specific to the pictures the model was trained on: keep the layers up to "
                  f"{name} as they are and retrain the rest with the new head.")


def _stage_scores(features: Features, labels: np.ndarray, num_classes: int) -> tuple[StageScore, ...]:
    return tuple(StageScore(stage, logme(f, labels, num_classes), int(f.shape[1]))
                 for stage, f in features.stages.items())


def transfer_sentence(model: str, pretrained: float, random: float, log_bf: float, clearly_better: bool) -> str:
    arch = model.split(":", 1)[-1]
    if clearly_better:
        return (f"Transfer helps: the pretrained features of {arch} fit your labels clearly better than the same "
                f"network with random weights (score {pretrained:.3f} against {random:.3f}).")
    if pretrained >= random:
        return (f"Transfer may not help much here: the pretrained features of {arch} fit your labels hardly better "
                f"than random ones (score {pretrained:.3f} against {random:.3f}). Retrain more of the network "
                "(deeper fine-tuning), or try another source model, and compare with training from scratch.")
    return (f"Negative transfer: the pretrained features of {arch} fit your labels worse than random ones (score "
            f"{pretrained:.3f} against {random:.3f}). Your pictures are probably unlike the ones it was trained "
            "on: choose another source model, or retrain the whole network (deep fine-tuning) and compare with "
            "training from scratch.")


def advise(dataset: DatasetIndex, models: Sequence[Candidate], *, chosen: int = 0, sample: int = SAMPLE_LIMIT,
           check: bool = True, device: str = "auto", seed: int = 0, on_progress: ProgressCallback | None = None,
           stop: threading.Event | None = None, on_say: Callable[[str], None] | None = None,
           fast: bool = True) -> Advice:
    """Score ``models`` on a stratified sample of ``dataset``'s training pictures; the stages and the negative-transfer
    check are those of ``models[chosen]``. A candidate that cannot be built is skipped with its sentence (all of them
    failing raises the first sentence)."""
    from engine.models.build import build_model
    from engine.models.layers import build_layer_tree

    if not models:
        raise UserError("There is no model to score: import a weight file or download pretrained weights first.")
    started = time.perf_counter()
    samples = _scored_samples(dataset, sample, seed)
    labels = np.array([s.label for s in samples])
    num_classes = len(dataset.classes)
    n_train = len(dataset.split("train")) or len(dataset.samples)
    want_check = check and models[chosen].weights != "none"
    check_samples = stratified_sample(samples, CHECK_LIMIT, seed) if want_check else []
    position = {s.path: i for i, s in enumerate(samples)}
    check_rows = np.array([position[s.path] for s in check_samples], dtype=np.int64)
    total = len(samples) * len(models) + len(check_samples)
    offset = 0

    def progress_from(base: int) -> Callable[[int], None]:
        return lambda done: on_progress(base + done, total) if on_progress is not None else None

    scored: list[tuple[int, ModelScore]] = []
    skipped: list[str] = []
    chosen_stages: tuple[StageScore, ...] = ()
    check_result: TransferCheck | None = None
    for i, candidate in enumerate(models):
        if on_say is not None:
            on_say(f"Scoring {candidate.label or candidate.model} on {len(samples)} pictures ...")
        try:
            torch.manual_seed(RANDOM_SEED)
            built = build_model(candidate.model, candidate.weights, num_classes, allow_download=False)
        except UserError as exc:
            if i == chosen:
                raise
            skipped.append(f"{candidate.label or candidate.model}: {exc}")
            offset += len(samples)
            continue
        tree = build_layer_tree(built.model, built.head)
        params = int(sum(p.numel() for p in built.model.parameters()))  # before the BatchNorms are folded
        features = extract_features(built, tree, samples, device=device, on_progress=progress_from(offset),
                                    stop=stop, fast=fast)
        offset += len(samples)
        stages = _stage_scores(features, labels, num_classes)
        score = ModelScore(
            candidate.model, candidate.weights, candidate.label or _label(candidate), logme(features.head, labels,
                                                                                            num_classes),
            stages, params, _licence(candidate, built), features.seconds_per_picture,
            features.seconds_per_picture * n_train, features.seconds_per_picture * n_train * FULL_STEP_FORWARDS,
            params * 4 / 2**20)
        scored.append((i, score))
        if i == chosen:
            chosen_stages = stages
            if want_check:
                check_result = _negative_check(features.head[check_rows], built.data_config, candidate,
                                               check_samples, num_classes, device, progress_from(offset), stop,
                                               fast)
                offset += len(check_samples)
        del built, tree, features
    if not scored:
        raise UserError(skipped[0] if skipped else "No model could be scored.")
    ranked = tuple(s for _, s in sorted(scored, key=lambda item: -item[1].score))
    freeze, sentence = suggest_freeze(chosen_stages)
    first = models[chosen]
    return Advice(len(samples), tuple(dataset.classes), ranked, f"{first.model} | {first.weights}", chosen_stages,
                  freeze, sentence, check_result, time.perf_counter() - started, tuple(skipped))


def _negative_check(pretrained: np.ndarray, data_config: dict, candidate: Candidate, samples: list[Sample],
                    num_classes: int, device: str, on_progress: Callable[[int], None], stop,
                    fast: bool = True) -> TransferCheck:
    """``pretrained``: the head's features of ``samples`` with the candidate's weights, already computed."""
    from engine.models.build import build_model
    from engine.models.layers import build_layer_tree

    labels = np.array([s.label for s in samples])
    torch.manual_seed(RANDOM_SEED)
    random_built = build_model(candidate.model, "none", num_classes, allow_download=False)
    random_built.data_config = data_config  # the same pixels for both
    random_tree = build_layer_tree(random_built.model, random_built.head)
    n = len(samples)
    random = extract_features(random_built, random_tree, samples, device=device, on_progress=on_progress, stop=stop,
                              fast=fast, stages=False)  # only the head's features are compared
    p_score, r_score = logme(pretrained, labels, num_classes), logme(random.head, labels, num_classes)
    log_bf = (p_score - r_score) * n
    clearly = log_bf >= DECISIVE_LOG_BAYES
    return TransferCheck(candidate.model, candidate.weights, p_score, r_score, n, log_bf, clearly,
                         transfer_sentence(candidate.model, p_score, r_score, log_bf, clearly))


def _label(candidate: Candidate) -> str:
    arch = candidate.model.split(":", 1)[-1]
    if candidate.weights in ("pretrained", "none"):
        return f"{arch}, {'pretrained' if candidate.weights == 'pretrained' else 'random weights'}"
    return f"{arch}, {Path(candidate.weights).name}"


def _licence(candidate: Candidate, built) -> str | None:
    if candidate.weights == "pretrained":
        return built.license
    if candidate.origin == "run":
        return "your own run"
    if candidate.weights == "none":
        return None
    return "your file's terms"
