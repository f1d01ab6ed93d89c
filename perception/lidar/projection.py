"""Spherical projection of a point cloud to a range image, and back (SemanticKITTI conventions).

For a point (x, y, z) at range r, column u = (1 - atan2(y, x) / pi) / 2 * W and row
v = (1 - (asin(z / r) + |fov_down|) / fov) * H, both floored and clamped to the image (the
authors' code; the paper's Eq. 1 prints f_up where |f_down| belongs). Where several points land
in one pixel the nearest wins, decided by a stable sort so the result never depends on scatter
order. Points that are NaN, infinite or at the origin are dropped and get label 0 back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from perception.lidar.labels import SensorConfig

log = logging.getLogger(__name__)


@dataclass
class Projection:
    """A projected scan. Image fields are (H, W[, C]); per-point fields are (N,).

    Attributes:
        range: metres, -1 where empty.
        xyz: (H, W, 3) metres, -1 where empty.
        remission: -1 where empty.
        idx: index of the point that owns the pixel, -1 where empty.
        mask: bool, the pixel holds a point.
        px, py: each point's column and row, -1 for dropped points.
        unproj_range: each point's range (0 for dropped points).
        kept: bool, the point was projectable (finite, not at the origin).
        out_of_fov: number of kept points whose elevation lies outside every beam (clamped to the
            border rows, as the reference does).
    """

    range: np.ndarray
    xyz: np.ndarray
    remission: np.ndarray
    idx: np.ndarray
    mask: np.ndarray
    px: np.ndarray
    py: np.ndarray
    unproj_range: np.ndarray
    kept: np.ndarray
    out_of_fov: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.range.shape

    def label_image(self, point_labels: np.ndarray, fill: int = 0) -> np.ndarray:
        """(H, W) int64 labels of the owning points, ``fill`` where empty."""
        out = np.full(self.range.shape, fill, dtype=np.int64)
        out[self.mask] = np.asarray(point_labels)[self.idx[self.mask]]
        return out

    def unproject(self, label_image: np.ndarray, fill: int = 0) -> np.ndarray:
        """Per-point labels read from a (H, W) label image at each point's pixel (dropped: ``fill``).

        Points hidden behind a nearer one inherit its pixel's label; ``knn_labels`` refines them.
        """
        out = np.full(self.px.shape, fill, dtype=np.asarray(label_image).dtype)
        k = self.kept
        out[k] = np.asarray(label_image)[self.py[k], self.px[k]]
        return out

    def channels(self) -> np.ndarray:
        """(5, H, W) float32 raw input channels: range, x, y, z, remission (-1 where empty)."""
        return np.concatenate([self.range[None], np.moveaxis(self.xyz, -1, 0), self.remission[None]], axis=0)

    def network_input(self, sensor: SensorConfig) -> np.ndarray:
        """(5, H, W) float32: (range, x, y, z, remission) normalised, exactly 0 at empty pixels."""
        img = self.channels()
        mean = np.asarray(sensor.means, np.float32)[:, None, None]
        std = np.asarray(sensor.stds, np.float32)[:, None, None]
        return ((img - mean) / std * self.mask[None]).astype(np.float32)


def project(points: np.ndarray, sensor: SensorConfig, warn: bool = True) -> Projection:
    """Project (N, 3) or (N, 4) points (x, y, z[, remission]) onto a ``sensor.height x sensor.width`` image.

    Raises:
        ValueError: ``points`` does not have shape (N, 3) or (N, 4).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] not in (3, 4):
        raise ValueError(f"points must have shape (N, 3) or (N, 4) (x, y, z[, remission]), got {pts.shape}")
    pts = pts.astype(np.float32, copy=False)
    H, W = int(sensor.height), int(sensor.width)
    n = pts.shape[0]
    xyz = pts[:, :3]
    rem = pts[:, 3] if pts.shape[1] == 4 else np.zeros(n, np.float32)
    depth = np.linalg.norm(xyz.astype(np.float64), axis=1)
    kept = np.isfinite(pts).all(axis=1) & (depth > 0)
    if warn and n and not kept.all():
        log.warning("dropped %d of %d points that are NaN, infinite or at the origin", int((~kept).sum()), n)
    fov_up, fov_down = np.radians(sensor.fov_up_deg), np.radians(sensor.fov_down_deg)
    fov = fov_up - fov_down
    k = np.flatnonzero(kept)
    d = depth[k]
    yaw = np.arctan2(xyz[k, 1].astype(np.float64), xyz[k, 0])
    pitch = np.arcsin(np.clip(xyz[k, 2] / d, -1.0, 1.0))
    u = 0.5 * (1.0 - yaw / np.pi) * W
    v = (1.0 - (pitch - fov_down) / fov) * H
    out_of_fov = int(((v < 0) | (v >= H)).sum())
    cols = np.clip(np.floor(u), 0, W - 1).astype(np.int32)
    rows = np.clip(np.floor(v), 0, H - 1).astype(np.int32)
    # nearest point wins each pixel: sort by (pixel, range, point index), keep the first per pixel
    pix = rows.astype(np.int64) * W + cols
    order = np.lexsort((k, d, pix))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pix[order][1:] != pix[order][:-1]
    win = order[first]
    proj_range = np.full((H, W), -1.0, np.float32)
    proj_xyz = np.full((H, W, 3), -1.0, np.float32)
    proj_rem = np.full((H, W), -1.0, np.float32)
    proj_idx = np.full((H, W), -1, np.int32)
    r, c = rows[win], cols[win]
    proj_range[r, c] = d[win]
    proj_xyz[r, c] = xyz[k[win]]
    proj_rem[r, c] = rem[k[win]]
    proj_idx[r, c] = k[win]
    px = np.full(n, -1, np.int32)
    py = np.full(n, -1, np.int32)
    px[k], py[k] = cols, rows
    unproj = np.zeros(n, np.float32)
    unproj[k] = d
    return Projection(range=proj_range, xyz=proj_xyz, remission=proj_rem, idx=proj_idx, mask=proj_idx >= 0,
                      px=px, py=py, unproj_range=unproj, kept=kept, out_of_fov=out_of_fov)
