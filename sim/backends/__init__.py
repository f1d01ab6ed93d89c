"""Simulator backends, registered by name: ``embedded`` (default) and ``habitat``."""

from __future__ import annotations

from sim.backends.base import AgentState, Simulator
from vlnce.registry import Registry

BACKENDS: Registry = Registry("simulator backend")


def _embedded(config, **kwargs):
    from sim.backends.embedded import EmbeddedSimulator

    return EmbeddedSimulator(config, **kwargs)


def _habitat(config, **kwargs):
    from sim.backends.habitat import HabitatSimulator

    return HabitatSimulator(config, **kwargs)


BACKENDS.add("embedded", _embedded)
BACKENDS.add("habitat", _habitat)


def make_simulator(config=None, **kwargs) -> Simulator:
    """Create the backend named by ``config.type`` (default ``embedded``).

    Raises:
        UnknownNameError: naming the known backends.
    """
    from sim.config import SimulatorConfig, validate

    config = validate(config or SimulatorConfig())
    return BACKENDS.get(config.type)(config, **kwargs)


__all__ = ["AgentState", "BACKENDS", "Simulator", "make_simulator"]
