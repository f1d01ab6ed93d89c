"""The plugin registry, fed by the ``vlnce.perception`` entry-point group.

Third parties add a plugin by declaring, in their own package's metadata::

    [project.entry-points."vlnce.perception"]
    my_plugin = "my_package.module:MyPlugin"

Our built-ins are declared the same way in ``setup.py``. When the project runs from a source tree
that was never installed (so has no metadata), the built-ins are added from ``BUILTINS``.
"""

from __future__ import annotations

import logging
from importlib import import_module, metadata

from perception.base import PerceptionPlugin, check_plugin_class
from vlnce.errors import ConfigError, UnknownNameError
from vlnce.registry import Registry

log = logging.getLogger(__name__)

GROUP = "vlnce.perception"
#: built-in plugins: name -> "module:Class" (mirrors setup.py's entry points)
BUILTINS = {"lidar_seg": "perception.lidar.plugin:LidarSegmentationPlugin",
            "reid": "perception.reid.plugin:ReidPlugin",
            "detection": "perception.detection.plugin:DetectionPlugin"}


class _Spec:
    """A plugin not imported yet: its target and where it comes from."""

    def __init__(self, name: str, target: str, source: str, loader) -> None:
        self.name, self.target, self.source, self._loader = name, target, source, loader

    def load(self) -> type[PerceptionPlugin]:
        try:
            obj = self._loader()
        except Exception as exc:  # any import error of a third-party package
            raise ConfigError(f"perception plugin {self.name!r} ({self.target}, from {self.source}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        return check_plugin_class(obj, self.name)


def _import_target(target: str):
    module, _, attr = target.partition(":")
    obj = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def discover(group: str = GROUP) -> Registry:
    """A fresh registry of the plugins declared under ``group`` (plus built-ins when uninstalled)."""
    reg: Registry = Registry("perception plugin")
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else "entry point"
        if ep.name in reg:
            log.warning("perception plugin %r is declared twice; keeping %s, ignoring %s", ep.name,
                        reg.get(ep.name).source, source)
            continue
        reg.add(ep.name, _Spec(ep.name, ep.value, source, ep.load))
    if group == GROUP:
        for name, target in BUILTINS.items():
            if name not in reg:
                reg.add(name, _Spec(name, target, "vlnce-stack (source tree)", lambda t=target: _import_target(t)))
    return reg


_REGISTRY: Registry | None = None


def plugins(refresh: bool = False) -> Registry:
    """The process-wide registry (discovered once; ``refresh`` re-reads the entry points)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = discover()
    return _REGISTRY


def plugin_class(name: str) -> type[PerceptionPlugin]:
    """The class of plugin ``name``.

    Raises:
        UnknownNameError: naming the installed plugins; ConfigError: it failed to import.
    """
    return plugins().get(name).load()


def make_plugin(name: str, **options) -> PerceptionPlugin:
    """An instance of plugin ``name`` built with keyword ``options`` (device, half, its own)."""
    cls = plugin_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"perception plugin {name!r} does not take these options {sorted(options)}: {exc}") from None


def parse_plugin_list(text: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"], each checked to be installed."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    reg = plugins()
    for n in names:
        if n not in reg:
            raise UnknownNameError(reg.unknown_message(n))
    return names


def parse_plugin_options(names: list[str], items: list[str]) -> dict:
    """``["detection.score_threshold=0.3"]`` -> {"detection": {"score_threshold": 0.3}}; values are
    read as YAML scalars (``yaml.safe_load``).

    Raises:
        ConfigError: an item is not PLUGIN.KEY=VALUE with PLUGIN among ``names``.
    """
    import yaml

    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, opt = key.partition(".")
        if not sep or not dot or not opt or name not in names:
            raise ConfigError(f"plugin option {item!r}: expected PLUGIN.KEY=VALUE with PLUGIN one of {names}")
        try:
            options.setdefault(name, {})[opt] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"plugin option {item!r}: the value is not valid YAML ({exc})") from None
    return options


def parse_checkpoint_options(names: list[str], items: list[str]) -> dict:
    """``["lidar_seg=model.pt"]`` -> {"lidar_seg": {"checkpoint": "model.pt"}} (command-line flags).

    Raises:
        ConfigError: an item is not PLUGIN=PATH with PLUGIN among ``names``.
    """
    options: dict = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in names:
            raise ConfigError(f"checkpoint option {item!r}: expected PLUGIN=PATH with PLUGIN one of {names}")
        options.setdefault(name, {})["checkpoint"] = path
    return options
