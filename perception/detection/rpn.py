"""The region proposal network (Ren et al. 2015, section 3.1).

A 3x3 convolution slides over the backbone's feature map; at each location two sibling 1x1
convolutions score A anchors as object / not object and regress their boxes. Training samples 256
anchors per image (at most half positive: IoU >= 0.7 with a ground-truth box, or the best anchor
of a box; negative: IoU < 0.3), with binary cross-entropy and smooth-L1 losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from perception.detection.boxes import BoxCoder, cell_anchors, clip_boxes, grid_anchors, remove_small
from perception.detection.ops import nms
from perception.detection.sampling import BELOW_LOW, BETWEEN, match, sample


@dataclass
class RPNConfig:
    """Anchors and proposal settings (defaults: torchvision's, with proposal counts
    scaled down for 320 x 240 images, a tenth of the anchors of a 1000 x 600 one).

    Attributes:
        anchor_sizes: anchor side lengths in input pixels (the paper's 128, 256, 512 are for
            600-pixel images). anchor_ratios: height / width.
        fg_iou, bg_iou: positive and negative IoU thresholds. batch_size, positive_fraction: anchors
            sampled per image.
        pre_nms_train, post_nms_train, pre_nms_test, post_nms_test: proposals kept before and after
            NMS per image. nms_iou: proposal NMS threshold. min_size: smallest proposal side, pixels.
    """

    anchor_sizes: tuple[float, ...] = (24.0, 48.0, 96.0, 192.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    batch_size: int = 256
    positive_fraction: float = 0.5
    pre_nms_train: int = 1000
    post_nms_train: int = 256
    pre_nms_test: int = 600
    post_nms_test: int = 200
    nms_iou: float = 0.7
    min_size: float = 1.0


class RPNHead(nn.Module):
    """(N, C, h, w) -> objectness logits (N, A, h, w) and box deltas (N, 4A, h, w)."""

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls = nn.Conv2d(channels, num_anchors, 1)
        self.bbox = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls, self.bbox):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv(x))
        return self.cls(h), self.bbox(h)


def _smooth_l1(x: torch.Tensor, beta: float) -> torch.Tensor:
    a = x.abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


class RegionProposalNetwork(nn.Module):
    """Anchors, head, proposals and losses.

    ``forward(features, image_sizes, targets)`` returns the proposals of each image ((P_i, 4),
    highest objectness first) and, when ``targets`` are given, ``{"rpn_objectness", "rpn_box"}``.
    """

    def __init__(self, channels: int, stride: int, cfg: RPNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or RPNConfig()
        self.stride = stride
        self.register_buffer("base_anchors", cell_anchors(self.cfg.anchor_sizes, self.cfg.anchor_ratios),
                             persistent=False)
        self.num_anchors = self.base_anchors.shape[0]
        self.head = RPNHead(channels, self.num_anchors)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def anchors(self, feat_h: int, feat_w: int) -> torch.Tensor:
        return grid_anchors(self.base_anchors, feat_h, feat_w, self.stride).to(self.base_anchors.device)

    def forward(self, features: torch.Tensor, image_sizes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[torch.Tensor], dict]:
        n, _, fh, fw = features.shape
        logits, deltas = self.head(features)
        a = self.num_anchors
        # position-major, anchor-minor: the layout of grid_anchors
        logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
        deltas = deltas.view(n, a, 4, fh, fw).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        anchors = self.anchors(fh, fw)
        proposals = self._proposals(logits.detach(), deltas.detach(), anchors, image_sizes)
        losses = {}
        if targets is not None:
            losses = self._losses(logits, deltas, anchors, targets)
        return proposals, losses

    def _proposals(self, logits, deltas, anchors, image_sizes) -> list[torch.Tensor]:
        cfg = self.cfg
        pre, post = (cfg.pre_nms_train, cfg.post_nms_train) if self.training else (cfg.pre_nms_test, cfg.post_nms_test)
        out = []
        for i, (h, w) in enumerate(image_sizes):
            score = logits[i]
            top = torch.topk(score, min(pre, score.numel())).indices
            boxes = clip_boxes(self.coder.decode(deltas[i, top], anchors[top]), h, w)
            score = score[top]
            keep = remove_small(boxes, cfg.min_size)
            boxes, score = boxes[keep], score[keep]
            keep = nms(boxes, score, cfg.nms_iou)[:post]
            out.append(boxes[keep])
        return out

    def _losses(self, logits, deltas, anchors, targets) -> dict:
        cfg = self.cfg
        obj_terms, box_terms, count = [], [], 0
        for i, t in enumerate(targets):
            m = match(t["boxes"], anchors, cfg.fg_iou, cfg.bg_iou, allow_low_quality=True)
            labels = (m >= 0).to(torch.int64)
            labels[m == BETWEEN] = -1
            labels[m == BELOW_LOW] = 0
            pos, neg = sample(labels, cfg.batch_size, cfg.positive_fraction)
            idx = torch.cat([pos, neg])
            count += idx.numel()
            obj_terms.append(F.binary_cross_entropy_with_logits(
                logits[i, idx], labels[idx].to(logits.dtype), reduction="sum"))
            if pos.numel():
                target = self.coder.encode(t["boxes"][m[pos]], anchors[pos])
                box_terms.append(_smooth_l1(deltas[i, pos] - target, 1.0 / 9).sum())
        denom = max(count, 1)
        zero = logits.sum() * 0.0
        return {"rpn_objectness": sum(obj_terms, zero) / denom, "rpn_box": sum(box_terms, zero) / denom}


__all__ = ["RPNConfig", "RPNHead", "RegionProposalNetwork"]
