"""Detection metrics: Pascal VOC average precision and COCO mAP.

``voc_evaluate`` is the VOC devkit's protocol at one IoU threshold (0.5 for mAP@0.5, the metric
of the MCAR paper): per class, detections of all images sorted by score, each matched to the
unmatched ground-truth box of highest IoU >= the threshold in its image (a second detection of a
matched box is a false positive), then AP as the area under the interpolated precision-recall
curve. ``interpolation="all"`` is VOC 2010+'s all-point area (the default, what we report);
``"11point"`` is VOC 2007's; ``"coco101"`` samples 101 recall points as pycocotools does, so the
two implementations can be checked against each other. Boxes are (x0, y0, x1, y1) with
continuous coordinates (no +1). VOC's "difficult" flag is supported as ``ignore``.

``coco_evaluate`` runs pycocotools (``pip install pycocotools``) for COCO mAP@[.5:.95].
"""

from __future__ import annotations

import numpy as np

from vlnce.errors import MissingDependencyError


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, interpolation: str = "all") -> float:
    """AP from a PR curve ordered by decreasing score.

    Args:
        interpolation: "all" (VOC 2010+ area under the monotone envelope), "11point" (VOC 2007)
            or "coco101" (mean of the envelope at recall 0, 0.01, ..., 1).
    """
    r = np.asarray(recall, np.float64)
    p = np.asarray(precision, np.float64)
    if interpolation == "11point":
        return float(np.mean([p[r >= t].max() if (r >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], r, [1.0]])
    mpre = np.concatenate([[0.0], p, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: max to the right
    if interpolation == "all":
        i = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    if interpolation == "coco101":
        env = mpre[1:-1]
        idx = np.searchsorted(r, np.linspace(0, 1, 101), side="left")
        return float(np.mean([env[i] if i < len(env) else 0.0 for i in idx]))
    raise ValueError(f"unknown interpolation {interpolation!r}; expected all, 11point or coco101")


def voc_evaluate(detections: list[dict], ground_truth: list[dict], num_classes: int, iou_threshold: float = 0.5,
                 interpolation: str = "all") -> dict:
    """Per-class AP and their mean.

    Args:
        detections: per image ``{"boxes" (D, 4), "scores" (D,), "labels" (D,) in 1..K}``.
        ground_truth: per image ``{"boxes" (M, 4), "labels" (M,)}`` and optionally ``"ignore"`` (M,)
            bool (VOC "difficult": neither a hit nor a miss).
        num_classes: K.

    Returns:
        ``{"ap": [K floats, NaN for classes without ground truth], "map": mean over classes with
        ground truth, "num_gt": [K ints], "num_det": [K ints]}``.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection entries for {len(ground_truth)} images")
    aps, num_gt, num_det = [], [], []
    for k in range(1, num_classes + 1):
        gts, npos = {}, 0
        for i, g in enumerate(ground_truth):
            sel = np.asarray(g["labels"]) == k
            boxes = np.asarray(g["boxes"], np.float64).reshape(-1, 4)[sel]
            ign = np.asarray(g.get("ignore", np.zeros(len(sel), bool)), bool)[sel]
            gts[i] = (boxes, ign, np.zeros(len(boxes), bool))
            npos += int((~ign).sum())
        img, score, box = [], [], []
        for i, d in enumerate(detections):
            sel = np.asarray(d["labels"]) == k
            if sel.any():
                img += [i] * int(sel.sum())
                score.append(np.asarray(d["scores"], np.float64)[sel])
                box.append(np.asarray(d["boxes"], np.float64).reshape(-1, 4)[sel])
        num_gt.append(npos)
        num_det.append(len(img))
        if npos == 0:
            aps.append(float("nan"))
            continue
        if not img:
            aps.append(0.0)
            continue
        score, box, img = np.concatenate(score), np.concatenate(box), np.asarray(img)
        order = np.argsort(-score, kind="stable")
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for j, o in enumerate(order):
            gb, ign, used = gts[img[o]]
            if len(gb) == 0:
                fp[j] = 1
                continue
            iou = _iou_one(box[o], gb)
            best = int(np.argmax(iou))
            if iou[best] >= iou_threshold:
                if ign[best]:
                    continue  # matched a difficult box: neither tp nor fp
                if not used[best]:
                    tp[j], used[best] = 1, True
                else:
                    fp[j] = 1
            else:
                fp[j] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        aps.append(average_precision(tp / npos, tp / np.maximum(tp + fp, 1e-12), interpolation))
    valid = [a for a in aps if not np.isnan(a)]
    return {"ap": aps, "map": float(np.mean(valid)) if valid else float("nan"), "num_gt": num_gt, "num_det": num_det}


def coco_evaluate(detections: list[dict], ground_truth: list[dict], num_classes: int,
                  image_sizes: list[tuple[int, int]] | None = None) -> dict:
    """COCO metrics with pycocotools: ``{"map": AP@[.5:.95], "map50": AP@.5, "map75": AP@.75}``.

    Raises:
        MissingDependencyError: pycocotools is not installed.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingDependencyError("COCO mAP needs pycocotools: pip install pycocotools") from None
    import contextlib
    import io

    images, anns, dets = [], [], []
    for i, g in enumerate(ground_truth):
        h, w = image_sizes[i] if image_sizes else (10000, 10000)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        ign = np.asarray(g.get("ignore", np.zeros(len(g["labels"]), bool)), bool)
        for b, lab, ig in zip(np.asarray(g["boxes"], np.float64).reshape(-1, 4), np.asarray(g["labels"]), ign):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab), "iscrowd": int(ig),
                         "bbox": [float(b[0]), float(b[1]), float(bw), float(bh)], "area": float(bw * bh)})
    for i, d in enumerate(detections):
        for b, s, lab in zip(np.asarray(d["boxes"], np.float64).reshape(-1, 4), np.asarray(d["scores"]),
                             np.asarray(d["labels"])):
            dets.append({"image_id": i + 1, "category_id": int(lab), "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k, "name": str(k)} for k in range(1, num_classes + 1)]}
        gt.createIndex()
        if not dets:
            return {"map": 0.0, "map50": 0.0, "map75": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"map": float(s[0]), "map50": float(s[1]), "map75": float(s[2])}


__all__ = ["average_precision", "coco_evaluate", "voc_evaluate"]
