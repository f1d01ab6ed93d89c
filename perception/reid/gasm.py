"""GASM: guided saliency feature learning for crowded scenes (specs section 6).

A fully convolutional backbone gives x (N, C, h, w). Two 1 x 1 heads predict a person-mask map
(C -> 1) and 13 joint heatmaps (C -> 13); they are supervised by teacher maps when the data has them
(``mask_target``/``pose_target``; the simulator provides exact ones) and are needed by nothing at
inference. Their fusion is the saliency S (sum 1 over positions) and the descriptor is the
S-weighted sum of x, with a BN neck and classifier (CE + batch-hard triplet).

The fusion is not specified in the paper; here S = normalise(mean(sigmoid(mask), minmax(sum of
sigmoid(joints)))), or the product with ``fuse="product"``.

Joint order (13): head, left/right shoulder, elbow, wrist, hip, knee, ankle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perception.reid.models import BNNeck, ReidOutput, _Normalise
from perception.reid.resnet import ResNet

JOINTS = ("head", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip",
          "l_knee", "r_knee", "l_ankle", "r_ankle")
#: channel permutation that mirrors the joints (left <-> right) when an image is flipped
FLIP_JOINTS = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11)


def saliency(mask_logits: torch.Tensor, pose_logits: torch.Tensor, fuse: str = "mean") -> torch.Tensor:
    """(N, 1, h, w) and (N, 13, h, w) logits -> (N, 1, h, w) saliency, summing to 1 per sample."""
    m = torch.sigmoid(mask_logits)
    p = torch.sigmoid(pose_logits).sum(1, keepdim=True)
    lo, hi = p.amin((2, 3), keepdim=True), p.amax((2, 3), keepdim=True)
    p = (p - lo) / (hi - lo).clamp_min(1e-6)
    if fuse == "mean":
        s = 0.5 * (m + p)
    elif fuse == "product":
        s = m * p
    else:
        raise ValueError(f"GASM fuse must be 'mean' or 'product', got {fuse!r}")
    return s / s.sum((2, 3), keepdim=True).clamp_min(1e-6)


def frobenius_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||pred - target||_F (not squared, Eq. 1-2); target resized to pred's map
    by area averaging."""
    if target.shape[-2:] != pred.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, pred.shape[-2:])
    return (pred - target).flatten(1).norm(dim=1).mean()


class GASM(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int, fuse: str = "mean") -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.backbone = backbone
        c = backbone.channels[-1]
        self.mask_head = nn.Conv2d(c, 1, 1)
        self.pose_head = nn.Conv2d(c, len(JOINTS), 1)
        self.fuse = fuse
        self.neck = BNNeck(c, num_classes)
        self.embedding_dim = c

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feature map, mask logits, pose logits, saliency)."""
        f = self.backbone(self.normalise(x))
        m, p = self.mask_head(f), self.pose_head(f)
        return f, m, p, saliency(m, p, self.fuse)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f, m, p, s = self.maps(x)
        feat = (f * s).sum((2, 3))
        b, logits = self.neck(feat)
        if not self.training:
            return b
        return ReidOutput(logits=[logits], triplet=[feat], embedding=b,
                          extras={"mask": torch.sigmoid(m), "pose": torch.sigmoid(p)})
