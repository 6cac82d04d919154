"""Likely wrong labels by confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021), written here rather than taken from cleanlab (AGPL).

1. Out-of-fold probabilities: the pictures are cut into k stratified folds; for each, a multinomial logistic regression
   (a new head, on the frozen model's features: L-BFGS, a second or two) is fitted on the other folds and predicts
   this one. No picture is judged by a head that saw its label.
2. Per-class thresholds: ``t_j`` = the mean probability of class j over the pictures labelled j (how sure the head is,
   on average, about a picture of j).
3. The confident joint: a picture labelled i counts as "confidently j" when its probability of j reaches ``t_j``
   (the largest such j when several do). The pictures off the diagonal (labelled i, confidently j != i) are the
   label issues, each with its suggested class j.
4. Ranking by self-confidence: the lower the probability of the given label, the likelier the label is wrong; the
   score is 1 - that probability.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

FOLDS = 5
L2 = 1.0  # inverse strength C of the heads' L2 penalty, in scikit-learn's convention (loss + |W|^2 / (2 C n))
MAX_ITER = 200


@dataclass(frozen=True)
class LabelJudgement:
    probabilities: np.ndarray  # (n, K) out-of-fold; NaN rows for pictures that could not be judged
    thresholds: np.ndarray  # (K,)
    suggested: np.ndarray  # (n,) int: the confident class, -1 when none reaches its threshold or not judged
    issue: np.ndarray  # (n,) bool: off the diagonal of the confident joint
    score: np.ndarray  # (n,) 1 - probability of the given label (NaN when not judged)


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number for every picture, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        fold[members] = (np.arange(len(members)) + rng.integers(k)) % k
    return fold


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, *, c: float = L2) -> tuple[torch.Tensor, torch.Tensor]:
    """A multinomial logistic regression on standardised ``x``; returns (weights, bias)."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, history_size=10, line_search_fn="strong_wolfe")
    penalty = 1.0 / (2.0 * c * len(y))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray, classes: int, *, folds: int = FOLDS, seed: int = 0,
                              stop: threading.Event | None = None) -> np.ndarray:
    """(n, K) probabilities, each row from a head that did not see that picture; NaN rows for pictures of classes
    too small to be left out (fewer than two pictures)."""
    n = len(y)
    probs = np.full((n, classes), np.nan, dtype=np.float32)
    counts = np.bincount(y, minlength=classes)
    judged = counts[y] >= 2
    if judged.sum() < 4 or len(np.unique(y[judged])) < 2:
        return probs
    k = int(max(2, min(folds, counts[counts >= 2].min())))
    fold = np.full(n, -1, dtype=np.int64)
    fold[judged] = stratified_folds(y[judged], k, seed)
    for f in range(k):
        if stop is not None and stop.is_set():
            break
        train, test = (fold != f) & judged, fold == f
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0) + 1e-6
        w, b = fit_head(((x[train] - mean) / std).astype(np.float32), y[train], classes)
        with torch.no_grad():
            logits = torch.from_numpy(((x[test] - mean) / std).astype(np.float32)) @ w + b
            probs[test] = torch.softmax(logits, dim=1).numpy()
    return probs


def confident_learning(probs: np.ndarray, y: np.ndarray) -> LabelJudgement:
    """Thresholds, confident joint and ranking (see the module) from out-of-fold ``probs`` and given labels ``y``."""
    n, classes = probs.shape
    judged = ~np.isnan(probs).any(axis=1)
    thresholds = np.ones(classes, dtype=np.float32)
    for j in range(classes):
        members = judged & (y == j)
        if members.any():
            thresholds[j] = probs[members, j].mean()
    suggested = np.full(n, -1, dtype=np.int64)
    above = np.zeros_like(probs, dtype=bool)
    above[judged] = probs[judged] >= thresholds[None, :] - 1e-6
    confident = judged & above.any(axis=1)
    masked = np.where(above, probs, -np.inf)
    suggested[confident] = masked[confident].argmax(axis=1)
    issue = confident & (suggested != y)
    score = np.full(n, np.nan, dtype=np.float32)
    score[judged] = 1.0 - probs[judged, y[judged]]
    # Where no class is confident, the most probable other class is still the one to suggest.
    other = np.where(np.arange(classes)[None, :] == y[:, None], -np.inf, np.nan_to_num(probs, nan=-np.inf))
    fallback = judged & (suggested < 0)
    suggested[fallback] = other[fallback].argmax(axis=1)
    return LabelJudgement(probs, thresholds, suggested, issue, score)
