"""The training doctor: after a run, what its curves and per-class results say, in plain words, each with its evidence
and one next step that the window applies with one click.

``diagnose(...)`` is a pure function of a run's metrics history (metrics.jsonl's records), its validation results per
class and its calibration (both written by engine.train.calibrate into summary.json), its training pictures per class
and its settings; it returns ``Verdict``s:

- ``overfitting``: the validation loss climbs back from its best while the training loss keeps falling, and the gap
  between training and validation accuracy has grown;
- ``underfitting``: even the training pictures are not learnt (low training accuracy at the end, no gap);
- ``not_converged``: the validation loss was still falling over the last epochs and the last epoch was the best;
- ``unstable``: the training loss jumped up from one epoch to the next (a spike), a sign of a learning rate too high;
- ``few_pictures``: a class with fewer than FEW_PICTURES training pictures;
- ``imbalance``: a class with far fewer training pictures than the others whose recall falls well below the rest;
- ``overconfident`` / ``underconfident``: the model's own confidences were off (expected calibration error before
  temperature scaling), and which way.

Each rule names its thresholds below; a healthy run (falling losses that level off, a small gap, balanced classes,
calibrated confidences) gets no verdict. ``advise_run(run_dir)`` reads a run folder, writes the verdicts into its
summary.json (``advice``: a list of {kind, sentence, evidence, action}) and returns them; ``apply_action`` turns a
verdict's next step into the RunConfig of the next run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Mapping, Sequence

from engine.config import RunConfig

# -- the thresholds ---------------------------------------------------------------------------------------------------
OVERFIT_VAL_RISE = 0.10  # validation loss at the end at least 10 % above its best ...
OVERFIT_GAP_GROWTH = 0.05  # ... and the train-validation accuracy gap 5 points wider than at the best epoch
UNDERFIT_TRAIN_ACC = 0.80  # training accuracy below this at the end ...
UNDERFIT_GAP = 0.05  # ... while the validation accuracy is within 5 points of it (nothing is being memorised)
CONVERGE_EPOCHS = 3  # "still improving" looks at the last 3 epochs ...
CONVERGE_DROP = 0.03  # ... over which the validation loss fell by more than 3 % (relative), the last being the best
SPIKE_RATIO = 1.5  # a training loss 1.5 times that of the epoch before, and above the lowest so far: a spike
FEW_PICTURES = 20  # a class with fewer training pictures than this is too small to learn reliably
IMBALANCE_SHARE = 0.5  # a class with less than half the median class's training pictures ...
IMBALANCE_RECALL_GAP = 0.15  # ... whose recall is 15 points below the mean recall of the other classes
ECE_WORTH_SAYING = 0.05  # the model's own expected calibration error from which its confidence is called off
TEMPERATURE_MARGIN = 0.15  # and the fitted temperature differs from 1 by more than this (which way it was off)
MORE_EPOCHS_FACTOR = 2


@dataclass(frozen=True)
class Verdict:
    kind: str
    sentence: str  # what is wrong, in plain words
    evidence: str  # the numbers that show it
    action: dict = field(default_factory=dict)  # {"label": button text, "settings": {...}} or {"label", "step"}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Verdict":
        return cls(str(d.get("kind", "")), str(d.get("sentence", "")), str(d.get("evidence", "")),
                   dict(d.get("action") or {}))


def _fmt_lr(lr: float) -> float:
    """A learning rate rounded to two significant digits."""
    return float(f"{lr:.2g}")


def diagnose(records: Sequence[Mapping], *, per_class: Sequence[Mapping] = (), train_counts: Mapping[str, int] = {},
             calibration: Mapping | None = None, settings: Mapping[str, Any] | None = None) -> list[Verdict]:
    """The verdicts on one run (see the module). ``settings``: the run's epochs, lr, augment, label_smoothing,
    strategy and early_stopping, which the next steps change."""
    settings = dict(settings or {})
    verdicts: list[Verdict] = []
    for rule in (_overfitting, _underfitting, _not_converged, _unstable):
        v = rule(list(records), settings)
        if v is not None:
            verdicts.append(v)
    verdicts += _few_pictures(train_counts, settings)
    verdicts += _imbalance(per_class, train_counts)
    v = _confidence(calibration, settings)
    if v is not None:
        verdicts.append(v)
    return verdicts


def _overfitting(records: list[Mapping], settings: dict) -> Verdict | None:
    if len(records) < 3:
        return None
    best = min(range(len(records)), key=lambda i: records[i]["val_loss"])
    last = records[-1]
    first_after = records[best]
    rise = last["val_loss"] / max(first_after["val_loss"], 1e-12) - 1
    gap_then = first_after["train_acc"] - first_after["val_acc"]
    gap_now = last["train_acc"] - last["val_acc"]
    train_fell = last["train_loss"] < first_after["train_loss"]
    if best == len(records) - 1 or rise < OVERFIT_VAL_RISE or gap_now - gap_then < OVERFIT_GAP_GROWTH or not train_fell:
        return None
    evidence = (f"validation loss {first_after['val_loss']:.3f} at epoch {first_after['epoch']}, "
                f"{last['val_loss']:.3f} at epoch {last['epoch']} (+{100 * rise:.0f} %), while the training loss fell "
                f"from {first_after['train_loss']:.3f} to {last['train_loss']:.3f}; accuracy gap between training and "
                f"validation {100 * gap_then:.0f} -> {100 * gap_now:.0f} points")
    if settings.get("augment") != "strong":
        action = {"label": "Use strong augmentation", "settings": {"augment": "strong"}}
        step = "stronger augmentation makes the training pictures harder to memorise"
    else:
        patience = max(2, (last["epoch"] - first_after["epoch"]) // 2)
        action = {"label": f"Stop early after {patience} epochs without progress",
                  "settings": {"early_stopping": patience}}
        step = "early stopping ends the training near the best epoch"
    return Verdict("overfitting", "The model is over-fitting: it keeps learning the training pictures by heart while "
                   f"it gets worse on the validation pictures (the saved weights are those of the best epoch); {step}.",
                   evidence, action)


DEEPER = {"feature-extraction": "fine-tune-shallow", "lp-ft": "fine-tune-deep", "fine-tune-shallow": "fine-tune-deep",
          "progressive": "fine-tune-deep"}


def _underfitting(records: list[Mapping], settings: dict) -> Verdict | None:
    if len(records) < 2:
        return None
    last = records[-1]
    if last["train_acc"] >= UNDERFIT_TRAIN_ACC or last["train_acc"] - last["val_acc"] > UNDERFIT_GAP:
        return None
    evidence = (f"training accuracy {100 * last['train_acc']:.0f} % and validation accuracy "
                f"{100 * last['val_acc']:.0f} % after epoch {last['epoch']}")
    deeper = DEEPER.get(str(settings.get("strategy", "")))
    if deeper is not None:
        action = {"label": f"Retrain more layers ({deeper})", "settings": {"strategy": deeper}}
        step = "retraining more layers lets the model adapt its features to these pictures"
    else:
        epochs = int(settings.get("epochs") or len(records)) * MORE_EPOCHS_FACTOR
        action = {"label": f"Train {epochs} epochs", "settings": {"epochs": epochs}}
        step = "more epochs give it time to learn"
    return Verdict("underfitting", f"The model is under-fitting: it does not even learn the training pictures well; "
                   f"{step}.", evidence, action)


def _not_converged(records: list[Mapping], settings: dict) -> Verdict | None:
    if len(records) < CONVERGE_EPOCHS:
        return None
    tail = records[-CONVERGE_EPOCHS:]
    best = min(r["val_loss"] for r in records)
    drop = 1 - tail[-1]["val_loss"] / max(tail[0]["val_loss"], 1e-12)
    if tail[-1]["val_loss"] > best or drop <= CONVERGE_DROP:
        return None
    epochs = int(settings.get("epochs") or len(records)) * MORE_EPOCHS_FACTOR
    evidence = (f"validation loss {tail[0]['val_loss']:.3f} at epoch {tail[0]['epoch']}, {tail[-1]['val_loss']:.3f} "
                f"at epoch {tail[-1]['epoch']} (-{100 * drop:.0f} %), the last epoch the best")
    return Verdict("not_converged", "The model was still improving when the training ended: more epochs would "
                   "probably make it better.", evidence,
                   {"label": f"Train {epochs} epochs", "settings": {"epochs": epochs}})


def _unstable(records: list[Mapping], settings: dict) -> Verdict | None:
    lowest = math.inf
    for before, now in zip(records, records[1:]):
        lowest = min(lowest, before["train_loss"])
        if now["train_loss"] > SPIKE_RATIO * before["train_loss"] and now["train_loss"] > SPIKE_RATIO * lowest:
            lr = float(settings.get("lr") or now.get("lr") or 0.0)
            action = ({"label": f"Lower the learning rate to {_fmt_lr(lr / 3):g}",
                       "settings": {"lr": _fmt_lr(lr / 3)}} if lr > 0 else {})
            return Verdict("unstable", "The training is unstable: its loss jumped up instead of falling, which usually "
                           "means the learning rate is too high.",
                           f"training loss {before['train_loss']:.3f} at epoch {before['epoch']}, "
                           f"{now['train_loss']:.3f} at epoch {now['epoch']}", action)
    return None


def _few_pictures(train_counts: Mapping[str, int], settings: dict) -> list[Verdict]:
    small = sorted((n, c) for c, n in train_counts.items() if n < FEW_PICTURES)
    if not small:
        return []
    names = ", ".join(f"'{c}' ({n})" for n, c in small)
    action = ({"label": "Use strong augmentation", "settings": {"augment": "strong"}}
              if settings.get("augment") != "strong" else {"label": "Add pictures in the Data step", "step": "data"})
    several = len(small) > 1
    return [Verdict("few_pictures", f"{'These classes have' if several else 'A class has'} too few pictures to be "
                    f"learnt reliably: add at least {FEW_PICTURES - small[0][0]} more to "
                    f"{'each' if several else 'it'} if you can; meanwhile stronger augmentation helps.",
                    f"training pictures: {names}; at least {FEW_PICTURES} per class are advisable", action)]


def _imbalance(per_class: Sequence[Mapping], train_counts: Mapping[str, int]) -> list[Verdict]:
    if len(train_counts) < 2 or len(per_class) < 2:
        return []
    mid = median(train_counts.values())
    verdicts = []
    recalls = {r["name"]: r.get("recall") for r in per_class if r.get("recall") is not None}
    for name, n in sorted(train_counts.items(), key=lambda kv: kv[1]):
        recall = recalls.get(name)
        others = [v for c, v in recalls.items() if c != name]
        if recall is None or not others or n >= IMBALANCE_SHARE * mid:
            continue
        rest = sum(others) / len(others)
        if rest - recall < IMBALANCE_RECALL_GAP:
            continue
        verdicts.append(Verdict(
            "imbalance", f"The class '{name}' has far fewer pictures than the others, and the model misses it much "
            "more often: add pictures of it (or fewer of the others).",
            f"'{name}': {n} training pictures against a median of {mid:g}; recall {100 * recall:.0f} % against "
            f"{100 * rest:.0f} % for the other classes", {"label": "Add pictures in the Data step", "step": "data"}))
    return verdicts


def _confidence(calibration: Mapping | None, settings: dict) -> Verdict | None:
    if not calibration or not calibration.get("fitted"):
        return None
    t, before, after = calibration.get("temperature", 1.0), calibration.get("ece_before"), calibration.get("ece_after")
    if before is None or before < ECE_WORTH_SAYING or abs(t - 1) <= TEMPERATURE_MARGIN:
        return None
    smoothing = float(settings.get("label_smoothing", 0.0) or 0.0)
    evidence = (f"expected calibration error {before:.3f} before temperature scaling, {after:.3f} after "
                f"(temperature {t:.2f}, on {calibration.get('pictures')} validation pictures)")
    if t > 1:
        new = round(min(0.3, smoothing + 0.1), 2)
        return Verdict("overconfident", "The model was over-confident: it said it was surer than it was right. The "
                       "app corrects its confidences with temperature scaling; more label smoothing reduces it at the "
                       "source.", evidence,
                       {"label": f"Set label smoothing to {new:g}", "settings": {"label_smoothing": new}})
    new = round(max(0.0, smoothing - 0.1), 2)
    action = ({"label": f"Set label smoothing to {new:g}", "settings": {"label_smoothing": new}}
              if smoothing > 0 else {})
    return Verdict("underconfident", "The model was under-confident: it was right more often than it said. The app "
                   "corrects its confidences with temperature scaling" + ("; less label smoothing reduces it at the "
                                                                        "source." if smoothing > 0 else "."),
                   evidence, action)


# -- a run folder ------------------------------------------------------------------------------------------------------


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def run_settings(config: RunConfig) -> dict:
    """The settings of a run that the doctor's next steps change."""
    t = config.train
    return {"epochs": config.total_epochs, "lr": config.lr, "strategy": config.strategy, "augment": t.augment,
            "label_smoothing": t.label_smoothing, "early_stopping": t.early_stopping}


def advise_run(run_dir: str | os.PathLike) -> list[Verdict]:
    """Diagnose the run in ``run_dir`` and write the verdicts into its summary.json (``advice``); returns them.
    A run without metrics gets none; a folder that cannot be written keeps its summary as it was."""
    from engine import files
    from engine.config import load
    from engine.errors import UserError
    from engine.project import runs

    folder = Path(run_dir)
    summary = runs.read_summary(folder)
    records = runs.read_metrics(folder)
    try:
        settings = run_settings(load(folder / runs.CONFIG))
    except UserError:
        settings = {}
    counts = _read_json(folder / runs.DATASET, {}).get("counts", {}).get("train", {})
    verdicts = diagnose(records, per_class=summary.get("val_per_class") or [], train_counts=counts,
                        calibration=summary.get("calibration"), settings=settings) if records else []
    if summary:
        summary["advice"] = [v.to_dict() for v in verdicts]
        try:
            files.atomic_write_json(folder / runs.SUMMARY, summary)
        except OSError:
            pass  # the verdicts are still returned (printed, shown); only the file keeps none
    return verdicts


def read_advice(run_dir: str | os.PathLike) -> list[Verdict]:
    """The verdicts saved in a run's summary.json (none when the doctor has not seen it)."""
    from engine.project import runs

    return [Verdict.from_dict(d) for d in runs.read_summary(run_dir).get("advice") or [] if isinstance(d, Mapping)]


def apply_action(config: RunConfig, action: Mapping) -> RunConfig:
    """The configuration of the next run with a verdict's next step applied (``action["settings"]``); an action
    without settings (a step to visit) leaves it as it is. Changing the epochs, rate or strategy lets the phases be
    resolved again from the strategy."""
    settings = dict(action.get("settings") or {})
    top = {k: settings.pop(k) for k in ("epochs", "lr", "strategy") if k in settings}
    train = {k: v for k, v in settings.items() if k in {f.name for f in dataclasses.fields(config.train)}}
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, **train), **top)
    if top and config.strategy != "custom":
        changed = dataclasses.replace(changed, phases=())
    return changed.validate()
