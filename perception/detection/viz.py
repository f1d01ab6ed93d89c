"""Pictures of detections: boxes with class names and scores drawn on images, and image grids."""

from __future__ import annotations

import numpy as np

from sim.scenes.semantics import palette


def draw_boxes(image: np.ndarray, boxes, labels, classes, scores=None, min_score: float = 0.0,
               dashed_labels: bool = False) -> np.ndarray:
    """A copy of (H, W, 3) uint8 ``image`` with (M, 4) pixel boxes outlined in one colour per class
    and captioned "name score"."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(img)
    colours = palette(len(classes) + 2)[2:]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        s = None if scores is None else float(np.asarray(scores)[i])
        if s is not None and s < min_score:
            continue
        c = tuple(int(v) for v in colours[(lab - 1) % len(colours)])
        draw.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=c, width=2)
        text = classes[lab - 1] if 1 <= lab <= len(classes) else str(lab)
        if s is not None:
            text += f" {s:.2f}"
        tw = 6 * len(text) + 2
        y = max(b[1] - 11, 0)
        draw.rectangle([b[0], y, b[0] + tw, y + 10], fill=c)
        draw.text((b[0] + 1, y - 1), text, fill=(0, 0, 0) if sum(c) > 380 else (255, 255, 255))
    return np.asarray(img)


def grid(images: list[np.ndarray], columns: int, pad: int = 4) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images, row-major, on a white background."""
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im[:h, :w]
    return out


__all__ = ["draw_boxes", "grid"]
