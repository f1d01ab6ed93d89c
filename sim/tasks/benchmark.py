"""The embedded VLN-CE benchmark: episodes in the R2R_VLNCE_v1-3 schema on procedural houses.

Splits: ``train`` and ``val_seen`` share the training houses (different episodes); ``val_unseen``
and ``test`` use held-out houses.

The benchmark tests language by construction. For every start, the plausible destinations are
landmark objects in other rooms at 4-25 m geodesic distance, each described by its category and
room (a pair unique in the house). A set of at least four of them, pairwise more than 6 m apart
*geodesically* (twice the 3 m success radius), is drawn, and the goal is one of them chosen
uniformly. Success is judged by geodesic distance, which is a metric, so by the triangle
inequality no stopping point lies within 3 m of two destinations; only the instruction tells them
apart, so an agent that ignores it succeeds with probability at most 1/|destinations| <= 0.25 from
every start. (Pairwise distances come from Dijkstra fields, which overestimate by at most 3%, so
the test is field > 6 m x 1.03.)

Reference paths are the shortest paths from start to goal (string-pulled waypoints). The dense
ground truth is the trajectory of the shortest-path follower with the task's own actions
(forward 0.25 m, turns 15 deg).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sim.actions import Action
from sim.geometry import quat_from_heading
from sim.scenes.generator import HouseConfig, generate_house
from sim.tasks.dataset import Episode, GroundTruth, Goal, Instruction, VLNDataset, Vocab
from sim.tasks.instructions import describe_goal, generate_instruction
from vlnce.fileio import atomic_write_bytes

log = logging.getLogger(__name__)
BENCHMARK_VERSION = "embedded-v1"
NOT_LANDMARKS = {"wall", "floor", "ceiling", "door", "window", "picture", "towel", "mirror", "person"}
SPLITS = ("train", "val_seen", "val_unseen", "test")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes and sampling rules of the embedded benchmark.

    Defaults give about 3,000 train, 300 val_seen, 300 val_unseen and 300 test episodes.
    """

    train_houses: int = 40
    val_unseen_houses: int = 10
    test_houses: int = 10
    train_episodes_per_house: int = 75
    val_seen_episodes_per_house: int = 8
    heldout_episodes_per_house: int = 30
    min_destinations: int = 4
    destination_separation_m: float = 6.0
    min_goal_distance_m: float = 4.0
    max_goal_distance_m: float = 25.0
    goal_radius_m: float = 3.0
    expert_stop_radius_m: float = 0.5
    seed: int = 0

    def house_seeds(self) -> dict[str, list[int]]:
        return {"train": [1000 + i for i in range(self.train_houses)],
                "val_unseen": [2000 + i for i in range(self.val_unseen_houses)],
                "test": [3000 + i for i in range(self.test_houses)]}


HOUSE_CONFIG = HouseConfig(min_rooms=5, max_rooms=9)


def scene_id_of(seed: int) -> str:
    return f"embedded/house_{seed:05d}.glb"


def _goal_objects(scene, grid):
    """Landmarks whose (category, room) is unique, with a navigable goal point beside each."""
    counts: dict[tuple[str, int], int] = {}
    for o in scene.objects:
        if o.category not in NOT_LANDMARKS and o.room_id >= 0:
            counts[(o.category, o.room_id)] = counts.get((o.category, o.room_id), 0) + 1
    out = []
    for o in scene.objects:
        if counts.get((o.category, o.room_id)) != 1:
            continue
        p = grid.snap_point(np.array(o.center_m))
        room = scene.room_at(p[0], p[2])
        half = np.array(o.size_m)[[0, 2]] / 2
        gap = np.maximum(np.abs(p[[0, 2]] - np.array(o.center_m)[[0, 2]]) - half, 0)
        if room is None or room.room_id != o.room_id or np.linalg.norm(gap) > 1.0:
            continue  # the object cannot be stood next to from its own room
        if grid.island_of(p) != grid.largest_island:
            continue
        out.append((o, p))
    return out


def _expert_trajectory(sim, start, heading, goal, stop_radius, max_steps=500):
    """Actions and changed positions of the shortest-path follower from a start pose."""
    from sim.navigation.follower import ShortestPathFollower

    sim.set_agent_state(start, quat_from_heading(heading))
    follower = ShortestPathFollower(sim, goal_radius_m=stop_radius, turn_angle_deg=sim.config.agent.turn_angle_deg)
    actions, locations = [], [sim.get_agent_state().position.tolist()]
    for _ in range(max_steps):
        action = follower.get_next_action(goal)
        actions.append(int(action))
        if action == Action.STOP:
            return actions, locations
        sim.step(action)
        p = sim.get_agent_state().position.tolist()
        if p != locations[-1]:
            locations.append(p)
    return None, None


def generate_house_episodes(house_seed: int, counts: dict[str, int], config: BenchmarkConfig,
                            cache_dir: str | None = None, all_destinations: bool = False) -> dict[str, list[dict]]:
    """Episodes of one house for the given splits (``{split: count}``), as plain records.

    ``all_destinations``: from each sampled start pose, one episode to every one of its plausible
    destinations (each listing the others as distractors) instead of one to a random one of them.
    Such a group shares its start and so its first observations; only the instructions tell the
    episodes apart (used for training augmentation, not for the benchmark's splits).
    """
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import load_simulator_config

    rng = np.random.default_rng([config.seed, house_seed])
    scene = generate_house(house_seed, HOUSE_CONFIG)
    sim_cfg = load_simulator_config(overrides={"cache_dir": cache_dir, "num_threads": 1, "sensors": {}})
    sim_cfg.sensors = {}
    out: dict[str, list[dict]] = {split: [] for split in counts}
    with EmbeddedSimulator(sim_cfg, scene=scene) as sim:
        grid, pf = sim.navgrid, sim.pathfinder
        goals = _goal_objects(scene, grid)
        landmark_objs = [o for o, _ in goals]
        goal_index = {id(o): k for k, (o, _) in enumerate(goals)}
        goal_cells = [grid.to_cell(p) for _, p in goals]
        pairwise = np.zeros((len(goals), len(goals)))
        for k, (_, p) in enumerate(goals):
            field = pf.distance_field(p)
            pairwise[k] = [field[i, j] for i, j in goal_cells]
        separation = config.destination_separation_m * 1.03  # fields overestimate by <= 3%
        cells = np.argwhere(grid.islands == grid.largest_island)
        centers = grid.cell_center(cells[:, 0], cells[:, 1])
        # starts: a uniformly chosen room first, then a point in it, so the big hallway does not
        # dominate the starts
        room_cells = {r.room_id: np.flatnonzero([r.contains(p[0], p[2]) for p in centers[::7]]) * 7
                      for r in scene.rooms}
        # plausible destinations per start room, from a field at the room's most central navigable
        # point (the chosen goal's own geodesic is checked exactly below)
        room_cands = {}
        for rid, idx in room_cells.items():
            if not len(idx):
                continue
            room = scene.rooms[rid]
            rep = centers[idx[np.argmin(np.linalg.norm(centers[idx][:, [0, 2]] - np.array(room.center), axis=1))]]
            field = pf.distance_field(rep)
            cands = []
            for obj, p in goals:
                if obj.room_id == rid:
                    continue
                gi, gk = grid.to_cell(p)
                if config.min_goal_distance_m <= float(field[gi, gk]) <= config.max_goal_distance_m:
                    cands.append((obj, p))
            if len(cands) >= config.min_destinations:
                room_cands[rid] = cands
        room_ids = sorted(room_cands)
        if not room_ids:
            log.info("house %d: no room has %d plausible destinations", house_seed, config.min_destinations)
            return out
        for split, count in counts.items():
            tries = 0
            while len(out[split]) < count and tries < count * 40:
                tries += 1
                rid = room_ids[int(rng.integers(len(room_ids)))]
                start = centers[room_cells[rid][int(rng.integers(len(room_cells[rid])))]]
                cands = room_cands[rid]
                destinations = []
                for k in rng.permutation(len(cands)):
                    obj, p = cands[k]
                    gk = goal_index[id(obj)]
                    if all(pairwise[gk, goal_index[id(o)]] > separation for o, _ in destinations):
                        destinations.append((obj, p))
                if len(destinations) < config.min_destinations:
                    continue
                def record(goal_obj, goal, path, geodesic, heading):
                    actions, locations = _expert_trajectory(sim, start, heading, goal, config.expert_stop_radius_m)
                    if actions is None or np.linalg.norm((np.array(locations[-1]) - goal)[[0, 2]]) > 1.0:
                        return None
                    text = generate_instruction(scene, np.array(path), goal_obj, rng, landmark_objs)
                    return {
                        "house": house_seed,
                        "scene_id": scene_id_of(house_seed),
                        "instruction_text": text,
                        "start_position": [round(float(v), 5) for v in start],
                        "start_rotation": [round(float(v), 8) for v in quat_from_heading(heading)],
                        "goal": [round(float(v), 5) for v in goal],
                        "goal_object": {"category": goal_obj.category, "instance_id": goal_obj.instance_id,
                                        "description": describe_goal(goal_obj, scene)},
                        "distractors": [[round(float(v), 5) for v in q] for o, q in destinations if o is not goal_obj],
                        "reference_path": [[round(float(v), 5) for v in p] for p in path],
                        "geodesic_distance": round(float(geodesic), 5),
                        "actions": actions,
                        "locations": [[round(float(v), 5) for v in p] for p in locations],
                    }

                def in_range(path, geodesic):
                    return bool(path) and config.min_goal_distance_m <= geodesic <= config.max_goal_distance_m

                if all_destinations:
                    heading = float(rng.uniform(-math.pi, math.pi))
                    for goal_obj, goal in destinations:
                        path, geodesic = pf.find_path(start, goal)
                        rec = record(goal_obj, goal, path, geodesic, heading) if in_range(path, geodesic) else None
                        if rec is not None and len(out[split]) < count:
                            out[split].append(rec)
                    continue
                goal_obj, goal = destinations[int(rng.integers(len(destinations)))]
                path, geodesic = pf.find_path(start, goal)
                if not in_range(path, geodesic):
                    continue
                heading = float(rng.uniform(-math.pi, math.pi))
                rec = record(goal_obj, goal, path, geodesic, heading)
                if rec is not None:
                    out[split].append(rec)
            if len(out[split]) < count:
                log.info("house %d: only %d of %d %s episodes could be sampled", house_seed, len(out[split]), count, split)
    return out


def _house_job(args):
    seed, counts, config, cache_dir, *all_destinations = args
    return seed, generate_house_episodes(seed, counts, config, cache_dir, *all_destinations)


def build_benchmark(out_dir: str | Path, config: BenchmarkConfig | None = None, workers: int = 1,
                    progress: bool = True, cache_dir: str | None = None) -> dict:
    """Generate the benchmark into ``out_dir`` (splits, scenes, vocab) and return its summary.

    Writes ``{split}/{split}.json.gz``, ``{split}/{split}_gt.json.gz`` (all splits: the benchmark
    is ours, so test ground truth exists, unlike R2R-CE's), ``scenes/embedded/house_*.glb`` and
    ``benchmark.json``. Same config, same bytes.
    """
    from tqdm import tqdm

    config = config or BenchmarkConfig()
    out = Path(out_dir)
    seeds = config.house_seeds()
    jobs = [(s, {"train": config.train_episodes_per_house, "val_seen": config.val_seen_episodes_per_house}, config, cache_dir)
            for s in seeds["train"]]
    jobs += [(s, {"val_unseen": config.heldout_episodes_per_house}, config, cache_dir) for s in seeds["val_unseen"]]
    jobs += [(s, {"test": config.heldout_episodes_per_house}, config, cache_dir) for s in seeds["test"]]
    results: dict[int, dict] = {}
    bar = tqdm(total=len(jobs), desc="building benchmark", unit="house", disable=not progress)
    if workers > 1:
        from vlnce.workers import spawn_pool

        with spawn_pool(workers) as pool:
            for seed, eps in pool.imap_unordered(_house_job, jobs):
                results[seed] = eps
                bar.update()
    else:
        for job in jobs:
            seed, eps = _house_job(job)
            results[seed] = eps
            bar.update()
    bar.close()

    records = {split: [] for split in SPLITS}
    for seed in sorted(results):
        for split, eps in results[seed].items():
            records[split].extend(eps)
    vocab = Vocab.build(r["instruction_text"] for r in records["train"])
    sizes = {}
    for split in SPLITS:
        episodes, gt = [], {}
        for i, r in enumerate(records[split]):
            eid = str(i + 1)
            episodes.append(Episode(
                episode_id=eid, trajectory_id=eid, scene_id=r["scene_id"], start_position=r["start_position"],
                start_rotation=r["start_rotation"],
                instruction=Instruction(r["instruction_text"], vocab.encode(r["instruction_text"])),
                goals=[Goal(r["goal"], config.goal_radius_m)], reference_path=r["reference_path"],
                info={"geodesic_distance": r["geodesic_distance"], "goal_object": r["goal_object"],
                      "distractors": r["distractors"]}))
            gt[eid] = GroundTruth(r["actions"], sum(a == Action.MOVE_FORWARD for a in r["actions"]), r["locations"])
        VLNDataset(split, episodes, vocab, gt).save(out)
        sizes[split] = {"episodes": len(episodes), "houses": len({r["house"] for r in records[split]}),
                        "mean_geodesic_m": round(float(np.mean([r["geodesic_distance"] for r in records[split]])), 3)
                        if records[split] else 0.0,
                        "mean_expert_steps": round(float(np.mean([len(r["actions"]) for r in records[split]])), 2)
                        if records[split] else 0.0}
    for seed in sorted(results):
        path = out / "scenes" / scene_id_of(seed)
        generate_house(seed, HOUSE_CONFIG).save(path)
    summary = {"version": BENCHMARK_VERSION, "config": asdict(config), "sizes": sizes, "vocab_size": len(vocab),
               "house_seeds": seeds}
    atomic_write_bytes(out / "benchmark.json", json.dumps(summary, indent=1).encode())
    return summary


def default_benchmark_dir(cache_dir: Path | None = None) -> Path:
    from vlnce.fileio import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "datasets" / BENCHMARK_VERSION


def ensure_benchmark(directory: Path | None = None, config: BenchmarkConfig | None = None, workers: int = 2,
                     progress: bool = True) -> Path:
    """The benchmark directory, built first if it is missing or incomplete."""
    directory = Path(directory) if directory else default_benchmark_dir()
    if not (directory / "benchmark.json").is_file():
        log.info("building the embedded benchmark into %s (first use)", directory)
        build_benchmark(directory, config, workers=workers, progress=progress)
    return directory


def locate_dataset(dataset: str, scenes_dir: str | Path | None = None, workers: int = 2,
                   progress: bool = True) -> tuple[Path, Path | None]:
    """(data directory, scenes directory) of ``"embedded"`` (built on first use) or a R2R_VLNCE-style path."""
    if dataset == "embedded":
        data_dir = ensure_benchmark(workers=workers, progress=progress)
        return data_dir, Path(scenes_dir) if scenes_dir else data_dir / "scenes"
    data_dir = Path(dataset)
    if scenes_dir:
        return data_dir, Path(scenes_dir)
    return data_dir, data_dir / "scenes" if (data_dir / "scenes").is_dir() else None
