"""Per-face lookup tables and the procedural surface patterns used to colour ray hits.

Every table has one extra last row for "no hit", so a primitive id of -1 indexes it directly.
"""

from __future__ import annotations

import numpy as np

from sim.scenes.scene import PATTERN_INDEX, Scene
from sim.scenes.semantics import VOID, reflectivity_table

BACKGROUND_RGB = (0, 0, 0)
AMBIENT = 0.45  # share of light that does not depend on the surface orientation
# a fixed key light, like the baked lighting of scanned scenes: constant over each face, so RGB
# costs one table lookup per pixel; walls facing different ways get different brightness
KEY_LIGHT = np.array([0.3, 1.0, 0.55]) / np.linalg.norm([0.3, 1.0, 0.55])
PATTERN_DARKENING = 0.65


class SceneTables:
    """Face attributes of a scene, padded with a "no hit" row.

    Attributes:
        lit_packed: (F+1,) uint32 RGBA under the key light, packed so a pixel costs one 1-D gather.
        dark_packed: (F+1,) uint32 the same, darkened for pattern areas.
        pattern: (F+1,) uint8 pattern index.
        normal: (F+1, 3) float32 unit normals.
        semantic: (F+1,) int32 category (void for no hit).
        instance: (F+1,) int32 instance id (0 for no hit).
        reflectivity: (F+1,) float32 LiDAR reflectivity.
    """

    def __init__(self, scene: Scene) -> None:
        rgba = np.concatenate([scene.face_color, [BACKGROUND_RGB]]).astype(np.uint8)
        rgba = np.concatenate([rgba, np.zeros((len(rgba), 1), np.uint8)], axis=1)
        self.pattern = np.concatenate([scene.face_pattern, [0]]).astype(np.uint8)
        self.normal = np.concatenate([scene.face_normals(), [[0, 0, 0]]]).astype(np.float32)
        self.normal_x, self.normal_y, self.normal_z = (np.ascontiguousarray(self.normal[:, i]) for i in range(3))
        light = AMBIENT + (1.0 - AMBIENT) * np.abs(self.normal @ KEY_LIGHT)
        lit = rgba.astype(np.float32) * light[:, None].astype(np.float32)
        # packed RGBA: one 1-D gather per pixel instead of a row gather (3x faster)
        self.lit_packed = lit.astype(np.uint8).view(np.uint32).reshape(-1)
        self.dark_packed = (lit * PATTERN_DARKENING).astype(np.uint8).view(np.uint32).reshape(-1)
        self.semantic = np.concatenate([scene.face_semantic, [VOID]]).astype(np.int32)
        self.instance = np.concatenate([scene.face_instance, [0]]).astype(np.int32)
        refl = reflectivity_table()
        sem = np.clip(scene.face_semantic, 0, len(refl) - 1)
        self.reflectivity = np.concatenate([refl[sem], [0.0]]).astype(np.float32)
        self.patterns_present = sorted(int(p) for p in np.unique(scene.face_pattern) if p != 0)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def pattern_mask(pattern: int, p: np.ndarray) -> np.ndarray:
    """Where the secondary colour shows, for hit points ``p`` (N, 3) in metres (solid textures)."""
    return _pattern_mask(pattern, lambda axis: p[:, axis])


def _pattern_mask(pattern: int, coord) -> np.ndarray:
    # ``coord(axis)`` returns one coordinate of the hit points; each pattern asks only for what it uses
    if pattern == PATTERN_INDEX["tiles"]:
        s = 0.3
        return ((np.floor(coord(0) / s) + np.floor(coord(1) / s) + np.floor(coord(2) / s)) % 2) == 1
    if pattern == PATTERN_INDEX["planks"]:
        z = coord(2)
        row = np.floor(z / 0.18)
        return (_frac(z / 0.18) < 0.08) | (_frac(coord(0) / 1.2 + 0.37 * row) < 0.02)
    if pattern == PATTERN_INDEX["stripes_vertical"]:
        return _frac((coord(0) + coord(2)) / 0.12) < 0.5
    if pattern == PATTERN_INDEX["stripes_horizontal"]:
        return _frac(coord(1) / 0.08) < 0.5
    if pattern == PATTERN_INDEX["grain"]:
        x = coord(0)
        return np.sin((x + coord(2)) * 30.0 + 4.0 * np.sin(coord(1) * 9.0 + x * 3.0)) > 0.4
    if pattern == PATTERN_INDEX["dots"]:
        d = (_frac(coord(0) / 0.1) - 0.5) ** 2 + (_frac(coord(1) / 0.1) - 0.5) ** 2 + (_frac(coord(2) / 0.1) - 0.5) ** 2
        return d < 0.12
    raise ValueError(f"unknown pattern index {pattern}")


def abs_cos(tables: SceneTables, prim: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """|cos| of the angle between each hit face's normal and its ray, (N,) float32 (0 for misses)."""
    d = directions
    c = np.take(tables.normal_x, prim, mode="wrap") * d[:, 0]
    c += np.take(tables.normal_y, prim, mode="wrap") * d[:, 1]
    c += np.take(tables.normal_z, prim, mode="wrap") * d[:, 2]
    return np.abs(c, out=c)


def shade(tables: SceneTables, prim: np.ndarray, t: np.ndarray, origin: np.ndarray,
          directions: np.ndarray) -> np.ndarray:
    """RGB of hits: albedo under the fixed key light, patterns darkening the secondary areas.

    Args:
        prim: (N,) int32 hit triangles (-1 = miss).
        t: (N,) float32 hit distances along the unit directions, metres.
        origin: (3,) or (N, 3) ray origins, metres.
        directions: (N, 3) float32 unit ray directions.

    Returns:
        (N, 3) uint8 colours; misses are black.
    """
    packed = np.take(tables.lit_packed, prim, mode="wrap")
    if tables.patterns_present:
        origin = np.asarray(origin, np.float32)
        per_ray_origin = origin.ndim == 2
        pid = np.take(tables.pattern, prim, mode="wrap")
        dark = []
        for k in tables.patterns_present:
            sel = np.flatnonzero(pid == k)
            if len(sel):
                t_sel = t[sel]

                def coord(axis, sel=sel, t_sel=t_sel):
                    o = origin[sel, axis] if per_ray_origin else origin[axis]
                    return o + directions[sel, axis] * t_sel

                dark.append(sel[_pattern_mask(k, coord)])
        if dark:
            dark = np.concatenate(dark)
            packed[dark] = np.take(tables.dark_packed, prim[dark], mode="wrap")
    return packed.view(np.uint8).reshape(-1, 4)[:, :3]
