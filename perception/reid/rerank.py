"""k-reciprocal neighbours: re-ranking (Zhong et al., CVPR 2017) and the set Jaccard distance (ADTC).

Written from the papers. ``k_reciprocal_rerank`` follows the published algorithm: k-reciprocal sets
with the 2/3-overlap expansion by half-size sets, Gaussian-kernel (exp(-d)) encoding, local query
expansion over the k2 nearest, Jaccard distance from the encodings, blended with the original
distance. Distances are used as given (pass squared Euclidean to match torchreid, which squares
its already squared distances once more) and each row is scaled by its maximum. Sorting is stable so
ties resolve by index.
"""

from __future__ import annotations

import numpy as np


def k_reciprocal_rerank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (Q, G) distances.

    Args:
        q_g: (Q, G) query-gallery distances; q_q: (Q, Q); g_g: (G, G). Non-negative.
        k1: size of the k-reciprocal neighbourhoods; k2: local query expansion size (1 = none).
        lambda_value: weight of the original distance in the blend (1 returns it, row-scaled).

    Returns:
        (Q, G) distances: (1 - lambda) * Jaccard + lambda * original / row max.
    """
    q_g, q_q, g_g = (np.asarray(m, dtype=np.float64) for m in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"expected q_q {(nq, nq)} and g_g {(ng, ng)} for q_g {q_g.shape}, "
                         f"got {q_q.shape} and {g_g.shape}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    n = nq + ng
    original = np.block([[q_q, q_g], [q_g.T, g_g]])
    if (original < 0).any() or not np.isfinite(original).all():
        raise ValueError("distances must be finite and non-negative")
    original = original / np.maximum(original.max(axis=1, keepdims=True), 1e-12)
    k1 = min(k1, n - 1)
    initial_rank = np.argsort(original, axis=1, kind="stable")

    # The paper's k nearest exclude the point itself; k_reciprocal_sets counts it, hence k + 1.
    sets = k_reciprocal_sets(original, k1 + 1)
    half_sets = k_reciprocal_sets(original, max(int(round(k1 / 2)), 1) + 1)
    v = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        expanded = sets[i]
        base = set(expanded.tolist())
        for cand in sets[i]:
            cand_set = half_sets[int(cand)]
            if len(base.intersection(cand_set.tolist())) > 2.0 / 3.0 * len(cand_set):
                expanded = np.append(expanded, cand_set)
        expanded = np.unique(expanded)
        weight = np.exp(-original[i, expanded])
        v[i, expanded] = weight / weight.sum()
    if k2 > 1:
        v = v[initial_rank[:, :k2]].mean(axis=1)

    jaccard = np.empty((nq, ng), dtype=np.float64)
    gallery_v = v[nq:]
    for i in range(nq):
        inter = np.minimum(v[i][None, :], gallery_v).sum(axis=1)
        union = np.maximum(v[i][None, :], gallery_v).sum(axis=1)
        jaccard[i] = 1.0 - inter / np.maximum(union, 1e-12)
    return (1.0 - lambda_value) * jaccard + lambda_value * original[:nq, nq:]


def k_reciprocal_sets(dist, k: int) -> list[np.ndarray]:
    """R(i, k) = {j in N(i, k) : i in N(j, k)} for every row of a square distance matrix.

    N(i, k) holds the k nearest points *including i itself* (distance 0), ties by index.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be square, got shape {dist.shape}")
    if not 1 <= k <= len(dist):
        raise ValueError(f"k must be in 1..{len(dist)}, got {k}")
    rank = np.argsort(dist, axis=1, kind="stable")[:, :k]
    member = np.zeros(dist.shape, dtype=bool)
    member[np.arange(len(dist))[:, None], rank] = True
    reciprocal = member & member.T
    return [np.flatnonzero(row) for row in reciprocal]


def krjd(dist, k: int) -> np.ndarray:
    """k-reciprocal Jaccard distance (ADTC Eq. 5): 1 - |R(i,k) & R(j,k)| / |R(i,k) | R(j,k)|.

    Symmetric, zero on the diagonal, in [0, 1]; a set-based Jaccard with no kernel weighting.
    """
    sets = k_reciprocal_sets(dist, k)
    n = len(sets)
    member = np.zeros((n, n), dtype=np.float64)
    for i, s in enumerate(sets):
        member[i, s] = 1.0
    inter = member @ member.T
    sizes = member.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return 1.0 - inter / np.maximum(union, 1.0)
