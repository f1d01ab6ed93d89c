"""Shape contracts and exact properties of the re-ID parts: ARP/RP, receptive partition, ABP,
attention pools, ResNet receptive field, the baseline and RMG models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perception.reid import parts
from perception.reid.arp import ARP, RegionPool, adaptive_rate, confidence_map, crop_resample, crop_windows
from perception.reid.evaluation import evaluate_rank, pairwise_distance
from perception.reid.registry import RECIPES, build_model
from perception.reid.resnet import ResNet, receptive_field, resnet50
from perception.reid.sampler import PKSampler


@pytest.mark.parametrize("n", [1, 3, 8])
def test_arp_shapes_and_no_parameters(n):
    x = torch.randn(n, 5, 12, 8)
    for k in (0.0, 0.7, 1.0, 50.0):
        assert ARP(k)(x).shape == (n, 5, 6, 4)
    assert len(list(ARP().parameters())) == 0


def test_arp_with_large_k_is_average_pooling():
    x = torch.randn(2, 4, 10, 6)
    assert torch.allclose(ARP(k=1e6)(x), F.avg_pool2d(x, 2), atol=1e-6)


def test_arp_with_zero_k_is_a_crop():
    x = torch.randn(3, 4, 12, 8)
    win = crop_windows(x, 0.0)
    out = RegionPool()(x)
    for i, (top, left, h, w) in enumerate(win.tolist()):
        assert (h, w) == (6, 4)
        assert torch.allclose(out[i], x[i, :, top:top + 6, left:left + 4], atol=1e-5)


def test_grid_sample_equals_crop_and_interpolate():
    x = torch.randn(4, 3, 16, 12)
    win = torch.tensor([[0, 0, 16, 12], [2, 3, 9, 7], [5, 1, 11, 6], [8, 4, 8, 8]])
    out = crop_resample(x, win, (8, 6))
    for i, (t, left, h, w) in enumerate(win.tolist()):
        ref = F.interpolate(x[i:i + 1, :, t:t + h, left:left + w], size=(8, 6), mode="bilinear", align_corners=False)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)


def test_arp_gradient_stays_in_the_crop():
    x = torch.randn(1, 3, 12, 8, requires_grad=True)
    arp = ARP(k=0.7)
    top, left, h, w = crop_windows(x, 0.7)[0].tolist()
    arp(x).sum().backward()
    inside = torch.zeros(12, 8, dtype=torch.bool)
    inside[top:top + h, left:left + w] = True
    assert torch.all(x.grad[0][:, ~inside] == 0) and torch.isfinite(x.grad).all()
    assert x.grad[0][:, inside].abs().sum() > 0


def test_confidence_map_invariances():
    x = torch.randn(2, 6, 8, 5)
    a = torch.rand(1, 6, 1, 1) + 0.5
    b = torch.randn(1, 6, 1, 1)
    ref = confidence_map(x)
    assert torch.allclose(confidence_map(a * x + b), ref, atol=1e-4)
    assert torch.allclose(confidence_map(x[:, torch.randperm(6)]), ref, atol=1e-6)


def test_adaptive_rate_on_a_uniform_distribution():
    h = 20
    d = torch.zeros(1, h)
    d[0, 4:14] = 0.1  # uniform over 10 rows: std = sqrt((10^2 - 1) / 12)
    span = np.sqrt((10 ** 2 - 1))
    assert adaptive_rate(d, 1.0, 0.3).item() == pytest.approx(span / h, rel=1e-5)  # inside the range
    assert adaptive_rate(d, 0.5, 0.3).item() == pytest.approx(0.3)  # clamps to dsr
    assert adaptive_rate(d, 3.0, 0.3).item() == pytest.approx(1.0)  # clamps to 1
    # A 10 x 10 object in a 20 x 20 one-channel map: standardised, object pixels are sqrt(3) and
    # background -1/sqrt(3); the sigmoid keeps the background's confidence, which widens the crop.
    x = torch.zeros(1, 1, h, h)
    x[0, 0, 4:14, 4:14] = 1.0
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    conf = np.full((h, h), sig(-1 / np.sqrt(3)))
    conf[4:14, 4:14] = sig(np.sqrt(3))
    rows = conf.sum(1) / conf.sum()
    std = np.sqrt((rows * (np.arange(h) - (rows * np.arange(h)).sum()) ** 2).sum())
    expected = round(h * min(max(np.sqrt(12) * std / h, 0.3), 1.0))
    assert 10 < expected < 20
    assert crop_windows(x, 1.0, (0.3, 0.3))[0, 2].item() == expected


def test_arp_finds_a_bright_blob():
    x = torch.zeros(1, 4, 24, 16)
    x[0, :, 17, 11] = 10.0
    top, left, h, w = crop_windows(x, 0.0)[0].tolist()
    centre = (top + (h - 1) / 2, left + (w - 1) / 2)
    assert top <= 17 < top + h and left <= 11 < left + w
    assert abs(centre[0] - 17) <= 1 and abs(centre[1] - 11) <= 1


def test_receptive_partition():
    torch.manual_seed(0)
    stages = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 12, 5)
    assert torch.equal(parts.receptive_partition(x, 1, stages)[0], stages(x))
    x.requires_grad_(True)
    out = parts.receptive_partition(x, 3, stages)
    assert [o.shape for o in out] == [(2, 4, 4, 5)] * 3
    out[1].sum().backward()
    rows = x.grad.abs().sum((0, 1, 3))
    assert torch.all(rows[:4] == 0) and torch.all(rows[8:] == 0) and torch.all(rows[4:8] > 0)
    x.grad = None
    stages(x)[:, :, 4:8].sum().backward()  # the original path sees across the cut
    assert x.grad.abs().sum((0, 1, 3))[3] > 0
    uneven = parts.receptive_partition(torch.randn(2, 3, 14, 5), 3, stages)  # 14 rows: 5 + 5 + 4
    assert [o.shape[2] for o in uneven] == [5, 5, 4]
    with pytest.raises(ValueError, match="cannot cut 4 rows"):
        parts.receptive_partition(torch.randn(1, 3, 4, 5), 5, stages)
    bn = torch.nn.BatchNorm2d(3, momentum=1.0)
    bn(torch.cat(torch.chunk(x.detach(), 3, dim=2), 0))
    assert torch.allclose(bn.running_mean, x.detach().mean((0, 2, 3)), atol=1e-6)


def test_resnet_receptive_field_matches_rmg():
    assert receptive_field(resnet50(width=0.125, last_stride=1)) == (363, 16)
    assert receptive_field(resnet50(width=0.125, last_stride=2)) == (427, 32)
    assert receptive_field(resnet50(width=0.125), upto="layer1") == (35, 4)


def test_activation_balanced_stripes():
    def one_hot_rows(rows, h=6, w=2):
        x = torch.zeros(1, len(rows), h, w)
        for c, r in enumerate(rows):
            x[0, c, r, 1] = 1.0
        return x

    # One maximum per row (C = H): uniform stripes.
    assert parts.activation_balanced_stripes(one_hot_rows(range(6)), 3).tolist() == [[0, 2, 4, 6]]
    # Maxima in rows 0,0,0,1,4,5: C/n = 2 per stripe -> first stripe ends with row 0 (3 maxima),
    # the second when 4 are reached (row 1), the rest is the third.
    assert parts.activation_balanced_stripes(one_hot_rows([0, 0, 0, 1, 4, 5]), 3).tolist() == [[0, 1, 2, 6]]
    # All maxima in one row: every stripe still gets a row.
    b = parts.activation_balanced_stripes(one_hot_rows([3] * 6), 3)[0]
    assert b[0] == 0 and b[-1] == 6 and torch.all(b[1:] > b[:-1])
    x = torch.randn(2, 8, 6, 3)
    assert parts.activation_balanced_stripes(x, 1).tolist() == [[0, 6]] * 2
    (pooled,) = parts.pool_stripes(x, parts.uniform_stripes(6, 1, 2))
    assert torch.equal(pooled, parts.global_pool(x))


def test_interaction_attention_pool():
    pool = parts.InteractionAttentionPool(6)
    assert sum(p.numel() for p in pool.parameters()) == 6 * 6 + 6
    x = torch.randn(2, 6, 4, 3)
    flat = x.flatten(2)
    u = torch.einsum("nch,c->nh", flat, pool.w_u.weight[0])
    expected = torch.einsum("dc,nch,nh->nd", pool.w_v.weight, flat, u)
    assert torch.allclose(pool(x), expected, atol=1e-5)
    assert torch.allclose(pool(3 * x), 9 * pool(x), atol=1e-4)
    single = torch.zeros(1, 6, 4, 3)
    single[0, :, 2, 1] = torch.randn(6)
    xp = single[0, :, 2, 1]
    assert torch.allclose(pool(single)[0], (pool.w_u.weight[0] @ xp) * (pool.w_v.weight @ xp), atol=1e-5)


def test_voxel_attention():
    va = parts.VoxelAttention(16, hidden=5)
    assert sum(p.numel() for p in va.parameters()) == 2 * 16 * 5
    f = torch.randn(2, 16, 4, 3)
    s, c = va.weights(f)
    assert torch.allclose(s.sum((1, 2, 3)), torch.ones(2))
    s_const, _ = va.weights(torch.ones(1, 16, 4, 3))
    assert torch.allclose(s_const, torch.full_like(s_const, 1 / 12))
    assert torch.allclose(va(f), f * s * c)


def test_baseline_shapes():
    model = build_model("baseline", num_classes=7, backbone="resnet26", width=0.125)
    x = torch.rand(4, 3, 64, 32)
    out = model.train()(x)
    assert [lg.shape for lg in out.logits] == [(4, 7)] and out.triplet[0].shape == (4, 256)
    assert model.eval()(x).shape == (4, model.embedding_dim) == (4, 256)
    with pytest.raises(ValueError, match="float images"):
        model(torch.zeros(1, 3, 64, 32, dtype=torch.uint8))


def test_rmg_shapes_at_384x128():
    full = build_model("rmg", num_classes=10, backbone="resnet50", width=1.0)
    assert full.embedding_dim == 14 * 256 == 3584  # 2 paths x (1 + 2) + 2 paths x (1 + 3) features
    model = build_model("rmg", num_classes=10, backbone="resnet50", width=0.125)
    x = torch.rand(2, 3, 384, 128)
    trunk = model.stem(model.normalise(x))
    assert trunk.shape[2:] == (96, 32)
    assert model.branches[0](trunk).shape[2:] == (24, 8)
    assert [p.shape[2:] for p in parts.receptive_partition(trunk, 2, model.branches[0])] == [(12, 8)] * 2
    assert [p.shape[2:] for p in parts.receptive_partition(trunk, 3, model.branches[1])] == [(8, 8)] * 3
    out = model.train()(x)
    assert len(out.logits) == 14 and all(lg.shape == (2, 10) for lg in out.logits)
    assert [t.shape for t in out.triplet] == [(2, 6 * 256), (2, 8 * 256)]
    loss, parts_ = RECIPES.get("rmg").loss(out, torch.tensor([0, 1]))
    loss.backward()
    last = model.branches[0][2][-1].bn3.weight.grad  # conv3 sees none: zero-initialised BN gamma
    assert torch.isfinite(loss) and last is not None and last.abs().sum() > 0
    assert model.eval()(x).shape == (2, 3584)
    no_rp = build_model("rmg_no_rp", num_classes=10, width=0.125)
    assert no_rp.embedding_dim == 7 * 256


def _toy_identities(n_ids=4, per=6, seed=0):
    """Coloured rectangles on noise, randomly shifted: one colour pair per identity."""
    rng = np.random.default_rng(seed)
    colours = rng.random((n_ids, 2, 3))
    imgs, pids = [], []
    for pid in range(n_ids):
        for _ in range(per):
            img = rng.random((3, 64, 32)).astype(np.float32) * 0.3
            dy, dx = rng.integers(0, 8, 2)
            img[:, 4 + dy:30 + dy, 4 + dx:24 + dx] = colours[pid, 0][:, None, None]
            img[:, 32 + dy:56, 4 + dx:24 + dx] = colours[pid, 1][:, None, None]
            imgs.append(img)
            pids.append(pid)
    return torch.from_numpy(np.stack(imgs)), np.array(pids)


def test_tiny_end_to_end_overfit():
    torch.manual_seed(0)
    x, pids = _toy_identities()
    recipe = RECIPES.get("baseline")
    model = build_model(recipe, num_classes=4, backbone="resnet26", width=0.125)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sampler = PKSampler(pids, p=4, k=4, seed=0)
    first = None
    for step in range(40):
        sampler.set_epoch(step)
        batch = sampler.batches()[0]
        model.train()
        loss, _ = recipe.loss(model(x[batch]), torch.as_tensor(pids[batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
    with torch.no_grad():
        emb = model.eval()(x).numpy()
    dist = pairwise_distance(emb, emb)
    np.fill_diagonal(dist, np.inf)  # never match an image with itself
    cams = np.arange(len(pids))  # every image its own camera: nothing removed but the query
    assert evaluate_rank(dist, pids, pids, cams, cams).mAP > 0.95


def test_resnet_rejects_bad_options():
    with pytest.raises(ValueError, match="last_stride"):
        ResNet(last_stride=3)


def test_air_net_shapes_and_untied_experts():
    model = build_model("air", num_classes=6, backbone="resnet50", width=0.125)
    assert model.embedding_dim == 3 * 256
    assert model.appearance is not model.interaction
    assert model.appearance[0].conv1.weight.data_ptr() != model.interaction[0].conv1.weight.data_ptr()
    x = torch.rand(4, 3, 96, 48)
    assert model.trunk(model.normalise(x)).shape[2:] == (6, 3)
    out = model.train()(x)
    assert len(out.logits) == 3 and [t.shape for t in out.triplet] == [(4, 256)] * 3
    # the attention-pooled descriptor is W_v^T (X u): check it against the formula on the map
    xi = model.interaction(model.trunk(model.normalise(x)))
    flat = xi.flatten(2)
    u = torch.einsum("nct,c->nt", flat, model.attention.w_u.weight[0])
    expected = (model.attention.w_v.weight @ torch.einsum("nct,nt->nc", flat, u).T).T
    torch.testing.assert_close(model.descriptors(x)[2], expected, rtol=1e-4, atol=1e-4)
    loss, parts_ = RECIPES.get("air").loss(out, torch.tensor([0, 0, 1, 1]))
    assert set(parts_) == {"ce", "triplet"} and torch.isfinite(loss)
    assert model.eval()(x).shape == (4, 768)


def test_api_pairs_are_nearest_same_and_other_class():
    from perception.reid.apinet import construct_pairs

    f = torch.tensor([[0.0], [1.0], [5.0], [5.5], [9.0], [20.0]])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    anchors, partners = construct_pairs(f, y)
    assert anchors.tolist() == [0, 1, 2, 3, 4, 5] * 2
    assert partners[:6].tolist() == [1, 0, 3, 2, 1, 3]  # nearest same class, never itself
    assert partners[6:].tolist() == [2, 2, 1, 4, 3, 4]  # nearest other class (ties: lower index)
    with pytest.raises(ValueError, match="at least two images per class"):
        construct_pairs(f[:3], torch.tensor([0, 0, 1]))


def test_api_net_gates_and_losses():
    torch.manual_seed(0)
    model = build_model("apinet", num_classes=5, backbone="resnet26", width=0.125)
    x, y = torch.rand(6, 3, 64, 32), torch.tensor([0, 0, 1, 1, 2, 2])
    x1, x2 = torch.randn(3, 256), torch.randn(3, 256)
    model.eval()  # no dropout in f_m
    x1s, x2s, x1o, x2o = model.interact(x1, x2)
    xm = model.mutual(torch.cat([x1, x2], 1))
    torch.testing.assert_close(x1o, x1 + x1 * torch.sigmoid(xm * x2))
    torch.testing.assert_close(x2s, x2 + x2 * torch.sigmoid(xm * x2))
    out = model.train()(x, y)
    logits = out.extras["pair_logits"]
    assert len(logits) == 4 and all(lg.shape == (12, 5) and lab.shape == (12,) for lg, lab in logits)
    p_self, p_other = out.extras["api_scores"]
    assert p_self.shape == p_other.shape == (24,) and torch.all((p_self > 0) & (p_self < 1))
    loss, parts_ = RECIPES.get("apinet").loss(out, y)
    assert set(parts_) == {"ce", "rank"}
    assert parts_["rank"] == pytest.approx(torch.relu(p_other - p_self + 0.05).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs the batch labels"):
        model(x)
    assert model.eval()(x).shape == (6, 256)  # the head is unloaded at test


def test_msgn_arp_stage_and_shapes():
    from perception.reid.msgn import arp_stage

    model = build_model("msgn", num_classes=5, backbone="resnet50", width=0.125)
    low = model.trunk(model.normalise(torch.rand(2, 3, 224, 224)))
    assert low.shape[2:] == (28, 28)
    assert model.global_view(low).shape[2:] == (7, 7)  # strided layer3 and layer4
    assert model.local_view(low).shape[2:] == (14, 14)  # ARP then stride-1 layer4
    # with the whole map as the crop ARP is 2x2 average pooling, so the stage equals the strided
    # stage with its first block at stride 1 on the pooled input
    stage = model.global_view[0]
    wide = arp_stage(stage, k=1e6).eval()
    x = torch.rand(1, stage[0].conv1.in_channels, 8, 8)
    with torch.no_grad():
        ref = wide[1](torch.nn.functional.avg_pool2d(x, 2))
        torch.testing.assert_close(wide(x), ref, rtol=1e-4, atol=1e-5)
    assert stage[0].conv2.stride == (2, 2)  # the copy, not the original, was changed
    out = model.train()(torch.rand(4, 3, 64, 32))
    assert out.logits[0].shape == (4, 5) and out.triplet[0].shape == (4, 512)


def test_gasm_saliency_sums_to_one_and_aux_losses():
    from perception.reid.gasm import FLIP_JOINTS, JOINTS, frobenius_loss, saliency

    torch.manual_seed(0)
    s = saliency(torch.randn(2, 1, 6, 3), torch.randn(2, 13, 6, 3))
    assert s.shape == (2, 1, 6, 3) and torch.allclose(s.sum((2, 3)), torch.ones(2, 1)) and (s >= 0).all()
    # where the mask is confidently off and no joint fires, the product fusion gives no weight
    m = torch.full((1, 1, 4, 2), -20.0)
    m[..., 0, 0] = 20.0
    p = torch.full((1, 13, 4, 2), -20.0)
    p[:, 0, 0, 0] = 20.0
    prod = saliency(m, p, "product")
    assert prod[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-6)
    assert [JOINTS[i] for i in FLIP_JOINTS][1:3] == ["r_shoulder", "l_shoulder"]
    assert sorted(FLIP_JOINTS) == list(range(13))
    # Frobenius (not squared) with the target area-averaged to the prediction's size
    pred, target = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 4, 4)
    assert frobenius_loss(pred, target).item() == pytest.approx(2.0)
    model = build_model("gasm", num_classes=4, backbone="resnet26", width=0.125)
    x, y = torch.rand(4, 3, 64, 32), torch.tensor([0, 0, 1, 1])
    out = model.train()(x, y)
    assert out.extras["mask"].shape == (4, 1, 4, 2) and out.extras["pose"].shape == (4, 13, 4, 2)
    recipe = RECIPES.get("gasm")
    _, without = recipe.loss(out, y)
    _, with_targets = recipe.loss(out, y, {"mask": torch.ones(4, 1, 64, 32), "pose": torch.zeros(4, 13, 64, 32)})
    assert "mask" not in without and {"mask", "pose"} <= set(with_targets)


def test_adtc_is_triplet_only():
    model = build_model("adtc", num_classes=4, backbone="resnet26", width=0.125)
    out = model.train()(torch.rand(4, 3, 64, 32))
    loss, parts_ = RECIPES.get("adtc").loss(out, torch.tensor([0, 0, 1, 1]))
    assert set(parts_) == {"triplet"}
    assert model.eval()(torch.rand(2, 3, 64, 32)).shape == (2, model.embedding_dim)


def test_every_recipe_builds_trains_and_describes():
    x, y = torch.rand(4, 3, 64, 32), torch.tensor([0, 0, 1, 1])
    for name in RECIPES.names():
        model = build_model(name, num_classes=3, backbone="resnet26", width=0.125)
        loss, _ = RECIPES.get(name).loss(model.train()(x, y), y)
        loss.backward()
        assert torch.isfinite(loss), name
        emb = model.eval()(x)
        assert emb.shape == (4, model.embedding_dim), name
        assert RECIPES.get(name).describe()["loss"], name
