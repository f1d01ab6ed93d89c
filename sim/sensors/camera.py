"""Pinhole camera rendered by ray casting: RGB, planar depth, semantic and instance images.

Camera frame as in Habitat: x right, y up, the camera looks along -z. Pixels are square; the
vertical field of view follows from the horizontal one and the aspect ratio.
"""

from __future__ import annotations

import math

import numpy as np

from sim.sensors.raycast import RayCaster
from sim.sensors.shading import SceneTables, shade
from vlnce.errors import ConfigError

MODALITIES = ("rgb", "depth", "semantic", "instance")


class PinholeCamera:
    """Ray directions of a pinhole camera, and rendering from them.

    Args:
        width_px, height_px: image size, pixels (> 0).
        hfov_rad: horizontal field of view in radians, in (0, pi).
    """

    def __init__(self, width_px: int, height_px: int, hfov_rad: float) -> None:
        if int(width_px) != width_px or int(height_px) != height_px or width_px <= 0 or height_px <= 0:
            raise ConfigError(f"camera resolution must be positive integers, got {width_px}x{height_px}")
        if not (0.0 < hfov_rad < math.pi):
            raise ConfigError(f"camera hfov must be in (0, 180) degrees, got {math.degrees(hfov_rad):.3g}")
        self.width_px, self.height_px, self.hfov_rad = int(width_px), int(height_px), float(hfov_rad)
        self.focal_px = (self.width_px / 2.0) / math.tan(self.hfov_rad / 2.0)
        u = (np.arange(self.width_px) + 0.5 - self.width_px / 2.0) / self.focal_px
        v = -(np.arange(self.height_px) + 0.5 - self.height_px / 2.0) / self.focal_px
        uu, vv = np.meshgrid(u, v)
        dirs = np.stack([uu, vv, -np.ones_like(uu)], axis=-1).reshape(-1, 3)
        norm = np.linalg.norm(dirs, axis=1, keepdims=True)
        self.dirs_cam = (dirs / norm).astype(np.float32)  # (H*W, 3) unit, camera frame
        # planar depth = t * cos(angle to the optical axis) for unit directions
        self.z_factor = (1.0 / norm[:, 0]).astype(np.float32)
        self._origins: np.ndarray | None = None

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels, for CameraInfo-style consumers."""
        return (self.focal_px, self.focal_px, self.width_px / 2.0, self.height_px / 2.0)

    def render(
        self,
        caster: RayCaster,
        tables: SceneTables,
        position: np.ndarray,
        rotation: np.ndarray,
        modalities: tuple[str, ...] = ("rgb", "depth", "semantic"),
    ) -> dict[str, np.ndarray]:
        """Render the requested modalities from one ray cast.

        Args:
            caster: the scene's ray caster.
            tables: the scene's face tables.
            position: (3,) camera centre in the world, metres.
            rotation: (3, 3) camera-to-world rotation matrix.
            modalities: any of "rgb", "depth", "semantic", "instance".

        Returns:
            rgb: (H, W, 3) uint8. depth: (H, W) float32 planar z-depth in metres, 0 where
            nothing was hit. semantic / instance: (H, W) int32 (void / 0 where nothing was hit).
        """
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"unknown camera modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
        dirs = self.dirs_cam @ np.asarray(rotation, np.float32).T
        if self._origins is None:
            self._origins = np.empty_like(dirs)
        self._origins[:] = np.asarray(position, np.float32)  # reused buffer: no per-frame allocation
        origins = self._origins
        t, prim = caster.cast(origins, dirs)
        shape = (self.height_px, self.width_px)
        out: dict[str, np.ndarray] = {}
        hit = prim >= 0
        if "depth" in modalities:
            out["depth"] = np.where(hit, t * self.z_factor, np.float32(0.0)).reshape(shape)
        if "rgb" in modalities:
            out["rgb"] = shade(tables, prim, t, np.asarray(position, np.float32), dirs).reshape(shape + (3,))
        if "semantic" in modalities:
            out["semantic"] = np.take(tables.semantic, prim, mode="wrap").reshape(shape)
        if "instance" in modalities:
            out["instance"] = np.take(tables.instance, prim, mode="wrap").reshape(shape)
        return out


def finish_depth(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float, normalize: bool) -> np.ndarray:
    """Habitat's depth post-processing: clip to [min, max], optionally map to [0, 1].

    Returns:
        (H, W, 1) float32, metres or normalised.
    """
    d = np.clip(depth_m, min_depth_m, max_depth_m)
    if normalize:
        d = (d - min_depth_m) / (max_depth_m - min_depth_m)
    return d.astype(np.float32)[..., None]
