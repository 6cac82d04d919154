"""A 2-D map of pictures: the first two principal components of their features (torch.pca_lowrank), so that
pictures the model sees alike lie close together and a cluster can be selected and labelled at once.

PCA rather than UMAP: it needs no extra package, is deterministic (seeded, and each axis's sign fixed), and a new
picture lands on the same map without refitting it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pca_map"]


def pca_map(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 coordinates of ``features`` (n, d) on their two main axes; zeros when there are fewer than
    three pictures. The same features and seed give the same map."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    n = x.shape[0]
    if n < 3 or x.ndim != 2 or x.shape[1] < 2:
        return np.zeros((n, 2), dtype=np.float32)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # directions, as the suggestions compare them
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=min(6, n, x.shape[1]), center=True, niter=4)
    coords = (x - x.mean(0, keepdim=True)) @ v[:, :2]
    # Each axis's sign is arbitrary: point it so that its largest coordinate is positive (a stable picture).
    flip = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True))).clamp_min(0) * 2 - 1
    return (coords * flip).numpy().astype(np.float32)
