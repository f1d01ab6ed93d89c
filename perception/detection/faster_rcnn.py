"""Faster R-CNN (Ren et al. 2015) on a ResNet C4 feature map, in plain PyTorch.

The layout of MCAR's base detector (``../shared/specs/lidar_and_detection.md`` section 2.2): one
feature map F at stride 16 (ResNet's ``layer3``, "res4") feeds the RPN, the RoI head and, for
adaptation, the multi-label classifier and the domain discriminator. The backbone is the
project's ResNet with GroupNorm (no ImageNet weights can be had here, and batches of one source
and one target image are too small for BatchNorm's statistics); the box head is torchvision's
TwoMLPHead on 7x7 RoIAlign features instead of the paper's res5 head, which is too slow for CPU
training.

Images are float (N, 3, H, W) in [0, 1] (any H, W: padded to a multiple of 16 inside);
``predict`` returns per-image ``{"boxes" (D, 4) x0, y0, x1, y1 pixels, "scores" (D,), "labels" (D,)
in 1..K}`` with label k naming ``classes[k - 1]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from perception.detection.roi_heads import RoIHeads, RoIHeadsConfig
from perception.detection.rpn import RegionProposalNetwork, RPNConfig
from perception.reid.resnet import ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 16
BACKBONES = {"resnet26": (2, 2, 2), "resnet50": (3, 4, 6), "resnet101": (3, 4, 23)}


@dataclass
class DetectorConfig:
    """What ``build_faster_rcnn`` builds.

    Attributes:
        classes: object class names; label k (1..K) is ``classes[k - 1]``, 0 is background.
        backbone: "resnet26", "resnet50" or "resnet101" (stem and stages 1-3, stride 16).
        width: channel multiplier of the backbone (1.0: 1024 channels at res4).
        groups: GroupNorm groups per normalisation layer.
        rpn, roi: the two stages' settings.
    """

    classes: tuple[str, ...] = ()
    backbone: str = "resnet26"
    width: float = 0.5
    groups: int = 8
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        d = dict(d)
        rpn = RPNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("rpn", {}).items()})
        roi = RoIHeadsConfig(**d.pop("roi", {}))
        d["classes"] = tuple(d.get("classes", ()))
        return cls(rpn=rpn, roi=roi, **d)


class C4Backbone(nn.Module):
    """ResNet stem and stages 1-3: (N, 3, H, W) -> (N, C, H/16, W/16).

    ``local_channels``: channels of stage 1's output (stride 4), the low-level features a local
    (pixel-level) domain discriminator aligns (``forward_pyramid``)."""

    def __init__(self, name: str, width: float, groups: int) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown detector backbone {name!r}; expected one of {sorted(BACKBONES)}")

        def norm(ch: int) -> nn.GroupNorm:
            return nn.GroupNorm(min(groups, ch), ch)

        net = ResNet(BACKBONES[name] + (1,), width, last_stride=2, norm_layer=norm)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.channels = net.channels[2]
        self.local_channels = net.channels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[1]

    def forward_pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stage-1 features at stride 4, stage-3 features at stride 16)."""
        low = self.layer1(self.stem(x))
        return low, self.layer3(self.layer2(low))


@dataclass
class TrainOutput:
    """What a training pass returns: the detection losses (empty for unlabelled images), F, per image
    the class logits (R_i, K+1) of the RoIs the head saw (for MCAR's consistency term), and the
    backbone's stage-1 features (for local alignment)."""

    losses: dict
    features: torch.Tensor
    roi_logits: list[torch.Tensor]
    local_features: torch.Tensor


class FasterRCNN(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        if not cfg.classes:
            raise ValueError("a detector needs at least one class name")
        self.cfg = cfg
        self.num_classes = len(cfg.classes)
        self.backbone = C4Backbone(cfg.backbone, cfg.width, cfg.groups)
        self.rpn = RegionProposalNetwork(self.backbone.channels, STRIDE, cfg.rpn)
        self.roi_heads = RoIHeads(self.backbone.channels, STRIDE, self.num_classes, cfg.roi)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_channels(self) -> int:
        return self.backbone.channels

    def batch(self, images: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad (bottom, right) images to one (N, 3, H', W') tensor with H', W'
        multiples of 16; returns it and the original (h, w) of each image."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = [images]
        sizes = []
        for i, im in enumerate(images):
            if im.ndim != 3 or im.shape[0] != 3 or not im.is_floating_point():
                raise ValueError(f"image {i}: expected float (3, H, W) in [0, 1], got dtype {im.dtype} shape "
                                 f"{tuple(im.shape)}")
            sizes.append((int(im.shape[1]), int(im.shape[2])))
        hp = -(-max(h for h, _ in sizes) // STRIDE) * STRIDE
        wp = -(-max(w for _, w in sizes) // STRIDE) * STRIDE
        x = torch.stack([F.pad((im.to(self.mean) - self.mean[0]) / self.std[0], (0, wp - im.shape[2], 0, hp - im.shape[1]))
                         for im in images])
        return x, sizes

    def forward_labelled(self, images, targets: list[dict]) -> TrainOutput:
        """Training pass on labelled images: ``targets[i] = {"boxes" (M, 4), "labels" (M,) in 1..K}``."""
        x, sizes = self.batch(images)
        low, feats = self.backbone.forward_pyramid(x)
        proposals, losses = self.rpn(feats, sizes, targets)
        rois, labels, reg = self.roi_heads.sample_training_rois(proposals, targets)
        logits, deltas = self.roi_heads.classify(feats, rois.to(feats))
        losses.update(self.roi_heads.losses(logits, deltas, labels, reg))
        counts = torch.bincount(rois[:, 0].long(), minlength=len(sizes)).tolist()
        return TrainOutput(losses, feats, list(logits.split(counts)), low)

    def forward_unlabelled(self, images, max_rois: int = 128) -> TrainOutput:
        """Pass on unlabelled images (target domain): no detection loss; ``roi_logits`` are the class
        logits of each image's top ``max_rois`` proposals."""
        x, sizes = self.batch(images)
        low, feats = self.backbone.forward_pyramid(x)
        proposals, _ = self.rpn(feats, sizes)
        proposals = [p[:max_rois] for p in proposals]
        logits, _ = self.roi_heads.classify(feats, RoIHeads.to_rois(proposals).to(feats))
        return TrainOutput({}, feats, list(logits.split([len(p) for p in proposals])), low)

    @torch.no_grad()
    def predict(self, images) -> list[dict]:
        """Detections of each image (see the module docstring); the model must be in eval mode."""
        x, sizes = self.batch(images)
        feats = self.backbone(x)
        proposals, _ = self.rpn(feats, sizes)
        logits, deltas = self.roi_heads.classify(feats, RoIHeads.to_rois(proposals).to(feats))
        return self.roi_heads.postprocess(logits, deltas, proposals, sizes)


def build_faster_rcnn(classes, backbone: str = "resnet26", width: float = 0.5, **kwargs) -> FasterRCNN:
    """A Faster R-CNN for ``classes`` (names), randomly initialised."""
    return FasterRCNN(DetectorConfig(classes=tuple(classes), backbone=backbone, width=width, **kwargs))


__all__ = ["BACKBONES", "C4Backbone", "DetectorConfig", "FasterRCNN", "STRIDE", "TrainOutput", "build_faster_rcnn"]
