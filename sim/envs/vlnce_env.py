"""``VLNCE-v0``: VLN-CE episodes as a Gymnasium environment."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium
import numpy as np
from gymnasium import spaces

from sim.actions import Action
from sim.backends.base import observation_space_for
from sim.config import load_simulator_config
from sim.geometry import heading_from_quat
from sim.tasks.dataset import MAX_INSTRUCTION_TOKENS, load_dataset
from sim.tasks.vln import TaskConfig, VLNCETask
from vlnce.errors import ConfigError

REWARD_TYPES = ("none", "shaped")


class VLNCEEnv(gymnasium.Env):
    """Vision-and-language navigation in continuous environments (Krantz et al. 2020).

    ## Description
    The agent starts in a house and must follow a natural-language instruction to a goal,
    then call STOP within 3 m (geodesic) of it.

    ## Action Space
    ``Discrete(4)``: 0 STOP, 1 MOVE_FORWARD (0.25 m), 2 TURN_LEFT (15 deg), 3 TURN_RIGHT (15 deg).

    ## Observation Space
    ``Dict`` with

    | key | shape, dtype | content |
    |---|---|---|
    | rgb | (224, 224, 3) uint8 | colour image |
    | depth | (256, 256, 1) float32 | planar depth, normalised to [0, 1] over 0-10 m |
    | instruction | (200,) int64 | instruction token ids (0 = padding) in the dataset's vocabulary |
    | semantic | (H, W) int32 | category ids (with ``semantic=True``) |
    | instance | (H, W) int32 | object instance ids, at the colour image's size (with ``instance=True``) |
    | lidar | (64, 2048, 6) float32 | x, y, z, range, intensity, label (with ``lidar=True``) |
    | pose | (4,) float32 | x, y, z in metres and heading in radians (with ``pose=True``) |
    | rooms, room | (H, W) int32 | room types seen per pixel, and the agent's (sensors of type ``rooms`` / ``room``; privileged) |

    Sizes follow the simulator config (``sim_overrides``).

    ## Rewards
    ``reward="none"`` (default): 0. ``reward="shaped"``: the decrease of the geodesic distance to
    the goal (metres) each step, -0.05 per step, and +2.5 on success.

    ## Starting State
    The start pose of the next episode: in order, or drawn with ``self.np_random`` when ``shuffle``.
    ``reset(options={"episode_id": ...})`` picks an episode.

    ## Episode End
    ``terminated`` when the agent calls STOP; ``truncated`` after 500 actions. The final ``info``
    holds the VLN-CE metrics (``distance_to_goal``, ``success``, ``spl``, ``ndtw``, ...).

    ## Arguments
    ``split``, ``dataset`` ("embedded" or a R2R_VLNCE directory), ``scenes_dir``, ``semantic``, ``instance``,
    ``lidar``, ``pose``, ``reward``, ``shuffle``, ``episode_shard`` ((index, count) for vector
    envs), ``sim_overrides``, ``render_mode`` ("rgb_array").

    >>> import gymnasium, sim
    >>> env = gymnasium.make("sim:VLNCE-v0", split="val_unseen")  # doctest: +SKIP
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, split: str = "val_unseen", dataset: str = "embedded", scenes_dir: str | None = None,
                 semantic: bool = False, instance: bool = False, lidar: bool = False, pose: bool = False, reward: str = "none",
                 shuffle: bool = False, episode_shard: tuple[int, int] = (0, 1), sim_overrides=None,
                 max_episode_steps: int = 500, render_mode: str | None = None) -> None:
        if reward not in REWARD_TYPES:
            raise ConfigError(f"reward must be one of {REWARD_TYPES}, got {reward!r}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        index, count = episode_shard
        if not (0 <= index < count):
            raise ConfigError(f"episode_shard must be (index, count) with 0 <= index < count, got {episode_shard}")
        if dataset == "embedded":
            from sim.tasks.benchmark import ensure_benchmark

            data_dir = ensure_benchmark(progress=False)
            scenes_dir = scenes_dir or str(data_dir / "scenes")
        else:
            data_dir = Path(dataset)
        self.dataset = load_dataset(data_dir, split, strict=False)
        episodes = sorted(self.dataset.episodes, key=lambda e: (len(e.episode_id), e.episode_id))[index::count]
        if not episodes:
            raise ConfigError(f"split {split!r} shard {episode_shard} has no episodes")
        self.episodes = episodes
        sim_cfg = load_simulator_config(overrides=sim_overrides)
        if semantic and not any(s.type == "semantic" for s in sim_cfg.sensors.values()):
            from sim.config import CameraSensorConfig

            depth = next((s for s in sim_cfg.sensors.values() if s.type == "depth"), None)
            w, h = (depth.width_px, depth.height_px) if depth else (256, 256)
            sim_cfg.sensors["semantic"] = CameraSensorConfig(type="semantic", width_px=w, height_px=h)
        if instance and not any(s.type == "instance" for s in sim_cfg.sensors.values()):
            from sim.config import CameraSensorConfig

            rgb = next((s for s in sim_cfg.sensors.values() if s.type == "rgb"), None)
            w, h = (rgb.width_px, rgb.height_px) if rgb else (224, 224)
            sim_cfg.sensors["instance"] = CameraSensorConfig(type="instance", width_px=w, height_px=h)
        sim_cfg.lidar.enabled = bool(lidar) or sim_cfg.lidar.enabled
        self.task = VLNCETask(sim_cfg, TaskConfig(max_episode_steps=max_episode_steps), scenes_dir)
        entries = dict(observation_space_for(sim_cfg, _LidarShape(sim_cfg) if sim_cfg.lidar.enabled else None).spaces)
        vocab_size = len(self.dataset.vocab) if self.dataset.vocab is not None else 1 << 20
        entries["instruction"] = spaces.Box(0, vocab_size - 1, (MAX_INSTRUCTION_TOKENS,), np.int64)
        self.pose = pose
        if pose:
            entries["pose"] = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.observation_space = spaces.Dict(entries)
        self.action_space = spaces.Discrete(len(Action))
        self.reward_type = reward
        self.shuffle = shuffle
        self.render_mode = render_mode
        self._next = 0
        self._last_obs = None

    def _observe(self, obs: dict) -> dict:
        ep = self.task.episode
        tokens = np.zeros(MAX_INSTRUCTION_TOKENS, np.int64)
        t = ep.instruction.instruction_tokens[:MAX_INSTRUCTION_TOKENS]
        tokens[: len(t)] = t
        out = {k: v for k, v in obs.items() if k in self.observation_space.spaces}
        out["instruction"] = tokens
        if self.pose:
            s = self.task.sim.get_agent_state()
            out["pose"] = np.array([*s.position, heading_from_quat(s.rotation)], np.float32)
        self._last_obs = out
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "episode_id" in options:
            wanted = str(options["episode_id"])
            matches = [e for e in self.episodes if e.episode_id == wanted]
            if not matches:
                raise ConfigError(f"episode {wanted!r} is not in this environment's episodes")
            ep = matches[0]
        elif self.shuffle:
            ep = self.episodes[int(self.np_random.integers(len(self.episodes)))]
        else:
            if seed is not None:
                self._next = 0
            ep = self.episodes[self._next % len(self.episodes)]
            self._next += 1
        obs = self.task.reset(ep, self.dataset.gt.get(ep.episode_id))
        self._distance = self.task.measurements.measures["distance_to_goal"].value
        return self._observe(obs), {"episode_id": ep.episode_id, "instruction": ep.instruction.instruction_text}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space} (0 STOP, 1 FORWARD, 2 LEFT, 3 RIGHT)")
        obs, terminated, truncated = self.task.step(int(action))
        metrics = self.task.metrics()
        reward = 0.0
        if self.reward_type == "shaped":
            d = metrics["distance_to_goal"]
            if math.isfinite(d) and math.isfinite(self._distance):
                reward += self._distance - d
            self._distance = d
            reward += -0.05 + 2.5 * metrics.get("success", 0.0)
        info = {"episode_id": self.task.episode.episode_id}
        if terminated or truncated:
            info["metrics"] = metrics
        return self._observe(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        if self.render_mode == "rgb_array" and self._last_obs is not None and "rgb" in self._last_obs:
            return self._last_obs["rgb"]
        return None

    def close(self):
        self.task.close()


class _LidarShape:
    """The lidar's organised shape for the observation space, without building the sensor."""

    def __init__(self, sim_cfg) -> None:
        self.beams, self.columns = sim_cfg.lidar.beams, sim_cfg.lidar.columns


def make_vector_env(num_envs: int = 2, asynchronous: bool = True, context: str = "spawn", **kwargs):
    """``num_envs`` copies of ``VLNCE-v0``, each on its own shard of the episodes.

    ``context``: the multiprocessing start method of ``AsyncVectorEnv``'s workers. Spawn, because
    forking a process that already runs threads (torch's, the ray caster's pool) can copy a held
    lock into the child, which then waits on it forever."""
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    fns = [lambda i=i: VLNCEEnv(episode_shard=(i, num_envs), **kwargs) for i in range(num_envs)]
    if asynchronous:
        return gymnasium.vector.AsyncVectorEnv(fns, context=context)
    return gymnasium.vector.SyncVectorEnv(fns)
