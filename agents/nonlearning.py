"""Non-learning VLN-CE baselines (Krantz et al. 2020, Table 2) and privileged references."""

from __future__ import annotations

import numpy as np

from agents.base import AGENTS, Agent, EpisodeInfo
from sim.actions import Action
from sim.navigation.follower import ShortestPathFollower


@AGENTS.register("random")
class RandomAgent(Agent):
    """Samples actions with VLN-CE's probabilities: STOP 2%, forward 68%, left 15%, right 15%."""

    needs_observations = False
    PROBS = np.array([0.02, 0.68, 0.15, 0.15])

    def reset(self, info: EpisodeInfo) -> None:
        self.rng = info.rng

    def act(self, observations: dict) -> int:
        return int(self.rng.choice(4, p=self.PROBS))


@AGENTS.register("handcrafted")
class HandcraftedAgent(Agent):
    """Turns to a random heading (0-23 turns of 15 deg), walks 37 steps forward (9.25 m), stops."""

    needs_observations = False
    FORWARD_STEPS = 37

    def reset(self, info: EpisodeInfo) -> None:
        turns = int(info.rng.integers(0, 24))
        self.plan = [Action.TURN_LEFT] * turns + [Action.MOVE_FORWARD] * self.FORWARD_STEPS + [Action.STOP]

    def act(self, observations: dict) -> int:
        return int(self.plan.pop(0)) if self.plan else int(Action.STOP)


@AGENTS.register("oracle")
class OracleAgent(Agent):
    """Follows the shortest path to the goal and stops within 0.5 m of it (privileged upper bound)."""

    needs_observations = False
    privileged = True

    def reset(self, info: EpisodeInfo) -> None:
        sim = info.privileged["sim"]
        self.goal = np.asarray(info.privileged["goal"], np.float64)
        self.follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)

    def act(self, observations: dict) -> int:
        return int(self.follower.get_next_action(self.goal))


@AGENTS.register("instruction_blind")
class InstructionBlindAgent(Agent):
    """The strongest agent that ignores the instruction: it knows the house and the plausible
    destinations of the episode (the goal and its distractors) and walks perfectly to one of them,
    chosen at random. Its success rate measures the benchmark's instruction-blind ceiling.
    """

    needs_observations = False
    privileged = True

    def reset(self, info: EpisodeInfo) -> None:
        sim = info.privileged["sim"]
        choices = [info.privileged["goal"]] + list(info.privileged.get("distractors", []))
        self.goal = np.asarray(choices[int(info.rng.integers(len(choices)))], np.float64)
        self.follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)

    def act(self, observations: dict) -> int:
        return int(self.follower.get_next_action(self.goal))

