"""The simulator interface every backend implements, with habitat-lab's method names.

Conventions (as ``habitat.core.simulator.Simulator``): positions are (x, y, z) metres in the
world frame with y up; rotations are unit quaternions (x, y, z, w); the agent's forward is -z at
heading 0; ``geodesic_distance`` returns ``inf`` when no path exists. Backends are context
managers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from sim.actions import Action
from sim.config import ROOM_SENSOR_TYPES
from sim.scenes.semantics import CATEGORIES, ROOM_TYPES

#: channels of the organised ``lidar`` observation, in order
LIDAR_CHANNELS = ("x", "y", "z", "range", "intensity", "label")


@dataclass
class AgentState:
    """Agent base pose: ``position`` (3,) metres on the floor, ``rotation`` (4,) quaternion (x, y, z, w)."""

    position: np.ndarray
    rotation: np.ndarray


class Simulator(abc.ABC):
    """A backend: owns a scene, an agent and its sensors."""

    #: the world frame's up and the agent's forward at identity rotation
    up_vector = np.array([0.0, 1.0, 0.0])
    forward_vector = np.array([0.0, 0.0, -1.0])

    @property
    @abc.abstractmethod
    def observation_space(self):
        """A ``gymnasium.spaces.Dict`` with one entry per sensor uuid."""

    @property
    def action_space(self):
        import gymnasium

        return gymnasium.spaces.Discrete(len(Action))

    @abc.abstractmethod
    def reset(self) -> dict[str, np.ndarray]:
        """Put the agent at its start pose and return the observations there."""

    @abc.abstractmethod
    def step(self, action: int) -> dict[str, np.ndarray]:
        """Apply one discrete action (``sim.actions.Action``) and return the new observations."""

    @abc.abstractmethod
    def seed(self, seed: int) -> None:
        """Reseed the backend's random generator."""

    @abc.abstractmethod
    def get_agent_state(self) -> AgentState: ...

    @abc.abstractmethod
    def set_agent_state(self, position, rotation) -> None:
        """Teleport the agent. Raises ``NavigationError`` if the position is not navigable."""

    @abc.abstractmethod
    def geodesic_distance(self, position_a, position_b) -> float:
        """Shortest walkable distance in metres to ``position_b`` (a point or a list of points)."""

    @abc.abstractmethod
    def get_straight_shortest_path_points(self, position_a, position_b) -> list[np.ndarray]:
        """Waypoints of the shortest path, both ends included (empty if unreachable)."""

    @abc.abstractmethod
    def sample_navigable_point(self) -> np.ndarray: ...

    @abc.abstractmethod
    def is_navigable(self, point) -> bool: ...

    @abc.abstractmethod
    def snap_point(self, point) -> np.ndarray: ...

    @abc.abstractmethod
    def get_observations_at(self, position=None, rotation=None, keep_agent_at_new_pose: bool = False):
        """Observations at a pose (the current one if omitted), optionally moving the agent there."""

    @abc.abstractmethod
    def previous_step_collided(self) -> bool: ...

    def step_velocity(self, forward_mps: float, left_mps: float, yaw_rate_rps: float, dt: float) -> bool:
        """Integrate a body-frame velocity for ``dt`` seconds with collision and sliding.

        ``forward_mps`` and ``left_mps`` are metres per second along the agent's forward and left
        axes, ``yaw_rate_rps`` radians per second, counter-clockwise seen from above (a left
        turn). This is what a ROS ``geometry_msgs/Twist`` on ``/cmd_vel`` drives (habitat-sim's
        ``VelocityControl`` followed by ``step_filter``). Returns whether the move collided.
        """
        raise NotImplementedError(f"{type(self).__name__} has no velocity control")

    def step_physics(self, dt: float) -> None:
        """habitat-lab's task loop calls this after every action; kinematic backends do nothing."""

    def reconfigure(self, config) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be reconfigured; create a new simulator")

    def close(self) -> None:
        """Release native resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def observation_space_for(config, lidar=None):
    """The ``gymnasium.spaces.Dict`` of a simulator config: one Box per sensor uuid.

    rgb (H, W, 3) uint8; depth (H, W, 1) float32 in [0, 1] when normalised, else metres;
    semantic (H, W) int32 category ids; instance (H, W) int32; rooms / room (H, W) int32 room-type
    indices into ``ROOM_TYPES`` (-1: none; ``sim.sensors.rooms``); lidar (beams, columns, 6) float32
    with channels ``LIDAR_CHANNELS`` (sensor frame, metres).
    """
    from gymnasium import spaces

    entries = {}
    for uuid, s in config.sensors.items():
        shape2 = (s.height_px, s.width_px)
        if s.type == "rgb":
            entries[uuid] = spaces.Box(0, 255, shape2 + (3,), np.uint8)
        elif s.type == "depth":
            lo, hi = (0.0, 1.0) if s.normalize_depth else (s.min_depth_m, s.max_depth_m)
            entries[uuid] = spaces.Box(lo, hi, shape2 + (1,), np.float32)
        elif s.type == "semantic":
            entries[uuid] = spaces.Box(0, len(CATEGORIES) - 1, shape2, np.int32)
        elif s.type in ROOM_SENSOR_TYPES:
            entries[uuid] = spaces.Box(-1, len(ROOM_TYPES) - 1, shape2, np.int32)
        else:
            entries[uuid] = spaces.Box(0, np.iinfo(np.int32).max, shape2, np.int32)
    if lidar is not None:
        entries["lidar"] = spaces.Box(-np.inf, np.inf, (lidar.beams, lidar.columns, len(LIDAR_CHANNELS)), np.float32)
    return spaces.Dict(entries)
