"""Re-ID numerics against hand-derived values: evaluation protocol, re-ranking, clustering,
losses, P x K sampling and RMG's random shifting augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.reid.clustering import ari, kmeans_pp, nmi, two_stage_cluster
from perception.reid.evaluation import average_precision, evaluate_rank, pairwise_distance, topk_accuracy
from perception.reid.losses import api_rank_loss, id_cross_entropy, triplet_batch_hard
from perception.reid.rerank import k_reciprocal_rerank, k_reciprocal_sets, krjd
from perception.reid.sampler import PKSampler
from perception.reid.transforms import RSA

# Gallery: (pid, cam). g0 shares query A's identity *and* camera, so the protocol removes it.
G_PIDS = np.array([1, 2, 1, 3, 1, 2])
G_CAMS = np.array([1, 1, 2, 2, 3, 2])
Q_PIDS = np.array([1, 4, 2])  # query B (pid 4) has no match anywhere: skipped
Q_CAMS = np.array([1, 1, 3])
DIST = np.array([
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # A: ranked g0..g5; after removing g0 matches at ranks 2 and 4
    [0.3, 0.1, 0.2, 0.6, 0.5, 0.4],
    [0.5, 0.9, 0.2, 0.3, 0.4, 0.1],   # C: ranked g5 g2 g3 g4 g0 g1; matches at ranks 1 and 6
])


def test_market_protocol_hand_case():
    m = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert (m.num_valid, m.num_skipped) == (2, 1)
    # A: AP = (1/2 + 2/4) / 2 = 0.5; C: AP = (1/1 + 2/6) / 2 = 2/3.
    assert m.ap == pytest.approx([0.5, 2 / 3])
    assert m.mAP == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.rank(1) == pytest.approx(0.5) and m.rank(2) == 1.0
    # The gallery has 6 items but the CMC curve is 50 long: a found match stays found.
    assert len(m.cmc) == 50 and m.rank(50) == 1.0
    # INP = matches / rank of the last match: A 2/4, C 2/6.
    assert m.mINP == pytest.approx((2 / 4 + 2 / 6) / 2)


def test_same_camera_removal_changes_the_result():
    m = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, remove_same_camera=False)
    # A keeps g0: matches at ranks 1, 3, 5 -> AP = (1 + 2/3 + 3/5) / 3.
    assert m.ap[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m.rank(1) == 1.0


def test_trapezoid_ap_differs_from_noninterpolated():
    m = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, ap_variant="trapezoid")
    # A: matches at 2, 4: ((0/1 + 1/2)/2 + (1/3 + 2/4)/2) / 2; C: at 1, 6: ((1 + 1)/2 + (1/5 + 2/6)/2) / 2
    a = ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    c = ((1 + 1) / 2 + (1 / 5 + 2 / 6) / 2) / 2
    assert m.ap == pytest.approx([a, c])
    assert abs(m.mAP - (0.5 + 2 / 3) / 2) > 0.05
    assert average_precision([1, 2, 3], "trapezoid") == average_precision([1, 2, 3]) == 1.0


def test_ties_rank_in_gallery_order():
    dist = np.zeros((1, 4))
    m = evaluate_rank(dist, [7], [5, 7, 6, 7], [0], [1, 1, 1, 1])
    assert m.ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m.rank(1) == 0.0 and m.rank(2) == 1.0


def test_evaluation_errors_name_the_problem():
    with pytest.raises(ValueError, match="gallery is empty"):
        evaluate_rank(np.zeros((2, 0)), [1, 2], [], [1, 1], [])
    with pytest.raises(ValueError, match="g_cams has 5 entries"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS[:5])
    with pytest.raises(ValueError, match="none of the 1 queries"):
        evaluate_rank(np.ones((1, 2)), [3], [1, 2], [0], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full((1, 2), np.nan), [1], [1, 2], [0], [1, 1])


def test_topk_accuracy_and_distances():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(logits, [1, 1, 0], ks=(1, 2))
    # row 2 ties: class 0 wins top-1 by index, so the label 1 is only top-2; row 3's label 0 is third.
    assert acc == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    a = np.array([[3.0, 4.0]])
    b = np.array([[0.0, 0.0], [6.0, 8.0]])
    assert pairwise_distance(a, b) == pytest.approx(np.array([[5.0, 5.0]]))
    assert pairwise_distance(a, b, "sq_euclidean") == pytest.approx(np.array([[25.0, 25.0]]))
    assert pairwise_distance(a, b[1:], "cosine") == pytest.approx(np.array([[0.0]]), abs=1e-12)


def _blobs(n_blobs=4, per=10, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_blobs] * 10.0
    x = np.concatenate([c + spread * rng.standard_normal((per, dim)) for c in centres])
    return x, np.repeat(np.arange(n_blobs), per)


def test_krjd_properties_and_blobs():
    x, y = _blobs()
    d = pairwise_distance(x, x)
    j = krjd(d, k=5)
    assert np.allclose(np.diag(j), 0.0) and np.allclose(j, j.T)
    assert j.min() >= 0.0 and j.max() <= 1.0
    assert np.all(j[y[:, None] != y[None, :]] == 1.0)  # k < blob size: no shared neighbours across blobs
    sets = k_reciprocal_sets(d, 5)
    assert all(i in s for i, s in enumerate(sets))


def test_rerank_invariants():
    x, y = _blobs(n_blobs=3, per=6, seed=1)
    q, g = x[::3], np.delete(x, np.s_[::3], axis=0)
    qy, gy = y[::3], np.delete(y, np.s_[::3])
    qg, qq, gg = (pairwise_distance(a, b) for a, b in ((q, g), (q, q), (g, g)))
    rr = k_reciprocal_rerank(qg, qq, gg, k1=4, k2=2, lambda_value=0.3)
    assert rr.shape == qg.shape and rr.min() >= 0.0 and rr.max() <= 1.0
    # Scaling every distance by a constant changes nothing (rows are scaled by their maximum).
    assert np.allclose(k_reciprocal_rerank(3 * qg, 3 * qq, 3 * gg, k1=4, k2=2), rr)
    # lambda = 1 is the original distance, scaled per row: same ranking.
    only = k_reciprocal_rerank(qg, qq, gg, k1=4, k2=2, lambda_value=1.0)
    assert np.array_equal(np.argsort(only, 1, kind="stable"), np.argsort(qg, 1, kind="stable"))
    # Well-separated identities stay perfectly ranked.
    cams = np.zeros(len(qy)), np.ones(len(gy))
    assert evaluate_rank(rr, qy, gy, cams[0], cams[1]).mAP == pytest.approx(1.0)


def test_rerank_fixes_a_near_confuser():
    # The query's nearest gallery item (B0, 0.5 away) belongs to a dense cluster B whose members are
    # each other's neighbours, so the query is not among B0's 3 nearest. Identity A's items sit
    # on a ring 0.55 away and count the query among their 3 nearest: they are k-reciprocal
    # neighbours of the query, B0 is not, and re-ranking puts A first.
    r = 0.55
    a = np.array([[r, 0.0], [0.0, r], [0.0, -r], [r / math.sqrt(2), r / math.sqrt(2)]])
    b = np.array([[-0.5, 0.0], [-0.7, 0.0], [-0.6, 0.1], [-0.6, -0.1]])
    gallery, query = np.vstack([a, b]), np.zeros((1, 2))
    qg = pairwise_distance(query, gallery)
    assert qg[0].argmin() == 4
    rr = k_reciprocal_rerank(qg, pairwise_distance(query, query), pairwise_distance(gallery, gallery),
                             k1=3, k2=1, lambda_value=0.1)
    assert rr[0].argmin() < 4
    assert evaluate_rank(rr, [0], [0] * 4 + [1] * 4, [0], [1] * 8).mAP > \
        evaluate_rank(qg, [0], [0] * 4 + [1] * 4, [0], [1] * 8).mAP


def test_two_stage_clustering_recovers_blobs():
    x, y = _blobs(n_blobs=4, per=10, seed=2)
    out = two_stage_cluster(x, m=4, p=10, k=6, seed=0)
    assert out.ambiguous == 0 and out.unclaimed == 0
    assert nmi(y, out.labels) == pytest.approx(1.0) and ari(y, out.labels) == pytest.approx(1.0)


def test_two_stage_clustering_drops_ambiguous_points():
    x, y = _blobs(n_blobs=3, per=20, spread=3.0, seed=3)
    out = two_stage_cluster(x, m=3, p=20, k=8, seed=0)
    kept = out.labels >= 0
    assert out.ambiguous + out.unclaimed > 0
    _, km = kmeans_pp(x, 3, seed=0)

    def purity(truth, pred):
        return sum(np.bincount(truth[pred == c]).max() for c in np.unique(pred)) / len(pred)

    assert purity(y[kept], out.labels[kept]) >= purity(y, km)


def test_nmi_geometric_and_ari_hand_case():
    truth, pred = [0, 0, 1, 1], [0, 0, 0, 1]
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_true = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi(truth, pred) == pytest.approx(mi / math.sqrt(h_true * h_pred))
    assert nmi(truth, pred, "arithmetic") == pytest.approx(mi / ((h_true + h_pred) / 2))
    assert abs(nmi(truth, pred) - nmi(truth, pred, "arithmetic")) > 1e-3
    assert nmi([0, 0, 1, 1], [5, 5, 2, 2]) == pytest.approx(1.0)  # permutation invariant
    assert ari(truth, pred) == pytest.approx(0.0)  # index 1 = expected 2*3/6
    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)


def test_triplet_hand_cases():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    y = torch.tensor([0, 0, 1, 1])
    # Per anchor (hardest positive, hardest negative): (1, 3), (1, 2), (3, 2), (3, 5).
    assert triplet_batch_hard(x, y, margin=0.5).item() == pytest.approx(1.5 / 4)
    assert triplet_batch_hard(x, y, margin=1.5).item() == pytest.approx((0.5 + 2.5) / 4)
    # Squared: (1, 9), (1, 4), (9, 4), (9, 25).
    assert triplet_batch_hard(x, y, margin=0.3, metric="sq_euclidean").item() == pytest.approx(5.3 / 4)
    soft = [math.log1p(math.exp(v)) for v in (1 - 3, 1 - 2, 3 - 2, 3 - 5)]
    assert triplet_batch_hard(x, y, soft=True).item() == pytest.approx(sum(soft) / 4, rel=1e-5)
    u = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [0.0, -1.0]])
    # cosine: only the last anchor is active: d_ap = 1, d_an = 1 -> margin 0.2
    assert triplet_batch_hard(u, y, margin=0.2, metric="cosine").item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="two identities"):
        triplet_batch_hard(x, torch.zeros(4, dtype=torch.long))


def test_losses_give_gradients():
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    (triplet_batch_hard(x, y, margin=10.0) + id_cross_entropy(x[:, :4], y, 0.1)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    eps = 0.1
    target = torch.tensor([(1 - eps) + eps / 3, eps / 3, eps / 3])
    expected = -(target * torch.log_softmax(logits, 1)[0]).sum()
    assert id_cross_entropy(logits, torch.tensor([0]), eps).item() == pytest.approx(expected.item())
    assert api_rank_loss(torch.tensor([0.9, 0.5]), torch.tensor([0.8, 0.6]), eps=0.05).item() == \
        pytest.approx((0.0 + 0.15) / 2)


def test_pk_sampler():
    pids = [0] * 5 + [1] * 2 + [2] * 8 + [3] * 3 + [4] * 4
    s = PKSampler(pids, p=3, k=4, seed=7)
    batches = s.batches()
    assert batches and all(len(b) == 12 for b in batches)
    for b in batches:
        counts = np.bincount([pids[i] for i in b], minlength=5)
        assert sorted(counts[counts > 0]) == [4, 4, 4]
    assert s.batches() == batches
    s.set_epoch(1)
    assert s.batches() != batches
    with pytest.raises(ValueError, match=r"identities \[9\] have a single"):
        PKSampler(pids + [9], p=3, k=4)
    with pytest.raises(ValueError, match="at least P=6"):
        PKSampler(pids, p=6, k=4)


def test_rsa():
    img = torch.rand(3, 32, 16)
    assert torch.equal(RSA(p=0.0)(img, np.random.default_rng(0)), img)
    rsa = RSA(p=1.0, p_c=1.0)
    for seed in range(20):
        params = rsa.sample(32, 16, np.random.default_rng(seed))
        out = rsa(img, np.random.default_rng(seed))
        assert out.shape == img.shape
        assert torch.equal(out, rsa(img, np.random.default_rng(seed)))
        assert 0.7 <= params["r_c"] <= 1.0 and 0.5 <= params["r_h"] <= 1 / params["r_c"] and 0.5 <= params["r_w"] <= 1
        (y, x), (h, w) = params["at"], params["size"]
        assert 0 <= y and y + h <= 32 and 0 <= x and x + w <= 16
        mask = torch.ones(32, 16, dtype=torch.bool)
        mask[y:y + h, x:x + w] = False
        assert torch.all(out[:, mask] == 0.5)
    u8 = (img * 255).to(torch.uint8)
    params = rsa.sample(32, 16, np.random.default_rng(3))
    out = rsa(u8, np.random.default_rng(3))
    (y, x), (h, w) = params["at"], params["size"]
    mask = torch.ones(32, 16, dtype=torch.bool)
    mask[y:y + h, x:x + w] = False
    assert out.dtype == torch.uint8 and torch.all(out[:, mask] == 127)
