"""SemanticKITTI file formats: ``velodyne/*.bin`` scans and ``labels/*.label`` annotations.

A scan is little-endian float32 records (x, y, z, remission), metres in the sensor frame; a label
file holds one little-endian uint32 per point: semantic id in the lower 16 bits, instance above.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vlnce.errors import DatasetError
from vlnce.fileio import atomic_write_bytes

POINT_BYTES = 16


def read_scan(path: str | os.PathLike) -> np.ndarray:
    """Points of a ``.bin`` scan, shape (N, 4) float32: x, y, z, remission.

    Raises:
        DatasetError: the file is missing or its size is not a multiple of 16 bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"scan {path} does not exist")
    size = path.stat().st_size
    if size % POINT_BYTES:
        raise DatasetError(f"scan {path} has {size} bytes, not a multiple of {POINT_BYTES} "
                           "(records of 4 float32: x, y, z, remission)")
    return np.fromfile(path, dtype="<f4").reshape(-1, 4).astype(np.float32, copy=False)


def read_labels(path: str | os.PathLike, num_points: int | None = None) -> np.ndarray:
    """Raw uint32 labels of a ``.label`` file, shape (N,); checked against the scan's point count.

    Raises:
        DatasetError: missing file, size not a multiple of 4, or N != ``num_points``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist")
    size = path.stat().st_size
    if size % 4:
        raise DatasetError(f"label file {path} has {size} bytes, not a multiple of 4 (one uint32 per point)")
    labels = np.fromfile(path, dtype="<u4")
    if num_points is not None and labels.size != num_points:
        raise DatasetError(f"label file {path} has {labels.size} labels but its scan has {num_points} points")
    return labels


def write_scan(path: str | os.PathLike, points: np.ndarray) -> Path:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must have shape (N, 4) (x, y, z, remission), got {points.shape}")
    return atomic_write_bytes(path, points.astype("<f4").tobytes())


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    return atomic_write_bytes(path, np.asarray(labels).astype("<u4").tobytes())


def pack_labels(semantic: np.ndarray, instance: np.ndarray | None = None) -> np.ndarray:
    """Raw label words: ``semantic | instance << 16``."""
    sem = np.asarray(semantic).astype(np.uint32) & 0xFFFF
    if instance is None:
        return sem
    return sem | ((np.asarray(instance).astype(np.uint32) & 0xFFFF) << 16)


def scan_files(root: str | os.PathLike, sequences: list[str] | None = None) -> list[tuple[Path, Path | None]]:
    """(scan, label-or-None) pairs under ``root``.

    ``root`` may be a ``.bin`` file, a ``velodyne`` folder, a sequence folder, or a dataset root
    with ``sequences/NN/velodyne``; ``sequences`` restricts the last case.

    Raises:
        DatasetError: nothing matching was found.
    """
    root = Path(root)
    if root.is_file():
        scans = [root]
    elif (root / "sequences").is_dir():
        seqs = sorted(p for p in (root / "sequences").iterdir() if p.is_dir())
        if sequences is not None:
            wanted = {str(s) for s in sequences}
            seqs = [p for p in seqs if p.name in wanted]
            missing = wanted - {p.name for p in seqs}
            if missing:
                raise DatasetError(f"{root}/sequences lacks sequence(s) {sorted(missing)}")
        scans = [f for s in seqs for f in sorted((s / "velodyne").glob("*.bin"))]
    elif (root / "velodyne").is_dir():
        scans = sorted((root / "velodyne").glob("*.bin"))
    else:
        scans = sorted(root.glob("*.bin"))
    if not scans:
        raise DatasetError(f"no .bin scans found under {root} (expected a .bin file, a velodyne/ folder, "
                           "or sequences/NN/velodyne/)")
    pairs = []
    for s in scans:
        label = s.parent.parent / "labels" / (s.stem + ".label")
        if not label.is_file():
            label = s.with_suffix(".label")
        pairs.append((s, label if label.is_file() else None))
    return pairs
