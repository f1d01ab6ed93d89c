"""Point-goal pretraining of the depth encoder.

VLN-CE does not learn its depth encoder from instructions: it takes the ResNet of a DD-PPO agent
trained for point-goal navigation (Wijmans et al. 2020) and freezes it (Krantz et al. 2020,
section 4: "a modified ResNet50 that was trained to perform point-goal navigation"). No such weights
exist for our 32 px depth CNN, so this module makes them. A point-goal agent, seeing depth and the
goal in polar coordinates relative to itself (DD-PPO's GPS + compass), imitates the shortest-path
expert on random start/goal pairs in the training houses. Its depth encoder and projection then
initialise, and optionally freeze, the VLN policies' (``vlnce train --depth-init``).

Imitation stands in for DD-PPO's reinforcement learning (2.5 billion frames are out of reach of a
CPU). Success is STOP within ``success_distance_m`` (geodesic) of the goal; SPL as Anderson et al.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlnce.errors import CheckpointError, ConfigError, TrainingError
from vlnce.torchio import load_blob, resume_training, save_blob

log = logging.getLogger(__name__)
KIND = "pointnav_depth"  # the ``format`` tag of its checkpoints (vlnce.torchio)
WHAT = "point-goal depth checkpoint (made by `vlnce train-pointnav`)"
NUM_ACTIONS = 4


@dataclass
class PointNavConfig:
    """A point-goal pretraining run.

    Attributes:
        dataset: "embedded" or a R2R_VLNCE-style directory; start/goal pairs are drawn in the scenes
            of its train split, validation pairs in those of ``val_split``.
        episodes_per_house, val_episodes: training pairs per house; validation pairs in all.
        min_distance_m, max_distance_m: geodesic start-goal distance of a pair.
        success_distance_m: STOP within this geodesic distance of the goal succeeds; the expert
            stops within 0.5 m (straight line, in sight).
        image_size: depth resolution (pixels, square); must match the VLN policy's.
        depth_channels, depth_dim: the encoder's grid channels and projected size, as PolicyConfig's.
        hidden: GRU state size. epochs, batch_size (trajectories), lr: Adam.
        max_steps: steps after which an episode is cut. workers: collection processes.
    """

    dataset: str = "embedded"
    val_split: str = "val_unseen"
    episodes_per_house: int = 40
    val_episodes: int = 100
    min_distance_m: float = 1.0
    max_distance_m: float = 10.0
    success_distance_m: float = 0.75
    image_size: int = 32
    depth_channels: int = 64
    depth_dim: int = 128
    hidden: int = 256
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    max_steps: int = 300
    workers: int = 1
    seed: int = 0

    def validate(self) -> "PointNavConfig":
        for name in ("episodes_per_house", "val_episodes", "image_size", "depth_channels", "depth_dim", "hidden",
                     "epochs", "batch_size", "max_steps", "workers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0.0 < self.min_distance_m < self.max_distance_m):
            raise ConfigError(f"need 0 < min_distance_m < max_distance_m, got {self.min_distance_m}, "
                              f"{self.max_distance_m}")
        if self.lr <= 0 or self.success_distance_m <= 0:
            raise ConfigError("lr and success_distance_m must be > 0")
        return self

    def depth_sensor(self) -> dict:
        """The VLN policies' depth camera (PolicyConfig.sensors), so the encoder sees the same images."""
        from agents.models.policy import PolicyConfig

        pc = PolicyConfig(arch="seq2seq", vocab_size=2, depth_size=self.image_size, rgb_size=self.image_size,
                          ablation="no_rgb")
        return {"depth": pc.sensors()["depth"]}


class PointNavPolicy(nn.Module):
    """Depth + point goal -> action logits.

    The depth path is exactly the VLN policies' (``depth_encoder``: the "cnn" encoder,
    (N, S, S, 1) -> (N, C, 4, 4); ``depth_fc``: flatten, linear to ``depth_dim``, ReLU), so its
    weights transfer by name.
    """

    def __init__(self, cfg: PointNavConfig) -> None:
        super().__init__()
        from agents.models.encoders import DEPTH_ENCODERS

        self.cfg = cfg
        self.depth_encoder = DEPTH_ENCODERS.get("cnn")(cfg.depth_channels, cfg.image_size)
        self.depth_fc = nn.Sequential(nn.Linear(cfg.depth_channels * self.depth_encoder.cells, cfg.depth_dim),
                                      nn.ReLU())
        self.goal_fc = nn.Sequential(nn.Linear(3, 32), nn.ReLU())
        self.prev_action = nn.Embedding(NUM_ACTIONS + 1, 32)  # index 0: no previous action
        self.gru = nn.GRU(cfg.depth_dim + 64, cfg.hidden, batch_first=True)
        self.head = nn.Linear(cfg.hidden, NUM_ACTIONS)

    def forward(self, depth: torch.Tensor, goal: torch.Tensor, prev_action: torch.Tensor,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """depth (B, T, S, S, 1) in [0, 1]; goal (B, T, 3) = (metres, cos, sin of the bearing);
        prev_action (B, T) int64, -1 at t = 0. Returns logits (B, T, 4) and the GRU state (1, B, hidden)."""
        b, t = depth.shape[:2]
        d = self.depth_fc(self.depth_encoder(depth.flatten(0, 1).float()).flatten(1)).view(b, t, -1)
        x = torch.cat([d, self.goal_fc(goal.float()), self.prev_action(prev_action + 1)], -1)
        out, state = self.gru(x, state)
        return self.head(out), state


def goal_vector(position, heading: float, goal) -> np.ndarray:
    """The goal relative to the agent: (distance m, cos, sin of the bearing), bearing positive to
    the left (the simulator's headings: 0 faces -z, turning left increases the heading)."""
    from sim.geometry import wrap_angle

    d = np.asarray(goal, np.float64) - np.asarray(position, np.float64)
    bearing = wrap_angle(math.atan2(-d[0], -d[2]) - heading)
    return np.array([math.hypot(d[0], d[2]), math.cos(bearing), math.sin(bearing)], np.float32)


# --- episodes ---------------------------------------------------------------------------------
def sample_episodes(scene_ids: list[str], per_house: int, cfg: PointNavConfig, seed: int,
                    scenes_dir: str | None, prefix: str) -> list:
    """``per_house`` random start/goal pairs in each scene, geodesically ``min..max_distance_m`` apart."""
    import copy

    from sim.backends import make_simulator
    from sim.config import load_simulator_config
    from sim.geometry import quat_from_heading
    from sim.tasks.dataset import Episode, Goal, Instruction
    from sim.tasks.vln import resolve_scene_id

    base = load_simulator_config(overrides={"num_threads": 1})
    base.sensors = {}
    episodes = []
    for si, scene_id in enumerate(scene_ids):
        sim_cfg = copy.deepcopy(base)
        sim_cfg.scene = resolve_scene_id(scene_id, Path(scenes_dir) if scenes_dir else None)
        rng = np.random.default_rng([seed, si])
        with make_simulator(sim_cfg) as sim:
            sim.seed(int(rng.integers(2 ** 31)))
            found = tries = 0
            while found < per_house and tries < 50 * per_house:
                tries += 1
                a, g = sim.sample_navigable_point(), sim.sample_navigable_point()
                dist = sim.geodesic_distance(a, g)
                if not (np.isfinite(dist) and cfg.min_distance_m <= dist <= cfg.max_distance_m):
                    continue
                rot = quat_from_heading(float(rng.uniform(-math.pi, math.pi)))
                eid = f"{prefix}{si}_{found}"
                episodes.append(Episode(eid, eid, scene_id, [float(x) for x in a], [float(x) for x in rot],
                                        Instruction(""), [Goal([float(x) for x in g], cfg.success_distance_m)],
                                        [[float(x) for x in a], [float(x) for x in g]], {"geodesic_distance": dist}))
                found += 1
    return episodes


def _task(cfg: PointNavConfig, scenes_dir: str | None, measures: list[str]):
    from sim.config import CameraSensorConfig, load_simulator_config
    from sim.tasks.vln import TaskConfig, VLNCETask

    sim_cfg = load_simulator_config(overrides={"num_threads": 1})
    sim_cfg.sensors = {k: CameraSensorConfig(**v) for k, v in cfg.depth_sensor().items()}
    return VLNCETask(sim_cfg, TaskConfig(max_episode_steps=cfg.max_steps, measures=measures,
                                         success_distance_m=cfg.success_distance_m), scenes_dir=scenes_dir)


def collect_expert(args) -> dict[str, np.ndarray]:
    """Run the shortest-path expert on ``episodes``; per step depth, goal vector, action, previous action."""
    cfg, episodes, scenes_dir = args
    from sim.geometry import heading_from_quat
    from sim.navigation.follower import ShortestPathFollower

    torch.set_num_threads(1)
    task = _task(cfg, scenes_dir, ["steps_taken"])
    depth, goals, actions, prevs, lengths = [], [], [], [], []
    try:
        for ep in episodes:
            obs = task.reset(ep)
            goal = np.asarray(ep.goals[0].position, np.float64)
            follower = ShortestPathFollower(task.sim, goal_radius_m=0.5, turn_angle_deg=task.sim.config.agent.turn_angle_deg)
            prev, n = -1, 0
            while not task.done:
                state = task.sim.get_agent_state()
                action = int(follower.get_next_action(goal))
                depth.append(np.asarray(obs["depth"], np.float16))
                goals.append(goal_vector(state.position, heading_from_quat(state.rotation), goal))
                actions.append(action)
                prevs.append(prev)
                obs, _, _ = task.step(action)
                prev, n = action, n + 1
            lengths.append(n)
    finally:
        task.close()
    s = cfg.image_size
    return {"depth": np.stack(depth) if depth else np.zeros((0, s, s, 1), np.float16),
            "goal": np.stack(goals) if goals else np.zeros((0, 3), np.float32),
            "action": np.asarray(actions, np.int8), "prev_action": np.asarray(prevs, np.int8),
            "length": np.asarray(lengths, np.int64)}


def _by_scene(episodes, parts: int) -> list[list]:
    groups: dict[str, list] = {}
    for e in episodes:
        groups.setdefault(e.scene_id, []).append(e)
    jobs = [[] for _ in range(max(1, parts))]
    for i, eps in enumerate(groups.values()):
        jobs[i % len(jobs)].extend(eps)
    return [j for j in jobs if j]


def collect(cfg: PointNavConfig, episodes: list, scenes_dir: str | None, progress: bool = True) -> dict:
    """Expert trajectories of ``episodes`` in ``cfg.workers`` processes, concatenated."""
    from tqdm import tqdm

    jobs = [(cfg, part, scenes_dir) for part in _by_scene(episodes, cfg.workers * 4)]
    if cfg.workers > 1 and len(jobs) > 1:
        from vlnce.workers import spawn_pool

        with spawn_pool(cfg.workers) as pool:
            parts = list(tqdm(pool.imap(collect_expert, jobs), total=len(jobs), desc="expert", disable=not progress))
    else:
        parts = [collect_expert(j) for j in tqdm(jobs, desc="expert", disable=not progress)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --- training ---------------------------------------------------------------------------------
def _batch(data: dict, starts: np.ndarray, idx) -> dict[str, torch.Tensor]:
    lengths = data["length"][idx]
    b, t = len(idx), int(lengths.max())
    s = data["depth"].shape[1]
    out = {"depth": np.zeros((b, t, s, s, 1), np.float32), "goal": np.zeros((b, t, 3), np.float32),
           "action": np.zeros((b, t), np.int64), "prev_action": np.full((b, t), -1, np.int64),
           "mask": np.zeros((b, t), bool)}
    for i, k in enumerate(idx):
        sl = slice(starts[k], starts[k] + lengths[i])
        n = lengths[i]
        out["depth"][i, :n] = data["depth"][sl]
        out["goal"][i, :n] = data["goal"][sl]
        out["action"][i, :n] = data["action"][sl]
        out["prev_action"][i, :n] = data["prev_action"][sl]
        out["mask"][i, :n] = True
    return {k: torch.from_numpy(v) for k, v in out.items()}


def imitation_loss(policy: PointNavPolicy, batch: dict, coef: float) -> torch.Tensor:
    """Inflection-weighted cross-entropy, ``sum_t w_t CE_t / sum_t w_t`` per trajectory, batch mean."""
    from agents.training.store import inflection_weighted_ce

    logits, _ = policy(batch["depth"], batch["goal"], batch["prev_action"])
    return inflection_weighted_ce(logits, batch["action"], batch["mask"], coef)


@torch.inference_mode()
def evaluate_pointnav(policy: PointNavPolicy, episodes: list, scenes_dir: str | None) -> dict[str, float]:
    """Greedy rollouts: mean success, SPL, distance to goal, steps (one process)."""
    from sim.geometry import heading_from_quat

    cfg = policy.cfg
    policy.eval()
    task = _task(cfg, scenes_dir, ["distance_to_goal", "success", "path_length", "spl", "steps_taken"])
    rows = []
    try:
        for ep in episodes:
            obs = task.reset(ep)
            goal = ep.goals[0].position
            state, prev = None, -1
            while not task.done:
                s = task.sim.get_agent_state()
                g = goal_vector(s.position, heading_from_quat(s.rotation), goal)
                logits, state = policy(torch.as_tensor(np.asarray(obs["depth"], np.float32))[None, None],
                                       torch.from_numpy(g)[None, None], torch.tensor([[prev]]), state)
                prev = int(logits[0, -1].argmax())
                obs, _, _ = task.step(prev)
            rows.append(task.metrics())
    finally:
        task.close()
    return {k: float(np.mean([r[k] for r in rows])) for k in ("success", "spl", "distance_to_goal", "steps_taken")}


def train_pointnav(cfg: PointNavConfig, out: str | Path, progress: bool = True) -> dict:
    """Collect expert data (cached in ``out/data.npz``), train, validate each epoch, keep ``best.pt``
    (best validation SPL); ``last.pt`` lets a rerun with the same ``out`` resume. Returns the summary."""
    from tqdm import tqdm

    from agents.training.store import inflection_coefficient
    from sim.tasks.benchmark import locate_dataset
    from sim.tasks.dataset import load_dataset
    from vlnce.fileio import atomic_write_bytes, setting_changes

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "pointnav_config.json"
    diff = setting_changes(json.loads(cfg_path.read_text()), asdict(cfg)) if cfg_path.is_file() else ""
    if diff:
        raise ConfigError(f"{out} holds a point-goal run with other settings ({diff}); use another --out or the "
                          "same options")
    atomic_write_bytes(cfg_path, json.dumps(asdict(cfg), indent=1).encode())
    data_dir, scenes = locate_dataset(cfg.dataset, None, workers=max(cfg.workers, 2), progress=progress)
    scenes_dir = str(scenes) if scenes else None
    train_scenes = sorted({e.scene_id for e in load_dataset(data_dir, "train", strict=False).episodes})
    val_scenes = sorted({e.scene_id for e in load_dataset(data_dir, cfg.val_split, strict=False).episodes})
    val_eps = sample_episodes(val_scenes, math.ceil(cfg.val_episodes / len(val_scenes)), cfg, cfg.seed + 1000,
                              scenes_dir, "val")[: cfg.val_episodes]
    t0 = time.perf_counter()
    data_path = out / "data.npz"
    if data_path.is_file():
        with np.load(data_path) as z:
            data = {k: z[k] for k in z.files}
    else:
        train_eps = sample_episodes(train_scenes, cfg.episodes_per_house, cfg, cfg.seed, scenes_dir, "train")
        data = collect(cfg, train_eps, scenes_dir, progress)
        import io

        buf = io.BytesIO()
        np.savez(buf, **data)
        atomic_write_bytes(data_path, buf.getvalue())
    collect_s = time.perf_counter() - t0
    starts = np.concatenate([[0], np.cumsum(data["length"])[:-1]])
    coef = inflection_coefficient(np.split(data["action"], np.cumsum(data["length"])[:-1]))
    torch.manual_seed(cfg.seed)
    policy = PointNavPolicy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    last = out / "last.pt"
    fresh = {"epoch": 0, "best_spl": -1.0, "history": [], "train_seconds": 0.0}
    state = resume_training(last, KIND, WHAT, policy, opt, fresh)
    for epoch in range(state["epoch"], cfg.epochs):
        policy.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data["length"]))
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        losses, t1 = [], time.perf_counter()
        bar = tqdm(batches, desc=f"pointnav epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        for idx in bar:
            loss = imitation_loss(policy, _batch(data, starts, idx), coef)
            if not torch.isfinite(loss):
                raise TrainingError(f"the point-goal loss became {loss.item()} in epoch {epoch + 1}; "
                                    f"the last good checkpoint is {last} (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        state["train_seconds"] += time.perf_counter() - t1
        val = evaluate_pointnav(policy, val_eps, scenes_dir)
        state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **val})
        log.info("pointnav epoch %d: loss %.4f, val SR %.3f SPL %.3f", epoch + 1, np.mean(losses), val["success"],
                 val["spl"])
        blob = {"format": KIND, "config": asdict(cfg), "state_dict": policy.state_dict(), "val": val}
        if val["spl"] > state["best_spl"]:
            state["best_spl"] = val["spl"]
            state["best_epoch"] = epoch + 1
            save_blob(out / "best.pt", blob)
        state["epoch"] = epoch + 1
        save_blob(last, {**blob, "optimizer": opt.state_dict(), "state": state})
    summary = {"config": asdict(cfg), "train_pairs": int(len(data["length"])), "train_frames": int(len(data["action"])),
               "val_pairs": len(val_eps), "inflection_coef": coef, "history": state["history"],
               "best_epoch": state.get("best_epoch"), "best_spl": state["best_spl"],
               "collect_seconds": collect_s, "train_seconds": state["train_seconds"]}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    return summary


# --- transfer ---------------------------------------------------------------------------------
def load_depth_init(policy, path: str | Path, freeze: bool = False) -> dict:
    """Copy a point-goal checkpoint's ``depth_encoder`` and ``depth_fc`` weights into a VLN policy;
    with ``freeze`` they stop training (as VLN-CE's frozen DD-PPO ResNet). Returns the checkpoint's
    validation metrics.

    Raises:
        CheckpointError: unreadable file, not a point-goal checkpoint, a policy without depth, or
            encoder sizes that differ.
    """
    try:
        blob = load_blob(path, KIND, WHAT, required=("config", "state_dict"))
    except CheckpointError as exc:
        raise CheckpointError(f"--depth-init: not a point-goal depth checkpoint ({exc})") from None
    if policy.depth_encoder is None:
        raise CheckpointError(f"--depth-init {path}: this policy has no depth input (ablation {policy.cfg.ablation!r})")
    theirs = blob["config"]
    mine = {"image_size": policy.cfg.depth_size, "depth_channels": policy.cfg.depth_channels,
            "depth_dim": policy.cfg.depth_dim}
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if diff or policy.cfg.depth_encoder != "cnn":
        raise CheckpointError(f"--depth-init {path}: its depth encoder differs from the policy's "
                              + ", ".join(f"{k} {a} (policy: {b})" for k, (a, b) in diff.items()))
    for name in ("depth_encoder", "depth_fc"):
        sub = {k[len(name) + 1:]: v for k, v in blob["state_dict"].items() if k.startswith(name + ".")}
        getattr(policy, name).load_state_dict(sub)
        if freeze:
            for p in getattr(policy, name).parameters():
                p.requires_grad_(False)
    return blob.get("val", {})


__all__ = ["KIND", "PointNavConfig", "PointNavPolicy", "collect", "collect_expert", "evaluate_pointnav",
           "goal_vector", "imitation_loss", "load_depth_init", "sample_episodes", "train_pointnav"]
