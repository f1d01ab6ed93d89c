"""Spatially-Adaptive Convolution (SqueezeSegV3, section 4) in its four variants, plus plain conv.

W(X0)[m, n, p, q, i, j] = W_hat[m, n, i, j] * A(X0)[., ., p, q, ., .]  (Eq. 4), where the attention
A is one 7x7 convolution of the raw input's x, y, z channels followed by a sigmoid. The variant's
letters name the axes A keeps (I = input channels, S = spatial, K = kernel taps):

    S    A: 1 x S x S x 1 x 1     Y = conv(W_hat, X * A)
    IS   A: I x S x S x 1 x 1     Y = conv(W_hat, X * A)
    SK   A: 1 x S x S x K x K     Y = conv1x1(W_hat as O x (I K K), im2col(X) * A)
    ISK  A: I x S x S x K x K     as SK, with I K K attention channels

For S and IS the attention multiplies the input pixel; for SK and ISK it multiplies each tap of
the output pixel's window, which is Eq. 4 exactly. With A = 1 every variant is the plain 3x3 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("none", "S", "IS", "SK", "ISK")


class SAC(nn.Module):
    """A ``kernel x kernel`` convolution whose weights are modulated per pixel by the raw point cloud.

    Args:
        in_channels, out_channels: I and O.
        variant: one of ``VARIANTS``; "none" is a plain convolution (the ablation baseline).
        kernel: K (odd), stride 1, "same" padding.
        guide_channels: channels of the guide image the attention is computed from (x, y, z = 3).
        attention_kernel: size of the attention convolution (7 in the paper, Table 4).

    Shapes:
        x: (N, I, H, W) features; guide: (N, guide_channels, H, W) -> (N, O, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, variant: str = "ISK", kernel: int = 3,
                 guide_channels: int = 3, attention_kernel: int = 7, bias: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"SAC variant must be one of {VARIANTS}, got {variant!r}")
        if kernel % 2 != 1 or attention_kernel % 2 != 1:
            raise ValueError(f"kernel sizes must be odd, got {kernel} and {attention_kernel}")
        self.variant, self.kernel = variant, kernel
        self.in_channels, self.out_channels = in_channels, out_channels
        att_channels = {"none": 0, "S": 1, "IS": in_channels, "SK": kernel * kernel,
                        "ISK": in_channels * kernel * kernel}[variant]
        self.unfolds = variant in ("SK", "ISK")
        if self.unfolds:
            # the K x K conv as a 1x1 conv over im2col channels ordered (c, kh, kw), like F.unfold
            self.conv = nn.Conv2d(in_channels * kernel * kernel, out_channels, 1, bias=bias)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)
        self.attention_conv = None
        if att_channels:
            self.attention_conv = nn.Sequential(
                nn.Conv2d(guide_channels, att_channels, attention_kernel, padding=attention_kernel // 2),
                nn.BatchNorm2d(att_channels))

    def attention(self, guide: torch.Tensor) -> torch.Tensor | None:
        """A(X0) in (0, 1): (N, a, H, W) with a = 1, I, K*K or I*K*K; None for the plain conv."""
        return None if self.attention_conv is None else torch.sigmoid(self.attention_conv(guide))

    def weight_3x3(self) -> torch.Tensor:
        """W_hat as an (O, I, K, K) convolution weight, whatever the implementation's layout."""
        return self.conv.weight.reshape(self.out_channels, self.in_channels, self.kernel, self.kernel)

    def apply_attention(self, x: torch.Tensor, att: torch.Tensor | None) -> torch.Tensor:
        """Convolve ``x`` with the weights modulated by a given attention map (see ``attention``)."""
        if not self.unfolds:
            return self.conv(x if att is None else x * att)
        n, c, h, w = x.shape
        k2 = self.kernel * self.kernel
        cols = F.unfold(x, self.kernel, padding=self.kernel // 2).view(n, c, k2, h, w)
        if att is not None:
            cols = cols * att.view(n, -1, k2, h, w)  # SK: (n, 1, k2, ...) broadcasts over channels
        return self.conv(cols.view(n, c * k2, h, w))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.apply_attention(x, self.attention(guide))
