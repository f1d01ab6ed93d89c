"""Rollout collection for imitation learning and DAgger, in worker processes.

At every step the expert (the shortest-path follower, stopping within 0.5 m of the goal, as the
benchmark's ground truth) labels the observation with its action; the executed action is the
expert's with probability ``beta`` and the policy's (argmax) otherwise (Ross et al. 2011; VLN-CE
uses beta = p^n at DAgger iteration n, and beta = 1 is teacher forcing on the ground-truth paths).
Each job collects a list of episodes into one store chunk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.training.store import ChunkWriter

log = logging.getLogger(__name__)


@dataclass
class CollectJob:
    """One worker's share of a collection round.

    Attributes:
        data_dir, split, scenes_dir: where the episodes come from (the benchmark or the
            augmentation set).
        episode_ids: episodes to run, in order (grouped by scene by the caller).
        sensors: camera sensors to render ({uuid: CameraSensorConfig fields}).
        vocab: the policy's word list (instructions are tokenised with it).
        beta: probability of executing the expert's action.
        policy: None when beta == 1, else {"config": ..., "state_dict": ...}.
        store_dir, chunk: where the chunk is committed.
        iteration: DAgger iteration (0 = teacher forcing).
        max_steps: steps after which an episode is cut (the policy may never stop).
        seed: randomness of the beta draws.
        look_around_steps: the expert's first actions are this many left turns (a scan of the
            start room) before it follows the shortest path; the scan ends early when any other
            action is executed. 0: no scan.
        expert_hold_deg: the follower's ``hold_angle_deg`` (0: off), given the executed previous action.
    """

    data_dir: str
    split: str
    scenes_dir: str | None
    episode_ids: list[str]
    sensors: dict
    vocab: list[str]
    beta: float
    store_dir: str
    chunk: str
    iteration: int = 0
    policy: dict | None = None
    max_steps: int = 500
    seed: int = 0
    look_around_steps: int = 0
    expert_hold_deg: float = 0.0
    stats: dict = field(default_factory=dict)


def run_job(job: CollectJob, progress_queue=None) -> dict:
    """Collect ``job`` into its chunk; returns counts (episodes, steps, expert agreement)."""
    import torch

    from sim.actions import Action
    from sim.config import CameraSensorConfig, load_simulator_config
    from sim.geometry import heading_from_quat
    from sim.navigation.follower import ShortestPathFollower
    from sim.sensors.rooms import RoomLabeler
    from sim.tasks.dataset import Vocab, load_dataset
    from sim.tasks.vln import TaskConfig, VLNCETask

    torch.set_num_threads(1)
    dataset = load_dataset(job.data_dir, job.split, strict=False)
    episodes = dataset.by_id()
    vocab = Vocab(job.vocab)
    sim_cfg = load_simulator_config(overrides={"num_threads": 1})
    sim_cfg.sensors = {k: CameraSensorConfig(**v) for k, v in job.sensors.items()}
    # no per-step geodesic measures: progress comes from one distance field per episode
    task = VLNCETask(sim_cfg, TaskConfig(max_episode_steps=job.max_steps, measures=["steps_taken"]),
                     scenes_dir=job.scenes_dir)
    policy = None
    if job.policy is not None:
        from agents.models.policy import PolicyConfig, policy_from_state

        policy = policy_from_state(PolicyConfig.from_dict(job.policy["config"]), job.policy["state_dict"]).eval()
    rgb_shape = depth_shape = None
    for s in job.sensors.values():
        if s["type"] == "rgb":
            rgb_shape = (s["height_px"], s["width_px"], 3)
        if s["type"] == "depth":
            depth_shape = (s["height_px"], s["width_px"], 1)
    writer = ChunkWriter(Path(job.store_dir), job.chunk, rgb_shape, depth_shape)
    cam = next(iter(job.sensors.values()), {})
    labeler = RoomLabeler(hfov_deg=cam.get("hfov_deg", 90.0), camera_height_m=(cam.get("position_m") or [0.0, 1.25, 0.0])[1])
    rng = np.random.default_rng([job.seed, job.iteration])
    steps = agree = 0
    stepping = 0.0  # seconds inside episodes (acting, stepping, rendering), without loading
    try:
        for eid in job.episode_ids:
            ep = episodes[eid]
            obs = task.reset(ep, None)
            sim = task.sim
            goal = np.asarray(ep.goals[0].position, np.float64)
            follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg,
                                            hold_angle_deg=job.expert_hold_deg or None)
            field = sim.pathfinder.distance_field(goal) if hasattr(sim, "pathfinder") else None

            def geodesic(position):
                if field is None:
                    return sim.geodesic_distance(position, goal)
                i, k = sim.navgrid.to_cell(position)
                inside = 0 <= i < field.shape[0] and 0 <= k < field.shape[1]
                return float(field[i, k]) if inside else float("inf")

            d0 = max(geodesic(sim.get_agent_state().position), 1e-6)
            tokens = [t for t in vocab.encode(ep.instruction.instruction_text) if t != 0]
            if policy is not None:
                with torch.inference_mode():
                    instr = policy.encode_instruction(torch.tensor([tokens or [0]]))
                    state = policy.initial_state(1)
            frames, actions, prevs, progress, rooms, views = [], [], [], [], [], []
            # room labels need the scene's rooms and a ray caster (the embedded backend); else unknown
            labelled = bool(getattr(getattr(sim, "scene", None), "rooms", None)) and hasattr(sim, "caster")
            prev = -1
            scan_left = job.look_around_steps
            t0 = time.perf_counter()
            while True:
                if scan_left > 0:
                    expert = int(Action.TURN_LEFT)
                else:
                    expert = int(follower.get_next_action(goal, prev if prev >= 0 else None))
                agent = sim.get_agent_state()
                d = geodesic(agent.position)
                if labelled:
                    here, seen = labeler(sim.scene, sim.caster, agent.position, heading_from_quat(agent.rotation))
                    rooms.append(here)
                    views.append(seen)
                frames.append({k: v for k, v in obs.items() if k in ("rgb", "depth")})
                actions.append(expert)
                prevs.append(prev)
                progress.append(float(np.clip(1.0 - d / d0, 0.0, 1.0)) if np.isfinite(d) else 0.0)
                if policy is not None:
                    with torch.inference_mode():
                        logits, _, state, _ = policy.act(instr, *policy.frame_inputs(obs), torch.tensor([prev]), state,
                                                         rooms=policy.room_inputs(obs))
                    mine = int(logits[0].argmax())
                    agree += mine == expert
                    action = expert if rng.random() < job.beta else mine
                else:
                    action = expert
                obs, terminated, truncated = task.step(action)
                prev = action
                scan_left = scan_left - 1 if action == Action.TURN_LEFT else 0
                if terminated or truncated:
                    break
            stepping += time.perf_counter() - t0
            steps += len(actions)
            writer.add_episode(eid, job.iteration, tokens, frames, actions, prevs, progress,
                               rooms if labelled else None, views if labelled else None)
            if progress_queue is not None:
                progress_queue.put(1)
    finally:
        task.close()
    writer.commit()
    return {"chunk": job.chunk, "episodes": len(job.episode_ids), "steps": steps, "step_seconds": stepping,
            "policy_agreement": agree / steps if policy is not None and steps else None}


_progress_queue = None  # a pool worker's end of the episode counter, set when the worker starts


def _set_progress_queue(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def _pool_job(job: CollectJob) -> dict:
    return run_job(job, _progress_queue)


def shares_by_scene(episodes, workers: int) -> list[list[str]]:
    """The ids of ``episodes`` dealt into ``workers`` shares (some may be empty), a scene's episodes
    all in one share so that each worker loads few houses; the largest scenes go first, each to the
    smallest share so far, to keep the shares even."""
    by_scene: dict[str, list[str]] = {}
    for ep in episodes:
        by_scene.setdefault(ep.scene_id, []).append(ep.episode_id)
    shares: list[list[str]] = [[] for _ in range(max(workers, 1))]
    for ids in sorted(by_scene.values(), key=len, reverse=True):
        min(shares, key=len).extend(ids)
    return shares


def pending_shares(store, prefix: str, episodes, workers: int) -> list[tuple[str, list[str]]]:
    """(chunk name, episode ids) still to collect under ``prefix`` (e.g. "0002_train"): the
    ``episodes`` that no chunk named ``prefix_NN`` of ``store`` holds yet, dealt by scene over
    ``workers`` (``shares_by_scene``) into chunks numbered after the existing ones. Chunks are
    whole jobs, so a store reused with another worker count, or after a collection that stopped
    midway, gets each episode once: neither twice nor never."""
    def parts(name):
        head, _, tail = name.rpartition("_")
        return head, int(tail) if tail.isdigit() else -1

    mine = {i for i, c in enumerate(store.chunks) if parts(c["name"])[0] == prefix}
    have = {t.episode_id for t in store.trajectories if t.chunk in mine}
    after = max((parts(store.chunks[i]["name"])[1] for i in mine), default=-1) + 1
    todo = [ep for ep in episodes if ep.episode_id not in have]
    return [(f"{prefix}_{after + w:02d}", share) for w, share in enumerate(shares_by_scene(todo, workers)) if share]


def collect(jobs: list[CollectJob], workers: int = 1, progress: bool = True, desc: str = "collecting") -> list[dict]:
    """Run collection jobs, in ``workers`` processes when > 1, with one progress bar over episodes."""
    from tqdm import tqdm

    total = sum(len(j.episode_ids) for j in jobs)
    bar = tqdm(total=total, desc=desc, unit="ep", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        from vlnce.workers import spawn_pool

        # handed over as the workers start: a queue cannot travel with each job
        queue = mp.get_context("spawn").Queue()
        with spawn_pool(min(workers, len(jobs)), _set_progress_queue, (queue,)) as pool:
            pending = pool.map_async(_pool_job, jobs)
            done = 0
            while done < total:
                try:
                    done += queue.get(timeout=1.0)
                    bar.update()
                except Exception:  # queue.Empty: check for a worker crash
                    if pending.ready():
                        break
            results = pending.get()
    else:
        class _Bar:
            def put(self, n):
                bar.update(n)

        results = [run_job(j, _Bar()) for j in jobs]
    bar.close()
    return results
