"""``vlnce lidar``: LiDAR semantic segmentation with SqueezeSegV3 (data, train, eval, predict, show, bench)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lidar_command", metavar="COMMAND", required=True)

    m = sub.add_parser("make-data", help="render simulated scans of embedded houses in the SemanticKITTI layout")
    m.add_argument("--out", required=True)
    m.add_argument("--train-houses", type=int, default=30)
    m.add_argument("--valid-houses", type=int, default=5)
    m.add_argument("--test-houses", type=int, default=5)
    m.add_argument("--scans-per-house", type=int, default=40)
    m.add_argument("--beams", type=int, default=32)
    m.add_argument("--columns", type=int, default=512)
    m.add_argument("--fov-up", type=float, default=22.5, help="degrees")
    m.add_argument("--fov-down", type=float, default=-22.5, help="degrees")
    m.add_argument("--noise", type=float, default=0.01, help="range noise std, metres")
    m.add_argument("--dropout", type=float, default=0.02, help="probability a return is lost")
    m.add_argument("--first-house", type=int, default=50000, help="seed of the first house")
    m.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train SqueezeSegV3 (resumes from OUT/last.pt)")
    t.add_argument("--data", required=True, help="dataset root (with dataset.yaml and sequences/)")
    t.add_argument("--out", required=True)
    t.add_argument("--depth", type=int, choices=(21, 53), default=21)
    t.add_argument("--conv", choices=("ISK", "SK", "IS", "S", "none"), default="ISK", help="SAC variant; none = plain conv")
    t.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    t.add_argument("--epochs", type=int, default=150)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--lr-decay", type=float, default=0.995, help="LR factor per epoch after warm-up")
    t.add_argument("--class-weight-power", type=float, default=1.0,
                   help="loss weights 1/(f+0.001)^p: 1 as the paper's code, 0.5 gentler")
    t.add_argument("--bn-momentum", type=float, default=0.01, help="BatchNorm momentum (0.01 as the authors' code)")
    t.add_argument("--augment", action="store_true", help="random rotation about z and mirroring")
    t.add_argument("--max-train-scans", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", default=None, help="fine-tune from this checkpoint")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")

    e = sub.add_parser("eval", help="mIoU (official SemanticKITTI semantics) on a split, per-class IoU, confusion")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--knn", action="store_true", help="kNN post-processing of the restored labels")
    e.add_argument("--max-scans", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default=None, help="write results JSON and confusion.png here")

    pr = sub.add_parser("predict", help="label .bin scans; writes SemanticKITTI .label files")
    pr.add_argument("input", help="a .bin file, a velodyne/ folder, a sequence or a dataset root")
    pr.add_argument("--checkpoint", default=None, help="default: the shipped indoor model")
    pr.add_argument("--out", required=True, help="directory for the .label files")
    pr.add_argument("--knn", action="store_true")
    pr.add_argument("--device", default="auto")

    s = sub.add_parser("show", help="picture of a scan: range image and bird's-eye view coloured by class")
    s.add_argument("input", help="a .bin scan")
    s.add_argument("--checkpoint", default=None, help="predict with this model (default: the shipped one)")
    s.add_argument("--labels", default=None, help="draw this .label file (default: the scan's own, as reference)")
    s.add_argument("--label-config", default=None, help="label config for --labels-only pictures "
                   "(semantic-kitti, indoor, a dataset.yaml); default: the checkpoint's")
    s.add_argument("--no-predict", action="store_true", help="only draw the labels, no model")
    s.add_argument("--extent", type=float, default=10.0, help="bird's-eye half-width, metres")
    s.add_argument("--out", required=True, help="PNG to write")

    x = sub.add_parser("export", help="a float16, weights-only copy of a checkpoint for shipping")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.add_argument("--command", default="", help="the command that trained it, stored in the file")

    b = sub.add_parser("bench", help="SSGV3-21 scans/s at 64x512 and 64x2048 (CPU, and CUDA when present)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--width", type=float, default=1.0)
    b.add_argument("--cpu-iters", type=int, default=3)
    b.add_argument("--cuda-iters", type=int, default=50)


def _plugin_checkpoint(path):
    from perception.lidar.plugin import default_checkpoint

    return path or str(default_checkpoint())


def run(args) -> int:
    cmd = args.lidar_command
    if cmd == "make-data":
        from perception.lidar.data import MakeDataConfig, make_dataset

        cfg = MakeDataConfig(train_houses=args.train_houses, valid_houses=args.valid_houses, test_houses=args.test_houses,
                             scans_per_house=args.scans_per_house, first_house=args.first_house, beams=args.beams,
                             columns=args.columns, fov_up_deg=args.fov_up, fov_down_deg=args.fov_down,
                             noise_std_m=args.noise, dropout_prob=args.dropout, seed=args.seed)
        summary = make_dataset(args.out, cfg)
        print(f"wrote {summary['scans']} scans to {args.out}: " +
              ", ".join(f"{k} {len(v)} houses" for k, v in summary["sequences"].items()))
        return 0
    if cmd == "train":
        from perception.lidar.ssgv3 import SSGV3Config
        from perception.lidar.train import LidarTrainConfig, LidarTrainer

        model = SSGV3Config(depth=args.depth, conv=args.conv, width=args.width, bn_momentum=args.bn_momentum)
        cfg = LidarTrainConfig(model=model, epochs=args.epochs, class_weight_power=args.class_weight_power,
                               batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                               weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, lr_decay=args.lr_decay,
                               augment=args.augment, max_train_scans=args.max_train_scans, device=args.device,
                               threads=args.threads, seed=args.seed)
        summary = LidarTrainer(args.data, args.out, cfg, resume=not args.no_resume, init=args.init).train()
        print(json.dumps(summary, indent=1))
        print(f"wrote {args.out}/best.pt, last.pt, curves.png, logs/ (tensorboard --logdir {args.out}/logs)")
        return 0
    if cmd == "eval":
        from pathlib import Path

        from perception.lidar.data import load_dataset_config
        from perception.lidar.evaluation import confusion_png, evaluate_split
        from perception.lidar.knn import KNNConfig
        from perception.lidar.segmenter import LidarSegmenter

        seg = LidarSegmenter.from_checkpoint(args.checkpoint, args.device, knn=KNNConfig() if args.knn else None)
        res = evaluate_split(seg, args.data, args.split, load_dataset_config(args.data), max_scans=args.max_scans)
        print(f"{args.split}: {res['scans']} scans, {res['points']} points, mIoU {res['miou']:.4f} "
              f"(range image {res['miou_2d']:.4f}), accuracy {res['accuracy']:.4f}")
        for name, v in res["iou"].items():
            print(f"  {name:<14} {v:.4f}" + ("  (absent)" if name in res["absent"] else ""))
        if args.out:
            out = Path(args.out)
            from vlnce.fileio import atomic_write_bytes

            atomic_write_bytes(out / "results.json", json.dumps(res, indent=1).encode())
            confusion_png(res["confusion"], res["classes"], out / "confusion.png")
            print(f"wrote {out}/results.json, confusion.png")
        return 0
    if cmd == "predict":
        from pathlib import Path

        from tqdm import tqdm

        from perception.lidar.knn import KNNConfig
        from perception.lidar.segmenter import LidarSegmenter
        from perception.lidar.semantickitti import read_scan, scan_files, write_labels

        seg = LidarSegmenter.from_checkpoint(_plugin_checkpoint(args.checkpoint), args.device,
                                             knn=KNNConfig() if args.knn else None)
        inv = seg.labels.inverse_lut()
        out = Path(args.out)
        pairs = scan_files(args.input)
        for scan, _ in tqdm(pairs, desc="predicting", unit="scan"):
            labels = seg.predict(read_scan(scan))
            write_labels(out / (scan.stem + ".label"), inv[labels])
        print(f"wrote {len(pairs)} .label files (raw ids via learning_map_inv) to {out}")
        return 0
    if cmd == "show":
        return _show(args)
    if cmd == "export":
        from pathlib import Path

        from perception.lidar.segmenter import model_from_blob, read_segmenter_checkpoint, save_segmenter

        blob = read_segmenter_checkpoint(args.checkpoint)
        model, labels = model_from_blob(blob, args.checkpoint)
        meta = {"command": args.command, "epoch": int(blob.get("epoch", 0)),
                "best_val_miou_2d": float(blob.get("best_miou", -1.0)), "source": Path(args.checkpoint).name}
        out = save_segmenter(args.out, model, labels, {"meta": meta}, half=True)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
        return 0
    from perception.lidar.bench import LidarBenchConfig, run_lidar_benchmark

    res = run_lidar_benchmark(LidarBenchConfig(width=args.width, cpu_iters=args.cpu_iters, cuda_iters=args.cuda_iters),
                              progress=not args.json)
    print(json.dumps(res, indent=1))
    return 0


def _show(args) -> int:
    from pathlib import Path

    from perception.lidar.labels import load_label_config
    from perception.lidar.projection import project
    from perception.lidar.semantickitti import read_labels, read_scan, scan_files
    from perception.lidar.viz import scan_figure
    from vlnce.fileio import save_png
    from vlnce.errors import ConfigError

    pts = read_scan(args.input)
    label_path = Path(args.labels) if args.labels else scan_files(args.input)[0][1]
    raw = read_labels(label_path, len(pts)) if label_path is not None and label_path.is_file() else None
    if args.no_predict:
        if raw is None:
            raise ConfigError(f"--no-predict needs labels, but {label_path} does not exist (pass --labels)")
        labels = load_label_config(args.label_config or "semantic-kitti")
        if labels.sensor is None:
            raise ConfigError(f"label config {args.label_config} has no sensor block to project with")
        proj = project(pts, labels.sensor)
        img = scan_figure(pts, proj, labels.map_labels(raw), labels.names, labels.colors, Path(args.input).name,
                          extent_m=args.extent)
    else:
        from perception.lidar.segmenter import LidarSegmenter

        seg = LidarSegmenter.from_checkpoint(_plugin_checkpoint(args.checkpoint))
        labels = load_label_config(args.label_config) if args.label_config else seg.labels
        proj = project(pts, seg.sensor)
        pred = seg.predict(pts)
        ref = labels.map_labels(raw) if raw is not None else None
        img = scan_figure(pts, proj, pred, seg.labels.names, seg.labels.colors, Path(args.input).name, reference=ref,
                          extent_m=args.extent)
    save_png(img, args.out)
    print(f"wrote {args.out}")
    return 0
