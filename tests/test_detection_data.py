"""Detection data: COCO and VOC readers and their bad-input handling, fog synthesis, boxes from
instance masks, the rendered two-domain set, the trainer (adaptive losses, resume, NaN) and the
plugin attached to an environment and chained into re-ID."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from perception.detection.data import DetectionDataset, read_coco, read_voc
from perception.detection.simdata import boxes_from_instances, synthesize_fog
from vlnce.errors import DatasetError


def _coco(tmp_path, annotations, categories=None, size=(40, 60)):
    from PIL import Image

    (tmp_path / "im.png").parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[0], size[1], 3), np.uint8)).save(tmp_path / "im.png")
    doc = {"images": [{"id": 1, "file_name": "im.png", "height": size[0], "width": size[1]}],
           "annotations": annotations,
           "categories": categories or [{"id": 3, "name": "chair"}, {"id": 7, "name": "person"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_reader_boxes_labels_and_class_selection(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 6, 10, 20]},
                            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 1}])
    recs, names = read_coco(path)
    assert names == ("chair", "person")  # ordered by category id
    assert recs[0]["boxes"].tolist() == [[5, 6, 15, 26], [0, 0, 4, 4]]
    assert recs[0]["labels"].tolist() == [2, 1] and recs[0]["ignore"].tolist() == [False, True]
    recs, names = read_coco(path, classes=["person"])
    assert names == ("person",) and recs[0]["labels"].tolist() == [1]
    with pytest.raises(DatasetError, match=r"\['sofa'\] are not among"):
        read_coco(path, classes=["sofa"])


def test_coco_reader_bad_boxes_are_dropped_or_clipped_with_a_warning(tmp_path, caplog):
    path = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 0, 10]},     # zero width
                            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [5, 5, -3, 10]},    # negative
                            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [100, 5, 10, 10]},  # outside
                            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [50, 30, 20, 20]},  # partly out
                            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]}])
    with caplog.at_level(logging.WARNING):
        recs, _ = read_coco(path)
    assert recs[0]["boxes"].tolist() == [[50, 30, 60, 40], [1, 1, 3, 3]]
    text = caplog.text
    assert "2 zero-area or negative boxes dropped" in text and "annotation 1 of im.png" in text
    assert "1 boxes outside the image dropped" in text and "1 boxes partly outside the image clipped" in text


def test_coco_reader_refuses_unknown_categories_and_bad_files(tmp_path):
    path = _coco(tmp_path, [{"id": 9, "image_id": 1, "category_id": 42, "bbox": [1, 1, 2, 2]}])
    with pytest.raises(DatasetError, match="annotation 9 has category_id 42"):
        read_coco(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read COCO"):
        read_coco(tmp_path / "broken.json")
    good = _coco(tmp_path, [])
    (tmp_path / "im.png").write_bytes(b"garbage")
    recs, _ = read_coco(good)
    with pytest.raises(DatasetError, match="could not be decoded"):
        DetectionDataset(recs)[0]


def test_voc_reader(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (tmp_path / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
        "<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax>"
        "<ymax>20</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>chair</name><difficult>0</difficult><bndbox><xmin>30</xmin><ymin>10</ymin><xmax>30</xmax>"
        "<ymax>20</ymax></bndbox></object></annotation>")
    recs = read_voc(tmp_path, "test", ["chair", "person"])
    # 1-based inclusive pixels -> continuous: xmin 1..xmax 10 covers [0, 10); the 1-pixel-wide
    # chair (xmin = xmax = 30) becomes [29, 30)
    assert recs[0]["boxes"].tolist() == [[0, 1, 10, 20], [29, 9, 30, 20]]
    assert recs[0]["labels"].tolist() == [2, 1] and recs[0]["ignore"].tolist() == [True, False]
    with pytest.raises(DatasetError, match="Pascal VOC layout"):
        read_voc(tmp_path, "train", ["chair"])


def test_dataset_resize_and_flip_move_the_boxes(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 4, 20, 8]}])
    recs, _ = read_coco(path)
    x, t = DetectionDataset(recs, min_size=80)[0]  # 40 x 60 -> 80 x 120
    assert x.shape == (3, 80, 120) and t["boxes"].tolist() == [[20, 8, 60, 24]]
    ds = DetectionDataset(recs, flip=True, seed=0)
    flipped = [ds[0][1]["boxes"].tolist() for _ in range(10)]
    assert [[30, 4, 50, 12]] in flipped and [[10, 4, 30, 12]] in flipped  # mirrored about x = 30


def test_fog_follows_koschmieder():
    rgb = np.full((2, 2, 3), 200, np.uint8)
    depth = np.array([[0.0, 1.0], [5.0, 1e6]], np.float32)
    out = synthesize_fog(rgb, depth, beta=0.2, airlight=0.9)
    j = 200 / 255
    assert out[0, 0, 0] == pytest.approx(j)  # no distance, no fog
    t = np.exp(-0.2 * 5.0)
    assert out[1, 0, 1] == pytest.approx(j * t + 0.9 * (1 - t), rel=1e-6)
    assert out[1, 1, 2] == pytest.approx(0.9)  # infinitely far: the airlight
    gap = np.abs(np.array([out[0, 0, 0], out[0, 1, 0], out[1, 0, 0], out[1, 1, 0]]) - 0.9)
    assert (np.diff(gap) < 0).all()  # the further, the closer to the airlight


def test_boxes_from_instances():
    from sim.scenes.semantics import CATEGORY_INDEX

    inst = np.zeros((10, 12), np.int32)
    sem = np.zeros((10, 12), np.int32)
    inst[2:5, 3:8], sem[2:5, 3:8] = 4, CATEGORY_INDEX["chair"]  # 15 px chair
    inst[6:9, 0:2], sem[6:9, 0:2] = 5, CATEGORY_INDEX["person"]  # 6 px person
    inst[0:2, 9:12], sem[0:2, 9:12] = 6, CATEGORY_INDEX["wall"]  # not a class
    boxes, labels = boxes_from_instances(sem, inst, ("person", "chair"), min_pixels=5)
    assert boxes.tolist() == [[3, 2, 8, 5], [0, 6, 2, 9]] and labels.tolist() == [2, 1]
    boxes, _ = boxes_from_instances(sem, inst, ("person", "chair"), min_pixels=10)
    assert boxes.tolist() == [[3, 2, 8, 5]]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    from perception.detection.simdata import DetectionDataConfig, make_detection_dataset

    out = tmp_path_factory.mktemp("det")
    cfg = DetectionDataConfig(houses={"source_train": 2, "target_train": 1, "source_test": 0, "target_test": 1},
                              images_per_house=4, width=96, height=72, min_pixels=30)
    make_detection_dataset(out, cfg, progress=False)
    return out


def test_make_data_layout_and_domains(small_set):
    desc = json.loads((small_set / "detection.json").read_text())
    assert desc["images"] == {"source_train": 8, "target_train": 4, "source_test": 0, "target_test": 4}
    houses = desc["houses"]
    assert not set(houses["source_train"]) & set(houses["target_train"])
    recs, names = read_coco(small_set / "target_test.json")
    assert names == tuple(desc["classes"]) and all(len(r["boxes"]) for r in recs)
    # fog lifts dark pixels and flattens contrast: target images are less contrasted than source ones
    from perception.detection.data import load_image

    def contrast(split):
        r, _ = read_coco(small_set / f"{split}.json")
        return np.mean([load_image(x["file"]).astype(float).std() for x in r])

    assert contrast("target_test") < contrast("source_train")


def test_trainer_adaptive_losses_resume_and_nan(small_set, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from perception.detection.train import DetectionTrainer, DetectTrainConfig
    from vlnce.errors import ConfigError, TrainingError

    cfg = DetectTrainConfig(method="mcar", epochs=1, warmup_iters=1, hidden=16, representation=32, save_every=2)
    tr = DetectionTrainer(small_set, tmp_path / "run", cfg)
    src = tr._batch(DetectionDataset(tr.train_records), [0, 1])
    tgt = tr._batch(DetectionDataset(tr.target_records), [0, 1])
    total, parts = tr.loss(src, tgt)
    assert {"adv", "multilabel", "consistency", "disc_acc", "roi_cls"} <= set(parts)
    total.backward()
    # the discriminator learns; the backbone receives the adversarial gradient too
    assert tr.disc.fc.weight.grad.abs().sum() > 0 and tr.multilabel.fc.weight.grad.abs().sum() > 0
    summary = tr.train(progress=False)
    assert summary["epochs"] == 1 and summary["steps"] == 4 and summary["final_eval"]["images"] == 4
    assert (tmp_path / "run" / "final.pt").is_file() and (tmp_path / "run" / "curves.png").is_file()
    # resuming continues from the saved epoch
    cfg2 = DetectTrainConfig(**{**cfg.__dict__, "epochs": 2})
    tr2 = DetectionTrainer(small_set, tmp_path / "run", cfg2)
    assert tr2.epoch == 1 and tr2.step == 4
    assert torch.equal(tr2.model.rpn.head.cls.weight, tr.model.rpn.head.cls.weight)
    with pytest.raises(ConfigError, match="other settings"):
        DetectionTrainer(small_set, tmp_path / "run", DetectTrainConfig(**{**cfg.__dict__, "method": "uadv"}))
    # a run saved before an option existed resumes as if it had that option's default
    from vlnce.torchio import save_blob
    blob = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    del blob["train_config"]["local_weight"]
    save_blob(tmp_path / "run" / "last.pt", blob)
    assert DetectionTrainer(small_set, tmp_path / "run", cfg2).step == 4
    # a NaN loss stops training with a clear message and leaves last.pt as it was
    before = (tmp_path / "run" / "last.pt").read_bytes()
    monkeypatch.setattr(tr2, "loss", lambda s, t: (torch.tensor(float("nan"), requires_grad=True), {}))
    with pytest.raises(TrainingError, match="the loss became nan"):
        tr2.train(progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_trainer_local_alignment(small_set, tmp_path):
    torch = pytest.importorskip("torch")
    from perception.detection.train import DetectionTrainer, DetectTrainConfig
    from vlnce.errors import ConfigError

    with pytest.raises(ConfigError, match="adaptive method"):
        DetectTrainConfig(method="source_only", local_weight=1.0).validate()
    cfg = DetectTrainConfig(method="uadv", epochs=1, warmup_iters=1, hidden=16, representation=32, local_weight=1.0)
    tr = DetectionTrainer(small_set, tmp_path / "loc", cfg)
    src = tr._batch(DetectionDataset(tr.train_records), [0, 1])
    tgt = tr._batch(DetectionDataset(tr.target_records), [0, 1])
    total, parts = tr.loss(src, tgt)
    assert {"adv", "local_adv", "local_disc_acc"} <= set(parts) and 0 < parts["local_adv"] <= 1
    # the local loss alone (no detection or global adversarial loss) reaches the stem and stage 1
    # through its own discriminator, and nothing later in the backbone
    tr.model.zero_grad()
    l_s = tr.local_disc(tr.model.forward_labelled(*src).local_features)
    l_t = tr.local_disc(tr.model.forward_unlabelled(tgt[0]).local_features)
    from perception.detection.adaptation import local_adversarial_loss
    local_adversarial_loss(l_s, l_t).backward()
    for early in (tr.model.backbone.stem, tr.model.backbone.layer1):
        assert sum(float(p.grad.abs().sum()) for p in early.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in tr.model.backbone.layer2.parameters())
    tr.train(progress=False)
    # the local discriminator is saved and resumed with the run
    tr2 = DetectionTrainer(small_set, tmp_path / "loc", DetectTrainConfig(**{**cfg.__dict__, "epochs": 2}))
    assert torch.equal(tr2.local_disc.net[0].weight, tr.local_disc.net[0].weight)
    with pytest.raises(ConfigError, match="local_weight"):
        DetectionTrainer(small_set, tmp_path / "loc", DetectTrainConfig(**{**cfg.__dict__, "local_weight": 0.0}))


def test_trainer_ramped_reversal(small_set, tmp_path):
    pytest.importorskip("torch")
    from perception.detection.train import DetectionTrainer, DetectTrainConfig
    from vlnce.errors import ConfigError

    with pytest.raises(ConfigError, match="grl-schedule"):
        DetectTrainConfig(grl_schedule="linear").validate()
    cfg = DetectTrainConfig(method="mcar", epochs=2, warmup_iters=1, hidden=16, representation=32, local_weight=1.0,
                            grl=0.5, grl_schedule="dann")
    tr = DetectionTrainer(small_set, tmp_path / "ramp", cfg)
    per_epoch = -(-len(tr.train_records) // cfg.batch_size)
    assert tr.total_steps == 2 * per_epoch
    assert tr.grl_at(0) == 0.0 and tr.grl_at(tr.total_steps - 1) == pytest.approx(0.5 * 0.9999092, abs=1e-6)
    src = tr._batch(DetectionDataset(tr.train_records), [0, 1])
    tgt = tr._batch(DetectionDataset(tr.target_records), [0, 1])
    # at the first step the reversal is 0: the adversaries train, the backbone gets none of their gradient
    for m in tr._modules_all():
        m.zero_grad()
    _, parts = tr.loss(src, tgt)
    assert parts["grl"] == 0.0
    tr.model.zero_grad()
    l_s = tr.local_disc(tr.model.forward_labelled(*src).local_features, tr.grl_at(0))
    l_t = tr.local_disc(tr.model.forward_unlabelled(tgt[0]).local_features, tr.grl_at(0))
    from perception.detection.adaptation import local_adversarial_loss
    local_adversarial_loss(l_s, l_t).backward()
    assert all(float(p.grad.abs().sum()) == 0 for p in tr.model.backbone.stem.parameters())
    assert sum(float(p.grad.abs().sum()) for p in tr.local_disc.parameters()) > 0
    import math
    tr.step = tr.total_steps // 2
    # progress runs from 0 at the first step to 1 at the last; DANN's ramp is tanh(5 p)
    assert tr.loss(src, tgt)[1]["grl"] == pytest.approx(0.5 * math.tanh(5 * tr.step / (tr.total_steps - 1)), abs=1e-9)


def test_plugin_in_an_environment_feeds_reid(small_set, tmp_path):
    torch = pytest.importorskip("torch")
    from perception.detection.plugin import DetectionPlugin
    from perception.detection.train import DetectionTrainer, DetectTrainConfig
    from perception.registry import make_plugin

    cfg = DetectTrainConfig(method="oracle", epochs=1, warmup_iters=1, representation=32)
    DetectionTrainer(small_set, tmp_path / "o", cfg).train(progress=False)
    plugin = DetectionPlugin(checkpoint=str(tmp_path / "o" / "final.pt"), score_threshold=0.0)
    img = np.zeros((72, 96, 3), np.uint8)
    out = plugin({"image": [img, img]})
    assert len(out["boxes"]) == 2 and out["boxes"][0].dtype == np.float32 and out["classes"][0].dtype == np.int64
    assert plugin.class_index("person") == 1 and plugin.class_index("cat") == 0
    with pytest.raises(ValueError, match="uint8"):
        plugin({"image": [img.astype(np.float32)]})
    assert type(make_plugin("detection", checkpoint=str(tmp_path / "o" / "final.pt"))) is DetectionPlugin
    # --init: a new run starts from those weights (its own heads fresh) and records where it started
    tuned = DetectionTrainer(small_set, tmp_path / "ft", DetectTrainConfig(method="mc", representation=32),
                             init=tmp_path / "o" / "final.pt")
    for name, value in plugin.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[name], value), name
    assert tuned.init == str(tmp_path / "o" / "final.pt")


def test_detect_commands(small_set, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from vlnce.cli.main import main

    run = tmp_path / "run"
    assert main(["detect", "train", "--data", str(small_set), "--out", str(run), "--method", "source_only",
                 "--epochs", "1", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["method"] == "source_only" and summary["steps"] == 4 and 0.0 <= summary["map50"] <= 1.0
    ckpt = str(run / "final.pt")
    assert main(["detect", "eval", "--checkpoint", ckpt, "--annotations", str(small_set / "target_test.json"),
                 "--out", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["images"] == 4 and set(res["ap50"]) == set(json.loads((small_set / "detection.json").read_text())["classes"])
    assert main(["detect", "show", "--annotations", str(small_set / "target_test.json"), "--checkpoint", ckpt,
                 "--count", "2", "--out", str(tmp_path / "s.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "s.png").size == (2 * 96 + 4, 2 * 72 + 4)  # ground truth | predictions
    image = next((small_set / "images" / "target_test").glob("*.png"))
    assert main(["detect", "predict", str(image), "--checkpoint", ckpt, "--score", "0", "--out",
                 str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text())
    assert all(p["file"] == str(image) and len(p["bbox"]) == 4 for p in preds)
    assert main(["detect", "export", ckpt, "--out", str(tmp_path / "small.pt"), "--command", "vlnce detect train ...",
                 "--eval", str(tmp_path / "r.json")]) == 0
    from perception.detection.checkpoint import load_detector

    small, blob = load_detector(tmp_path / "small.pt")
    assert blob["meta"]["command"] == "vlnce detect train ..." and blob["meta"]["eval"]["images"] == 4
    assert blob["state_dict"]["roi_heads.cls_score.weight"].dtype == torch.float16
    assert "optimizer" not in blob and (tmp_path / "small.pt").stat().st_size < (run / "last.pt").stat().st_size / 2
    capsys.readouterr()
    assert main(["detect", "bench", "--checkpoint", ckpt, "--iters", "1", "--batch-size", "1", "--size", "64", "64",
                 "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    cpu = bench["results"][0]
    assert cpu["device"] == "cpu" and cpu["detector_fp32_images_per_s"] > 0 and 0 < cpu["to_backbone_ratio"] <= 1.5
    # a class list that does not fit the checkpoint is refused with a clear message
    doc = json.loads((small_set / "target_test.json").read_text())
    doc["categories"][0]["name"] = "cat"
    (small_set / "renamed.json").write_text(json.dumps(doc))
    assert main(["detect", "eval", "--checkpoint", ckpt, "--annotations", str(small_set / "renamed.json")]) == 1
    assert "do not match" in capsys.readouterr().err


def test_shipped_detector_finds_objects_in_houses_it_never_saw(tmp_path):
    """The shipped model (configs/perception/detector_sim.pt, see the README) on freshly rendered
    houses: it measured mAP@0.5 0.68 on clear and 0.51 on foggy frames of these; on the full test
    sets 0.76 and 0.52. The models shipped before it fail these bounds: the constant-reversal
    MCAR + local run (0.70 and 0.44) and the 8-epoch MC model (0.62 and 0.38)."""
    pytest.importorskip("torch")
    from perception.detection.checkpoint import load_detector
    from perception.detection.evaluation import evaluate_detections, predict_records
    from perception.detection.plugin import default_checkpoint
    from perception.detection.simdata import CLASSES, DetectionDataConfig, make_detection_dataset

    model, blob = load_detector(default_checkpoint(), classes=CLASSES)
    assert "vlnce detect train" in blob["meta"]["command"] and blob["meta"]["eval"]["images"] == 300
    cfg = DetectionDataConfig(houses={"source_train": 0, "target_train": 0, "source_test": 2, "target_test": 2},
                              images_per_house=8, first_house=90000)
    make_detection_dataset(tmp_path, cfg, progress=False)
    scores = {}
    for split in ("source_test", "target_test"):
        recs, names = read_coco(tmp_path / f"{split}.json")
        scores[split] = evaluate_detections(predict_records(model, recs), recs, names)["map50"]
    assert scores["source_test"] > 0.65 and scores["target_test"] > 0.47, scores
