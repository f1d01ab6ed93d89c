"""Instruction and visual encoders behind small, explicit interfaces.

Visual encoders map a batch of images to a spatial feature grid, (N, C, h, w); the policies
mean-pool it (Seq2Seq's RGB), flatten it (Seq2Seq's depth) or attend over its h*w cells (CMA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vlnce.errors import ConfigError
from vlnce.registry import Registry

RGB_ENCODERS = Registry("rgb encoder")
DEPTH_ENCODERS = Registry("depth encoder")


class InstructionEncoder(nn.Module):
    """Word embeddings and an (optionally bidirectional) LSTM over the instruction tokens.

    Args:
        vocab_size: number of token ids (0 is padding).
        embed_dim: embedding size (50 for GloVe 6B 50d).
        hidden: LSTM hidden size per direction.
        bidirectional: BiLSTM (CMA) or LSTM (Seq2Seq).
        pretrained: optional (vocab_size, embed_dim) vectors, kept frozen as in VLN-CE.

    ``forward(tokens)`` with tokens (B, L) int64 returns ``(states, final, mask)``: all hidden
    states (B, L', D), the final state (B, D) and the valid-token mask (B, L') bool, where
    D = hidden * directions and L' is the longest instruction in the batch.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 50, hidden: int = 128, bidirectional: bool = False,
                 pretrained: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        if pretrained is not None:
            if tuple(pretrained.shape) != (vocab_size, embed_dim):
                raise ConfigError(f"pretrained embeddings have shape {tuple(pretrained.shape)}, "
                                  f"expected ({vocab_size}, {embed_dim})")
            self.embedding.weight.data.copy_(pretrained)
            self.embedding.weight.requires_grad_(False)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.output_size = hidden * (2 if bidirectional else 1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = (tokens != 0).sum(1).clamp(min=1)  # an empty instruction still gets one (padding) step
        longest = int(lengths.max())
        tokens = tokens[:, :longest]
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=longest)
        final = torch.cat([h[-2], h[-1]], 1) if self.lstm.bidirectional else h[-1]
        mask = torch.arange(longest, device=tokens.device)[None] < lengths[:, None]
        return states, final, mask


class ConvEncoder(nn.Module):
    """A small CNN trained end to end: stride-2 convolutions down to a 4x4 grid,
    (N, S, S, C) -> (N, out_channels, 4, 4) for S = 4 * 2^k (16, 32, 64, 128, ...).

    The default for both RGB (uint8, scaled to [0, 1]) and depth (already in [0, 1]). Its 16 cells
    match VLN-CE's depth ResNet grid.
    """

    def __init__(self, in_channels: int, out_channels: int = 128, size: int = 32, width: int = 32) -> None:
        super().__init__()
        layers = int(round(math.log2(size / 4))) if size >= 8 else 0
        if size < 8 or 4 * 2 ** layers != size:
            raise ConfigError(f"the cnn encoder needs square images of 4 * 2^k pixels (8, 16, 32, 64, ...), got {size}")
        chans = [in_channels] + [min(width * 2 ** i, 2 * width) for i in range(layers - 1)] + [out_channels]
        mods = []
        for i in range(layers):
            k = 5 if i == 0 else 3
            mods += [nn.Conv2d(chans[i], chans[i + 1], k, 2, k // 2), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*mods)
        self.out_channels = out_channels
        self.cells = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        x = x.float() / 255.0 if images.dtype == torch.uint8 else x.float()
        return self.net(x)


class PretrainedRGBEncoder(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 features with a trainable 1x1 projection to ``out_channels``."""

    def __init__(self, out_channels: int = 128, size: int = 128) -> None:
        super().__init__()
        from agents.models.efficientnet_lite import efficientnet_lite0

        self.backbone = efficientnet_lite0(pretrained=True).requires_grad_(False).eval()
        self.project = nn.Conv2d(self.backbone.out_channels, out_channels, 1)
        self.out_channels = out_channels
        self.size = size
        self.cells = (-(-size // self.backbone.stride)) ** 2

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics stay ImageNet's
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            f = self.backbone.features(x)
        return F.relu(self.project(f))


RGB_ENCODERS.add("cnn", lambda out_channels, size: ConvEncoder(3, out_channels, size))
RGB_ENCODERS.add("efficientnet_lite0", lambda out_channels, size: PretrainedRGBEncoder(out_channels, size))
DEPTH_ENCODERS.add("cnn", lambda out_channels, size: ConvEncoder(1, out_channels, size))


def attend(values: torch.Tensor, keys: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention of VLN-CE eq. 5: alpha_i = softmax_i(k_i . q / sqrt(d_q) + b_i).

    Args:
        values: (B, N, Dv) the features x_i. keys: (B, N, Dq), already projected (W_K x_i).
        query: (B, Dq). mask: (B, N) bool, False for cells to ignore (instruction padding).
        bias: (B, N) added to the logits, a log-prior over the cells (0 without: the paper's).

    Returns:
        The attended feature (B, Dv) and the weights alpha (B, N), which sum to one.
    """
    logits = torch.einsum("bnd,bd->bn", keys, query) / (query.shape[-1] ** 0.5)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    alpha = torch.softmax(logits, dim=1)
    return torch.einsum("bn,bnd->bd", alpha, values), alpha


class Attention(nn.Module):
    """``Attn({x_i}, q)`` with a learned key projection W_K: (Dv -> Dq)."""

    def __init__(self, value_dim: int, query_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(value_dim, query_dim, bias=False)

    def forward(self, values, query, mask=None, keys=None, bias=None):
        """``keys``: W_K values computed beforehand (values that stay fixed over an episode)."""
        return attend(values, self.key(values) if keys is None else keys, query, mask, bias)
