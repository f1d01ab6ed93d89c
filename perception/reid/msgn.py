"""MSGN: multiple scale and granularity network with Adaptive Region Pooling (specs section 1.2).

Low-level trunk: stem, layer1 and layer2 (its downsampling optionally ARP with k = 1, the
fine-grained setting). Two untied high-level extractors from layer3: the global view branch
(strided layer3 and layer4) and the local view branch, whose layer3 downsamples by ARP (k = 0.7)
and whose layer4 keeps full resolution. ARP replaces a stage's downsampling by setting its first
block to stride 1 and resampling the stage input to half size, so the stage runs on the adaptive
crop. Each branch is average-pooled; the concatenation goes through one FC to the embedding, then a
BN neck and the classifier (CE, plus a batch-hard triplet on the FC output for re-ID).

Shapes at 224 x 224 with ResNet-50: layer2 (N, 512, 28, 28); GVB (N, 2048, 7, 7); LVB
(N, 2048, 14, 14); embedding (N, dim).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from perception.reid import parts
from perception.reid.arp import ARP
from perception.reid.models import BNNeck, ReidOutput, _Normalise
from perception.reid.resnet import ResNet


def set_stage_stride(stage: nn.Sequential, stride: int) -> nn.Sequential:
    """Set the stride of a bottleneck stage's first block (3 x 3 conv and 1 x 1 shortcut), in place."""
    first = stage[0]
    first.conv2.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)
    return stage


def arp_stage(stage: nn.Sequential, k: float) -> nn.Sequential:
    """A copy of ``stage`` whose stride-2 downsampling is replaced by ARP(k) on its input."""
    return nn.Sequential(ARP(k), set_stage_stride(copy.deepcopy(stage), 1))


class MSGN(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int, lvb_k: float = 0.7, conv3_arp: float | None = None,
                 dim: int = 512) -> None:
        super().__init__()
        self.normalise = _Normalise()
        layer2 = arp_stage(backbone.layer2, conv3_arp) if conv3_arp is not None else backbone.layer2
        self.trunk = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool, backbone.layer1, layer2)
        self.global_view = nn.Sequential(copy.deepcopy(backbone.layer3),
                                         set_stage_stride(copy.deepcopy(backbone.layer4), 2))
        self.local_view = nn.Sequential(arp_stage(backbone.layer3, lvb_k),
                                        set_stage_stride(copy.deepcopy(backbone.layer4), 1))
        c = backbone.channels[-1]
        self.fc = nn.Linear(2 * c, dim)
        self.neck = BNNeck(dim, num_classes)
        self.embedding_dim = dim

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        low = self.trunk(self.normalise(x))
        f = self.fc(torch.cat([parts.global_pool(self.global_view(low), "avg"),
                               parts.global_pool(self.local_view(low), "avg")], 1))
        b, logits = self.neck(f)
        if not self.training:
            return b
        return ReidOutput(logits=[logits], triplet=[f], embedding=b)
