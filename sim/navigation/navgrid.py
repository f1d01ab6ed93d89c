"""The navigable area of any triangle mesh for a cylinder agent, as a 2.5-D grid.

Built in three passes over the mesh:

1. Vertical rays from above every cell find all surfaces stacked over it. Upward-facing surfaces
   (normal within 45 degrees of +y, as Recast's walkable slope) with at least ``agent_height_m`` of headroom are floor candidates; the walking level is the
   lowest level holding a substantial share of them (or ``floor_height_m`` when given), so roofs
   and table tops are not walked on. A cell has floor if a horizontal surface lies within
   ``agent_max_climb_m`` of that level, and headroom if nothing is above it for the agent height.
2. Horizontal slices of the mesh between climb height and agent height mark every cell that an
   obstacle crosses, so thin walls and chair legs that vertical rays miss still block.
3. The free cells are eroded by the agent radius (Euclidean distance transform) and split into
   8-connected islands.

The grid is cached on disk per scene geometry and settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from sim.scenes.scene import Scene
from vlnce.errors import ConfigError, NavigationError, SceneError
from vlnce.fileio import atomic_path

log = logging.getLogger(__name__)
NAVGRID_VERSION = 1
_MAX_LAYERS = 10


@dataclass(frozen=True)
class NavMeshSettings:
    """Agent body and grid resolution (names follow habitat_sim.NavMeshSettings).

    Attributes:
        cell_size_m: grid resolution, metres.
        agent_radius_m: cylinder radius, metres (VLN-CE: 0.1).
        agent_height_m: cylinder height, metres (VLN-CE: 1.5).
        agent_max_climb_m: steps up to this height are walkable, metres.
        floor_height_m: walking level y, metres; None picks the lowest large level.
        num_slices: horizontal obstacle slices between climb and agent height.
    """

    cell_size_m: float = 0.05
    agent_radius_m: float = 0.1
    agent_height_m: float = 1.5
    agent_max_climb_m: float = 0.2
    floor_height_m: float | None = None
    num_slices: int = 8

    def validate(self) -> None:
        if not (0.005 <= self.cell_size_m <= 0.5):
            raise ConfigError(f"navigation.cell_size_m must be in [0.005, 0.5], got {self.cell_size_m}")
        if not (0.0 < self.agent_radius_m <= 2.0):
            raise ConfigError(f"navigation.agent_radius_m must be in (0, 2], got {self.agent_radius_m}")
        if not (self.agent_max_climb_m < self.agent_height_m <= 5.0) or self.agent_max_climb_m < 0:
            raise ConfigError("navigation needs 0 <= agent_max_climb_m < agent_height_m <= 5, got "
                              f"{self.agent_max_climb_m}, {self.agent_height_m}")
        if self.num_slices < 1:
            raise ConfigError(f"navigation.num_slices must be >= 1, got {self.num_slices}")


class NavGrid:
    """A navigable-area grid. Cell (i, k) covers x in [x0 + i c, x0 + (i+1) c), z likewise.

    Attributes:
        origin_xz: (x0, z0) of the grid corner, metres.
        cell_size_m: c, metres.
        floor_y: (nx, nz) float32 floor height per cell, NaN where there is no floor.
        free: (nx, nz) bool floor with headroom and no obstacle.
        navigable: (nx, nz) bool cells where the agent centre may stand.
        clearance_m: (nx, nz) float32 distance from the cell centre to the nearest non-free cell.
        islands: (nx, nz) int32 connected component id, 0 where not navigable.
        level_y: the walking level, metres.
    """

    def __init__(self, origin_xz, cell_size_m, floor_y, free, settings: NavMeshSettings, level_y: float) -> None:
        self.origin_xz = np.asarray(origin_xz, np.float64)
        self.cell_size_m = float(cell_size_m)
        self.floor_y = np.asarray(floor_y, np.float32)
        self.free = np.asarray(free, bool)
        self.settings = settings
        self.level_y = float(level_y)
        c = self.cell_size_m
        self.clearance_m = (ndimage.distance_transform_edt(self.free) * c).astype(np.float32)
        # the obstacle surface can lie anywhere in a blocked cell: keep half a cell of margin
        self.navigable = self.clearance_m >= settings.agent_radius_m + 0.5 * c
        structure = np.ones((3, 3), bool)
        self.islands, self.num_islands = ndimage.label(self.navigable, structure=structure)
        self.islands = self.islands.astype(np.int32)
        sizes = np.bincount(self.islands.ravel(), minlength=self.num_islands + 1)
        sizes[0] = 0
        self.island_sizes = sizes
        self.largest_island = int(np.argmax(sizes)) if self.num_islands else 0
        gx, gz = np.gradient(self.clearance_m)
        self._grad = (gx.astype(np.float32), gz.astype(np.float32))
        self._snap_index = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.free.shape

    @property
    def navigable_area_m2(self) -> float:
        return float(self.navigable.sum()) * self.cell_size_m ** 2

    # --- coordinates ------------------------------------------------------------------------
    def to_cell(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices (i, k) of world points (..., 3) or (..., 2 as x, z); may be out of range."""
        p = np.asarray(points, np.float64)
        x, z = (p[..., 0], p[..., 2]) if p.shape[-1] == 3 else (p[..., 0], p[..., 1])
        i = np.floor((x - self.origin_xz[0]) / self.cell_size_m).astype(np.int64)
        k = np.floor((z - self.origin_xz[1]) / self.cell_size_m).astype(np.int64)
        return i, k

    def cell_center(self, i, k) -> np.ndarray:
        """World points (..., 3) at the centres of cells, y = floor height (level where none)."""
        i = np.asarray(i)
        k = np.asarray(k)
        x = self.origin_xz[0] + (i + 0.5) * self.cell_size_m
        z = self.origin_xz[1] + (k + 0.5) * self.cell_size_m
        y = self.floor_y[np.clip(i, 0, self.shape[0] - 1), np.clip(k, 0, self.shape[1] - 1)].astype(np.float64)
        y = np.where(np.isfinite(y), y, self.level_y)
        return np.stack([x, y, z], axis=-1)

    def in_bounds(self, i, k) -> np.ndarray:
        return (i >= 0) & (k >= 0) & (i < self.shape[0]) & (k < self.shape[1])

    def navigable_at(self, points) -> np.ndarray:
        """Whether each point's cell is navigable (y ignored), shape of points[..., 0]."""
        i, k = self.to_cell(points)
        ok = self.in_bounds(i, k)
        out = np.zeros(np.shape(i), bool)
        out[ok] = self.navigable[i[ok], k[ok]]
        return out

    def is_navigable(self, point, max_y_delta: float = 0.5) -> bool:
        """True if the agent may stand at ``point`` (x, y, z): navigable cell, y within ``max_y_delta``."""
        p = np.asarray(point, np.float64).reshape(3)
        i, k = self.to_cell(p)
        if not self.in_bounds(i, k) or not self.navigable[i, k]:
            return False
        return abs(p[1] - float(self.floor_y[i, k])) <= max_y_delta

    def island_of(self, point) -> int:
        """Island id of the point's cell, 0 if not navigable."""
        i, k = self.to_cell(np.asarray(point, np.float64).reshape(3))
        if not self.in_bounds(i, k):
            return 0
        return int(self.islands[i, k])

    def snap_point(self, point) -> np.ndarray:
        """The navigable cell centre closest to ``point`` (x, y, z), on the floor.

        Raises:
            NavigationError: if nothing in the scene is navigable.
        """
        if not self.navigable.any():
            raise NavigationError("the scene has no navigable area to snap to")
        p = np.asarray(point, np.float64).reshape(3)
        i, k = self.to_cell(p)
        i = int(np.clip(i, 0, self.shape[0] - 1))
        k = int(np.clip(k, 0, self.shape[1] - 1))
        if self._snap_index is None:
            _, self._snap_index = ndimage.distance_transform_edt(~self.navigable, return_indices=True)
        si, sk = self._snap_index[0][i, k], self._snap_index[1][i, k]
        return self.cell_center(si, sk)

    def sample_navigable_point(self, rng: np.random.Generator, island: int | None = None) -> np.ndarray:
        """A uniformly random point on the navigable area (of ``island``; default the largest).

        Args:
            rng: the caller's generator.
            island: island id, or None for the largest island, or -1 for any island.
        """
        island = self.largest_island if island is None else island
        mask = self.navigable if island == -1 else (self.islands == island)
        cells = np.flatnonzero(mask)
        if len(cells) == 0:
            raise NavigationError(f"no navigable cells to sample from (island {island})")
        flat = cells[int(rng.integers(len(cells)))]
        i, k = np.unravel_index(flat, self.shape)
        p = self.cell_center(i, k)
        jitter = (rng.random(2) - 0.5) * self.cell_size_m * 0.98
        return np.array([p[0] + jitter[0], p[1], p[2] + jitter[1]])

    def obstacle_normal(self, point) -> np.ndarray:
        """Unit (x, 0, z) direction of increasing clearance at a point (zero in open space)."""
        i, k = self.to_cell(np.asarray(point, np.float64).reshape(3))
        i = int(np.clip(i, 0, self.shape[0] - 1))
        k = int(np.clip(k, 0, self.shape[1] - 1))
        g = np.array([self._grad[0][i, k], 0.0, self._grad[1][i, k]])
        n = np.linalg.norm(g)
        return g / n if n > 1e-9 else np.zeros(3)

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, origin_xz=self.origin_xz, cell_size_m=self.cell_size_m, floor_y=self.floor_y,
                    free=self.free, level_y=self.level_y, version=NAVGRID_VERSION,
                    settings=json.dumps(asdict(self.settings)))

    @classmethod
    def load(cls, path: Path) -> "NavGrid":
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != NAVGRID_VERSION:
                raise SceneError(f"{path}: nav grid version {int(data['version'])}, expected {NAVGRID_VERSION}")
            settings = NavMeshSettings(**json.loads(str(data["settings"])))
            return cls(data["origin_xz"], float(data["cell_size_m"]), data["floor_y"], data["free"],
                       settings, float(data["level_y"]))


def _column_hits(caster, origin_xz, shape, c, top_y):
    """Surfaces stacked above each cell centre: (layers, n) y values and |normal_y| (NaN = none)."""

    nx, nz = shape
    ii, kk = np.meshgrid(np.arange(nx), np.arange(nz), indexing="ij")
    xs = (origin_xz[0] + (ii.ravel() + 0.5) * c).astype(np.float32)
    zs = (origin_xz[1] + (kk.ravel() + 0.5) * c).astype(np.float32)
    n = len(xs)
    ys = np.full((_MAX_LAYERS, n), np.nan, np.float32)
    prims = np.full((_MAX_LAYERS, n), -1, np.int64)
    active = np.arange(n)
    start_y = np.full(n, top_y, np.float32)
    down = np.tile(np.array([0, -1, 0], np.float32), (n, 1))
    for layer in range(_MAX_LAYERS):
        if len(active) == 0:
            break
        origins = np.stack([xs[active], start_y[active], zs[active]], 1)
        t, prim = caster.cast(origins, down[: len(active)])
        hit = prim >= 0
        active, t, prim = active[hit], t[hit], prim[hit]
        y = start_y[active] - t
        ys[layer, active] = y
        prims[layer, active] = prim
        start_y[active] = y - 1e-3
    return ys, prims


def _slice_segments(tri: np.ndarray, h: float) -> np.ndarray:
    """Segments (M, 2, 2) in (x, z) where the plane y = h cuts the triangles (F, 3, 3)."""
    y = tri[:, :, 1] - h
    y = np.where(y == 0, 1e-7, y)  # keep vertices off the plane so every cut has two edge crossings
    crosses = (y.min(1) < 0) & (y.max(1) > 0)
    t3 = tri[crosses]
    y3 = y[crosses]
    pts = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        ya, yb = y3[:, a], y3[:, b]
        edge = ya * yb < 0
        f = np.where(edge, ya / np.where(edge, ya - yb, 1.0), 0.0)
        p = t3[:, a] + (t3[:, b] - t3[:, a]) * f[:, None]
        pts.append((edge, p[:, [0, 2]]))
    segs = []
    (e0, p0), (e1, p1), (e2, p2) = pts
    for ea, pa, eb, pb in ((e0, p0, e1, p1), (e1, p1, e2, p2), (e0, p0, e2, p2)):
        sel = ea & eb
        segs.append(np.stack([pa[sel], pb[sel]], 1))
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def _rasterise_segments(segs: np.ndarray, origin_xz, shape, c) -> np.ndarray:
    out = np.zeros(shape, bool)
    if len(segs) == 0:
        return out
    length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1)
    n = np.maximum(2, np.ceil(length / (0.25 * c)).astype(np.int64) + 1)
    seg_id = np.repeat(np.arange(len(segs)), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    f = offsets / np.repeat(n - 1, n)
    p = segs[seg_id, 0] + (segs[seg_id, 1] - segs[seg_id, 0]) * f[:, None]
    i = np.floor((p[:, 0] - origin_xz[0]) / c).astype(np.int64)
    k = np.floor((p[:, 1] - origin_xz[1]) / c).astype(np.int64)
    ok = (i >= 0) & (k >= 0) & (i < shape[0]) & (k < shape[1])
    out[i[ok], k[ok]] = True
    return out


def build_navgrid(scene: Scene, settings: NavMeshSettings | None = None, caster=None) -> NavGrid:
    """Compute the navigable grid of a scene (see the module docstring).

    Raises:
        SceneError: if the mesh has no floor (no horizontal surface with headroom for the agent).
    """
    from sim.sensors.raycast import RayCaster

    settings = settings or NavMeshSettings()
    settings.validate()
    c = settings.cell_size_m
    lo, hi = scene.bounds
    origin_xz = np.array([lo[0] - c, lo[2] - c])
    shape = (int(np.ceil((hi[0] - lo[0]) / c)) + 2, int(np.ceil((hi[2] - lo[2]) / c)) + 2)
    if shape[0] * shape[1] > 25_000_000:
        raise SceneError(f"scene footprint {hi[0] - lo[0]:.1f} x {hi[2] - lo[2]:.1f} m is too large for a "
                         f"{c} m grid; raise navigation.cell_size_m")
    own_caster = caster is None
    caster = caster or RayCaster(scene.triangles())
    try:
        ys, prims = _column_hits(caster, origin_xz, shape, c, float(hi[1]) + 1.0)
    finally:
        if own_caster:
            caster.close()
    # walkable surfaces face up, as in Recast: the underside of a box standing on the floor
    # (a downward face) must not count as floor inside the box
    normals_y = scene.face_normals()[:, 1]
    horizontal = np.where(prims >= 0, normals_y[np.clip(prims, 0, None)] > 0.7, False)
    above = np.vstack([np.full((1, ys.shape[1]), np.inf, np.float32), ys[:-1]])
    above = np.where(np.isnan(above), np.inf, above)
    headroom = above - ys
    candidate = horizontal & (headroom >= settings.agent_height_m)
    if not candidate.any():
        raise SceneError("mesh has no floor: no horizontal surface with "
                         f"{settings.agent_height_m} m of headroom was found")
    cand_y = ys[candidate]
    if settings.floor_height_m is not None:
        level = float(settings.floor_height_m)
    else:
        bins = np.round(cand_y / 0.1).astype(np.int64)
        values, counts = np.unique(bins, return_counts=True)
        level_bin = values[np.flatnonzero(counts >= 0.25 * counts.max())[0]]
        level = float(np.median(cand_y[bins == level_bin]))
    band = horizontal & (np.abs(ys - level) <= settings.agent_max_climb_m)
    first = np.argmax(band, axis=0)  # the topmost surface in the band: the agent stands on it
    has_floor = band.any(axis=0)
    cols = np.arange(ys.shape[1])
    floor_y = np.where(has_floor, ys[first, cols], np.nan)
    # a downward ray whose previous hit faced up entered a solid and has not left it: the floor
    # found below lies inside furniture (a fridge standing on the floor), not in open space
    ny_layers = np.where(prims >= 0, normals_y[np.clip(prims, 0, None)], 0.0)
    prev_ny = np.where(first > 0, ny_layers[np.maximum(first - 1, 0), cols], -1.0)
    head_ok = has_floor & (headroom[first, cols] >= settings.agent_height_m) & (prev_ny <= 0.0)
    floor_y = floor_y.reshape(shape).astype(np.float32)
    free = head_ok.reshape(shape)
    if not free.any():
        raise SceneError(f"mesh has no floor at level y = {level:.2f} m with room for the agent")

    tri = scene.triangles().astype(np.float64)
    blocked = np.zeros(shape, bool)
    y0 = level + settings.agent_max_climb_m
    span = settings.agent_height_m - settings.agent_max_climb_m
    for s in range(settings.num_slices):
        h = y0 + span * (s + 0.5) / settings.num_slices
        blocked |= _rasterise_segments(_slice_segments(tri, h), origin_xz, shape, c)
    free &= ~blocked
    grid = NavGrid(origin_xz, c, floor_y, free, settings, level)
    if not grid.navigable.any():
        raise SceneError(f"mesh has no floor where the agent fits (radius {settings.agent_radius_m} m, height "
                         f"{settings.agent_height_m} m) at level y = {level:.2f} m")
    return grid


def navgrid_cache_key(scene: Scene, settings: NavMeshSettings) -> str:
    payload = json.dumps({"scene": scene.content_hash(), "settings": asdict(settings), "v": NAVGRID_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_or_build_navgrid(scene: Scene, settings: NavMeshSettings, cache_dir: Path | None, caster=None) -> NavGrid:
    """Load the scene's grid from ``cache_dir`` or build and cache it (no caching when None)."""
    if cache_dir is None:
        return build_navgrid(scene, settings, caster)
    path = Path(cache_dir) / "navgrid" / f"{navgrid_cache_key(scene, settings)}.npz"
    if path.is_file():
        try:
            return NavGrid.load(path)
        except Exception as exc:  # a corrupt cache entry is rebuilt, never fatal
            log.warning("ignoring unreadable nav grid cache %s (%s)", path, exc)
    grid = build_navgrid(scene, settings, caster)
    try:
        grid.save(path)
    except OSError as exc:
        log.warning("could not write nav grid cache %s (%s)", path, exc)
    return grid
