"""LogME: how well a model's frozen features suit the user's labels, without training (You et al., ICML 2021).

For each class, the one-hot label column ``y`` is modelled as a Bayesian linear regression on the features ``F``
(N pictures x D features): ``w ~ N(0, 1/alpha I)``, ``y = F w + N(0, 1/beta I)``. The evidence ``p(y | F, alpha,
beta)`` is maximised over ``alpha`` and ``beta`` by MacKay's fixed-point iteration, and LogME is the maximum log
evidence per picture, averaged over the classes. Higher is better; the values compare features of the same pictures
(models, weights, stages), not different datasets.

Written here after the authors' reference code (github.com/thuml/LogME, ``LogME._fit_fixed_point``): one
eigen-decomposition of the smaller Gram matrix (D x D, or N x N when there are fewer pictures than features), then a
few scalar iterations per class. One difference: with fewer pictures than features (N < D) the reference drops the
``(D - N) log alpha`` term of ``log |alpha I + beta F'F|`` that the zero singular values contribute; it is kept here,
so that the value is the exact log evidence at the fitted ``alpha``, ``beta`` (tests/engine/test_logme.py checks it
against the Gaussian density computed directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITERATIONS = 11  # as the reference: the fixed point converges in a few steps
TOLERANCE = 1e-3  # relative change of alpha / beta that ends the iteration (the reference's)
EPSILON = 1e-5  # keeps the updates finite when a fit is perfect (the reference's)


@dataclass(frozen=True)
class ClassFit:
    """The evidence-maximising fit for one class's label column."""

    evidence: float  # log p(y | F, alpha, beta) / N
    alpha: float  # prior precision of the weights
    beta: float  # precision of the noise


def logme(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """LogME of ``features`` (N x D) for integer class ``labels`` (N,): the mean over the classes of each one-hot
    column's maximum log evidence per picture."""
    return float(np.mean([fit.evidence for fit in logme_fits(features, labels, num_classes)]))


def logme_fits(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> list[ClassFit]:
    """The per-class fits behind :func:`logme` (classes absent from ``labels`` are left out)."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if f.ndim != 2 or f.shape[0] != labels.shape[0] or f.shape[0] < 2:
        raise ValueError("logme needs features of shape (N, D) with N >= 2 and one label per row")
    n, d = f.shape
    sigma, project = _spectrum(f)
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    fits = []
    for c in range(k):
        y = (labels == c).astype(np.float64)
        if not y.any():
            continue
        fits.append(_fit_one(y, sigma, project(y), n, d))
    return fits


def _spectrum(f: np.ndarray):
    """The eigenvalues ``sigma`` of F'F (the squared singular values of F; zeros dropped), and a function giving
    ``x = U' y`` (the label column in the left singular basis) for those of them that are not zero."""
    n, d = f.shape
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)  # D x D
        keep = sigma > sigma.max() * 1e-12 if sigma.max() > 0 else np.zeros_like(sigma, dtype=bool)
        sigma, v = sigma[keep], v[:, keep]
        s = np.sqrt(sigma)

        def project(y: np.ndarray) -> np.ndarray:
            return (v.T @ (f.T @ y)) / s  # U = F V / s, so U'y = V'F'y / s
    else:
        sigma, u = np.linalg.eigh(f @ f.T)  # N x N: its eigenvectors are U directly
        keep = sigma > sigma.max() * 1e-12 if sigma.max() > 0 else np.zeros_like(sigma, dtype=bool)
        sigma, u = sigma[keep], u[:, keep]

        def project(y: np.ndarray) -> np.ndarray:
            return u.T @ y
    return sigma, project


def _fit_one(y: np.ndarray, sigma: np.ndarray, x: np.ndarray, n: int, d: int) -> ClassFit:
    x2 = x * x
    residual_x2 = max(float(y @ y - x2.sum()), 0.0)  # the part of y outside the span of F
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())  # effective number of well-determined weights
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())  # |m|^2, m the posterior mean of the weights
        res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + residual_x2  # |y - F m|^2
        alpha = gamma / (m2 + EPSILON)
        beta = (n - gamma) / (res2 + EPSILON)
        if abs(alpha / beta - t) / t <= TOLERANCE:
            break
    t = alpha / beta
    m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
    res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + residual_x2
    return ClassFit(log_evidence(alpha, beta, sigma, m2, res2, n, d) / n, alpha, beta)


def log_evidence(alpha: float, beta: float, sigma: np.ndarray, m2: float, res2: float, n: int, d: int) -> float:
    """log p(y | F, alpha, beta) from the spectrum of F'F (``sigma``: its non-zero eigenvalues; the other
    ``d - len(sigma)`` are zero) and the posterior mean's ``|m|^2`` and residual ``|y - F m|^2``."""
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * log_det - beta / 2 * res2 - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi))
