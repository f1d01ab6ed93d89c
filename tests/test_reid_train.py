"""Re-ID training, model files, evaluation command, the ranked-gallery picture, the gallery and the
``reid`` plugin's identities across frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perception.reid.embedder import ModelSpec, ReidEmbedder, images_to_tensor, read_reid_checkpoint, save_reid_model
from perception.reid.gallery import IdentityGallery
from vlnce.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from vlnce.cli.main import main

    out = tmp_path_factory.mktemp("reid") / "sim"
    assert main(["reid", "make-data", "--out", str(out), "--identities", "8", "--cameras", "3",
                 "--cameras-per-identity", "2", "--shots-per-camera", "2", "--height", "64", "--width", "32"]) == 0
    return out


def _cfg(**kw):
    from perception.reid.train import ReidTrainConfig

    base = dict(recipe="baseline", backbone="resnet26", width=0.125, height=64, width_px=32, epochs=2, p=2, k=2,
                eval_every=1, threads=1, lr=1e-3)
    return ReidTrainConfig(**{**base, **kw})


def test_train_resume_and_eval(tiny_set, tmp_path):
    from perception.reid.train import ReidTrainer
    from vlnce.cli.main import main
    from vlnce.tblog import read_history

    out = tmp_path / "run"
    summary = ReidTrainer(tiny_set, out, _cfg(epochs=1)).train(progress=False)
    assert summary["epochs"] == 1 and summary["train_ids"] == 4
    first = read_reid_checkpoint(out / "last.pt")
    assert first["epoch"] == 1 and "optimizer" in first
    # A rerun with more epochs continues from last.pt instead of starting over.
    summary = ReidTrainer(tiny_set, out, _cfg(epochs=2)).train(progress=False)
    assert summary["epochs"] == 2 and summary["steps"] > first["step"]
    rows = [r for r in read_history(out / "logs") if "eval/mAP" in r]
    assert len(rows) == 2 and all(0.0 <= r["eval/mAP"] <= 1.0 for r in rows)
    assert (out / "curves.png").is_file() and (out / "best.pt").is_file()
    # A different model in the same folder is refused with a clear message.
    with pytest.raises(ConfigError, match="different model"):
        ReidTrainer(tiny_set, out, _cfg(width=0.25))
    # The eval command scores the checkpoint and draws the ranked gallery.
    assert main(["reid", "eval", "--checkpoint", str(out / "best.pt"), "--data", str(tiny_set), "--device", "cpu",
                 "--out", str(tmp_path / "ev"), "--queries", "2"]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["num_valid"] + res["num_skipped"] == res["queries"] and 0.0 <= res["mAP"] <= 1.0
    import imageio.v3 as iio

    img = iio.imread(tmp_path / "ev" / "ranked_gallery.png")
    assert img.ndim == 3 and img.shape[0] > 2 * 64 and img.shape[1] > 11 * 32


def test_pseudo_label_training_clusters(tiny_set, tmp_path):
    from perception.reid.train import ReidTrainer

    trainer = ReidTrainer(tiny_set, tmp_path / "adtc", _cfg(recipe="adtc", pseudo_labels=True, epochs=1))
    stats = trainer.relabel_by_clustering()
    assert 0.0 <= stats["cluster/nmi"] <= 1.0 and 0.0 < stats["cluster/kept"] <= 1.0
    assert trainer.labels.shape == (len(trainer.data.train),) and int(trainer.labels.max()) < 4
    trainer.train(progress=False)
    assert "pseudo_labels" in read_reid_checkpoint(tmp_path / "adtc" / "last.pt")


def test_model_file_round_trip_and_errors(tmp_path):
    from perception.reid.registry import build_model

    spec = ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32))
    model = build_model("baseline", 3, "resnet26", 0.125).eval()
    save_reid_model(tmp_path / "m.pt", model, spec)
    emb = ReidEmbedder.from_checkpoint(tmp_path / "m.pt", "cpu")
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(x), dim=1).numpy()
    np.testing.assert_allclose(emb.embed_tensor(x), ref, rtol=1e-5, atol=1e-6)
    # crops of any size are resized to the model's input
    crops = [np.zeros((100, 40, 3), np.uint8), np.full((20, 10, 3), 200, np.uint8)]
    assert emb.embed(crops).shape == (2, 256)
    assert images_to_tensor(crops, (64, 32)).shape == (2, 3, 64, 32)
    with pytest.raises(ValueError, match=r"crop 1: expected a non-empty \(H, W, 3\) uint8"):
        images_to_tensor([crops[0], np.zeros((5, 5), np.uint8)], (64, 32))
    with pytest.raises(ValueError, match=r"expected images of \(64, 32\)"):
        emb.embed_tensor(torch.rand(1, 3, 32, 32))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        ReidEmbedder.from_checkpoint(tmp_path / "bad.pt")


def test_gallery_keeps_identities_across_frames():
    e = np.eye(4)
    g = IdentityGallery(threshold=0.3, momentum=0.5)
    ids, _ = g.assign(e[:2])
    assert ids.tolist() == [1, 2]
    # the same two people, swapped in the frame and a little changed, keep their identities
    ids, d = g.assign(np.array([[0.1, 1.0, 0, 0], [1.0, 0.1, 0, 0]]))
    assert ids.tolist() == [2, 1] and np.allclose(d, 1 - 1 / np.sqrt(1.01))
    # a newcomer gets a new identity; two similar boxes in one frame never share one
    # (prototype 1 is now the mean direction of (1, 0) and (1, 0.1), about (0.9988, 0.0498), so the
    # second box, at (0.9987, 0.0504), is the closer one and takes identity 1)
    ids, _ = g.assign(np.array([[1.0, 0, 0, 0], [0.99, 0.05, 0, 0], [0, 0, 1.0, 0]]))
    assert ids.tolist() == [3, 1, 4]
    # prototypes are unit-norm running means
    assert all(np.isclose(np.linalg.norm(x.prototype), 1.0) for x in g.entries)
    with pytest.raises(ValueError, match="dimension 3 but the gallery holds 4-d"):
        g.assign(np.ones((1, 3)))
    old = IdentityGallery(max_age=1)
    old.assign(e[:1])
    old.assign(np.zeros((0, 4)))
    old.assign(np.zeros((0, 4)))
    assert old.entries == []
    full = IdentityGallery(max_identities=2)
    for row in e[:3]:
        full.assign(row[None])
    assert [x.identity for x in full.entries] == [2, 3]


def test_crop_and_person_boxes():
    from perception.reid.plugin import crop_boxes
    from perception.wrappers import person_boxes
    from sim.scenes.semantics import PERSON

    img = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)
    crops, keep = crop_boxes(img, np.array([[2, 3, 8, 15], [-5, -5, 50, 50], [1, 1, 3, 3]], np.float32))
    assert keep.tolist() == [True, True, False]
    assert crops[0].shape == (12, 6, 3) and np.array_equal(crops[0], img[3:15, 2:8])
    assert crops[1].shape == (20, 10, 3)
    with pytest.raises(ValueError, match=r"boxes must be \(M, 4\)"):
        crop_boxes(img, np.zeros((2, 3)))
    inst = np.zeros((10, 8), np.int32)
    inst[2:8, 1:3] = 5  # a person, 12 pixels
    inst[0:10, 4:8] = 9  # a person, 40 pixels
    inst[0:2, 0:2] = 7  # furniture
    sem = np.zeros((5, 4), np.int32)
    sem[:, :] = PERSON
    sem[0, 0] = 3
    boxes = person_boxes(inst, sem, out_shape=(20, 16), min_pixels=10)
    np.testing.assert_allclose(boxes, [[8, 0, 16, 20], [2, 4, 6, 16]])  # largest first, scaled x2


def _rendered_people(n_people=3, frames=4, seed=5):
    """Rendered crops of a few simulated people, seen by different cameras in each frame."""
    from perception.reid.simdata import ReidDataConfig, _CameraView, sample_identity

    cfg = ReidDataConfig(identities=2, cameras=frames, first_house=70000, seed=seed)
    rng = np.random.default_rng(seed)
    views = [_CameraView(c, cfg, rng) for c in range(frames)]
    people = [sample_identity(1000 + i, seed) for i in range(n_people)]
    out = []
    for view in views:
        crops = []
        for who in people:
            shot = None
            while shot is None:
                shot = view.shoot(who, rng, (128, 64))
            crops.append(shot[0])
        out.append(crops)
    return out


def test_reid_plugin_tracks_people_across_frames():
    from perception.reid.plugin import ReidPlugin, default_checkpoint

    if not default_checkpoint().is_file():
        pytest.fail("the shipped re-ID model is missing from configs/perception")
    plugin = ReidPlugin(device="cpu")
    frames = _rendered_people()
    seen = []
    for crops in frames:
        # the people side by side in one image, in a different order each frame
        order = np.random.default_rng(len(seen)).permutation(len(crops))
        image = np.concatenate([crops[i] for i in order], axis=1)
        boxes = np.array([[64 * k, 0, 64 * (k + 1), 128] for k in range(len(crops))], np.float32)
        out = plugin({"image": [image], "boxes": [boxes]})
        ids = np.empty(len(crops), np.int64)
        ids[order] = out["identities"][0]
        assert out["embeddings"][0].shape == (len(crops), plugin.embedding_dim)
        seen.append(ids)
    seen = np.array(seen)
    # the people are told apart; no one ever takes another person's identity; and at the
    # threshold's 8 % miss rate per cross-camera pair most later sightings keep the first identity
    assert len(set(seen[0].tolist())) == len(frames[0])
    for person in range(len(frames[0])):
        others = set(seen[0].tolist()) - {seen[0, person]}
        assert not others & set(seen[:, person].tolist()), seen
    assert (seen[1:] == seen[0]).mean() >= 2 / 3, seen
    plugin.reset()
    assert plugin.gallery.entries == []


def test_embed_export_and_bench_commands(tiny_set, tmp_path, capsys):
    from perception.reid.registry import build_model
    from vlnce.cli.main import main

    spec = ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32))
    save_reid_model(tmp_path / "m.pt", build_model("baseline", 3, "resnet26", 0.125), spec, {"epoch": 3})
    assert main(["reid", "export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "small.pt")]) == 0
    blob = read_reid_checkpoint(tmp_path / "small.pt")
    assert blob["meta"]["epoch"] == 3 and "optimizer" not in blob
    assert all(v.dtype == torch.float16 for k, v in blob["state_dict"].items() if v.is_floating_point())
    assert main(["reid", "embed", str(tiny_set / "query"), "--checkpoint", str(tmp_path / "small.pt"),
                 "--out", str(tmp_path / "q.npz"), "--device", "cpu"]) == 0
    npz = np.load(tmp_path / "q.npz")
    assert npz["embeddings"].shape == (len(list((tiny_set / "query").iterdir())), 256)
    np.testing.assert_allclose(np.linalg.norm(npz["embeddings"], axis=1), 1.0, rtol=1e-4)
    capsys.readouterr()
    assert main(["reid", "bench", "--json", "--recipes", "baseline,rmg", "--backbone", "resnet26", "--width", "0.125",
                 "--height", "64", "--input-width", "32", "--batch", "2", "--cpu-iters", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["recipe"]: r for r in res["results"] if r["device"] == "cpu"}
    assert rows["baseline"]["ratio_to_baseline"] == 1.0 and rows["rmg"]["fp32_images_per_s"] > 0
    assert rows["rmg"]["embedding_dim"] == 14 * 256


def test_gasm_trains_on_teacher_maps_moved_with_the_image(tiny_set, tmp_path):
    from perception.reid.gasm import FLIP_JOINTS
    from perception.reid.train import ReidTrainer
    from perception.reid.transforms import RSA

    trainer = ReidTrainer(tiny_set, tmp_path / "gasm", _cfg(recipe="gasm", augment="flip", epochs=1))
    assert trainer.teacher is not None and trainer.teacher.shape[1:] == (14, 64, 32)
    # Flipping mirrors the mask and swaps left and right joints: with flip forced both ways, the
    # flipped targets are the mirrored, joint-permuted unflipped ones.
    seen = {}
    for seed in range(12):
        x, t = trainer._augment([0], np.random.default_rng(seed))
        seen[bool(torch.equal(x[0], trainer.train_images[0].float() / 255))] = (x, t)
    (x0, t0), (x1, t1) = seen[True], seen[False]
    torch.testing.assert_close(x1, x0.flip(-1))
    torch.testing.assert_close(t1["mask"], t0["mask"].flip(-1))
    torch.testing.assert_close(t1["pose"], t0["pose"].flip(-1)[:, list(FLIP_JOINTS)])
    assert t0["mask"].max() == 1.0 and t0["pose"].shape == (1, 13, 64, 32)
    # The teacher terms enter the loss, and RSA fills the shifted-out area of the maps with 0.
    trainer.rsa = RSA(p_c=0.0)
    _, t = trainer._augment(list(range(4)), np.random.default_rng(3))
    assert float(t["mask"].mean()) < float(trainer.teacher[:4, 0].float().mean() / 255)
    idx = [i for c in (0, 1) for i in (trainer.labels == c).nonzero().flatten()[:2].tolist()]
    x, t = trainer._augment(idx, np.random.default_rng(0))
    y = trainer.labels[idx]
    trainer.model.train()
    _, parts = trainer.recipe.loss(trainer.model(x, y), y, t)
    assert parts["mask"] > 0 and parts["pose"] > 0
    trainer.train(progress=False)
