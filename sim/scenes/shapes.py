"""Triangle primitives for procedural scenes. Local frames: y up, metres; faces wind outward."""

from __future__ import annotations

import numpy as np

_BOX_FACES = np.array(
    [[0, 2, 1], [0, 3, 2],  # -y
     [4, 5, 6], [4, 6, 7],  # +y
     [0, 1, 5], [0, 5, 4],  # -z
     [2, 3, 7], [2, 7, 6],  # +z
     [1, 2, 6], [1, 6, 5],  # +x
     [3, 0, 4], [3, 4, 7]],  # -x
    dtype=np.int32,
)[:, ::-1].copy()  # listed clockwise; reversed so that normals point outward


def box(center, size) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box: ``center`` (x, y, z) and ``size`` (sx, sy, sz), metres."""
    c = np.asarray(center, np.float64)
    h = np.asarray(size, np.float64) / 2
    corners = np.array(
        [[-1, -1, -1], [1, -1, -1], [1, -1, 1], [-1, -1, 1],
         [-1, 1, -1], [1, 1, -1], [1, 1, 1], [-1, 1, 1]], np.float64)
    return c + corners * h, _BOX_FACES.copy()


def cylinder(base_center, radius: float, height: float, sections: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Vertical closed cylinder standing on ``base_center`` (x, y, z)."""
    angles = np.arange(sections) * (2 * np.pi / sections)
    ring = np.stack([np.cos(angles) * radius, np.zeros(sections), np.sin(angles) * radius], 1)
    b = np.asarray(base_center, np.float64)
    verts = np.concatenate([ring + b, ring + b + [0, height, 0], [b, b + [0, height, 0]]])
    faces = []
    bot, top = 2 * sections, 2 * sections + 1
    for i in range(sections):
        j = (i + 1) % sections
        faces += [[i, j + sections, j], [i, i + sections, j + sections]]
        faces += [[bot, i, j], [top, j + sections, i + sections]]
    return verts, np.asarray(faces, np.int32)


_ICO = None


def sphere(center, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere (one subdivision, 80 faces) of ``radius`` at ``center``."""
    global _ICO  # an immutable template computed once; never mutated
    if _ICO is None:
        import trimesh

        ico = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
        _ICO = (np.asarray(ico.vertices, np.float64), np.asarray(ico.faces, np.int32))
    v, f = _ICO
    return v * radius + np.asarray(center, np.float64), f.copy()


def transform(vertices: np.ndarray, yaw_rad: float, translation) -> np.ndarray:
    """Rotate about +y by ``yaw_rad`` (counter-clockwise seen from above), then translate."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return vertices @ rot.T + np.asarray(translation, np.float64)
