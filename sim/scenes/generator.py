"""Procedural single-floor houses, deterministic by seed.

Layout: houses with five or more rooms get a central hallway with rooms on both sides; smaller
houses are split by binary space partition and connected by a random spanning tree of doors (plus
a few extra doors). Walls are boxes along room boundaries with door gaps, door frames and lintels;
floors and ceilings are one slab per room. Furniture is placed by room type against walls or in the
open, never in front of a door and never cutting a room in two. A few people stand in the rooms.

Everything is laid out on a 0.1 m integer grid so that equal seeds give equal floats, and the house
occupies x in [0, W], z in [0, D] with the floor top at y = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scenes import shapes
from sim.scenes.scene import Room, Scene, SceneObject, scene_from_parts
from vlnce.errors import ConfigError

GENERATOR_VERSION = 1
DM = 0.1  # metres per layout unit
WALL_HEIGHT = 2.6
INTERIOR_WALL = 0.1
EXTERIOR_WALL = 0.2
DOOR_WIDTH_DM = 11
LINTEL_HEIGHT = 2.1
MIN_ROOM_DM = 26
AGENT_CLEARANCE = 0.3  # free width (m) kept around furniture for a 0.1 m-radius agent


@dataclass(frozen=True)
class HouseConfig:
    """Generator parameters.

    Attributes:
        min_rooms, max_rooms: room count range, inclusive (3-9 by default).
        people_min, people_max: number of people placed in the house, inclusive.
        furniture_density: probability scale for optional furniture, in [0, 1].
    """

    min_rooms: int = 3
    max_rooms: int = 9
    people_min: int = 2
    people_max: int = 4
    furniture_density: float = 1.0

    def validate(self) -> None:
        if not 3 <= self.min_rooms <= self.max_rooms <= 12:
            raise ConfigError(f"house rooms must satisfy 3 <= min_rooms <= max_rooms <= 12, got "
                              f"{self.min_rooms}..{self.max_rooms}")
        if not 0 <= self.people_min <= self.people_max <= 12:
            raise ConfigError(f"house people must satisfy 0 <= people_min <= people_max <= 12, got "
                              f"{self.people_min}..{self.people_max}")
        if not 0.0 <= self.furniture_density <= 1.0:
            raise ConfigError(f"furniture_density must be in [0, 1], got {self.furniture_density}")


# --- colours ---------------------------------------------------------------------------------
WOODS = [(150, 105, 65), (120, 80, 50), (185, 145, 100), (95, 65, 45), (205, 170, 125)]
FABRICS = [(70, 90, 140), (140, 60, 60), (80, 120, 80), (170, 150, 110), (110, 110, 120), (150, 90, 140), (60, 60, 60)]
PAINTS = [(225, 220, 205), (200, 215, 225), (230, 210, 190), (210, 225, 200), (235, 235, 235), (220, 200, 210)]
TILES = [(220, 225, 230), (200, 200, 190), (185, 200, 210), (235, 230, 215)]
SKINS = [(240, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45)]
FLOOR_BY_ROOM = {"bathroom": "tiles", "kitchen": "tiles"}


def _jitter(rng, color, amount=18):
    c = np.asarray(color, np.int32) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(x) for x in np.clip(c, 0, 255))


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


class _Builder:
    """Accumulates scene parts and instance bookkeeping."""

    def __init__(self) -> None:
        self.parts: list[dict] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        iid = self.next_instance
        self.next_instance += 1
        return iid

    def add(self, geom, category, instance, color, pattern="flat") -> None:
        v, f = geom
        self.parts.append({"vertices": v, "faces": f, "category": category, "instance": instance,
                           "color": color, "pattern": pattern})

    def add_object(self, instance, category, room_id, lo, hi) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.objects.append(SceneObject(
            instance, category, room_id,
            tuple(round(float(x), 4) for x in (lo + hi) / 2),
            tuple(round(float(x), 4) for x in hi - lo)))


# --- furniture builders: local frame, footprint centred at origin, front towards +z ------------
# Each returns (width_m, depth_m, parts) with parts = [(geom, color, pattern)].

def _table(rng, w, d, h=0.75):
    wood = _jitter(rng, _pick(rng, WOODS))
    parts = [(shapes.box((0, h - 0.025, 0), (w, 0.05, d)), wood, "grain")]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append((shapes.box((sx * (w / 2 - 0.05), (h - 0.05) / 2, sz * (d / 2 - 0.05)), (0.05, h - 0.05, 0.05)), wood, "flat"))
    return w, d, parts


def _chair(rng):
    wood = _jitter(rng, _pick(rng, WOODS))
    seat = _jitter(rng, _pick(rng, FABRICS))
    parts = [(shapes.box((0, 0.45, 0), (0.45, 0.06, 0.45)), seat, "dots"),
             (shapes.box((0, 0.75, -0.2), (0.45, 0.55, 0.05)), wood, "grain")]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append((shapes.box((sx * 0.19, 0.21, sz * 0.19), (0.04, 0.42, 0.04)), wood, "flat"))
    return 0.45, 0.45, parts


def _bed(rng):
    w = float(_pick(rng, [1.0, 1.4, 1.6]))
    d = 2.0
    frame = _jitter(rng, _pick(rng, WOODS))
    sheet = _jitter(rng, _pick(rng, FABRICS), 30)
    return w, d, [
        (shapes.box((0, 0.2, 0), (w, 0.3, d)), frame, "grain"),
        (shapes.box((0, 0.45, 0.05), (w - 0.04, 0.2, d - 0.1)), sheet, "stripes_horizontal"),
        (shapes.box((0, 0.55, -d / 2 + 0.04), (w, 1.0, 0.08)), frame, "planks"),
        (shapes.box((0, 0.6, -d / 2 + 0.3), (w * 0.8, 0.12, 0.35)), (235, 235, 235), "flat"),
        (shapes.box((0, 0.025, 0), (w - 0.1, 0.05, d - 0.1)), frame, "flat"),
    ]


def _sofa(rng):
    w = float(rng.uniform(1.6, 2.3))
    d = 0.9
    fab = _jitter(rng, _pick(rng, FABRICS), 25)
    return w, d, [
        (shapes.box((0, 0.22, 0.05), (w, 0.44, d - 0.1)), fab, "dots"),
        (shapes.box((0, 0.6, -d / 2 + 0.1), (w, 0.8, 0.2)), fab, "stripes_horizontal"),
        (shapes.box((-w / 2 + 0.1, 0.32, 0.05), (0.2, 0.64, d - 0.1)), fab, "flat"),
        (shapes.box((w / 2 - 0.1, 0.32, 0.05), (0.2, 0.64, d - 0.1)), fab, "flat"),
    ]


def _cabinet(rng, w=None, h=None, d=0.5, pattern="planks"):
    w = float(rng.uniform(0.6, 1.2)) if w is None else w
    h = float(rng.uniform(0.8, 2.0)) if h is None else h
    wood = _jitter(rng, _pick(rng, WOODS))
    return w, d, [(shapes.box((0, h / 2, 0), (w, h, d)), wood, pattern),
                  (shapes.box((0, h / 2, d / 2 + 0.005), (w * 0.9, h * 0.85, 0.01)), _jitter(rng, wood, 30), "flat")]


def _plant(rng):
    pot = _jitter(rng, (170, 90, 60))
    leaf = _jitter(rng, (60, 130, 60), 25)
    r = float(rng.uniform(0.25, 0.4))
    return 2 * r, 2 * r, [(shapes.cylinder((0, 0, 0), 0.18, 0.35), pot, "stripes_horizontal"),
                          (shapes.cylinder((0, 0.35, 0), 0.03, 0.4), leaf, "flat"),
                          (shapes.sphere((0, 0.75 + r * 0.6, 0), r), leaf, "dots")]


def _lamp(rng):
    metal = _jitter(rng, (90, 90, 95))
    shade = _jitter(rng, (240, 225, 190))
    return 0.4, 0.4, [(shapes.cylinder((0, 0, 0), 0.15, 0.03), metal, "flat"),
                      (shapes.cylinder((0, 0.03, 0), 0.02, 1.3), metal, "flat"),
                      (shapes.cylinder((0, 1.33, 0), 0.2, 0.3, 10), shade, "stripes_vertical")]


def _toilet(rng):
    white = _jitter(rng, (240, 240, 240), 8)
    return 0.45, 0.7, [(shapes.box((0, 0.2, 0.05), (0.4, 0.4, 0.5)), white, "flat"),
                       (shapes.box((0, 0.6, -0.27), (0.45, 0.45, 0.16)), white, "flat")]


def _sink(rng):
    white = _jitter(rng, (235, 235, 240), 8)
    wood = _jitter(rng, _pick(rng, WOODS))
    return 0.7, 0.5, [(shapes.box((0, 0.4, 0), (0.7, 0.8, 0.5)), wood, "planks"),
                      (shapes.box((0, 0.86, 0.02), (0.55, 0.12, 0.4)), white, "flat")]


def _bathtub(rng):
    white = _jitter(rng, (245, 245, 245), 6)
    return 1.7, 0.8, [(shapes.box((0, 0.28, 0), (1.7, 0.56, 0.8)), white, "tiles")]


def _counter(rng):
    w = float(rng.uniform(1.8, 3.0))
    top = _jitter(rng, (90, 90, 90), 30)
    wood = _jitter(rng, _pick(rng, WOODS))
    return w, 0.6, [(shapes.box((0, 0.44, 0), (w, 0.88, 0.6)), wood, "planks"),
                    (shapes.box((0, 0.9, 0), (w, 0.04, 0.62)), top, "grain")]


def _fridge(rng):
    col = _jitter(rng, _pick(rng, [(230, 230, 230), (170, 170, 175), (60, 60, 65)]), 6)
    return 0.7, 0.7, [(shapes.box((0, 0.9, 0), (0.7, 1.8, 0.7)), col, "flat"),
                      (shapes.box((0.25, 1.1, 0.36), (0.03, 0.5, 0.03)), (40, 40, 40), "flat")]


def _tv_stand(rng):
    wood = _jitter(rng, _pick(rng, WOODS))
    w = float(rng.uniform(1.2, 1.8))
    return w, 0.45, [(shapes.box((0, 0.25, 0), (w, 0.5, 0.45)), wood, "planks")]


def _tv(rng, w=None):
    w = float(rng.uniform(0.9, 1.3)) if w is None else w
    return w, 0.08, [(shapes.box((0, w * 0.3, 0), (w, w * 0.56, 0.05)), (25, 25, 30), "flat"),
                     (shapes.box((0, 0.02, 0), (0.3, 0.04, 0.15)), (40, 40, 40), "flat")]


def _shelving(rng):
    wood = _jitter(rng, _pick(rng, WOODS))
    w, h = float(rng.uniform(0.8, 1.4)), 1.9
    parts = [(shapes.box((-w / 2 + 0.02, h / 2, 0), (0.04, h, 0.35)), wood, "flat"),
             (shapes.box((w / 2 - 0.02, h / 2, 0), (0.04, h, 0.35)), wood, "flat"),
             (shapes.box((0, h / 2, -0.165), (w, h, 0.02)), wood, "grain")]
    for k in range(5):
        parts.append((shapes.box((0, 0.05 + k * 0.45, 0), (w, 0.03, 0.35)), wood, "flat"))
        if k < 4:
            book = _jitter(rng, _pick(rng, FABRICS), 40)
            parts.append((shapes.box((-w * 0.1, 0.2 + k * 0.45, 0), (w * 0.6, 0.25, 0.25)), book, "stripes_vertical"))
    return w, 0.35, parts


def _chest(rng):
    return _cabinet(rng, w=float(rng.uniform(0.8, 1.2)), h=float(rng.uniform(0.8, 1.1)), d=0.5, pattern="stripes_horizontal")


WALL_MOUNTED = {"picture", "mirror", "towel", "window"}


def _wall_item(rng, category):
    """Thin wall-mounted items: (width, height, bottom_y, color, pattern)."""
    if category == "picture":
        return float(rng.uniform(0.5, 1.1)), float(rng.uniform(0.4, 0.8)), 1.3, _jitter(rng, _pick(rng, FABRICS), 60), "stripes_vertical"
    if category == "mirror":
        return 0.6, 0.8, 1.1, (200, 215, 225), "flat"
    if category == "towel":
        return 0.5, 0.7, 0.9, _jitter(rng, _pick(rng, FABRICS), 40), "stripes_horizontal"
    return float(rng.uniform(0.9, 1.5)), 1.1, 0.9, (150, 190, 220), "flat"  # window


BUILDERS = {
    "bed": _bed, "sofa": _sofa, "cabinet": _cabinet, "plant": _plant, "lighting": _lamp,
    "toilet": _toilet, "sink": _sink, "bathtub": _bathtub, "counter": _counter,
    "appliances": _fridge, "shelving": _shelving, "chest_of_drawers": _chest, "chair": _chair,
}

# (category, placement, probability); placement: wall | free | corner | wall_item | tv | desk | dining
ROOM_FURNITURE: dict[str, list[tuple[str, str, float]]] = {
    "bedroom": [("bed", "wall", 1.0), ("chest_of_drawers", "wall", 0.8), ("cabinet", "wall", 0.6),
                ("plant", "corner", 0.5), ("lighting", "corner", 0.4), ("picture", "wall_item", 0.7),
                ("window", "exterior_item", 0.8), ("chair", "free", 0.3)],
    "bathroom": [("toilet", "wall", 1.0), ("sink", "wall", 1.0), ("bathtub", "wall", 0.6),
                 ("towel", "wall_item", 0.7), ("mirror", "wall_item", 0.8), ("plant", "corner", 0.2)],
    "kitchen": [("counter", "wall", 1.0), ("appliances", "wall", 1.0), ("sink", "wall", 0.7),
                ("cabinet", "wall", 0.6), ("dining", "dining", 0.5), ("plant", "corner", 0.3),
                ("window", "exterior_item", 0.6)],
    "living room": [("sofa", "wall", 1.0), ("tv", "tv", 1.0), ("coffee_table", "free", 0.8),
                    ("plant", "corner", 0.8), ("chair", "free", 0.5), ("picture", "wall_item", 0.8),
                    ("lighting", "corner", 0.5), ("shelving", "wall", 0.4), ("window", "exterior_item", 0.8)],
    "dining room": [("dining", "dining", 1.0), ("cabinet", "wall", 0.6), ("plant", "corner", 0.6),
                    ("picture", "wall_item", 0.7), ("window", "exterior_item", 0.6)],
    "office": [("desk", "desk", 1.0), ("shelving", "wall", 0.8), ("plant", "corner", 0.5),
               ("cabinet", "wall", 0.4), ("picture", "wall_item", 0.5), ("window", "exterior_item", 0.7)],
    "hallway": [("plant", "corner", 0.6), ("picture", "wall_item", 0.7), ("cabinet", "wall", 0.3)],
}


# --- layout -----------------------------------------------------------------------------------
@dataclass
class _RoomRect:
    x0: int
    z0: int
    x1: int
    z1: int
    room_type: str = ""

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.z1 - self.z0)


def _partition_1d(rng, length: int, count: int) -> list[int]:
    """Split ``length`` into ``count`` integer pieces of at least MIN_ROOM_DM."""
    spare = length - count * MIN_ROOM_DM
    weights = rng.uniform(0.6, 1.4, size=count)
    extra = np.floor(spare * weights / weights.sum()).astype(int)
    extra[-1] += spare - extra.sum()
    return [MIN_ROOM_DM + int(e) for e in extra]


def _layout(rng, n_rooms: int) -> tuple[list[_RoomRect], list[tuple[int, int]]]:
    """Room rectangles (layout units) and the pairs of rooms joined by a door."""
    if n_rooms >= 5:
        n_side = n_rooms - 1
        n_a = n_side // 2 + int(rng.integers(0, 2)) * (n_side % 2)
        n_b = n_side - n_a
        per_room = int(rng.integers(30, 42))
        length = max(n_a, n_b) * per_room
        hall = int(rng.integers(14, 19))
        depth_a, depth_b = int(rng.integers(35, 50)), int(rng.integers(35, 50))
        rooms = [_RoomRect(0, depth_a, length, depth_a + hall, "hallway")]
        doors = []
        for count, z0, z1 in ((n_a, 0, depth_a), (n_b, depth_a + hall, depth_a + hall + depth_b)):
            x = 0
            widths = _partition_1d(rng, length, count)
            for k, w in enumerate(widths):
                rooms.append(_RoomRect(x, z0, x + w, z1))
                doors.append((0, len(rooms) - 1))
                if k > 0 and rng.random() < 0.3:
                    doors.append((len(rooms) - 2, len(rooms) - 1))
                x += w
        return rooms, doors

    area = n_rooms * int(rng.integers(1500, 2300))  # layout units^2 (1 unit^2 = 0.01 m^2)
    aspect = float(rng.uniform(1.0, 1.6))
    width = int(round(np.sqrt(area * aspect)))
    depth = max(int(round(area / width)), MIN_ROOM_DM)
    rects = [_RoomRect(0, 0, width, depth)]
    while len(rects) < n_rooms:
        splittable = [r for r in rects if max(r.x1 - r.x0, r.z1 - r.z0) >= 2 * MIN_ROOM_DM]
        if not splittable:
            break
        r = max(splittable, key=lambda q: (q.area, q.x0, q.z0))
        rects.remove(r)
        if r.x1 - r.x0 >= r.z1 - r.z0:
            cut = r.x0 + max(MIN_ROOM_DM, min(r.x1 - r.x0 - MIN_ROOM_DM, int((r.x1 - r.x0) * rng.uniform(0.35, 0.65))))
            rects += [_RoomRect(r.x0, r.z0, cut, r.z1), _RoomRect(cut, r.z0, r.x1, r.z1)]
        else:
            cut = r.z0 + max(MIN_ROOM_DM, min(r.z1 - r.z0 - MIN_ROOM_DM, int((r.z1 - r.z0) * rng.uniform(0.35, 0.65))))
            rects += [_RoomRect(r.x0, r.z0, r.x1, cut), _RoomRect(r.x0, cut, r.x1, r.z1)]
    rects.sort(key=lambda q: (q.z0, q.x0))
    pairs = [(i, j) for i in range(len(rects)) for j in range(i + 1, len(rects))
             if _shared_edge(rects[i], rects[j]) is not None]
    # random spanning tree (Kruskal over shuffled edges) plus a few extra doors
    order = rng.permutation(len(pairs))
    parent = list(range(len(rects)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    doors = []
    for k in order:
        i, j = pairs[k]
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            doors.append((i, j))
        elif rng.random() < 0.25:
            doors.append((i, j))
    return rects, doors


def _shared_edge(a: _RoomRect, b: _RoomRect):
    """The wall shared by two rooms as (axis, line, lo, hi) with overlap long enough for a door."""
    need = DOOR_WIDTH_DM + 6
    for axis, (a_lo, a_hi, b_lo, b_hi, a_s0, a_s1, b_s0, b_s1) in (
        ("x", (a.z0, a.z1, b.z0, b.z1, a.x0, a.x1, b.x0, b.x1)),
        ("z", (a.x0, a.x1, b.x0, b.x1, a.z0, a.z1, b.z0, b.z1)),
    ):
        lo, hi = max(a_lo, b_lo), min(a_hi, b_hi)
        if hi - lo >= need:
            if a_s1 == b_s0:
                return axis, a_s1, lo, hi
            if b_s1 == a_s0:
                return axis, a_s0, lo, hi
    return None


def _assign_types(rng, rects: list[_RoomRect]) -> None:
    rest = [r for r in rects if r.room_type != "hallway"]
    by_area = sorted(rest, key=lambda r: (r.area, r.x0, r.z0))
    n = len(rest)
    essentials = ["living room", "bedroom", "kitchen", "bathroom"][: n]
    optional = ["bedroom", "office", "dining room", "bathroom", "bedroom", "office"]
    types = essentials + [optional[int(i)] for i in rng.permutation(len(optional))[: max(0, n - len(essentials))]]
    # the smallest rooms are bathrooms, the largest is the living room
    ordered = sorted(types, key=lambda t: {"bathroom": 0, "office": 1, "bedroom": 2, "kitchen": 3,
                                           "dining room": 4, "living room": 5}[t])
    for rect, t in zip(by_area, ordered):
        rect.room_type = t


# --- the generator ------------------------------------------------------------------------------
def generate_house(seed: int, config: HouseConfig | None = None) -> Scene:
    """Build a house. The same ``seed`` and ``config`` always give the same scene.

    Args:
        seed: any non-negative integer.
        config: generator parameters (defaults: 3-9 rooms, 2-4 people).

    Returns:
        A ``Scene`` with rooms and objects; metres, y up, floor top at y = 0.
    """
    config = config or HouseConfig()
    config.validate()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"house seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    n_rooms = int(rng.integers(config.min_rooms, config.max_rooms + 1))
    rects, doors = _layout(rng, n_rooms)
    _assign_types(rng, rects)

    b = _Builder()
    counts: dict[str, int] = {}
    rooms: list[Room] = []
    for i, r in enumerate(rects):
        counts[r.room_type] = counts.get(r.room_type, 0) + 1
        name = r.room_type if counts[r.room_type] == 1 else f"{r.room_type} {counts[r.room_type]}"
        rooms.append(Room(i, r.room_type, name, (r.x0 * DM, r.z0 * DM, r.x1 * DM, r.z1 * DM)))

    W = max(r.x1 for r in rects)
    D = max(r.z1 for r in rects)
    house_paint = _jitter(rng, _pick(rng, PAINTS), 10)

    # floors and ceilings
    for room, r in zip(rooms, rects):
        x0, z0, x1, z1 = room.bounds_m
        floor_pattern = FLOOR_BY_ROOM.get(r.room_type, "planks")
        floor_color = _jitter(rng, _pick(rng, TILES if floor_pattern == "tiles" else WOODS), 12)
        iid = b.new_instance()
        b.add(shapes.box(((x0 + x1) / 2, -0.05, (z0 + z1) / 2), (x1 - x0, 0.1, z1 - z0)), "floor", iid, floor_color, floor_pattern)
        b.add_object(iid, "floor", room.room_id, (x0, -0.1, z0), (x1, 0, z1))
        iid = b.new_instance()
        b.add(shapes.box(((x0 + x1) / 2, WALL_HEIGHT + 0.05, (z0 + z1) / 2), (x1 - x0, 0.1, z1 - z0)), "ceiling", iid, (240, 240, 238), "flat")
        b.add_object(iid, "ceiling", room.room_id, (x0, WALL_HEIGHT, z0), (x1, WALL_HEIGHT + 0.1, z1))

    # wall units on grid lines: (axis, line, pos) -> the unit [pos, pos+1] on the line
    units: set[tuple[str, int, int]] = set()
    for r in rects:
        for z in range(r.z0, r.z1):
            units.add(("x", r.x0, z))
            units.add(("x", r.x1, z))
        for x in range(r.x0, r.x1):
            units.add(("z", r.z0, x))
            units.add(("z", r.z1, x))
    door_gaps = []  # (axis, line, lo, hi, room_a, room_b)
    for i, j in doors:
        axis, line, lo, hi = _shared_edge(rects[i], rects[j])
        start = int(rng.integers(lo + 3, hi - 3 - DOOR_WIDTH_DM + 1))
        for p in range(start, start + DOOR_WIDTH_DM):
            units.discard((axis, line, p))
        door_gaps.append((axis, line, start, start + DOOR_WIDTH_DM, i, j))

    def exterior(axis, line):
        return (axis == "x" and line in (0, W)) or (axis == "z" and line in (0, D))

    # merge units into runs
    runs = []
    for axis, line in sorted({(a, l) for a, l, _ in units}):
        ps = sorted(p for a, l, p in units if a == axis and l == line)
        start = prev = ps[0]
        for p in ps[1:] + [None]:
            if p is None or p != prev + 1:
                runs.append((axis, line, start, prev + 1))
                if p is not None:
                    start = p
            if p is not None:
                prev = p
    for axis, line, lo, hi in runs:
        t = EXTERIOR_WALL if exterior(axis, line) else INTERIOR_WALL
        paint = house_paint if exterior(axis, line) else _jitter(rng, _pick(rng, PAINTS), 10)
        pattern = "stripes_vertical" if rng.random() < 0.35 else "flat"
        length = (hi - lo) * DM + t
        c = line * DM
        mid = (lo + hi) / 2 * DM
        center = (c, WALL_HEIGHT / 2, mid) if axis == "x" else (mid, WALL_HEIGHT / 2, c)
        size = (t, WALL_HEIGHT, length) if axis == "x" else (length, WALL_HEIGHT, t)
        iid = b.new_instance()
        b.add(shapes.box(center, size), "wall", iid, paint, pattern)
        lo3 = np.subtract(center, np.divide(size, 2))
        b.add_object(iid, "wall", -1, lo3, lo3 + size)

    # door frames and lintels
    for axis, line, lo, hi, ra, _ in door_gaps:
        t = INTERIOR_WALL
        c = line * DM
        a, z = lo * DM + t / 2, hi * DM - t / 2  # the gap as narrowed by the wall ends

        iid = b.new_instance()
        lintel = _on_wall(axis, c, (a + z) / 2, (LINTEL_HEIGHT + WALL_HEIGHT) / 2, z - a, WALL_HEIGHT - LINTEL_HEIGHT, t)
        b.add(shapes.box(*lintel), "wall", iid, house_paint, "flat")
        iid = b.new_instance()
        frame = _jitter(rng, _pick(rng, WOODS))
        for center, size in (_on_wall(axis, c, a + 0.03, LINTEL_HEIGHT / 2, 0.06, LINTEL_HEIGHT, t + 0.04),
                             _on_wall(axis, c, z - 0.03, LINTEL_HEIGHT / 2, 0.06, LINTEL_HEIGHT, t + 0.04),
                             _on_wall(axis, c, (a + z) / 2, LINTEL_HEIGHT - 0.03, z - a, 0.06, t + 0.04)):
            b.add(shapes.box(center, size), "door", iid, frame, "grain")
        lo3 = (c - t / 2, 0, a) if axis == "x" else (a, 0, c - t / 2)
        hi3 = (c + t / 2, LINTEL_HEIGHT, z) if axis == "x" else (z, LINTEL_HEIGHT, c + t / 2)
        b.add_object(iid, "door", ra, lo3, hi3)

    furnisher = _Furnisher(rng, b, rects, rooms, door_gaps, W, D, config)
    for room, r in zip(rooms, rects):
        furnisher.furnish(room, r)
    furnisher.place_people(int(rng.integers(config.people_min, config.people_max + 1)))

    return scene_from_parts(
        b.parts,
        rooms=rooms,
        objects=b.objects,
        metadata={"generator": "vlnce.house", "generator_version": GENERATOR_VERSION, "seed": int(seed),
                  "num_rooms": len(rooms), "wall_height_m": WALL_HEIGHT},
    )


def _on_wall(axis, line_m, along_m, y_m, size_along_m, size_y_m, thickness_m):
    """Centre and size of a box on the wall line ``line_m`` (axis "x": the line x = line_m)."""
    if axis == "x":
        return (line_m, y_m, along_m), (thickness_m, size_y_m, size_along_m)
    return (along_m, y_m, line_m), (size_along_m, size_y_m, thickness_m)


class _Furnisher:
    """Places furniture in one room at a time on a 0.1 m occupancy grid of the whole house."""

    def __init__(self, rng, builder, rects, rooms, door_gaps, W, D, config) -> None:
        self.rng, self.b, self.rects, self.rooms = rng, builder, rects, rooms
        self.config = config
        self.W, self.D = W, D
        self.occ = np.zeros((W, D), bool)  # furniture footprints, layout units
        self.keep_free = np.zeros((W, D), bool)  # in front of doors
        self.doors_of: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(rects))}
        reach = 10  # door zones reach 1 m into each room
        for axis, line, lo, hi, ra, rb in door_gaps:
            for room_idx in (ra, rb):
                r = rects[room_idx]
                if axis == "x":
                    xs = range(max(r.x0, line - reach), min(r.x1, line + reach))
                    zs = range(lo, hi)
                else:
                    xs = range(lo, hi)
                    zs = range(max(r.z0, line - reach), min(r.z1, line + reach))
                for x in xs:
                    for z in zs:
                        if r.x0 <= x < r.x1 and r.z0 <= z < r.z1:
                            self.keep_free[x, z] = True
                cell = (min(max(line if axis == "x" else (lo + hi) // 2, r.x0), r.x1 - 1),
                        min(max((lo + hi) // 2 if axis == "x" else line, r.z0), r.z1 - 1))
                self.doors_of[room_idx].append(cell)

    # footprint in layout units, inclusive-exclusive, from a centre and size in metres
    @staticmethod
    def _cells(cx, cz, sx, sz):
        return (int(np.floor(cx / DM - sx / DM / 2)), int(np.floor(cz / DM - sz / DM / 2)),
                int(np.ceil(cx / DM + sx / DM / 2)), int(np.ceil(cz / DM + sz / DM / 2)))

    def _fits(self, room_idx, cells, wall_margin=1) -> bool:
        r = self.rects[room_idx]
        x0, z0, x1, z1 = cells
        if x0 < r.x0 + wall_margin or z0 < r.z0 + wall_margin or x1 > r.x1 - wall_margin or z1 > r.z1 - wall_margin:
            return False
        if self.occ[x0:x1, z0:z1].any() or self.keep_free[x0:x1, z0:z1].any():
            return False
        return self._stays_connected(room_idx, cells)

    def _stays_connected(self, room_idx, cells) -> bool:
        """True if every door of the room stays reachable from every other with the new footprint."""
        from scipy import ndimage

        r = self.rects[room_idx]
        occ = self.occ[r.x0:r.x1, r.z0:r.z1].copy()
        x0, z0, x1, z1 = cells
        occ[x0 - r.x0:x1 - r.x0, z0 - r.z0:z1 - r.z0] = True
        margin = int(np.ceil(AGENT_CLEARANCE / DM))
        blocked = ndimage.binary_dilation(occ, iterations=margin) if occ.any() else occ
        blocked[:margin, :] |= True
        blocked[-margin:, :] |= True
        blocked[:, :margin] |= True
        blocked[:, -margin:] |= True
        free = ~blocked
        doors = [(x - r.x0, z - r.z0) for x, z in self.doors_of[room_idx]]
        for dx, dz in doors:  # door cells lie on the wall; open a corridor to them
            free[max(dx - 2, 0):dx + 3, max(dz - 2, 0):dz + 3] = True
        labels, _ = ndimage.label(free)
        ids = {labels[min(dx, free.shape[0] - 1), min(dz, free.shape[1] - 1)] for dx, dz in doors}
        if 0 in ids or len(ids) > 1:
            return False
        # keep at least 40% of the room free, so rooms stay walkable
        return free.mean() > 0.4

    def _place(self, room, builder_out, category, placement, tries=30):
        """Try to place a built object; returns (centre x, centre z, yaw, extent x, extent z) or None."""
        rng = self.rng
        w, d, parts = builder_out
        x0m, z0m, x1m, z1m = room.bounds_m
        half_wall = INTERIOR_WALL / 2 + 0.02
        for _ in range(tries):
            if placement in ("wall", "corner"):
                side = int(rng.integers(4))
                yaw = (0.0, np.pi, np.pi / 2, -np.pi / 2)[side]
                ew, ed = (w, d) if side < 2 else (d, w)
                if placement == "corner":
                    t = float(rng.integers(2))
                else:
                    t = float(rng.uniform(0, 1))
                if side == 0:
                    cx, cz = x0m + half_wall + ew / 2 + t * (x1m - x0m - 2 * half_wall - ew), z0m + half_wall + ed / 2
                elif side == 1:
                    cx, cz = x0m + half_wall + ew / 2 + t * (x1m - x0m - 2 * half_wall - ew), z1m - half_wall - ed / 2
                elif side == 2:
                    cx, cz = x0m + half_wall + ew / 2, z0m + half_wall + ed / 2 + t * (z1m - z0m - 2 * half_wall - ed)
                else:
                    cx, cz = x1m - half_wall - ew / 2, z0m + half_wall + ed / 2 + t * (z1m - z0m - 2 * half_wall - ed)
                margin = 0
            else:  # free-standing, anywhere with space around it
                yaw = float(rng.integers(4)) * np.pi / 2
                ew, ed = (w, d) if int(round(yaw / (np.pi / 2))) % 2 == 0 else (d, w)
                cx = float(rng.uniform(x0m + ew / 2 + 0.5, max(x0m + ew / 2 + 0.5, x1m - ew / 2 - 0.5)))
                cz = float(rng.uniform(z0m + ed / 2 + 0.5, max(z0m + ed / 2 + 0.5, z1m - ed / 2 - 0.5)))
                margin = 1
            cells = self._cells(cx, cz, ew, ed)
            if not self._fits(room.room_id, cells, wall_margin=margin):
                continue
            self.occ[cells[0]:cells[2], cells[1]:cells[3]] = True
            self._emit(room, parts, category, yaw, (cx, 0.0, cz))
            return (cx, cz, yaw, ew, ed)
        return None

    def _emit(self, room, parts, category, yaw, translation) -> None:
        """Add an object's parts, rotated by ``yaw`` and moved to ``translation``, as one instance."""
        iid = self.b.new_instance()
        lo = np.array([np.inf] * 3)
        hi = -lo
        for geom, color, pattern in parts:
            v = shapes.transform(geom[0], yaw, translation)
            lo, hi = np.minimum(lo, v.min(0)), np.maximum(hi, v.max(0))
            self.b.add((v, geom[1]), category, iid, color, pattern)
        self.b.add_object(iid, category, room.room_id, lo, hi)

    def _wall_item(self, room, category, exterior_only=False):
        rng = self.rng
        r = self.rects[room.room_id]
        x0m, z0m, x1m, z1m = room.bounds_m
        sides = []
        for side, (is_ext) in enumerate((r.z0 == 0, r.z1 == self.D, r.x0 == 0, r.x1 == self.W)):
            if exterior_only and not is_ext:
                continue
            sides.append((side, is_ext))
        if not sides:
            return
        side, is_ext = sides[int(rng.integers(len(sides)))]
        w, h, y0, color, pattern = _wall_item(rng, category)
        t = (EXTERIOR_WALL if is_ext else INTERIOR_WALL) / 2
        length = (x1m - x0m) if side < 2 else (z1m - z0m)
        if length < w + 0.6:
            return
        along = float(rng.uniform(0.3 + w / 2, length - 0.3 - w / 2))
        depth = 0.03
        if side == 0:
            center, size = (x0m + along, y0 + h / 2, z0m + t + depth / 2), (w, h, depth)
        elif side == 1:
            center, size = (x0m + along, y0 + h / 2, z1m - t - depth / 2), (w, h, depth)
        elif side == 2:
            center, size = (x0m + t + depth / 2, y0 + h / 2, z0m + along), (depth, h, w)
        else:
            center, size = (x1m - t - depth / 2, y0 + h / 2, z0m + along), (depth, h, w)
        # wall items do not block walking, but they must not hang across a door gap
        cells = self._cells(center[0], center[2], max(size[0], 0.3), max(size[2], 0.3))
        cx0, cz0, cx1, cz1 = (max(cells[0], 0), max(cells[1], 0), min(cells[2], self.W), min(cells[3], self.D))
        if self.keep_free[cx0:cx1, cz0:cz1].any():
            return
        iid = self.b.new_instance()
        self.b.add(shapes.box(center, size), category, iid, color, pattern)
        lo = np.subtract(center, np.divide(size, 2))
        self.b.add_object(iid, category, room.room_id, lo, lo + size)

    def furnish(self, room: Room, rect: _RoomRect) -> None:
        rng = self.rng
        for category, placement, prob in ROOM_FURNITURE[rect.room_type]:
            p = prob if prob >= 1.0 else prob * self.config.furniture_density
            if rng.random() >= p:
                continue
            if placement == "wall_item":
                self._wall_item(room, category)
            elif placement == "exterior_item":
                self._wall_item(room, category, exterior_only=True)
            elif placement == "tv":
                stand = self._place(room, _tv_stand(rng), "cabinet", "wall")
                if stand is not None:
                    self._on_top(room, stand, _tv(rng), "tv_monitor", 0.5)
            elif placement == "desk":
                desk = self._place(room, _table(rng, float(rng.uniform(1.2, 1.6)), 0.7), "table", "wall")
                if desk is not None:
                    self._on_top(room, desk, _tv(rng, 0.55), "tv_monitor", 0.75, back=0.2)
                    self._chair_in_front(room, desk)
            elif placement == "dining":
                self._dining(room)
            elif category == "coffee_table":
                self._place(room, _table(rng, float(rng.uniform(0.9, 1.3)), 0.6, 0.45), "table", "free")
            else:
                self._place(room, BUILDERS[category](rng), category, placement)

    def _on_top(self, room, base, built, category, height, back=0.0):
        cx, cz, yaw, _, _ = base
        w, d, parts = built
        offset = shapes.transform(np.array([[0.0, 0.0, -back]]), yaw, (0, 0, 0))[0]
        self._emit(room, parts, category, yaw, (cx + offset[0], height, cz + offset[2]))

    def _chair_in_front(self, room, desk):
        cx, cz, yaw, ew, ed = desk
        front = shapes.transform(np.array([[0.0, 0.0, 0.75]]), yaw, (cx, 0, cz))[0]
        self._place_exact(room, _chair(self.rng), "chair", front[0], front[2], yaw + np.pi)

    def _place_exact(self, room, built, category, cx, cz, yaw) -> bool:
        w, d, parts = built
        quarter = int(round(yaw / (np.pi / 2))) % 2
        ew, ed = (w, d) if quarter == 0 else (d, w)
        cells = self._cells(cx, cz, ew, ed)
        if not self._fits(room.room_id, cells, wall_margin=0):
            return False
        self.occ[cells[0]:cells[2], cells[1]:cells[3]] = True
        self._emit(room, parts, category, yaw, (cx, 0.0, cz))
        return True

    def _dining(self, room):
        rng = self.rng
        w, d = float(rng.uniform(1.2, 1.8)), float(rng.uniform(0.8, 1.0))
        table = self._place(room, _table(rng, w, d), "table", "free")
        if table is None:
            return
        cx, cz, yaw, ew, ed = table
        seats = []
        for along in (-0.3, 0.3):
            seats.append((cx + along * ew, cz - ed / 2 - 0.3, 0.0))
            seats.append((cx + along * ew, cz + ed / 2 + 0.3, np.pi))
        for sx, sz, syaw in seats:
            self._place_exact(room, _chair(rng), "chair", sx, sz, syaw)

    def place_people(self, count: int) -> None:
        rng = self.rng
        candidates = [room for room in self.rooms if room.room_type != "bathroom"]
        for _ in range(count):
            room = candidates[int(rng.integers(len(candidates)))]
            self._place(room, _person(rng), "person", "free", tries=40)


def _person(rng):
    """A standing person: legs, torso, arms, head; identity by size and clothing."""
    height = float(rng.uniform(1.55, 1.9))
    width = float(rng.uniform(0.85, 1.15))
    skin = _jitter(rng, _pick(rng, SKINS), 10)
    shirt = _jitter(rng, _pick(rng, FABRICS), 60)
    pants = _jitter(rng, _pick(rng, FABRICS + [(40, 50, 90)]), 40)
    leg_h = 0.47 * height
    head_r = 0.065 * height
    torso_h = height - leg_h - 2 * head_r  # the head sits on the torso: total = height
    r_torso = 0.16 * width
    shirt_pattern = _pick(rng, ["flat", "stripes_horizontal", "dots", "stripes_vertical"])
    parts = [
        (shapes.cylinder((-0.08 * width, 0, 0), 0.065 * width, leg_h, 8), pants, "flat"),
        (shapes.cylinder((0.08 * width, 0, 0), 0.065 * width, leg_h, 8), pants, "flat"),
        (shapes.cylinder((0, leg_h, 0), r_torso, torso_h, 12), shirt, shirt_pattern),
        (shapes.cylinder((-r_torso - 0.045, leg_h + 0.05 * height, 0), 0.04, torso_h * 0.9, 6), shirt, "flat"),
        (shapes.cylinder((r_torso + 0.045, leg_h + 0.05 * height, 0), 0.04, torso_h * 0.9, 6), shirt, "flat"),
        (shapes.sphere((0, leg_h + torso_h + head_r, 0), head_r), skin, "flat"),
    ]
    span = 2 * (r_torso + 0.09)
    return span, 0.35, parts
