"""kNN post-processing of back-projected labels (RangeNet++, used by SqueezeSegV3's "*" rows).

Each point looks at the S x S window of the range image around its pixel (its own range in the
centre), ranks neighbours by |r_neighbour - r_point| weighted by (1 - G) with G a normalised
Gaussian, keeps the ``k`` nearest, lets neighbours farther than ``cutoff`` metres abstain, and
takes the majority of the rest's 2D labels. Class 0 never wins, like the reference; a point with no
voter keeps its pixel's label (the reference would output class 1 there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from perception.lidar.projection import Projection


@dataclass
class KNNConfig:
    """Reference values (SqueezeSegV3 config): k 7, search 7, sigma 1.0, cutoff 1.0 m."""

    k: int = 7
    search: int = 7
    sigma: float = 1.0
    cutoff: float = 1.0

    def validate(self) -> "KNNConfig":
        if self.search < 1 or self.search % 2 == 0:
            raise ValueError(f"knn search window must be odd and >= 1, got {self.search}")
        if not (1 <= self.k <= self.search ** 2):
            raise ValueError(f"knn k must be in 1..search^2 = {self.search ** 2}, got {self.k}")
        if self.sigma <= 0 or self.cutoff <= 0:
            raise ValueError(f"knn sigma and cutoff must be positive, got {self.sigma}, {self.cutoff}")
        return self


def _inverse_gaussian(search: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(search, dtype=torch.float64) - (search - 1) / 2
    g = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return (1 - g / g.sum()).flatten().float()


def knn_labels(proj: Projection, label_image: np.ndarray, num_classes: int, cfg: KNNConfig | None = None) -> np.ndarray:
    """Per-point labels (N,) int64 refined by kNN voting; dropped points get 0.

    Args:
        proj: the scan's projection.
        label_image: (H, W) predicted training ids.
        num_classes: C (votes for ids >= C are impossible).
    """
    cfg = (cfg or KNNConfig()).validate()
    n = proj.px.shape[0]
    out = np.zeros(n, dtype=np.int64)
    k = np.flatnonzero(proj.kept)
    if k.size == 0:
        return out
    H, W = proj.range.shape
    S, pad = cfg.search, cfg.search // 2
    rng = torch.from_numpy(proj.range)[None, None]
    lab = torch.from_numpy(np.asarray(label_image, np.float32))[None, None]
    flat_idx = torch.from_numpy(proj.py[k].astype(np.int64) * W + proj.px[k])
    # neighbour ranges and labels for every pixel, then gathered at each point's pixel: (S*S, P)
    nb_range = F.unfold(rng, S, padding=pad)[0][:, flat_idx]
    nb_label = F.unfold(lab, S, padding=pad)[0][:, flat_idx].long()
    # unfold pads with 0, which is not a return; empty pixels hold -1
    nb_range = torch.where(nb_range <= 0, torch.full_like(nb_range, float("inf")), nb_range)
    point_range = torch.from_numpy(proj.unproj_range[k])
    nb_range[(S * S) // 2] = point_range
    dist = (nb_range - point_range[None]).abs() * _inverse_gaussian(S, cfg.sigma)[:, None]
    d_k, pos = dist.topk(cfg.k, dim=0, largest=False)
    votes_for = nb_label.gather(0, pos)
    valid = d_k <= cfg.cutoff
    counts = torch.zeros(num_classes, k.size, dtype=torch.float32)
    counts.scatter_add_(0, votes_for.clamp(0, num_classes - 1), valid.float())
    counts[0] = -1  # class 0 never wins
    best = counts.argmax(dim=0)
    no_vote = counts[1:].sum(dim=0) <= 0
    fallback = torch.from_numpy(np.asarray(label_image)[proj.py[k], proj.px[k]].astype(np.int64))
    out[k] = torch.where(no_vote, fallback, best).numpy()
    return out
