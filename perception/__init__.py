"""Perception plugins: a small interface, a registry fed by entry points, and the built-ins.

Built-ins: ``lidar_seg`` (SqueezeSegV3 LiDAR semantic segmentation, ``perception/lidar``).
"""

from perception.base import KINDS, PerceptionPlugin, Port
from perception.registry import make_plugin, plugin_class, plugins

__all__ = ["KINDS", "PerceptionPlugin", "Port", "make_plugin", "plugin_class", "plugins"]
