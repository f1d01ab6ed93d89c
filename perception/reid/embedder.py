"""Re-ID model files and inference: save/load a trained recipe, embed images, evaluate a benchmark.

A model file (``format: vlnce-reid-model``) holds the weights and what is needed to rebuild the
network (recipe, backbone, width, number of training identities, input size), so
``ReidEmbedder.from_checkpoint(path)`` needs nothing else. Files load with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from perception.reid.datasets import ReidDataset, ReidItem, load_image
from perception.reid.evaluation import RankMetrics, evaluate_rank, pairwise_distance
from vlnce.errors import CheckpointError, ConfigError
from vlnce.torchio import load_blob, resolve_device, save_blob

MODEL_FORMAT = "vlnce-reid-model"


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a network: recipe and backbone names, width multiplier, classifier size, and
    the (height, width) in pixels images are resized to."""

    recipe: str
    backbone: str
    width: float
    num_classes: int
    input_size: tuple[int, int]

    def build(self) -> torch.nn.Module:
        from perception.reid.registry import build_model

        return build_model(self.recipe, self.num_classes, self.backbone, self.width)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "backbone": self.backbone, "width": self.width,
                "num_classes": self.num_classes, "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "model spec") -> "ModelSpec":
        try:
            return cls(str(d["recipe"]), str(d["backbone"]), float(d["width"]), int(d["num_classes"]),
                       (int(d["input_size"][0]), int(d["input_size"][1])))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise CheckpointError(f"{where}: malformed model spec {d!r} ({exc})") from None


def save_reid_model(path: str | Path, model: torch.nn.Module, spec: ModelSpec, extra: dict | None = None) -> Path:
    """Write weights + spec (+ ``extra`` plain values or tensors, e.g. optimizer state) atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_blob(path, {"format": MODEL_FORMAT, "spec": spec.to_dict(), "state_dict": state, **(extra or {})})


def read_reid_checkpoint(path: str | Path) -> dict:
    return load_blob(path, MODEL_FORMAT, "re-ID model", required=("spec", "state_dict"))


def model_from_blob(blob: dict, path: str | Path = "checkpoint") -> tuple[torch.nn.Module, ModelSpec]:
    spec = ModelSpec.from_dict(blob["spec"], str(path))
    model = spec.build()
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match {spec} ({str(exc).splitlines()[0]})") from None
    return model, spec


def images_to_tensor(images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """List of (H, W, 3) uint8 crops of any size -> (N, 3, h, w) float in [0, 1] at ``size``.

    Raises:
        ValueError: a crop is not (H, W, 3) uint8 or is empty, naming its index.
    """
    import torch.nn.functional as F

    out = torch.empty(len(images), 3, *size)
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
            raise ValueError(f"crop {i}: expected a non-empty (H, W, 3) uint8 image, got shape {arr.shape} "
                             f"dtype {arr.dtype}")
        # a copy: crops are often read-only views (memory-mapped datasets), which torch warns about
        t = torch.tensor(arr).permute(2, 0, 1)[None].float() / 255.0
        if tuple(t.shape[-2:]) != tuple(size):
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[i] = t[0]
    return out


def load_items(items: list[ReidItem], size: tuple[int, int]) -> torch.Tensor:
    """Decode and resize a split once: (N, 3, H, W) uint8 (re-ID splits are small at 128 x 64)."""
    out = torch.empty(len(items), 3, *size, dtype=torch.uint8)
    for i, it in enumerate(items):
        out[i] = torch.tensor(load_image(it.path, size)).permute(2, 0, 1)
    return out


class ReidEmbedder:
    """A trained re-ID model in eval mode: images -> L2-normalised embeddings.

    With ``flip_test`` (the recipe's choice unless overridden) the descriptor of an image is the sum
    of those of the image and its mirror, as RMG evaluates.
    """

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, device: str = "auto", half: bool = False,
                 flip_test: bool | None = None) -> None:
        from perception.reid.registry import RECIPES

        self.model, self.spec = model, spec
        recipe = RECIPES.get(spec.recipe)
        self.flip_test = recipe.flip_test if flip_test is None else flip_test
        self.embedding_dim = int(model.embedding_dim)
        self.to(device, half)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", half: bool = False,
                        flip_test: bool | None = None) -> "ReidEmbedder":
        model, spec = model_from_blob(read_reid_checkpoint(path), path)
        return cls(model, spec, device, half, flip_test)

    def to(self, device: str | torch.device = "auto", half: bool | None = None) -> "ReidEmbedder":
        self.device = resolve_device(device) if isinstance(device, str) else device
        if half is not None:
            self.half = bool(half) and self.device.type == "cuda"
        self.model.to(self.device).eval()
        return self

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
        """(N, 3, H, W) uint8 or float [0, 1] at the model's input size -> (N, D) float32, unit norm."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.spec.input_size:
            raise ValueError(f"expected images of {self.spec.input_size} (H, W) pixels, got {tuple(x.shape[-2:])}")
        feats = []
        for i in range(0, len(x), batch_size):
            b = x[i:i + batch_size].to(self.device)
            b = b.float() / 255.0 if b.dtype == torch.uint8 else b.float()
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
                f = self.model(b).float()
                if self.flip_test:
                    f = f + self.model(b.flip(-1)).float()
            feats.append(torch.nn.functional.normalize(f, dim=1).cpu())
        if not feats:
            return np.zeros((0, self.embedding_dim), np.float32)
        return torch.cat(feats).numpy()

    def embed(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """(H, W, 3) uint8 person crops of any size -> (N, D) unit-norm embeddings."""
        if not crops:
            return np.zeros((0, self.embedding_dim), np.float32)
        return self.embed_tensor(images_to_tensor(crops, self.spec.input_size), batch_size)


def evaluate_embedder(embedder: ReidEmbedder, data: ReidDataset, rerank: bool = False,
                      query: torch.Tensor | None = None, gallery: torch.Tensor | None = None,
                      batch_size: int = 128) -> tuple[RankMetrics, np.ndarray]:
    """Embed query and gallery (or use the decoded tensors given) and run the Market-1501 protocol.

    Returns the metrics and the (Q, G) distance matrix (Euclidean between unit-norm embeddings, or
    the k-reciprocal re-ranked one).

    Raises:
        ConfigError: an empty query or gallery split.
    """
    if not data.query or not data.gallery:
        raise ConfigError(f"{data.name}: evaluation needs query and gallery images, got "
                          f"{len(data.query)} and {len(data.gallery)}")
    size = embedder.spec.input_size
    q = embedder.embed_tensor(query if query is not None else load_items(data.query, size), batch_size)
    g = embedder.embed_tensor(gallery if gallery is not None else load_items(data.gallery, size), batch_size)
    dist = pairwise_distance(q, g)
    if rerank:
        from perception.reid.rerank import k_reciprocal_rerank

        dist = k_reciprocal_rerank(dist, pairwise_distance(q, q), pairwise_distance(g, g))
    metrics = evaluate_rank(dist, [it.pid for it in data.query], [it.pid for it in data.gallery],
                            [it.camid for it in data.query], [it.camid for it in data.gallery])
    return metrics, dist
