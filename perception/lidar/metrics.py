"""Semantic segmentation IoU with the official SemanticKITTI semantics.

The confusion matrix counts conf[prediction, ground truth]. Points whose ground truth is an ignored
class are dropped (the ignored column is zeroed); a labelled point predicted as an ignored class
stays a false negative of its true class. The authors' training code (lidar-bonnetal, SqueezeSegV3)
also zeroes the ignored row, which forgives those predictions and reads higher whenever class 0 is
predicted (specs/perception_anchors.md section 1.4); ``semantics="bonnetal"`` reproduces it.
"""

from __future__ import annotations

import numpy as np


class IoUEvaluator:
    """Accumulates a confusion matrix over batches.

    Args:
        num_classes: C, including ignored classes.
        ignore: class ids excluded from the mean and whose ground-truth points are dropped.
        semantics: "official" (zero the ignored columns) or "bonnetal" (rows and columns).
    """

    def __init__(self, num_classes: int, ignore=(0,), semantics: str = "official") -> None:
        if semantics not in ("official", "bonnetal"):
            raise ValueError(f"semantics must be 'official' or 'bonnetal', got {semantics!r}")
        self.num_classes = int(num_classes)
        self.ignore = [int(i) for i in ignore]
        self.include = [c for c in range(self.num_classes) if c not in self.ignore]
        self.semantics = semantics
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.conf[:] = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Count predictions against ground truth (any equal shapes; integer class ids).

        Raises:
            ValueError: shapes differ or an id is outside 0..C-1.
        """
        pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} entries but ground truth has {gt.size}")
        if pred.size == 0:
            return
        lo, hi = min(pred.min(), gt.min()), max(pred.max(), gt.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"class ids must be in 0..{self.num_classes - 1}, got values in {lo}..{hi}")
        idx = pred.astype(np.int64) * self.num_classes + gt.astype(np.int64)
        self.conf += np.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn) per class after removing the ignored classes."""
        conf = self.conf.astype(np.float64).copy()
        conf[:, self.ignore] = 0
        if self.semantics == "bonnetal":
            conf[self.ignore, :] = 0
        tp = np.diag(conf)
        return tp, conf.sum(axis=1) - tp, conf.sum(axis=0) - tp

    def iou(self) -> tuple[float, np.ndarray]:
        """(mIoU over included classes, per-class IoU (C,)). A class absent from both ground truth and
        prediction scores 0, as the reference does; ``present`` tells which classes occurred."""
        tp, fp, fn = self.stats()
        per_class = tp / (tp + fp + fn + 1e-15)
        return float(per_class[self.include].mean()), per_class

    def present(self) -> np.ndarray:
        """Bool (C,): the class occurs in the counted ground truth."""
        tp, _, fn = self.stats()
        return (tp + fn) > 0

    def accuracy(self) -> float:
        """Sum of true positives over the included classes' predictions (the reference's ``getacc``)."""
        tp, fp, _ = self.stats()
        return float(tp.sum() / (tp[self.include].sum() + fp[self.include].sum() + 1e-15))

    def summary(self, names: list[str] | None = None) -> dict:
        miou, per_class = self.iou()
        names = names or [str(c) for c in range(self.num_classes)]
        present = self.present()
        return {"miou": round(miou, 4), "accuracy": round(self.accuracy(), 4),
                "iou": {names[c]: round(float(per_class[c]), 4) for c in self.include},
                "absent": [names[c] for c in self.include if not present[c]],
                "points": int(self.conf[:, self.include].sum()), "semantics": self.semantics}
