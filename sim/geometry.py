"""Poses in the Habitat frame: y up, heading 0 looks along -z, quaternions in (x, y, z, w) order."""

from __future__ import annotations

import math

import numpy as np

UP = np.array([0.0, 1.0, 0.0])
FORWARD = np.array([0.0, 0.0, -1.0])
#: REP-103 world axes (x = heading-0 forward, y left, z up) in Habitat world axes:
#: ``p_rep103 = HABITAT_TO_REP103 @ p_habitat``, i.e. x = -z_h, y = -x_h, z = y_h
HABITAT_TO_REP103 = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def quat_from_heading(heading_rad: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation by ``heading_rad`` about +y (left is positive)."""
    h = 0.5 * float(heading_rad)
    return np.array([0.0, math.sin(h), 0.0, math.cos(h)])


def heading_from_quat(q) -> float:
    """Heading in radians, in (-pi, pi], of the yaw part of a quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    # yaw about +y of the rotated forward vector
    fwd = rotation_matrix(np.array([x, y, z, w])) @ FORWARD
    return math.atan2(-fwd[0], -fwd[2])


def rotation_matrix(q) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion (x, y, z, w).

    Raises:
        ValueError: if ``q`` is not a finite 4-vector of non-zero norm.
    """
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or not np.isfinite(q).all():
        raise ValueError(f"rotation must be a finite quaternion (x, y, z, w), got {q.tolist()}")
    n = np.linalg.norm(q)
    if n < 1e-9:
        raise ValueError("rotation quaternion has zero norm")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def heading_matrix(heading_rad: float) -> np.ndarray:
    """Rotation about +y by ``heading_rad`` as a 3x3 matrix."""
    c, s = math.cos(heading_rad), math.sin(heading_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def forward_vector(heading_rad: float) -> np.ndarray:
    """Unit forward direction (x, 0, z) of an agent with this heading."""
    return np.array([-math.sin(heading_rad), 0.0, -math.cos(heading_rad)])


def planar_motion(heading_rad: float, forward_mps: float, left_mps: float, yaw_rate_rps: float,
                  dt: float) -> tuple[np.ndarray, float]:
    """Displacement (3,) metres and the new heading after holding a body-frame velocity for ``dt`` s.

    The displacement follows the heading halfway through the step: a constant twist traces an
    arc, and the chord of a short arc points along its midpoint heading.
    """
    mid = heading_rad + 0.5 * yaw_rate_rps * dt
    c, s = math.cos(mid), math.sin(mid)
    forward, left = np.array([-s, 0.0, -c]), np.array([-c, 0.0, s])
    return (forward * forward_mps + left * left_mps) * dt, wrap_angle(heading_rad + yaw_rate_rps * dt)


def wrap_angle(a: float) -> float:
    """Wrap an angle to (-pi, pi]."""
    a = math.fmod(a + math.pi, 2 * math.pi)
    if a <= 0:
        a += 2 * math.pi
    return a - math.pi
