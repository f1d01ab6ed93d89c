"""Semantic categories: the mpcat40 set used by Matterport3D/Habitat, plus ``person``.

mpcat40 has no person class; we add it as index 42 (after ``unlabeled`` = 41) so that mpcat40
indices keep their meaning.
"""

from __future__ import annotations

import numpy as np

MPCAT40: tuple[str, ...] = (
    "void", "wall", "floor", "chair", "door", "table", "picture", "cabinet", "cushion", "window",
    "sofa", "bed", "curtain", "chest_of_drawers", "plant", "sink", "stairs", "ceiling", "toilet",
    "stool", "towel", "mirror", "tv_monitor", "shower", "column", "bathtub", "counter",
    "fireplace", "lighting", "beam", "railing", "shelving", "blinds", "gym_equipment", "seating",
    "board_panel", "furniture", "appliances", "clothes", "objects", "misc", "unlabeled",
)
CATEGORIES: tuple[str, ...] = MPCAT40 + ("person",)
CATEGORY_INDEX: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES)}

VOID = CATEGORY_INDEX["void"]
UNLABELED = CATEGORY_INDEX["unlabeled"]
PERSON = CATEGORY_INDEX["person"]

ROOM_TYPES: tuple[str, ...] = (
    "bedroom", "bathroom", "kitchen", "living room", "dining room", "office", "hallway",
)

# LiDAR reflectivity per class in [0, 1]: walls and ceilings are matte paint, screens and mirrors
# are specular-dark, people and fabrics are mid.
_REFLECTIVITY = {
    "wall": 0.6, "floor": 0.45, "ceiling": 0.7, "door": 0.5, "window": 0.15, "mirror": 0.1,
    "tv_monitor": 0.12, "person": 0.35, "plant": 0.3, "cushion": 0.4, "bed": 0.55, "sofa": 0.4,
}


def category_id(name: str) -> int:
    """Index of a category name.

    Raises:
        KeyError: naming the unknown category.
    """
    try:
        return CATEGORY_INDEX[name]
    except KeyError:
        raise KeyError(f"unknown semantic category {name!r}; expected one of mpcat40 or 'person'") from None


def reflectivity_table() -> np.ndarray:
    """Per-category LiDAR reflectivity, shape (len(CATEGORIES),) float32."""
    table = np.full(len(CATEGORIES), 0.5, dtype=np.float32)
    for name, value in _REFLECTIVITY.items():
        table[CATEGORY_INDEX[name]] = value
    return table


def palette(n: int = len(CATEGORIES)) -> np.ndarray:
    """A fixed, well-separated colour per category index, shape (n, 3) uint8 (void is black)."""
    idx = np.arange(n, dtype=np.uint32)
    # golden-ratio hue walk: neighbouring ids get very different colours
    hue = (idx * 0.618033988749895) % 1.0
    sat = 0.55 + 0.35 * ((idx * 7) % 3) / 2
    val = 0.95 - 0.25 * ((idx * 5) % 2)
    h6 = hue * 6.0
    c = val * sat
    x = c * (1 - np.abs(h6 % 2 - 1))
    m = val - c
    sector = h6.astype(int) % 6
    rgb = np.zeros((n, 3))
    table = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)]
    for s, (r, g, b) in enumerate(table):
        sel = sector == s
        rgb[sel] = np.stack([np.broadcast_to(r, n)[sel], np.broadcast_to(g, n)[sel], np.broadcast_to(b, n)[sel]], 1)
    out = ((rgb + m[:, None]) * 255).round().astype(np.uint8)
    out[0] = 0
    return out
