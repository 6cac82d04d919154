"""Adapting a run's model to new pictures without labels: AdaBN and TENT. The result is a new run folder linked to
its parent, which evaluates, predicts and exports like any run.

- **AdaBN** (Li et al., 2016): the BatchNorm layers' running statistics are estimated again on the new pictures.
  Measured (bench/bench_shift.py, docs/shift.md), re-estimating every layer on a few hundred pictures can cost more
  than the shift did: the head was trained on features normalised with the training pictures' statistics, and the
  deep layers' statistics also follow the new folder's class mix. So by default only the first ``DEPTH`` share of
  the BatchNorm layers (in the network's order: those that see colour, contrast, blur and noise) are adapted, and
  their new statistics mix the target's with the source's: ``(1 - a) * source + a * target`` with
  ``a = n / (n + PRIOR)`` for ``n`` new pictures (Schneider et al., 2020). Fewer than ``MIN_PICTURES`` pictures are
  refused: their statistics would be noise.
- **TENT** (Wang et al., ICLR 2021): AdaBN first, then a few passes of entropy minimisation over the new pictures that
  train only the adapted BatchNorm layers' scale and shift (the statistics stay the adapted ones, so the saved model
  is an ordinary static model).

Adaptation is refused with a sentence, instead of producing a worse model, when the pictures show no drift (the drift
report's verdict, engine.shift.drift) or, when their folders name their classes, when the adapted model is less
accurate on them than the parent (``force`` adapts anyway). Models without BatchNorm (ViT, ConvNeXt, most
transformers normalise with LayerNorm) get a sentence saying what is available for them.

The new run folder holds ``config.toml`` (the parent's, with ``adapted_from``, ``adapted_data`` and
``adapted_method``), the parent's ``labels.json`` and ``dataset.json`` (so that evaluation uses the parent's
validation pictures: the in-domain cost shows there), ``model.json`` with an ``adaptation`` entry, the adapted
``best.safetensors`` and a ``summary.json`` whose ``best_val_acc`` is the adapted model's accuracy on those
validation pictures.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from engine import files
from engine.errors import UserError
from engine.project import runs
from engine.results.predict import ModelBundle, batches, expand_paths, load_run_model, true_class_of
from engine.shift.features import run_pass

METHODS = ("adabn", "tent")
MIN_PICTURES = 32
DEPTH = 0.5  # share of the BatchNorm layers adapted, from the input on (measured in docs/shift.md)
PRIOR = 16  # the source statistics count as this many pictures when mixed with the target's
TENT_EPOCHS = 1
TENT_LR = 1e-3
TENT_BATCH = 32
# TENT can collapse the predictions towards one class (measured in docs/shift.md: on blur and JPEG it did); when its
# predicted class mix on the new pictures moves more than this (total variation) from AdaBN's, it is refused.
TENT_MIX_LIMIT = 0.15
ProgressCallback = Callable[[str, int, int], None]  # (what, done, total)


class NoBatchNorm(UserError):
    """The model has no BatchNorm layer: adaptation without labels does not apply."""


class NotExpectedToHelp(UserError):
    """The measurements say adaptation would not help (no drift, or worse on labelled pictures)."""


@dataclass
class AdaptResult:
    run_dir: str
    parent: str
    method: str
    pictures: int
    layers: int  # BatchNorm layers adapted
    of_layers: int
    mix: float  # weight of the target statistics
    accuracy_before: float | None = None  # on the new pictures whose folder names their class
    accuracy_after: float | None = None
    labelled: int = 0
    val_before: float | None = None  # on the parent's validation pictures
    val_after: float | None = None
    drift_before: dict = field(default_factory=dict)
    seconds: float = 0.0

    def sentence(self) -> str:
        how = {"adabn": "BatchNorm statistics re-estimated (AdaBN)",
               "tent": "BatchNorm statistics re-estimated and their scale and shift tuned by entropy minimisation "
                       "(TENT)"}[self.method]
        text = (f"Adapted to {self.pictures} new pictures: {how} in {self.layers} of {self.of_layers} BatchNorm "
                f"layers, new statistics weighted {self.mix:.2f}.")
        if self.accuracy_before is not None:
            text += (f" On the {self.labelled} new pictures whose folder names their class, accuracy "
                     f"{100 * self.accuracy_before:.1f} % \u2192 {100 * self.accuracy_after:.1f} %.")
        if self.val_before is not None and self.val_after is not None:
            text += (f" On the original validation pictures, accuracy {100 * self.val_before:.1f} % \u2192 "
                     f"{100 * self.val_after:.1f} % (the adapted model is meant for the new pictures; keep the "
                     "original for pictures like the training ones).")
        return text

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "sentence": self.sentence()}


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def no_batchnorm_sentence(architecture: str) -> str:
    return (f"{architecture} has no BatchNorm layers (it normalises with LayerNorm), so it cannot be adapted without "
            "labels (AdaBN and TENT re-estimate BatchNorm). What works for it: the drift report and the flag for "
            "pictures unlike the training ones tell you how far the new pictures are; to adapt, label a few of them "
            "and use Adapt with labels (a run on them that starts from this run's weights).")


def chosen_layers(model: nn.Module, depth: float = DEPTH) -> tuple[list[_BatchNorm], int]:
    layers = batchnorm_layers(model)
    return layers[:max(1, math.ceil(depth * len(layers)))] if layers else [], len(layers)


def mix_weight(n: int, prior: float = PRIOR) -> float:
    return n / (n + prior) if prior > 0 else 1.0


class _Enough(Exception):
    """Raised by a hook on the last adapted BatchNorm layer: the layers after it need not run."""


def adabn(model: nn.Module, bundle: ModelBundle, paths: list[str], *, depth: float = DEPTH, prior: float = PRIOR,
          stop: threading.Event | None = None, on_progress: Callable[[int, int], None] | None = None,
          loaded=None) -> tuple[int, int, float]:
    """Re-estimate, in place, the running statistics of the first ``depth`` share of ``model``'s BatchNorm layers on
    ``paths`` and mix them with the source's. Only ``running_mean`` and ``running_var`` change. Returns (layers
    adapted, BatchNorm layers, target weight). ``loaded``: the batches, when already prepared (as
    engine.results.predict.batches gives them)."""
    chosen, total = chosen_layers(model, depth)
    if not chosen:
        raise NoBatchNorm(no_batchnorm_sentence(bundle.architecture))
    saved = {id(m): (m.running_mean.clone(), m.running_var.clone(), m.momentum,
                     m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in chosen}
    device = torch.device(bundle.device)
    model.eval()
    for m in chosen:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    seen = 0

    def enough(module, inputs, output):
        raise _Enough

    # The forward pass stops after the last adapted layer: the statistics need nothing beyond it.
    hook = chosen[-1].register_forward_hook(enough) if len(chosen) < total else None
    try:
        with torch.no_grad():
            source = loaded if loaded is not None else batches(bundle, paths, 32, stop, "The adaptation was stopped.")
            for indices, batch, errs in source:
                if batch is not None and len(indices) > 1:
                    try:
                        model(batch.to(device))
                    except _Enough:
                        pass
                    seen += len(indices)
                if on_progress is not None:
                    on_progress(max(indices, default=0) + 1, len(paths))
    finally:
        if hook is not None:
            hook.remove()
        a = mix_weight(seen, prior)
        for m in chosen:
            mean, var, momentum, tracked = saved[id(m)]
            m.eval()
            m.momentum = momentum
            if seen:
                m.running_mean.copy_((1 - a) * mean.to(m.running_mean) + a * m.running_mean)
                m.running_var.copy_((1 - a) * var.to(m.running_var) + a * m.running_var)
            else:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
    return len(chosen), total, a


def tent(model: nn.Module, bundle: ModelBundle, paths: list[str], *, depth: float = DEPTH,
         epochs: int = TENT_EPOCHS, lr: float = TENT_LR, stop: threading.Event | None = None,
         on_progress: Callable[[int, int], None] | None = None, seed: int = 0, loaded=None) -> None:
    """Entropy minimisation on the scale and shift of the adapted BatchNorm layers (their statistics fixed)."""
    chosen, _ = chosen_layers(model, depth)
    params = [p for m in chosen for p in (m.weight, m.bias) if p is not None]
    if not params:
        return
    trainable = {id(p) for p in params}
    before = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.Adam(params, lr=lr)
    device = torch.device(bundle.device)
    rng = np.random.default_rng(seed)
    model.eval()  # statistics fixed: the adapted ones
    total = epochs * len(paths)
    try:
        for epoch in range(epochs):
            order = [paths[i] for i in rng.permutation(len(paths))]
            source = (loaded(rng) if loaded is not None
                      else batches(bundle, order, TENT_BATCH, stop, "The adaptation was stopped."))
            for indices, batch, _ in source:
                if batch is None:
                    continue
                with torch.enable_grad():
                    logits = model(batch.to(device)) / bundle.temperature
                    log_p = logits.float().log_softmax(1)
                    loss = -(log_p.exp() * log_p).sum(1).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if on_progress is not None:
                    on_progress(epoch * len(paths) + max(indices) + 1, total)
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)
        model.eval()


def _mix(bundle: ModelBundle, model: nn.Module, paths: list[str], stop: threading.Event | None) -> np.ndarray:
    """The share of ``paths`` predicted as each class by ``model``."""
    p = run_pass(bundle, paths, model=model, stop=stop, stop_message="The adaptation was stopped.")
    predicted = p.logits[p.good].argmax(1)
    return np.bincount(predicted, minlength=len(bundle.classes)) / max(1, len(predicted))


def _accuracy(bundle: ModelBundle, model: nn.Module, paths: list[str], labels: list[int],
              stop: threading.Event | None) -> float | None:
    if not paths:
        return None
    p = run_pass(bundle, paths, model=model, stop=stop, stop_message="The adaptation was stopped.")
    good = p.good
    if not good.any():
        return None
    return float(np.mean(p.logits[good].argmax(1) == np.asarray(labels)[good]))


def adapt_run(run: str | Path, data: str | Path, method: str = "adabn", out: str | Path | None = None, *,
              depth: float = DEPTH, prior: float = PRIOR, force: bool = False, device: str = "auto",
              on_progress: ProgressCallback | None = None, stop: threading.Event | None = None,
              tent_epochs: int = TENT_EPOCHS) -> AdaptResult:
    """Adapt the model of the run folder ``run`` to the pictures of the folder ``data`` and write the adapted model
    as a new run folder under ``out`` (default: beside the parent). See the module's docstring."""
    from engine.shift import drift as drift_mod
    from engine.shift import ood as ood_mod

    started = time.monotonic()
    if method not in METHODS:
        raise UserError(f"'{method}' is not an adaptation method: choose adabn or tent.")
    say = on_progress or (lambda what, done, total: None)
    bundle = load_run_model(run, device)
    if bundle.kind != "run":
        raise UserError(f"{bundle.source} is an exported model: adapt the run folder it came from.")
    parent = Path(bundle.source)
    layers, _ = chosen_layers(bundle.model, depth)
    if not layers:
        raise NoBatchNorm(no_batchnorm_sentence(bundle.architecture))
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give the folder of new pictures.")
    paths = [p for p, e in expand_paths([folder]) if e is None]
    if len(paths) < MIN_PICTURES:
        raise UserError(f"{folder} holds {len(paths)} pictures: adaptation needs at least {MIN_PICTURES} (with fewer, "
                        "the statistics it re-estimates would be noise).")
    # Measure before trusting: is there drift at all?
    ood = ood_mod.ensure(bundle, on_progress=lambda d, t: say("Measuring the training pictures", d, t), stop=stop)
    report = drift_mod.drift_report(bundle, folder, ood, stop=stop,
                                    on_progress=lambda d, t: say("Measuring the new pictures", d, t))
    if report.verdict == "none" and not force:
        raise NotExpectedToHelp("Adaptation is not expected to help: these pictures look like the training pictures "
                                f"({report.flagged} of {report.pictures} flagged, about "
                                f"{100 * report.expected_share:.0f} % expected"
                                + ("" if report.domain_auc is None else
                                   f"; domain classifier AUC {report.domain_auc:.2f}")
                                + "), and re-estimating statistics without a shift only adds noise. The model is "
                                "kept as it is.")
    truth = [true_class_of(p, [folder], bundle.classes) for p in paths]
    labelled = [(p, bundle.classes.index(t)) for p, t in zip(paths, truth) if t is not None]
    model = copy.deepcopy(bundle.model)
    n_layers, total, a = adabn(model, bundle, paths, depth=depth, prior=prior, stop=stop,
                               on_progress=lambda d, t: say("Re-estimating BatchNorm statistics", d, t))
    if method == "tent":
        say("Checking the AdaBN model's answers", 0, 1)
        mix_before = _mix(bundle, model, paths, stop)
        tent(model, bundle, paths, depth=depth, epochs=tent_epochs, stop=stop,
             on_progress=lambda d, t: say("Entropy minimisation (TENT)", d, t))
        say("Checking the TENT model's answers", 0, 1)
        moved = 0.5 * float(np.abs(_mix(bundle, model, paths, stop) - mix_before).sum())
        if moved > TENT_MIX_LIMIT and not force:
            raise NotExpectedToHelp(
                f"TENT was not kept: it moved {100 * moved:.0f} % of the new pictures' predictions to another class "
                "compared with AdaBN alone, the sign of a model collapsing towards one class rather than adapting. "
                "Use AdaBN instead.")
    result = AdaptResult("", str(parent), method, len(paths), n_layers, total, a, drift_before=report.to_dict())
    result.drift_before.pop("flagged_pictures", None)
    if labelled:
        lp, ly = [p for p, _ in labelled], [y for _, y in labelled]
        result.labelled = len(lp)
        result.accuracy_before = _accuracy(bundle, bundle.model, lp, ly, stop)
        result.accuracy_after = _accuracy(bundle, model, lp, ly, stop)
        if (result.accuracy_after is not None and result.accuracy_before is not None
                and result.accuracy_after < result.accuracy_before and not force):
            raise NotExpectedToHelp(
                f"Adaptation did not help: on the {len(lp)} new pictures whose folder names their class, accuracy "
                f"would go from {100 * result.accuracy_before:.1f} % to {100 * result.accuracy_after:.1f} %. The model "
                "is kept as it is; with these labels, Adapt with labels (a short run on them) is the better way.")
    train, val = ood_mod.run_pictures(parent)
    if val:
        vp, vy = [p for p, _ in val], [y for _, y in val]
        say("Checking the original validation pictures", 0, 1)
        result.val_before = runs.read_summary(parent).get("best_val_acc")
        result.val_after = _accuracy(bundle, model, vp, vy, stop)
    result.seconds = round(time.monotonic() - started, 2)
    result.run_dir = str(write_run(parent, model, bundle, folder, method, result, out))
    return result


def write_run(parent: Path, model: nn.Module, bundle: ModelBundle, folder: Path, method: str, result: AdaptResult,
              out: str | Path | None) -> Path:
    """The adapted model as a new run folder (see the module's docstring)."""
    from engine.config import dumps, load
    from engine.train.checkpoint import save_weights

    config = load(parent / runs.CONFIG)
    config = dataclasses.replace(config, adapted_from=str(parent), adapted_data=str(folder.absolute()),
                                 adapted_method=method)
    target = Path(out).expanduser() if out else parent.parent
    short = config.model.name.split(":")[-1]
    run_dir = runs.create_run_dir(target, config.model.name, config.strategy, f"{short}-{method}")
    info = dict(bundle.info)
    info.pop("ood", None)  # fitted again for the adapted model when first needed
    info["adaptation"] = {"method": method, "from": str(parent), "data": str(folder.absolute()),
                          "pictures": result.pictures, "layers": result.layers, "of_layers": result.of_layers,
                          "mix": result.mix}
    summary = runs.read_summary(parent)
    try:
        files.atomic_write_text(run_dir / runs.CONFIG, dumps(config))
        for name in (runs.LABELS, runs.DATASET):
            files.atomic_write_text(run_dir / name, (parent / name).read_text(encoding="utf-8"))
        files.atomic_write_json(run_dir / runs.MODEL, info)
        save_weights(model, run_dir / runs.BEST)
        files.atomic_write_json(run_dir / runs.SUMMARY, {
            "status": "completed", "best_val_acc": result.val_after, "best_epoch": summary.get("best_epoch"),
            "epochs_completed": summary.get("epochs_completed", 0), "error": None, "seconds": result.seconds,
            "model": config.model.name, "strategy": config.strategy, "weights": config.model.weights,
            "total_epochs": summary.get("total_epochs", 0), "adapted_from": str(parent),
            "adaptation": result.to_dict()})
    except OSError as exc:
        raise UserError(runs.write_problem("the adapted model", run_dir, exc) + ".") from None
    return run_dir


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --- adapt with labels ---------------------------------------------------------------------------------------------


@dataclass
class LabelledResult:
    """A short run on a few labelled pictures of the new domain, started from a run's weights, and which model to
    keep: the one more accurate on the held-out part of those pictures."""

    run_dir: str
    parent: str
    pictures: int  # held-out labelled pictures the two models were compared on
    before: float | None
    after: float | None
    status: str  # the new run's status

    @property
    def keep(self) -> str:
        if self.after is None or self.before is None:
            return "original"
        return "adapted" if self.after >= self.before else "original"

    def sentence(self) -> str:
        if self.after is None:
            return f"The run on the labelled pictures did not complete ({self.status}): the original model is kept."
        verdict = ("the adapted model is better: use it for these pictures" if self.keep == "adapted" else
                   "the original model is better: keep using it (the new run stays in the list)")
        return (f"On {self.pictures} labelled new pictures held out for the comparison, accuracy "
                f"{100 * self.before:.1f} % (original) against {100 * self.after:.1f} % (adapted with labels): "
                f"{verdict}.")


def adapt_with_labels(run: str | Path, data: str | Path, *, epochs: int = 5, out: str | Path | None = None,
                      on_event=None, stop: threading.Event | None = None, device: str = "auto") -> LabelledResult:
    """Train the run's strategy on the labelled pictures of ``data`` (class sub-folders named like the run's
    classes), starting from the run's own weights; then compare the original and the new model on the held-out part
    of those pictures. The new run records ``adapted_from``, ``adapted_data`` and ``adapted_method = "labels"``."""
    from engine.config import DataConfig, ModelConfig, load
    from engine.data.scan import scan
    from engine.train.trainer import fit

    parent = Path(run).expanduser()
    bundle = load_run_model(parent, device)
    if bundle.kind != "run":
        raise UserError(f"{bundle.source} is an exported model: adapt the run folder it came from.")
    folder = Path(data).expanduser()
    dataset = scan(str(folder), verify=False)
    if sorted(dataset.classes) != sorted(bundle.classes):
        raise UserError(f"The folders in {folder} name the classes {', '.join(dataset.classes)}, but the model knows "
                        f"{', '.join(bundle.classes)}: put the labelled pictures in sub-folders named like the "
                        "model's classes.")
    config = load(parent / runs.CONFIG)
    config = dataclasses.replace(
        config, data=DataConfig(source=str(folder.absolute()), val_fraction=0.3),
        model=ModelConfig(config.model.name, str(parent / runs.BEST)), epochs=min(config.total_epochs, epochs),
        phases=config.phases if config.strategy == "custom" else (), out=str(Path(out) if out else parent.parent),
        name=f"{config.model.name.split(':')[-1]}-labels", adapted_from=str(parent),
        adapted_data=str(folder.absolute()), adapted_method="labels")
    result = fit(config, on_event, stop)
    if result.status != "completed" or not result.run_dir:
        return LabelledResult(str(result.run_dir or ""), str(parent), 0, None, None, result.status)
    _, val = ood_mod_run_pictures(Path(result.run_dir))
    paths = [p for p, _ in val]
    labels_new = json.loads((Path(result.run_dir) / runs.LABELS).read_text(encoding="utf-8"))
    # The same class names in the parent's order.
    labels = [bundle.classes.index(labels_new[y]) for _, y in val]
    new = load_run_model(result.run_dir, device)
    before = _accuracy(bundle, bundle.model, paths, labels, stop)
    after = _accuracy(new, new.model, paths, [new.classes.index(bundle.classes[y]) for y in labels], stop)
    return LabelledResult(str(result.run_dir), str(parent), len(paths), before, after, result.status)


def ood_mod_run_pictures(run_dir: Path):
    from engine.shift.ood import run_pictures

    return run_pictures(run_dir)
