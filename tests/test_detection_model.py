"""The Faster R-CNN as a whole: shapes, output conventions, learning, checkpoints."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from perception.detection.checkpoint import load_detector, save_detector  # noqa: E402
from perception.detection.faster_rcnn import build_faster_rcnn  # noqa: E402
from perception.detection.roi_heads import RoIHeadsConfig  # noqa: E402
from vlnce.errors import CheckpointError  # noqa: E402

CLASSES = ("red", "blue")


def _small(seed=0):
    torch.manual_seed(seed)
    return build_faster_rcnn(CLASSES, "resnet26", 0.25, roi=RoIHeadsConfig(representation=64, reduce_channels=16,
                                                                           batch_size=32))


def _scene():
    """A grey 96 x 128 image with a red and a blue rectangle, and their boxes."""
    img = torch.full((3, 96, 128), 0.5)
    img[:, 20:60, 10:50] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, 40:90, 70:120] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    target = {"boxes": torch.tensor([[10.0, 20, 50, 60], [70.0, 40, 120, 90]]), "labels": torch.tensor([1, 2])}
    return img, target


def test_training_outputs_and_prediction_conventions():
    model = _small()
    img, target = _scene()
    model.train()
    out = model.forward_labelled([img, img[:, :80, :100]], [target, {"boxes": torch.zeros(0, 4),
                                                                      "labels": torch.zeros(0, dtype=torch.int64)}])
    assert set(out.losses) == {"rpn_objectness", "rpn_box", "roi_cls", "roi_box"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    assert out.features.shape == (2, model.feature_channels, 6, 8)  # padded to 96 x 128, stride 16
    assert [r.shape[1] for r in out.roi_logits] == [3, 3]
    assert out.local_features.shape == (2, model.backbone.local_channels, 24, 32)  # stride 4
    unl = model.forward_unlabelled([img], max_rois=20)
    assert unl.losses == {} and unl.features.shape[0] == 1 and unl.roi_logits[0].shape == (20, 3)
    assert unl.local_features.shape == (1, model.backbone.local_channels, 24, 32)
    model.eval()
    dets = model.predict([img, img[:, :50, :60]])
    for d, (h, w) in zip(dets, [(96, 128), (50, 60)]):
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["scores"]) == len(d["labels"])
        assert (d["boxes"][:, 0] >= 0).all() and (d["boxes"][:, 2] <= w).all() and (d["boxes"][:, 3] <= h).all()
        assert ((d["labels"] >= 1) & (d["labels"] <= 2)).all()
        assert (d["scores"] > model.cfg.roi.score_threshold).all()
    with pytest.raises(ValueError, match="float"):
        model.predict([torch.zeros(3, 10, 10, dtype=torch.uint8)])


def test_a_short_training_run_lowers_the_loss_and_finds_the_objects():
    model = _small(1)
    img, target = _scene()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    model.train()
    for _ in range(60):
        loss = sum(model.forward_labelled([img], [target]).losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    model.eval()
    d = model.predict([img])[0]
    from perception.detection.boxes import box_iou

    for k in (1, 2):  # the best box of each class lands on its object
        sel = d["labels"] == k
        assert sel.any()
        best = d["boxes"][sel][d["scores"][sel].argmax()]
        assert box_iou(best[None], target["boxes"][k - 1][None]).item() > 0.5


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    model = _small().eval()
    img, _ = _scene()
    path = save_detector(tmp_path / "d.pt", model, {"note": "x"})
    again, blob = load_detector(path)
    assert blob["note"] == "x" and again.cfg == model.cfg
    a, b = model.predict([img])[0], again.predict([img])[0]
    assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])
    half, _ = load_detector(save_detector(tmp_path / "h.pt", model, half=True))
    assert half.cfg.classes == CLASSES
    with pytest.raises(CheckpointError, match="detects"):
        load_detector(path, classes=("cat",))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_detector(tmp_path / "bad.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a detector checkpoint"):
        load_detector(tmp_path / "other.pt")
    nan = _small()
    with torch.no_grad():
        nan.roi_heads.cls_score.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        save_detector(path, nan)
    assert load_detector(path)[1]["note"] == "x"  # the good file is still there
