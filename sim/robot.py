"""The simulator as a velocity-controlled robot in simulated time (what the ROS simulator node runs).

A real robot takes velocity commands and moves continuously; VLN-CE measures count discrete
actions. ``SimulatedRobot`` bridges the two without any ROS dependency:

- ``command`` sets a body-frame velocity (clamped; held until ``cmd_timeout_s`` of simulated time
  passes without a new one, then the robot stops, as robot base drivers do);
- ``tick`` advances simulated time by one physics step (``1 / physics_rate_hz`` seconds) and
  integrates the command with collision and sliding;
- ``announce`` tells it that the agent has started an action. The position at the start of action
  ``k + 1`` is the result of action ``k``, so it is measured then, exactly where VLN-CE measures it
  after a discrete step; STOP ends the episode. A driver that never announces actions (teleop)
  gets a measurement every ``forward_step_m`` of travel instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.actions import Action
from sim.geometry import heading_from_quat
from vlnce.errors import ConfigError


@dataclass
class RobotLimits:
    """Physics rate (Hz), command timeout (s of sim time) and speed limits (m/s, rad/s)."""

    physics_rate_hz: float = 50.0
    cmd_timeout_s: float = 0.5
    max_linear_mps: float = 1.0
    max_angular_rps: float = 2.0

    def validate(self) -> "RobotLimits":
        for name in ("physics_rate_hz", "cmd_timeout_s", "max_linear_mps", "max_angular_rps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v}")
        return self


class SimulatedRobot:
    """A simulator backend driven by velocity commands.

    Args:
        sim: a backend with ``step_velocity`` (the embedded simulator).
        limits: physics rate, timeout and speed limits.
        task: a ``VLNCETask`` whose episode is running on ``sim`` (None: free roaming).
    """

    def __init__(self, sim, limits: RobotLimits | None = None, task=None) -> None:
        self.sim = sim
        self.limits = (limits or RobotLimits()).validate()
        self.dt = 1.0 / self.limits.physics_rate_hz
        self.task = task
        agent_cfg = getattr(getattr(sim, "config", None), "agent", None)
        self.forward_step_m = getattr(agent_cfg, "forward_step_m", 0.25)
        self.ticks = 0
        self.velocity = (0.0, 0.0, 0.0)  # forward m/s, left m/s, yaw rate rad/s (applied last tick)
        self._command = (0.0, 0.0, 0.0)
        self._command_time = -math.inf
        self.collided = False
        self._reset_episode_state()

    # --- episode bookkeeping ----------------------------------------------------------------
    def _reset_episode_state(self) -> None:
        state = self.sim.get_agent_state()
        self.start_position = state.position.copy()
        self.start_heading = heading_from_quat(state.rotation)
        self._last_action: int | None = None
        self._announced = False
        self._last_measured = state.position.copy()
        self.actions: list[int] = []
        self.ended = False

    def start_episode(self, task) -> None:
        """Use ``task``'s freshly reset episode (its simulator must be ``self.sim``)."""
        self.task = task
        self.sim = task.sim
        self._command, self._command_time, self.velocity = (0.0, 0.0, 0.0), -math.inf, (0.0, 0.0, 0.0)
        self._reset_episode_state()

    @property
    def time_s(self) -> float:
        """Simulated time, seconds (an integer number of physics steps)."""
        return self.ticks * self.dt

    @property
    def episode_done(self) -> bool:
        return self.task is not None and self.task.episode is not None and self.task.done

    def announce(self, action: int) -> bool:
        """The agent starts ``action``; returns True when this ended the episode."""
        if self.task is None or self.task.episode is None or self.task.done:
            return False
        action = int(Action(int(action)))
        self._announced = True
        if self._last_action is not None:
            self.task.record_step(self._last_action)
        self._last_action = None
        if self.task.done:  # the step limit was reached
            return True
        self.actions.append(action)
        if action == Action.STOP:
            self.task.record_step(Action.STOP)
            return True
        self._last_action = action
        return False

    def end(self) -> None:
        """The agent will send no more actions (its step limit): measure the last one and end the
        episode without STOP, as VLN-CE's truncation."""
        if self.task is None or self.task.episode is None or self.task.done:
            return
        if self._last_action is not None:
            self.task.record_step(self._last_action)
            self._last_action = None
        self.ended = True

    @property
    def episode_over(self) -> bool:
        return self.episode_done or self.ended

    # --- motion -----------------------------------------------------------------------------
    def command(self, forward_mps: float, left_mps: float, yaw_rate_rps: float) -> str | None:
        """Set the velocity to hold; returns a warning when it had to be changed (non-finite, too fast)."""
        vals = (forward_mps, left_mps, yaw_rate_rps)
        lim = self.limits
        warning = None
        if not all(math.isfinite(v) for v in vals):
            self._command, self._command_time = (0.0, 0.0, 0.0), self.time_s
            return f"velocity command {vals} is not finite; stopping"
        fwd, left, yaw = (float(v) for v in vals)
        speed = math.hypot(fwd, left)
        if speed > lim.max_linear_mps:
            warning = f"linear speed {speed:.3g} m/s clamped to {lim.max_linear_mps:g} m/s"
            fwd, left = fwd * lim.max_linear_mps / speed, left * lim.max_linear_mps / speed
        if abs(yaw) > lim.max_angular_rps:
            warning = (warning + "; " if warning else "") + f"yaw rate {yaw:.3g} rad/s clamped to {lim.max_angular_rps:g} rad/s"
            yaw = math.copysign(lim.max_angular_rps, yaw)
        self._command, self._command_time = (fwd, left, yaw), self.time_s
        return warning

    def tick(self) -> None:
        """Advance one physics step."""
        fresh = self.time_s - self._command_time <= self.limits.cmd_timeout_s + 1e-9
        self.velocity = self._command if fresh else (0.0, 0.0, 0.0)
        fwd, left, yaw = self.velocity
        self.collided = bool(self.sim.step_velocity(fwd, left, yaw, self.dt)) if any(self.velocity) else False
        self.ticks += 1
        if self.task is not None and not self._announced and not self.episode_done:
            pos = self.sim.get_agent_state().position
            if np.linalg.norm((pos - self._last_measured)[[0, 2]]) >= self.forward_step_m - 1e-9:
                self._last_measured = pos.copy()
                self.task.record_step(Action.MOVE_FORWARD)

    def pose(self) -> tuple[np.ndarray, float]:
        """Habitat world position (3,) and heading (radians)."""
        s = self.sim.get_agent_state()
        return s.position, heading_from_quat(s.rotation)
