"""Which pool pictures to label next: uncertainty balanced with diversity.

A run's model looks at every pool picture once. Each picture gets

- an *uncertainty*: how close the model is to choosing another class -- the margin ``1 - (p1 - p2)`` between its two
  most probable classes (default), or the entropy of its probabilities divided by ``log(classes)``; both lie in
  [0, 1];
- a place in the model's feature space: the input of its classification head (the pooled features a new head learns
  from).

The suggestions are then chosen by :func:`select`: during a cold start (fewer pictures labelled than asked for)
the most typical picture of each of as many k-means groups of the pool; then, in each of as many k-means groups, the
picture with the largest ``uncertainty x novelty`` (novelty: the feature distance to the nearest labelled picture).
Twenty suggestions are therefore not twenty near-copies of one puzzling picture, and pictures like those already
labelled wait. Ties are broken by a random order drawn from ``seed``: the same run, pool, answers and seed give the
same suggestions.

The features are cached on disk per *backbone* (every weight of the model except its head, hashed) and picture (path,
size, modification time), so after a retrain that kept the backbone (feature extraction) the next suggestions only
apply the new head to the stored features: seconds, not a pass over the pool.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import Stopped, UserError
from engine.files import atomic_write

__all__ = ["PoolOutputs", "Suggestion", "UNCERTAINTIES", "pool_outputs", "select", "suggest", "uncertainty"]

UNCERTAINTIES = ("margin", "entropy")
FORMAT = 1
BATCH = 32
MAX_ANCHORS = 2000  # labelled training pictures whose features count as "already labelled" (a seeded sample beyond)


@dataclass(frozen=True)
class Suggestion:
    path: str
    score: float  # uncertainty x novelty when it was chosen, in [0, 1]; higher: labelling it helps more
    predicted: str  # the model's guess
    confidence: float  # the (calibrated) probability of the guess

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "predicted": self.predicted, "confidence": self.confidence}


@dataclass
class PoolOutputs:
    """What a run's model says about pictures: probabilities (calibrated), head inputs, and errors per picture."""

    paths: list[str]
    classes: tuple[str, ...]
    probs: np.ndarray  # (n, classes) float32; NaN rows for pictures that could not be read
    features: np.ndarray  # (n, d) float32; zeros for pictures that could not be read
    errors: list[str | None]
    computed: int  # pictures the model looked at now (the others' features came from the cache)

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


# --- scores and selection (plain numpy: the benchmark simulates rounds with these) ---------------------------


def uncertainty(probs: np.ndarray, kind: str = "margin") -> np.ndarray:
    """Per row of probabilities, in [0, 1]: 1 - (p1 - p2) ("margin") or entropy / log(classes) ("entropy")."""
    p = np.asarray(probs, dtype=np.float64)
    if kind == "margin":
        top = np.sort(p, axis=1)[:, ::-1]
        return 1.0 - (top[:, 0] - top[:, 1])
    if kind == "entropy":
        h = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
        return h / np.log(p.shape[1])
    raise UserError(f"Unknown uncertainty '{kind}': choose {' or '.join(UNCERTAINTIES)}.")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select(probs: np.ndarray, features: np.ndarray, n: int, *, anchors: np.ndarray | None = None, seed: int = 0,
           kind: str = "margin") -> list[tuple[int, float]]:
    """Choose ``n`` rows (distinct) of the pool; returns (row, score) in the order to label them. ``anchors`` are
    the features of pictures already labelled.

    One rule, in two regimes by the labelling budget (as the literature on tiny budgets advises: typical pictures
    first, uncertain ones once the model has something to be uncertain about; Hacohen et al. 2022):

    - cold start, fewer pictures labelled than are asked for now: the most *typical* picture of each of ``n`` k-means
      groups of the pool (:func:`_typical`, TypiClust-like), larger groups first;
    - then uncertainty within diversity (as Cluster-Margin, Citovsky et al. 2021, and diverse mini-batch active
      learning, Zhdanov 2019): the pool is split into ``n`` k-means groups and each group gives the picture with the
      largest ``uncertainty x novelty`` -- novelty being the feature distance to the nearest labelled picture,
      relative to the largest in the pool -- so that the suggestions cover every kind of picture of the pool, and
      within a kind the model's doubt decides. Ordered by that score, highest first.

    Measured against random choice in docs/active.md (bench/bench_active.py calls this function)."""
    u = uncertainty(probs, kind)
    x = _unit(features)
    m = len(x)
    n = min(int(n), m)
    if n <= 0:
        return []
    if anchors is None or len(anchors) < n:
        return _typical(u, x, n, seed)
    # Ties (equal scores: identical pictures, a model sure of everything) are broken by a seeded random order.
    jitter = np.random.default_rng(seed).random(m) * 1e-9
    a = _unit(anchors)
    nearest = np.full(m, np.inf, dtype=np.float32)
    for start in range(0, len(a), 1024):  # blocks: a few thousand anchors fit in memory at once
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * x @ a[start:start + 1024].T))
        nearest = np.minimum(nearest, d.min(axis=1))
    far = float(nearest.max())
    novelty = nearest / far if far > 0 else np.ones(m, dtype=np.float32)
    score = np.clip(u * novelty, 0.0, 1.0)
    group, _ = _kmeans(x, n, np.random.default_rng(seed))
    chosen: list[tuple[int, float]] = []
    taken = np.zeros(m, dtype=bool)
    for k in range(n):
        members = np.flatnonzero(group == k)
        if len(members):
            j = int(members[np.argmax(score[members] + jitter[members])])
            chosen.append((j, float(score[j])))
            taken[j] = True
    if len(chosen) < n:  # empty groups (identical pictures): the highest scores of the rest
        rest = np.flatnonzero(~taken)
        chosen += [(int(j), float(score[j])) for j in rest[np.argsort(-(score[rest] + jitter[rest]),
                                                                      kind="stable")][:n - len(chosen)]]
    chosen.sort(key=lambda c: -(c[1] + jitter[c[0]]))
    return chosen


KMEANS_SAMPLE = 5000  # pictures the k-means is fitted on at most (a seeded sample; all are assigned)
KMEANS_ITERATIONS = 25


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``x`` (k-means++ start, seeded; fitted on at most KMEANS_SAMPLE rows, every row
    assigned): each row's group and the groups' centres. Hand-written (a few lines of numpy) rather than adding
    scikit-learn for one k-means."""
    m = len(x)
    fit = x if m <= KMEANS_SAMPLE else x[np.sort(rng.choice(m, KMEANS_SAMPLE, replace=False))]
    centres = [fit[rng.integers(len(fit))]]
    nearest = ((fit - centres[0]) ** 2).sum(1)
    for _ in range(k - 1):
        total = nearest.sum()
        centres.append(fit[rng.choice(len(fit), p=nearest / total)] if total > 0 else fit[rng.integers(len(fit))])
        nearest = np.minimum(nearest, ((fit - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(KMEANS_ITERATIONS):
        group = np.argmax(fit @ c.T - 0.5 * (c * c).sum(1), axis=1)  # the nearest centre
        moved = np.stack([fit[group == j].mean(0) if np.any(group == j) else c[j] for j in range(k)])
        if np.allclose(moved, c, atol=1e-6):
            break
        c = moved
    return np.argmax(x @ c.T - 0.5 * (c * c).sum(1), axis=1), c


def _typical(u: np.ndarray, x: np.ndarray, n: int, seed: int) -> list[tuple[int, float]]:
    """Cold start: the model learnt from fewer pictures than it is about to be given, so its uncertainty is not worth
    much yet. The pool is split into ``n`` groups (k-means) and the most typical picture of each (the nearest to its
    group's centre) is suggested, larger groups first (as TypiClust, Hacohen et al. 2022)."""
    rng = np.random.default_rng(seed)
    group, c = _kmeans(x, n, rng)
    sizes = np.bincount(group, minlength=n)
    chosen: list[tuple[int, float]] = []
    for k in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(group == k)
        if len(members):
            j = int(members[np.argmin(((x[members] - c[k]) ** 2).sum(1))])
            chosen.append((j, float(np.clip(u[j], 0.0, 1.0))))
    if len(chosen) < n:  # empty groups (identical pictures): the most uncertain of the rest
        taken = {j for j, _ in chosen}
        rest = [int(j) for j in np.argsort(-u, kind="stable") if int(j) not in taken]
        chosen += [(j, float(np.clip(u[j], 0.0, 1.0))) for j in rest[:n - len(chosen)]]
    return chosen


# --- the model's view of the pool ----------------------------------------------------------------------------


def _cache_dir() -> Path:
    from engine.advise.features import feature_cache_dir

    return feature_cache_dir() / "pool"


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _backbone_key(bundle) -> str:
    """The model's weights except its head, and its preprocessing: what the head's inputs depend on."""
    from engine.train.store import tensors_hash

    head = bundle.head + "."
    state = {k: v for k, v in bundle.model.state_dict().items() if not k.startswith(head)}
    prep = {k: bundle.data_config.get(k) for k in ("input_size", "interpolation", "mean", "std", "crop_pct",
                                                  "crop_mode")}
    text = json.dumps([FORMAT, bundle.architecture, bundle.head, prep, tensors_hash(state)], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(json.loads(str(data["stamps"])), data["vectors"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return {}  # none yet, or damaged: computed again


def _write_cache(path: Path, table: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, stamps=np.array(json.dumps(list(table))),
                 vectors=np.stack(list(table.values())).astype(np.float32))
        tmp.write_bytes(buffer.getvalue())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError:
        pass  # a cache that cannot be written only costs time next time


def pool_outputs(bundle, paths: Sequence[str], *, use_cache: bool = True,
                 on_progress: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None) -> PoolOutputs:
    """The model's probabilities and head inputs for ``paths`` (``bundle``: engine.results.predict.load_run_model).
    Pictures whose features are cached are not decoded again; ``on_progress(done, total)`` after each batch; setting
    ``stop`` raises Stopped."""
    model = bundle.model
    head = model.get_submodule(bundle.head)
    device = torch.device(bundle.device)
    paths = [str(p) for p in paths]
    n = len(paths)
    cache_file = _cache_dir() / f"{_backbone_key(bundle)}.npz"
    cached = _read_cache(cache_file) if use_cache else {}
    stamps = [_stamp(p) for p in paths]
    todo = [i for i, s in enumerate(stamps) if not s or s not in cached]
    features: list[np.ndarray | None] = [cached.get(s) if s else None for s in stamps]
    logits_now: dict[int, np.ndarray] = {}  # the model's own outputs, for the pictures computed now
    errors: list[str | None] = [None] * n
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().flatten(1)))
    consistent = True  # the head applied to its inputs gives the model's output (nothing follows the head)
    done = n - len(todo)
    if on_progress is not None:
        on_progress(done, n)

    def load(i: int):
        try:
            return bundle.preprocess(paths[i]), None
        except Exception as exc:  # ImageError and any decoder's own: the picture is reported, never a crash
            return None, str(exc) or "The picture cannot be read."

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            chunks = [todo[s:s + BATCH] for s in range(0, len(todo), BATCH)]
            for chunk in chunks:
                if stop is not None and stop.is_set():
                    raise Stopped("Looking at the pool pictures was stopped.")
                loaded = list(pool.map(load, chunk))
                good = [i for i, (t, _) in zip(chunk, loaded) if t is not None]
                for i, (_, error) in zip(chunk, loaded):
                    errors[i] = error
                if good:
                    batch = torch.stack([t for t, _ in loaded if t is not None]).to(device)
                    captured.clear()
                    with torch.inference_mode():
                        out = model(batch).float()
                        feats = captured[-1].float()
                        if consistent and not torch.allclose(head(captured[-1]).float(), out, atol=1e-3, rtol=1e-3):
                            consistent = False
                    for i, f, o in zip(good, feats.cpu().numpy(), out.cpu().numpy()):
                        features[i] = f
                        logits_now[i] = o
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, n)
    finally:
        hook.remove()
    dim = next((f.shape[0] for f in features if f is not None), 0)
    if dim == 0:
        return PoolOutputs(paths, bundle.classes, np.full((n, len(bundle.classes)), np.nan, np.float32),
                           np.zeros((n, 0), np.float32), errors, len(todo))
    matrix = np.zeros((n, dim), dtype=np.float32)
    ok = [i for i, f in enumerate(features) if f is not None]
    for i in ok:
        matrix[i] = features[i]
    probs = np.full((n, len(bundle.classes)), np.nan, dtype=np.float32)
    if not consistent and len(logits_now) < len(ok):
        # Something follows the head, so the cached features alone cannot give probabilities: look again at all.
        return pool_outputs(bundle, paths, use_cache=False, on_progress=on_progress, stop=stop)
    with torch.inference_mode():
        if consistent:
            x = torch.from_numpy(matrix[ok]).to(device)
            logits = head(x.to(next(head.parameters()).dtype)).float()
        else:
            logits = torch.from_numpy(np.stack([logits_now[i] for i in ok]))
        probs[ok] = (logits / bundle.temperature).softmax(1).cpu().numpy()
    if use_cache and consistent and todo:
        table = dict(cached)
        table.update({stamps[i]: matrix[i] for i in ok if stamps[i]})
        _write_cache(cache_file, table)
    return PoolOutputs(paths, bundle.classes, probs, matrix, errors, len(todo))


@dataclass
class SuggestResult:
    suggestions: list[Suggestion]
    outputs: PoolOutputs  # the model's view of every picture still to label (for the map and the grid)
    anchors: int  # labelled pictures whose features counted as already labelled


def suggest(run: str | os.PathLike, pool_paths: Sequence[str], n: int = 20, *, labels=None, seed: int = 0,
            kind: str = "margin", device: str = "auto", bundle=None,
            on_progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> SuggestResult:
    """The ``n`` pool pictures to label next with ``run``'s model (see the module). Pictures already answered in
    ``labels`` (engine.active.labels.Labels; a class or "none of these") are not suggested; the run's training
    pictures and the labelled pool pictures count as already labelled."""
    from engine.results.predict import load_run_model

    if n < 1:
        raise UserError("The number of suggestions must be at least 1.")
    if kind not in UNCERTAINTIES:
        raise UserError(f"Unknown uncertainty '{kind}': choose {' or '.join(UNCERTAINTIES)}.")
    bundle = bundle or load_run_model(run, device)
    answered = labels if labels is not None else ()
    todo = [p for p in pool_paths if p not in answered]
    if not todo:
        raise UserError("Every picture of the pool has an answer already: add pictures to the pool folder, or "
                        "retrain with the labels given.")
    anchor_paths = _training_pictures(run, seed) + (list(labels.labelled()) if labels is not None else [])
    everything = todo + anchor_paths
    outputs = pool_outputs(bundle, everything, on_progress=on_progress, stop=stop)
    k = len(todo)
    ok = outputs.ok
    pool_ok = [i for i in range(k) if ok[i]]
    anchor_rows = [i for i in range(k, len(everything)) if ok[i]]
    if not pool_ok:
        first = next((e for e in outputs.errors[:k] if e), "cannot be read")
        raise UserError(f"None of the {k} pool pictures could be read (for example {todo[0]}: {first}).")
    chosen = select(outputs.probs[pool_ok], outputs.features[pool_ok], n,
                    anchors=outputs.features[anchor_rows] if anchor_rows else None, seed=seed, kind=kind)
    result = []
    for row, score in chosen:
        i = pool_ok[row]
        p = outputs.probs[i]
        best = int(np.argmax(p))
        result.append(Suggestion(todo[i], round(score, 6), bundle.classes[best], round(float(p[best]), 6)))
    pool_view = PoolOutputs(todo, outputs.classes, outputs.probs[:k], outputs.features[:k], outputs.errors[:k],
                            outputs.computed)
    return SuggestResult(result, pool_view, len(anchor_rows))


def _training_pictures(run: str | os.PathLike, seed: int) -> list[str]:
    """The run's training pictures (from its dataset.json), at most MAX_ANCHORS of them (a seeded sample)."""
    try:
        info = json.loads((Path(run) / "dataset.json").read_text(encoding="utf-8"))
        paths = [s["path"] for s in info["samples"] if s.get("split") == "train"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # an exported bundle, or an older run: the pool's own diversity still counts
    if len(paths) > MAX_ANCHORS:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), MAX_ANCHORS, replace=False))]
    return paths
