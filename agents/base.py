"""The agent interface and the agent registry."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from vlnce.registry import Registry


@dataclass
class EpisodeInfo:
    """What an agent is told at the start of an episode.

    ``instruction`` is public; ``privileged`` (the simulator and the goal) is given only to agents
    that declare ``privileged = True`` (the oracle), never to agents being evaluated as learners.
    """

    episode_id: str
    instruction: str
    rng: np.random.Generator
    privileged: dict | None = None


class Agent(abc.ABC):
    """A policy over the discrete VLN-CE actions (STOP=0, MOVE_FORWARD=1, TURN_LEFT=2, TURN_RIGHT=3).

    Attributes:
        needs_observations: False for agents that ignore sensors; evaluation then skips rendering,
            as VLN-CE does for its non-learning baselines.
        privileged: the agent reads the simulator and the goal (oracle-style baselines).
        takes_checkpoint: the constructor takes ``checkpoint=PATH`` (learned agents).
    """

    needs_observations: bool = True
    privileged: bool = False
    takes_checkpoint: bool = False

    def sensor_config(self) -> dict | None:
        """Camera sensors (``{uuid: CameraSensorConfig fields}``) the agent needs, replacing the
        simulator config's; None keeps the config's."""
        return None

    @abc.abstractmethod
    def reset(self, info: EpisodeInfo) -> None: ...

    @abc.abstractmethod
    def act(self, observations: dict) -> int: ...

    def executed(self, action: int) -> None:
        """Told that ``action``, not the one ``act`` returned, was executed (an expert or an
        operator took over for a step). Agents that remember their own last action (as the
        learned policies feed it back) remember this one instead; the others ignore it."""


AGENTS: Registry = Registry("agent", base=Agent)
