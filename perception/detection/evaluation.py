"""Run a detector over records and score it: VOC mAP@0.5 (all-point) per class, and COCO mAP when
pycocotools is installed."""

from __future__ import annotations

import numpy as np

from perception.detection.data import DetectionDataset
from perception.detection.metrics import coco_evaluate, voc_evaluate
from vlnce.errors import MissingDependencyError


def predict_records(model, records: list[dict], batch_size: int = 4, min_size: int | None = None, device=None,
                    progress: bool = False) -> list[dict]:
    """Detections of every record in the records' own pixel coordinates (numpy arrays)."""
    import torch
    from tqdm import tqdm

    ds = DetectionDataset(records, min_size=min_size)
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for i in tqdm(range(0, len(ds), batch_size), disable=not progress, desc="detect", unit="batch"):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        with torch.inference_mode():
            dets = model.predict([x.to(device) for x, _ in items])
        for j, d in enumerate(dets):
            r = records[i + j]
            s = ds.scale_of(r["height"], r["width"])
            out.append({"boxes": d["boxes"].cpu().numpy() / s, "scores": d["scores"].cpu().numpy(),
                        "labels": d["labels"].cpu().numpy()})
    return out


def evaluate_detections(dets: list[dict], records: list[dict], classes) -> dict:
    """``{"map50": VOC all-point mAP@0.5, "ap50": {class: AP}, "coco": {...} or None, "images"}``."""
    gts = [{"boxes": r["boxes"], "labels": r["labels"], "ignore": r["ignore"]} for r in records]
    voc = voc_evaluate(dets, gts, len(classes), 0.5, "all")
    try:
        coco = coco_evaluate(dets, gts, len(classes), [(r["height"], r["width"]) for r in records])
    except MissingDependencyError:
        coco = None
    return {"map50": voc["map"], "ap50": {c: (None if np.isnan(a) else a) for c, a in zip(classes, voc["ap"])},
            "num_gt": dict(zip(classes, voc["num_gt"])), "coco": coco, "images": len(records)}


__all__ = ["evaluate_detections", "predict_records"]
