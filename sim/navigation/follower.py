"""Greedy shortest-path follower with discrete actions (habitat-lab's ShortestPathFollower idea).

At every step: stop inside ``goal_radius_m``; otherwise turn towards the next waypoint of the
geodesic path when it is off by more than half a turn, else move forward.

Half a turn is the finest aim a quantised heading allows, so on a straight stretch that does not
lie on one of its headings, the agent leaves the tolerance band one step after every turn and
turns back: ``F R F L F R ...``. ``hold_angle_deg`` adds hysteresis: after a forward step the
agent keeps going while the waypoint is within that angle, and only a turn re-aims to half a turn.
"""

from __future__ import annotations

import math

import numpy as np

from sim.actions import Action
from sim.geometry import heading_from_quat, wrap_angle


class ShortestPathFollower:
    """Expert actions along the shortest path.

    Args:
        sim: a backend with ``get_agent_state`` and ``get_straight_shortest_path_points``.
        goal_radius_m: distance to the goal at which STOP is returned.
        turn_angle_deg: the backend's turn step.
        hold_angle_deg: after a forward step, keep going while the waypoint is within this angle
            (degrees); None or anything below half a turn: always aim to half a turn.
    """

    def __init__(self, sim, goal_radius_m: float = 0.5, turn_angle_deg: float = 15.0,
                 hold_angle_deg: float | None = None) -> None:
        self.sim = sim
        self.goal_radius_m = goal_radius_m
        self.half_turn = math.radians(turn_angle_deg) / 2
        self.hold = max(self.half_turn, math.radians(hold_angle_deg)) if hold_angle_deg else self.half_turn

    def get_next_action(self, goal, prev_action: int | None = None) -> Action:
        """The expert's action towards ``goal``; ``prev_action`` (the action executed last, if any)
        selects the hold tolerance after a forward step."""
        state = self.sim.get_agent_state()
        pos = state.position
        goal = np.asarray(goal, np.float64)
        pathfinder = getattr(self.sim, "pathfinder", None)
        if hasattr(pathfinder, "next_waypoint"):  # embedded backend: only the next corner is needed
            target = pathfinder.next_waypoint(pos, goal)
            if target is None:
                return Action.STOP
            near = np.linalg.norm((goal - pos)[[0, 2]]) < self.goal_radius_m
            if near and pathfinder.line_of_sight(pos, goal):
                return Action.STOP
            if np.linalg.norm((target - pos)[[0, 2]]) < 0.05:
                target = goal
        else:
            path = self.sim.get_straight_shortest_path_points(pos, goal)
            if not path or self.sim.geodesic_distance(pos, goal) < self.goal_radius_m:
                return Action.STOP
            target = next((p for p in path[1:] if np.linalg.norm((p - pos)[[0, 2]]) > 0.05), path[-1])
        d = target - pos
        desired = math.atan2(-d[0], -d[2])
        diff = wrap_angle(desired - heading_from_quat(state.rotation))
        tolerance = self.hold if prev_action == Action.MOVE_FORWARD else self.half_turn
        if abs(diff) <= tolerance + 1e-6:
            return Action.MOVE_FORWARD
        return Action.TURN_LEFT if diff > 0 else Action.TURN_RIGHT
