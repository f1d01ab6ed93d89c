"""Readers for the standard re-ID and fine-grained folder layouts, and image loading.

Market-1501 and CUHK03 (new protocol) name images ``PID_cC...``: pid -1 marks junk and is dropped,
pid 0 marks distractors and stays in the gallery (specs/perception_anchors.md 2.2). Cameras become
0-based; training identities are relabelled 0..N-1 (``label``) and keep their ``pid``.
MSMT17 lists images in ``list_*.txt`` (``path pid``) with the camera in the name's third field.
CUB-200-2011 uses its ``images.txt``, ``image_class_labels.txt`` and ``train_test_split.txt``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlnce.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_NAME = re.compile(r"^([-\d]+)_c(\d+)")


@dataclass(frozen=True)
class ReidItem:
    path: Path
    pid: int
    camid: int
    label: int = -1  # training label (0..N-1) or class id; -1 in query/gallery


@dataclass
class ReidDataset:
    """A re-ID benchmark: ``train`` (relabelled), ``query`` and ``gallery`` items."""

    name: str
    train: list[ReidItem] = field(default_factory=list)
    query: list[ReidItem] = field(default_factory=list)
    gallery: list[ReidItem] = field(default_factory=list)

    @property
    def num_train_ids(self) -> int:
        return len({it.label for it in self.train})

    def summary(self) -> dict:
        return {split: {"images": len(items), "ids": len({it.pid for it in items}),
                        "cameras": len({it.camid for it in items})}
                for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"expected the folder {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def parse_market_name(path: Path) -> tuple[int, int]:
    """(pid, 1-based camera) from ``0002_c1s1_000451_03.jpg``-style names.

    Raises:
        DatasetError: naming the file, when the name does not follow ``PID_cC``.
    """
    m = MARKET_NAME.match(Path(path).name)
    if not m:
        raise DatasetError(f"{path}: file name does not follow the Market-1501 pattern "
                           "'PID_cCAMERA...' (e.g. 0002_c1s1_000451_03.jpg)")
    return int(m.group(1)), int(m.group(2))


def _market_split(folder: Path, relabel: bool) -> list[ReidItem]:
    items = []
    for path in _images(folder):
        pid, cam = parse_market_name(path)
        if pid == -1:
            continue
        if cam < 1:
            raise DatasetError(f"{path}: camera ids start at 1, got c{cam}")
        items.append(ReidItem(path, pid, cam - 1))
    return _relabel(items) if relabel else items


def _relabel(items: list[ReidItem]) -> list[ReidItem]:
    labels = {pid: i for i, pid in enumerate(sorted({it.pid for it in items}))}
    return [ReidItem(it.path, it.pid, it.camid, labels[it.pid]) for it in items]


def _find_root(root: Path, required: tuple[str, ...], candidates: tuple[str, ...]) -> Path:
    for sub in ("",) + candidates:
        base = root / sub if sub else root
        if all((base / r).exists() for r in required):
            return base
    raise DatasetError(f"{root} does not hold {', '.join(required)} (looked in {root} and "
                       f"{', '.join(str(root / c) for c in candidates)})")


def read_market1501(root) -> ReidDataset:
    """Market-1501 (also the layout ``vlnce reid make-data`` writes)."""
    base = _find_root(Path(root), ("bounding_box_train", "bounding_box_test", "query"),
                      ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501"))
    return ReidDataset("market1501", _market_split(base / "bounding_box_train", True),
                       _market_split(base / "query", False), _market_split(base / "bounding_box_test", False))


def read_cuhk03_np(root, variant: str = "labeled") -> ReidDataset:
    """CUHK03 new protocol (767 training / 700 test identities), ``labeled`` or ``detected``."""
    if variant not in ("labeled", "detected"):
        raise DatasetError(f"CUHK03 variant must be 'labeled' or 'detected', got {variant!r}")
    base = _find_root(Path(root), ("bounding_box_train", "bounding_box_test", "query"),
                      (variant, f"cuhk03-np/{variant}"))
    return ReidDataset(f"cuhk03_np_{variant}", _market_split(base / "bounding_box_train", True),
                       _market_split(base / "query", False), _market_split(base / "bounding_box_test", False))


def _msmt_list(base: Path, list_name: str, folder: str) -> list[ReidItem]:
    path = base / list_name
    items = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{n}: expected 'relative/path.jpg PID', got {line!r}")
        rel, pid = fields[0], int(fields[1])
        name_fields = Path(rel).name.split("_")
        if len(name_fields) < 3 or not name_fields[2].isdigit():
            raise DatasetError(f"{path}:{n}: image name {Path(rel).name!r} does not follow MSMT17's "
                               "'PID_INDEX_CAMERA_...' pattern")
        items.append(ReidItem(base / folder / rel, pid, int(name_fields[2]) - 1))
    return items


def read_msmt17(root) -> ReidDataset:
    """MSMT17 (V1 or V2): train = list_train + list_val, as torchreid and fast-reid."""
    base = _find_root(Path(root), ("list_train.txt", "list_query.txt", "list_gallery.txt"),
                      ("MSMT17_V2", "MSMT17_V1", "MSMT17"))
    folder_train = "train" if (base / "train").is_dir() else "mask_train_v2"
    folder_test = "test" if (base / "test").is_dir() else "mask_test_v2"
    train = _msmt_list(base, "list_train.txt", folder_train)
    if (base / "list_val.txt").exists():
        train += _msmt_list(base, "list_val.txt", folder_train)
    return ReidDataset("msmt17", _relabel(train), _msmt_list(base, "list_query.txt", folder_test),
                       _msmt_list(base, "list_gallery.txt", folder_test))


@dataclass
class ClassificationDataset:
    """A fine-grained classification set: items carry the 0-based class in ``label``."""

    name: str
    train: list[ReidItem]
    test: list[ReidItem]
    classes: list[str]


def read_cub200(root) -> ClassificationDataset:
    """CUB-200-2011 with its official train/test split (5,994 / 5,794 images)."""
    base = _find_root(Path(root), ("images.txt", "image_class_labels.txt", "train_test_split.txt"),
                      ("CUB_200_2011",))

    def table(name: str) -> dict[int, str]:
        out = {}
        for n, line in enumerate((base / name).read_text().splitlines(), start=1):
            if line.strip():
                fields = line.split(maxsplit=1)
                if len(fields) != 2 or not fields[0].isdigit():
                    raise DatasetError(f"{base / name}:{n}: expected 'ID VALUE', got {line!r}")
                out[int(fields[0])] = fields[1].strip()
        return out

    images, labels, split = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    classes = [v for _, v in sorted(table("classes.txt").items())] if (base / "classes.txt").exists() else []
    train, test = [], []
    for image_id, rel in sorted(images.items()):
        if image_id not in labels or image_id not in split:
            raise DatasetError(f"{base}: image {image_id} ({rel}) has no class or split entry")
        item = ReidItem(base / "images" / rel, -1, -1, int(labels[image_id]) - 1)
        (train if split[image_id] == "1" else test).append(item)
    return ClassificationDataset("cub200", train, test, classes)


READERS = {"market1501": read_market1501, "cuhk03_np": read_cuhk03_np, "msmt17": read_msmt17}


def read_dataset(layout: str, root) -> ReidDataset:
    """Read ``root`` with the reader of ``layout`` (a key of ``READERS``).

    Raises:
        ConfigError: an unknown layout, naming the known ones.
    """
    from vlnce.errors import ConfigError

    if layout not in READERS:
        raise ConfigError(f"unknown dataset layout {layout!r}; known: {sorted(READERS)}")
    return READERS[layout](root)


def load_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an RGB image as (H, W, 3) uint8, resized (bilinear) to ``size`` = (H, W) when given.

    Raises:
        DatasetError: naming the file, when it is missing, unreadable or truncated.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not later in a worker
            rgb = img.convert("RGB")
            if size is not None:
                rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc} (unreadable or truncated file)") from None
