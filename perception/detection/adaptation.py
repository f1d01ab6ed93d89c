"""MCAR's adaptation parts (Zhao et al., "Adaptive Object Detection with Dual Multi-label
Prediction", ECCV 2020; ``../shared/specs/lidar_and_detection.md`` section 2) and the baselines.

- ``MultiLabelHead`` (section 3.1): K binary classifiers on F, trained on the source's multi-hot
  class-presence vectors (Eq. 1, ``multilabel_loss``).
- ``ConditionalDiscriminator`` (MC, section 3.2): D(F, p) = FC(f(F) (x) p), the outer product of
  pooled features and class predictions as in CDAN, behind a gradient reversal layer, trained with
  the focal adversarial loss (Eq. 3, ``focal_adversarial_loss``).
- ``ImageDiscriminator``: the unconditional image-level adversary (the paper's "uadv" ablation).
- ``consistency_loss`` (PR, section 3.3, Eqs. 4-6): symmetric KL between softmax(p) and softmax(q),
  q_k the maximum probability of class k over the detector's proposals.
- ``LocalDiscriminator`` and ``local_adversarial_loss``: the pixel-level alignment of low-level
  features of Strong-Weak DA (Saito et al., CVPR 2019, the paper's [31], whose experimental setting
  MCAR states it follows), a fully convolutional D with a least-squares loss. MCAR's text describes
  only the global adversary, so this is off unless asked for (``--local-weight``).

Label convention of the discriminators: output index 1 is "source", so D = softmax(logits)[:, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the paper's loss weights (section 4.1): lambda (adversarial), mu (multi-label), epsilon (consistency), gamma
PAPER_WEIGHTS = {"adv": 0.5, "multilabel": 0.01, "consistency": 0.1, "gamma": 5.0}


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by ``-coeff`` (Ganin & Lempitsky)."""
    return _ReverseGrad.apply(x, float(coeff))


def reversal_coefficient(progress: float, schedule: str = "constant", ramp: float = 10.0) -> float:
    """The reversal coefficient at ``progress`` (0 at the first step, 1 at the last).

    "constant": 1. "dann": Ganin & Lempitsky's 2 / (1 + exp(-ramp p)) - 1, which starts at 0 and
    passes 0.76 at p = 0.2: the adversary pushes little while the features are still random (our
    detector starts from random weights, not ImageNet's, unlike the paper's).
    """
    if schedule == "constant":
        return 1.0
    if schedule == "dann":
        p = min(max(float(progress), 0.0), 1.0)
        return 2.0 / (1.0 + math.exp(-ramp * p)) - 1.0
    raise ValueError(f"reversal schedule must be 'constant' or 'dann', got {schedule!r}")


class GradientReversal(nn.Module):
    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)


def multi_hot(labels: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """phi(c): (N, K) float, 1 where class k (labels 1..K) has a box in image i."""
    out = torch.zeros(len(labels), num_classes)
    for i, lab in enumerate(labels):
        lab = torch.as_tensor(lab, dtype=torch.int64).flatten()
        if lab.numel():
            if lab.min() < 1 or lab.max() > num_classes:
                raise ValueError(f"image {i}: labels must be in 1..{num_classes}, got {lab.tolist()}")
            out[i, lab.cpu() - 1] = 1.0
    return out


class MultiLabelHead(nn.Module):
    """[3x3 conv, ReLU] x 2 -> global average pool -> FC -> K logits (sigmoid gives p)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(feats).mean(dim=(2, 3)))


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean over images of -[y log p + (1 - y) log(1 - p)] summed over the K classes."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits), reduction="sum") / max(len(logits), 1)


class ConditionalDiscriminator(nn.Module):
    """D(F, p) = FC(flatten(h p^T)), h = GAP(ReLU(conv3x3(F))) in R^hidden: 2 logits from hidden * K
    inputs. ``forward`` applies the gradient reversal to F itself (not to p, which is detached:
    the alignment loss shapes F only, as CDAN's code)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden * num_classes, 2)
        self.in_features = hidden * num_classes

    def forward(self, feats: torch.Tensor, cond: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        h = F.relu(self.conv(grad_reverse(feats, coeff))).mean(dim=(2, 3))
        joint = torch.bmm(h.unsqueeze(2), cond.detach().to(h).unsqueeze(1)).flatten(1)
        return self.fc(joint)


class ImageDiscriminator(nn.Module):
    """The unconditional image-level adversary: FC(GAP(ReLU(conv3x3(F)))) -> 2 logits."""

    def __init__(self, channels: int, hidden: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden, 2)

    def forward(self, feats: torch.Tensor, cond: torch.Tensor | None = None, coeff: float = 1.0) -> torch.Tensor:
        return self.fc(F.relu(self.conv(grad_reverse(feats, coeff))).mean(dim=(2, 3)))


class LocalDiscriminator(nn.Module):
    """Strong-Weak DA's pixel discriminator: 1x1 convolutions C -> hidden -> hidden/2 -> 1 with ReLUs,
    behind a gradient reversal layer; (N, C, h, w) -> (N, 1, h, w) logits of "source" per location.
    It sees one location of stage 1 at a time (a receptive field of a few tens of image pixels), so
    it judges local texture and contrast, what fog changes, not layout."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, max(hidden // 2, 1), 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(max(hidden // 2, 1), 1, 1))

    def forward(self, feats: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        return self.net(grad_reverse(feats, coeff))


def local_adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Strong-Weak DA's local loss, the one D minimises: 1/2 mean (1 - D_s)^2 + 1/2 mean D_t^2 over all
    locations, D = sigmoid(logit) the probability of "source" (their code labels source 0; the loss
    is the same with the labels swapped). Least squares keep the gradient alive where D is sure."""
    d_s, d_t = torch.sigmoid(source_logits.float()), torch.sigmoid(target_logits.float())
    return 0.5 * ((1 - d_s) ** 2).mean() + 0.5 * (d_t ** 2).mean()


def focal_adversarial_loss(source_logits: torch.Tensor, target_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 3, the loss D minimises: 1/2 (L_s + L_t) with
    L_s = -mean (1 - D_s)^gamma log D_s and L_t = -mean D_t^gamma log(1 - D_t),
    D the probability of "source". gamma = 0 is plain cross-entropy; gamma > 0 down-weights images
    the discriminator already gets right, so alignment concentrates on the hard ones."""
    ls = F.log_softmax(source_logits.float(), dim=1)
    lt = F.log_softmax(target_logits.float(), dim=1)
    d_s, d_t = ls[:, 1].exp(), lt[:, 1].exp()
    loss_s = -((1 - d_s) ** gamma * ls[:, 1]).mean() if len(ls) else ls.sum()
    loss_t = -(d_t ** gamma * lt[:, 0]).mean() if len(lt) else lt.sum()
    return 0.5 * (loss_s + loss_t)


def proposal_class_max(roi_logits: list[torch.Tensor]) -> torch.Tensor:
    """q: per image the maximum over its proposals of each object class's softmax probability
    (background column dropped), (N, K)."""
    rows = []
    for logits in roi_logits:
        prob = F.softmax(logits.float(), dim=1)[:, 1:]
        rows.append(prob.max(dim=0).values if len(prob) else prob.new_zeros(prob.shape[1]))
    return torch.stack(rows)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per row 1/2 [KL(p || q) + KL(q || p)] of (N, K) probability rows."""
    lp, lq = p.clamp_min(1e-12).log(), q.clamp_min(1e-12).log()
    return 0.5 * ((p * (lp - lq)).sum(dim=1) + (q * (lq - lp)).sum(dim=1))


def consistency_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Eqs. 5-6 for one domain: the mean over images of the symmetric KL between p~ = softmax(p) and
    q~ = softmax(q), with p the multi-label probabilities (sigmoid outputs) and q from
    ``proposal_class_max``. Gradients reach both branches ("mutual learning")."""
    if len(p) == 0:
        return p.sum() * 0.0
    return symmetric_kl(F.softmax(p.float(), dim=1), F.softmax(q.float(), dim=1)).mean()


def condition(p: torch.Tensor, q: torch.Tensor | None, mode: str) -> torch.Tensor:
    """What conditions the discriminator: "p" (VOC -> Watercolor/Comic) or "softmax_pq", softmax(p + q)
    (the Cityscapes -> Foggy variant, section 4.3)."""
    if mode == "p":
        return p
    if mode == "softmax_pq":
        if q is None:
            raise ValueError("condition 'softmax_pq' needs the proposal maxima q")
        return F.softmax(p + q, dim=1)
    raise ValueError(f"unknown conditioning {mode!r}; expected 'p' or 'softmax_pq'")


__all__ = ["ConditionalDiscriminator", "GradientReversal", "ImageDiscriminator", "LocalDiscriminator", "MultiLabelHead",
           "PAPER_WEIGHTS", "condition", "consistency_loss", "focal_adversarial_loss", "grad_reverse",
           "local_adversarial_loss", "multi_hot", "multilabel_loss", "proposal_class_max", "symmetric_kl"]
