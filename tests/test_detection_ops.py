"""Box arithmetic, anchors, matching, NMS and RoIAlign of the detector, against hand-computed cases
and a per-sample reference of the Mask R-CNN RoIAlign."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception.detection import ops  # noqa: E402
from perception.detection.boxes import BoxCoder, box_iou, cell_anchors, clip_boxes, grid_anchors  # noqa: E402
from perception.detection.ops import batched_nms, nms, roi_align  # noqa: E402
from perception.detection.sampling import BELOW_LOW, BETWEEN, match, sample  # noqa: E402


@pytest.fixture(autouse=True)
def _ours():
    """Check our implementations even where torchvision's kernels would be picked."""
    old = ops.use_torchvision(False)
    yield
    ops.use_torchvision(old)


def test_box_iou_hand_cases():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 1, 2]])
    # overlap 1x1 of two 4-area boxes: 1 / 7; itself: 1; disjoint: 0; half: 2 / 4
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.5]]))
    assert box_iou(torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[1.0, 1, 1, 1]])).item() == 0.0


def test_box_coder_hand_values_and_round_trip():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchor = torch.tensor([[0.0, 0, 10, 20]])
    # centre moved by half a width right, width doubled, height the same
    box = torch.tensor([[5.0, 0, 25, 20]])
    t = coder.encode(box, anchor)
    assert torch.allclose(t, torch.tensor([[10 * 10 / 10, 0.0, 5 * math.log(2), 0.0]]))
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 100
    ref = torch.cat([ref, ref + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    boxes = torch.rand(50, 2, generator=g) * 100
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    for c in (coder, BoxCoder()):
        assert torch.allclose(c.decode(c.encode(boxes, ref), ref), boxes, atol=1e-3)


def test_decode_clamps_huge_scale():
    out = BoxCoder().decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.0, 0, 10, 10]]))
    assert torch.isfinite(out).all() and (out[0, 2] - out[0, 0]).item() == pytest.approx(1000 / 16 * 10, rel=1e-4)


def test_anchors_area_ratio_and_centres():
    base = cell_anchors((32.0, 64.0), (0.5, 1.0, 2.0))
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    assert torch.allclose(w * h, torch.tensor([32.0**2, 64.0**2] * 3))
    assert torch.allclose(h / w, torch.tensor([0.5, 0.5, 1.0, 1.0, 2.0, 2.0]))
    grid = grid_anchors(base, 2, 3, 16)  # (2*3*6, 4)
    assert grid.shape == (36, 4)
    centre = (grid[:, :2] + grid[:, 2:]) / 2
    # location (y=1, x=2) holds rows (1*3+2)*6 ... and is centred on pixel (40, 24)
    assert torch.allclose(centre[30:36], torch.tensor([[40.0, 24.0]]).expand(6, 2))


def test_clip_boxes():
    out = clip_boxes(torch.tensor([[-5.0, -1, 30, 12]]), height=10, width=20)
    assert out.tolist() == [[0.0, 0.0, 20.0, 10.0]]


def test_match_thresholds_and_low_quality():
    gt = torch.tensor([[0.0, 0, 10, 10]])
    boxes = torch.tensor([[0.0, 0, 10, 10],   # IoU 1 -> 0
                          [0.0, 0, 10, 5],    # IoU 0.5 -> between
                          [20.0, 20, 30, 30],  # IoU 0 -> negative
                          ])
    m = match(gt, boxes, 0.7, 0.3, allow_low_quality=False)
    assert m.tolist() == [0, BETWEEN, BELOW_LOW]
    # no box reaches 0.7: the best one (IoU 0.5) is claimed only with allow_low_quality
    m2 = match(gt, boxes[1:], 0.7, 0.3, allow_low_quality=True)
    assert m2.tolist() == [0, BELOW_LOW]
    assert match(torch.zeros(0, 4), boxes, 0.7, 0.3, True).tolist() == [BELOW_LOW] * 3


def test_sample_caps_positives():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    pos, neg = sample(labels, 16, 0.25, torch.Generator().manual_seed(0))
    assert len(pos) == 4 and len(neg) == 12
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_nms_hand_case():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [20.0, 20, 30, 30], [0.0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoUs: box 1 with box 0 90/110 = 0.82; box 3 with box 0 50/100 = 0.5 exactly (kept at 0.5);
    # box 3 with box 1 45/105 = 0.43
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.49).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.4).tolist() == [3, 2]
    assert nms(boxes, scores, 0.9).tolist() == [3, 0, 1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_batched_nms_keeps_groups_apart():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    # group 0: box 2 (0.7) suppresses box 0 (0.5); group 1 keeps its only box
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [1, 2]


def _ref_bilinear(f, y, x):
    """Per sample, the reference kernel's border rules (torchvision roi_align_kernel.cpp)."""
    _, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yl = yh = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xl = xh = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    return (1 - ly) * (1 - lx) * f[:, yl, xl] + (1 - ly) * lx * f[:, yl, xh] + ly * (1 - lx) * f[:, yh, xl] \
        + ly * lx * f[:, yh, xh]


def _ref_roi_align(feat, roi, scale, ph, pw, sr, aligned):
    off = 0.5 if aligned else 0.0
    x0, y0 = roi[1] * scale - off, roi[2] * scale - off
    rw, rh = roi[3] * scale - off - x0, roi[4] * scale - off - y0
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / ph, rw / pw
    f = feat[int(roi[0])]
    out = np.zeros((f.shape[0], ph, pw))
    for i in range(ph):
        for j in range(pw):
            acc = 0.0
            for iy in range(sr):
                for ix in range(sr):
                    acc = acc + _ref_bilinear(f, y0 + i * bh + (iy + 0.5) * bh / sr, x0 + j * bw + (ix + 0.5) * bw / sr)
            out[:, i, j] = acc / (sr * sr)
    return out


def test_roi_align_on_a_linear_map_is_the_bin_centre_value():
    # bilinear interpolation of a linear function is exact, and the 2x2 samples of a bin are
    # symmetric about its centre: each output is f at the bin centre
    h, w = 8, 8
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    feat = (2 * xx + 3 * yy + 1)[None, None]
    # pixels [1.5, 5.5) x [1.5, 3.5) at scale 1 -> feature coordinates [1, 5) x [1, 3) with aligned
    out = roi_align(feat, torch.tensor([[0, 1.5, 1.5, 5.5, 3.5]], dtype=torch.float64), (2, 2), 1.0, 2)
    centres_x, centres_y = torch.tensor([2.0, 4.0]), torch.tensor([1.5, 2.5])
    expect = 2 * centres_x[None, :] + 3 * centres_y[:, None] + 1
    assert torch.allclose(out[0, 0], expect.double())


def test_roi_align_matches_reference_kernel_including_borders():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 3.0, 4.0, 60.0, 50.0],      # inside
                         [1, -20.0, -10.0, 40.0, 30.0],  # starts off the map
                         [0, 100.0, 70.0, 130.0, 95.0],  # runs past the bottom-right edge
                         [1, 200.0, 200.0, 260.0, 240.0],  # entirely off: zeros
                         [0, 10.0, 10.0, 11.0, 12.0]], dtype=torch.float64)  # thinner than a cell
    for aligned in (True, False):
        out = roi_align(feat, rois, (3, 4), 1 / 8, 2, aligned=aligned)
        ref = np.stack([_ref_roi_align(feat.numpy(), r.numpy(), 1 / 8, 3, 4, 2, aligned) for r in rois])
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-9)
    assert torch.count_nonzero(roi_align(feat, rois[3:4], 3, 1 / 8, 2)) == 0


def test_roi_align_gradcheck():
    feat = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.3, 3.1, 30.7, 25.2], [0, 10.0, 5.0, 50.0, 40.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 1 / 8, 2), (feat,))


def test_roi_align_rejects_bad_rois():
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(3, 4), 2, 1.0)
