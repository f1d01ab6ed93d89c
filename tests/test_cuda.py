"""CUDA paths: each perception plugin must give what the CPU gives, in float32 and float16, and the VLN
policies must match the CPU under mixed precision and learn with the trainer's AMP step.

Skipped without a GPU (CI never has one). These import only torch, numpy, PyYAML and the project,
so ``tools/device_check.sh`` can run them on a bare GPU machine with ``--noconftest``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def box_room_scan(beams: int, columns: int, fov_up_deg: float, fov_down_deg: float,
                  size=(6.0, 4.0, 2.6), sensor=(2.5, 1.5, 1.0)) -> np.ndarray:
    """A spinning LiDAR inside an empty box room, by exact ray-plane intersection: (N, 4) points
    (x, y, z in m, sensor frame; remission falling with range and incidence, as the simulator's)."""
    el = np.deg2rad(np.linspace(fov_up_deg, fov_down_deg, beams))[:, None]
    az = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :] + np.pi / columns
    d = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) + 0 * az),
                 -1).reshape(-1, 3)
    o, hi = np.asarray(sensor), np.asarray(size)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.minimum(np.where((-o / d) > 0, -o / d, np.inf), np.where(((hi - o) / d) > 0, (hi - o) / d, np.inf))
    axis = t.argmin(1)
    r = t[np.arange(len(d)), axis]
    cos_inc = np.abs(d[np.arange(len(d)), axis])
    remission = 0.6 * cos_inc / (1.0 + 0.01 * r * r)
    return np.concatenate([d * r[:, None], remission[:, None]], 1).astype(np.float32)


def person_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """(128, 64, 3) uint8 crops: a head, a torso and legs of random colours on a noisy background."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        img = rng.integers(60, 200, (128, 64, 3)).astype(np.uint8)
        img[8:28, 22:42] = rng.integers(120, 230, 3)
        img[28:72, 12:52] = rng.integers(0, 256, 3)
        img[72:124, 16:48] = rng.integers(0, 256, 3)
        crops.append(img)
    return crops


def room_image(seed: int = 0) -> np.ndarray:
    """(240, 320, 3) uint8: a floor and wall gradient with a few coloured blocks on it."""
    rng = np.random.default_rng(seed)
    img = np.zeros((240, 320, 3), np.uint8)
    img[:150] = np.linspace(150, 210, 320, dtype=np.uint8)[None, :, None]
    img[150:] = np.array([120, 90, 60], np.uint8)
    for _ in range(5):
        x0, y0 = rng.integers(0, 260), rng.integers(40, 200)
        img[y0:y0 + rng.integers(20, 60), x0:x0 + rng.integers(20, 60)] = rng.integers(0, 256, 3)
    return img


def test_lidar_plugin_on_cuda_labels_points_as_on_cpu():
    from perception.lidar.plugin import LidarSegmentationPlugin

    cpu = LidarSegmentationPlugin(device="cpu")
    c = cpu.lidar_config()
    clouds = [box_room_scan(c["beams"], c["columns"], c["fov_up_deg"], c["fov_down_deg"]),
              box_room_scan(c["beams"], c["columns"], c["fov_up_deg"], c["fov_down_deg"], (5, 5, 2.5), (1, 3, 1.2))]
    want = cpu({"points": clouds})["labels"]
    for half, floor in ((False, 0.995), (True, 0.98)):
        got = LidarSegmentationPlugin(device="cuda", half=half)({"points": clouds})["labels"]
        for w, g in zip(want, got):
            assert g.shape == w.shape and g.dtype == np.int32
            # argmax flips only where two classes tie to within the arithmetic's rounding
            assert (g == w).mean() >= floor, (half, (g == w).mean())


def test_reid_embeddings_on_cuda_match_cpu():
    from perception.reid.embedder import ReidEmbedder
    from perception.reid.plugin import default_checkpoint

    crops = person_crops(12)
    want = ReidEmbedder.from_checkpoint(default_checkpoint(), "cpu").embed(crops)
    for half, floor in ((False, 0.9999), (True, 0.999)):
        got = ReidEmbedder.from_checkpoint(default_checkpoint(), "cuda", half).embed(crops)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-3)
        assert (got * want).sum(1).min() >= floor, (half, (got * want).sum(1).min())


def test_detector_on_cuda_matches_cpu():
    from perception.detection.plugin import DetectionPlugin
    from perception.detection.boxes import box_iou

    images = [room_image(0), room_image(1)]
    cpu = DetectionPlugin(device="cpu", score_threshold=0.0)
    x = torch.from_numpy(images[0]).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        f_cpu = cpu.model.backbone(x)
    want = cpu({"image": images})
    for half, score_tol in ((False, 0.02), (True, 0.05)):
        gpu = DetectionPlugin(device="cuda", score_threshold=0.0, half=half)
        with torch.no_grad():
            f_gpu = gpu.model.backbone(x.to("cuda", torch.float16 if half else torch.float32)).float().cpu()
        # TF32 convolutions (PyTorch's default on CUDA) and float16 round at about 1e-3 relative
        assert (f_gpu - f_cpu).abs().max() <= (0.01 if not half else 0.03) * f_cpu.abs().max()
        got = gpu({"image": images})
        for i in range(len(images)):
            confident = want["scores"][i] >= 0.1
            if not confident.any():
                continue
            iou = box_iou(torch.from_numpy(want["boxes"][i][confident]), torch.from_numpy(got["boxes"][i])).numpy()
            for k, j in enumerate(iou.argmax(1)):
                assert iou[k, j] >= 0.9
                assert got["classes"][i][j] == want["classes"][i][confident][k]
                assert abs(got["scores"][i][j] - want["scores"][i][confident][k]) <= score_tol


def test_nms_and_roi_align_on_cuda_match_cpu():
    from perception.detection import ops

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 60], 1)
    scores = torch.rand(300, generator=g)
    feats = torch.randn(2, 8, 20, 30, generator=g)
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), boxes[:40] / 2], 1)
    old = ops.use_torchvision(False)  # ours, not torchvision's kernels
    try:
        assert torch.equal(ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), ops.nms(boxes, scores, 0.5))
        want = ops.roi_align(feats, rois, 7, 1 / 8)
        got = ops.roi_align(feats.cuda(), rois.cuda(), 7, 1 / 8).cpu()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    finally:
        ops.use_torchvision(old)


@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
def test_policy_on_cuda_with_mixed_precision_matches_cpu_and_learns(arch):
    from agents.models import PolicyConfig, build_policy
    from agents.training.store import inflection_weighted_ce

    vocab = ["<PAD>", "<UNK>"] + [f"w{i}" for i in range(18)]
    torch.manual_seed(0)
    policy = build_policy(PolicyConfig(arch=arch, vocab_size=len(vocab), rgb_size=16, depth_size=16, hidden=32,
                                       progress_monitor=True), vocab).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, len(vocab), (4, 7), generator=g)
    tokens[0, 4:] = 0
    rgb = torch.randint(0, 256, (4, 6, 16, 16, 3), generator=g).to(torch.uint8)
    depth = torch.rand(4, 6, 16, 16, 1, generator=g)
    prev = torch.randint(0, 4, (4, 6), generator=g)
    prev[:, 0] = -1
    with torch.no_grad():
        want, _ = policy.forward_sequence(tokens, rgb, depth, prev)
    policy.cuda()
    batch = [t.cuda() for t in (tokens, rgb, depth, prev)]
    with torch.no_grad():
        got, _ = policy.forward_sequence(*batch)
        with torch.autocast("cuda", dtype=torch.float16):
            got16, _ = policy.forward_sequence(*batch)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got16.float().cpu(), want, rtol=5e-2, atol=5e-2)

    # the trainer's step: autocast, a grad scaler and the inflection-weighted loss, all on the GPU
    actions = torch.randint(0, 4, (4, 6), generator=g).cuda()
    mask = torch.ones(4, 6, dtype=torch.bool, device="cuda")
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cuda")
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.float16):
            logits, _ = policy.forward_sequence(*batch)
        loss = inflection_weighted_ce(logits, actions, mask, 3.2)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


def test_detection_plugin_moves_between_devices():
    from perception.detection.plugin import DetectionPlugin

    plugin = DetectionPlugin(device="cuda", half=True, score_threshold=0.0)
    assert next(plugin.model.parameters()).dtype == torch.float16
    plugin.to("cpu")  # float16 is for CUDA only: back on the CPU the model runs in float32
    assert next(plugin.model.parameters()).dtype == torch.float32
    images = [room_image(2)]
    got, want = plugin({"image": images}), DetectionPlugin(device="cpu", score_threshold=0.0)({"image": images})
    # a float16 round trip of the weights changes the scores by rounding only
    assert len(got["scores"][0]) > 0
    top = [np.sort(d["scores"][0])[::-1][:3] for d in (got, want)]
    np.testing.assert_allclose(top[0], top[1], atol=0.02)
    plugin.to("cuda")
    assert next(plugin.model.parameters()).dtype == torch.float16
