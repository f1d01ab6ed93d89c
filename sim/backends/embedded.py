"""The embedded simulator: procedural or user meshes, Embree sensors, grid navigation, on CPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from sim.actions import Action
from sim.backends.base import AgentState, Simulator, observation_space_for
from sim.config import SimulatorConfig, validate
from sim.geometry import heading_from_quat, heading_matrix, planar_motion, quat_from_heading, wrap_angle
from sim.navigation.motion import try_step
from sim.navigation.navgrid import NavMeshSettings, load_or_build_navgrid
from sim.navigation.pathfinder import PathFinder, require_navigable
from sim.scenes.scene import Scene, load_scene
from sim.sensors.camera import PinholeCamera, finish_depth
from sim.sensors.lidar import SpinningLidar
from sim.sensors.raycast import RayCaster
from sim.sensors.rooms import RoomCamera, room_type_at
from sim.sensors.shading import SceneTables
from vlnce.errors import ConfigError, SceneError
from vlnce.fileio import default_cache_dir

log = logging.getLogger(__name__)


def resolve_scene(spec: str, up_axis: str = "y") -> Scene:
    """A scene from a config string: ``house:SEED`` (procedural) or a mesh file path.

    Raises:
        ConfigError: malformed ``house:`` seed. SceneError: unreadable mesh file.
    """
    if spec.startswith("house:"):
        from sim.scenes.generator import generate_house

        raw = spec.split(":", 1)[1]
        if not raw.isdigit():
            raise ConfigError(f"simulator.scene {spec!r}: expected house:SEED with a non-negative integer seed")
        return generate_house(int(raw))
    return load_scene(Path(spec).expanduser(), up_axis=up_axis)


class EmbeddedSimulator(Simulator):
    """The default backend.

    Args:
        config: simulator configuration (``sim.config.SimulatorConfig``).
        scene: an already loaded scene; overrides ``config.scene``.
    """

    def __init__(self, config: SimulatorConfig | None = None, scene: Scene | None = None) -> None:
        self.config = validate(config or SimulatorConfig())
        cfg = self.config
        self.scene = scene if scene is not None else resolve_scene(cfg.scene, cfg.up_axis)
        self.caster = RayCaster(self.scene.triangles(), num_threads=cfg.num_threads or None)
        self.tables = SceneTables(self.scene)
        nav_settings = NavMeshSettings(
            cell_size_m=cfg.navigation.cell_size_m, agent_radius_m=cfg.agent.radius_m,
            agent_height_m=cfg.agent.height_m, agent_max_climb_m=cfg.agent.max_climb_m,
            floor_height_m=cfg.navigation.floor_height_m, num_slices=cfg.navigation.num_slices)
        cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        self.navgrid = load_or_build_navgrid(self.scene, nav_settings, cache, self.caster)
        if not self.navgrid.navigable.any():
            raise SceneError(f"scene {cfg.scene!r} has no area where an agent of radius "
                             f"{cfg.agent.radius_m} m fits")
        self.pathfinder = PathFinder(self.navgrid)
        # sensors sharing intrinsics and mount share one ray cast
        self._camera_groups: list[tuple[PinholeCamera, np.ndarray, dict[str, str]]] = []
        groups: dict[tuple, dict[str, str]] = {}
        self._room_sensors: dict[str, RoomCamera | np.ndarray] = {}
        for uuid, s in cfg.sensors.items():
            if s.type == "rooms":
                self._room_sensors[uuid] = RoomCamera(s.width_px, s.height_px, s.hfov_deg, s.position_m)
                continue
            if s.type == "room":
                self._room_sensors[uuid] = np.asarray(s.position_m, np.float64)
                continue
            key = (s.width_px, s.height_px, float(s.hfov_deg), tuple(float(v) for v in s.position_m))
            groups.setdefault(key, {})[uuid] = s.type
        for (w, h, hfov, pos), members in groups.items():
            self._camera_groups.append((PinholeCamera(w, h, math.radians(hfov)), np.array(pos), members))
        self.lidar = None
        if cfg.lidar.enabled:
            lc = cfg.lidar
            self.lidar = SpinningLidar(lc.beams, lc.columns, lc.fov_up_deg, lc.fov_down_deg, lc.min_range_m,
                                       lc.max_range_m, lc.noise_std_m, lc.dropout_prob)
        self._obs_space = observation_space_for(cfg, self.lidar)
        self._rng = np.random.default_rng(cfg.seed)
        self._position = self.navgrid.snap_point(self.navgrid.sample_navigable_point(self._rng))
        self._set_heading(0.0)
        self._start: tuple[np.ndarray, float] | None = None
        self._collided = False

    # --- spaces -------------------------------------------------------------------------------
    @property
    def observation_space(self):
        return self._obs_space

    # --- observations -------------------------------------------------------------------------
    def _render(self, position: np.ndarray, heading: float) -> dict[str, np.ndarray]:
        rot = heading_matrix(heading)
        obs: dict[str, np.ndarray] = {}
        for camera, mount, members in self._camera_groups:
            modalities = tuple(sorted(set(members.values())))
            out = camera.render(self.caster, self.tables, position + rot @ mount, rot, modalities)
            for uuid, kind in members.items():
                if kind == "depth":
                    s = self.config.sensors[uuid]
                    obs[uuid] = finish_depth(out["depth"], s.min_depth_m, s.max_depth_m, s.normalize_depth)
                else:
                    obs[uuid] = out[kind]
        for uuid, sensor in self._room_sensors.items():
            if isinstance(sensor, RoomCamera):
                obs[uuid] = sensor.render(self.scene, self.caster, position, heading)
            else:
                mount = position + rot @ sensor
                s = self.config.sensors[uuid]
                obs[uuid] = np.full((s.height_px, s.width_px), room_type_at(self.scene, mount[0], mount[2]), np.int32)
        if self.lidar is not None:
            scan = self.get_lidar_scan(position, heading)
            obs["lidar"] = np.concatenate(
                [scan.xyz, scan.range[..., None], scan.intensity[..., None], scan.label[..., None].astype(np.float32)],
                axis=-1)
        return obs

    def get_lidar_scan(self, position=None, heading: float | None = None):
        """One organised LiDAR scan (``sim.sensors.lidar.LidarScan``) at the agent or a given pose."""
        if self.lidar is None:
            raise ConfigError("the lidar is disabled: set simulator.lidar.enabled=true")
        position = self._position if position is None else np.asarray(position, np.float64)
        heading = self._heading if heading is None else heading
        rot = heading_matrix(heading)
        mount = np.asarray(self.config.lidar.position_m, np.float64)
        return self.lidar.scan(self.caster, self.tables, position + rot @ mount, rot, self._rng)

    # --- Simulator API ------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def set_start_state(self, position, rotation) -> None:
        """Pose used by ``reset`` (by default a random navigable point, heading 0)."""
        require_navigable(self.navgrid, position, "start position")
        self._start = (self._on_floor(position), heading_from_quat(rotation))

    def reset(self) -> dict[str, np.ndarray]:
        if self._start is None:
            self._start = (self.navgrid.sample_navigable_point(self._rng), 0.0)
        self._position = self._start[0].copy()
        self._set_heading(self._start[1])
        self._collided = False
        return self._render(self._position, self._heading)

    def _set_heading(self, heading: float) -> None:
        """A continuous heading (reset, velocity control, set_agent_state): discrete turns count
        from here (``AgentConfig.exact_turns``)."""
        self._heading = self._heading_base = float(heading)
        self._turns = 0

    def _turn(self, sign: int) -> None:
        angle = self.config.agent.turn_angle_deg
        per_circle = 360.0 / angle
        if self.config.agent.exact_turns and abs(per_circle - round(per_circle)) < 1e-9:
            self._turns = (self._turns + sign) % round(per_circle)
            self._heading = wrap_angle(self._heading_base + self._turns * math.radians(angle))
        else:
            self._heading = wrap_angle(self._heading + sign * math.radians(angle))

    def step(self, action: int) -> dict[str, np.ndarray]:
        try:
            action = Action(int(action))
        except (ValueError, TypeError):
            raise ValueError(f"action must be one of {[int(a) for a in Action]} ({', '.join(a.name for a in Action)}), "
                             f"got {action!r}") from None
        agent = self.config.agent
        self._collided = False
        if action == Action.MOVE_FORWARD:
            fwd = heading_matrix(self._heading) @ self.forward_vector
            target = self._position + agent.forward_step_m * fwd
            self._position, self._collided = try_step(self.navgrid, self._position, target, agent.allow_sliding)
        elif action == Action.TURN_LEFT:
            self._turn(+1)
        elif action == Action.TURN_RIGHT:
            self._turn(-1)
        return self._render(self._position, self._heading)

    def step_velocity(self, forward_mps: float, left_mps: float, yaw_rate_rps: float, dt: float) -> bool:
        values = (forward_mps, left_mps, yaw_rate_rps, dt)
        if not all(math.isfinite(v) for v in values) or dt < 0:
            raise ValueError(f"velocity and dt must be finite (dt >= 0), got forward={forward_mps}, left={left_mps}, "
                             f"yaw_rate={yaw_rate_rps}, dt={dt}")
        move, heading = planar_motion(self._heading, forward_mps, left_mps, yaw_rate_rps, dt)
        if heading != self._heading:
            self._set_heading(heading)
        self._collided = False
        if forward_mps or left_mps:
            self._position, self._collided = try_step(self.navgrid, self._position, self._position + move,
                                                      self.config.agent.allow_sliding)
        return self._collided

    def get_agent_state(self) -> AgentState:
        return AgentState(self._position.copy(), quat_from_heading(self._heading))

    def _on_floor(self, position) -> np.ndarray:
        p = np.asarray(position, np.float64).reshape(3)
        i, k = self.navgrid.to_cell(p)
        return np.array([p[0], float(self.navgrid.floor_y[i, k]), p[2]])

    def set_agent_state(self, position, rotation) -> None:
        require_navigable(self.navgrid, position, "agent position")
        self._position = self._on_floor(position)
        self._set_heading(heading_from_quat(rotation))
        self._collided = False

    def geodesic_distance(self, position_a, position_b) -> float:
        return self.pathfinder.geodesic_distance(position_a, position_b)

    def get_straight_shortest_path_points(self, position_a, position_b) -> list[np.ndarray]:
        return self.pathfinder.find_path(position_a, position_b)[0]

    def sample_navigable_point(self) -> np.ndarray:
        return self.navgrid.sample_navigable_point(self._rng)

    def is_navigable(self, point) -> bool:
        return self.navgrid.is_navigable(point)

    def snap_point(self, point) -> np.ndarray:
        return self.navgrid.snap_point(point)

    def get_observations_at(self, position=None, rotation=None, keep_agent_at_new_pose: bool = False):
        if position is None:
            return self._render(self._position, self._heading)
        position = np.asarray(position, np.float64).reshape(3)
        heading = self._heading if rotation is None else heading_from_quat(rotation)
        if keep_agent_at_new_pose:
            self.set_agent_state(position, quat_from_heading(heading))
            return self._render(self._position, self._heading)
        return self._render(position, heading)

    def previous_step_collided(self) -> bool:
        return self._collided

    def close(self) -> None:
        self.caster.close()
