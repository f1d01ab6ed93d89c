"""Dataset readers: layouts, naming rules, relabelling and clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from perception.reid.datasets import load_image, read_cub200, read_cuhk03_np, read_market1501, read_msmt17
from vlnce.errors import DatasetError


def _jpg(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), colour).save(path)


def _market(root):
    for name in ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000001_01.jpg",
                 "0007_c1s2_000001_01.jpg"]:
        _jpg(root / "bounding_box_train" / name)
    for name in ["0000_c1s1_000001_01.jpg", "-1_c1s1_000001_01.jpg", "0003_c2s1_000001_01.jpg",
                 "0003_c6s1_000001_01.jpg"]:
        _jpg(root / "bounding_box_test" / name)
    _jpg(root / "query" / "0003_c1s1_000002_01.jpg")


def test_market1501_layout(tmp_path):
    root = tmp_path / "market1501" / "Market-1501-v15.09.15"
    _market(root)
    data = read_market1501(tmp_path)
    assert [(it.pid, it.camid, it.label) for it in data.train] == [(2, 0, 0), (2, 1, 0), (7, 0, 1), (7, 2, 1)]
    # junk (-1) dropped, distractor (0) kept, cameras 0-based
    assert sorted((it.pid, it.camid) for it in data.gallery) == [(0, 0), (3, 1), (3, 5)]
    assert data.summary()["query"] == {"images": 1, "ids": 1, "cameras": 1}
    assert data.num_train_ids == 2


def test_bad_names_and_layouts(tmp_path):
    _market(tmp_path)
    _jpg(tmp_path / "query" / "person3_camera1.jpg")
    with pytest.raises(DatasetError, match="person3_camera1.jpg: file name does not follow"):
        read_market1501(tmp_path)
    with pytest.raises(DatasetError, match="does not hold bounding_box_train"):
        read_market1501(tmp_path / "nowhere")


def test_cuhk03_and_msmt17(tmp_path):
    _market(tmp_path / "cuhk03-np" / "detected")
    assert len(read_cuhk03_np(tmp_path, "detected").train) == 4
    with pytest.raises(DatasetError, match="labeled' or 'detected"):
        read_cuhk03_np(tmp_path, "raw")
    base = tmp_path / "MSMT17_V2"
    (base / "train").mkdir(parents=True)
    (base / "test").mkdir()
    (base / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n"
                                         "0001/0001_003_15_0303noon_0001_1.jpg 1\n")
    (base / "list_val.txt").write_text("0001/0001_004_02_0303noon_0002_1.jpg 1\n")
    (base / "list_query.txt").write_text("0005/0005_000_07_0113morning_0001_0.jpg 5\n")
    (base / "list_gallery.txt").write_text("0005/0005_001_08_0113morning_0002_0.jpg 5\n")
    data = read_msmt17(tmp_path)
    assert [(it.pid, it.camid, it.label) for it in data.train] == [(0, 0, 0), (1, 14, 1), (1, 1, 1)]
    assert data.query[0].path == base / "test" / "0005/0005_000_07_0113morning_0001_0.jpg"
    (base / "list_query.txt").write_text("0005/0005_000_07_0113morning_0001_0.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1: expected 'relative/path.jpg PID'"):
        read_msmt17(tmp_path)


def test_cub200(tmp_path):
    base = tmp_path / "CUB_200_2011"
    base.mkdir()
    (base / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n"
                                     "3 002.Laysan_Albatross/c.jpg\n")
    (base / "image_class_labels.txt").write_text("1 1\n2 2\n3 2\n")
    (base / "train_test_split.txt").write_text("1 1\n2 1\n3 0\n")
    data = read_cub200(tmp_path)
    assert [it.label for it in data.train] == [0, 1] and [it.label for it in data.test] == [1]
    (base / "train_test_split.txt").write_text("1 1\n2 1\n")
    with pytest.raises(DatasetError, match="image 3"):
        read_cub200(tmp_path)


def test_load_image_errors(tmp_path):
    good = tmp_path / "0001_c1s1_0_00.jpg"
    _jpg(good, (10, 20, 30))
    img = load_image(good, size=(32, 16))
    assert img.shape == (32, 16, 3) and img.dtype == np.uint8
    truncated = tmp_path / "trunc.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "big.jpg")
    truncated.write_bytes((tmp_path / "big.jpg").read_bytes()[:300])
    with pytest.raises(DatasetError, match="trunc.jpg"):
        load_image(truncated)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(DatasetError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_make_data_writes_a_market_layout(tmp_path):
    from perception.reid.datasets import read_market1501
    from perception.reid.evaluation import evaluate_rank
    from vlnce.cli.main import main

    out = tmp_path / "reid"
    assert main(["reid", "make-data", "--out", str(out), "--identities", "6", "--cameras", "3",
                 "--cameras-per-identity", "2", "--shots-per-camera", "2", "--height", "64", "--width", "32"]) == 0
    data = read_market1501(out)
    train_ids = {it.pid for it in data.train}
    test_ids = {it.pid for it in data.gallery}
    assert train_ids == {1, 2, 3} and {it.pid for it in data.query} <= test_ids <= {4, 5, 6}
    assert not train_ids & test_ids
    img = load_image(data.query[0].path)
    assert img.shape == (64, 32, 3) and img.std() > 5  # not a blank frame
    # Every query has its identity in the gallery under another camera: nothing is skipped.
    q = data.query
    g = data.gallery
    dist = np.random.default_rng(0).random((len(q), len(g)))
    m = evaluate_rank(dist, [i.pid for i in q], [i.pid for i in g], [i.camid for i in q], [i.camid for i in g])
    assert m.num_skipped == 0
    # The same command renders the same images.
    again = tmp_path / "again"
    main(["reid", "make-data", "--out", str(again), "--identities", "6", "--cameras", "3",
          "--cameras-per-identity", "2", "--shots-per-camera", "2", "--height", "64", "--width", "32"])
    first = sorted(p.name for p in (out / "query").iterdir())
    assert first == sorted(p.name for p in (again / "query").iterdir())
    assert (out / "query" / first[0]).read_bytes() == (again / "query" / first[0]).read_bytes()


def test_make_data_writes_gasm_teacher_maps(tmp_path):
    from perception.reid.datasets import read_market1501
    from perception.reid.gasm import JOINTS
    from perception.reid.simdata import read_teacher_maps
    from vlnce.cli.main import main
    from vlnce.errors import ConfigError

    out = tmp_path / "reid"
    assert main(["reid", "make-data", "--out", str(out), "--identities", "4", "--cameras", "2",
                 "--cameras-per-identity", "2", "--shots-per-camera", "2", "--height", "64", "--width", "32"]) == 0
    items = read_market1501(out).train
    names = [it.path.name for it in items]
    for it in items[:4]:
        with np.load(out / "teacher" / f"{it.path.stem}.npz", allow_pickle=False) as z:
            mask, joints = z["mask"], z["joints"]
        img = load_image(it.path).astype(float)
        assert mask.shape == (64, 32) and joints.shape == (len(JOINTS), 3)
        assert 0.05 < mask.mean() < 0.9  # a person, not the whole frame
        seen = joints[:, 2] > 0
        assert seen.sum() >= 6
        # The crop is aimed at the person: joints land on the person's own pixels, the head
        # above the ankles.
        cols, rows = joints[seen, 0].astype(int), joints[seen, 1].astype(int)
        near = [mask[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].any() for r, c in zip(rows, cols)]
        assert np.mean(near) >= 0.8
        if joints[0, 2] and joints[11, 2]:
            assert joints[0, 1] < joints[11, 1]
        assert img.std() > 5
    maps = read_teacher_maps(out, names, (32, 16))  # read at half size
    assert maps.shape == (len(names), 14, 32, 16) and maps.dtype == np.uint8
    assert maps[:, 0].max() == 255 and maps[:, 1:].max() > 200
    (out / "teacher" / f"{items[0].path.stem}.npz").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="unreadable teacher map"):
        read_teacher_maps(out, names[:1], (32, 16))
    with pytest.raises(ConfigError, match="no teacher/ folder"):
        read_teacher_maps(tmp_path, names[:1], (32, 16))


def test_joint_heatmaps_peak_at_the_joint_and_skip_hidden_ones():
    from perception.reid.simdata import joint_heatmaps

    joints = np.zeros((13, 3), np.float32)
    joints[0] = (4.5, 2.5, 1)  # the centre of pixel (row 2, column 4)
    joints[1] = (1.0, 1.0, 0)  # hidden
    joints[2] = (9.0, 5.0, 1)  # stored at twice the output size
    maps = joint_heatmaps(joints, (8, 8), scale=(0.5, 0.5), sigma=0.1)
    assert np.unravel_index(maps[0].argmax(), (8, 8)) == (1, 2)  # (2.5, 4.5) * 0.5 -> pixel (1, 2)
    assert maps[1].max() == 0.0
    assert np.unravel_index(maps[2].argmax(), (8, 8)) == (2, 4)
    # Gaussian: one sigma (0.8 px) away the value is exp(-1/2) of the peak.
    g = joint_heatmaps(np.array([[0.5, 0.5, 1]] + [[0, 0, 0]] * 12, np.float32), (10, 10), sigma=0.08)
    assert g[0, 0, 0] == pytest.approx(1.0) and g[0, 0, 1] == pytest.approx(np.exp(-1 / (2 * 0.8 ** 2)), rel=1e-5)
