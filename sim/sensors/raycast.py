"""Embree ray casting (embreex called directly), split over threads since Embree releases the GIL."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vlnce.errors import MissingDependencyError


def default_threads() -> int:
    """Ray-casting threads: ``$VLNCE_RAY_THREADS`` if set, else min(2, CPU count)."""
    env = os.environ.get("VLNCE_RAY_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(2, os.cpu_count() or 1))


class RayCaster:
    """Closest-hit queries against a triangle soup.

    Args:
        triangles: (F, 3, 3) float corner positions, metres.
        num_threads: threads to split each query over (1 = no thread pool).
    """

    # below this many rays a thread hand-off costs more than it saves
    _MIN_RAYS_PER_THREAD = 4096

    def __init__(self, triangles: np.ndarray, num_threads: int | None = None) -> None:
        try:
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh
        except ImportError as exc:  # pragma: no cover - embreex is a hard dependency
            raise MissingDependencyError("embreex is required for ray casting: pip install embreex") from exc
        tri = np.ascontiguousarray(triangles, dtype=np.float32)
        if tri.ndim != 3 or tri.shape[1:] != (3, 3) or len(tri) == 0:
            raise ValueError(f"triangles must have shape (F, 3, 3) with F > 0, got {tri.shape}")
        self._scene = rtcore_scene.EmbreeScene()
        self._mesh = TriangleMesh(self._scene, tri)  # keep a reference: the scene does not own it
        self.num_triangles = len(tri)
        self.num_threads = num_threads or default_threads()
        self._pool = ThreadPoolExecutor(self.num_threads) if self.num_threads > 1 else None

    def _run(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._scene.run(origins, directions, query="INTERSECT", output=1)
        return out["tfar"], out["primID"]

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closest hits along rays.

        Args:
            origins: (N, 3) float32 ray origins, metres.
            directions: (N, 3) float32 directions; with unit directions ``t`` is in metres.

        Returns:
            t: (N,) float32 ray parameter of the hit; meaningless (>= 1e30) where nothing was hit.
            prim: (N,) int32 index of the hit triangle, -1 where nothing was hit.
        """
        origins = np.ascontiguousarray(origins, dtype=np.float32)
        directions = np.ascontiguousarray(directions, dtype=np.float32)
        n = len(origins)
        if self._pool is None or n < 2 * self._MIN_RAYS_PER_THREAD:
            t, prim = self._run(origins, directions)
        else:
            # more chunks than threads: parts of an image differ in cost (open floor against
            # cluttered corners), and the pool hands a free worker the next chunk
            chunks = min(4 * self.num_threads, n // self._MIN_RAYS_PER_THREAD)
            bounds = np.linspace(0, n, chunks + 1).astype(int)
            futures = [self._pool.submit(self._run, origins[a:b], directions[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            parts = [f.result() for f in futures]
            t = np.concatenate([p[0] for p in parts])
            prim = np.concatenate([p[1] for p in parts])
        return t, prim

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
