"""Inference: a trained SqueezeSegV3 plus its label config, from points to per-point labels.

Checkpoints are torch files read with ``weights_only=True`` holding the model config, the label
config (classes, sensor, input statistics) and the weights, so a checkpoint is all a user needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from perception.lidar.knn import KNNConfig, knn_labels
from perception.lidar.labels import LabelConfig
from perception.lidar.projection import Projection, project
from perception.lidar.ssgv3 import SqueezeSegV3, SSGV3Config
from vlnce.errors import CheckpointError, ConfigError
from vlnce.torchio import resolve_device

CHECKPOINT_FORMAT = "vlnce-lidarseg-v1"


def save_segmenter(path: str | Path, model: SqueezeSegV3, labels: LabelConfig, extra: dict | None = None,
                   half: bool = False) -> Path:
    from vlnce.torchio import save_blob

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    blob = {"format": CHECKPOINT_FORMAT, "model": model.cfg.to_dict(), "labels": labels.to_dict(),
            "state_dict": state, **(extra or {})}
    return save_blob(path, blob)


def read_segmenter_checkpoint(path: str | Path) -> dict:
    from vlnce.torchio import load_blob

    return load_blob(path, CHECKPOINT_FORMAT, "LiDAR segmentation checkpoint", ("model", "labels", "state_dict"))


def model_from_blob(blob: dict, path: str | Path = "checkpoint") -> tuple[SqueezeSegV3, LabelConfig]:
    try:
        cfg = SSGV3Config.from_dict(dict(blob["model"]))
        labels = LabelConfig.from_dict(dict(blob["labels"]), f"{path}: labels")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: bad config: {exc}") from None
    if cfg.num_classes != labels.num_classes:
        raise CheckpointError(f"checkpoint {path}: the model has {cfg.num_classes} classes but its label config "
                              f"{labels.num_classes}")
    if labels.sensor is None:
        raise CheckpointError(f"checkpoint {path}: its label config has no sensor block")
    model = SqueezeSegV3(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not match an SSGV3-{cfg.depth} with its config: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    return model, labels


class LidarSegmenter:
    """Per-point semantic labels for raw point clouds.

    Args:
        model: a SqueezeSegV3 (put in eval mode here).
        labels: its label config (sensor block required).
        device: "auto", "cpu", "cuda", ...
        half: float16 inference (CUDA only; ignored on CPU).
        knn: kNN post-processing parameters, or None to read labels at each point's pixel.
    """

    def __init__(self, model: SqueezeSegV3, labels: LabelConfig, device: str = "auto", half: bool = False,
                 knn: KNNConfig | None = None) -> None:
        if labels.sensor is None:
            raise ConfigError("the label config has no sensor block; the segmenter cannot project scans")
        self.labels, self.sensor = labels, labels.sensor
        self.knn = knn.validate() if knn is not None else None
        self.model = model.eval()
        self.half = False
        self.to(device, half)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", half: bool = False,
                        knn: KNNConfig | None = None) -> "LidarSegmenter":
        model, labels = model_from_blob(read_segmenter_checkpoint(path), path)
        return cls(model, labels, device, half, knn)

    def to(self, device: str | torch.device = "auto", half: bool | None = None) -> "LidarSegmenter":
        self.device = resolve_device(device) if isinstance(device, str) else device
        if half is not None:
            self.half = bool(half) and self.device.type == "cuda"
        self.model.to(self.device)
        self.model.half() if self.half else self.model.float()
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        return self

    @torch.inference_mode()
    def predict_images(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 5, H, W) normalised inputs -> (B, H, W) int64 training ids."""
        x = torch.as_tensor(inputs)
        if x.ndim != 4 or x.shape[1] != self.model.cfg.in_channels:
            raise ValueError(f"expected inputs (B, {self.model.cfg.in_channels}, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).argmax(dim=1).cpu().numpy()

    def project(self, points: np.ndarray) -> Projection:
        return project(points, self.sensor)

    def labels_from_image(self, proj: Projection, label_image: np.ndarray) -> np.ndarray:
        if self.knn is not None:
            return knn_labels(proj, label_image, self.labels.num_classes, self.knn)
        return proj.unproject(label_image).astype(np.int64)

    def predict_batch(self, clouds: list[np.ndarray]) -> list[np.ndarray]:
        """Per-point training ids (N_i,) for each (N_i, 4) cloud, in one batched forward pass.

        Points that are NaN, infinite or at the origin get 0 (unlabeled); an empty cloud gives an
        empty array.
        """
        projs = [self.project(c) for c in clouds]
        if not projs:
            return []
        images = self.predict_images(np.stack([p.network_input(self.sensor) for p in projs]))
        return [self.labels_from_image(p, img) for p, img in zip(projs, images)]

    def predict(self, points: np.ndarray) -> np.ndarray:
        """Per-point training ids (N,) of one (N, 4) cloud (x, y, z, remission)."""
        return self.predict_batch([points])[0]
