"""SqueezeSegV3 (Xu et al., ECCV 2020): a RangeNet-style encoder whose blocks start with SAC-ISK,
without RangeNet's last two downsamplings, a three-upsampling decoder and five prediction heads
for the multi-layer loss. Downsampling is in width only, so the 64 beams are never merged.

Layer by layer (channels at ``width=1``; input (N, 5, H, W), output stride 8 in width):

    stem   3x3 conv 5 -> 32, BN, LeakyReLU(0.1)                                    32 x H x W
    enc1-3 n_i blocks(C) then a 3x3 conv stride (1, 2) C -> 2C, BN, LeakyReLU      64/128/256 at W/2, W/4, W/8
    enc4-5 n_i blocks(256), no downsampling                                         256 x H x W/8
    dec5-4 3x3 conv + residual (1x1, 3x3)                                           256 x H x W/8
    dec3-1 transposed conv (1, 4) stride (1, 2) + residual, plus the encoder skip   128/64/32 at W/4, W/2, W
    heads  3x3 conv on dec1, 1x1 convs on dec2..dec5 -> classes

A block is SAC(C -> C) + BN + ReLU, 3x3 conv + BN + ReLU, plus the block's input (the authors'
code); ``conv="none"`` swaps SAC for a plain 3x3 convolution, the ablation baseline. Blocks per
stage: SSGV3-21 (1, 1, 2, 2, 1), SSGV3-53 (1, 2, 8, 8, 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from perception.lidar.sac import SAC, VARIANTS
from vlnce.errors import ConfigError

DEPTHS = {21: (1, 1, 2, 2, 1), 53: (1, 2, 8, 8, 4)}
BASE_CHANNELS = (32, 64, 128, 256, 256, 256)  # stem, then the five stage outputs


@dataclass
class SSGV3Config:
    """Model configuration, stored in checkpoints.

    Attributes:
        depth: 21 or 53.
        num_classes: output classes including the ignored class 0.
        conv: SAC variant of each block's first convolution ("ISK" in the paper, "none" = plain).
        width: channel multiplier (1.0 = the paper; smaller for CPU).
        in_channels: input channels (5: range, x, y, z, remission).
        guide_channels: which input channels feed the attention ((1, 2, 3) = normalised x, y, z).
        dropout: Dropout2d probability (0.01 in the authors' code).
        bn_momentum: BatchNorm momentum of the conv layers (0.01 in the authors' code).
        detach_skips: detach encoder skips before the decoder adds them (the authors' code does).
    """

    depth: int = 21
    num_classes: int = 20
    conv: str = "ISK"
    width: float = 1.0
    in_channels: int = 5
    guide_channels: list[int] = field(default_factory=lambda: [1, 2, 3])
    dropout: float = 0.01
    bn_momentum: float = 0.01
    detach_skips: bool = True

    def validate(self) -> "SSGV3Config":
        if self.depth not in DEPTHS:
            raise ConfigError(f"model.depth must be one of {sorted(DEPTHS)}, got {self.depth}")
        if self.conv not in VARIANTS:
            raise ConfigError(f"model.conv must be one of {VARIANTS}, got {self.conv!r}")
        if not (0 < self.width <= 4):
            raise ConfigError(f"model.width must be in (0, 4], got {self.width}")
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if not self.guide_channels or not all(0 <= c < self.in_channels for c in self.guide_channels):
            raise ConfigError(f"model.guide_channels must index the {self.in_channels} input channels, "
                              f"got {list(self.guide_channels)}")
        return self

    def channels(self) -> list[int]:
        return [max(4, int(round(c * self.width / 4)) * 4) for c in BASE_CHANNELS]

    @classmethod
    def from_dict(cls, d: dict) -> "SSGV3Config":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model field(s) {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d).validate()

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(cin: int, cout: int, k: int, stride=1, momentum: float = 0.01, act: str = "leaky") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout, momentum=momentum)]
    layers.append(nn.LeakyReLU(0.1) if act == "leaky" else nn.ReLU())
    return nn.Sequential(*layers)


class SACBlock(nn.Module):
    """Adaptive 3x3 conv + BN + ReLU, 3x3 conv + BN + ReLU, plus the input: (N, C, H, W) -> same."""

    def __init__(self, channels: int, conv: str, guide_channels: int, momentum: float) -> None:
        super().__init__()
        self.sac = SAC(channels, channels, conv, guide_channels=guide_channels)
        self.bn1 = nn.BatchNorm2d(channels, momentum=momentum)
        self.conv2 = conv_bn(channels, channels, 3, momentum=momentum, act="relu")

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.sac(x, guide)))
        return self.conv2(h) + x


class EncoderStage(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, downsample: bool, cfg: SSGV3Config) -> None:
        super().__init__()
        g = len(cfg.guide_channels)
        self.blocks = nn.ModuleList(SACBlock(cin, cfg.conv, g, cfg.bn_momentum) for _ in range(blocks))
        self.down = conv_bn(cin, cout, 3, stride=(1, 2) if downsample else 1, momentum=cfg.bn_momentum)
        self.dropout = nn.Dropout2d(cfg.dropout)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, guide)
        return self.dropout(self.down(x))


class Residual(nn.Module):
    """Darknet residual: 1x1 conv C -> M, 3x3 conv M -> C, plus the input."""

    def __init__(self, channels: int, mid: int, momentum: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, mid, 1, momentum=momentum), conv_bn(mid, channels, 3, momentum=momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class DecoderStage(nn.Module):
    def __init__(self, cin: int, cout: int, upsample: bool, residual_mid: int, cfg: SSGV3Config) -> None:
        super().__init__()
        m = cfg.bn_momentum
        if upsample:
            self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, (1, 4), stride=(1, 2), padding=(0, 1), bias=False),
                                    nn.BatchNorm2d(cout, momentum=m), nn.LeakyReLU(0.1))
        else:
            self.up = conv_bn(cin, cout, 3, momentum=m)
        self.res = Residual(cout, residual_mid, m)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.res(self.up(x))
        return x if skip is None else x + skip


class SqueezeSegV3(nn.Module):
    """SqueezeSegV3 segmentation network.

    Shapes:
        input (N, in_channels, H, W) normalised range image, W divisible by 8.
        ``forward`` returns logits (N, C, H, W) in eval mode and, in training mode, the list of
        five logit maps at widths W, W/2, W/4, W/8, W/8 for the multi-layer loss.
    """

    def __init__(self, cfg: SSGV3Config) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        c = cfg.channels()
        m = cfg.bn_momentum
        depths = DEPTHS[cfg.depth]
        self.register_buffer("guide_index", torch.tensor(list(cfg.guide_channels), dtype=torch.long), persistent=False)
        self.stem = conv_bn(cfg.in_channels, c[0], 3, momentum=m)
        self.encoder = nn.ModuleList(
            EncoderStage(c[i], c[i + 1], depths[i], downsample=i < 3, cfg=cfg) for i in range(5))
        self.decoder = nn.ModuleList([
            DecoderStage(c[5], c[5], False, c[5], cfg),        # dec5, W/8
            DecoderStage(c[5], c[4], False, c[5], cfg),        # dec4, W/8
            DecoderStage(c[4], c[2], True, c[4], cfg),         # dec3 -> W/4, + enc3 input
            DecoderStage(c[2], c[1], True, c[2], cfg),         # dec2 -> W/2, + enc2 input
            DecoderStage(c[1], c[0], True, c[1], cfg),         # dec1 -> W,   + enc1 input
        ])
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.heads = nn.ModuleList([
            nn.Conv2d(c[0], cfg.num_classes, 3, padding=1),    # full resolution (the one used at inference)
            nn.Conv2d(c[1], cfg.num_classes, 1),
            nn.Conv2d(c[2], cfg.num_classes, 1),
            nn.Conv2d(c[4], cfg.num_classes, 1),
            nn.Conv2d(c[5], cfg.num_classes, 1),
        ])

    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected input (N, {self.cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % 8:
            raise ValueError(f"input width must be divisible by 8 (three width-halvings), got {x.shape[-1]}")
        guide = x.index_select(1, self.guide_index)
        feat = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            if i < 3:
                skips.append(feat.detach() if self.cfg.detach_skips else feat)
            if guide.shape[-1] != feat.shape[-1]:
                guide = F.interpolate(guide, size=feat.shape[-2:], mode="bilinear", align_corners=True)
            feat = stage(feat, guide)
        outs = []
        for i, stage in enumerate(self.decoder):
            skip = skips[4 - i] if i >= 2 else None
            feat = stage(feat, skip)
            outs.append(feat)
        # outs: dec5, dec4 (W/8), dec3 (W/4), dec2 (W/2), dec1 (W)
        full = self.heads[0](self.dropout(outs[4]))
        if not self.training:
            return full
        return [full, self.heads[1](self.dropout(outs[3])), self.heads[2](self.dropout(outs[2])),
                self.heads[3](self.dropout(outs[1])), self.heads[4](self.dropout(outs[0]))]


def ssgv3_21(num_classes: int = 20, **kwargs) -> SqueezeSegV3:
    """SqueezeSegV3-21 (blocks 1, 1, 2, 2, 1)."""
    return SqueezeSegV3(SSGV3Config(depth=21, num_classes=num_classes, **kwargs))


def ssgv3_53(num_classes: int = 20, **kwargs) -> SqueezeSegV3:
    """SqueezeSegV3-53 (blocks 1, 2, 8, 8, 4)."""
    return SqueezeSegV3(SSGV3Config(depth=53, num_classes=num_classes, **kwargs))


def multilayer_loss(outputs: list[torch.Tensor], target: torch.Tensor, weight: torch.Tensor,
                    ignore_index: int = 0) -> torch.Tensor:
    """Eq. 5: weighted cross-entropy summed over the five heads, labels downsampled in width by
    nearest neighbour, the ignored class masked out.

    Args:
        outputs: logits (N, C, H, W_i) per head.
        target: (N, H, W) int64 training ids.
        weight: (C,) class weights (0 for ignored classes).
    """
    total = outputs[0].new_zeros(())
    t = target[:, None].float()
    for logits in outputs:
        y = target if logits.shape[-1] == target.shape[-1] else \
            F.interpolate(t, size=logits.shape[-2:], mode="nearest")[:, 0].long()
        if bool((y != ignore_index).any()):
            total = total + F.cross_entropy(logits, y, weight=weight, ignore_index=ignore_index)
    return total
