"""The ``reid`` plugin: embeddings of person boxes and identities that stay the same across frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.base import PerceptionPlugin, Port
from perception.reid.embedder import ReidEmbedder
from perception.reid.gallery import IdentityGallery

#: the model shipped with the project (trained on ``vlnce reid make-data`` people; see the README)
DEFAULT_CHECKPOINT = "perception/reid_sim.pt"


def default_checkpoint() -> Path:
    from configs import config_path

    return config_path(DEFAULT_CHECKPOINT)


def crop_boxes(image: np.ndarray, boxes: np.ndarray, min_size: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of (M, 4) boxes (x0, y0, x1, y1 in pixels, x1/y1 exclusive) clipped to the image, and
    the mask of boxes kept (at least ``min_size`` pixels each way after clipping).

    Raises:
        ValueError: the image is not (H, W, 3) uint8 or the boxes are not (M, 4) finite numbers.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape} dtype {img.dtype}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (M, 4) x0, y0, x1, y1, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite")
    h, w = img.shape[:2]
    crops, keep = [], np.zeros(len(b), bool)
    for i, (x0, y0, x1, y1) in enumerate(b):
        x0, x1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
        y0, y1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
        if x1 - x0 >= min_size and y1 - y0 >= min_size:
            crops.append(img[y0:y1, x0:x1])
            keep[i] = True
    return crops, keep


class ReidPlugin(PerceptionPlugin):
    """Person re-identification with a gallery that tracks identities across frames.

    Each call is one frame per sample, in time order; the gallery persists between calls
    (``reset()`` forgets everyone, e.g. at an episode start).

    Options:
        checkpoint: a ``vlnce reid train`` model (default: the shipped simulated-people model).
        threshold, momentum, max_age: the gallery's (``perception.reid.gallery.IdentityGallery``). The
            default 0.55 is the shipped model's equal-error point on cross-camera pairs of the
            simulated test split (8 % of same-person pairs missed, 5 % of other pairs accepted);
            another model needs its own.
        device, half: where to run, and float16 on CUDA.
    """

    name = "reid"
    description = "person re-identification embeddings and cross-frame identities (RMG/AIR/... recipes)"
    inputs = {"image": Port("image", "(H, W, 3)", "uint8", "RGB frame"),
              "boxes": Port("boxes", "(M, 4)", "float32", "person boxes x0, y0, x1, y1 in pixels (x1, y1 exclusive)")}
    outputs = {"embeddings": Port("embeddings", "(M, D)", "float32", "unit-norm re-ID embedding per box"),
               "identities": Port("identities", "(M,)", "int64", "gallery identity per box (from 1; 0 = box too small)")}

    def __init__(self, checkpoint: str | None = None, threshold: float = 0.55, momentum: float = 0.8,
                 max_age: int = 0, device: str = "auto", half: bool = False) -> None:
        super().__init__(device, half)
        path = self.resolve_checkpoint(checkpoint, default_checkpoint(), "vlnce reid train")
        self.checkpoint = path
        self.embedder = ReidEmbedder.from_checkpoint(path, device, half)
        self.embedding_dim = self.embedder.embedding_dim
        self.gallery = IdentityGallery(threshold=threshold, momentum=momentum, max_age=max_age)

    def reset(self) -> None:
        self.gallery.reset()

    def to(self, device: str) -> "ReidPlugin":
        self.embedder.to(device)
        return self

    def infer(self, batch):
        out = {"embeddings": [], "identities": []}
        for i, (image, boxes) in enumerate(zip(batch["image"], batch["boxes"])):
            try:
                crops, keep = crop_boxes(image, boxes)
            except ValueError as exc:
                raise ValueError(f"reid: sample {i}: {exc}") from None
            emb = np.zeros((len(keep), self.embedding_dim), np.float32)
            ids = np.zeros(len(keep), np.int64)
            if crops:
                emb[keep] = self.embedder.embed(crops)
                ids[keep] = self.gallery.assign(emb[keep])[0]
            out["embeddings"].append(emb)
            out["identities"].append(ids)
        return out
