"""Discrete VLN-CE actions as timed velocity commands (no ROS here; the agent node calls it).

MOVE_FORWARD is ``forward_step_m`` at ``linear_speed_mps``; TURN_LEFT/RIGHT are
``turn_angle_deg`` at ``angular_speed_rps`` (both VLN-CE's 0.25 m and 15 deg by default; the turn
speed is per second, not per control period, the bug ros_x_habitat's Gazebo bridge has).

Open loop, a command is held for distance / speed seconds. Closed loop on odometry, the
executor measures progress from the pose at the action's start, asks for half the remainder per
control period near the target and for just the remainder at the end, so a step ends within
``tolerance`` of its target; when commands take effect a period late it overshoots by about half
a period's travel instead of a whole one. A step that stops
making progress (a wall) ends once its nominal duration has passed and nothing moved for
``stall_s``, and in any case after ``timeout_factor`` times its nominal duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.actions import Action
from sim.geometry import wrap_angle
from vlnce.errors import ConfigError


@dataclass
class MotionConfig:
    """How actions become motion. Metres, degrees, m/s, rad/s, seconds."""

    forward_step_m: float = 0.25
    turn_angle_deg: float = 15.0
    linear_speed_mps: float = 0.25
    angular_speed_rps: float = math.radians(30.0)
    closed_loop: bool = True
    tolerance_m: float = 1e-5
    tolerance_deg: float = 1e-3
    timeout_factor: float = 3.0
    stall_s: float = 0.1
    creep_fraction: float = 0.1  # slowest approach speed, as a fraction of the speed

    def validate(self) -> "MotionConfig":
        for name in ("forward_step_m", "turn_angle_deg", "linear_speed_mps", "angular_speed_rps", "timeout_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"motion.{name} must be a positive number, got {v}")
        return self


class ActionExecutor:
    """Turns one action at a time into (forward m/s, yaw rate rad/s) commands.

    Poses are ``(x, y, yaw)`` in a fixed frame (odom), or None when open loop.
    """

    def __init__(self, cfg: MotionConfig | None = None) -> None:
        self.cfg = (cfg or MotionConfig()).validate()
        self.action: Action | None = None
        self.done = True

    def nominal_duration(self, action: Action) -> float:
        c = self.cfg
        if action == Action.MOVE_FORWARD:
            return c.forward_step_m / c.linear_speed_mps
        if action in (Action.TURN_LEFT, Action.TURN_RIGHT):
            return math.radians(c.turn_angle_deg) / c.angular_speed_rps
        return 0.0

    def start(self, action: int, t: float, pose: tuple[float, float, float] | None) -> None:
        self.action = Action(int(action))
        self.t0 = t
        self.pose0 = pose
        self.done = self.action == Action.STOP
        self.gave_up = False
        self._best = -math.inf
        self._t_best = t

    def progress(self, pose) -> tuple[float, float]:
        """(done so far, target) in metres or radians, for closed-loop control."""
        x0, y0, yaw0 = self.pose0
        if self.action == Action.MOVE_FORWARD:
            d = (pose[0] - x0) * math.cos(yaw0) + (pose[1] - y0) * math.sin(yaw0)
            return d, self.cfg.forward_step_m
        sign = 1.0 if self.action == Action.TURN_LEFT else -1.0
        return sign * wrap_angle(pose[2] - yaw0), math.radians(self.cfg.turn_angle_deg)

    def update(self, t: float, pose=None, control_dt: float = 0.02) -> tuple[float, float]:
        """The command to hold from time ``t`` for the next ``control_dt`` seconds (zero once done)."""
        if self.done or self.action is None:
            return 0.0, 0.0
        c = self.cfg
        elapsed = t - self.t0
        nominal = self.nominal_duration(self.action)
        forward = self.action == Action.MOVE_FORWARD
        speed = c.linear_speed_mps if forward else c.angular_speed_rps
        sign = -1.0 if self.action == Action.TURN_RIGHT else 1.0
        if c.closed_loop and pose is not None and self.pose0 is not None:
            done, target = self.progress(pose)
            remaining = target - done
            tol = c.tolerance_m if forward else math.radians(c.tolerance_deg)
            if remaining <= tol:
                self.done = True
                return 0.0, 0.0
            if done > self._best + 1e-4:
                self._best, self._t_best = done, t
            stalled = elapsed >= nominal and t - self._t_best >= c.stall_s
            if stalled or elapsed > c.timeout_factor * nominal + 0.5:
                self.done = self.gave_up = True
                return 0.0, 0.0
            dt = max(control_dt, 1e-6)
            # near the target, halve the remainder each period instead of asking for all of it: a
            # command that takes effect a period late (a busy machine, a slow link) then overshoots
            # by half the last remainder instead of a whole period at full speed
            v = min(speed, remaining / dt, max(remaining / (2.0 * dt), c.creep_fraction * speed))
        else:
            if elapsed >= nominal - 1e-9:
                self.done = True
                return 0.0, 0.0
            v = speed
        return (v, 0.0) if forward else (0.0, sign * v)
