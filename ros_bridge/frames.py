"""Frame conventions at the ROS edge: Habitat (y up, -z forward) to REP-103 (x forward, y left, z up).

Library code works in the Habitat world frame (``sim.geometry``). ROS wants REP-103 axes and
REP-105 frames, so every conversion happens here and nowhere else:

- world/map: ROS ``x = -z_h``, ``y = -x_h``, ``z = y_h``; a Habitat heading ``h`` (about +y, left
  positive, 0 looking along -z) is the ROS yaw ``h`` (about +z, left positive, 0 looking along +x).
- ``odom``: the robot's pose at the start of the episode (REP-105: continuous, starts at the origin).
- ``base_link``: x forward, y left, z up, on the floor under the robot.
- camera optical frames (REP-103 suffix ``_optical_frame``): z forward, x right, y down.

Pure numpy; no rclpy, so it is testable anywhere.
"""

from __future__ import annotations

import math

import numpy as np

from sim.geometry import HABITAT_TO_REP103, wrap_angle

#: ROS world axes expressed in Habitat world axes: ``p_ros = HABITAT_TO_ROS @ p_habitat``
HABITAT_TO_ROS = HABITAT_TO_REP103
#: base_link (x fwd, y left, z up) -> camera optical (x right, y down, z fwd): ``p_opt = BASE_TO_OPTICAL @ p_base``
BASE_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def position_to_ros(p_habitat) -> np.ndarray:
    """(3,) or (N, 3) Habitat world positions to ROS world positions, metres."""
    return np.asarray(p_habitat, np.float64) @ HABITAT_TO_ROS.T


def position_from_ros(p_ros) -> np.ndarray:
    """Inverse of ``position_to_ros``."""
    return np.asarray(p_ros, np.float64) @ HABITAT_TO_ROS


def mount_to_base(position_m) -> np.ndarray:
    """A sensor mount given in the Habitat agent frame (x right, y up, z back) in base_link."""
    x, y, z = (float(v) for v in position_m)
    return np.array([-z, -x, y])


def yaw_quaternion(yaw_rad: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) quaternion of a rotation by ``yaw_rad`` about +z."""
    h = 0.5 * float(yaw_rad)
    return (0.0, 0.0, math.sin(h), math.cos(h))


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Yaw (about +z) of a quaternion, radians in (-pi, pi]."""
    return wrap_angle(math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def matrix_to_quaternion(m: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) quaternion of a 3x3 rotation matrix (Shepperd's method)."""
    m = np.asarray(m, np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        return ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
    q = [0.0, 0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (m[j, i] + m[i, j]) / s
    q[k] = (m[k, i] + m[i, k]) / s
    q[3] = (m[k, j] - m[j, k]) / s
    return tuple(q)


class OdomFrame:
    """The ``odom`` frame of one episode: the robot's start pose in the Habitat world.

    ``to_odom`` maps a Habitat world pose to (x, y, yaw) in odom; ``to_world`` maps it back, so
    an agent that only sees odometry can still place itself in a map it was given.
    """

    def __init__(self, start_position_habitat, start_heading_rad: float) -> None:
        self.origin = position_to_ros(start_position_habitat)
        self.yaw0 = float(start_heading_rad)

    def to_odom(self, position_habitat, heading_rad: float) -> tuple[np.ndarray, float]:
        d = position_to_ros(position_habitat) - self.origin
        c, s = math.cos(self.yaw0), math.sin(self.yaw0)
        local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])
        return local, wrap_angle(heading_rad - self.yaw0)

    def to_world(self, position_odom, yaw_odom: float) -> tuple[np.ndarray, float]:
        """Habitat world position (3,) and heading of an odom pose."""
        p = np.asarray(position_odom, np.float64)
        c, s = math.cos(self.yaw0), math.sin(self.yaw0)
        world = self.origin + np.array([c * p[0] - s * p[1], s * p[0] + c * p[1], p[2]])
        return position_from_ros(world), wrap_angle(yaw_odom + self.yaw0)
