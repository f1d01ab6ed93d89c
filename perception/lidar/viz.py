"""Pictures of labelled scans: the range image and a bird's-eye view, coloured by class."""

from __future__ import annotations


import numpy as np

from perception.lidar.projection import Projection


def range_panel(proj: Projection, max_range_m: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8: near is bright, empty pixels are dark red."""
    r = proj.range
    hi = max_range_m or (float(r[proj.mask].max()) if proj.mask.any() else 1.0)
    g = (255 * (1 - np.clip(r / max(hi, 1e-6), 0, 1))).astype(np.uint8)
    img = np.repeat(g[..., None], 3, axis=2)
    img[~proj.mask] = (60, 0, 0)
    return img


def label_panel(proj: Projection, label_image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 class colours; empty pixels black."""
    img = colors[np.clip(label_image, 0, len(colors) - 1)].copy()
    img[~proj.mask] = 0
    return img


def bev_image(points: np.ndarray, labels: np.ndarray, colors: np.ndarray, extent_m: float = 10.0,
              size_px: int = 480) -> np.ndarray:
    """Top view centred on the sensor (x up the image, y to the left), ``extent_m`` to each side."""
    img = np.full((size_px, size_px, 3), 255, np.uint8)
    pts = np.asarray(points)
    ok = np.isfinite(pts[:, :3]).all(axis=1)
    pts, lab = pts[ok], np.asarray(labels)[ok]
    scale = size_px / (2 * extent_m)
    col = (size_px / 2 - pts[:, 1] * scale).astype(int)
    row = (size_px / 2 - pts[:, 0] * scale).astype(int)
    inside = (col >= 0) & (col < size_px) & (row >= 0) & (row < size_px)
    order = np.argsort(pts[inside, 2])  # higher points drawn last
    img[row[inside][order], col[inside][order]] = colors[np.clip(lab[inside][order], 0, len(colors) - 1)]
    c = size_px // 2
    img[c - 3:c + 4, c - 3:c + 4] = (0, 0, 0)
    return img


def legend(names: list[str], colors: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    per_row = max(1, width // 120)
    rows = (len(names) + per_row - 1) // per_row
    im = Image.new("RGB", (width, 18 * rows + 4), "white")
    d = ImageDraw.Draw(im)
    for i, (n, c) in enumerate(zip(names, colors)):
        x, y = (i % per_row) * 120 + 4, (i // per_row) * 18 + 3
        d.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in c), outline=(0, 0, 0))
        d.text((x + 16, y), n, fill=(0, 0, 0))
    return np.asarray(im)


def scan_figure(points: np.ndarray, proj: Projection, point_labels: np.ndarray, names: list[str], colors: np.ndarray,
                title: str = "", reference: np.ndarray | None = None, extent_m: float = 10.0) -> np.ndarray:
    """Range image, labels on the range image (and the reference's, when given), a bird's-eye
    view and a legend, stacked into one RGB picture."""
    from PIL import Image, ImageDraw

    H, W = proj.shape
    scale = max(1, 1024 // W)
    up = lambda a: np.kron(a, np.ones((max(1, 4 * scale // 2), scale, 1), np.uint8))  # noqa: E731  (rows taller)
    panels = [up(range_panel(proj)), up(label_panel(proj, proj.label_image(point_labels), colors))]
    if reference is not None:
        panels.append(up(label_panel(proj, proj.label_image(reference), colors)))
    width = max(p.shape[1] for p in panels)
    bev = bev_image(points, point_labels, colors, extent_m, size_px=min(width, 480))
    bev_row = np.full((bev.shape[0], width, 3), 255, np.uint8)
    bev_row[:, :bev.shape[1]] = bev
    if reference is not None and bev.shape[1] * 2 <= width:
        bev_row[:, bev.shape[1]:2 * bev.shape[1]] = bev_image(points, reference, colors, extent_m, bev.shape[0])
    gap = np.full((4, width, 3), 255, np.uint8)
    stack = [np.full((18, width, 3), 255, np.uint8)]
    for p in panels:
        stack += [p, gap]
    stack += [bev_row, legend(names, colors, width)]
    img = Image.fromarray(np.concatenate(stack, axis=0))
    ImageDraw.Draw(img).text((4, 3), title + ("   (rows: range, prediction, reference; bird's-eye: prediction, reference)"
                                              if reference is not None else "   (rows: range, labels; bird's-eye)"),
                             fill=(0, 0, 0))
    return np.asarray(img)
