"""The ``detection`` plugin: RGB frames in, boxes, classes and scores out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.base import PerceptionPlugin, Port

#: the model shipped with the project (trained on ``vlnce detect make-data`` images; see the README)
DEFAULT_CHECKPOINT = "perception/detector_sim.pt"


def default_checkpoint() -> Path:
    from configs import config_path

    return config_path(DEFAULT_CHECKPOINT)


class DetectionPlugin(PerceptionPlugin):
    """Faster R-CNN object detection (optionally MCAR-adapted to a target domain).

    Options:
        checkpoint: a ``vlnce detect train`` model (default: the shipped one).
        score_threshold: detections below this score are dropped.
        device, half: where to run, and float16 on CUDA.

    ``classes`` lists the class names; an output class k (1..K) is ``classes[k - 1]``.
    """

    name = "detection"
    description = "object detection (Faster R-CNN; MCAR domain adaptation), feeds person boxes to reid"
    inputs = {"image": Port("image", "(H, W, 3)", "uint8", "RGB frame")}
    outputs = {"boxes": Port("boxes", "(D, 4)", "float32", "x0, y0, x1, y1 in pixels (x1, y1 exclusive)"),
               "classes": Port("classes", "(D,)", "int64", "class per box, 1..K (classes[k - 1])"),
               "scores": Port("scores", "(D,)", "float32", "confidence in [0, 1]")}

    def __init__(self, checkpoint: str | None = None, score_threshold: float = 0.5, device: str = "auto",
                 half: bool = False) -> None:
        super().__init__(device, half)
        from perception.detection.checkpoint import load_detector
        from vlnce.torchio import resolve_device

        path = self.resolve_checkpoint(checkpoint, default_checkpoint(), "vlnce detect train")
        self.checkpoint = path
        self.device = resolve_device(device)
        self.model, _ = load_detector(path, self.device)
        self.classes = tuple(self.model.cfg.classes)
        self.score_threshold = float(score_threshold)
        self.to(device)

    def to(self, device: str) -> "DetectionPlugin":
        """Move the model to ``device``; float16 (``half``) applies on CUDA only."""
        import torch

        from vlnce.torchio import resolve_device

        self.device = resolve_device(device)
        self._half = bool(self.half and self.device.type == "cuda")
        self.model.to(self.device, torch.float16 if self._half else torch.float32)
        return self

    def class_index(self, name: str) -> int:
        """The output class number (1..K) of a class name, 0 when the model does not detect it."""
        return self.classes.index(name) + 1 if name in self.classes else 0

    def infer(self, batch):
        import torch

        images = []
        for i, img in enumerate(batch["image"]):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"detection: sample {i}: image must be (H, W, 3) uint8, got shape {img.shape} "
                                 f"dtype {img.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1)
            images.append(x.half() / 255.0 if self._half else x.float() / 255.0)
        dets = self.model.predict(images)
        out = {"boxes": [], "classes": [], "scores": []}
        for d in dets:
            keep = d["scores"] >= self.score_threshold
            out["boxes"].append(d["boxes"][keep].float().cpu().numpy().astype(np.float32))
            out["classes"].append(d["labels"][keep].cpu().numpy().astype(np.int64))
            out["scores"].append(d["scores"][keep].float().cpu().numpy().astype(np.float32))
        return out


__all__ = ["DEFAULT_CHECKPOINT", "DetectionPlugin", "default_checkpoint"]
