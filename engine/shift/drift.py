"""A drift report for a folder of new pictures: are they still like the pictures the model was trained on?

Three measurements, each against the run's validation pictures (the reference ``engine.shift.ood`` keeps):

- the share of pictures flagged as unlike the training pictures, against the 5 % expected by construction of the
  threshold, with the binomial test's probability of seeing that many by chance;
- how well a simple classifier tells the new pictures from the reference ones by their features (a domain
  classifier: logistic regression on the features reduced to a few principal components, 5-fold cross-validated
  AUC; 0.5 means they cannot be told apart, 1.0 that they are entirely different);
- how the predicted class mix moved (total variation distance between the two mixes: the share of predictions
  that would have to change class for the mixes to match).

``DriftReport.to_dict`` is the JSON of ``main.py drift RUN FOLDER --json``; ``sentence`` the one the window and
the command line show; ``histogram`` the plot's data.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.results.predict import ModelBundle, expand_paths
from engine.shift.features import ProgressCallback, run_pass
from engine.shift.ood import PASS_RATE, OodModel, normalise

FOLDS = 5
COMPONENTS = 32  # principal components the domain classifier sees
AUC_SOME, AUC_STRONG = 0.65, 0.8  # domain classifier AUC from which the pictures differ somewhat / clearly
P_SIGNIFICANT = 0.01
MIN_PICTURES = 10


@dataclass
class DriftReport:
    run: str
    folder: str
    classes: list[str]
    pictures: int  # pictures scored
    unreadable: int
    flagged: int
    expected_share: float
    p_value: float  # probability of flagging at least this many by chance
    method: str
    threshold: float
    domain_auc: float | None  # None when the model gives no features
    reference_mix: list[float]
    new_mix: list[float]
    verdict: str  # "none", "some", "strong"
    scores: list[float] = field(default_factory=list)  # each scored picture's OOD score
    reference_scores: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the scored pictures, as ``scores``

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.pictures if self.pictures else 0.0

    @property
    def mix_shift(self) -> float:
        return 0.5 * float(np.abs(np.asarray(self.reference_mix) - np.asarray(self.new_mix)).sum())

    def mix_words(self) -> str:
        moves = sorted(((n - r, c) for c, r, n in zip(self.classes, self.reference_mix, self.new_mix)),
                       key=lambda t: -abs(t[0]))
        big = [f"{c} {100 * r:.0f} % \u2192 {100 * n:.0f} %" for (d, c), r, n in
               ((m, self.reference_mix[self.classes.index(m[1])], self.new_mix[self.classes.index(m[1])])
                for m in moves[:3]) if abs(d) >= 0.05]
        if not big:
            return "the predicted class mix is about the same as on the validation pictures"
        return "the predicted class mix moved (" + ", ".join(big) + ")"

    def sentence(self) -> str:
        share = (f"{self.flagged} of {self.pictures} pictures ({100 * self.flagged_share:.0f} %) are unlike the "
                 f"training pictures, against about {100 * self.expected_share:.0f} % expected")
        auc = ("" if self.domain_auc is None else
               f"; a classifier tells them from the validation pictures with an AUC of {self.domain_auc:.2f} "
               "(0.5: indistinguishable)")
        head = {"none": "No sign of drift: ", "some": "Some drift: ",
                "strong": "Strong drift, the model's answers on these pictures are not to be trusted as they are: "
                }[self.verdict]
        advice = {"none": "",
                  "some": " Check a few predictions by eye; adapting the model to these pictures may help.",
                  "strong": " Adapt the model to these pictures, or better, label a few of them and adapt with "
                            "labels."}[self.verdict]
        return f"{head}{share}{auc}; {self.mix_words()}.{advice}"

    def histogram(self, bins: int = 30) -> dict:
        """Both score distributions over shared bins (shares of each group), and the threshold."""
        ref = np.asarray(self.reference_scores, dtype=np.float64)
        new = np.asarray(self.scores, dtype=np.float64)
        both = np.concatenate([ref, new, [self.threshold]])
        both = both[np.isfinite(both)]
        low, high = float(np.quantile(both, 0.0)), float(np.quantile(both, 0.99))
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, bins + 1)
        clip = lambda a: np.clip(a, low, high)  # noqa: E731 - the last bin holds the far tail
        r = np.histogram(clip(ref), edges)[0] / max(1, len(ref))
        n = np.histogram(clip(new), edges)[0] / max(1, len(new))
        return {"edges": edges.tolist(), "reference": r.tolist(), "new": n.tolist(), "threshold": self.threshold}

    def to_dict(self) -> dict:
        return {"run": self.run, "folder": self.folder, "pictures": self.pictures, "unreadable": self.unreadable,
                "flagged": self.flagged, "flagged_share": round(self.flagged_share, 4),
                "expected_share": round(self.expected_share, 4), "p_value": self.p_value, "method": self.method,
                "threshold": self.threshold,
                "domain_auc": None if self.domain_auc is None else round(self.domain_auc, 4),
                "class_mix": {c: {"reference": round(r, 4), "new": round(n, 4)}
                              for c, r, n in zip(self.classes, self.reference_mix, self.new_mix)},
                "class_mix_shift": round(self.mix_shift, 4), "verdict": self.verdict, "sentence": self.sentence(),
                "flagged_pictures": [p for p, s in zip(self.paths, self.scores) if s > self.threshold]}


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p) (hand-written: SciPy is not among the app's dependencies)."""
    if k <= 0:
        return 1.0
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
             + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms)))


def domain_auc(reference: np.ndarray, new: np.ndarray, seed: int = 0) -> float:
    """Cross-validated AUC of a logistic regression telling ``new`` features from ``reference`` ones."""
    from engine.shift.ood import auroc

    x = normalise(np.concatenate([reference, new]))
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(new))])
    x = x - x.mean(0)
    k = min(COMPONENTS, len(x) - 1, x.shape[1])
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:k].T
    z = z / np.maximum(z.std(0), 1e-12)
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=int)
    for label in (0, 1):  # stratified
        idx = np.flatnonzero(y == label)
        folds[rng.permutation(idx)] = np.arange(len(idx)) % FOLDS
    out = np.empty(len(y))
    for f in range(FOLDS):
        test = folds == f
        out[test] = _logistic(z[~test], y[~test], z[test])
    return auroc(out[y == 0], out[y == 1])


def _logistic(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Decision values of an L2-regularised logistic regression (balanced classes), fitted with L-BFGS."""
    xt = torch.from_numpy(x).double()
    yt = torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    pos = float(yt.mean()) if len(yt) else 0.5
    weights = torch.where(yt > 0, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xt @ w[:-1] + w[-1]
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none")).mean()
        loss = loss + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (torch.from_numpy(x_test).double() @ w[:-1] + w[-1]).numpy()


def verdict(share: float, p_value: float, auc: float | None) -> str:
    if (auc is not None and auc >= AUC_STRONG) or share >= 0.25:
        return "strong"
    if (auc is not None and auc >= AUC_SOME) or (p_value < P_SIGNIFICANT and share >= 2 * (1 - PASS_RATE)):
        return "some"
    return "none"


def drift_report(bundle: ModelBundle, folder: str | Path, ood: OodModel, *,
                 on_progress: ProgressCallback | None = None, stop: threading.Event | None = None) -> DriftReport:
    """The drift report of the pictures in ``folder`` (sub-folders too) for the model of ``bundle``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give the folder of new pictures.")
    items = expand_paths([folder])
    paths = [p for p, e in items if e is None]
    if len(paths) < MIN_PICTURES:
        raise UserError(f"{folder} holds {len(paths)} pictures: a drift report needs at least {MIN_PICTURES}.")
    p = run_pass(bundle, paths, on_progress=on_progress, stop=stop, stop_message="The drift report was stopped.")
    good = p.good
    if good.sum() < MIN_PICTURES:
        raise UserError(f"Only {int(good.sum())} of the pictures in {folder} could be read: a drift report needs at "
                        f"least {MIN_PICTURES}.")
    scores = ood.scores(p)[good]
    flagged = int(np.sum(scores > ood.threshold))
    n = int(good.sum())
    expected = 1 - ood.pass_rate
    auc = None
    if ood.reference is not None and p.features is not None and len(ood.reference) >= MIN_PICTURES:
        auc = domain_auc(ood.reference.astype(np.float64), p.features[good].astype(np.float64))
    k = len(bundle.classes)
    mix = np.bincount(p.logits[good].argmax(1), minlength=k) / n
    ref_mix = ood.reference_mix if len(ood.reference_mix) == k else np.full(k, 1.0 / k)
    pv = binomial_tail(flagged, n, expected)
    return DriftReport(str(bundle.source), str(folder), list(bundle.classes), n, int((~good).sum()), flagged,
                       expected, pv, ood.method, ood.threshold, auc, [float(x) for x in ref_mix],
                       [float(x) for x in mix], verdict(flagged / n, pv, auc), [float(s) for s in scores],
                       [float(s) for s in ood.val_scores.get(ood.method, [])],
                       [path for path, g in zip(paths, good) if g])
