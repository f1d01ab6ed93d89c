"""Agent motion on the nav grid with collision and wall sliding, as habitat-sim's ``try_step``.

A move is split into sub-steps of at most half a cell. A sub-step that would leave the navigable
area is projected onto the obstacle's tangent (the normal is the clearance gradient); if that is
blocked too, the larger free axis component is tried, and otherwise the agent stops there. With
sliding disabled the agent simply stops at the last free sub-step.
"""

from __future__ import annotations

import numpy as np

from sim.navigation.navgrid import NavGrid


def try_step(grid: NavGrid, start, end, allow_sliding: bool = True) -> tuple[np.ndarray, bool]:
    """Move from ``start`` towards ``end`` (both (3,) metres) as far as the navigable area allows.

    Returns:
        The reached position (y on the floor) and whether the move collided (the agent moved
        noticeably less than asked, habitat-sim's definition).
    """
    p = np.asarray(start, np.float64).reshape(3).copy()
    target = np.asarray(end, np.float64).reshape(3)
    delta = target - p
    delta[1] = 0.0
    dist = float(np.linalg.norm(delta))
    if dist < 1e-12:
        return _on_floor(grid, p), False
    n_sub = max(1, int(np.ceil(dist / (0.5 * grid.cell_size_m))))
    step = delta / n_sub
    # fast path: the whole move is free (the common case), checked in one vectorised call
    subs = p + step * np.arange(1, n_sub + 1)[:, None]
    free = grid.navigable_at(subs)
    if free.all():
        return _on_floor(grid, subs[-1]), False
    first_blocked = int(np.argmin(free))
    if first_blocked > 0:
        p = subs[first_blocked - 1]
    for _ in range(n_sub - first_blocked):
        q = p + step
        if grid.navigable_at(q):
            p = q
            continue
        if not allow_sliding:
            break
        moved = False
        normal = grid.obstacle_normal(q)
        into = float(step @ normal)
        candidates = []
        if into < 0:
            candidates.append(step - into * normal)
        # axis components, larger first: walls of our houses are axis-aligned and the clearance
        # gradient is noisy at corners
        ax = [np.array([step[0], 0.0, 0.0]), np.array([0.0, 0.0, step[2]])]
        ax.sort(key=lambda v: -np.linalg.norm(v))
        candidates += ax
        for cand in candidates:
            if np.linalg.norm(cand) < 1e-9:
                continue
            if grid.navigable_at(p + cand):
                p = p + cand
                moved = True
                break
        if not moved:
            break
    p = _on_floor(grid, p)
    moved_dist = float(np.linalg.norm((p - np.asarray(start, np.float64))[[0, 2]]))
    collided = moved_dist < dist - 1e-5
    return p, collided


def _on_floor(grid: NavGrid, p: np.ndarray) -> np.ndarray:
    i, k = grid.to_cell(p)
    if grid.in_bounds(i, k) and np.isfinite(grid.floor_y[i, k]):
        return np.array([p[0], float(grid.floor_y[i, k]), p[2]])
    return p
