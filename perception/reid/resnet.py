"""ResNet backbones for re-ID, written in the project (torchvision-style bottlenecks: the stride sits
on the 3x3 convolution), with a configurable last stride and a width multiplier for CPU work.

No weights are fetched: ``weights`` is a local state-dict file loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlnce.errors import CheckpointError


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels), residual; BN after each convolution."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, norm_layer=nn.BatchNorm2d) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = norm_layer(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=False), norm_layer(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool) and four bottleneck stages.

    Args:
        layers: blocks per stage ((3, 4, 6, 3) is ResNet-50).
        width: channel multiplier (1.0 gives 256-512-1024-2048 stage outputs).
        last_stride: stride of ``layer4`` (1 keeps 1/16 resolution, the re-ID convention).
        norm_layer: normalisation module built from a channel count (BatchNorm2d; the detector
            passes a GroupNorm, whose statistics do not mix the images of a small batch).

    Shapes: (N, 3, H, W) -> (N, channels[3], H/16, W/16) with last stride 1.
    """

    def __init__(self, layers=(3, 4, 6, 3), width: float = 1.0, last_stride: int = 1, norm_layer=nn.BatchNorm2d) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        base = max(8, int(round(64 * width)))
        self.layers = tuple(layers)
        self.last_stride = last_stride
        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = base
        self.channels = []
        for i, (blocks, stride) in enumerate(zip(self.layers, (1, 2, 2, last_stride)), start=1):
            planes = base * 2 ** (i - 1)
            stage = [Bottleneck(in_ch, planes, stride, norm_layer)]
            in_ch = planes * Bottleneck.expansion
            stage += [Bottleneck(in_ch, planes, norm_layer=norm_layer) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            self.channels.append(in_ch)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each block starts as identity: stable from scratch

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x


def receptive_field(model: ResNet, upto: str = "layer4") -> tuple[int, int]:
    """(receptive field, jump) in input pixels of one output unit after stage ``upto`` (RMG Eq. 5):
    r += (k - 1) * jump, jump *= s along the convolution path (residual shortcuts never widen it)."""
    r, jump = 1, 1
    for k, s in ((7, 2), (3, 2)):
        r, jump = r + (k - 1) * jump, jump * s
    for i in range(1, 5):
        for block in getattr(model, f"layer{i}"):
            r, jump = r + 2 * jump, jump * block.conv2.stride[0]
        if f"layer{i}" == upto:
            break
    return r, jump


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (weights_only=True); name what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights {path} do not exist (nothing is downloaded; pass a local file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"cannot read backbone weights {path}: {exc}") from exc
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"backbone weights {path} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _build(layers, width: float, last_stride: int, weights) -> ResNet:
    model = ResNet(layers, width, last_stride)
    if weights:
        load_backbone_weights(model, weights)
    return model


def resnet50(width: float = 1.0, last_stride: int = 1, weights=None) -> ResNet:
    return _build((3, 4, 6, 3), width, last_stride, weights)


def resnet101(width: float = 1.0, last_stride: int = 1, weights=None) -> ResNet:
    return _build((3, 4, 23, 3), width, last_stride, weights)


def resnet26(width: float = 1.0, last_stride: int = 1, weights=None) -> ResNet:
    """Two bottlenecks per stage: the CPU-sized member of the family."""
    return _build((2, 2, 2, 2), width, last_stride, weights)
