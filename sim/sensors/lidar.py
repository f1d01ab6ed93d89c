"""A spinning multi-beam LiDAR rendered by ray casting.

Sensor frame (REP-103, as KITTI): x forward, y left, z up. The organised scan has one row per beam
(row 0 = highest elevation) and one column per azimuth step laid out exactly as the SemanticKITTI
spherical projection lays out points: column ``j`` looks at ``atan2(y, x) = pi - 2 pi (j + 0.5) / W``,
so projecting a scan with that convention puts every point back in its own cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.sensors.raycast import RayCaster
from sim.sensors.shading import SceneTables, abs_cos
from vlnce.errors import ConfigError

# sensor frame (x fwd, y left, z up) -> Habitat agent frame (x right, y up, -z forward)
SENSOR_TO_AGENT = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float32)


@dataclass
class LidarScan:
    """One organised scan, shape (beams, columns) for every field.

    Attributes:
        xyz: (H, W, 3) float32 points in the sensor frame, metres (0 where invalid).
        range: (H, W) float32 metres (0 where invalid).
        intensity: (H, W) float32 in [0, 1].
        label: (H, W) int32 semantic category (void where invalid).
        instance: (H, W) int32 instance id (0 where invalid).
        valid: (H, W) bool, a return was received.
    """

    xyz: np.ndarray
    range: np.ndarray
    intensity: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    valid: np.ndarray

    def points(self) -> dict[str, np.ndarray]:
        """The valid returns as flat arrays: xyz (N, 3), range, intensity, label, instance (N,)."""
        m = self.valid
        return {"xyz": self.xyz[m], "range": self.range[m], "intensity": self.intensity[m],
                "label": self.label[m], "instance": self.instance[m]}


class SpinningLidar:
    """A 360 degree spinning LiDAR with ``beams`` evenly spaced elevations.

    Args:
        beams: number of lasers (rows), > 0.
        columns: azimuth steps per revolution, > 0.
        fov_up_deg, fov_down_deg: elevation of the top and bottom beam edges, degrees
            (fov_down negative below the horizon); fov_up > fov_down.
        min_range_m, max_range_m: returns outside [min, max] are dropped.
        noise_std_m: standard deviation of Gaussian range noise, metres.
        dropout_prob: probability that a return is lost, in [0, 1).
    """

    def __init__(self, beams: int = 64, columns: int = 2048, fov_up_deg: float = 15.0, fov_down_deg: float = -25.0,
                 min_range_m: float = 0.1, max_range_m: float = 30.0, noise_std_m: float = 0.0,
                 dropout_prob: float = 0.0) -> None:
        if beams <= 0 or columns <= 0 or int(beams) != beams or int(columns) != columns:
            raise ConfigError(f"lidar beams and columns must be positive integers, got {beams}x{columns}")
        if not (-90.0 <= fov_down_deg < fov_up_deg <= 90.0):
            raise ConfigError(f"lidar needs -90 <= fov_down_deg < fov_up_deg <= 90, got {fov_down_deg}, {fov_up_deg}")
        if not (0.0 <= min_range_m < max_range_m):
            raise ConfigError(f"lidar needs 0 <= min_range_m < max_range_m, got {min_range_m}, {max_range_m}")
        if noise_std_m < 0 or not (0.0 <= dropout_prob < 1.0):
            raise ConfigError(f"lidar needs noise_std_m >= 0 and dropout_prob in [0, 1), got {noise_std_m}, {dropout_prob}")
        self.beams, self.columns = int(beams), int(columns)
        self.fov_up_rad, self.fov_down_rad = math.radians(fov_up_deg), math.radians(fov_down_deg)
        self.min_range_m, self.max_range_m = float(min_range_m), float(max_range_m)
        self.noise_std_m, self.dropout_prob = float(noise_std_m), float(dropout_prob)
        fov = self.fov_up_rad - self.fov_down_rad
        pitch = self.fov_up_rad - (np.arange(self.beams) + 0.5) / self.beams * fov
        azimuth = np.pi - 2 * np.pi * (np.arange(self.columns) + 0.5) / self.columns
        pp, aa = np.meshgrid(pitch, azimuth, indexing="ij")
        d = np.stack([np.cos(pp) * np.cos(aa), np.cos(pp) * np.sin(aa), np.sin(pp)], axis=-1)
        self.dirs_sensor = d.reshape(-1, 3).astype(np.float32)  # (H*W, 3) unit
        self.pitch_rad = pitch
        self.azimuth_rad = azimuth

    def scan(self, caster: RayCaster, tables: SceneTables, position: np.ndarray, rotation: np.ndarray,
             rng: np.random.Generator | None = None) -> LidarScan:
        """Cast one revolution.

        Args:
            position: (3,) sensor origin in the world, metres.
            rotation: (3, 3) agent-to-world rotation (Habitat frame).
            rng: generator for noise and dropout; required when either is enabled.
        """
        to_world = np.asarray(rotation, np.float32) @ SENSOR_TO_AGENT
        dirs = self.dirs_sensor @ to_world.T
        origins = np.broadcast_to(np.asarray(position, np.float32), dirs.shape)
        t, prim = caster.cast(origins, dirs)
        valid = (prim >= 0) & (t >= self.min_range_m) & (t <= self.max_range_m)
        if self.noise_std_m > 0 or self.dropout_prob > 0:
            if rng is None:
                raise ValueError("lidar noise or dropout is enabled: pass a numpy Generator as rng")
            if self.noise_std_m > 0:
                t = t + rng.normal(0.0, self.noise_std_m, size=t.shape).astype(np.float32)
                valid &= t > 0
            if self.dropout_prob > 0:
                valid &= rng.random(t.shape) >= self.dropout_prob
        prim = np.where(valid, prim, -1)
        r = np.where(valid, t, np.float32(0.0)).astype(np.float32)
        xyz = self.dirs_sensor * r[:, None]
        intensity = np.take(tables.reflectivity, prim, mode="wrap") * abs_cos(tables, prim, dirs) / (1.0 + 0.01 * r * r)
        shape = (self.beams, self.columns)
        return LidarScan(
            xyz=xyz.reshape(shape + (3,)),
            range=r.reshape(shape),
            intensity=intensity.astype(np.float32).reshape(shape),
            label=np.take(tables.semantic, prim, mode="wrap").reshape(shape),
            instance=np.take(tables.instance, prim, mode="wrap").reshape(shape),
            valid=valid.reshape(shape),
        )
