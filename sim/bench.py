"""Simulator benchmark: full agent steps against the bare Embree ray casts of the same frames.

Timings on shared 2-core machines drift, so full steps and bare casts are measured in
alternating blocks over the same poses and reported as a ratio as well as absolute rates.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass

import numpy as np

TARGETS = {"steps_per_s_min": 60.0, "step_to_raycast_ratio_min": 0.8, "lidar_scans_per_s_min": 25.0}


@dataclass
class SimBenchConfig:
    scene: str = "house:0"
    steps: int = 400
    resolution: int = 256
    lidar_scans: int = 40
    seed: int = 0


def _step_sim(scene, resolution, threads, cache_dir):
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import CameraSensorConfig, load_simulator_config

    # RGB, depth and semantic from one camera: one shared cast per step, as the target defines
    cfg = load_simulator_config(overrides={"num_threads": threads, "cache_dir": cache_dir, "seed": 0})
    cfg.sensors = {t: CameraSensorConfig(type=t, width_px=resolution, height_px=resolution)
                   for t in ("rgb", "depth", "semantic")}
    return EmbeddedSimulator(cfg, scene=scene)


def _time_steps(sim, actions, block=20):
    """Alternate blocks of full steps and bare casts of the same frames; returns both totals."""
    from sim.geometry import heading_from_quat, heading_matrix

    camera, mount, _ = sim._camera_groups[0]
    embree = sim.caster._scene
    step_time = cast_time = 0.0
    sim.reset()
    for start in range(0, len(actions), block):
        chunk = actions[start:start + block]
        poses = []
        t0 = time.perf_counter()
        for a in chunk:
            sim.step(a)
            poses.append(sim.get_agent_state())
        step_time += time.perf_counter() - t0
        rays = []
        for s in poses:  # prepared outside the timed region: only Embree's work is timed
            rot = heading_matrix(heading_from_quat(s.rotation)).astype(np.float32)
            dirs = np.ascontiguousarray(camera.dirs_cam @ rot.T)
            origins = np.ascontiguousarray(np.broadcast_to((s.position + rot @ mount).astype(np.float32), dirs.shape))
            rays.append((origins, dirs))
        t0 = time.perf_counter()
        for origins, dirs in rays:
            embree.run(origins, dirs, query="INTERSECT", output=1)
        cast_time += time.perf_counter() - t0
    return step_time, cast_time


def run_sim_benchmark(cfg: SimBenchConfig, progress: bool = False) -> dict:
    """Run the benchmark and return a JSON-able dict (see README for the fields)."""
    from sim.backends.embedded import resolve_scene
    from sim.navigation.navgrid import build_navgrid
    from sim.sensors.lidar import SpinningLidar
    from sim.sensors.raycast import RayCaster
    from sim.sensors.shading import SceneTables

    def say(msg):
        if progress:
            print(f"[bench] {msg}", flush=True)

    rng = np.random.default_rng(cfg.seed)
    scene = resolve_scene(cfg.scene)
    say(f"scene {cfg.scene}: {scene.num_faces} triangles")
    t0 = time.perf_counter()
    build_navgrid(scene)
    navmesh_build_s = time.perf_counter() - t0

    actions = rng.choice([1, 1, 1, 2, 3], size=cfg.steps).tolist()
    result: dict = {"scene": cfg.scene, "scene_triangles": int(scene.num_faces), "resolution_px": cfg.resolution,
                    "navmesh_build_s": round(navmesh_build_s, 4)}
    with tempfile.TemporaryDirectory() as cache:
        for threads in (1, 2):
            with _step_sim(scene, cfg.resolution, threads, cache) as sim:
                _time_steps(sim, actions[:20])  # warm-up
                step_t, cast_t = _time_steps(sim, actions)
                # the bare casts are always single-threaded calls: compare like with like
                suffix = "" if threads == 1 else "_2threads"
                result[f"steps_per_s{suffix}"] = round(len(actions) / step_t, 2)
                if threads == 1:
                    result["raycast_only_steps_per_s"] = round(len(actions) / cast_t, 2)
                    result["step_to_raycast_ratio"] = round(cast_t / step_t, 3)
                    say(f"1 thread: {result['steps_per_s']} steps/s, bare casts {result['raycast_only_steps_per_s']}/s")
                    pf, grid = sim.pathfinder, sim.navgrid
                else:
                    say(f"2 threads: {result['steps_per_s_2threads']} steps/s")

        lidar = SpinningLidar(64, 2048)
        tables = SceneTables(scene)
        for threads in (1, 2):
            caster = RayCaster(scene.triangles(), num_threads=threads)
            pos = grid.sample_navigable_point(rng) + np.array([0, 1.0, 0])
            lidar.scan(caster, tables, pos, np.eye(3))
            t0 = time.perf_counter()
            for _ in range(cfg.lidar_scans):
                lidar.scan(caster, tables, pos, np.eye(3))
            rate = cfg.lidar_scans / (time.perf_counter() - t0)
            caster.close()
            result["lidar_scans_per_s" if threads == 1 else "lidar_scans_per_s_2threads"] = round(rate, 2)
        say(f"lidar: {result['lidar_scans_per_s']} scans/s (1 thread)")

        field_ms, query_us = [], []
        for _ in range(8):
            goal = grid.sample_navigable_point(rng)
            t0 = time.perf_counter()
            pf.distance_field(goal)
            field_ms.append((time.perf_counter() - t0) * 1e3)
            for _ in range(25):
                start = grid.sample_navigable_point(rng)
                t0 = time.perf_counter()
                pf.geodesic_distance(start, goal)
                query_us.append((time.perf_counter() - t0) * 1e6)
        result["geodesic_query_us"] = round(float(np.median(query_us)), 1)
        result["geodesic_field_ms"] = round(float(np.median(field_ms)), 2)

    result["targets"] = TARGETS
    result["meets"] = {
        "steps_per_s": result["steps_per_s"] >= TARGETS["steps_per_s_min"],
        "step_to_raycast_ratio": result["step_to_raycast_ratio"] >= TARGETS["step_to_raycast_ratio_min"],
        "lidar_scans_per_s": result["lidar_scans_per_s"] >= TARGETS["lidar_scans_per_s_min"],
    }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "numpy": np.__version__, "load_avg_1m": round(os.getloadavg()[0], 2)}
    return result
