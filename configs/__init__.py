"""Packaged YAML configs; ``config_path("sim/embedded.yaml")`` gives a file's location."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def config_path(name: str) -> Path:
    """Absolute path of a packaged config such as ``"sim/embedded.yaml"``."""
    return ROOT / name
