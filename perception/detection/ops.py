"""Non-maximum suppression and RoIAlign, written in plain PyTorch.

torchvision's compiled kernels are used when ``torchvision.ops`` imports (they compute the same
thing, faster); ``use_torchvision(False)`` forces ours, which is what the tests check against
hand-computed cases. RoIAlign follows Mask R-CNN (He et al. 2017) with torchvision's
``aligned=True`` convention: a box edge at pixel coordinate x maps to feature coordinate
``x * spatial_scale - 0.5``, and each output bin averages ``sampling_ratio`` x ``sampling_ratio``
bilinear samples at the centres of its sub-cells.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from perception.detection.boxes import box_iou

try:  # the compiled kernels, when a torchvision matching torch is installed
    from torchvision import ops as _tv_ops  # type: ignore[import-not-found]

    _tv_ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except Exception:  # noqa: BLE001 - absent, or built against another torch
    _tv_ops = None

_USE_TORCHVISION = _tv_ops is not None


def use_torchvision(flag: bool) -> bool:
    """Switch torchvision's kernels on or off (when installed); returns the previous setting."""
    global _USE_TORCHVISION
    old, _USE_TORCHVISION = _USE_TORCHVISION, bool(flag) and _tv_ops is not None
    return old


def torchvision_ops_available() -> bool:
    return _tv_ops is not None


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, highest score first. A box is dropped when its IoU
    with an already kept box is strictly greater than ``iou_threshold``."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if _USE_TORCHVISION:
        return _tv_ops.nms(boxes.float(), scores.float(), float(iou_threshold))
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    # the loop is over kept boxes only; each removes its overlaps in one vector operation
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each group (class or image) independently; indices sorted by score.

    Boxes of different groups are moved apart by more than the extent of all boxes, so one NMS
    call never lets one group suppress another (torchvision's offset trick)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    offset = groups.to(boxes) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset[:, None], scores, iou_threshold)


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float, sampling_ratio: int = 2, aligned: bool = True) -> torch.Tensor:
    """Pool (K, 5) ``rois`` (batch index, x0, y0, x1, y1 in input pixels) from (N, C, H, W)
    ``features`` into (K, C, ph, pw).

    Args:
        output_size: ph, pw (7 for the box head).
        spatial_scale: feature cells per input pixel (1/16 at stride 16).
        sampling_ratio: samples per bin along each axis (> 0; fixed, so the op vectorises).
        aligned: subtract half a cell (the corrected RoIAlign); False reproduces the original,
            which also widens boxes narrower than one cell to one cell.
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (K, 5) batch index, x0, y0, x1, y1; got shape {tuple(rois.shape)}")
    if _USE_TORCHVISION:
        return _tv_ops.roi_align(features, rois.to(features.dtype), (ph, pw), spatial_scale, sampling_ratio, aligned)
    k, c = rois.shape[0], features.shape[1]
    if k == 0:
        return features.new_zeros((0, c, ph, pw))
    off = 0.5 if aligned else 0.0
    r = rois.to(features.dtype)
    x0, y0 = r[:, 1] * spatial_scale - off, r[:, 2] * spatial_scale - off
    rw, rh = r[:, 3] * spatial_scale - off - x0, r[:, 4] * spatial_scale - off - y0
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    s = sampling_ratio
    # sub-cell centres of every bin, in units of one bin: (i + (j + 0.5) / s)
    fy = ((torch.arange(ph, dtype=r.dtype, device=r.device)[:, None]
           + (torch.arange(s, dtype=r.dtype, device=r.device)[None, :] + 0.5) / s).reshape(-1))
    fx = ((torch.arange(pw, dtype=r.dtype, device=r.device)[:, None]
           + (torch.arange(s, dtype=r.dtype, device=r.device)[None, :] + 0.5) / s).reshape(-1))
    ys = y0[:, None] + fy[None, :] * (rh / ph)[:, None]  # (K, ph*s)
    xs = x0[:, None] + fx[None, :] * (rw / pw)[:, None]  # (K, pw*s)
    out = features.new_empty((k, c, ph, pw))
    h, w = features.shape[2:]
    batch = rois[:, 0].long()
    for b in torch.unique(batch).tolist():
        idx = torch.nonzero(batch == b).flatten()
        yy = ys[idx][:, :, None].expand(-1, -1, pw * s).reshape(1, -1, pw * s)  # (1, n*ph*s, pw*s)
        xx = xs[idx][:, None, :].expand(-1, ph * s, -1).reshape(1, -1, pw * s)
        # grid_sample's "border" mode clamps onto the map, which is RoIAlign's rule within one cell
        # of it; samples further out are zero, as in the reference kernel
        grid = torch.stack([(2 * xx + 1) / w - 1, (2 * yy + 1) / h - 1], dim=-1)
        v = F.grid_sample(features[b:b + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        inside = (yy >= -1.0) & (yy <= h) & (xx >= -1.0) & (xx <= w)
        v = (v * inside.to(v)).reshape(c, len(idx), ph, s, pw, s).mean(dim=(3, 5))
        out[idx] = v.permute(1, 0, 2, 3)
    return out


__all__ = ["batched_nms", "nms", "roi_align", "torchvision_ops_available", "use_torchvision"]
