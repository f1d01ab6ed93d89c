"""Detection datasets: COCO-json and Pascal VOC readers, and a torch dataset over their records.

A record is ``{"file": path, "height", "width", "boxes": (M, 4) float32 x0, y0, x1, y1 pixels,
"labels": (M,) int64 in 1..K, "ignore": (M,) bool}``; label k names ``classes[k - 1]``.

Bad annotations never crash training: boxes partly outside the image are clipped, boxes with no
area (zero or negative width or height, or nothing left after clipping) are dropped, each with one
warning that says how many and names the first few. Unknown categories, class lists that do not
fit the file, missing files and images that fail to decode raise ``DatasetError`` naming them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vlnce.errors import DatasetError

log = logging.getLogger(__name__)


class _Problems:
    """Collects dropped or clipped boxes so that a file gives one warning per kind."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: dict[str, list[str]] = {}

    def add(self, kind: str, where: str) -> None:
        self.items.setdefault(kind, []).append(where)

    def report(self) -> None:
        for kind, where in self.items.items():
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            log.warning("%s: %d %s (%s%s)", self.source, len(where), kind, ", ".join(where[:3]), more)


def _clean_box(box, height: int, width: int, where: str, problems: _Problems):
    """The box clipped to the image, or None (dropped, with the reason recorded)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        problems.add("boxes with non-finite coordinates dropped", where)
        return None
    if x1 <= x0 or y1 <= y0:
        problems.add("zero-area or negative boxes dropped", where)
        return None
    c = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if c[2] <= c[0] or c[3] <= c[1]:
        problems.add("boxes outside the image dropped", where)
        return None
    if c != (x0, y0, x1, y1):
        problems.add("boxes partly outside the image clipped", where)
    return c


def _record(file: Path, height: int, width: int, boxes: list, labels: list, ignore: list) -> dict:
    return {"file": str(file), "height": int(height), "width": int(width),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "ignore": np.asarray(ignore, bool)}


def read_coco(annotation_file: str | Path, image_dir: str | Path | None = None,
              classes: list[str] | tuple[str, ...] | None = None) -> tuple[list[dict], tuple[str, ...]]:
    """Records of a COCO-json file, and the class names they use.

    Args:
        image_dir: where ``file_name`` is relative to (default: the json's folder).
        classes: keep these category names, in this order (default: all of the file's, by id);
            annotations of other categories are skipped.

    Raises:
        DatasetError: unreadable json, missing keys, an annotation of a category the file does
            not declare, a class not in the file.
    """
    path = Path(annotation_file)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read COCO annotations {path}: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DatasetError(f"{path}: expected a list under {key!r} (COCO format)")
    cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
    names = tuple(classes) if classes else tuple(cats[i] for i in sorted(cats))
    by_name = {n: i for i, n in cats.items()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(f"{path}: classes {missing} are not among its categories {sorted(by_name)}")
    label_of = {by_name[n]: k + 1 for k, n in enumerate(names)}
    image_dir = Path(image_dir) if image_dir else path.parent
    images = {}
    for im in doc["images"]:
        try:
            images[int(im["id"])] = (image_dir / im["file_name"], int(im["height"]), int(im["width"]), [], [], [])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: image entry {im!r} needs id, file_name, height and width") from None
    problems = _Problems(str(path))
    for a in doc["annotations"]:
        aid, cid = a.get("id"), a.get("category_id")
        if cid not in cats:
            raise DatasetError(f"{path}: annotation {aid} has category_id {cid!r}, which the file does not declare "
                               f"(known: {sorted(cats)})")
        if cid not in label_of:
            continue
        if a.get("image_id") not in images:
            raise DatasetError(f"{path}: annotation {aid} refers to image_id {a.get('image_id')!r}, which is not listed")
        file, h, w, boxes, labels, ignore = images[a["image_id"]]
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DatasetError(f"{path}: annotation {aid} needs bbox [x, y, width, height], got {bbox!r}")
        box = _clean_box((bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]), h, w,
                         f"annotation {aid} of {file.name}", problems)
        if box is not None:
            boxes.append(box)
            labels.append(label_of[cid])
            ignore.append(bool(a.get("iscrowd", 0)))
    problems.report()
    return [_record(*v) for _, v in sorted(images.items())], names


def read_voc(root: str | Path, split: str, classes: list[str] | tuple[str, ...]) -> list[dict]:
    """Records of a Pascal VOC split (``ImageSets/Main/{split}.txt``, ``Annotations``, ``JPEGImages``).

    VOC's 1-based inclusive pixel boxes become continuous coordinates (x0 = xmin - 1, x1 = xmax);
    "difficult" objects are kept as ``ignore``; objects of classes not in ``classes`` are skipped.
    """
    import xml.etree.ElementTree as ET

    root = Path(root)
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file} does not exist (expected the Pascal VOC layout under {root})")
    label_of = {n: k + 1 for k, n in enumerate(classes)}
    problems = _Problems(str(root))
    records = []
    for stem in list_file.read_text().split():
        xml = root / "Annotations" / f"{stem}.xml"
        try:
            doc = ET.parse(xml).getroot()
            size = doc.find("size")
            w, h = int(size.findtext("width")), int(size.findtext("height"))
        except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as exc:
            raise DatasetError(f"cannot read VOC annotation {xml}: {exc}") from None
        boxes, labels, ignore = [], [], []
        for i, obj in enumerate(doc.iter("object")):
            name = (obj.findtext("name") or "").strip()
            if name not in label_of:
                continue
            bb = obj.find("bndbox")
            try:
                raw = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise DatasetError(f"{xml}: object {i} ({name}) has no numeric bndbox") from None
            box = _clean_box((raw[0] - 1, raw[1] - 1, raw[2], raw[3]), h, w, f"{stem} object {i}", problems)
            if box is not None:
                boxes.append(box)
                labels.append(label_of[name])
                ignore.append(obj.findtext("difficult", "0").strip() == "1")
        records.append(_record(root / "JPEGImages" / f"{stem}.jpg", h, w, boxes, labels, ignore))
    problems.report()
    return records


def load_image(file: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB.

    Raises:
        DatasetError: the file is missing or does not decode as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image {file} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"image {file} could not be decoded: {exc}") from None


def check_classes(checkpoint_classes, data_classes, what: str) -> None:
    """Raise DatasetError unless the class lists are equal (same names, same order)."""
    if tuple(checkpoint_classes) != tuple(data_classes):
        raise DatasetError(f"{what}: the checkpoint's classes {list(checkpoint_classes)} do not match the data's "
                           f"{list(data_classes)}")


class DetectionDataset:
    """Records as training samples: ``(image float (3, H, W) in [0, 1], target)`` with
    ``target = {"boxes", "labels", "ignore"}`` as tensors, boxes scaled with the image.

    Args:
        records: from ``read_coco`` / ``read_voc``.
        min_size, max_size: resize so the short side is ``min_size`` unless the long side would
            exceed ``max_size`` (Faster R-CNN's rule; the paper used 600). None keeps the size.
        flip: random horizontal flips (training).
    """

    def __init__(self, records: list[dict], min_size: int | None = None, max_size: int = 1000,
                 flip: bool = False, seed: int = 0) -> None:
        self.records, self.min_size, self.max_size, self.flip = records, min_size, max_size, flip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.records)

    def scale_of(self, height: int, width: int) -> float:
        if not self.min_size:
            return 1.0
        s = self.min_size / min(height, width)
        return min(s, self.max_size / max(height, width))

    def __getitem__(self, i: int):
        import torch
        import torch.nn.functional as F

        r = self.records[i]
        img = load_image(r["file"])
        if img.shape[:2] != (r["height"], r["width"]):
            raise DatasetError(f"image {r['file']} is {img.shape[1]}x{img.shape[0]} but its annotation says "
                               f"{r['width']}x{r['height']}")
        x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
        boxes = torch.from_numpy(r["boxes"]).clone()
        s = self.scale_of(*img.shape[:2])
        if s != 1.0:
            size = (round(img.shape[0] * s), round(img.shape[1] * s))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=s < 1)[0]
            boxes *= torch.tensor([size[1] / img.shape[1], size[0] / img.shape[0]] * 2)
        if self.flip and self.rng.random() < 0.5:
            x = x.flip(2)
            w = x.shape[2]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return x, {"boxes": boxes, "labels": torch.from_numpy(r["labels"]), "ignore": torch.from_numpy(r["ignore"])}


__all__ = ["DetectionDataset", "check_classes", "load_image", "read_coco", "read_voc"]
