"""The VLN-CE task loop: load an episode's scene, place the agent, step, measure.

Episodes end when the agent calls STOP (``terminated``) or after ``max_episode_steps`` actions
(``truncated``; VLN-CE: 500, and such an episode counts as a failure because STOP was not called).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.actions import Action
from sim.backends import make_simulator
from sim.config import SimulatorConfig
from sim.tasks.dataset import Episode, GroundTruth
from sim.tasks.measures import DEFAULT_MEASURES, Measurements, StepContext
from vlnce.errors import ConfigError, DatasetError, NavigationError, SceneError

_HOUSE_RE = re.compile(r"(?:^|/)house_(\d+)\.glb$")


@dataclass
class TaskConfig:
    """VLN-CE task settings (``habitat_extensions/config/vlnce_task.yaml``)."""

    max_episode_steps: int = 500
    success_distance_m: float = 3.0
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    ndtw_fast: bool = True  # fastdtw as VLN-CE; False for exact DTW

    def validate(self) -> "TaskConfig":
        if self.max_episode_steps <= 0:
            raise ConfigError(f"task.max_episode_steps must be positive, got {self.max_episode_steps}")
        if self.success_distance_m <= 0:
            raise ConfigError(f"task.success_distance_m must be positive, got {self.success_distance_m}")
        return self


def resolve_scene_id(scene_id: str, scenes_dir: Path | None) -> str:
    """A simulator scene spec for an episode's ``scene_id``.

    Looks for ``scenes_dir/scene_id`` (stripping VLN-CE's ``data/scene_datasets/`` prefix), then the
    id as a path; embedded benchmark ids ``embedded/house_NNNNN.glb`` fall back to regenerating
    house NNNNN with the benchmark's settings (deterministic) into the cache.

    Raises:
        DatasetError: the scene cannot be found.
    """
    sid = scene_id.removeprefix("data/scene_datasets/")
    candidates = []
    if scenes_dir is not None:
        candidates.append(Path(scenes_dir) / sid)
    candidates.append(Path(scene_id))
    for c in candidates:
        if c.is_file():
            return str(c)
    m = _HOUSE_RE.search(sid)
    if m and sid.startswith("embedded/"):
        # regenerate with the benchmark's house settings (not the generator defaults), once, into
        # the cache: generation is deterministic, so this is the benchmark's scene byte for byte
        from sim.scenes.generator import generate_house
        from sim.tasks.benchmark import HOUSE_CONFIG
        from vlnce.fileio import default_cache_dir

        path = default_cache_dir() / "scenes" / sid
        if not path.is_file():
            generate_house(int(m.group(1)), HOUSE_CONFIG).save(path)
        return str(path)
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(f"unknown scene id {scene_id!r}: no file at {looked}")


class VLNCETask:
    """Runs VLN-CE episodes on a simulator backend.

    Args:
        sim_config: simulator settings; ``scene`` is replaced per episode. An empty ``sensors``
            dict runs without rendering (for agents that do not look, as VLN-CE's baselines).
        task_config: task settings.
        scenes_dir: where episode ``scene_id`` paths are resolved.
    """

    def __init__(self, sim_config: SimulatorConfig | None = None, task_config: TaskConfig | None = None,
                 scenes_dir: str | Path | None = None) -> None:
        self.sim_config = sim_config or SimulatorConfig()
        self.task_config = (task_config or TaskConfig()).validate()
        self.scenes_dir = Path(scenes_dir) if scenes_dir else None
        options = {}
        for name in ("success", "oracle_success"):
            if name in self.task_config.measures:
                options[name] = {"success_distance_m": self.task_config.success_distance_m}
        if "ndtw" in self.task_config.measures:
            options["ndtw"] = {"fast": self.task_config.ndtw_fast, "success_distance_m": self.task_config.success_distance_m}
        self._measure_spec = (list(self.task_config.measures), options)
        Measurements(*self._measure_spec)  # fail early on a bad measure list
        self.sim = None
        self._scene_spec: str | None = None
        self.episode: Episode | None = None
        self.steps = 0
        self.stop_called = False

    # --- episode control ----------------------------------------------------------------------
    def _load_scene(self, episode: Episode) -> None:
        spec = resolve_scene_id(episode.scene_id, self.scenes_dir)
        if spec == self._scene_spec and self.sim is not None:
            return
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        cfg = copy.deepcopy(self.sim_config)
        cfg.scene = spec
        try:
            self.sim = make_simulator(cfg)
        except SceneError as exc:
            raise DatasetError(f"episode {episode.episode_id}: scene {episode.scene_id!r}: {exc}") from None
        self._scene_spec = spec

    def reset(self, episode: Episode, gt: GroundTruth | None = None) -> dict[str, np.ndarray]:
        """Start ``episode``; returns the first observations.

        Raises:
            DatasetError: unknown scene, or start/goal off the navigable area (naming the episode and field).
        """
        self._load_scene(episode)
        sim = self.sim
        start = np.asarray(episode.start_position, np.float64)
        if not sim.is_navigable(start):
            raise DatasetError(f"episode {episode.episode_id}: field 'start_position' {np.round(start, 3).tolist()} "
                               f"is not on the navigable area of {episode.scene_id}")
        for k, g in enumerate(episode.goals):
            gp = np.asarray(g.position, np.float64)
            snapped = sim.snap_point(gp)
            if np.linalg.norm((snapped - gp)[[0, 2]]) > 0.5 or not np.isfinite(sim.geodesic_distance(start, gp)):
                raise DatasetError(f"episode {episode.episode_id}: field 'goals[{k}].position' {np.round(gp, 3).tolist()} "
                                   f"is not reachable on the navigable area of {episode.scene_id}")
        if "ndtw" in self.task_config.measures and gt is None:
            raise DatasetError(f"episode {episode.episode_id}: the ndtw measure needs ground-truth locations "
                               "(the split's <split>_gt.json.gz, passed to reset as gt), "
                               "or drop ndtw/sdtw from task.measures")
        try:
            if hasattr(sim, "set_start_state"):
                sim.set_start_state(start, np.asarray(episode.start_rotation, np.float64))
                obs = sim.reset()
            else:
                sim.reset()
                sim.set_agent_state(start, np.asarray(episode.start_rotation, np.float64))
                obs = sim.get_observations_at()
        except NavigationError as exc:
            raise DatasetError(f"episode {episode.episode_id}: {exc}") from None
        self.episode = episode
        self._goals = np.array([g.position for g in episode.goals], np.float64)
        distractors = (episode.info or {}).get("distractors")
        self._distractors = np.array(distractors, np.float64).reshape(-1, 3) if distractors else None
        self._gt = gt
        self._room_of = self._room_lookup()
        self.steps = 0
        self.stop_called = False
        self.measurements = Measurements(*self._measure_spec)
        self.measurements.reset(self._context())
        return obs

    def _context(self) -> StepContext:
        return StepContext(position=self.sim.get_agent_state().position, stop_called=self.stop_called,
                           goals=self._goals, geodesic=self.sim.geodesic_distance,
                           gt_locations=None if self._gt is None else self._gt.locations,
                           distractors=self._distractors, room_at=self._room_of)

    def _room_lookup(self):
        """``StepContext.room_at`` for the simulator's house, or None where it has no rooms (made
        once per episode: measures ask after every step)."""
        scene = getattr(self.sim, "scene", None)
        if not getattr(scene, "rooms", None):
            return None

        def room_at(position):
            room = scene.room_at(float(position[0]), float(position[2]))
            return None if room is None else room.room_id

        return room_at

    def step(self, action: int) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Apply an action. Returns (observations, terminated, truncated).

        Raises:
            ValueError: for an action outside 0..3 or a step after the episode ended.
        """
        if self.episode is None or self.done:
            raise ValueError("call reset() before step(): the episode has ended or not started")
        try:
            action = Action(int(action))
        except (ValueError, TypeError):
            raise ValueError(f"episode {self.episode.episode_id}: invalid action {action!r}; expected one of "
                             f"{', '.join(f'{a.name}={int(a)}' for a in Action)}") from None
        obs = self.sim.step(action)
        self.record_step(action)
        return obs, self.stop_called, self.truncated

    def record_step(self, action: int) -> None:
        """Count an action that has been carried out and measure the agent where it is now.

        ``step`` calls it after moving the simulator; continuous control (the ROS simulator node,
        where a robot executes each action as velocity commands) calls it at each action's end.
        """
        if self.episode is None or self.done:
            raise ValueError("call reset() before recording steps: the episode has ended or not started")
        self.steps += 1
        if int(action) == Action.STOP:
            self.stop_called = True
        self.measurements.update(self._context())

    @property
    def truncated(self) -> bool:
        return not self.stop_called and self.steps >= self.task_config.max_episode_steps

    @property
    def done(self) -> bool:
        return self.stop_called or self.truncated

    def metrics(self) -> dict[str, float]:
        return self.measurements.values()

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
