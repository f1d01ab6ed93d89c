"""Partitions, paths and pooling shared by the re-ID recipes.

Registry names keep the papers' clashing acronyms apart (specs/reid_and_finegrained.md): RMG's
Receptive Partition is ``receptive_partition``, its Activation Balanced Pooling is
``activation_balanced_stripes``; AIR-Net's Attention-Based Pooling is
``interaction_attention_pool``; ARP's Region Pooling lives in ``arp.py``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def receptive_partition(x: torch.Tensor, n_s: int, stages: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """RMG's receptive partition: split (N, C, H, W) into n_s horizontal parts, run them through
    ``stages`` as one batch (weights shared with the original path), and return the n_s output maps.
    No stripe sees beyond its border (zero padding at the cut). When the height does not divide by
    n_s (e.g. 32 rows at 128 x 64 input, n_s = 3) the first parts get one row more and each part
    runs on its own.
    """
    if not 1 <= n_s <= x.shape[2]:
        raise ValueError(f"cannot cut {x.shape[2]} rows into n_s={n_s} parts")
    if x.shape[2] % n_s:
        return [stages(piece) for piece in torch.tensor_split(x, n_s, dim=2)]
    parts = torch.cat(torch.chunk(x, n_s, dim=2), dim=0)
    return list(torch.chunk(stages(parts), n_s, dim=0))


def uniform_stripes(height: int, n: int, batch: int = 1) -> torch.Tensor:
    """(batch, n + 1) row boundaries of n equal stripes (the first ones one row taller when H % n)."""
    bounds = [round(i * height / n) for i in range(n + 1)]
    return torch.tensor(bounds).repeat(batch, 1)


def activation_balanced_stripes(x: torch.Tensor, n: int) -> torch.Tensor:
    """RMG's ABP boundaries: (N, C, H, W) -> (N, n + 1) rows with about C / n channel maxima each.

    Each channel votes for the row of its spatial maximum (first index on ties); boundary k ends
    the stripe in which the cumulative count first reaches ceil(k C / n) (Eq. 8-10, with the garbled
    target read as in the spec). Every stripe keeps at least one row.
    """
    nb, c, h, w = x.shape
    if not 1 <= n <= h:
        raise ValueError(f"cannot cut {h} rows into {n} stripes")
    with torch.no_grad():
        rows = x.flatten(2).argmax(2) // w  # (N, C)
        counts = torch.zeros(nb, h, dtype=torch.long, device=x.device).scatter_add_(1, rows, torch.ones_like(rows))
        cum = counts.cumsum(1)
        targets = torch.tensor([math.ceil(k * c / n) for k in range(1, n)], device=x.device, dtype=cum.dtype)
        inner = torch.searchsorted(cum, targets.expand(nb, -1).contiguous()) + 1
        bounds = torch.cat([torch.zeros(nb, 1, dtype=torch.long, device=x.device), inner.long(),
                            torch.full((nb, 1), h, dtype=torch.long, device=x.device)], 1).cpu()
    for k in range(1, n):  # at least one row per stripe
        bounds[:, k] = torch.maximum(bounds[:, k], bounds[:, k - 1] + 1)
    for k in range(n - 1, 0, -1):
        bounds[:, k] = torch.minimum(bounds[:, k], bounds[:, k + 1] - 1)
    return bounds


def pool_stripes(x: torch.Tensor, bounds: torch.Tensor, mode: str = "max") -> list[torch.Tensor]:
    """Pool (N, C, H, W) over the rows [bounds[:, k], bounds[:, k+1]) of each sample -> n x (N, C)."""
    h = x.shape[2]
    rows = torch.arange(h, device=x.device)
    b = bounds.to(x.device)
    out = []
    for k in range(b.shape[1] - 1):
        mask = ((rows[None] >= b[:, k, None]) & (rows[None] < b[:, k + 1, None]))[:, None, :, None]
        if mode == "max":
            out.append(x.masked_fill(~mask, float("-inf")).amax((2, 3)))
        elif mode == "avg":
            out.append((x * mask).sum((2, 3)) / (mask.sum((2, 3)) * x.shape[3]).clamp_min(1))
        else:
            raise ValueError(f"stripe pooling mode must be 'max' or 'avg', got {mode!r}")
    return out


def global_pool(x: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """(N, C, H, W) -> (N, C): GMP ('max') or GAP ('avg')."""
    if mode == "max":
        return x.amax((2, 3))
    if mode == "avg":
        return x.mean((2, 3))
    raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")


class InteractionAttentionPool(nn.Module):
    """AIR-Net's attention-based pooling (Eq. 3): u = X^T W_u (one weight per position),
    I = W_v^T (X u). C^2 + C parameters, no biases; ``normalize='softmax'`` turns u into a
    distribution over positions (the GC-block form), 'none' keeps the paper's plain product."""

    def __init__(self, channels: int, normalize: str = "none") -> None:
        super().__init__()
        if normalize not in ("none", "softmax"):
            raise ValueError(f"normalize must be 'none' or 'softmax', got {normalize!r}")
        self.w_u = nn.Linear(channels, 1, bias=False)
        self.w_v = nn.Linear(channels, channels, bias=False)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (N, C, HW)
        u = self.w_u(flat.transpose(1, 2)).squeeze(2)  # (N, HW)
        if self.normalize == "softmax":
            u = torch.softmax(u, dim=1)
        z = torch.bmm(flat, u.unsqueeze(2)).squeeze(2)  # (N, C)
        return self.w_v(z)


class VoxelAttention(nn.Module):
    """ADTC's voxel attention: v = S (softmax over positions of the channel mean) outer
    C (SE gate, 2 c d parameters, no biases); returns v * f."""

    def __init__(self, channels: int, hidden: int = 800) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def weights(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = f.shape
        s = torch.softmax(f.mean(1).flatten(1), dim=1).view(n, 1, h, w)
        c = torch.sigmoid(self.fc2(F.relu(self.fc1(f.mean((2, 3))))))[:, :, None, None]
        return s, c

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        s, c = self.weights(f)
        return f * s * c
