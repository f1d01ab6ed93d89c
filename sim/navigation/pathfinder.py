"""Geodesic distances and shortest paths on a nav grid.

A 16-neighbour Dijkstra field to the goal gives the route (a cell chain that never cuts a
blocked corner); the route is then string-pulled into a taut polyline between the true
continuous endpoints. Distances are measured along that polyline, so they are never shorter than
the straight line and, where the straight line is free, equal to it. The raw field (the
"distance field to a goal") overestimates by at most 2.7% (the 16-neighbour metric) and is
exposed for planners that need a value at every cell.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from sim.navigation.navgrid import NavGrid
from vlnce.errors import NavigationError

# (di, dk, intermediate cells that the segment crosses and that must be navigable too)
_OFFSETS = [
    (1, 0, ()), (0, 1, ()),
    (1, 1, ((1, 0), (0, 1))), (1, -1, ((1, 0), (0, -1))),
    (2, 1, ((1, 0), (1, 1))), (1, 2, ((0, 1), (1, 1))),
    (2, -1, ((1, 0), (1, -1))), (1, -2, ((0, -1), (1, -1))),
]


class PathFinder:
    """Shortest paths on one nav grid.

    Args:
        grid: the navigable grid.
        max_cached_fields: how many goal fields to keep (least recently used are dropped).
    """

    def __init__(self, grid: NavGrid, max_cached_fields: int = 64) -> None:
        self.grid = grid
        nav = grid.navigable
        self._node = np.full(nav.shape, -1, np.int64)
        cells = np.argwhere(nav)
        self._node[nav] = np.arange(len(cells))
        self._cells = cells
        rows, cols, weights = [], [], []
        nx, nz = nav.shape
        c = grid.cell_size_m
        for di, dk, mids in _OFFSETS:
            i0, i1 = max(0, -di), min(nx, nx - di)
            k0, k1 = max(0, -dk), min(nz, nz - dk)
            ok = nav[i0:i1, k0:k1] & nav[i0 + di:i1 + di, k0 + dk:k1 + dk]
            for mi, mk in mids:
                ok &= nav[i0 + mi:i1 + mi, k0 + mk:k1 + mk]
            a = self._node[i0:i1, k0:k1][ok]
            b = self._node[i0 + di:i1 + di, k0 + dk:k1 + dk][ok]
            rows.append(a)
            cols.append(b)
            weights.append(np.full(len(a), c * np.hypot(di, dk)))
        n = len(cells)
        r, c_, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
        # both directions stored: directed Dijkstra then skips scipy's per-call symmetrisation
        self._graph = coo_matrix((np.concatenate([w, w]), (np.concatenate([r, c_]), np.concatenate([c_, r]))),
                                 shape=(n, n)).tocsr()
        self._fields: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._max_fields = max_cached_fields

    # --- fields -------------------------------------------------------------------------------
    def _goal_nodes(self, goals) -> tuple[int, ...]:
        nodes = []
        for g in np.asarray(goals, np.float64).reshape(-1, 3):
            gi, gk = self._cell_of(g)
            nodes.append(int(self._node[gi, gk]))
        return tuple(sorted(set(nodes)))

    def _cell_of(self, point) -> tuple[int, int]:
        """The point's cell, or the nearest navigable cell when it is off the navigable area."""
        i, k = self.grid.to_cell(point)
        if self.grid.in_bounds(i, k) and self.grid.navigable[i, k]:
            return int(i), int(k)
        snapped = self.grid.snap_point(point)
        i, k = self.grid.to_cell(snapped)
        return int(i), int(k)

    def _field(self, goals) -> tuple[np.ndarray, np.ndarray]:
        key = self._goal_nodes(goals)
        if key in self._fields:
            self._fields.move_to_end(key)
            return self._fields[key]
        dist, pred = dijkstra(self._graph, directed=True, indices=list(key), return_predecessors=True,
                              min_only=True)[:2]
        self._fields[key] = (dist, pred)
        if len(self._fields) > self._max_fields:
            self._fields.popitem(last=False)
        return dist, pred

    def distance_field(self, goals) -> np.ndarray:
        """Approximate geodesic distance (metres) from every cell to the nearest goal.

        Args:
            goals: (3,) or (G, 3) goal points.

        Returns:
            (nx, nz) float32, ``inf`` where unreachable or not navigable.
        """
        dist, _ = self._field(goals)
        out = np.full(self.grid.shape, np.inf, np.float32)
        out[self.grid.navigable] = dist
        return out

    # --- paths --------------------------------------------------------------------------------
    def line_of_sight(self, a, b) -> bool:
        """True if the segment a-b stays on navigable cells (checked every quarter cell)."""
        return bool(self._visible_from(np.asarray(a, np.float64), np.asarray(b, np.float64)[None])[0])

    def _visible_from(self, a: np.ndarray, targets: np.ndarray, step_cells: float = 0.25) -> np.ndarray:
        step = step_cells * self.grid.cell_size_m
        d = targets[:, [0, 2]] - a[[0, 2]]
        length = np.linalg.norm(d, axis=1)
        n = int(np.ceil(length.max() / step)) + 2 if len(length) else 2
        f = np.linspace(0.0, 1.0, n)
        pts = a[[0, 2]] + d[:, None, :] * f[None, :, None]  # (T, n, 2)
        i, k = self.grid.to_cell(pts)
        ok = self.grid.in_bounds(i, k)
        nav = np.zeros(i.shape, bool)
        nav[ok] = self.grid.navigable[i[ok], k[ok]]
        return nav.all(axis=1)

    def find_path(self, start, goals) -> tuple[list[np.ndarray], float]:
        """Shortest path from ``start`` to the nearest of ``goals``.

        Off-grid endpoints are snapped to the nearest navigable point first (as Habitat does).

        Args:
            start: (3,) point, metres.
            goals: (3,) or (G, 3) points.

        Returns:
            The waypoints (start and goal included, y on the floor) and the path length in
            metres; ``([], inf)`` when no goal is reachable.
        """
        a, goal_arr, ends, visible = self._endpoints(start, goals)
        # the straight line is the geodesic when it is free, unless another goal is nearer even
        # as the crow flies (then that one may be geodesically nearer too)
        if visible.any():
            euclid = [float(np.linalg.norm(e - a)) for e in ends]
            best = min((d, j) for j, d in enumerate(euclid) if visible[j])
            if best[0] <= min(euclid) + 1e-9:
                return [a, ends[best[1]]], best[0]
        chain = self._route_cells(a, goal_arr)
        if chain is None:
            return [], float("inf")
        goal_node = chain[-1]
        gi, gk = self._cells[goal_node]
        end = min(ends, key=lambda e: abs(self.grid.to_cell(e)[0] - gi) + abs(self.grid.to_cell(e)[1] - gk))
        centers = self.grid.cell_center(self._cells[chain, 0], self._cells[chain, 1])
        points = np.vstack([a, centers[1:-1], end]) if len(chain) > 1 else np.vstack([a, end])
        path = self._string_pull(points)
        return path, _polyline_length(path)

    def _endpoints(self, start, goals):
        """Start and goals moved onto the grid, and which goals the start sees in a straight line."""
        goal_arr = np.asarray(goals, np.float64).reshape(-1, 3)
        a = self._on_grid(np.asarray(start, np.float64).reshape(3))
        ends = [self._on_grid(g) for g in goal_arr]
        return a, goal_arr, ends, self._visible_from(a, np.array(ends))

    def _route_cells(self, a: np.ndarray, goal_arr: np.ndarray, max_cells: int | None = None) -> list[int] | None:
        """Graph nodes from ``a``'s cell down the goal field (None when no goal is reachable)."""
        dist, pred = self._field(goal_arr)
        si, sk = self._cell_of(a)
        node = int(self._node[si, sk])
        if not np.isfinite(dist[node]):
            return None
        chain = [node]
        while pred[chain[-1]] >= 0 and (max_cells is None or len(chain) < max_cells):
            chain.append(int(pred[chain[-1]]))
        return chain

    def next_waypoint(self, start, goals) -> np.ndarray | None:
        """The first corner of the shortest path from ``start`` (the goal itself when visible).

        Cheaper than ``find_path``: only the start of the route is string-pulled. Returns None when
        no goal is reachable.
        """
        a, goal_arr, ends, visible = self._endpoints(start, goals)
        if visible.any():
            return min((e for e, v in zip(ends, visible) if v), key=lambda e: np.linalg.norm(e - a))
        chain = self._route_cells(a, goal_arr, max_cells=150)
        if chain is None:
            return None
        # steering needs the corner only roughly (motion itself is collision-checked): every third
        # cell of the route's first metres, sampled at half-cell steps
        picked = chain[2::3] or chain[-1:]
        centers = self.grid.cell_center(self._cells[picked, 0], self._cells[picked, 1])
        vis = self._visible_from(a, centers, step_cells=0.5)
        best = int(np.flatnonzero(vis)[-1]) if vis.any() else 0
        return centers[best]

    def geodesic_distance(self, start, goals) -> float:
        """Geodesic distance in metres from ``start`` to the nearest goal (``inf`` if unreachable)."""
        return self.find_path(start, goals)[1]

    def _on_grid(self, p: np.ndarray) -> np.ndarray:
        i, k = self.grid.to_cell(p)
        if self.grid.in_bounds(i, k) and self.grid.navigable[i, k]:
            y = float(self.grid.floor_y[i, k])
            return np.array([p[0], y, p[2]])
        return self.grid.snap_point(p)

    def _string_pull(self, points: np.ndarray) -> list[np.ndarray]:
        out = [points[0]]
        anchor = 0
        last = len(points) - 1
        chunk = 96
        while anchor < last:
            best = anchor + 1
            lo = anchor + 1
            while lo <= last:
                hi = min(last, lo + chunk - 1)
                vis = self._visible_from(points[anchor], points[lo:hi + 1])
                if vis.any():
                    best = lo + int(np.flatnonzero(vis)[-1])
                if not vis[-1]:
                    break
                lo = hi + 1
            out.append(points[best])
            anchor = best
        return out


def _polyline_length(points) -> float:
    if len(points) < 2:
        return 0.0
    p = np.asarray(points)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def require_navigable(grid: NavGrid, point, what: str = "point") -> None:
    """Raise a NavigationError naming ``what`` if ``point`` is not on the navigable area."""
    if not grid.is_navigable(point):
        p = np.asarray(point, np.float64).reshape(-1)
        raise NavigationError(f"{what} {np.round(p, 3).tolist()} is not on the navigable area "
                              f"(agent radius {grid.settings.agent_radius_m} m); use snap_point() to move it")
