"""Evaluation of a segmenter on a dataset split: mIoU on the 3D points (labels restored from the
range image, optionally with kNN) and on the range image, per-class IoU and the confusion matrix."""

from __future__ import annotations

import time

import numpy as np

from perception.lidar.data import RangeImageDataset
from perception.lidar.metrics import IoUEvaluator
from perception.lidar.projection import project
from perception.lidar.segmenter import LidarSegmenter


def evaluate_split(seg: LidarSegmenter, root, split: str, labels=None, batch_size: int = 8,
                   max_scans: int | None = None, progress: bool = True) -> dict:
    """Scores of ``seg`` on ``split`` of the dataset at ``root`` (labels: the dataset's config,
    default the segmenter's own, whose sensor block is used for projection)."""
    labels = labels or seg.labels
    if labels.names != seg.labels.names:
        from vlnce.errors import ConfigError

        raise ConfigError(f"the checkpoint's classes {seg.labels.names} differ from the dataset's {labels.names}")
    return evaluate_dataset(seg, RangeImageDataset(root, split, labels, max_scans=max_scans), split, batch_size, progress)


def evaluate_dataset(seg: LidarSegmenter, ds: RangeImageDataset, split: str = "", batch_size: int = 8,
                     progress: bool = True) -> dict:
    """Scores of ``seg`` on the scans of ``ds`` (see ``evaluate_split``); also the trainer's validation."""
    from tqdm import tqdm

    labels = ds.labels
    ev3, ev2 = IoUEvaluator(labels.num_classes, labels.ignore), IoUEvaluator(labels.num_classes, labels.ignore)
    t0 = time.perf_counter()
    infer_s = 0.0
    for start in tqdm(range(0, len(ds), batch_size), desc=f"evaluating {split}", unit="batch", disable=not progress,
                      leave=False):
        loaded = [ds.load(i) for i in range(start, min(start + batch_size, len(ds)))]
        projs = [project(pts, seg.sensor, warn=False) for pts, _ in loaded]
        t1 = time.perf_counter()
        images = seg.predict_images(np.stack([p.network_input(seg.sensor) for p in projs]))
        infer_s += time.perf_counter() - t1
        for (pts, gt), p, img in zip(loaded, projs, images):
            ev2.add(img[p.mask], p.label_image(gt)[p.mask])
            ev3.add(seg.labels_from_image(p, img), gt)
    s3, s2 = ev3.summary(labels.names), ev2.summary(labels.names)
    return {"split": split, "scans": len(ds), "miou": s3["miou"], "accuracy": s3["accuracy"], "iou": s3["iou"],
            "absent": s3["absent"], "points": s3["points"], "miou_2d": s2["miou"], "accuracy_2d": s2["accuracy"],
            "knn": seg.knn is not None,
            "semantics": s3["semantics"], "confusion": ev3.conf.tolist(), "classes": labels.names,
            "seconds": round(time.perf_counter() - t0, 2), "inference_scans_per_s": round(len(ds) / max(infer_s, 1e-9), 2)}


def confusion_png(conf: np.ndarray, names: list[str], path, ignore=(0,)) -> None:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction) as a PNG."""
    from PIL import Image, ImageDraw

    from vlnce.fileio import save_png

    conf = np.asarray(conf, np.float64).T  # stored as [pred, gt]; draw ground truth as rows
    keep = [c for c in range(len(names)) if c not in ignore]
    m = conf[np.ix_(keep, [0] + keep)] if 0 in ignore else conf[np.ix_(keep, keep)]
    cols = (["(0)"] if 0 in ignore else []) + [names[c] for c in keep]
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    cell, left, top = 34, 90, 90
    im = Image.new("RGB", (left + cell * len(cols) + 8, top + cell * len(keep) + 8), "white")
    d = ImageDraw.Draw(im)
    for j, n in enumerate(cols):
        d.text((left + j * cell + 2, top - 14 - (j % 4) * 16), n[:10], fill=(0, 0, 0))
    for i, c in enumerate(keep):
        d.text((4, top + i * cell + 10), names[c][:12], fill=(0, 0, 0))
        for j in range(len(cols)):
            v = m[i, j]
            shade = int(255 * (1 - v))
            d.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1],
                        fill=(shade, shade, 255), outline=(220, 220, 220))
            if v >= 0.01:
                d.text((left + j * cell + 4, top + i * cell + 10), f"{v:.2f}"[1:] if v < 1 else "1.0",
                       fill=(255, 255, 255) if v > 0.5 else (0, 0, 0))
    save_png(np.asarray(im), path)
