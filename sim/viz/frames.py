"""Observation frames for videos: RGB, coloured depth and semantics side by side."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sim.scenes.semantics import palette

# anchor colours of a perceptually ordered dark-to-bright map (like viridis)
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)
_PALETTE = palette()


def colorize_depth(depth: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """(H, W) or (H, W, 1) depth to (H, W, 3) uint8; zero (no hit) is black."""
    d = np.asarray(depth, np.float32).reshape(depth.shape[0], depth.shape[1])
    top = float(max_value) if max_value else float(d.max() or 1.0)
    x = np.clip(d / top, 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(x.astype(int), len(_ANCHORS) - 2)
    f = (x - i)[..., None]
    rgb = _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f
    rgb[d <= 0] = 0
    return rgb.astype(np.uint8)


def colorize_semantic(semantic: np.ndarray) -> np.ndarray:
    """(H, W) category ids to (H, W, 3) uint8 with the fixed category palette."""
    return _PALETTE[np.clip(semantic, 0, len(_PALETTE) - 1)]


def compose(images: list[np.ndarray], height: int = 256) -> np.ndarray:
    """Resize images to a common height (nearest neighbour) and place them side by side."""
    tiles = []
    for im in images:
        h, w = im.shape[:2]
        width = max(1, int(round(w * height / h)))
        tiles.append(np.asarray(Image.fromarray(im).resize((width, height), Image.NEAREST)))
    return np.concatenate(tiles, axis=1)
