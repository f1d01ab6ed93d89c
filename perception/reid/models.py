"""Re-ID models composed from the library's parts: a global-pooling baseline and RMG.

Every model takes float images in [0, 1], (N, 3, H, W), and normalises them itself (so exported
models are never normalised twice). In training mode ``forward(x, labels)`` returns a ``ReidOutput`` (the
logits of every classifier and the features each triplet loss sees); in eval mode it returns the
(N, embedding_dim) descriptor used for retrieval.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from perception.reid import parts
from perception.reid.resnet import ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ReidOutput:
    """Training outputs: ``logits`` (one (N, classes) tensor per classifier), ``triplet`` (one
    (N, D) tensor per triplet loss), and the eval ``embedding``."""

    logits: list[torch.Tensor]
    triplet: list[torch.Tensor]
    embedding: torch.Tensor
    extras: dict = field(default_factory=dict)


class _Normalise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")
        return (x - self.mean) / self.std


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen zero bias before a bias-free classifier (Luo et al., 'bag of
    tricks'); the triplet loss sees the feature before the BN, the classifier the one after."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.bn(f)
        return b, self.classifier(b)


class GlobalBaseline(nn.Module):
    """Backbone -> global pooling -> BNNeck -> classifier: the plain global-pooling baseline.

    Embedding: the BN-ed pooled feature, backbone.channels[-1] wide.
    """

    def __init__(self, backbone: ResNet, num_classes: int, pool: str = "avg") -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.backbone = backbone
        self.pool = pool
        self.embedding_dim = backbone.channels[-1]
        self.neck = BNNeck(self.embedding_dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f = parts.global_pool(self.backbone(self.normalise(x)), self.pool)
        b, logits = self.neck(f)
        if not self.training:
            return b
        return ReidOutput(logits=[logits], triplet=[f], embedding=b)


class _Reduce(nn.Module):
    """RMG's per-feature reduction: 1x1 convolution (as a linear map) to ``dim`` + BN, then its own
    classifier."""

    def __init__(self, in_dim: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(in_dim, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.bn(self.reduce(f))
        return r, self.classifier(r)


class RMG(nn.Module):
    """Receptive Multi-Granularity network (RMG, specs 2.1).

    Shared trunk: stem + layer1. Each branch (one per stripe count K, paper: 2 and 3) owns copies of
    layer2-layer4 (last stride 1) and runs two paths with those weights: the original map cut into
    K stripes (uniform, or activation-balanced when ``abp``), and, when ``rp``, the receptive
    partition of the layer1 map into K parts run as one batch. Each path gives a global feature and
    K stripe features, each reduced to ``dim`` + BN with its own classifier; each branch adds one
    triplet loss on its features concatenated.

    Embedding: all reduced features concatenated, (sum over K of 2 (1 + K)) x dim wide with ``rp``
    (14 x 256 = 3584 for the paper's K = 2, 3).
    """

    def __init__(self, backbone: ResNet, num_classes: int, stripes=(2, 3), rp: bool = True, abp: bool = True,
                 dim: int = 256, pool: str = "max") -> None:
        super().__init__()
        if backbone.last_stride != 1:
            raise ValueError("RMG expects a backbone with last_stride=1 (its 24 x 8 maps at 384 x 128)")
        self.normalise = _Normalise()
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool, backbone.layer1)
        deep = nn.Sequential(backbone.layer2, backbone.layer3, backbone.layer4)
        self.stripes = tuple(int(k) for k in stripes)
        self.branches = nn.ModuleList([copy.deepcopy(deep) for _ in self.stripes])
        self.rp, self.abp, self.pool = rp, abp, pool
        channels = backbone.channels[-1]
        paths = 2 if rp else 1
        self.heads = nn.ModuleList()
        for k in self.stripes:
            self.heads.append(nn.ModuleList([_Reduce(channels, dim, num_classes) for _ in range(paths * (1 + k))]))
        self.embedding_dim = dim * sum(len(h) for h in self.heads)

    def branch_features(self, trunk: torch.Tensor, b: int) -> list[torch.Tensor]:
        """Pooled (N, C) features of branch b: original global, original stripes, then RP global
        and RP stripes."""
        k, stages = self.stripes[b], self.branches[b]
        full = stages(trunk)
        if self.abp:
            bounds = parts.activation_balanced_stripes(full, k)
        else:
            bounds = parts.uniform_stripes(full.shape[2], k, full.shape[0])
        feats = [parts.global_pool(full, self.pool)] + parts.pool_stripes(full, bounds, self.pool)
        if self.rp:
            pieces = parts.receptive_partition(trunk, k, stages)
            stripe = [parts.global_pool(p, self.pool) for p in pieces]
            whole = torch.stack(stripe).amax(0) if self.pool == "max" else torch.stack(stripe).mean(0)
            feats += [whole] + stripe
        return feats

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        trunk = self.stem(self.normalise(x))
        logits, triplet, reduced = [], [], []
        for b in range(len(self.stripes)):
            pairs = [head(f) for head, f in zip(self.heads[b], self.branch_features(trunk, b))]
            reduced += [r for r, _ in pairs]
            logits += [lg for _, lg in pairs]
            triplet.append(torch.cat([r for r, _ in pairs], 1))
        embedding = torch.cat(reduced, 1)
        if not self.training:
            return embedding
        return ReidOutput(logits=logits, triplet=triplet, embedding=embedding)
