"""The ``lidar_seg`` plugin: per-point semantic labels for LiDAR clouds with SqueezeSegV3."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.base import PerceptionPlugin, Port
from perception.lidar.knn import KNNConfig
from perception.lidar.segmenter import LidarSegmenter

#: the checkpoint shipped with the project (trained on simulated indoor houses; see the README)
DEFAULT_CHECKPOINT = "perception/lidar_seg_indoor.pt"


def default_checkpoint() -> Path:
    from configs import config_path

    return config_path(DEFAULT_CHECKPOINT)


class LidarSegmentationPlugin(PerceptionPlugin):
    """SqueezeSegV3 LiDAR semantic segmentation.

    Options:
        checkpoint: a ``vlnce lidar train`` checkpoint (default: the shipped indoor model).
        knn: refine back-projected labels with kNN voting (RangeNet++ post-processing).
        device, half: where to run, and float16 on CUDA.
    """

    name = "lidar_seg"
    description = "SqueezeSegV3 LiDAR semantic segmentation (spatially-adaptive convolution)"
    inputs = {"points": Port("pointcloud", "(N, 4)", "float32", "x, y, z (m, sensor frame), remission in [0, 1]")}
    outputs = {"labels": Port("point_labels", "(N,)", "int32", "training class id per point (0 = unlabeled)")}

    def __init__(self, checkpoint: str | None = None, knn: bool = False, device: str = "auto", half: bool = False) -> None:
        super().__init__(device, half)
        path = self.resolve_checkpoint(checkpoint, default_checkpoint(), "vlnce lidar train")
        self.checkpoint = path
        self.segmenter = LidarSegmenter.from_checkpoint(path, device, half, KNNConfig() if knn else None)
        self.classes = list(self.segmenter.labels.names)
        self.colors = self.segmenter.labels.colors
        self._lut = self.segmenter.labels.lut()  # built once: ground_truth_labels runs every frame

    def lidar_config(self) -> dict:
        """The simulator LiDAR matching the model's sensor (beams, columns, field of view)."""
        s = self.segmenter.sensor
        return {"beams": int(s.height), "columns": int(s.width), "fov_up_deg": float(s.fov_up_deg),
                "fov_down_deg": float(s.fov_down_deg)}

    def ground_truth_labels(self, raw: np.ndarray) -> np.ndarray:
        """Training ids of raw semantic ids (the simulator's categories for the indoor model)."""
        return self._lut[np.asarray(raw).astype(np.int64) & 0xFFFF]

    def to(self, device: str) -> "LidarSegmentationPlugin":
        self.segmenter.to(device)
        return self

    def infer(self, batch):
        clouds = []
        for i, pts in enumerate(batch["points"]):
            a = np.asarray(pts, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] not in (3, 4):
                raise ValueError(f"lidar_seg: points[{i}] must have shape (N, 3) or (N, 4), got {a.shape}")
            clouds.append(a)
        return {"labels": [lab.astype(np.int32) for lab in self.segmenter.predict_batch(clouds)]}
