"""LiDAR segmentation: projection, SAC, SqueezeSegV3, loss, kNN, mIoU, files, training, plugins."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perception.lidar.knn import KNNConfig, knn_labels
from perception.lidar.labels import LabelConfig, SensorConfig, load_label_config
from perception.lidar.metrics import IoUEvaluator
from perception.lidar.projection import project
from perception.lidar.sac import SAC
from perception.lidar.semantickitti import read_labels, read_scan, scan_files, write_labels, write_scan
from perception.lidar.ssgv3 import SqueezeSegV3, SSGV3Config, multilayer_loss, ssgv3_21, ssgv3_53
from vlnce.errors import CheckpointError, ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "semantickitti_sample"
SMALL = SensorConfig(fov_up_deg=10.0, fov_down_deg=-10.0, height=8, width=16, means=[0] * 5, stds=[1] * 5)


def _ray(row: int, col: int, sensor: SensorConfig, r: float) -> np.ndarray:
    """A point at range r through the centre of pixel (row, col)."""
    fov_up, fov = math.radians(sensor.fov_up_deg), math.radians(sensor.fov_up_deg - sensor.fov_down_deg)
    pitch = fov_up - (row + 0.5) / sensor.height * fov
    yaw = math.pi - 2 * math.pi * (col + 0.5) / sensor.width
    return np.array([r * math.cos(pitch) * math.cos(yaw), r * math.cos(pitch) * math.sin(yaw), r * math.sin(pitch)])


# --- projection -----------------------------------------------------------------------------------
def test_projection_puts_each_pixel_centre_point_in_its_own_pixel_and_back():
    rows, cols = np.meshgrid(np.arange(SMALL.height), np.arange(SMALL.width), indexing="ij")
    pts = np.array([_ray(r, c, SMALL, 2.0 + 0.1 * r) for r, c in zip(rows.ravel(), cols.ravel())], np.float32)
    pts = np.concatenate([pts, np.full((len(pts), 1), 0.5, np.float32)], axis=1)
    p = project(pts, SMALL)
    assert p.mask.all() and p.out_of_fov == 0
    np.testing.assert_array_equal(p.idx.ravel(), np.arange(len(pts)))  # point i owns pixel i
    np.testing.assert_array_equal(p.py, rows.ravel())
    np.testing.assert_array_equal(p.px, cols.ravel())
    labels = np.arange(len(pts)) % 5
    np.testing.assert_array_equal(p.unproject(p.label_image(labels)), labels)  # round trip
    np.testing.assert_allclose(p.range.ravel(), np.linalg.norm(pts[:, :3], axis=1), rtol=1e-6)


def test_nearest_point_owns_the_pixel_and_ties_are_deterministic():
    far, near, mid = _ray(3, 5, SMALL, 9.0), _ray(3, 5, SMALL, 1.5), _ray(3, 5, SMALL, 4.0)
    tie_a, tie_b = _ray(6, 2, SMALL, 3.0), _ray(6, 2, SMALL, 3.0)
    pts = np.array([far, near, mid, tie_a, tie_b], np.float32)
    p = project(pts, SMALL)
    assert p.idx[3, 5] == 1 and p.range[3, 5] == pytest.approx(1.5, rel=1e-6)
    assert p.idx[6, 2] == 3  # equal ranges: the lower point index wins, whatever the order in memory
    assert p.mask.sum() == 2
    hidden = p.unproject(p.label_image(np.array([7, 1, 7, 2, 9])))
    assert hidden.tolist() == [1, 1, 1, 2, 2]  # hidden points inherit the owner's label (kNN fixes that)


def test_projection_drops_bad_points_and_clamps_points_outside_every_beam():
    up = [3.0, 0.0, 3.0]   # 45 deg above a +-10 deg sensor
    pts = np.array([[1.0, 0, 0, 0.1], [np.nan, 0, 0, 0], [np.inf, 1, 0, 0], [0, 0, 0, 0], up + [0.2]], np.float32)
    p = project(pts, SMALL)
    assert p.kept.tolist() == [True, False, False, False, True]
    assert p.px[1] == -1 and p.unproject(np.ones(SMALL.height * SMALL.width, int).reshape(8, 16) * 4)[1] == 0
    assert p.out_of_fov == 1 and p.py[4] == 0  # clamped onto the top row, as the reference does
    empty = project(np.zeros((0, 4), np.float32), SMALL)
    assert not empty.mask.any() and empty.network_input(SMALL).shape == (5, 8, 16)
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(N, 4\)"):
        project(np.zeros((5, 2)), SMALL)


def test_network_input_is_normalised_and_exactly_zero_where_empty():
    s = SensorConfig(10.0, -10.0, 8, 16, means=[1, 2, 3, 4, 5], stds=[2, 2, 2, 2, 2])
    p = project(np.array([list(_ray(4, 4, s, 3.0)) + [0.5]], np.float32), s)
    x = p.network_input(s)
    np.testing.assert_allclose(x[:, 4, 4], (np.array([3.0, *_ray(4, 4, s, 3.0), 0.5]) - [1, 2, 3, 4, 5]) / 2, atol=1e-5)
    x[:, 4, 4] = 0
    assert not x.any()


# --- SAC and the network ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["S", "IS", "SK", "ISK"])
def test_sac_with_unit_attention_is_the_plain_convolution(variant):
    torch.manual_seed(0)
    sac = SAC(6, 5, variant)
    x = torch.randn(2, 6, 7, 9)
    att_channels = {"S": 1, "IS": 6, "SK": 9, "ISK": 54}[variant]
    ones = torch.ones(2, att_channels, 7, 9)
    expected = F.conv2d(x, sac.weight_3x3(), padding=1)
    torch.testing.assert_close(sac.apply_attention(x, ones), expected, rtol=1e-5, atol=1e-5)
    assert sac.attention(torch.randn(2, 3, 7, 9)).shape == ones.shape


def test_sac_isk_scales_each_tap_at_the_output_pixel():
    """Zeroing one tap's attention at one output pixel removes exactly that neighbour's term (Eq. 4)."""
    torch.manual_seed(1)
    sac = SAC(2, 3, "ISK")
    x = torch.randn(1, 2, 5, 5)
    att = torch.ones(1, 18, 5, 5)
    att[0, 0 * 9 + 8, 2, 2] = 0  # channel 0, tap (kh=2, kw=2) at output (2, 2)
    y = sac.apply_attention(x, att)
    w = sac.weight_3x3()
    ref = F.conv2d(x, w, padding=1)
    ref[0, :, 2, 2] -= w[:, 0, 2, 2] * x[0, 0, 3, 3]
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_sac_isk_adds_the_expected_parameters():
    c = 16
    plain, isk = SAC(c, c, "none"), SAC(c, c, "ISK")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(plain) == c * c * 9
    # the 1x1 conv over im2col holds the same weights; attention: 7x7 conv 3 -> 9c with bias, BN affine
    assert n(isk) - n(plain) == 3 * 49 * 9 * c + 9 * c + 2 * 9 * c


def test_ssgv3_shapes_heads_and_width_only_downsampling():
    torch.manual_seed(0)
    m = ssgv3_21(num_classes=7, width=0.25).train()
    outs = m(torch.randn(2, 5, 16, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 7, 16, 64), (2, 7, 16, 32), (2, 7, 16, 16), (2, 7, 16, 8), (2, 7, 16, 8)]
    m.eval()
    assert m(torch.randn(1, 5, 16, 64)).shape == (1, 7, 16, 64)
    with pytest.raises(ValueError, match="divisible by 8"):
        m(torch.randn(1, 5, 16, 60))
    with pytest.raises(ValueError, match=r"\(N, 5, H, W\)"):
        m(torch.randn(1, 4, 16, 64))
    deep = ssgv3_53(num_classes=7, width=0.125)
    assert [len(s.blocks) for s in deep.encoder] == [1, 2, 8, 8, 4]
    assert [len(s.blocks) for s in m.encoder] == [1, 1, 2, 2, 1]
    with pytest.raises(ConfigError, match="conv"):
        SqueezeSegV3(SSGV3Config(conv="XYZ"))


def test_multilayer_loss_ignores_class_zero_and_sums_the_heads():
    torch.manual_seed(0)
    target = torch.randint(1, 4, (1, 4, 16))
    target[0, 0] = 0
    outs = [torch.randn(1, 4, 4, 16 // d, requires_grad=True) for d in (1, 2, 4, 8, 8)]
    w = torch.tensor([0.0, 1.0, 2.0, 0.5])
    loss = multilayer_loss(outs, target, w)
    expected = sum(F.cross_entropy(o, F.interpolate(target[:, None].float(), size=o.shape[-2:], mode="nearest")[:, 0].long(),
                                   weight=w, ignore_index=0) for o in outs)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert outs[0].grad[0, :, 0].abs().sum() == 0  # ignored pixels get no gradient
    changed = [o.detach().clone() for o in outs]
    changed[0][0, :, 0] = 100.0  # whatever is predicted on ignored pixels
    torch.testing.assert_close(multilayer_loss(changed, target, w), loss.detach())
    assert multilayer_loss(outs, torch.zeros_like(target), w).item() == 0.0


def test_loss_weights_are_inverse_frequency_and_zero_for_ignored():
    labels = load_label_config("indoor")
    labels.content = {2: 0.5, 1: 0.25, 42: 0.25}  # raw ids: floor, wall, person
    w = labels.loss_weights()
    assert w[0] == 0
    assert w[labels.names.index("floor")] == pytest.approx(1 / 0.501)
    assert w[labels.names.index("person")] == pytest.approx(1 / 0.251)
    assert w[labels.names.index("bed")] == pytest.approx(1 / 0.001)


# --- kNN ---------------------------------------------------------------------------------------
def test_knn_relabels_a_hidden_point_from_its_own_depth_neighbours():
    s = SensorConfig(10.0, -10.0, 8, 16, [0] * 5, [1] * 5)
    pts, labels = [], []
    for r in range(8):
        for c in range(16):
            near = c < 8
            pts.append(_ray(r, c, s, 2.0 if near else 6.0))
            labels.append(1 if near else 2)
    hidden = _ray(4, 6, s, 6.0)  # a far point behind the near object's pixel
    pts.append(hidden)
    labels.append(2)
    p = project(np.array(pts, np.float32), s)
    img = p.label_image(np.array(labels))
    naive = p.unproject(img)
    assert naive[-1] == 1  # it inherits the near object's label
    out = knn_labels(p, img, 3, KNNConfig(k=5, search=5, sigma=1.0, cutoff=1.0))
    assert out[-1] == 2  # its range neighbours (the far wall on the right) outvote the pixel
    np.testing.assert_array_equal(out[:-1], np.array(labels[:-1]))  # every visible point keeps its label


def test_knn_never_outputs_class_zero_and_respects_the_cutoff():
    s = SensorConfig(10.0, -10.0, 4, 8, [0] * 5, [1] * 5)
    pts = np.array([_ray(r, c, s, 3.0) for r in range(4) for c in range(8)], np.float32)
    p = project(pts, s)
    img = np.zeros((4, 8), int)
    img[1, 3] = 2
    out = knn_labels(p, img, 3, KNNConfig(k=9, search=3, cutoff=1.0))
    assert (out != 0).sum() == 9  # the 3x3 block around (1, 3) votes 2; class 0 never wins elsewhere
    lonely = project(np.array([_ray(1, 1, s, 3.0), _ray(1, 2, s, 9.0)], np.float32), s)
    img = np.zeros((4, 8), int)
    img[1, 1], img[1, 2] = 1, 2
    assert knn_labels(lonely, img, 3, KNNConfig(k=2, search=3, cutoff=1.0)).tolist() == [1, 2]  # 6 m apart: no mixing


# --- metrics ----------------------------------------------------------------------------------
def test_miou_follows_the_official_semantics_on_a_hand_made_case():
    ev = IoUEvaluator(4, ignore=[0])
    gt = np.array([1, 1, 1, 2, 2, 3, 0, 0])
    pred = np.array([1, 1, 0, 2, 1, 3, 2, 1])
    ev.add(pred, gt)
    miou, iou = ev.iou()
    # class 1: tp 2, fp 1 (a 2 predicted as 1), fn 1 (predicted 0, still an error); ignored-gt points dropped
    assert iou[1] == pytest.approx(2 / 4)
    assert iou[2] == pytest.approx(1 / 2)
    assert iou[3] == pytest.approx(1.0)
    assert miou == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert ev.accuracy() == pytest.approx(4 / 5)  # 4 tp over 5 included-class predictions
    ref = IoUEvaluator(4, ignore=[0], semantics="bonnetal")
    ref.add(pred, gt)
    assert ref.iou()[1][1] == pytest.approx(2 / 3)  # the authors' code forgives the class-0 prediction


def test_miou_absent_class_scores_zero_and_bad_ids_are_named():
    ev = IoUEvaluator(3, ignore=[0])
    ev.add(np.array([1, 1]), np.array([1, 1]))
    miou, iou = ev.iou()
    assert iou[1] == pytest.approx(1.0) and iou[2] == 0.0 and miou == pytest.approx(0.5)
    assert ev.summary(["u", "a", "b"])["absent"] == ["b"]
    with pytest.raises(ValueError, match="0..2"):
        ev.add(np.array([3]), np.array([1]))
    with pytest.raises(ValueError, match="entries"):
        ev.add(np.array([1, 1]), np.array([1]))


# --- files and label configs ---------------------------------------------------------------------
def test_scan_and_label_files_round_trip_and_bad_sizes_are_named(tmp_path):
    pts = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    write_scan(tmp_path / "velodyne" / "000000.bin", pts)
    write_labels(tmp_path / "labels" / "000000.label", np.arange(10) | (3 << 16))
    np.testing.assert_array_equal(read_scan(tmp_path / "velodyne" / "000000.bin"), pts)
    assert (read_labels(tmp_path / "labels" / "000000.label", 10) & 0xFFFF).tolist() == list(range(10))
    assert scan_files(tmp_path)[0][1] == tmp_path / "labels" / "000000.label"
    (tmp_path / "bad.bin").write_bytes(b"\0" * 18)
    with pytest.raises(DatasetError, match="18 bytes, not a multiple of 16"):
        read_scan(tmp_path / "bad.bin")
    with pytest.raises(DatasetError, match="10 labels but its scan has 11 points"):
        read_labels(tmp_path / "labels" / "000000.label", 11)
    with pytest.raises(DatasetError, match="no .bin scans"):
        scan_files(tmp_path / "labels")


def test_label_configs_load_and_reject_bad_fields(tmp_path):
    kitti = load_label_config("semantic-kitti")
    assert kitti.num_classes == 20 and kitti.include == list(range(1, 20))
    assert kitti.map_labels(np.array([252, 10 | (7 << 16), 99, 1234])).tolist() == [1, 1, 0, 0]
    assert kitti.inverse_lut()[kitti.map_labels(np.array([40, 50, 81]))].tolist() == [40, 50, 81]
    indoor = load_label_config("indoor")
    from sim.scenes.semantics import CATEGORY_INDEX
    assert indoor.names[indoor.map_labels(np.array([CATEGORY_INDEX["person"]]))[0]] == "person"
    d = kitti.to_dict()
    assert LabelConfig.from_dict(d).learning_map == kitti.learning_map
    del d["learning_map_inv"]
    with pytest.raises(ConfigError, match="learning_map_inv"):
        LabelConfig.from_dict(d)
    (tmp_path / "x.yaml").write_text("classes: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_label_config(tmp_path / "x.yaml")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="shared SemanticKITTI sample scans not present")
def test_real_semantickitti_scans_load_project_and_back_project():
    kitti = load_label_config("semantic-kitti")
    for scan, label in scan_files(SAMPLE):
        pts = read_scan(scan)
        raw = read_labels(label, len(pts))
        assert pts.shape[1] == 4 and len(pts) > 100_000
        train = kitti.map_labels(raw)
        assert set(np.unique(train)) <= set(range(20)) and (train > 0).mean() > 0.5
        p = project(pts, kitti.sensor)
        assert p.mask.sum() == len(np.unique(p.py.astype(np.int64) * 2048 + p.px))  # one owner per hit pixel
        # nearest wins: every point's range is >= its pixel's range
        assert (p.unproj_range + 1e-5 >= p.range[p.py, p.px]).all()
        assert (p.idx[p.mask] >= 0).all() and np.array_equal(p.range[p.mask], p.unproj_range[p.idx[p.mask]])
        back = p.unproject(p.label_image(train))
        owners = p.idx[p.py, p.px] == np.arange(len(pts))
        assert np.array_equal(back[owners], train[owners])  # the owners get their own labels back
        assert 0 < (~owners).mean() < 0.6  # some points are hidden at 64x2048, as the spec observed


# --- training, checkpoints, plugins ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lidar(tmp_path_factory):
    from perception.lidar.data import MakeDataConfig, make_dataset

    out = tmp_path_factory.mktemp("lidar")
    make_dataset(out, MakeDataConfig(train_houses=1, valid_houses=1, test_houses=1, scans_per_house=3, columns=64,
                                     beams=16), progress=False)
    return out


def test_make_data_writes_the_semantickitti_layout(tiny_lidar):
    from perception.lidar.data import load_dataset_config

    cfg = load_dataset_config(tiny_lidar)
    assert cfg.extra["split"] == {"train": ["00"], "valid": ["01"], "test": ["02"]}
    assert cfg.sensor.height == 16 and cfg.sensor.width == 64
    pairs = scan_files(tiny_lidar, ["00"])
    assert len(pairs) == 3 and all(lab is not None for _, lab in pairs)
    pts = read_scan(pairs[0][0])
    raw = read_labels(pairs[0][1], len(pts))
    assert np.isfinite(pts).all() and (cfg.map_labels(raw) > 0).mean() > 0.9
    poses = np.loadtxt(tiny_lidar / "sequences" / "00" / "poses.txt")
    assert poses.shape == (3, 12)
    rot = poses[0].reshape(3, 4)[:, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)
    assert poses[0, 11] == pytest.approx(1.0 + 0.0, abs=0.3)  # the sensor is about 1 m above the floor
    assert sum(cfg.content.values()) == pytest.approx(1.0)


def test_training_resumes_and_checkpoints_are_checked(tiny_lidar, tmp_path):
    from perception.lidar.segmenter import LidarSegmenter, read_segmenter_checkpoint
    from perception.lidar.train import LidarTrainConfig, LidarTrainer

    cfg = LidarTrainConfig(model=SSGV3Config(width=0.125), epochs=1, batch_size=2, threads=1)
    s1 = LidarTrainer(tiny_lidar, tmp_path / "run", cfg).train(progress=False)
    assert s1["epochs"] == 1 and (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "curves.png").is_file()
    cfg2 = LidarTrainConfig(model=SSGV3Config(width=0.125), epochs=2, batch_size=2, threads=1)
    trainer = LidarTrainer(tiny_lidar, tmp_path / "run", cfg2)
    assert trainer.epoch == 1  # resumed
    assert trainer.train(progress=False)["steps"] == 2 * s1["steps"]
    assert read_segmenter_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    with pytest.raises(ConfigError, match="different model"):
        LidarTrainer(tiny_lidar, tmp_path / "run", LidarTrainConfig(model=SSGV3Config(width=0.25), epochs=3))
    seg = LidarSegmenter.from_checkpoint(tmp_path / "run" / "best.pt", "cpu")
    cloud = read_scan(scan_files(tiny_lidar, ["02"])[0][0])
    assert seg.predict(cloud).shape == (len(cloud),)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        LidarSegmenter.from_checkpoint(tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="not a LiDAR segmentation checkpoint"):
        LidarSegmenter.from_checkpoint(REPO / "configs" / "agents" / "cma_best.pt")


def _random_checkpoint(path: Path, sensor: SensorConfig) -> Path:
    from perception.lidar.segmenter import save_segmenter

    labels = load_label_config("indoor")
    labels.sensor = sensor
    torch.manual_seed(0)
    return save_segmenter(path, ssgv3_21(labels.num_classes, width=0.125), labels)


def test_plugins_are_discovered_from_entry_points(tmp_path, monkeypatch):
    from perception.registry import discover

    dist = tmp_path / "thirdparty_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vlnce.perception]\necho = thirdparty_echo:EchoPlugin\n")
    (tmp_path / "thirdparty_echo.py").write_text(
        "import numpy as np\nfrom perception.base import PerceptionPlugin, Port\n"
        "class EchoPlugin(PerceptionPlugin):\n"
        "    name = 'echo'\n"
        "    inputs = {'points': Port('pointcloud', '(N, 4)', 'float32')}\n"
        "    outputs = {'labels': Port('point_labels', '(N,)', 'int32')}\n"
        "    def to(self, device):\n        return self\n"
        "    def infer(self, batch):\n        return {'labels': [np.full(len(p), 7, np.int32) for p in batch['points']]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = discover()
    assert "echo" in reg and "lidar_seg" in reg
    assert reg.get("echo").source == "thirdparty-plugin 0.1"
    plugin = reg.get("echo").load()()
    assert plugin({"points": [np.zeros((3, 4))]})["labels"][0].tolist() == [7, 7, 7]
    with pytest.raises(ValueError, match="needs input"):
        plugin({"image": []})


def test_lidar_plugin_attaches_to_the_environment(tmp_path):
    from perception.registry import make_plugin
    from perception.wrappers import PerceptionObservation
    from sim.config import LidarConfig, SimulatorConfig

    ckpt = _random_checkpoint(tmp_path / "rand.pt", SensorConfig(22.5, -22.5, 16, 64, [2, 0, 0, 0, 0.4], [1.4, 1.7, 1.7, .5, .15]))
    plugin = make_plugin("lidar_seg", checkpoint=str(ckpt), device="cpu")
    from sim.backends.embedded import EmbeddedSimulator

    sim = EmbeddedSimulator(SimulatorConfig(scene="house:1", sensors={}, lidar=LidarConfig(enabled=True, beams=16, columns=64)))
    env = PerceptionObservation(_LidarEnv(sim), [plugin])
    obs, _ = env.reset(seed=0)
    labels = obs["lidar_seg/labels"]
    assert labels.shape == (16, 64) and labels.dtype == np.int32
    assert env.observation_space["lidar_seg/labels"].contains(labels)
    valid = obs["lidar"][..., 3] > 0
    assert (labels[~valid] == 0).all() and valid.any()
    assert set(np.unique(labels[valid])) <= set(range(1, 14)) | {0}
    with pytest.raises(ConfigError, match=r"needs the observation\(s\) \['lidar'\]: enable the LiDAR"):
        PerceptionObservation(_LidarEnv(sim, lidar=False), [plugin])


class _LidarEnv:
    """A minimal Gymnasium env around the embedded simulator's LiDAR (the wrapper's contract only)."""

    def __new__(cls, sim, lidar=True):
        import gymnasium as gym
        from gymnasium import spaces

        class Env(gym.Env):
            def __init__(self):
                entries = {"lidar": sim.observation_space["lidar"]} if lidar else {"x": spaces.Discrete(2)}
                self.observation_space = spaces.Dict(entries)
                self.action_space = spaces.Discrete(1)

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                return {"lidar": sim.reset()["lidar"]}, {}

            def step(self, action):
                return {"lidar": sim.step(1)["lidar"]}, 0.0, False, False, {}

        return Env()


def test_shipped_lidar_model_segments_unseen_houses():
    """The committed checkpoint on houses generated now, never seen in training."""
    from perception.lidar.plugin import default_checkpoint
    from perception.lidar.segmenter import LidarSegmenter

    if not default_checkpoint().is_file():
        pytest.skip("no shipped LiDAR checkpoint")
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import LidarConfig, SimulatorConfig

    seg = LidarSegmenter.from_checkpoint(default_checkpoint(), "cpu")
    s = seg.sensor
    ev = IoUEvaluator(seg.labels.num_classes, seg.labels.ignore)
    for house in (90001, 90002):
        sim = EmbeddedSimulator(SimulatorConfig(scene=f"house:{house}", sensors={}, lidar=LidarConfig(
            enabled=True, beams=s.height, columns=s.width, fov_up_deg=s.fov_up_deg, fov_down_deg=s.fov_down_deg)))
        rng = np.random.default_rng(house)
        for _ in range(4):
            pts = sim.get_lidar_scan(sim.navgrid.sample_navigable_point(rng), float(rng.uniform(-3, 3))).points()
            cloud = np.concatenate([pts["xyz"], pts["intensity"][:, None]], axis=1)
            ev.add(seg.predict(cloud), seg.labels.map_labels(pts["label"]))
    _, iou = ev.iou()
    names = seg.labels.names
    assert iou[names.index("wall")] > 0.8 and iou[names.index("floor")] > 0.8
    present = ev.present()
    # 0.717 mIoU on the 200-scan test split and 0.704 here when shipped; the previous model (0.687
    # on the test split, 0.65 here) and the 5-epoch one (0.52 on the test split) must fail this
    assert iou[present & (np.arange(len(iou)) > 0)].mean() > 0.67


def test_cli_lists_plugins_and_draws_a_scan(tmp_path, capsys, tiny_lidar):
    from vlnce.cli.main import main

    assert main(["plugins"]) == 0
    assert "lidar_seg" in capsys.readouterr().out
    ckpt = _random_checkpoint(tmp_path / "rand.pt", load_label_config(tiny_lidar / "dataset.yaml").sensor)
    scan = scan_files(tiny_lidar, ["02"])[0][0]
    assert main(["lidar", "show", str(scan), "--checkpoint", str(ckpt), "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert main(["lidar", "predict", str(scan), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred")]) == 0
    assert read_labels(tmp_path / "pred" / (scan.stem + ".label"), len(read_scan(scan))).size > 0
    assert main(["lidar", "eval", "--checkpoint", str(ckpt), "--data", str(tiny_lidar), "--split", "test", "--knn",
                 "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert main(["lidar", "show", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "x.png")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_eval_runs_plugins_on_every_observation(bench, tmp_path):
    from agents.evaluation import EvalConfig, evaluate

    data_dir, _ = bench
    ckpt = _random_checkpoint(tmp_path / "rand.pt", SensorConfig(22.5, -22.5, 8, 32, [2, 0, 0, 0, 0.4], [1.4, 1.7, 1.7, .5, .15]))
    cfg = EvalConfig(agent="handcrafted", dataset=str(data_dir), episodes=1, maps=False, max_steps=5,
                     plugins=["lidar_seg"], plugin_options={"lidar_seg": {"checkpoint": str(ckpt)}})
    res = evaluate(cfg, tmp_path / "ev", progress=False)
    rec = [__import__("json").loads(line) for line in (tmp_path / "ev" / "episodes.jsonl").read_text().splitlines()][0]
    assert rec["perception"]["frames"] == rec["steps"] + 1  # the reset observation and one per action
    assert 0.0 <= rec["perception"]["lidar_seg/miou"] <= 1.0
    assert res["perception"]["frames"] == rec["perception"]["frames"]
