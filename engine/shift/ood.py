"""An "unlike my training pictures" score for every prediction, and the threshold above which a picture is flagged.

Two scores, both from the trained model itself, higher meaning less like the training pictures:

- ``mahalanobis``: the class-conditional Mahalanobis distance (Lee et al., 2018) of a picture's penultimate features
  (the input of the classifier's last linear layer, L2-normalised) to the nearest class mean of the training pictures,
  with one covariance shared by the classes, shrunk towards a multiple of the identity by the Ledoit-Wolf formula
  (training sets are often smaller than the feature dimension, where the plain covariance cannot be inverted).
- ``energy``: the free energy of the logits, ``-logsumexp(logits)`` (Liu et al., 2020).

The score used is ``DEFAULT_METHOD``, chosen by a measured comparison (bench/bench_shift.py, docs/shift.md: on the
ants-vs-bees model, generated non-ant/bee pictures against the real validation pictures); both are computed and
stored, so a run can be switched. The threshold is the 95th percentile of the validation pictures' scores: about 95 %
of pictures like the training ones pass, and the share flagged on a new folder can be read against the expected 5 %.

What a run keeps: ``model.json`` gets ``ood`` (method, threshold, thresholds of both scores, what they were fitted on,
the validation pictures' predicted class mix) and ``ood.safetensors`` the class means, the shared precision matrix,
the validation pictures' features (the drift report's reference) and their scores. An exported bundle carries both
(engine.results.export copies them), so ``load_run_model`` on a bundle scores the same way. The statistics are fitted
once, the first time a run is used for prediction, a drift report, adaptation or an export (``ensure``), from the
pictures its ``dataset.json`` lists, and fitted again when its weights change.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from engine import files
from engine.errors import UserError
from engine.project import runs
from engine.results import predict
from engine.results.predict import ModelBundle, Prediction
from engine.shift.features import Pass, ProgressCallback, run_pass

KEY = "ood"  # in model.json
OOD_FILE = "ood.safetensors"
FORMAT = 1
METHODS = ("mahalanobis", "energy")
DEFAULT_METHOD = "mahalanobis"  # measured in docs/shift.md: AUROC far above energy's on a 2-class model
PASS_RATE = 0.95  # share of validation pictures under the threshold
# The statistics are measured the first time a run predicts (one pass over these pictures, before the answers): capped
# so that a run on 10,000 pictures does not make its first prediction wait minutes (measured: 3,000 training + all
# 2,000 validation pictures took 353 s of a 2,000-picture prediction on 2 cores). 1,500 training pictures still give
# each class of a ten-class run 150 pictures for its mean, and the shared covariance is shrunk (Ledoit-Wolf); 1,000
# validation pictures put the 95th percentile within about a point of the whole split's.
MAX_TRAIN = 1500  # training pictures used for the class means and the covariance, at most (spread over the classes)
MAX_VAL = 1000  # validation pictures for the threshold, at most (spread over the classes)
MAX_REFERENCE = 1000  # validation pictures kept as the drift report's reference, at most
MIN_VAL = 20  # fewer validation pictures: the threshold is rough, and the sentence says so
UNKNOWN = "unknown"  # the answer for flagged pictures when the user asks for it


@dataclass
class OodModel:
    """The fitted statistics of one model."""

    method: str
    threshold: float
    thresholds: dict[str, float]
    means: np.ndarray | None  # (classes, dim) float64, of L2-normalised features; None without features
    precision: np.ndarray | None  # (dim, dim) float64
    reference: np.ndarray | None  # (m, dim) float32 raw features of validation pictures
    val_scores: dict[str, np.ndarray]  # method -> scores of the validation pictures
    reference_mix: np.ndarray  # (classes,) share of validation pictures predicted as each class
    pictures: dict = field(default_factory=dict)  # {"train": n, "val": n}
    pass_rate: float = PASS_RATE

    def scores(self, p: Pass, method: str | None = None) -> np.ndarray:
        """The score of each picture of a pass (NaN for pictures that could not be read)."""
        method = method or self.method
        if method == "energy" or self.means is None or p.features is None:
            return energy(p.logits)
        return mahalanobis(p.features, self.means, self.precision)

    def flagged(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def sentence(self) -> str:
        rough = (f" (only {self.pictures.get('val', 0)} validation pictures: the threshold is rough)"
                 if self.pictures.get("val", 0) < MIN_VAL else "")
        return (f"Pictures unlike the training pictures are flagged by their {NAMES[self.method]}; the threshold "
                f"lets {100 * self.pass_rate:.0f} % of the validation pictures pass{rough}.")


NAMES = {"mahalanobis": "distance to the training pictures' features (Mahalanobis)",
         "energy": "energy score"}


# --- the scores (hand-written: scikit-learn is not among the app's dependencies) -------------------------------


def normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits) per row: higher for pictures unlike the training ones; NaN rows stay NaN."""
    z = np.asarray(logits, dtype=np.float64)
    m = np.max(z, axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.sum(np.exp(z - m), axis=1)))


def ledoit_wolf(centred: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance of centred rows (as sklearn.covariance.ledoit_wolf, written out here)."""
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    s2 = float(np.sum(s * s))
    delta = s2 - 2 * mu * np.trace(s) + d * mu * mu  # ||S - mu I||_F^2
    beta = (float(np.sum(np.sum(x * x, axis=1) ** 2)) / n - s2) / n  # sum_i ||x_i x_i^T - S||^2 / n^2
    shrink = 1.0 if delta <= 0 else min(max(beta / delta, 0.0), 1.0)
    return (1 - shrink) * s + shrink * mu * np.eye(d)


def fit_gaussian(features: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class means, shared precision) of L2-normalised features."""
    x = normalise(features)
    means = np.zeros((classes, x.shape[1]))
    centred = np.empty_like(x)
    for k in range(classes):
        mine = labels == k
        if mine.any():
            means[k] = x[mine].mean(0)
            centred[mine] = x[mine] - means[k]
    present = np.unique(labels)
    cov = ledoit_wolf(centred)
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, values.max() * 1e-6)
    precision = (vectors / values) @ vectors.T
    missing = np.setdiff1d(np.arange(classes), present)
    means[missing] = np.nan  # a class without training pictures has no mean: never the nearest
    return means, precision


def mahalanobis(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The squared Mahalanobis distance to the nearest class mean, per row (NaN rows stay NaN)."""
    x = normalise(features)
    bad = np.isnan(x).any(1)
    x = np.where(bad[:, None], 0.0, x)
    kept = means[~np.isnan(means).any(1)]
    if not len(kept):
        return np.full(len(x), np.nan)
    # (x - m)' P (x - m) = x'Px - 2 x'Pm + m'Pm, with one shared P: three matrix products (BLAS) instead of a
    # three-operand einsum per class, which took half of a 900-picture flagged prediction on 2 cores.
    xp = x @ precision
    mp = kept @ precision
    squared = (xp * x).sum(1)[:, None] - 2.0 * (xp @ kept.T) + (mp * kept).sum(1)[None, :]
    best = squared.min(1)
    best[bad] = np.nan
    return best


def threshold_for(scores: np.ndarray, pass_rate: float = PASS_RATE) -> float:
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        raise UserError("No validation picture could be read, so no threshold can be set for pictures unlike the "
                        "training pictures.")
    return float(np.quantile(s, pass_rate))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Probability that a picture of ``outside`` scores higher than one of ``inside`` (ties count half)."""
    a = np.asarray(inside, dtype=np.float64)
    b = np.asarray(outside, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan")
    both = np.concatenate([a, b])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks of ties
        tied = both == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


# --- fitting and storing ---------------------------------------------------------------------------------------


def _weights_stamp(folder: Path, kind: str) -> str:
    from engine.results.predict import BUNDLE_WEIGHTS

    st = (folder / (runs.BEST if kind == "run" else BUNDLE_WEIGHTS)).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def run_pictures(run_dir: str | Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(training pictures, validation pictures) of a run, as (path, label) from its dataset.json."""
    path = Path(run_dir) / runs.DATASET
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        samples = [(str(s["path"]), int(s["label"]), str(s["split"])) for s in info["samples"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"The run's list of pictures ({path}) cannot be read, so the pictures it was trained on are "
                        "unknown: train the run again.") from None
    train = [(p, y) for p, y, s in samples if s == "train"]
    val = [(p, y) for p, y, s in samples if s == "val"]
    return train, val


def _spread(items: list[tuple[str, int]], most: int, seed: int = 0) -> list[tuple[str, int]]:
    """At most ``most`` items, drawn evenly over the classes (every one when there are few)."""
    if len(items) <= most:
        return items
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    share = max(1, most // len(by_class))
    chosen = []
    for members in by_class.values():
        idx = rng.permutation(len(members))[:share]
        chosen += [members[i] for i in sorted(idx)]
    return chosen


def fit(bundle: ModelBundle, *, on_progress: ProgressCallback | None = None,
        stop: threading.Event | None = None, write: bool = True) -> OodModel:
    """Fit the OOD statistics of a run's model on its training pictures, set the threshold on its validation
    pictures, and (``write``) store them in the run folder."""
    if bundle.kind != "run":
        raise UserError(f"{bundle.source} is an exported model without the statistics for pictures unlike the "
                        "training ones: export it again from its run folder.")
    folder = Path(bundle.source)
    train, val = run_pictures(folder)
    train, val = _spread(train, MAX_TRAIN), _spread(val, MAX_VAL)
    from engine.data.formats import real_path  # a slide's tile or a DICOM's frame: its file

    missing = [p for p, _ in train + val if not Path(real_path(p)).is_file()]
    if len(missing) > (len(train) + len(val)) // 2:
        raise UserError(f"Most of the pictures the run was trained on are no longer there (for example "
                        f"{missing[0]}), so what they look like cannot be measured: put them back.")
    if not val:
        raise UserError("The run has no validation pictures, so no threshold can be set for pictures unlike the "
                        "training pictures.")
    paths = [p for p, _ in train + val]
    p = run_pass(bundle, paths, on_progress=on_progress, stop=stop,
                 stop_message="Measuring the training pictures was stopped.")
    labels = np.array([y for _, y in train + val])
    tr = np.zeros(len(paths), dtype=bool)
    tr[:len(train)] = True
    good = p.good
    k = len(bundle.classes)
    means = precision = reference = None
    val_scores: dict[str, np.ndarray] = {}
    vmask = ~tr & good
    val_scores["energy"] = energy(p.logits[vmask])
    if p.features is not None and (tr & good).sum() >= 2:
        means, precision = fit_gaussian(p.features[tr & good], labels[tr & good], k)
        val_scores["mahalanobis"] = mahalanobis(p.features[vmask], means, precision)
        ref = np.flatnonzero(vmask)
        if len(ref) > MAX_REFERENCE:
            ref = np.sort(np.random.default_rng(0).permutation(ref)[:MAX_REFERENCE])
        reference = p.features[ref].astype(np.float32)
    thresholds = {m: threshold_for(s) for m, s in val_scores.items()}
    method = DEFAULT_METHOD if DEFAULT_METHOD in thresholds else "energy"
    predicted = p.logits[vmask].argmax(1)
    mix = np.bincount(predicted, minlength=k) / max(1, len(predicted))
    model = OodModel(method, thresholds[method], thresholds, means, precision, reference, val_scores, mix,
                     {"train": int((tr & good).sum()), "val": int(vmask.sum())})
    if write:
        save(model, folder, _weights_stamp(folder, "run"))
    return model


def save(model: OodModel, folder: Path, stamp: str) -> None:
    """Write ``ood.safetensors`` and the ``ood`` entry of ``model.json`` (each atomically; the file first)."""
    from safetensors.numpy import save_file

    arrays = {f"val_{m}": s.astype(np.float32) for m, s in model.val_scores.items()}
    if model.means is not None:
        arrays.update(means=model.means.astype(np.float32), precision=model.precision.astype(np.float32),
                      reference=model.reference)
    try:
        files.atomic_write(folder / OOD_FILE, lambda tmp: save_file(arrays, str(tmp)))
        path = folder / runs.MODEL
        info = json.loads(path.read_text(encoding="utf-8"))
        info[KEY] = to_json(model, stamp)
        files.atomic_write_json(path, info)
    except OSError as exc:
        raise UserError(runs.write_problem("the statistics of the training pictures", folder, exc) + ".") from None


def to_json(model: OodModel, stamp: str) -> dict:
    return {"format": FORMAT, "method": model.method, "threshold": model.threshold,
            "thresholds": model.thresholds, "pass_rate": model.pass_rate,
            "val_pass": {m: float(np.mean(s <= model.thresholds[m])) for m, s in model.val_scores.items()},
            "pictures": model.pictures, "reference_mix": [float(x) for x in model.reference_mix],
            "file": OOD_FILE, "weights": stamp,
            "score": "higher is less like the training pictures; flagged when above the threshold"}


def load(folder: str | Path, info: dict, check_stamp: str | None = None) -> OodModel | None:
    """The stored statistics, or None when there are none (or they belong to other weights)."""
    entry = info.get(KEY)
    path = Path(folder) / OOD_FILE
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or not path.is_file():
        return None
    if check_stamp is not None and entry.get("weights") != check_stamp:
        return None
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
        method = str(entry["method"])
        thresholds = {str(k): float(v) for k, v in entry["thresholds"].items()}
        model = OodModel(method, float(entry["threshold"]), thresholds,
                         arrays["means"].astype(np.float64) if "means" in arrays else None,
                         arrays["precision"].astype(np.float64) if "precision" in arrays else None,
                         arrays.get("reference"),
                         {m: arrays[f"val_{m}"].astype(np.float64) for m in thresholds if f"val_{m}" in arrays},
                         np.asarray(entry.get("reference_mix", []), dtype=np.float64),
                         dict(entry.get("pictures", {})), float(entry.get("pass_rate", PASS_RATE)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model


def ensure(bundle: ModelBundle, *, on_progress: ProgressCallback | None = None,
           stop: threading.Event | None = None) -> OodModel | None:
    """The model's OOD statistics: stored ones when they belong to its weights, else fitted now (a run) and
    stored; None for an exported bundle that carries none."""
    folder = Path(bundle.source)
    try:
        info = json.loads((folder / runs.MODEL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = bundle.info
    if bundle.kind != "run":
        return load(folder, info)
    stored = load(folder, info, _weights_stamp(folder, "run"))
    if stored is not None:
        return stored
    return fit(bundle, on_progress=on_progress, stop=stop)


# --- prediction with the flag ----------------------------------------------------------------------------------


def predict_paths(bundle: ModelBundle, paths_or_folders: Iterable, ood: OodModel | None, *, top_k: int = 3,
                  unknown: bool = False, on_progress: ProgressCallback | None = None,
                  stop: threading.Event | None = None) -> list[Prediction]:
    """As engine.results.predict.predict_paths, each readable picture also with its ``ood_score`` and
    ``in_domain`` (under the threshold); with ``unknown``, a flagged picture's prediction is "unknown" (its
    classes stay listed in ``top``)."""
    def scorer(logits, features):
        return ood.scores(Pass(logits, features, [])), ood.threshold

    rows = predict.predict_paths(bundle, paths_or_folders, top_k=top_k, on_progress=on_progress, stop=stop,
                                 scorer=scorer if ood is not None else None)
    if unknown:
        rows = [dataclasses.replace(r, class_name=UNKNOWN, class_index=None, confidence=None)
                if r.error is None and getattr(r, "in_domain", None) is False else r for r in rows]
    return rows


def flag_words(rows: Sequence[Prediction]) -> str:
    """'3 of 40 pictures unlike the training pictures (about 2 expected)', or '' without scores."""
    scored = [r for r in rows if getattr(r, "in_domain", None) is not None]
    if not scored:
        return ""
    flagged = sum(not r.in_domain for r in scored)
    expected = (1 - PASS_RATE) * len(scored)
    return (f"{flagged} of {len(scored)} unlike the training pictures (about {expected:.0f} expected by chance)")
