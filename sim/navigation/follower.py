"""Greedy shortest-path follower with discrete actions (habitat-lab's ShortestPathFollower idea).

At every step: stop inside ``goal_radius_m``; otherwise turn towards the next waypoint of the
geodesic path when it is off by more than half a turn, else move forward.
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
    """

    def __init__(self, sim, goal_radius_m: float = 0.5, turn_angle_deg: float = 15.0) -> None:
        self.sim = sim
        self.goal_radius_m = goal_radius_m
        self.half_turn = math.radians(turn_angle_deg) / 2

    def get_next_action(self, goal) -> Action:
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
        if abs(diff) <= self.half_turn + 1e-6:
            return Action.MOVE_FORWARD
        return Action.TURN_LEFT if diff > 0 else Action.TURN_RIGHT
