"""The data doctor: the mistakes in a dataset that still open as pictures.

- **Likely wrong labels** (engine.advise.labels): confident learning on out-of-fold probabilities of new heads fitted
  on the frozen model's features; each with its suggested class and a score.
- **Exact and near duplicates**, within and across splits: exact by content hash; near by perceptual hash (resized,
  re-encoded and mirrored copies) and by cosine similarity of the model's features (cropped copies too). A copy in
  training of a validation picture is *leakage*; copies with different labels are *conflicts*.
- **Suspicious pictures** that decode fine: tiny, blank, extreme aspect ratio, greyscale among colour pictures, and
  outliers far from every other picture.

``diagnose(index)`` returns a :class:`DoctorReport`; its ``to_dict()`` is the JSON of ``main.py doctor --json``,
whose keys scripts rely on: ``label_issues`` [{path, given, suggested, score}], ``duplicates`` [{paths, splits, kind,
labels}], ``suspicious`` [{path, reason}] (and more keys besides). Nothing here changes a file: the user's decisions
become overrides (engine.config.DataConfig.exclude / relabel), or are applied to the folders by engine.advise.folders.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.advise import labels as cl
from engine.advise.hashing import Look, look_all
from engine.advise.neighbours import UnionFind, nearest, signs, unit_rows
from engine.data.scan import DatasetIndex
from engine.errors import UserError
from engine.words import plural as _plural

__all__ = ["DoctorReport", "Duplicate", "LabelIssue", "Suspicious", "diagnose"]

# Thresholds, each measured on the ants/bees pictures with altered copies (bench/bench_doctor.py, docs/doctor.md).
# A near copy (resized, re-encoded, cropped a little, mirrored) changes a few of the 64 perceptual-hash bits and keeps the
# model's features close; two different pictures rarely do both. Measured on ants vs bees with 20 altered copies
# (bench/bench_doctor.py): the copies differ by 4-12 bits at a feature similarity of 0.73-0.87; of the other pairs,
# those within 14 bits have a similarity of 0.63 at most, and those above 0.85 differ by more than 16 bits.
PHASH_NEAR = 14  # bits that may differ when the features agree too (FEATURE_WITH_HASH)
FEATURE_WITH_HASH = 0.70  # the features' cosine similarity a hash match needs
PHASH_ALONE = 6  # without usable features (no pretrained model), a hash match must be this close
FEATURE_ALONE = 0.95  # features this similar make a near copy whatever the hashes say (heavier crops)
NEIGHBOURS = 10  # neighbours listed per picture (pairs above a threshold beyond these are found through them)
TINY = 32  # pixels: a picture narrower or lower than this is suspicious
BLANK_SPREAD = 4.0  # grey levels (0-255): a picture whose brightness varies less is blank or nearly constant
ASPECT = 5.0  # longer side / shorter side at or above this: extreme
GREY_COLOUR = 2.0  # mean channel difference below this: a greyscale picture
COLOUR_SHARE = 0.8  # greyscale pictures are suspicious when at least this share of the pictures are in colour
OUTLIER_Z = 4.0  # robust z-score of the similarity to the nearest pictures: an outlier beyond this
OUTLIER_K = 5

Progress = Callable[[str, int, int], None]  # (what is being done, done, total)


@dataclass(frozen=True)
class LabelIssue:
    path: str
    given: str
    suggested: str
    score: float  # 1 - the out-of-fold probability of the given class: the higher, the likelier the label is wrong
    split: str
    confidence: float  # the out-of-fold probability of the suggested class


@dataclass(frozen=True)
class Duplicate:
    paths: list[str]
    splits: list[str]
    kind: str  # "exact": the same bytes; "near": the same picture altered (resized, re-encoded, cropped, mirrored)
    labels: list[str]
    score: float  # 1 for exact copies; else the closest similarity that joined them (hash or features)
    leakage: bool  # the copies lie in different splits: the held-out figures are overstated
    conflict: bool  # the copies carry different labels


@dataclass(frozen=True)
class Suspicious:
    path: str
    reason: str  # a sentence
    kind: str  # tiny, blank, aspect, greyscale, outlier
    score: float  # how far beyond the threshold (for sorting: higher is more suspicious)
    split: str
    label: str


@dataclass
class DoctorReport:
    root: str
    classes: list[str]
    label_issues: list[LabelIssue] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    suspicious: list[Suspicious] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # sentences: what could not be checked and why
    model: str = ""
    pictures: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """The findings in a few sentences, the most consequential first."""
        out = []
        leaked = self.leaked_pictures()
        if leaked:
            n = len(leaked)
            out.append(f"{n} validation or test picture{'s have' if n > 1 else ' has'} a copy in training: the "
                       "accuracy measured on them is overstated. Exclude the copies from training.")
        conflicts = [d for d in self.duplicates if d.conflict]
        if conflicts:
            out.append(f"{_plural(len(conflicts), 'picture')} appear{'' if len(conflicts) > 1 else 's'} more than "
                       "once with different labels: keep the right one.")
        if self.label_issues:
            out.append(f"{_plural(len(self.label_issues), 'picture')} look{'' if len(self.label_issues) > 1 else 's'}"
                       " mislabelled: check each, and relabel or exclude it.")
        plain = len([d for d in self.duplicates if not d.conflict and not d.leakage])
        if plain:
            out.append(f"{_plural(plain, 'group')} of copies within one split: harmless but wasteful; exclude "
                       "the extra copies.")
        if self.suspicious:
            out.append(f"{_plural(len(self.suspicious), 'picture')} look{'' if len(self.suspicious) > 1 else 's'} "
                       "suspicious (tiny, blank, odd shape, greyscale or unlike any other).")
        return out or ["No likely mistakes found."]

    def leaked_pictures(self) -> list[str]:
        """The held-out (validation and test) pictures with a copy in training."""
        out = []
        for d in self.duplicates:
            if "train" in d.splits:
                out += [p for p, s in zip(d.paths, d.splits) if s != "train"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "classes": list(self.classes),
            "pictures": self.pictures,
            "model": self.model,
            "label_issues": [asdict(x) for x in self.label_issues],
            "duplicates": [asdict(x) for x in self.duplicates],
            "suspicious": [asdict(x) for x in self.suspicious],
            "summary": self.summary(),
            "notes": list(self.notes),
            "seconds": dict(self.seconds),
        }


def diagnose(index: DatasetIndex, *, model: str = "timm:resnet18", weights: str = "pretrained",
             device: str = "auto", features: np.ndarray | None = None, seed: int = 0,
             use_cache: bool = True, on_progress: Progress | None = None,
             stop: threading.Event | None = None) -> DoctorReport:
    """Look for likely wrong labels, duplicates and suspicious pictures among ``index``'s pictures.

    ``features`` (one row per sample) skips computing them with ``model``/``weights``. When the model cannot be built
    (no weights offline, say), the checks that need it are left out and ``notes`` says so in a sentence; the hash and
    picture checks still run. Setting ``stop`` raises UserError("... cancelled")."""
    report = DoctorReport(index.root, list(index.classes), model=model, pictures=len(index.samples))
    return run_checks(index, report, lambda vectors, ok: _label_issues(index, vectors, ok, seed, stop), model=model,
                      weights=weights, device=device, features=features, use_cache=use_cache,
                      on_progress=on_progress, stop=stop)


def run_checks(index: DatasetIndex, report: DoctorReport,
               label_issues: Callable[[np.ndarray, np.ndarray], list[LabelIssue]], *, model: str, weights: str,
               device: str, features: np.ndarray | None, use_cache: bool, on_progress: Progress | None,
               stop: threading.Event | None) -> DoctorReport:
    """``diagnose``'s checks into ``report``, the likely wrong labels found by ``label_issues(vectors, ok)`` (the
    multi-task doctor, engine.advise.task_doctor, looks task by task)."""
    samples = index.samples
    paths = [s.path for s in samples]
    clock = time.perf_counter()

    looks = look_all(paths, on_progress=_stage(on_progress, "Looking at the pictures"), stop=stop)
    _check_stop(stop)
    report.seconds["hashes"] = round(time.perf_counter() - clock, 3)

    vectors, ok = None, None
    if features is not None:
        vectors, ok = np.asarray(features, dtype=np.float32), np.ones(len(samples), dtype=bool)
    else:
        from engine.advise.features import extract_features

        clock = time.perf_counter()
        try:
            got = extract_features(paths, model, weights, device=device, use_cache=use_cache, stop=stop,
                                   on_progress=_stage(on_progress, "Computing the model's view of each picture"))
            vectors, ok = got.vectors, got.ok
        except UserError as exc:
            if stop is not None and stop.is_set():
                raise
            report.notes.append(f"Likely wrong labels, cropped copies and outliers need the model's view of the "
                                f"pictures, which could not be computed: {exc} The other checks ran.")
        report.seconds["features"] = round(time.perf_counter() - clock, 3)
        if weights == "none" and vectors is not None:
            report.notes.append("The model has random weights (no pretraining), so its judgement of labels is rough, "
                                "copies are found by their hashes only and outliers are not looked for: choose "
                                "pretrained weights for a reliable review.")
    _check_stop(stop)

    clock = time.perf_counter()
    unit = unit_rows(vectors) if vectors is not None else None
    neighbours = nearest(unit, k=NEIGHBOURS, stop=stop) if unit is not None and len(unit) > 1 else None
    report.seconds["neighbours"] = round(time.perf_counter() - clock, 3)
    _check_stop(stop)

    clock = time.perf_counter()
    if vectors is not None:
        report.label_issues = label_issues(vectors, ok)
    report.seconds["labels"] = round(time.perf_counter() - clock, 3)
    _check_stop(stop)

    clock = time.perf_counter()
    trusted = weights != "none" and unit is not None  # random weights: features say little about sameness or oddness
    report.duplicates = _duplicates(index, looks, unit if trusted else None, neighbours if trusted else None, ok, stop)
    report.suspicious = _suspicious(index, looks, neighbours if trusted else None, ok)
    report.seconds["duplicates and checks"] = round(time.perf_counter() - clock, 3)
    return report


# --- likely wrong labels ---------------------------------------------------------------------------------------


def _label_issues(index: DatasetIndex, vectors: np.ndarray, ok: np.ndarray, seed: int,
                  stop: threading.Event | None) -> list[LabelIssue]:
    rows = np.flatnonzero(ok)
    y = np.array([index.samples[i].label for i in rows], dtype=np.int64)
    probs = cl.out_of_fold_probabilities(vectors[rows], y, len(index.classes), seed=seed, stop=stop)
    judgement = cl.confident_learning(probs, y)
    issues = []
    for r in np.flatnonzero(judgement.issue):
        s = index.samples[rows[r]]
        j = int(judgement.suggested[r])
        issues.append(LabelIssue(s.path, index.classes[s.label], index.classes[j], round(float(judgement.score[r]), 4),
                                 s.split, round(float(probs[r, j]), 4)))
    issues.sort(key=lambda x: (-x.score, x.path))
    return issues


def label_scores(index: DatasetIndex, vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every picture's score (1 - out-of-fold probability of its label), for ranking all of them (the benchmark)."""
    y = np.array([s.label for s in index.samples], dtype=np.int64)
    probs = cl.out_of_fold_probabilities(np.asarray(vectors, dtype=np.float32), y, len(index.classes), seed=seed)
    return cl.confident_learning(probs, y).score


# --- duplicates -----------------------------------------------------------------------------------------------


def _duplicates(index: DatasetIndex, looks: list[Look], unit: np.ndarray | None, neighbours, ok: np.ndarray | None,
                stop: threading.Event | None) -> list[Duplicate]:
    """Groups of copies. ``unit``: the model's features as unit rows (None when there are none, or with random
    weights); ``neighbours``: their nearest neighbours."""
    n = len(looks)
    found = UnionFind(n)
    best: dict[int, float] = {}  # the closest similarity that joined each pair's first member

    def join(i: int, j: int, score: float) -> None:
        found.union(i, j)
        best[i] = max(best.get(i, 0.0), score)
        best[j] = max(best.get(j, 0.0), score)

    by_content: dict[str, list[int]] = defaultdict(list)
    for i, lk in enumerate(looks):
        if lk.content:
            by_content[lk.content].append(i)
    for members in by_content.values():
        for other in members[1:]:
            join(members[0], other, 1.0)

    hashed = [i for i, lk in enumerate(looks) if lk.phash is not None and _informative(lk)]
    if len(hashed) > 1:
        bits = signs(np.stack([looks[i].phash for i in hashed]))
        mirror = signs(np.stack([looks[i].phash_mirror for i in hashed]))
        allowed = PHASH_NEAR if unit is not None else PHASH_ALONE
        for query, base in ((bits, None), (mirror, bits)):
            _check_stop(stop)
            near = nearest(query, base, k=NEIGHBOURS, stop=stop)
            for a, b, dot in zip(*near.pairs(64 - 2 * allowed)):  # +/-1 rows: dot = 64 - 2 x differing bits
                ia, ib = hashed[int(a)], hashed[int(b)]
                if ia == ib:
                    continue  # a picture and its own mirror image (a symmetric picture)
                hash_similarity = (64 + float(dot)) / 128  # 1 - differing bits / 64
                if unit is None:
                    join(ia, ib, hash_similarity)
                elif ok[ia] and ok[ib]:
                    cosine = float(unit[ia] @ unit[ib])
                    if cosine >= FEATURE_WITH_HASH:
                        join(ia, ib, max(hash_similarity, cosine))
    if neighbours is not None:
        for a, b, sim in zip(*neighbours.pairs(FEATURE_ALONE)):
            if ok[a] and ok[b]:
                join(int(a), int(b), float(sim))

    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[found.find(i)].append(i)
    out = []
    split_order = {"train": 0, "val": 1, "test": 2}
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (split_order.get(index.samples[i].split, 3), index.samples[i].path))
        samples = [index.samples[i] for i in members]
        exact = len({looks[i].content for i in members}) == 1
        label_names = [index.classes[s.label] for s in samples]
        splits = [s.split for s in samples]
        score = 1.0 if exact else min(1.0, max(best.get(i, 0.0) for i in members))
        out.append(Duplicate([s.path for s in samples], splits, "exact" if exact else "near", label_names,
                             round(score, 4), len(set(splits)) > 1, len(set(label_names)) > 1))
    out.sort(key=lambda d: (-(d.leakage or d.conflict), -d.score, d.paths[0]))
    return out


def _informative(lk: Look) -> bool:
    """Blank pictures all share one hash; they are reported as blank, not as copies of each other (unless their
    bytes are the same)."""
    return lk.spread >= BLANK_SPREAD


# --- suspicious pictures ----------------------------------------------------------------------------------------


def _suspicious(index: DatasetIndex, looks: list[Look], neighbours, ok: np.ndarray | None) -> list[Suspicious]:
    out: list[Suspicious] = []

    def add(i: int, kind: str, reason: str, score: float) -> None:
        s = index.samples[i]
        out.append(Suspicious(s.path, reason, kind, round(float(score), 4), s.split, index.classes[s.label]))

    readable = [i for i, lk in enumerate(looks) if not lk.error]
    colour = sum(1 for i in readable if looks[i].colourful >= GREY_COLOUR)
    many_colour = readable and colour / len(readable) >= COLOUR_SHARE
    for i in readable:
        lk = looks[i]
        side = min(lk.width, lk.height)
        if side < TINY:
            add(i, "tiny", f"Tiny: {lk.width}\u00d7{lk.height} pixels (under {TINY} on a side), too small to show "
                f"anything; often a placeholder or a tracking pixel.", (TINY - side) / TINY + 1)
        if lk.spread < BLANK_SPREAD:
            add(i, "blank", "Blank or nearly one colour: nothing in it to learn from.", 1 + (BLANK_SPREAD - lk.spread))
        aspect = max(lk.width, lk.height) / max(1, side)
        if aspect >= ASPECT and side >= TINY:
            add(i, "aspect", f"Extreme shape: {lk.width}\u00d7{lk.height} pixels ({aspect:.0f} to 1); the model sees "
                "a squeezed or cropped middle of it.", aspect / ASPECT)
        if many_colour and lk.colourful < GREY_COLOUR and lk.spread >= BLANK_SPREAD:
            add(i, "greyscale", f"Greyscale among colour pictures ({colour / len(readable):.0%} of them are in "
                "colour): a different camera or source?", 1.0)
    if neighbours is not None and len(index.samples) > 2 * OUTLIER_K:
        k = min(OUTLIER_K, neighbours.similarity.shape[1])
        typical = neighbours.similarity[:, :k].mean(axis=1)
        valid = np.isfinite(typical) if ok is None else (np.isfinite(typical) & ok)
        if valid.sum() > 2 * OUTLIER_K:
            median = float(np.median(typical[valid]))
            mad = float(np.median(np.abs(typical[valid] - median))) * 1.4826 + 1e-6
            z = (median - typical) / mad
            for i in np.flatnonzero(valid & (z >= OUTLIER_Z)):
                add(int(i), "outlier", "Unlike any other picture in the data (far from every class): a picture "
                    "from elsewhere, or a class of its own?", float(z[i]) / OUTLIER_Z)
    order = {"tiny": 0, "blank": 1, "outlier": 2, "aspect": 3, "greyscale": 4}
    out.sort(key=lambda x: (order[x.kind], -x.score, x.path))
    return out


# --- helpers --------------------------------------------------------------------------------------------------


def _stage(on_progress: Progress | None, what: str):
    if on_progress is None:
        return None
    return lambda done, total: on_progress(what, done, total)


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise UserError("The review of the pictures was cancelled.")

