"""habitat-sim backend: the same interface over ``habitat_sim.Simulator``.

habitat-sim has no pip wheel (conda or a source build, and headless rendering needs an NVIDIA
GPU), so this backend is written against habitat_sim's documented API (``SimulatorConfiguration``,
``CameraSensorSpec``, ``agent.AgentConfiguration``/``ActionSpec``/``ActuationSpec``, ``PathFinder``,
``ShortestPath``/``MultiGoalShortestPath``, ``NavMeshSettings``) and is **untested against the real
library here**; CI tests the configuration mapping and the method plumbing with a stand-in module.
"""

from __future__ import annotations

import math

import numpy as np

from sim.actions import Action
from sim.backends.base import AgentState, Simulator, observation_space_for
from sim.config import ROOM_SENSOR_TYPES, SimulatorConfig, validate
from sim.geometry import heading_from_quat, planar_motion, quat_from_heading
from sim.scenes.semantics import CATEGORIES, UNLABELED
from sim.sensors.camera import finish_depth
from vlnce.errors import ConfigError, MissingDependencyError, NavigationError

INSTALL_HINT = (
    "habitat-sim is not installed. It has no pip wheel: install it with conda "
    "(conda install habitat-sim -c conda-forge -c aihabitat, add 'headless' on servers) or build it from "
    "source (github.com/facebookresearch/habitat-sim). The embedded backend (simulator.type=embedded) "
    "needs nothing beyond pip."
)
_ACTION_NAMES = {Action.MOVE_FORWARD: "move_forward", Action.TURN_LEFT: "turn_left", Action.TURN_RIGHT: "turn_right"}


def import_habitat_sim():
    """Import habitat_sim or raise ``MissingDependencyError`` with install instructions."""
    try:
        import habitat_sim  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    return habitat_sim


def build_configuration(habitat_sim, cfg: SimulatorConfig):
    """Map our ``SimulatorConfig`` onto a ``habitat_sim.Configuration``."""
    if cfg.lidar.enabled:
        raise ConfigError("simulator.lidar is not available with the habitat backend (habitat-sim has no LiDAR "
                          "sensor); use simulator.type=embedded")
    if cfg.scene.startswith("house:"):
        raise ConfigError("simulator.scene house:SEED is an embedded procedural scene; save it with "
                          "'vlnce scene build' and pass the .glb path to the habitat backend")
    if cfg.agent.exact_turns:
        raise ConfigError("simulator.agent.exact_turns is an embedded-backend option (habitat-sim turns its "
                          "quaternion by each action); use simulator.type=embedded")
    rooms = [uuid for uuid, s in cfg.sensors.items() if s.type in ROOM_SENSOR_TYPES]
    if rooms:
        raise ConfigError(f"simulator.sensors {rooms}: room-type sensors read the embedded houses' room "
                          "annotations and are not available with the habitat backend; use simulator.type=embedded")
    backend = habitat_sim.SimulatorConfiguration()
    backend.scene_id = cfg.scene
    backend.random_seed = int(cfg.seed)
    backend.allow_sliding = bool(cfg.agent.allow_sliding)
    backend.enable_physics = False
    sensor_types = {"rgb": habitat_sim.SensorType.COLOR, "depth": habitat_sim.SensorType.DEPTH,
                    "semantic": habitat_sim.SensorType.SEMANTIC, "instance": habitat_sim.SensorType.SEMANTIC}
    specs = []
    for uuid, s in cfg.sensors.items():
        spec = habitat_sim.CameraSensorSpec()
        spec.uuid = uuid
        spec.sensor_type = sensor_types[s.type]
        spec.resolution = [int(s.height_px), int(s.width_px)]
        spec.position = [float(v) for v in s.position_m]
        spec.hfov = float(s.hfov_deg)
        specs.append(spec)
        if s.type in ("semantic", "instance"):
            backend.load_semantic_mesh = True
    agent = habitat_sim.agent.AgentConfiguration()
    agent.height = float(cfg.agent.height_m)
    agent.radius = float(cfg.agent.radius_m)
    agent.sensor_specifications = specs
    act = habitat_sim.agent.ActionSpec
    actuation = habitat_sim.agent.ActuationSpec
    agent.action_space = {
        "move_forward": act("move_forward", actuation(amount=float(cfg.agent.forward_step_m))),
        "turn_left": act("turn_left", actuation(amount=float(cfg.agent.turn_angle_deg))),
        "turn_right": act("turn_right", actuation(amount=float(cfg.agent.turn_angle_deg))),
    }
    return habitat_sim.Configuration(backend, [agent])


class HabitatSimulator(Simulator):
    """``sim.backends.base.Simulator`` over habitat-sim (see the module docstring).

    Observations are post-processed to match the embedded backend: RGB without alpha, depth
    clipped/normalised to (H, W, 1), ``semantic`` as mpcat40 category ids (via the scene's
    semantic annotations) and ``instance`` as habitat's object ids.
    """

    def __init__(self, config: SimulatorConfig, habitat_sim_module=None) -> None:
        self.config = validate(config)
        self._hs = habitat_sim_module or import_habitat_sim()
        self._sim = self._hs.Simulator(build_configuration(self._hs, self.config))
        self._ensure_navmesh()
        self._sim.pathfinder.seed(int(self.config.seed))
        self._category_of_object = self._semantic_lookup()
        self._obs_space = None

    def _ensure_navmesh(self) -> None:
        pf = self._sim.pathfinder
        if not pf.is_loaded:
            settings = self._hs.NavMeshSettings()
            settings.set_defaults()
            settings.agent_radius = float(self.config.agent.radius_m)
            settings.agent_height = float(self.config.agent.height_m)
            settings.agent_max_climb = float(self.config.agent.max_climb_m)
            self._sim.recompute_navmesh(pf, settings)

    def _semantic_lookup(self) -> np.ndarray | None:
        scene = getattr(self._sim, "semantic_scene", None)
        objects = getattr(scene, "objects", None) if scene is not None else None
        if not objects:
            return None
        ids = [int(str(o.id).split("_")[-1]) for o in objects if o is not None]
        table = np.full(max(ids, default=0) + 1, UNLABELED, np.int32)
        index = {name: i for i, name in enumerate(CATEGORIES)}
        for o, oid in zip((o for o in objects if o is not None), ids):
            name = o.category.name() if o.category is not None else "unlabeled"
            table[oid] = index.get(name, UNLABELED)
        return table

    @property
    def observation_space(self):
        if self._obs_space is None:
            self._obs_space = observation_space_for(self.config)
        return self._obs_space

    def _convert(self, raw: dict) -> dict[str, np.ndarray]:
        obs = {}
        for uuid, s in self.config.sensors.items():
            x = np.asarray(raw[uuid])
            if s.type == "rgb":
                obs[uuid] = np.ascontiguousarray(x[..., :3]).astype(np.uint8)
            elif s.type == "depth":
                obs[uuid] = finish_depth(x.reshape(x.shape[0], x.shape[1]).astype(np.float32), s.min_depth_m,
                                         s.max_depth_m, s.normalize_depth)
            elif s.type == "instance":
                obs[uuid] = x.astype(np.int32)
            else:
                ids = x.astype(np.int64)
                if self._category_of_object is None:
                    obs[uuid] = np.full(ids.shape, UNLABELED, np.int32)
                else:
                    obs[uuid] = self._category_of_object[np.clip(ids, 0, len(self._category_of_object) - 1)]
        return obs

    def seed(self, seed: int) -> None:
        self._sim.seed(int(seed))
        self._sim.pathfinder.seed(int(seed))

    def reset(self):
        return self._convert(self._sim.reset())

    def step(self, action: int):
        try:
            action = Action(int(action))
        except (ValueError, TypeError):
            raise ValueError(f"action must be one of {[int(a) for a in Action]}, got {action!r}") from None
        if action == Action.STOP:
            return self._convert(self._sim.get_sensor_observations())
        return self._convert(self._sim.step(_ACTION_NAMES[action]))

    def step_velocity(self, forward_mps: float, left_mps: float, yaw_rate_rps: float, dt: float) -> bool:
        # kinematic integration filtered by the navmesh, as habitat-lab's VelocityAction does
        # (VelocityControl.integrate_transform, then pathfinder.try_step)
        state = self.get_agent_state()
        move, heading = planar_motion(heading_from_quat(state.rotation), forward_mps, left_mps, yaw_rate_rps, dt)
        target = state.position + move
        end = np.asarray(self._sim.pathfinder.try_step(state.position.astype(np.float32), target.astype(np.float32)), np.float64)
        agent = self._sim.get_agent(0)
        new = self._hs.AgentState()
        new.position = end.astype(np.float32)
        new.rotation = self._quaternion(heading)
        agent.set_state(new, reset_sensors=True)
        moved = float(np.linalg.norm((end - state.position)[[0, 2]]))
        return moved < float(np.linalg.norm((target - state.position)[[0, 2]])) - 1e-5

    def get_agent_state(self) -> AgentState:
        s = self._sim.get_agent(0).get_state()
        rot = s.rotation
        q = np.array([rot.x, rot.y, rot.z, rot.w]) if hasattr(rot, "w") else np.asarray(rot, np.float64)
        return AgentState(np.asarray(s.position, np.float64), q)

    def set_agent_state(self, position, rotation) -> None:
        if not self.is_navigable(position):
            raise NavigationError(f"agent position {np.round(np.asarray(position), 3).tolist()} is not navigable")
        agent = self._sim.get_agent(0)
        state = self._hs.AgentState()
        state.position = np.asarray(position, np.float32)
        h = heading_from_quat(rotation)
        state.rotation = self._quaternion(h)
        agent.set_state(state, reset_sensors=True)

    def _quaternion(self, heading: float):
        x, y, z, w = quat_from_heading(heading)
        try:
            import quaternion  # numpy-quaternion, habitat-sim's own dependency

            return quaternion.quaternion(w, x, y, z)
        except ImportError:
            return np.array([x, y, z, w])

    def geodesic_distance(self, position_a, position_b) -> float:
        goals = np.asarray(position_b, np.float64).reshape(-1, 3)
        path = self._hs.MultiGoalShortestPath()
        path.requested_start = np.asarray(position_a, np.float32)
        path.requested_ends = [g.astype(np.float32) for g in goals]
        found = self._sim.pathfinder.find_path(path)
        return float(path.geodesic_distance) if found else math.inf

    def get_straight_shortest_path_points(self, position_a, position_b):
        path = self._hs.ShortestPath()
        path.requested_start = np.asarray(position_a, np.float32)
        path.requested_end = np.asarray(position_b, np.float32)
        if not self._sim.pathfinder.find_path(path):
            return []
        return [np.asarray(p, np.float64) for p in path.points]

    def sample_navigable_point(self) -> np.ndarray:
        return np.asarray(self._sim.pathfinder.get_random_navigable_point(), np.float64)

    def is_navigable(self, point) -> bool:
        return bool(self._sim.pathfinder.is_navigable(np.asarray(point, np.float32)))

    def snap_point(self, point) -> np.ndarray:
        return np.asarray(self._sim.pathfinder.snap_point(np.asarray(point, np.float32)), np.float64)

    def get_observations_at(self, position=None, rotation=None, keep_agent_at_new_pose: bool = False):
        if position is None:
            return self._convert(self._sim.get_sensor_observations())
        current = self.get_agent_state()
        self.set_agent_state(position, current.rotation if rotation is None else rotation)
        obs = self._convert(self._sim.get_sensor_observations())
        if not keep_agent_at_new_pose:
            self.set_agent_state(current.position, current.rotation)
        return obs

    def previous_step_collided(self) -> bool:
        return bool(self._sim.previous_step_collided)

    def close(self) -> None:
        self._sim.close()
