"""Typed simulator configuration. YAML files in ``configs/`` only override these defaults.

Defaults are VLN-CE's (``habitat_extensions/config/vlnce_task.yaml`` and habitat-lab v0.1.x):
RGB 224x224, depth 256x256 in [0, 10] m normalised, HFOV 90 deg, camera 1.25 m above the floor,
agent radius 0.1 m and height 1.5 m, forward 0.25 m, turns 15 deg, sliding on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlnce.errors import ConfigError

SENSOR_TYPES = ("rgb", "depth", "semantic", "instance", "rooms", "room")
# privileged room-type ground truth from the embedded houses' room annotations (sim.sensors.rooms)
ROOM_SENSOR_TYPES = ("rooms", "room")


@dataclass
class CameraSensorConfig:
    """One pinhole camera output.

    ``position_m`` is relative to the agent's base (x right, y up, z back), metres. ``rooms`` and
    ``room`` are privileged ground truth of the embedded backend (``sim.sensors.rooms``): the type
    of the room seen at each pixel, and the type of the room containing the mount (at every pixel).
    """

    type: str = MISSING  # rgb | depth | semantic | instance | rooms | room
    width_px: int = 256
    height_px: int = 256
    hfov_deg: float = 90.0
    position_m: list[float] = field(default_factory=lambda: [0.0, 1.25, 0.0])
    min_depth_m: float = 0.0
    max_depth_m: float = 10.0
    normalize_depth: bool = True


@dataclass
class LidarConfig:
    """Spinning LiDAR; off by default (VLN-CE agents do not use it)."""

    enabled: bool = False
    beams: int = 64
    columns: int = 2048
    fov_up_deg: float = 15.0
    fov_down_deg: float = -25.0
    min_range_m: float = 0.1
    max_range_m: float = 30.0
    noise_std_m: float = 0.0
    dropout_prob: float = 0.0
    position_m: list[float] = field(default_factory=lambda: [0.0, 1.0, 0.0])


@dataclass
class AgentConfig:
    """The agent's body and discrete actions.

    ``exact_turns`` (embedded backend): keep the heading as the last continuous heading plus a
    whole number of discrete turns modulo a full circle, so that turning 360 degrees in place
    leaves the heading bit for bit as it was. Off (the default, and what every published number
    used), each turn adds the angle to a float heading, and a full circle comes back only up to
    the last bits, which can change later steps (README, "Exit gate").
    """

    radius_m: float = 0.1
    height_m: float = 1.5
    max_climb_m: float = 0.2
    forward_step_m: float = 0.25
    turn_angle_deg: float = 15.0
    allow_sliding: bool = True
    exact_turns: bool = False


@dataclass
class NavigationConfig:
    cell_size_m: float = 0.05
    floor_height_m: Optional[float] = None
    num_slices: int = 8


def _default_sensors() -> dict[str, CameraSensorConfig]:
    return {
        "rgb": CameraSensorConfig(type="rgb", width_px=224, height_px=224),
        "depth": CameraSensorConfig(type="depth", width_px=256, height_px=256),
    }


@dataclass
class SimulatorConfig:
    """The simulator: backend, scene, sensors, agent body and navigation grid.

    ``scene`` is a mesh file (GLB/OBJ/PLY) or ``house:SEED`` for a procedural house.
    ``up_axis`` applies to user meshes ("y" for glTF/Habitat, "z" for many scans).
    ``cache_dir`` holds derived data (nav grids); None uses ``vlnce.fileio.default_cache_dir()``.
    ``num_threads`` splits ray casts over threads; 0 picks min(2, CPUs).
    """

    type: str = "embedded"
    scene: str = "house:0"
    up_axis: str = "y"
    seed: int = 0
    sensors: dict[str, CameraSensorConfig] = field(default_factory=_default_sensors)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    navigation: NavigationConfig = field(default_factory=NavigationConfig)
    cache_dir: Optional[str] = None
    num_threads: int = 0


def validate(cfg: SimulatorConfig) -> SimulatorConfig:
    """Check ranges the type system cannot express.

    Raises:
        ConfigError: naming the field, the value seen and the value expected.
    """
    for uuid, s in cfg.sensors.items():
        where = f"simulator.sensors.{uuid}"
        if s.type not in SENSOR_TYPES:
            raise ConfigError(f"{where}.type must be one of {SENSOR_TYPES}, got {s.type!r}")
        if s.width_px <= 0 or s.height_px <= 0:
            raise ConfigError(f"{where} resolution must be positive, got {s.width_px}x{s.height_px}")
        if s.width_px * s.height_px > 4096 * 4096:
            raise ConfigError(f"{where} resolution {s.width_px}x{s.height_px} exceeds 4096x4096")
        if not (0.0 < s.hfov_deg < 180.0):
            raise ConfigError(f"{where}.hfov_deg must be in (0, 180), got {s.hfov_deg}")
        if len(s.position_m) != 3 or not all(math.isfinite(v) for v in s.position_m):
            raise ConfigError(f"{where}.position_m must be 3 finite numbers, got {list(s.position_m)}")
        if s.type == "depth" and not (0.0 <= s.min_depth_m < s.max_depth_m):
            raise ConfigError(f"{where} needs 0 <= min_depth_m < max_depth_m, got {s.min_depth_m}, {s.max_depth_m}")
    a = cfg.agent
    if a.forward_step_m <= 0 or a.forward_step_m > 5:
        raise ConfigError(f"simulator.agent.forward_step_m must be in (0, 5], got {a.forward_step_m}")
    if not (0 < a.turn_angle_deg <= 180):
        raise ConfigError(f"simulator.agent.turn_angle_deg must be in (0, 180], got {a.turn_angle_deg}")
    if cfg.up_axis not in ("y", "z"):
        raise ConfigError(f"simulator.up_axis must be 'y' or 'z', got {cfg.up_axis!r}")
    if cfg.num_threads < 0:
        raise ConfigError(f"simulator.num_threads must be >= 0, got {cfg.num_threads}")
    return cfg


def load_simulator_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> SimulatorConfig:
    """Build a ``SimulatorConfig`` from defaults, an optional YAML file and overrides.

    Args:
        path: YAML file whose keys override the defaults (unknown keys are errors).
        overrides: a nested dict, or dotlist strings such as ``"agent.turn_angle_deg=30"``.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value.
    """
    base = OmegaConf.structured(SimulatorConfig)
    try:
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{p}: config file not found")
            loaded = OmegaConf.load(p)  # YAML safe loader underneath
            if "simulator" in loaded:
                loaded = loaded.simulator
            base = OmegaConf.merge(base, loaded)
        if overrides:
            extra = OmegaConf.from_dotlist(list(overrides)) if isinstance(overrides, list) else OmegaConf.create(overrides)
            base = OmegaConf.merge(base, extra)
    except OmegaConfBaseException as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{_omegaconf_message(exc)}") from None
    cfg = OmegaConf.to_object(base)
    return validate(cfg)


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return f"{key}: {msg}" if key else msg
