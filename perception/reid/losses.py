"""Re-ID and fine-grained losses: ID cross-entropy, batch-hard triplet, API-Net's score ranking."""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("euclidean", "sq_euclidean", "cosine")


def feature_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean", eps: float = 1e-12) -> torch.Tensor:
    """(N, M) distances between rows of x (N, D) and y (M, D).

    metric: "euclidean", "sq_euclidean" or "cosine" (1 - cosine similarity). Euclidean squares
    are floored at ``eps`` before the square root so that the gradient at zero stays finite (0:
    exact zeros, for evaluation).
    """
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1, eps=1e-12) @ F.normalize(y, dim=1, eps=1e-12).t()
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.t()
    sq = sq.clamp_min(0.0)
    if metric == "sq_euclidean":
        return sq
    if metric == "euclidean":
        return sq.clamp_min(eps).sqrt()
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def triplet_batch_hard(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                       metric: str = "euclidean", soft: bool = False) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017), mean over anchors.

    For each anchor: the farthest sample of its identity (itself included, as torchreid) and the
    nearest of any other identity; loss max(0, d_ap - d_an + margin), or softplus(d_ap - d_an)
    when ``soft``.

    Raises:
        ValueError: a batch with a single identity (no negatives).
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) with N labels, got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    if same.all():
        raise ValueError("triplet loss needs at least two identities in the batch")
    dist = feature_distance(features, features, metric)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(same, float("inf")).amin(1)
    if soft:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def id_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy over identities; smoothing as torchreid ((1-e) one-hot + e/K)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def api_rank_loss(p_self: torch.Tensor, p_other: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """API-Net's score-ranking hinge (Eq. 9), mean over pairs: max(0, p_other - p_self + eps).

    p_self, p_other: softmax probabilities of the true class with the self and other gates.
    """
    return F.relu(p_other - p_self + eps).mean()
