"""Matching proposals or anchors to ground truth, and sampling the training set of each image."""

from __future__ import annotations

import torch

from perception.detection.boxes import box_iou

BELOW_LOW = -1  # a negative (background)
BETWEEN = -2  # ignored


def match(gt_boxes: torch.Tensor, boxes: torch.Tensor, high: float, low: float,
          allow_low_quality: bool) -> torch.Tensor:
    """Index of the matched ground-truth box per row of ``boxes`` (M,), or ``BELOW_LOW`` when the
    best IoU is below ``low``, or ``BETWEEN`` when it lies in ``[low, high)``.

    With ``allow_low_quality`` (the RPN's rule, Ren et al. 2015 section 3.1.2) every ground-truth
    box also claims the boxes of highest IoU with it, so each object has at least one positive.
    """
    m = boxes.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((m,), BELOW_LOW, dtype=torch.int64, device=boxes.device)
    iou = box_iou(gt_boxes, boxes)  # (G, M)
    best, idx = iou.max(dim=0)
    out = idx.clone()
    out[best < low] = BELOW_LOW
    out[(best >= low) & (best < high)] = BETWEEN
    if allow_low_quality:
        per_gt = iou.max(dim=1, keepdim=True).values
        # ties included; a gt whose best IoU is 0 does not claim every box
        _, cols = torch.nonzero((iou == per_gt) & (per_gt > 0), as_tuple=True)
        out[cols] = idx[cols]
    return out


def sample(labels: torch.Tensor, batch_size: int, positive_fraction: float,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of sampled positives (label >= 1) and negatives (label == 0) of one image: at most
    ``positive_fraction * batch_size`` positives, negatives filling the rest (ignored: -1)."""
    pos = torch.nonzero(labels >= 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_pos = min(int(batch_size * positive_fraction), pos.numel())
    n_neg = min(batch_size - n_pos, neg.numel())
    pos = pos[torch.randperm(pos.numel(), generator=generator)[:n_pos].to(pos.device)]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[:n_neg].to(neg.device)]
    return pos, neg


__all__ = ["BELOW_LOW", "BETWEEN", "match", "sample"]
