"""API-Net: attentive pairwise interaction (specs/reid_and_finegrained.md section 3).

A training-only head on a pooled backbone feature. For each image of a P x K batch, its intra
partner is the nearest same-class image and its inter partner the nearest other-class image
(Euclidean on detached features), giving 2 N pairs. A mutual vector x_m = f_m([x_1, x_2]) gates
both features (g_i = sigmoid(x_m * x_i)); each image is seen through its own gate (self) and its
partner's (other), residually (x + x * g). A shared classifier scores the four attentive features;
the rank loss asks that the self view score its true class at least eps above the other view.
At test the head is unloaded: the embedding is the plain GAP feature and the logits W x + b.

Shapes (ResNet-101, 448 x 448, 30 x 4 batch): features (120, 2048); 240 pairs; 4 x (240, C) logits.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.reid import parts
from perception.reid.models import ReidOutput, _Normalise
from perception.reid.resnet import ResNet


def construct_pairs(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, partners), each (2 N,) indices: every image with its nearest same-label image
    (not itself), then with its nearest other-label image (Intra(S) & Inter(S), Table 4).
    Ties go to the lower index.

    Raises:
        ValueError: an image has no same-label partner or no other-label image in the batch.
    """
    with torch.no_grad():
        dist = torch.cdist(features.float(), features.float())
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        intra_ok, inter_ok = same & ~eye, ~same
        if not intra_ok.any(1).all() or not inter_ok.any(1).all():
            raise ValueError("API-Net pairs need at least two images per class and two classes in every batch "
                             "(use P x K sampling with K >= 2)")
        intra = dist.masked_fill(~intra_ok, float("inf")).argmin(1)
        inter = dist.masked_fill(~inter_ok, float("inf")).argmin(1)
    idx = torch.arange(len(labels), device=labels.device)
    return torch.cat([idx, idx]), torch.cat([intra, inter])


class APINet(nn.Module):
    def __init__(self, backbone: ResNet, num_classes: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.backbone = backbone
        c = backbone.channels[-1]
        # f_m = FC(2C -> 512) - Dropout - FC(512 -> C), no activation, as the official code
        self.mutual = nn.Sequential(nn.Linear(2 * c, hidden), nn.Dropout(dropout), nn.Linear(hidden, c))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes)
        self.embedding_dim = c

    def interact(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eq. 1-6: (x1_self, x2_self, x1_other, x2_other)."""
        xm = self.mutual(torch.cat([x1, x2], 1))
        g1, g2 = torch.sigmoid(xm * x1), torch.sigmoid(xm * x2)
        return x1 + x1 * g1, x2 + x2 * g2, x1 + x1 * g2, x2 + x2 * g1

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        f = parts.global_pool(self.backbone(self.normalise(x)), "avg")
        if not self.training:
            return f
        if labels is None:
            raise ValueError("API-Net's training forward needs the batch labels to build its pairs")
        a, p = construct_pairs(f, labels)
        x1s, x2s, x1o, x2o = self.interact(f[a], f[p])
        y1, y2 = labels[a], labels[p]
        logits = [self.classifier(self.dropout(v)) for v in (x1s, x2s, x1o, x2o)]
        prob = [torch.softmax(lg, 1) for lg in logits]
        p_self = torch.cat([prob[0].gather(1, y1[:, None]), prob[1].gather(1, y2[:, None])]).squeeze(1)
        p_other = torch.cat([prob[2].gather(1, y1[:, None]), prob[3].gather(1, y2[:, None])]).squeeze(1)
        return ReidOutput(logits=[], triplet=[], embedding=f,
                          extras={"pair_logits": list(zip(logits, (y1, y2, y1, y2))), "api_scores": (p_self, p_other)})
