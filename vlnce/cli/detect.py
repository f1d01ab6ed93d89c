"""``vlnce detect``: Faster R-CNN with MCAR domain adaptation (make-data, train, eval, predict, show, bench)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="detect_command", metavar="COMMAND", required=True)

    m = sub.add_parser("make-data", help="render a clear (source) / foggy (target) detection set from embedded houses")
    m.add_argument("--out", required=True)
    for split, n in (("source-train", 40), ("target-train", 40), ("source-test", 8), ("target-test", 12)):
        m.add_argument(f"--{split}-houses", type=int, default=n)
    m.add_argument("--images-per-house", type=int, default=25)
    m.add_argument("--width", type=int, default=320)
    m.add_argument("--height", type=int, default=240)
    m.add_argument("--first-house", type=int, default=70000)
    m.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a detector: source_only, uadv, mc, mcar or oracle (resumes from OUT/last.pt)")
    t.add_argument("--data", required=True, help="a make-data folder, or where --source/--target/--test are")
    t.add_argument("--out", required=True)
    t.add_argument("--method", choices=("source_only", "uadv", "mc", "mcar", "oracle"), default="mcar")
    t.add_argument("--source", default=None, help="labelled COCO json (default: DATA/source_train.json)")
    t.add_argument("--target", default=None, help="unlabelled-domain COCO json (default: DATA/target_train.json)")
    t.add_argument("--test", default=None, help="evaluation COCO json (default: DATA/target_test.json)")
    t.add_argument("--backbone", choices=("resnet26", "resnet50", "resnet101"), default="resnet26")
    t.add_argument("--width", type=float, default=0.25, help="backbone channel multiplier")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--batch-size", type=int, default=2, help="images per domain per iteration")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw", help="sgd: momentum 0.9 (the paper's)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-steps", type=int, nargs="*", default=[6], help="epochs after which the LR drops 10x")
    t.add_argument("--adv-weight", type=float, default=0.5, help="lambda")
    t.add_argument("--multilabel-weight", type=float, default=0.01, help="mu")
    t.add_argument("--consistency-weight", type=float, default=0.1, help="epsilon")
    t.add_argument("--gamma", type=float, default=5.0, help="focal factor of the adversarial loss")
    t.add_argument("--condition", choices=("p", "softmax_pq"), default="p")
    t.add_argument("--grl-schedule", choices=("constant", "dann"), default="constant",
                   help="reversal coefficient: constant, or ramped from 0 (DANN's 2/(1+exp(-10p))-1)")
    t.add_argument("--local-weight", type=float, default=0.0,
                   help="add Strong-Weak DA's pixel-level alignment of low-level features with this weight (0: off)")
    t.add_argument("--min-size", type=int, default=None, help="resize the short side to this (default: keep)")
    t.add_argument("--max-eval-images", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", default=None, help="start from this detector checkpoint")
    t.add_argument("--no-resume", action="store_true")

    e = sub.add_parser("eval", help="mAP@0.5 (VOC all-point) per class and COCO mAP on a COCO json")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--annotations", required=True, help="COCO json (images relative to its folder)")
    e.add_argument("--min-size", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default=None, help="write the results JSON here")

    pr = sub.add_parser("predict", help="detect objects in images; writes COCO-style results JSON")
    pr.add_argument("--checkpoint", default=None, help="default: the shipped model")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out", required=True, help="results JSON")
    pr.add_argument("--score", type=float, default=0.3)
    pr.add_argument("--device", default="auto")

    s = sub.add_parser("show", help="draw boxes: ground truth of a COCO json, or a detector's predictions on it")
    s.add_argument("--annotations", required=True)
    s.add_argument("--checkpoint", default=None, help="draw this detector's predictions beside the ground truth")
    s.add_argument("--count", type=int, default=6)
    s.add_argument("--score", type=float, default=0.5)
    s.add_argument("--out", required=True, help="PNG")
    s.add_argument("--device", default="auto")

    x = sub.add_parser("export", help="a float16 copy of a detector without training state, for shipping")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.add_argument("--command", default="", help="the command that trained it, stored in the file")
    x.add_argument("--eval", default=None, help="a results JSON (eval_NNN.json or detect eval --out) to store with it")

    b = sub.add_parser("bench", help="images/s of the detector on CPU and on CUDA when present (JSON)")
    b.add_argument("--checkpoint", default=None)
    b.add_argument("--json", action="store_true")
    b.add_argument("--iters", type=int, default=5)
    b.add_argument("--batch-size", type=int, default=4)
    b.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))


def run(args) -> int:
    cmd = args.detect_command
    if cmd == "make-data":
        from perception.detection.simdata import DetectionDataConfig, make_detection_dataset

        cfg = DetectionDataConfig(houses={"source_train": args.source_train_houses,
                                          "target_train": args.target_train_houses,
                                          "source_test": args.source_test_houses,
                                          "target_test": args.target_test_houses},
                                  images_per_house=args.images_per_house, width=args.width, height=args.height,
                                  first_house=args.first_house, seed=args.seed)
        desc = make_detection_dataset(args.out, cfg)
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v} images" for k, v in desc["images"].items()))
        return 0
    if cmd == "train":
        from perception.detection.train import DetectionTrainer, DetectTrainConfig

        cfg = DetectTrainConfig(method=args.method, source=args.source, target=args.target, test=args.test,
                                backbone=args.backbone, width=args.width, epochs=args.epochs,
                                batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                                lr_steps=tuple(args.lr_steps), adv_weight=args.adv_weight,
                                multilabel_weight=args.multilabel_weight, consistency_weight=args.consistency_weight,
                                gamma=args.gamma, condition=args.condition, local_weight=args.local_weight,
                                grl_schedule=args.grl_schedule,
                                min_size=args.min_size,
                                max_eval_images=args.max_eval_images, device=args.device, threads=args.threads,
                                seed=args.seed)
        summary = DetectionTrainer(args.data, args.out, cfg, resume=not args.no_resume, init=args.init).train()
        ev = summary.get("final_eval") or {}
        print(json.dumps({k: summary[k] for k in ("method", "epochs", "steps", "train_seconds")} |
                         {"map50": ev.get("map50")}))
        print(f"wrote {args.out}/final.pt, last.pt, curves.png, logs/ (tensorboard --logdir {args.out}/logs)")
        return 0
    if cmd == "eval":
        from perception.detection.checkpoint import load_detector
        from perception.detection.data import check_classes, read_coco
        from perception.detection.evaluation import evaluate_detections, predict_records
        from vlnce.torchio import resolve_device

        model, _ = load_detector(args.checkpoint, resolve_device(args.device))
        records, classes = read_coco(args.annotations)
        check_classes(model.cfg.classes, classes, args.annotations)
        res = evaluate_detections(predict_records(model, records, 4, args.min_size, progress=True), records, classes)
        print(f"mAP@0.5 (VOC all-point) {res['map50']:.4f} on {res['images']} images" +
              (f"; COCO mAP {res['coco']['map']:.4f}" if res["coco"] else "; COCO mAP: pip install pycocotools"))
        for c, ap in res["ap50"].items():
            print(f"  {c:12s} {'-' if ap is None else f'{ap:.4f}'} ({res['num_gt'][c]} boxes)")
        if args.out:
            from vlnce.fileio import atomic_write_bytes

            atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
        return 0
    if cmd == "predict":
        from perception.detection.data import load_image
        from perception.detection.plugin import DetectionPlugin
        from vlnce.fileio import atomic_write_bytes

        plugin = DetectionPlugin(checkpoint=args.checkpoint, score_threshold=args.score, device=args.device)
        results = []
        for path in args.images:
            out = plugin({"image": [load_image(path)]})
            for b, c, s in zip(out["boxes"][0], out["classes"][0], out["scores"][0]):
                results.append({"file": path, "category": plugin.classes[int(c) - 1], "score": round(float(s), 4),
                                "bbox": [round(float(v), 2) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])]})
        atomic_write_bytes(args.out, json.dumps(results, indent=1).encode())
        print(f"{len(results)} detections in {len(args.images)} images -> {args.out}")
        return 0
    if cmd == "show":
        return _show(args)
    if cmd == "export":
        from perception.detection.checkpoint import load_detector, save_detector

        model, blob = load_detector(args.checkpoint)
        meta = {"command": args.command, "source": str(args.checkpoint),
                "train_config": blob.get("train_config"), "epoch": blob.get("epoch")}
        if args.eval:
            from pathlib import Path

            meta["eval"] = json.loads(Path(args.eval).read_text())
        out = save_detector(args.out, model, {"meta": meta}, half=True)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
        return 0
    if cmd == "bench":
        from perception.detection.bench import bench_detector

        res = bench_detector(args.checkpoint, iters=args.iters, batch_size=args.batch_size, size=tuple(args.size))
        print(json.dumps(res, indent=None if args.json else 1))
        return 0
    raise AssertionError(cmd)


def _show(args) -> int:
    from perception.detection.data import load_image, read_coco
    from perception.detection.viz import draw_boxes, grid
    from vlnce.fileio import save_png

    records, classes = read_coco(args.annotations)
    step = max(1, len(records) // max(args.count, 1))
    picks = records[::step][: args.count]
    model = None
    if args.checkpoint:
        from perception.detection.checkpoint import load_detector
        from perception.detection.data import check_classes
        from perception.detection.evaluation import predict_records
        from vlnce.torchio import resolve_device

        model, _ = load_detector(args.checkpoint, resolve_device(args.device))
        check_classes(model.cfg.classes, classes, args.annotations)
        dets = predict_records(model, picks)
    tiles = []
    for i, r in enumerate(picks):
        img = load_image(r["file"])
        tiles.append(draw_boxes(img, r["boxes"], r["labels"], classes))
        if model is not None:
            d = dets[i]
            tiles.append(draw_boxes(img, d["boxes"], d["labels"], classes, d["scores"], args.score))
    save_png(grid(tiles, 2 if model is not None else 3), args.out)
    print(f"wrote {args.out} ({len(picks)} images" + (": ground truth | predictions)" if model is not None else ")"))
    return 0
