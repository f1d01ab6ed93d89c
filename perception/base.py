"""The perception plugin interface.

A plugin is a model behind a small contract: a name, declared inputs and outputs (``Port``), a
device it can be moved to, and batched inference. Inputs and outputs are dictionaries of lists,
one entry per sample, so samples of different sizes (point clouds, crops) batch without padding:

    plugin = make_plugin("lidar_seg", device="auto")
    out = plugin({"points": [cloud_a, cloud_b]})      # out["labels"] == [labels_a, labels_b]

Attach points (environments, ROS 2) read the ports' ``kind`` to convert their data at the edge.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vlnce.errors import ConfigError

#: data kinds the attach points know how to convert
KINDS = ("pointcloud", "point_labels", "image", "boxes", "classes", "scores", "embeddings", "identities")


@dataclass(frozen=True)
class Port:
    """One declared input or output.

    Attributes:
        kind: one of ``KINDS`` (how attach points convert it).
        shape: the per-sample shape in words, e.g. "(N, 4)".
        dtype: numpy dtype name of a sample.
        doc: meaning and units.
    """

    kind: str
    shape: str
    dtype: str
    doc: str = ""


class PerceptionPlugin(abc.ABC):
    """Base class of every perception plugin.

    Subclasses set ``name``, ``inputs``, ``outputs`` and ``description`` and implement ``infer``.
    Constructors take keyword options only (``device``, ``half`` and the plugin's own), so
    attach points can build any plugin from a name and a dict.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}

    def __init__(self, device: str = "auto", half: bool = False) -> None:
        self.device_name, self.half = device, half

    def resolve_checkpoint(self, checkpoint: str | None, default, train_command: str):
        """``checkpoint`` or the shipped ``default`` as a Path.

        Raises:
            ConfigError: the file does not exist (naming the command that trains one).
        """
        from pathlib import Path

        path = Path(checkpoint) if checkpoint else Path(default)
        if not path.is_file():
            raise ConfigError(f"{self.name}: checkpoint {path} not found; train one with `{train_command}` and pass "
                              "checkpoint=PATH")
        return path

    @abc.abstractmethod
    def to(self, device: str) -> "PerceptionPlugin":
        """Move the model to ``device`` ("auto" = CUDA when available) and return self."""

    @abc.abstractmethod
    def infer(self, batch: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
        """Batched inference on validated inputs; one output entry per input sample."""

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[np.ndarray]]:
        """Check the batch against ``inputs``, then run ``infer`` under ``torch.inference_mode``.

        Raises:
            ValueError: an input is missing, or the inputs' batch sizes differ.
        """
        import torch

        missing = [k for k in self.inputs if k not in batch]
        if missing:
            raise ValueError(f"plugin {self.name!r} needs input(s) {missing}; got {sorted(batch)}")
        sizes = {k: len(batch[k]) for k in self.inputs}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"plugin {self.name!r}: inputs have different batch sizes {sizes}")
        with torch.inference_mode():
            return self.infer({k: list(batch[k]) for k in self.inputs})

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "description": cls.description,
                "inputs": {k: f"{p.kind} {p.shape} {p.dtype}" for k, p in cls.inputs.items()},
                "outputs": {k: f"{p.kind} {p.shape} {p.dtype}" for k, p in cls.outputs.items()}}


def check_plugin_class(obj: Any, name: str) -> type[PerceptionPlugin]:
    """Validate a class loaded from an entry point.

    Raises:
        ConfigError: it is not a PerceptionPlugin subclass, or its ports use unknown kinds.
    """
    if not (isinstance(obj, type) and issubclass(obj, PerceptionPlugin)):
        raise ConfigError(f"perception plugin {name!r} must be a subclass of perception.PerceptionPlugin, got {obj!r}")
    for where, ports in (("inputs", obj.inputs), ("outputs", obj.outputs)):
        bad = {k: p.kind for k, p in ports.items() if p.kind not in KINDS}
        if bad:
            raise ConfigError(f"perception plugin {name!r} declares {where} of unknown kind {bad}; known: {KINDS}")
    return obj
