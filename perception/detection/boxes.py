"""Box arithmetic of the two-stage detector: IoU, the Faster R-CNN box parametrisation, anchors.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the network's input image, continuous coordinates
(pixel ``i`` covers ``[i, i + 1)``), so a box's width is ``x1 - x0`` without the VOC "+1".
"""

from __future__ import annotations

import math

import torch

#: largest log-scale change a decoded box may take (as Detectron): exp(4.135) = 62.5x
BBOX_CLIP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) -> (N,) areas in square pixels (0 for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4), (M, 4) -> (N, M) intersection over union (0 where both areas are 0)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip (N, 4) boxes to the image ``[0, width] x [0, height]``."""
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def remove_small(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of boxes at least ``min_size`` pixels wide and high."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((w >= min_size) & (h >= min_size)).flatten()


class BoxCoder:
    """The R-CNN box parametrisation (Girshick et al.; Ren et al. 2015, Eq. 2).

    ``t_x = wx (x - x_a) / w_a``, ``t_y = wy (y - y_a) / h_a``, ``t_w = ww log(w / w_a)``,
    ``t_h = wh log(h / h_a)`` for centre (x, y), width and height, with per-term weights
    (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the box head, as Detectron and torchvision.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clip: float = BBOX_CLIP) -> None:
        self.weights, self.clip = tuple(float(w) for w in weights), clip

    @staticmethod
    def _centre_size(b: torch.Tensor):
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Regression targets (N, 4) of ``boxes`` relative to ``reference`` boxes (both (N, 4),
        positive sizes)."""
        wx, wy, ww, wh = self.weights
        x, y, w, h = self._centre_size(boxes)
        xa, ya, wa, ha = self._centre_size(reference)
        return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa), wh * torch.log(h / ha)],
                           dim=1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes from (N, 4k) deltas and (N, 4) reference boxes -> (N, 4k) (k boxes per row)."""
        wx, wy, ww, wh = self.weights
        xa, ya, wa, ha = (v[:, None] for v in self._centre_size(reference.to(deltas.dtype)))
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.clip)
        x, y = dx * wa + xa, dy * ha + ya
        w, h = torch.exp(dw) * wa, torch.exp(dh) * ha
        out = torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=2)
        return out.reshape(deltas.shape[0], -1)


def cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """(len(ratios) * len(sizes), 4) anchors centred on the origin: for ratio r = h / w and size s,
    w = s / sqrt(r), h = s * sqrt(r) (area s^2), ordered ratio-major as torchvision."""
    r = torch.tensor(ratios, dtype=torch.float32)
    s = torch.tensor(sizes, dtype=torch.float32)
    h_ratio = torch.sqrt(r)
    ws = (s[None, :] / h_ratio[:, None]).reshape(-1)
    hs = (s[None, :] * h_ratio[:, None]).reshape(-1)
    return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


def grid_anchors(base: torch.Tensor, feat_h: int, feat_w: int, stride: int) -> torch.Tensor:
    """All anchors of a (feat_h, feat_w) feature map: (feat_h * feat_w * A, 4), position-major
    (the A anchors of location (y, x) are rows ``(y * feat_w + x) * A ...``), centred on
    ``(x + 0.5) * stride`` so the centres sit on the input pixels each cell covers."""
    xs = (torch.arange(feat_w, dtype=torch.float32) + 0.5) * stride
    ys = (torch.arange(feat_h, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base.to(shifts)[None]).reshape(-1, 4)


__all__ = ["BBOX_CLIP", "BoxCoder", "box_area", "box_iou", "cell_anchors", "clip_boxes", "grid_anchors",
           "remove_small"]
