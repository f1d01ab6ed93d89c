"""Safe, atomic torch files: written only when every tensor is finite, read with ``weights_only=True``.

Shared by every checkpoint kind (policies, perception models); each kind tags its files with a
``format`` string so that a file of one kind is refused by another with a clear message.
"""

from __future__ import annotations

import io
from pathlib import Path

from vlnce.errors import CheckpointError, ConfigError


def save_blob(path: str | Path, blob: dict, state_key: str = "state_dict") -> Path:
    """Write ``blob`` atomically after checking that its ``state_key`` tensors are all finite.

    Only tensors and plain Python values may be stored, so the file loads with ``weights_only``.

    Raises:
        CheckpointError: a parameter has NaN or inf values (the previous file is kept).
    """
    import torch

    from vlnce.fileio import atomic_write_bytes

    for name, p in blob.get(state_key, {}).items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise CheckpointError(f"refusing to write {path}: parameter {name} has NaN or inf values")
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_blob(path: str | Path, expected_format: str, what: str, required: tuple[str, ...] = ()) -> dict:
    """Load a dictionary written by ``save_blob`` and check its ``format`` tag and keys.

    Args:
        expected_format: the ``format`` value the file must carry.
        what: a human name for the kind ("VLN-CE policy checkpoint"), used in messages.

    Raises:
        CheckpointError: missing, truncated, not a torch file, another kind, or lacking a key.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt, not a PyTorch file, or holds Python objects "
                              f"beyond tensors and plain values ({type(exc).__name__}: {_load_reason(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != expected_format:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path} is not a {what} (expected format {expected_format!r}, found {found!r})")
    for key in required:
        if key not in blob:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return blob


def resume_training(last: str | Path, expected_format: str, what: str, model, optimizer, state: dict) -> dict:
    """Load ``model`` and ``optimizer`` from a run's ``last`` checkpoint (written with "optimizer" and
    "state" entries) and return its training state; ``state`` unchanged when there is none yet.

    Raises:
        CheckpointError: as ``load_blob``.
    """
    if not Path(last).is_file():
        return state
    blob = load_blob(last, expected_format, what, required=("state_dict", "optimizer", "state"))
    model.load_state_dict(blob["state_dict"])
    optimizer.load_state_dict(blob["optimizer"])
    return blob["state"]


def _load_reason(exc: Exception) -> str:
    """The cause in torch's load error, without its advice to retry with ``weights_only=False``
    (which would run whatever code the file carries)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error:" in ln:
            rest = [ln.split("WeightsUnpickler error:", 1)[1].strip()] + lines[i + 1:]
            cause = next((r for r in rest if r), "")
            return f"refused by the weights-only loader: {cause[:200]}"
    return next((ln for ln in lines if ln), "")[:200]


def resolve_device(name: str = "auto"):
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA is a ConfigError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
