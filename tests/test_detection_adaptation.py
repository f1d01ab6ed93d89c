"""MCAR's losses and layers (spec section 5.12) and the detection metrics against hand-computed
values and pycocotools."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perception.detection.adaptation import (  # noqa: E402
    PAPER_WEIGHTS, ConditionalDiscriminator, ImageDiscriminator, LocalDiscriminator, condition, consistency_loss,
    focal_adversarial_loss, grad_reverse, reversal_coefficient, local_adversarial_loss, multi_hot, multilabel_loss, proposal_class_max,
    symmetric_kl)
from perception.detection.metrics import average_precision, coco_evaluate, voc_evaluate  # noqa: E402


def test_multi_hot():
    y = multi_hot([torch.tensor([2, 2, 4]), torch.tensor([], dtype=torch.int64), torch.tensor([1])], 4)
    assert y.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="1..4"):
        multi_hot([torch.tensor([5])], 4)


def test_multilabel_loss_is_eq1():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    expect = -(y * p.log() + (1 - y) * (1 - p).log()).sum() / 2
    assert multilabel_loss(logits, y).item() == pytest.approx(expect.item(), rel=1e-6)


def test_focal_adversarial_loss():
    src = torch.tensor([[0.0, 2.0], [1.0, -1.0]])  # index 1 = source
    tgt = torch.tensor([[3.0, 0.0]])
    d_s = torch.softmax(src, 1)[:, 1]
    d_t = torch.softmax(tgt, 1)[:, 1]
    ce = 0.5 * (-d_s.log().mean() - (1 - d_t).log().mean())
    assert focal_adversarial_loss(src, tgt, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    expect5 = 0.5 * (-((1 - d_s) ** 5 * d_s.log()).mean() - (d_t ** 5 * (1 - d_t).log()).mean())
    assert focal_adversarial_loss(src, tgt, 5.0).item() == pytest.approx(expect5.item(), rel=1e-6)
    # an easy example (D sure and right) is down-weighted much more than a hard one
    easy, hard = torch.tensor([[-4.0, 4.0]]), torch.tensor([[0.5, -0.5]])
    none = torch.zeros(0, 2)
    r_easy = focal_adversarial_loss(easy, none, 2.0) / focal_adversarial_loss(easy, none, 0.0)
    r_hard = focal_adversarial_loss(hard, none, 2.0) / focal_adversarial_loss(hard, none, 0.0)
    assert r_easy < 1e-5 < r_hard < 1


def test_gradient_reversal():
    x = torch.randn(3, 4, requires_grad=True)
    y = grad_reverse(x, 0.7)
    assert torch.equal(y, x)
    w = torch.randn(3, 4)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * w)


def test_reversal_schedule():
    assert reversal_coefficient(0.0) == reversal_coefficient(0.7) == 1.0
    # DANN's 2 / (1 + exp(-10 p)) - 1 equals tanh(5 p): 0 at the start, tanh(1) at p = 0.2
    assert reversal_coefficient(0.0, "dann") == 0.0
    assert reversal_coefficient(0.2, "dann") == pytest.approx(0.7615942, abs=1e-6)
    assert reversal_coefficient(1.0, "dann") == pytest.approx(0.9999092, abs=1e-6)
    assert reversal_coefficient(1.5, "dann") == reversal_coefficient(1.0, "dann")
    ramp = [reversal_coefficient(p / 10, "dann") for p in range(11)]
    assert all(a < b for a, b in zip(ramp, ramp[1:]))
    with pytest.raises(ValueError, match="'constant' or 'dann'"):
        reversal_coefficient(0.5, "linear")


def test_conditional_discriminator_is_bilinear_in_p():
    torch.manual_seed(0)
    d = ConditionalDiscriminator(channels=6, num_classes=3, hidden=5)
    assert d.fc.in_features == 5 * 3
    seen = []
    d.fc.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    f = torch.randn(2, 6, 4, 4)
    p = torch.rand(2, 3)
    d(f, p)
    d(f, 2 * p)
    assert torch.allclose(seen[1], 2 * seen[0])
    # the outer product: entry (i, k) of h p^T is h_i p_k
    d(f, torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
    j = seen[2].view(2, 5, 3)
    assert torch.count_nonzero(j[0, :, 1:]) == 0 and torch.count_nonzero(j[1, :, :2]) == 0


def test_discriminators_reverse_the_feature_gradient_only():
    torch.manual_seed(0)
    for d in (ConditionalDiscriminator(4, 2, 3), ImageDiscriminator(4, 3)):
        f = torch.randn(2, 4, 3, 3, requires_grad=True)
        p = torch.rand(2, 2, requires_grad=True)
        loss = focal_adversarial_loss(d(f[:1], p[:1]), d(f[1:], p[1:]), 0.0)
        g_d = torch.autograd.grad(loss, d.conv.weight, retain_graph=True)[0]
        loss.backward()
        assert g_d.abs().sum() > 0 and f.grad.abs().sum() > 0
        assert p.grad is None  # the condition is detached
        # through the reversal F climbs the loss D descends: a small step along -grad raises it
        with torch.no_grad():
            f2 = f - 1e-3 * f.grad
            assert focal_adversarial_loss(d(f2[:1], p[:1]), d(f2[1:], p[1:]), 0.0) > loss


def test_local_adversarial_loss_hand_values():
    # D = sigmoid(0) = 0.5 everywhere: 1/2 * 0.25 + 1/2 * 0.25
    assert local_adversarial_loss(torch.zeros(2, 1, 3, 3), torch.zeros(1, 1, 4, 4)).item() == pytest.approx(0.25)
    # a sure and right D costs nothing; a sure and wrong one costs the maximum, 1
    big = torch.full((1, 1, 2, 2), 30.0)
    assert local_adversarial_loss(big, -big).item() == pytest.approx(0.0, abs=1e-12)
    assert local_adversarial_loss(-big, big).item() == pytest.approx(1.0)
    # the mean runs over locations: one source location at D = 1, three at D = 0.5, no target error
    s = torch.tensor([[[[30.0, 0.0], [0.0, 0.0]]]])
    assert local_adversarial_loss(s, -big).item() == pytest.approx(0.5 * 3 * 0.25 / 4)


def test_local_discriminator_is_per_location_and_reverses_the_gradient():
    torch.manual_seed(0)
    d = LocalDiscriminator(4, hidden=6).double()
    f = torch.randn(2, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    out = d(f)
    assert out.shape == (2, 1, 5, 7)
    # 1x1 convolutions: changing one feature location changes that output location only
    with torch.no_grad():
        g = f.clone()
        g[0, :, 2, 3] += 1.0
        changed = (d(g) != out).squeeze(1)
    assert changed.nonzero().tolist() == [[0, 2, 3]]
    loss = local_adversarial_loss(out[:1], out[1:])
    g_d = torch.autograd.grad(loss, d.net[0].weight, retain_graph=True)[0]
    loss.backward()
    assert g_d.abs().sum() > 0
    # through the reversal the features get exactly minus the gradient of the loss D descends
    plain = d.net(f)
    g_plain = torch.autograd.grad(local_adversarial_loss(plain[:1], plain[1:]), f)[0]
    assert g_plain.abs().sum() > 0 and torch.allclose(f.grad, -g_plain)


def test_proposal_class_max_and_consistency():
    logits = [torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]), torch.tensor([[5.0, 0.0, 0.0]])]
    q = proposal_class_max(logits)
    probs0 = torch.softmax(logits[0], 1)[:, 1:]
    assert torch.allclose(q[0], probs0.max(0).values)
    assert torch.allclose(q[1], torch.softmax(logits[1], 1)[0, 1:])
    a, b = torch.softmax(torch.randn(4, 5), 1), torch.softmax(torch.randn(4, 5), 1)
    assert (symmetric_kl(a, b) >= 0).all()
    assert torch.allclose(symmetric_kl(a, b), symmetric_kl(b, a))
    assert torch.allclose(symmetric_kl(a, a), torch.zeros(4), atol=1e-7)
    p = torch.tensor([[0.9, 0.1]])
    assert consistency_loss(p, p).item() == pytest.approx(0.0, abs=1e-7)
    pt, qt = torch.softmax(p, 1), torch.softmax(torch.tensor([[0.1, 0.8]]), 1)
    expect = 0.5 * ((pt * (pt / qt).log()).sum() + (qt * (qt / pt).log()).sum())
    assert consistency_loss(p, torch.tensor([[0.1, 0.8]])).item() == pytest.approx(expect.item(), rel=1e-5)


def test_condition_switch_and_paper_weights():
    p, q = torch.tensor([[0.2, 0.9]]), torch.tensor([[0.5, 0.1]])
    assert torch.equal(condition(p, q, "p"), p)
    assert torch.allclose(condition(p, q, "softmax_pq"), torch.softmax(p + q, 1))
    with pytest.raises(ValueError):
        condition(p, None, "softmax_pq")
    assert PAPER_WEIGHTS == {"adv": 0.5, "multilabel": 0.01, "consistency": 0.1, "gamma": 5.0}


# --- metrics ---------------------------------------------------------------------------------
def _img(boxes, labels, scores=None):
    d = {"boxes": np.asarray(boxes, float).reshape(-1, 4), "labels": np.asarray(labels, int)}
    if scores is not None:
        d["scores"] = np.asarray(scores, float)
    return d


def test_voc_ap_hand_case():
    gt = [_img([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    # 0.9 hits gt 0, 0.8 is a duplicate of gt 0 (false positive), 0.7 hits gt 1
    det = [_img([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 31]], [1, 1, 1], [0.9, 0.8, 0.7])]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: all-point area = 1/2 * 1 + 1/2 * 2/3
    res = voc_evaluate(det, gt, num_classes=2)
    assert res["ap"][0] == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(res["ap"][1]) and res["map"] == pytest.approx(0.5 + 1 / 3)
    assert res["num_gt"] == [2, 0] and res["num_det"] == [3, 0]
    # VOC 2007 11-point: precision envelope 1 for r <= 0.5 (6 points), 2/3 above (5 points)
    res11 = voc_evaluate(det, gt, 2, interpolation="11point")
    assert res11["ap"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # a wrong class or a miss below IoU 0.5 scores nothing
    assert voc_evaluate([_img([[0, 0, 10, 10]], [2], [0.9])], gt, 2)["ap"][0] == 0.0
    assert voc_evaluate([_img([[5, 5, 15, 15]], [1], [0.9])], gt, 2)["ap"][0] == 0.0


def test_voc_difficult_boxes_are_ignored():
    gt = [dict(_img([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1]), ignore=np.array([False, True]))]
    det = [_img([[20, 20, 30, 30], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])]
    assert voc_evaluate(det, gt, 1)["ap"][0] == pytest.approx(1.0)


def test_average_precision_perfect_and_empty():
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "coco101") == pytest.approx(1.0)


def test_voc_coco101_agrees_with_pycocotools():
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(12):
        # non-overlapping ground truth on a grid, so both matchers see the same candidates
        n = int(rng.integers(1, 5))
        cells = rng.choice(16, size=n, replace=False)
        boxes = np.array([[c % 4 * 50 + 5, c // 4 * 50 + 5, c % 4 * 50 + 45, c // 4 * 50 + 45] for c in cells], float)
        labels = rng.integers(1, 4, size=n)
        gts.append(_img(boxes, labels))
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 4, size=(n, 4))
        extra = rng.uniform(0, 150, size=(2, 2))
        db = np.concatenate([boxes[keep] + jitter[keep], np.concatenate([extra, extra + 30], 1)])
        dl = np.concatenate([labels[keep], rng.integers(1, 4, size=2)])
        dets.append(_img(db, dl, rng.random(len(db))))
    ours = voc_evaluate(dets, gts, 3, iou_threshold=0.5, interpolation="coco101")["map"]
    theirs = coco_evaluate(dets, gts, 3, image_sizes=[(200, 200)] * len(gts))["map50"]
    assert ours == pytest.approx(theirs, abs=1e-6)
