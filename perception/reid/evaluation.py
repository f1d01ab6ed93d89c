"""Re-ID and fine-grained evaluation: the Market-1501 protocol, CMC, mAP, mINP and top-k accuracy.

Protocol (specs/perception_anchors.md 2.1, specs/reid_and_finegrained.md 7.2), per query:

1. rank the gallery by distance, ascending; ties keep gallery order (stable sort), so results do
   not depend on the sort implementation;
2. drop gallery items with the query's identity *and* camera (same-id, same-camera "junk");
   same-camera items of other identities stay;
3. skip the query if no true match is left (it counts in neither CMC nor mAP);
4. CMC(r) = 1 if the first match is within the top r; AP over the whole remaining list.

Unlike torchreid and fast-reid, CMC curves are padded (a found match stays found) instead of
being cut to the gallery length, so galleries shorter than ``max_rank`` work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AP_VARIANTS = ("noninterp", "trapezoid")


@dataclass
class RankMetrics:
    """Results of ``evaluate_rank``.

    Attributes:
        cmc: (max_rank,) fraction of valid queries whose first match is within rank r+1.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty (fast-reid): matches / position of the last match.
        num_valid: queries evaluated; num_skipped: queries without a match in the gallery.
        ap_variant: "noninterp" (torchreid, fast-reid) or "trapezoid" (Market-1501 MATLAB code).
        ap: (num_valid,) per-query AP, in query order.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int
    ap_variant: str
    ap: np.ndarray = field(repr=False)

    def rank(self, r: int) -> float:
        """CMC at rank r (1-based)."""
        if not 1 <= r <= len(self.cmc):
            raise ValueError(f"rank must be in 1..{len(self.cmc)}, got {r}")
        return float(self.cmc[r - 1])

    def as_dict(self) -> dict:
        out = {f"rank{r}": round(self.rank(r), 6) for r in (1, 5, 10) if r <= len(self.cmc)}
        out.update(mAP=round(self.mAP, 6), mINP=round(self.mINP, 6), num_valid=self.num_valid,
                   num_skipped=self.num_skipped, ap_variant=self.ap_variant)
        return out


def _as_1d(name: str, values, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if length is not None and len(arr) != length:
        raise ValueError(f"{name} has {len(arr)} entries but the distance matrix expects {length}")
    return arr


def average_precision(positions: np.ndarray, variant: str = "noninterp") -> float:
    """AP from the 1-based ranks of the true matches in a ranked list (ascending).

    noninterp: mean over matches t of t / pos_t.
    trapezoid: the Market-1501 MATLAB code, mean of (precision before + precision at the match) / 2,
    where the precision before a match at rank 1 is 1.
    """
    pos = np.asarray(positions, dtype=np.float64)
    t = np.arange(1, len(pos) + 1, dtype=np.float64)
    at = t / pos
    if variant == "noninterp":
        return float(at.mean())
    if variant == "trapezoid":
        before = np.where(pos > 1, (t - 1) / np.maximum(pos - 1, 1), 1.0)
        return float(((before + at) / 2).mean())
    raise ValueError(f"ap variant must be one of {AP_VARIANTS}, got {variant!r}")


def evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50,
                  ap_variant: str = "noninterp", remove_same_camera: bool = True) -> RankMetrics:
    """Evaluate a (Q, G) distance matrix (smaller is more similar) with the Market-1501 protocol.

    Args:
        dist: (Q, G) float distances.
        q_pids, g_pids: identities of queries and gallery items (ints; 0 may be a distractor id).
        q_cams, g_cams: camera ids.
        max_rank: length of the CMC curve.
        ap_variant: "noninterp" (default, as torchreid/fast-reid) or "trapezoid" (Market MATLAB).
        remove_same_camera: drop same-id same-camera gallery items (the protocol; False for
            datasets such as CUB where camera has no meaning).

    Raises:
        ValueError: empty gallery or queries, mismatched lengths, NaN distances, or no query with a
            match in the gallery.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2:
        raise ValueError(f"dist must be a (queries, gallery) matrix, got shape {dist.shape}")
    nq, ng = dist.shape
    if ng == 0:
        raise ValueError("the gallery is empty: nothing to rank queries against")
    if nq == 0:
        raise ValueError("there are no queries to evaluate")
    if np.isnan(dist).any():
        raise ValueError("dist contains NaN; check the features (a NaN embedding poisons its row)")
    if ap_variant not in AP_VARIANTS:
        raise ValueError(f"ap_variant must be one of {AP_VARIANTS}, got {ap_variant!r}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    q_pids = _as_1d("q_pids", q_pids, nq)
    q_cams = _as_1d("q_cams", q_cams, nq)
    g_pids = _as_1d("g_pids", g_pids, ng)
    g_cams = _as_1d("g_cams", g_cams, ng)

    order = np.argsort(dist, axis=1, kind="stable")
    cmc, aps, inps = [], [], []
    skipped = 0
    ranks = np.arange(max_rank)
    for q in range(nq):
        pids, cams = g_pids[order[q]], g_cams[order[q]]
        keep = np.ones(ng, dtype=bool)
        if remove_same_camera:
            keep = ~((pids == q_pids[q]) & (cams == q_cams[q]))
        matches = pids[keep] == q_pids[q]
        if not matches.any():
            skipped += 1
            continue
        positions = np.flatnonzero(matches) + 1
        cmc.append(ranks >= positions[0] - 1)
        aps.append(average_precision(positions, ap_variant))
        inps.append(len(positions) / positions[-1])
    if not aps:
        raise ValueError(f"none of the {nq} queries has a true match in the gallery "
                         "(after removing same-identity same-camera items)")
    return RankMetrics(cmc=np.mean(cmc, axis=0), mAP=float(np.mean(aps)), mINP=float(np.mean(inps)),
                       num_valid=len(aps), num_skipped=skipped, ap_variant=ap_variant, ap=np.asarray(aps))


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[int, float]:
    """Fine-grained classification accuracy: fraction of samples whose label is in the top k.

    Ties are broken towards the lower class index (stable sort of the negated scores).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = _as_1d("labels", labels)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits must be (N, classes) with N = {len(labels)} labels, got {logits.shape}")
    if len(labels) == 0:
        raise ValueError("no samples to score")
    order = np.argsort(-logits, axis=1, kind="stable")
    hit_rank = np.argmax(order == labels[:, None], axis=1)
    return {int(k): float(np.mean(hit_rank < k)) for k in ks}


def pairwise_distance(a, b, metric: str = "euclidean") -> np.ndarray:
    """(len(a), len(b)) float64 distances between feature rows (the losses' formulas, on arrays).

    metric: "euclidean", "sq_euclidean" or "cosine" (1 - cosine similarity).
    """
    import torch

    from perception.reid.losses import feature_distance

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {a.shape} and {b.shape}")
    return feature_distance(torch.from_numpy(a), torch.from_numpy(b), metric, eps=0.0).numpy()
