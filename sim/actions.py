"""Discrete actions of the VLN-CE task, with Habitat's ids."""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    STOP = 0
    MOVE_FORWARD = 1
    TURN_LEFT = 2
    TURN_RIGHT = 3


NUM_ACTIONS = len(Action)
