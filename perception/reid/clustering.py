"""Unsupervised re-ID clustering (ADTC, ECCV 2020) and cluster scores (NMI, ARI).

Two stages (ADTC Algorithm 1): k-means++ gives M centroids; each centroid is inserted into the
k-nearest-neighbour graph of the features and keeps the p points nearest to it under the
k-reciprocal Jaccard distance (ties broken by Euclidean distance). Points claimed by more than one
centroid are ambiguous and dropped, as are points nobody claims: both get label -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.reid.evaluation import pairwise_distance
from perception.reid.rerank import krjd


def kmeans_pp(x, m: int, seed: int = 0, restarts: int = 4, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-means with k-means++ seeding; the lowest-inertia of ``restarts`` seeded runs.

    Returns:
        (centroids (m, D), labels (N,)).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if not 1 <= m <= len(x):
        raise ValueError(f"number of clusters must be in 1..{len(x)}, got {m}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(max(restarts, 1)):
        centres = [x[rng.integers(len(x))]]
        d2 = ((x - centres[0]) ** 2).sum(1)
        for _ in range(1, m):
            total = d2.sum()
            idx = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
            centres.append(x[idx])
            d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
        c = np.array(centres)
        for _ in range(iters):
            labels = pairwise_distance(x, c, "sq_euclidean").argmin(1)
            new = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(m)])
            if np.allclose(new, c):
                break
            c = new
        labels = pairwise_distance(x, c, "sq_euclidean").argmin(1)
        inertia = ((x - c[labels]) ** 2).sum()
        if best is None or inertia < best[0]:
            best = (inertia, c, labels)
    return best[1], best[2]


@dataclass
class Clustering:
    """Result of ``two_stage_cluster``: labels (N,) with -1 for unused points, the centroids and
    the counts of ambiguous (claimed by several centroids) and unclaimed points."""

    labels: np.ndarray
    centroids: np.ndarray
    ambiguous: int
    unclaimed: int


def two_stage_cluster(features, m: int, p: int, k: int = 20, seed: int = 0, restarts: int = 4) -> Clustering:
    """ADTC's k-means++ then k-reciprocal reassignment.

    Args:
        features: (N, D) embeddings.
        m: number of k-means centroids (paper: 1000); p: points kept per centroid (paper: 20);
        k: size of the k-reciprocal neighbourhoods (not given in the paper; 20 by default).
    """
    x = np.asarray(features, dtype=np.float64)
    centroids, _ = kmeans_pp(x, m, seed=seed, restarts=restarts)
    n = len(x)
    if not 1 <= p <= n:
        raise ValueError(f"points per cluster p must be in 1..{n}, got {p}")
    both = np.vstack([x, centroids])
    dist = pairwise_distance(both, both, "euclidean")
    # Centroids take part in the neighbourhood graph but are never assigned.
    jac = krjd(dist, min(k, len(both)))
    claims = np.zeros((m, n), dtype=bool)
    for j in range(m):
        row = n + j
        order = np.lexsort((dist[row, :n], jac[row, :n]))
        claims[j, order[:p]] = True
    count = claims.sum(0)
    labels = np.full(n, -1, dtype=np.int64)
    single = count == 1
    labels[single] = claims[:, single].argmax(0)
    return Clustering(labels=labels, centroids=centroids, ambiguous=int((count > 1).sum()),
                      unclaimed=int((count == 0).sum()))


def _contingency(a, b) -> np.ndarray:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"label arrays must be non-empty, 1-D and of equal length, got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.float64)
    np.add.at(table, (ai, bi), 1.0)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels_true, labels_pred, average: str = "geometric") -> float:
    """Normalised mutual information, I(C, L) / sqrt(H(C) H(L)) by default (ADTC Eq. 7).

    average: "geometric" (ADTC) or "arithmetic" (scikit-learn's default), "max", "min".
    Two single-cluster labelings score 1.
    """
    table = _contingency(labels_true, labels_pred)
    n = table.sum()
    pij = table / n
    pi, pj = pij.sum(1), pij.sum(0)
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / np.outer(pi, pj)[nz])).sum())
    ha, hb = _entropy(table.sum(1)), _entropy(table.sum(0))
    if ha == 0.0 and hb == 0.0:
        return 1.0
    norm = {"geometric": np.sqrt(ha * hb), "arithmetic": (ha + hb) / 2, "max": max(ha, hb), "min": min(ha, hb)}
    if average not in norm:
        raise ValueError(f"average must be one of {sorted(norm)}, got {average!r}")
    return float(mi / norm[average]) if norm[average] > 0 else 0.0


def ari(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert and Arabie): 1 for identical partitions, about 0 for chance."""
    table = _contingency(labels_true, labels_pred)
    comb = lambda v: v * (v - 1) / 2.0  # noqa: E731
    index = comb(table).sum()
    rows, cols = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    total = comb(table.sum())
    expected = rows * cols / total if total > 0 else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))
