"""Top-down maps: the scene seen from just under the ceiling, room names, paths and poses.

Image columns follow +x and rows follow +z, so the agent's heading-0 direction (-z) points up.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sim.scenes.scene import Scene
from sim.scenes.semantics import CATEGORY_INDEX
from sim.sensors.raycast import RayCaster
from sim.sensors.shading import SceneTables, shade

WALL_RGB = (45, 45, 50)


class TopDownMap:
    """A rendered map of a scene with a metric pixel grid.

    Args:
        scene: the scene.
        level_y: floor height (metres); the view is cast from ``level_y + view_height_m``.
        pixels_per_m: map resolution.
        view_height_m: height of the virtual camera above the floor, under the ceiling.
    """

    def __init__(self, scene: Scene, level_y: float = 0.0, pixels_per_m: float = 40.0,
                 view_height_m: float = 2.2, caster: RayCaster | None = None) -> None:
        lo, hi = scene.bounds
        self.scene = scene
        self.ppm = float(pixels_per_m)
        self.margin_m = 0.5
        self.origin = np.array([lo[0] - self.margin_m, lo[2] - self.margin_m])
        w = int(np.ceil((hi[0] - lo[0] + 2 * self.margin_m) * self.ppm))
        h = int(np.ceil((hi[2] - lo[2] + 2 * self.margin_m) * self.ppm))
        xs = self.origin[0] + (np.arange(w) + 0.5) / self.ppm
        zs = self.origin[1] + (np.arange(h) + 0.5) / self.ppm
        xx, zz = np.meshgrid(xs, zs)
        origins = np.stack([xx.ravel(), np.full(xx.size, level_y + view_height_m), zz.ravel()], 1).astype(np.float32)
        dirs = np.tile(np.array([[0, -1, 0]], np.float32), (len(origins), 1))
        own = caster is None
        caster = caster or RayCaster(scene.triangles())
        try:
            t, prim = caster.cast(origins, dirs)
        finally:
            if own:
                caster.close()
        tables = SceneTables(scene)
        rgb = shade(tables, prim, np.where(prim >= 0, t, 0).astype(np.float32), origins, dirs).copy()
        sem = tables.semantic[prim]
        rgb[sem == CATEGORY_INDEX["wall"]] = WALL_RGB
        rgb[prim < 0] = (255, 255, 255)
        self.image = Image.fromarray(rgb.reshape(h, w, 3))

    def to_pixel(self, points) -> np.ndarray:
        """(N, 2) pixel (u, v) of world points (N, 3) or (N, 2 as x, z)."""
        p = np.asarray(points, np.float64).reshape(-1, np.shape(points)[-1])
        x, z = (p[:, 0], p[:, 2]) if p.shape[1] == 3 else (p[:, 0], p[:, 1])
        return np.stack([(x - self.origin[0]) * self.ppm, (z - self.origin[1]) * self.ppm], 1)

    def draw(self, *, rooms: bool = True, paths: list[tuple[np.ndarray, tuple]] = (),
             points: list[tuple[np.ndarray, tuple, str]] = (), poses: list[tuple[np.ndarray, float]] = (),
             navigable=None) -> Image.Image:
        """A copy of the map with overlays.

        Args:
            rooms: write room names at room centres.
            paths: (points (N, 3), rgb) polylines.
            points: (point (3,), rgb, label) markers.
            poses: (position (3,), heading rad) arrows.
            navigable: optional ``NavGrid`` whose navigable area is tinted.
        """
        img = self.image.copy()
        if navigable is not None:
            img = self._tint_navigable(img, navigable)
        d = ImageDraw.Draw(img)
        font = _font(max(11, int(self.ppm * 0.35)))
        if rooms:
            for room in self.scene.rooms:
                u, v = self.to_pixel(np.array([room.center]))[0]
                d.text((u, v), room.name, fill=(20, 20, 20), font=font, anchor="mm",
                       stroke_width=2, stroke_fill=(255, 255, 255))
        for pts, color in paths:
            if len(pts) >= 2:
                d.line([tuple(p) for p in self.to_pixel(pts)], fill=tuple(color), width=max(2, int(self.ppm / 12)))
        for p, color, label in points:
            u, v = self.to_pixel(np.asarray(p)[None])[0]
            r = max(4, self.ppm / 8)
            d.ellipse([u - r, v - r, u + r, v + r], fill=tuple(color), outline=(0, 0, 0))
            if label:
                d.text((u + r + 2, v), label, fill=tuple(color), font=font, anchor="lm", stroke_width=2,
                       stroke_fill=(255, 255, 255))
        for p, heading in poses:
            u, v = self.to_pixel(np.asarray(p)[None])[0]
            L = self.ppm * 0.4
            fu, fv = -np.sin(heading), -np.cos(heading)
            tip = (u + fu * L, v + fv * L)
            left = (u - fv * L * 0.35, v + fu * L * 0.35)
            right = (u + fv * L * 0.35, v - fu * L * 0.35)
            d.polygon([tip, left, right], fill=(230, 30, 30), outline=(0, 0, 0))
        return img

    def _tint_navigable(self, img, grid) -> Image.Image:
        h, w = img.size[1], img.size[0]
        xs = self.origin[0] + (np.arange(w) + 0.5) / self.ppm
        zs = self.origin[1] + (np.arange(h) + 0.5) / self.ppm
        xx, zz = np.meshgrid(xs, zs)
        nav = grid.navigable_at(np.stack([xx, zz], -1))
        arr = np.asarray(img).astype(np.float32)
        arr[nav] = arr[nav] * 0.75 + np.array([120, 200, 255]) * 0.25
        return Image.fromarray(arr.astype(np.uint8))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()
