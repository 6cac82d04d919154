"""Nearest neighbours among a dataset's pictures, by blocked matrix products.

Why not an index library (faiss-cpu, hnswlib, usearch): the doctor needs, once per run, every picture's few nearest
neighbours among at most some 10^5 pictures. An exact search by blocks of rows is one matrix product per block on
torch's BLAS: for 50,000 pictures of 64-bit hashes it takes seconds, for 50,000 x 1,280 model features about a
minute on two cores (docs/doctor.md), its memory is one block of similarities (block x n floats, 400 MB at most,
whatever n), it is exact (no recall to tune, the same answer every time), and it adds no dependency. An approximate
index pays off from millions of pictures or for repeated queries, neither of which the doctor has.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

BLOCK_BYTES = 400 * 2**20  # the similarity block may take this much memory at most


@dataclass(frozen=True)
class Neighbours:
    """For every query row: the indices and similarities of its ``k`` most similar base rows, best first (itself
    left out when the query and the base are the same set)."""

    index: np.ndarray  # (n, k) int64
    similarity: np.ndarray  # (n, k) float32

    def pairs(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, similarity) of every listed neighbour pair with similarity >= threshold, each pair once (i < j)."""
        rows = np.repeat(np.arange(self.index.shape[0]), self.index.shape[1])
        cols = self.index.ravel()
        sims = self.similarity.ravel()
        keep = (sims >= threshold) & (cols >= 0) & (rows != cols)
        i, j, s = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep], sims[keep]
        if not len(i):
            return i, j, s
        key = i * self.index.shape[0] + j
        _, first = np.unique(key, return_index=True)
        return i[first], j[first], s[first]


def nearest(query: np.ndarray, base: np.ndarray | None = None, k: int = 10, *,
            stop: threading.Event | None = None) -> Neighbours:
    """The ``k`` rows of ``base`` with the largest dot product with each row of ``query`` (cosine similarity for
    unit rows). ``base=None`` searches ``query`` against itself and leaves each row's own match out."""
    same = base is None
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    b = q if same else torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
    n, m = q.shape[0], b.shape[0]
    k = max(0, min(k, m - 1 if same else m))
    index = np.full((n, k), -1, dtype=np.int64)
    similarity = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k == 0:
        return Neighbours(index, similarity)
    rows = max(1, min(n, BLOCK_BYTES // (4 * m)))
    bt = b.T.contiguous()
    with torch.inference_mode():
        for start in range(0, n, rows):
            if stop is not None and stop.is_set():
                break
            block = q[start:start + rows] @ bt
            if same:  # a row is not its own neighbour
                r = torch.arange(block.shape[0])
                block[r, r + start] = -torch.inf
            sims, idx = torch.topk(block, k, dim=1)
            index[start:start + rows] = idx.numpy()
            similarity[start:start + rows] = sims.numpy()
    return Neighbours(index, similarity)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def signs(bits: np.ndarray) -> np.ndarray:
    """Bit rows as +1/-1 rows: the dot product of two is (bits - 2 x Hamming distance)."""
    return np.where(np.asarray(bits, dtype=bool), 1.0, -1.0).astype(np.float32)


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
