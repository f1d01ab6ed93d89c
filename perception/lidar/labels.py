"""Label configurations in the SemanticKITTI style: raw ids -> training ids, names, colours, sensor.

A label config is a YAML file (``configs/perception/semantic-kitti.yaml``, ``indoor.yaml``, or the
``dataset.yaml`` that ``vlnce lidar make-data`` writes) with ``classes``, ``learning_map``,
``learning_map_inv``, ``learning_ignore`` and an optional ``sensor`` block and ``content`` (the
fraction of training points per raw id, which gives the loss weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vlnce.errors import ConfigError


@dataclass
class SensorConfig:
    """Spherical projection parameters and the per-channel input statistics.

    Attributes:
        fov_up_deg, fov_down_deg: elevation of the image's top and bottom edges, degrees.
        height, width: range image size in pixels (rows = beams, columns = azimuth bins).
        means, stds: normalisation of the 5 input channels (range, x, y, z, remission).
    """

    fov_up_deg: float = 3.0
    fov_down_deg: float = -25.0
    height: int = 64
    width: int = 2048
    means: list[float] = field(default_factory=lambda: [12.12, 10.88, 0.23, -1.04, 0.21])
    stds: list[float] = field(default_factory=lambda: [12.32, 11.47, 6.91, 0.86, 0.16])

    def validate(self, where: str = "sensor") -> "SensorConfig":
        if not (-90.0 <= self.fov_down_deg < self.fov_up_deg <= 90.0):
            raise ConfigError(f"{where}: need -90 <= fov_down_deg < fov_up_deg <= 90, got "
                              f"{self.fov_down_deg}, {self.fov_up_deg}")
        if int(self.height) != self.height or int(self.width) != self.width or self.height < 1 or self.width < 8:
            raise ConfigError(f"{where}: height and width must be integers >= 1 and >= 8, got {self.height}x{self.width}")
        if len(self.means) != 5 or len(self.stds) != 5 or min(self.stds) <= 0:
            raise ConfigError(f"{where}: means and stds need 5 values each (range, x, y, z, remission), stds > 0; "
                              f"got {self.means}, {self.stds}")
        return self

    def to_dict(self) -> dict:
        return {"fov_up_deg": float(self.fov_up_deg), "fov_down_deg": float(self.fov_down_deg),
                "height": int(self.height), "width": int(self.width),
                "means": [float(v) for v in self.means], "stds": [float(v) for v in self.stds]}


@dataclass
class LabelConfig:
    """A parsed label config.

    Attributes:
        names: training class names, index = training id; 0 is the ignored class.
        colors: (C, 3) uint8 RGB per training id.
        learning_map: raw id -> training id (raw ids not listed map to 0).
        learning_map_inv: training id -> raw id, for writing predictions as .label files.
        ignore: training ids excluded from the loss and from mIoU.
        sensor: projection parameters, or None when the file has none.
        content: raw id -> fraction of training points, or {} when unknown.
    """

    name: str
    names: list[str]
    colors: np.ndarray
    learning_map: dict[int, int]
    learning_map_inv: dict[int, int]
    ignore: list[int]
    sensor: SensorConfig | None = None
    content: dict[int, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def include(self) -> list[int]:
        """Training ids that count in mIoU."""
        return [c for c in range(self.num_classes) if c not in self.ignore]

    def lut(self) -> np.ndarray:
        """Raw-id lookup table: ``lut[raw & 0xFFFF]`` is the training id (unlisted ids -> 0)."""
        table = np.zeros(0x10000, dtype=np.int64)
        for raw, train in self.learning_map.items():
            table[raw] = train
        return table

    def inverse_lut(self) -> np.ndarray:
        table = np.zeros(self.num_classes, dtype=np.uint32)
        for train, raw in self.learning_map_inv.items():
            table[train] = raw
        return table

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        """Training ids for raw ``.label`` values (the instance in the upper 16 bits is dropped)."""
        return self.lut()[np.asarray(raw).astype(np.uint32) & 0xFFFF]

    def class_frequencies(self) -> np.ndarray:
        """Fraction of training points per training id, from ``content`` (zeros when unknown)."""
        freq = np.zeros(self.num_classes, dtype=np.float64)
        for raw, f in self.content.items():
            freq[self.learning_map.get(raw, 0)] += f
        return freq

    def loss_weights(self, eps: float = 0.001, power: float = 1.0) -> np.ndarray:
        """SqueezeSegV3's class weights w_c = 1 / (f_c + eps) ** power, 0 for ignored classes.

        The paper prints 1 / log(f_c + eps), which is negative for f < 1; the authors' code uses
        the inverse frequency (power 1; specs/lidar_and_detection.md section 1.5). power 0.5 is the
        gentler inverse square root. Without ``content`` every included class weighs 1.
        """
        freq = self.class_frequencies()
        w = 1.0 / (freq + eps) ** power if freq.sum() > 0 else np.ones(self.num_classes)
        w[self.ignore] = 0.0
        return w.astype(np.float32)

    def to_dict(self) -> dict:
        out = {"name": self.name,
               "classes": {i: [n, [int(v) for v in self.colors[i]]] for i, n in enumerate(self.names)},
               "learning_map": {int(k): int(v) for k, v in self.learning_map.items()},
               "learning_map_inv": {int(k): int(v) for k, v in self.learning_map_inv.items()},
               "learning_ignore": [int(v) for v in self.ignore]}
        if self.sensor is not None:
            out["sensor"] = self.sensor.to_dict()
        if self.content:
            out["content"] = {int(k): float(v) for k, v in self.content.items()}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "label config") -> "LabelConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
        for key in ("classes", "learning_map", "learning_map_inv", "learning_ignore"):
            if key not in d:
                raise ConfigError(f"{source}: missing field {key!r}")
        try:
            classes = {int(k): v for k, v in d["classes"].items()}
            ids = sorted(classes)
            if ids != list(range(len(ids))):
                raise ConfigError(f"{source}: classes must be numbered 0..C-1 without gaps, got {ids}")
            names = [str(classes[i][0]) for i in ids]
            colors = np.array([classes[i][1] for i in ids], dtype=np.int64)
            if colors.shape != (len(ids), 3) or colors.min() < 0 or colors.max() > 255:
                raise ConfigError(f"{source}: each class needs [name, [r, g, b]] with 0..255 colours")
            lmap = {int(k): int(v) for k, v in d["learning_map"].items()}
            inv = {int(k): int(v) for k, v in d["learning_map_inv"].items()}
            ignore = [int(v) for v in d["learning_ignore"]]
            content = {int(k): float(v) for k, v in (d.get("content") or {}).items()}
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ConfigError(f"{source}: malformed field ({exc})") from None
        bad = {k: v for k, v in lmap.items() if not (0 <= v < len(names)) or not (0 <= k < 0x10000)}
        if bad:
            raise ConfigError(f"{source}: learning_map entries outside raw 0..65535 -> 0..{len(names) - 1}: {bad}")
        if sorted(inv) != list(range(len(names))):
            raise ConfigError(f"{source}: learning_map_inv must give a raw id for every class 0..{len(names) - 1}")
        sensor = None
        if d.get("sensor") is not None:
            try:
                sensor = SensorConfig(**d["sensor"]).validate(f"{source}: sensor")
            except TypeError as exc:
                raise ConfigError(f"{source}: sensor: {exc}") from None
        known = {"name", "classes", "learning_map", "learning_map_inv", "learning_ignore", "sensor", "content"}
        return cls(name=str(d.get("name", "labels")), names=names, colors=colors.astype(np.uint8), learning_map=lmap,
                   learning_map_inv=inv, ignore=ignore, sensor=sensor, content=content,
                   extra={k: v for k, v in d.items() if k not in known})


def load_label_config(path_or_name: str | Path) -> LabelConfig:
    """A label config from a YAML path, or a packaged one by name ("semantic-kitti", "indoor").

    Raises:
        ConfigError: the file is missing, not YAML, or lacks a field.
    """
    from configs import config_path

    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        p = config_path(f"perception/{path_or_name}.yaml")
    if not p.is_file():
        raise ConfigError(f"label config {path_or_name} not found (a YAML file, or one of: semantic-kitti, indoor)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"label config {p} is not valid YAML: {exc}") from None
    return LabelConfig.from_dict(data, str(p))
