"""``vlnce scene walk``: a guided walk through one procedural house.

Builds a house, picks a start in one room and a landmark in the farthest room, walks there with
the shortest-path follower and writes the house (GLB), a top-down map with the trajectory, the
first and last frames, a video and a JSON record. Interrupting keeps what was walked.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/walk", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="house and start seed")
    p.add_argument("--max-steps", type=int, default=500, help="step limit of the walk")
    p.add_argument("--video", choices=("auto", "gif", "mp4", "none"), default="auto",
                   help="episode video format (mp4 needs imageio-ffmpeg)")


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    import imageio.v2 as imageio
    import numpy as np
    from tqdm import tqdm

    from sim.actions import Action
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import load_simulator_config
    from sim.geometry import heading_from_quat, quat_from_heading
    from sim.navigation.follower import ShortestPathFollower
    from sim.scenes.generator import generate_house
    from sim.viz.frames import colorize_depth, colorize_semantic, compose
    from sim.viz.topdown import TopDownMap
    from vlnce.errors import ConfigError
    from vlnce.fileio import atomic_path, atomic_write_bytes

    if args.seed < 0 or args.max_steps <= 0:
        raise ConfigError(f"--seed must be >= 0 and --max-steps > 0, got {args.seed}, {args.max_steps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = generate_house(args.seed)
    scene.save(out / "house.glb")
    cfg = load_simulator_config(overrides={
        "seed": args.seed,
        "sensors": {"semantic": {"type": "semantic", "width_px": 256, "height_px": 256}},
    })
    rng = np.random.default_rng(args.seed)
    with EmbeddedSimulator(cfg, scene=scene) as sim:
        grid = sim.navgrid
        start_room, goal_room, goal_obj, start = _pick_route(scene, sim, rng)
        goal = sim.snap_point(np.array(goal_obj.center_m))
        sim.set_start_state(start, quat_from_heading(float(rng.uniform(-np.pi, np.pi))))
        obs = sim.reset()
        d0 = sim.geodesic_distance(start, goal)
        reference = sim.get_straight_shortest_path_points(start, goal)
        follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=cfg.agent.turn_angle_deg)
        print(f"house {args.seed}: {len(scene.rooms)} rooms, {scene.num_faces} triangles; walking from the "
              f"{start_room.name} to the {goal_obj.category.replace('_', ' ')} in the {goal_room.name} "
              f"({d0:.2f} m geodesic)")
        frames, poses, actions = [], [], []
        collisions = 0
        path_length = 0.0
        stopped = False

        def record(o):
            frames.append(compose([o["rgb"], colorize_depth(o["depth"], 1.0), colorize_semantic(o["semantic"])]))
            s = sim.get_agent_state()
            poses.append((s.position.copy(), heading_from_quat(s.rotation)))

        record(obs)
        try:
            for _ in tqdm(range(args.max_steps), desc="walking", unit="step", leave=False):
                action = follower.get_next_action(goal)
                actions.append(int(action))
                if action == Action.STOP:
                    stopped = True
                    break
                before = sim.get_agent_state().position
                obs = sim.step(action)
                path_length += float(np.linalg.norm(sim.get_agent_state().position - before))
                collisions += int(sim.previous_step_collided())
                record(obs)
        finally:
            final = poses[-1][0]
            result = {
                "seed": args.seed,
                "start_room": start_room.name, "goal_room": goal_room.name,
                "goal_object": goal_obj.category, "goal_instance": goal_obj.instance_id,
                "start_position": [float(v) for v in start], "goal_position": [float(v) for v in goal],
                "steps": len(poses) - 1, "stopped": stopped, "collisions": collisions,
                "path_length_m": round(path_length, 4), "start_geodesic_m": round(d0, 4),
                "final_geodesic_m": round(sim.geodesic_distance(final, goal), 4),
                "actions": actions,
                "trajectory": [[round(float(v), 4) for v in p] + [round(float(h), 4)] for p, h in poses],
                "wall_time_s": round(time.perf_counter() - t0, 2),
            }
            atomic_write_bytes(out / "walk.json", json.dumps(result, indent=1).encode())
            top = TopDownMap(scene, grid.level_y, 40.0, caster=sim.caster)
            image = top.draw(
                navigable=grid,
                paths=[(np.array(reference), (40, 110, 230)), (np.array([p for p, _ in poses]), (230, 40, 40))],
                points=[(start, (40, 170, 40), "start"), (goal, (200, 120, 0), goal_obj.category.replace("_", " "))],
                poses=[poses[-1]],
            )
            with atomic_path(out / "map.png") as tmp:
                image.save(tmp, format="PNG")
            for name, frame in (("first_frame.png", frames[0]), ("last_frame.png", frames[-1])):
                with atomic_path(out / name) as tmp:
                    imageio.imwrite(tmp, frame)
            video = _write_video(out, frames, args.video)
    print(f"steps {result['steps']}, stopped {stopped}, path length {result['path_length_m']:.2f} m, "
          f"start distance {d0:.2f} m, final distance {result['final_geodesic_m']:.2f} m, "
          f"collisions {collisions}, {result['wall_time_s']:.1f} s")
    print(f"wrote {out}/house.glb, map.png, first_frame.png, last_frame.png, walk.json" + (f", {video}" if video else ""))
    return 0


def _pick_route(scene, sim, rng):
    """A start in a random room and a landmark object in the room farthest from it."""
    import numpy as np

    from vlnce.errors import SceneError

    landmarks = [o for o in scene.objects if o.category not in ("wall", "floor", "ceiling", "door", "window")]
    rooms = [r for r in scene.rooms if any(o.room_id == r.room_id for o in landmarks)]
    if len(rooms) < 2:
        raise SceneError("the house needs two furnished rooms for the demo walk")
    start_room = rooms[int(rng.integers(len(rooms)))]
    cells = np.argwhere(sim.navgrid.islands == sim.navgrid.largest_island)
    centers = sim.navgrid.cell_center(cells[:, 0], cells[:, 1])
    inside = np.array([start_room.contains(p[0], p[2]) for p in centers])
    if not inside.any():
        raise SceneError(f"no navigable point in the {start_room.name}")
    start = centers[inside][int(rng.integers(int(inside.sum())))]
    best = None
    for room in rooms:
        if room.room_id == start_room.room_id:
            continue
        for obj in (o for o in landmarks if o.room_id == room.room_id):
            d = sim.geodesic_distance(start, sim.snap_point(np.array(obj.center_m)))
            if np.isfinite(d) and (best is None or d > best[0]):
                best = (d, room, obj)
    if best is None:
        raise SceneError("no landmark is reachable from the start")
    return start_room, best[1], best[2], start


def _write_video(out, frames, fmt):
    import importlib.util

    import imageio.v2 as imageio

    from vlnce.fileio import atomic_path

    if fmt == "none":
        return None
    if fmt == "auto":
        fmt = "mp4" if importlib.util.find_spec("imageio_ffmpeg") else "gif"
    path = out / f"walk.{fmt}"
    with atomic_path(path) as tmp:
        if fmt == "mp4":
            imageio.mimwrite(tmp, frames, fps=10, macro_block_size=8)
        else:
            imageio.mimwrite(tmp, frames[::2], duration=200, loop=0)
    return path.name
