"""AIR-Net: appearance and interaction experts (specs/reid_and_finegrained.md section 4).

The trunk (stem to layer3) is shared; layer4 (last stride 1) is duplicated into an appearance
expert F_a and an interaction expert F_i. Three descriptors: A_1 = GMP(F_a), A_2 = GMP(F_i) and the
interaction descriptor I = W_v^T (X u) of attention-based pooling on F_i, kept separate rather than
fused back into the map (the paper's point, Eq. 4). Each has a BN neck and its own classifier; the
triplet losses (cosine, margin 0.2) see the pre-BN descriptors.

Not built: the GC blocks of the ResNet-50 variant and the IBN-ResNet-50 of the main model (neither
changes the head this module implements).

Shapes at 384 x 192 with ResNet-50: trunk (N, 1024, 24, 12); X_a, X_i (N, 2048, 24, 12); embedding
(N, 6144).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from perception.reid import parts
from perception.reid.models import BNNeck, ReidOutput, _Normalise
from perception.reid.resnet import ResNet


class AIRNet(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int, normalize: str = "none") -> None:
        super().__init__()
        if backbone.last_stride != 1:
            raise ValueError("AIR-Net changes conv4.1's stride to 1: build the backbone with last_stride=1")
        self.normalise = _Normalise()
        self.trunk = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                                   backbone.layer1, backbone.layer2, backbone.layer3)
        self.appearance = backbone.layer4
        self.interaction = copy.deepcopy(backbone.layer4)  # untied copy
        c = backbone.channels[-1]
        self.attention = parts.InteractionAttentionPool(c, normalize)
        self.necks = nn.ModuleList([BNNeck(c, num_classes) for _ in range(3)])
        self.embedding_dim = 3 * c

    def descriptors(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[A_1, A_2, I], each (N, C), before the BN necks."""
        x0 = self.trunk(self.normalise(x))
        xa, xi = self.appearance(x0), self.interaction(x0)
        return [parts.global_pool(xa, "max"), parts.global_pool(xi, "max"), self.attention(xi)]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        feats = self.descriptors(x)
        pairs = [neck(f) for neck, f in zip(self.necks, feats)]
        embedding = torch.cat([b for b, _ in pairs], 1)
        if not self.training:
            return embedding
        return ReidOutput(logits=[lg for _, lg in pairs], triplet=feats, embedding=embedding)
