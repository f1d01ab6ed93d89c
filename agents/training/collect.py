"""Rollout collection for imitation learning and DAgger, in worker processes.

At every step the expert (the shortest-path follower, stopping within 0.5 m of the goal, as the
benchmark's ground truth) labels the observation with its action; the executed action is the
expert's with probability ``beta`` and the policy's (argmax) otherwise (Ross et al. 2011; VLN-CE
uses beta = p^n at DAgger iteration n, and beta = 1 is teacher forcing on the ground-truth paths).
Each job collects a list of episodes into one store chunk, stepping ``envs`` of them together
(a vector of environments, the policy batched over them); jobs run in worker processes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.training.store import ChunkWriter
from sim.actions import Action
from sim.geometry import heading_from_quat
from vlnce.errors import DatasetError

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
        peek: after the scan the expert first walks into the room beyond one of the start room's
            exits toward the episode's plausible destinations, drawn at random (``peek_target``),
            and only then follows the shortest path to the goal (``Expert``). Embedded houses only.
        envs: environments stepped together, the policy acting on all of them as one batch
            (``run_job``); 1 steps one episode at a time.
        search: after the scan the expert tries the start room's exits nearest first from where
            the scan leaves it facing (``search_detours``): it walks into each exit room before the
            goal's and turns back from inside it, then follows the shortest path to the goal.
            Embedded houses only.
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
    peek: bool = False
    search: bool = False
    envs: int = 1
    stats: dict = field(default_factory=dict)


class _Rollout:
    """One environment of a job's vector of environments: its task, and the episode running in it
    (the expert, the labels recorded so far, the policy's state and previous action)."""

    def __init__(self, job: CollectJob, task, episodes: dict, vocab, labeler, rng) -> None:
        self.job, self.task, self.episodes, self.vocab, self.labeler, self.rng = job, task, episodes, vocab, labeler, rng
        self.queue: list[str] = []
        self.eid: str | None = None

    def start(self, eid: str, policy) -> None:
        """Reset the task into episode ``eid`` (loading its house when it changes)."""
        from sim.navigation.follower import ShortestPathFollower

        job, ep = self.job, self.episodes[eid]
        self.eid = eid
        self.obs = self.task.reset(ep, None)
        sim = self.sim = self.task.sim
        goal = np.asarray(ep.goals[0].position, np.float64)
        follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg,
                                        hold_angle_deg=job.expert_hold_deg or None)
        self.field = sim.pathfinder.distance_field(goal) if hasattr(sim, "pathfinder") else None
        self.goal = goal
        self.d0 = max(self.geodesic(sim.get_agent_state().position), 1e-6)
        self.tokens = [t for t in self.vocab.encode(ep.instruction.instruction_text) if t != 0]
        self.state = None if policy is None else policy.initial_state(1)
        self.frames, self.actions, self.prevs, self.progress, self.rooms, self.views = [], [], [], [], [], []
        # room labels need the scene's rooms and a ray caster (the embedded backend); else unknown
        self.labelled = bool(getattr(getattr(sim, "scene", None), "rooms", None)) and hasattr(sim, "caster")
        peek = None
        if job.peek:
            if not self.labelled:
                raise DatasetError(f"episode {eid}: the peeking expert needs the rooms of the embedded "
                                   "simulator's houses")
            distractors = (ep.info or {}).get("distractors") or []
            peek = peek_target(sim, sim.get_agent_state().position, goal, distractors, self.rng)[0]
        detours, goal_exit = [], None
        if job.search:
            if not self.labelled:
                raise DatasetError(f"episode {eid}: the searching expert needs the rooms of the embedded "
                                   "simulator's houses")
            agent = sim.get_agent_state()
            # nearness from where the scan (left turns) leaves the agent facing
            facing = heading_from_quat(agent.rotation) + job.look_around_steps * np.radians(
                sim.config.agent.turn_angle_deg)
            detours, goal_exit = search_detours(sim, agent.position, facing, goal,
                                                (ep.info or {}).get("distractors") or [])
        self.teacher = Expert(sim, follower, goal, job.look_around_steps, peek, detours, goal_exit)
        self.prev = -1

    def geodesic(self, position) -> float:
        if self.field is None:
            return self.sim.geodesic_distance(position, self.goal)
        i, k = self.sim.navgrid.to_cell(position)
        inside = 0 <= i < self.field.shape[0] and 0 <= k < self.field.shape[1]
        return float(self.field[i, k]) if inside else float("inf")

    def label(self) -> int:
        """Record the frame and the expert's action for it; returns that action."""
        sim = self.sim
        expert = self.teacher.action(self.prev if self.prev >= 0 else None)
        agent = sim.get_agent_state()
        d = self.geodesic(agent.position)
        if self.labelled:
            here, seen = self.labeler(sim.scene, sim.caster, agent.position, heading_from_quat(agent.rotation))
            self.rooms.append(here)
            self.views.append(seen)
        self.frames.append({k: v for k, v in self.obs.items() if k in ("rgb", "depth")})
        self.actions.append(expert)
        self.prevs.append(self.prev)
        self.progress.append(float(np.clip(1.0 - d / self.d0, 0.0, 1.0)) if np.isfinite(d) else 0.0)
        return expert

    def step(self, action: int) -> bool:
        """Execute ``action``; True when the episode is over."""
        self.obs, terminated, truncated = self.task.step(action)
        self.prev = action
        self.teacher.executed(action)
        return bool(terminated or truncated)

    def write(self, writer) -> None:
        writer.add_episode(self.eid, self.job.iteration, self.tokens, self.frames, self.actions, self.prevs,
                           self.progress, self.rooms if self.labelled else None,
                           self.views if self.labelled else None)


def _batched_instruction(policy, rollouts: list[_Rollout]):
    """The rollouts' instructions encoded as one zero-padded batch (padding changes no output)."""
    import torch

    width = max(max(len(r.tokens), 1) for r in rollouts)
    tokens = torch.zeros(len(rollouts), width, dtype=torch.long)
    for i, r in enumerate(rollouts):
        tokens[i, :len(r.tokens)] = torch.tensor(r.tokens or [0])
    return policy.encode_instruction(tokens)


def run_job(job: CollectJob, progress_queue=None) -> dict:
    """Collect ``job`` into its chunk; returns counts (episodes, steps, expert agreement).

    The job's episodes run in ``job.envs`` environments stepped together (a vector of
    environments, each with its own simulator), the policy acting on all of them as one batch:
    its per-call cost, not the rendering, bounds DAgger collection with a batch of one. Each
    environment takes a contiguous run of the episode list, so it loads few houses.
    """
    import torch

    from sim.config import CameraSensorConfig, load_simulator_config
    from sim.sensors.rooms import RoomLabeler
    from sim.tasks.dataset import Vocab, load_dataset
    from sim.tasks.vln import TaskConfig, VLNCETask

    if job.envs < 1:
        raise ValueError(f"a collection job needs at least one environment, got envs={job.envs}")
    torch.set_num_threads(1)
    dataset = load_dataset(job.data_dir, job.split, strict=False)
    episodes = dataset.by_id()
    vocab = Vocab(job.vocab)
    sim_cfg = load_simulator_config(overrides={"num_threads": 1})
    sim_cfg.sensors = {k: CameraSensorConfig(**v) for k, v in job.sensors.items()}
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
    ids = list(job.episode_ids)
    n_envs = max(1, min(job.envs, len(ids)))
    rollouts: list[_Rollout] = []
    steps = agree = 0
    stepping = 0.0  # seconds inside episodes (acting, stepping, rendering), without loading
    try:
        for k in range(n_envs):
            # no per-step geodesic measures: progress comes from one distance field per episode
            task = VLNCETask(sim_cfg, TaskConfig(max_episode_steps=job.max_steps, measures=["steps_taken"]),
                             scenes_dir=job.scenes_dir)
            rollouts.append(_Rollout(job, task, episodes, vocab, labeler, rng))
            rollouts[-1].queue = ids[k * len(ids) // n_envs:(k + 1) * len(ids) // n_envs]
        active = []
        for r in rollouts:
            if r.queue:
                r.start(r.queue.pop(0), policy)
                active.append(r)
        instruction = None
        while active:
            t0 = time.perf_counter()
            experts = [r.label() for r in active]
            mine = None
            if policy is not None:
                with torch.inference_mode():
                    if instruction is None:
                        instruction = _batched_instruction(policy, active)
                    inputs = [policy.frame_inputs(r.obs) for r in active]
                    rgb, depth = (None if inputs[0][i] is None else torch.cat([x[i] for x in inputs]) for i in (0, 1))
                    rooms = [policy.room_inputs(r.obs) for r in active]
                    rooms = None if rooms[0] is None else tuple(torch.cat([x[i] for x in rooms]) for i in (0, 1))
                    logits, _, state, _ = policy.act(instruction, rgb, depth, torch.tensor([r.prev for r in active]),
                                                     torch.cat([r.state for r in active]), rooms=rooms)
                mine = logits.argmax(1).tolist()
                for i, r in enumerate(active):
                    r.state = state[i:i + 1]
            finished = []
            for i, r in enumerate(active):
                action = experts[i]
                if mine is not None:
                    agree += mine[i] == experts[i]
                    action = experts[i] if rng.random() < job.beta else mine[i]
                if r.step(action):
                    finished.append(r)
            stepping += time.perf_counter() - t0
            for r in finished:
                steps += len(r.actions)
                r.write(writer)
                if progress_queue is not None:
                    progress_queue.put(1)
                if r.queue:
                    r.start(r.queue.pop(0), policy)
                else:
                    active.remove(r)
            if finished:
                instruction = None
    finally:
        for r in rollouts:
            r.task.close()
    writer.commit()
    return {"chunk": job.chunk, "episodes": len(job.episode_ids), "steps": steps, "step_seconds": stepping,
            "policy_agreement": agree / steps if policy is not None and steps else None}


def exit_rooms(sim, start, goal, distractors) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], int | None]:
    """The rooms beyond the start room's exits toward an episode's plausible destinations.

    Each destination's (``goal`` (3,), then ``distractors`` (D, 3)) shortest path from ``start``
    (3,) leaves the start room into some room, its exit room. Returns {exit room id: (the point
    1 m inside it along the first path into it, that path from ``start`` to the point (P, 3))}
    and the goal's exit room id (None when the goal's path never leaves the start room).
    """
    from sim.tasks.instructions import densify

    scene = sim.scene
    start = np.asarray(start, np.float64)
    start_room = scene.room_at(start[0], start[2])
    start_id = None if start_room is None else start_room.room_id
    exits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    goal_exit = None
    for k, dest in enumerate([goal, *distractors]):
        path, length = sim.pathfinder.find_path(start, np.asarray(dest, np.float64))
        if not np.isfinite(length) or len(path) < 2:
            continue
        samples, _ = densify(np.asarray(path, np.float64), 0.1)
        rooms = [scene.room_at(p[0], p[2]) for p in samples]
        first = next((i for i, r in enumerate(rooms) if r is not None and r.room_id != start_id), None)
        if first is None:
            continue
        exit_room = rooms[first].room_id
        if k == 0:
            goal_exit = exit_room
        if exit_room not in exits:
            walked = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(samples[first:], axis=0), axis=1))]
            end = first + int(np.searchsorted(walked, 1.0).clip(max=len(walked) - 1))
            exits[exit_room] = (samples[end], samples[:end + 1])
    return exits, goal_exit


def peek_target(sim, start, goal, distractors,
                rng: np.random.Generator) -> tuple[np.ndarray | None, int | None, int | None]:
    """Where the peeking expert looks first, for an episode from ``start`` (3,) to ``goal`` (3,)
    whose other plausible destinations are ``distractors`` (D, 3).

    One of the distinct exit rooms (``exit_rooms``) is drawn uniformly with ``rng``. Returns a
    point 1 m inside that room along the path into it (None when the goal's own exit was drawn:
    no detour), the drawn exit room's id and the goal's. (None, None, None) when the goal's path
    never leaves the start room.
    """
    exits, goal_exit = exit_rooms(sim, start, goal, distractors)
    if goal_exit is None:
        return None, None, None
    pick = sorted(exits)[int(rng.integers(len(exits)))]
    return (None if pick == goal_exit else exits[pick][0]), pick, goal_exit


def actions_along(path: np.ndarray, heading: float, forward_step_m: float, turn_angle_deg: float) -> float:
    """About how many actions walk ``path`` (P, 3) from its first point facing ``heading`` (rad):
    its length in forward steps plus its turns (the first one from ``heading`` included) in turn
    steps."""
    from sim.geometry import wrap_angle
    from sim.tasks.instructions import heading_of

    path = np.asarray(path, np.float64)
    legs = np.diff(path, axis=0)
    lengths = np.linalg.norm(legs[:, [0, 2]], axis=1)
    legs = legs[lengths > 1e-6]
    headings = [heading] + [heading_of(d) for d in legs]
    turned = sum(abs(wrap_angle(b - a)) for a, b in zip(headings[:-1], headings[1:]))
    return float(lengths.sum() / forward_step_m + np.degrees(turned) / turn_angle_deg)


def search_detours(sim, start, heading: float, goal, distractors) -> tuple[list[tuple[int, np.ndarray]], int | None]:
    """The searching expert's detours, for an episode from ``start`` (3,) facing ``heading`` (rad)
    to ``goal`` (3,) whose other plausible destinations are ``distractors`` (D, 3).

    The exit rooms (``exit_rooms``) are tried nearest first, nearness being the actions that
    reach 1 m inside each (``actions_along``) from the start pose: the doorway in front before
    the one behind. Returns the exit rooms tried before the goal's, in that order, as (room id,
    point 1 m inside it), and the goal's exit room id (None, and no detours, when the goal's path
    never leaves the start room).
    """
    exits, goal_exit = exit_rooms(sim, start, goal, distractors)
    if goal_exit is None:
        return [], None
    agent = sim.config.agent
    cost = {r: actions_along(path, heading, agent.forward_step_m, agent.turn_angle_deg)
            for r, (_, path) in exits.items()}
    order = sorted(exits, key=lambda r: (cost[r], r))
    return [(r, exits[r][0]) for r in order[:order.index(goal_exit)]], goal_exit


class Expert:
    """The collection's expert for one episode: the look-around scan (``scan_steps`` left turns,
    ended early by any other executed action), then, with a ``peek`` point, the walk into the
    room it lies in until the agent stands in any room other than its start room, or, with
    ``detours`` ((room id, point) pairs, ``search_detours``), the search: the walk to each
    detour's point in turn, a detour dropped from the first step the agent stands in its room
    (there it turns back for the next) and all of them from the first step in ``goal_exit``;
    then the shortest path to ``goal`` (``follower``; it stops within the follower's radius)."""

    def __init__(self, sim, follower, goal, scan_steps: int = 0, peek: np.ndarray | None = None,
                 detours: list[tuple[int, np.ndarray]] | None = None, goal_exit: int | None = None) -> None:
        self.sim, self.follower, self.goal = sim, follower, np.asarray(goal, np.float64)
        self.scan_left = scan_steps
        self.peek = peek
        self.detours = list(detours or [])
        self.goal_exit = goal_exit
        pos = sim.get_agent_state().position
        room = sim.scene.room_at(pos[0], pos[2]) if peek is not None or self.detours else None
        self.start_room = None if room is None else room.room_id

    def _room_now(self) -> int | None:
        pos = self.sim.get_agent_state().position
        room = self.sim.scene.room_at(pos[0], pos[2])
        return None if room is None else room.room_id

    def action(self, prev: int | None) -> int:
        """The expert's action where the agent stands now; ``prev``: the action executed last."""
        if self.scan_left > 0:
            return int(Action.TURN_LEFT)
        if self.peek is not None:
            room = self._room_now()
            if room is not None and room != self.start_room:
                self.peek = None  # it has looked into a room
            else:
                act = int(self.follower.get_next_action(self.peek, prev))
                if act != Action.STOP:
                    return act
                self.peek = None
        if self.detours:
            room = self._room_now()
            if room is not None and room != self.start_room:
                # the room is seen from inside: the goal's exit ends the search, another is done with
                self.detours = [] if room == self.goal_exit else [d for d in self.detours if d[0] != room]
            while self.detours:
                act = int(self.follower.get_next_action(self.detours[0][1], prev))
                if act != Action.STOP:
                    return act
                self.detours.pop(0)
        return int(self.follower.get_next_action(self.goal, prev))

    def executed(self, action: int) -> None:
        self.scan_left = self.scan_left - 1 if action == Action.TURN_LEFT else 0


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
