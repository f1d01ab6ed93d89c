"""The second stage: RoIAlign, a two-layer box head, (K+1)-way classification and class-specific
box refinement (Ren et al. 2015, section 3.2, with RoIAlign in place of RoI pooling).

Training samples 128 RoIs per image (ground-truth boxes appended to the proposals; foreground
IoU >= 0.5 at most a quarter, background IoU < 0.5). Inference scores every proposal, decodes one
box per class, drops scores below ``score_threshold``, runs NMS per class and keeps the best
``detections_per_image``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from perception.detection.boxes import BoxCoder, clip_boxes, remove_small
from perception.detection.ops import batched_nms, roi_align
from perception.detection.rpn import _smooth_l1
from perception.detection.sampling import match, sample


@dataclass
class RoIHeadsConfig:
    """Box-head settings.

    Attributes:
        reduce_channels: a 1x1 convolution thins F to this many channels before RoIAlign (0: off).
            Light-Head R-CNN's "thin feature map" (Li et al. 2017): with 512 channels the first
            fully connected layer alone would hold 12.8 M weights, too many for CPU training and
            for a checkpoint shipped in the repository.
        pool_size: RoIAlign output side. sampling_ratio: bilinear samples per bin and axis.
        representation: width of the two fully connected layers (1024 in torchvision).
        fg_iou: foreground threshold. batch_size, positive_fraction: RoIs sampled per image.
        score_threshold, nms_iou, detections_per_image: inference.
    """

    reduce_channels: int = 64
    pool_size: int = 7
    sampling_ratio: int = 2
    representation: int = 512
    fg_iou: float = 0.5
    batch_size: int = 128
    positive_fraction: float = 0.25
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    detections_per_image: int = 100


class RoIHeads(nn.Module):
    """[1x1 reduction] + RoIAlign + TwoMLPHead + predictor.

    ``classify(features, rois)`` returns class logits (R, K+1) and deltas (R, 4(K+1)) of (R, 5)
    RoIs; ``forward`` adds sampling and losses (training) or post-processing (inference).
    """

    def __init__(self, channels: int, stride: int, num_classes: int, cfg: RoIHeadsConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or RoIHeadsConfig()
        self.stride, self.num_classes = stride, num_classes
        rep, p = self.cfg.representation, self.cfg.pool_size
        self.reduce = None
        if self.cfg.reduce_channels:
            self.reduce = nn.Sequential(nn.Conv2d(channels, self.cfg.reduce_channels, 1), nn.ReLU(inplace=True))
            channels = self.cfg.reduce_channels
        self.fc6 = nn.Linear(channels * p * p, rep)
        self.fc7 = nn.Linear(rep, rep)
        self.cls_score = nn.Linear(rep, num_classes + 1)
        self.bbox_pred = nn.Linear(rep, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.coder = BoxCoder((10.0, 10.0, 5.0, 5.0))

    def classify(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reduce is not None:
            features = self.reduce(features)
        x = roi_align(features, rois, self.cfg.pool_size, 1.0 / self.stride, self.cfg.sampling_ratio, aligned=True)
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))
        return self.cls_score(x), self.bbox_pred(x)

    @staticmethod
    def to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
        """Per-image (P_i, 4) boxes -> (sum P_i, 5) with the image index first."""
        if not boxes:
            return torch.zeros((0, 5))
        return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])

    def sample_training_rois(self, proposals: list[torch.Tensor], targets: list[dict]):
        """(rois (R, 5), class labels (R,), regression targets (R, 4)) of the sampled RoIs."""
        cfg = self.cfg
        boxes, labels, reg = [], [], []
        for props, t in zip(proposals, targets):
            gt, gl = t["boxes"], t["labels"]
            cand = torch.cat([props, gt]) if gt.numel() else props
            m = match(gt, cand, cfg.fg_iou, cfg.fg_iou, allow_low_quality=False)
            lab = torch.zeros(len(cand), dtype=torch.int64, device=cand.device)
            fg = m >= 0
            lab[fg] = gl[m[fg]]
            pos, neg = sample(torch.where(fg, lab, torch.zeros_like(lab)), cfg.batch_size, cfg.positive_fraction)
            idx = torch.cat([pos, neg])
            boxes.append(cand[idx])
            labels.append(lab[idx])  # negatives were drawn from label 0
            ref = cand[idx]
            tgt = torch.zeros_like(ref)
            if pos.numel():
                tgt[: len(pos)] = self.coder.encode(gt[m[pos]], ref[: len(pos)])
            reg.append(tgt)
        return self.to_rois(boxes), torch.cat(labels), torch.cat(reg)

    def losses(self, logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor, reg: torch.Tensor) -> dict:
        cls = F.cross_entropy(logits, labels)
        pos = torch.nonzero(labels > 0).flatten()
        if pos.numel() == 0:
            return {"roi_cls": cls, "roi_box": deltas.sum() * 0.0}
        d = deltas.view(len(deltas), -1, 4)[pos, labels[pos]]
        box = _smooth_l1(d - reg[pos], 1.0 / 9).sum() / max(labels.numel(), 1)
        return {"roi_cls": cls, "roi_box": box}

    def postprocess(self, logits: torch.Tensor, deltas: torch.Tensor, proposals: list[torch.Tensor],
                    image_sizes: list[tuple[int, int]]) -> list[dict]:
        """Per-image ``{"boxes" (D, 4), "scores" (D,), "labels" (D,) in 1..K}``."""
        cfg = self.cfg
        probs = F.softmax(logits.float(), dim=1)
        counts = [len(p) for p in proposals]
        out = []
        for prob, delta, props, (h, w) in zip(probs.split(counts), deltas.float().split(counts), proposals,
                                              image_sizes):
            k1 = prob.shape[1]
            boxes = self.coder.decode(delta, props).view(-1, k1, 4)
            boxes = clip_boxes(boxes.reshape(-1, 4), h, w).view(-1, k1, 4)[:, 1:]
            scores = prob[:, 1:]
            labels = torch.arange(1, k1, device=prob.device).expand_as(scores)
            boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
            keep = torch.nonzero(scores > cfg.score_threshold).flatten()
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.detections_per_image]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out


__all__ = ["RoIHeads", "RoIHeadsConfig"]
