"""Detector checkpoints: the model's config (classes included) and weights, tagged with a format."""

from __future__ import annotations

from pathlib import Path

from perception.detection.faster_rcnn import DetectorConfig, FasterRCNN
from vlnce.errors import CheckpointError
from vlnce.torchio import load_blob, save_blob

FORMAT = "vlnce-faster-rcnn-v1"


def save_detector(path: str | Path, model: FasterRCNN, extra: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` (float16 weights with ``half``, for shipping) and ``extra`` entries atomically."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": state}
    blob.update(extra or {})
    return save_blob(path, blob)


def load_detector(path: str | Path, device: str = "cpu", classes=None) -> tuple[FasterRCNN, dict]:
    """The model of a checkpoint, in eval mode on ``device``, and the whole blob.

    Raises:
        CheckpointError: missing, corrupt, another kind of file, weights that do not fit, or
            ``classes`` given and different from the checkpoint's.
    """
    blob = load_blob(path, FORMAT, "detector checkpoint", required=("config", "state_dict"))
    try:
        cfg = DetectorConfig.from_dict(blob["config"])
        model = FasterRCNN(cfg)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its weights do not fit its config ({str(exc).splitlines()[0][:300]})") from None
    if classes is not None and tuple(classes) != cfg.classes:
        raise CheckpointError(f"{path} detects {list(cfg.classes)}, but {list(classes)} were asked for")
    return model.to(device).eval(), blob


__all__ = ["FORMAT", "load_detector", "save_detector"]
