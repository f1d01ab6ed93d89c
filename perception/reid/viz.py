"""The usual re-ID picture: queries on the left, their top-ranked gallery images to the right, green
frames for true matches and red for others, with the same-identity same-camera items the protocol
removes left out (so the picture shows what the metrics score)."""

from __future__ import annotations

import numpy as np

from perception.reid.datasets import ReidDataset, load_image

GREEN, RED, BLUE = (40, 170, 60), (210, 40, 40), (60, 90, 200)


def ranked_rows(data: ReidDataset, dist: np.ndarray, num_queries: int = 6, top: int = 10) -> list[tuple[int, list[int]]]:
    """(query index, [gallery indices]) for ``num_queries`` queries spread evenly over the query list,
    each with its ``top`` nearest gallery items after the protocol's junk removal (stable order)."""
    dist = np.asarray(dist)
    if dist.shape != (len(data.query), len(data.gallery)):
        raise ValueError(f"distances must be (queries, gallery) = {(len(data.query), len(data.gallery))}, "
                         f"got {dist.shape}")
    picks = np.unique(np.linspace(0, len(data.query) - 1, num=min(num_queries, len(data.query))).round().astype(int))
    rows = []
    for qi in picks:
        q = data.query[qi]
        order = np.argsort(dist[qi], kind="stable")
        kept = [int(g) for g in order if not (data.gallery[g].pid == q.pid and data.gallery[g].camid == q.camid)]
        rows.append((int(qi), kept[:top]))
    return rows


def ranked_gallery(data: ReidDataset, dist: np.ndarray, num_queries: int = 6, top: int = 10,
                   cell: tuple[int, int] = (128, 64)) -> np.ndarray:
    """(H, W, 3) uint8 picture of ``ranked_rows``; each cell is ``cell`` = (H, W) pixels."""
    from PIL import Image, ImageDraw

    h, w = cell
    pad, border, label_h = 6, 3, 14
    rows = ranked_rows(data, dist, num_queries, top)
    width = pad + (w + 2 * border + pad) * (top + 1) + pad
    height = pad + (h + 2 * border + label_h + pad) * len(rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def put(item, col: int, row: int, colour, text: str) -> None:
        x = pad + col * (w + 2 * border + pad) + (pad if col else 0)
        y = pad + row * (h + 2 * border + label_h + pad)
        draw.rectangle([x, y, x + w + 2 * border - 1, y + h + 2 * border - 1], fill=colour)
        canvas.paste(Image.fromarray(load_image(item.path, (h, w))), (x + border, y + border))
        draw.text((x, y + h + 2 * border + 1), text, fill=(0, 0, 0))

    for r, (qi, gallery) in enumerate(rows):
        q = data.query[qi]
        put(q, 0, r, BLUE, f"q {q.pid} c{q.camid + 1}")
        for c, gi in enumerate(gallery, start=1):
            g = data.gallery[gi]
            put(g, c, r, GREEN if g.pid == q.pid else RED, f"{c}: {g.pid}")
    return np.asarray(canvas)
