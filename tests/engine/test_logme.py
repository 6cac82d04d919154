"""LogME (engine.advise.logme) against the Gaussian marginal likelihood computed directly on tiny problems."""

from __future__ import annotations

import numpy as np
import pytest

from engine.advise.logme import logme, logme_fits


def direct_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, I/beta + F F'/alpha): the evidence of w ~ N(0, I/alpha), y = F w + N(0, I/beta), written out."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y)))


def problem(n: int, d: int, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, d))
    features = centres[labels] + 0.8 * rng.normal(size=(n, d))
    return features, labels


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)])  # more pictures than features, and fewer
def test_evidence_is_the_direct_marginal_likelihood_at_its_maximum(n, d):
    features, labels = problem(n, d)
    fits = logme_fits(features, labels)
    assert len(fits) == 3
    for c, fit in enumerate(fits):
        y = (labels == c).astype(float)
        direct = direct_log_evidence(features, y, fit.alpha, fit.beta) / n
        assert fit.evidence == pytest.approx(direct, rel=1e-9, abs=1e-9)
        # The fixed point is (near) the maximum over alpha and beta: moving either away does not raise it.
        for da, db in ((1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5)):
            assert direct_log_evidence(features, y, fit.alpha * da, fit.beta * db) / n <= direct + 1e-3
    assert logme(features, labels) == pytest.approx(np.mean([f.evidence for f in fits]))


def test_features_that_carry_the_labels_score_higher_than_noise():
    features, labels = problem(200, 16)
    noise = np.random.default_rng(1).normal(size=features.shape)
    assert logme(features, labels) > logme(noise, labels) + 0.1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        logme(np.zeros((3, 2)), np.zeros(4, dtype=int))
