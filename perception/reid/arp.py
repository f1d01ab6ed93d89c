"""Adaptive Region Pooling (ARP) and Region Pooling (RP): parameter-free stage downsamplers.

From the ARP paper (sections 3.1-3.2) and specs/reid_and_finegrained.md 1.1: instance-normalise,
average over channels, sigmoid -> keypoint confidence map C. The crop size per axis is
min(max(k * sqrt(12) * std(D) / L, dsr), 1) * L, where D is C's marginal over that axis (for
keypoints spread uniformly over a span, sqrt(12) * std is the span, so k = 1 crops about the object).
The crop sits where a Gaussian kernel of the crop size correlates best with C ('valid' positions
only) and is resampled bilinearly to dsr * (H, W). k = 0 is RP (a fixed-size crop); k large
crops the whole map, which is exactly 2x2 average pooling for dsr 0.5 and even sizes.

The location is chosen without gradient; gradients reach the input only inside the crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def confidence_map(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) keypoint confidence: sigmoid of the channel mean of the
    per-channel standardised map (ARP Eq. 1-3)."""
    return torch.sigmoid(F.instance_norm(x, eps=1e-5).mean(1))


def adaptive_rate(marginal: torch.Tensor, k: float, dsr: float) -> torch.Tensor:
    """(N, L) distributions over positions 0..L-1 -> (N,) rates min(max(k sqrt(12) std / L, dsr), 1)."""
    length = marginal.shape[1]
    pos = torch.arange(length, dtype=marginal.dtype, device=marginal.device)
    mean = (marginal * pos).sum(1)
    std = ((marginal * (pos - mean[:, None]) ** 2).sum(1)).clamp_min(0).sqrt()
    return (k * math.sqrt(12.0) * std / length).clamp(min=dsr, max=1.0)


def _gaussian(n: int, device, dtype) -> torch.Tensor:
    sigma = max(n / 4.0, 1e-3)
    t = torch.arange(n, device=device, dtype=dtype) - (n - 1) / 2.0
    return torch.exp(-0.5 * (t / sigma) ** 2)


def crop_windows(x: torch.Tensor, k: float, dsr=(0.5, 0.5)) -> torch.Tensor:
    """(N, 4) integer crop windows (top, left, height, width) chosen by ARP for each sample."""
    n, _, h, w = x.shape
    with torch.no_grad():
        conf = confidence_map(x.float())
        total = conf.sum((1, 2)).clamp_min(1e-12)
        rate_h = adaptive_rate(conf.sum(2) / total[:, None], k, dsr[0])
        rate_w = adaptive_rate(conf.sum(1) / total[:, None], k, dsr[1])
        out = torch.empty(n, 4, dtype=torch.long)
        for i in range(n):
            # rates lie in [dsr, 1], so the crop is at least the output size and at most the map
            ch, cw = round(h * rate_h[i].item()), round(w * rate_w[i].item())
            kernel = torch.outer(_gaussian(ch, conf.device, conf.dtype), _gaussian(cw, conf.device, conf.dtype))
            score = F.conv2d(conf[i][None, None], kernel[None, None])[0, 0]
            idx = int(torch.argmax(score.flatten()).item())  # first maximum: deterministic
            out[i] = torch.tensor([idx // score.shape[1], idx % score.shape[1], ch, cw])
    return out


def crop_resample(x: torch.Tensor, windows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample each sample's window (top, left, h, w) to ``size`` with one batched
    ``grid_sample`` (align_corners=False), which equals crop + ``F.interpolate`` for windows at least
    as large as the output."""
    n, _, h, w = x.shape
    win = windows.to(device=x.device, dtype=x.dtype)
    top, left, ch, cw = win.unbind(1)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ARP(nn.Module):
    """Adaptive Region Pooling: (N, C, H, W) -> (N, C, H * dsr_h, W * dsr_w); no parameters.

    Args:
        k: trade-off coefficient (paper: 0.7 in Conv4, 1 in Conv3; 0 gives RP).
        dsr: target downsampling rates (paper: 0.5, 0.5, like a stride-2 operation).
    """

    def __init__(self, k: float = 0.7, dsr=(0.5, 0.5)) -> None:
        super().__init__()
        if k < 0:
            raise ValueError(f"ARP k must be >= 0, got {k}")
        if not all(0 < r <= 1 for r in dsr):
            raise ValueError(f"ARP dsr must be in (0, 1], got {dsr}")
        self.k = float(k)
        self.dsr = (float(dsr[0]), float(dsr[1]))

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return round(h * self.dsr[0]), round(w * self.dsr[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ARP expects (N, C, H, W), got shape {tuple(x.shape)}")
        windows = crop_windows(x, self.k, self.dsr)
        return crop_resample(x, windows, self.output_size(*x.shape[-2:]))

    def extra_repr(self) -> str:
        return f"k={self.k}, dsr={self.dsr}"


class RegionPool(ARP):
    """RP: the fixed dsr-sized crop at the best-scoring location (ARP with k = 0)."""

    def __init__(self, dsr=(0.5, 0.5)) -> None:
        super().__init__(k=0.0, dsr=dsr)
