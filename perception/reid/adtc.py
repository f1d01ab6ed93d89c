"""ADTC's feature extractor: backbone, voxel attention, GMP and a BN neck (specs section 5.1).

g = BN(GMP(v * f)) is both the clustering feature and the retrieval embedding. The classifier on g
serves the supervised source-domain initialisation; the unsupervised rounds train g with the
triplet loss only (pseudo-labels are re-permuted every round; ``vlnce reid train --pseudo-labels``).
"""

from __future__ import annotations

import torch
from torch import nn

from perception.reid import parts
from perception.reid.models import ReidOutput, _Normalise
from perception.reid.resnet import ResNet


class ADTCNet(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int, hidden: int = 800) -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.backbone = backbone
        c = backbone.channels[-1]
        self.attention = parts.VoxelAttention(c, hidden)
        self.bn = nn.BatchNorm1d(c)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        self.embedding_dim = c

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        g = self.bn(parts.global_pool(self.attention(self.backbone(self.normalise(x))), "max"))
        if not self.training:
            return g
        return ReidOutput(logits=[self.classifier(g)], triplet=[g], embedding=g)
