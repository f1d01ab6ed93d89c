"""``vlnce reid``: person re-identification (make-data, train, eval, embed, show, bench)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="reid_command", metavar="COMMAND", required=True)
    m = sub.add_parser("make-data", help="render simulated people in embedded houses, Market-1501 layout")
    m.add_argument("--out", required=True)
    m.add_argument("--identities", type=int, default=200, help="half train, half test")
    m.add_argument("--cameras", type=int, default=6)
    m.add_argument("--cameras-per-identity", type=int, default=3)
    m.add_argument("--shots-per-camera", type=int, default=4)
    m.add_argument("--height", type=int, default=128, help="image height, pixels")
    m.add_argument("--width", type=int, default=64, help="image width, pixels")
    m.add_argument("--first-house", type=int, default=70000, help="seed of camera 1's house")
    m.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="train a recipe on a Market-1501-layout set (resumes from OUT/last.pt)")
    t.add_argument("--data", required=True, help="dataset root")
    t.add_argument("--dataset", default="market1501", help="layout: market1501, cuhk03_np, msmt17")
    t.add_argument("--out", required=True)
    t.add_argument("--recipe", default="rmg", help="see `vlnce reid recipes`")
    t.add_argument("--backbone", default="resnet50")
    t.add_argument("--width", type=float, default=1.0, help="backbone channel multiplier")
    t.add_argument("--weights", default=None, help="local ImageNet state dict for the backbone (default: random init)")
    t.add_argument("--height", type=int, default=128, help="input height, pixels")
    t.add_argument("--input-width", type=int, default=64, help="input width, pixels")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--p", type=int, default=16, help="identities per batch")
    t.add_argument("--k", type=int, default=4, help="images per identity in a batch")
    t.add_argument("--lr", type=float, default=3.5e-4)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--warmup-epochs", type=float, default=2.0)
    t.add_argument("--augment", choices=("rsa", "flip", "none"), default="rsa")
    t.add_argument("--erasing", type=float, default=0.0, help="random-erasing probability")
    t.add_argument("--eval-every", type=int, default=5)
    t.add_argument("--pseudo-labels", action="store_true", help="ADTC: train on two-stage clusters, no identities")
    t.add_argument("--clusters", type=int, default=0, help="with --pseudo-labels (0: number of training ids)")
    t.add_argument("--cluster-every", type=int, default=2, help="epochs between re-clusterings")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")

    e = sub.add_parser("eval", help="mAP, CMC and mINP on query/gallery (Market-1501 protocol)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--dataset", default="market1501")
    e.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default=None, help="write results JSON and the ranked-gallery picture here")
    e.add_argument("--queries", type=int, default=6, help="queries in the ranked-gallery picture")

    em = sub.add_parser("embed", help="embeddings of images (files or folders) to a .npz (names, embeddings)")
    em.add_argument("inputs", nargs="+", help="image files or folders of images")
    em.add_argument("--checkpoint", default=None, help="default: the shipped model")
    em.add_argument("--out", required=True, help=".npz to write")
    em.add_argument("--device", default="auto")

    x = sub.add_parser("export", help="a float16, weights-only copy of a checkpoint for shipping")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.add_argument("--command", default="", help="the command that trained it, stored in the file")

    b = sub.add_parser("bench", help="images/s of every recipe (CPU, and CUDA when present), JSON")
    b.add_argument("--json", action="store_true", help="print only the JSON")
    b.add_argument("--backbone", default="resnet50")
    b.add_argument("--width", type=float, default=1.0)
    b.add_argument("--height", type=int, default=256)
    b.add_argument("--input-width", type=int, default=128)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--recipes", default="baseline,rmg,air,apinet,msgn,adtc,gasm")
    b.add_argument("--cpu-iters", type=int, default=2)
    b.add_argument("--cuda-iters", type=int, default=30)

    r = sub.add_parser("recipes", help="list the registered recipes and parts")
    r.add_argument("--json", action="store_true")


def run(args) -> int:
    if args.reid_command == "make-data":
        from tqdm import tqdm

        from perception.reid.simdata import ReidDataConfig, make_reid_dataset

        cfg = ReidDataConfig(identities=args.identities, cameras=args.cameras,
                             cameras_per_identity=args.cameras_per_identity, shots_per_camera=args.shots_per_camera,
                             height_px=args.height, width_px=args.width, first_house=args.first_house, seed=args.seed)
        with tqdm(total=cfg.identities, unit="id", desc="rendering people") as bar:
            summary = make_reid_dataset(args.out, cfg, progress=lambda i, n: bar.update(1))
        print(f"wrote {sum(summary['images'].values())} images to {args.out}: "
              + ", ".join(f"{k} {v}" for k, v in summary["images"].items()))
        return 0
    if args.reid_command == "train":
        from perception.reid.train import ReidTrainConfig, ReidTrainer

        cfg = ReidTrainConfig(recipe=args.recipe, backbone=args.backbone, width=args.width, height=args.height,
                              width_px=args.input_width, dataset=args.dataset, epochs=args.epochs, p=args.p, k=args.k,
                              lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                              augment=args.augment, erasing=args.erasing, eval_every=args.eval_every,
                              pseudo_labels=args.pseudo_labels, clusters=args.clusters,
                              cluster_every=args.cluster_every, weights=args.weights, device=args.device,
                              threads=args.threads, seed=args.seed)
        summary = ReidTrainer(args.data, args.out, cfg, resume=not args.no_resume).train()
        print(json.dumps(summary, indent=1))
        print(f"wrote {args.out}/best.pt, last.pt, curves.png, logs/ (tensorboard --logdir {args.out}/logs)")
        return 0
    if args.reid_command == "eval":
        return _eval(args)
    if args.reid_command == "recipes":
        return _recipes(args)
    if args.reid_command == "embed":
        return _embed(args)
    if args.reid_command == "export":
        return _export(args)
    if args.reid_command == "bench":
        from perception.reid.bench import ReidBenchConfig, run_reid_benchmark

        cfg = ReidBenchConfig(recipes=tuple(r.strip() for r in args.recipes.split(",") if r.strip()),
                              backbone=args.backbone, width=args.width, size=(args.height, args.input_width),
                              batch=args.batch, cpu_iters=args.cpu_iters, cuda_iters=args.cuda_iters)
        print(json.dumps(run_reid_benchmark(cfg, progress=not args.json), indent=1))
        return 0
    raise AssertionError(args.reid_command)


def _eval(args) -> int:
    from pathlib import Path

    from perception.reid.datasets import read_dataset
    from perception.reid.embedder import ReidEmbedder, evaluate_embedder

    data = read_dataset(args.dataset, args.data)
    embedder = ReidEmbedder.from_checkpoint(args.checkpoint, args.device)
    metrics, dist = evaluate_embedder(embedder, data, rerank=args.rerank)
    res = {"checkpoint": str(args.checkpoint), "data": str(args.data), "rerank": args.rerank,
           "queries": len(data.query), "gallery": len(data.gallery), **metrics.as_dict()}
    print(f"{data.name}: {res['num_valid']} queries ({res['num_skipped']} without a match), gallery {len(data.gallery)}: "
          f"mAP {metrics.mAP:.4f}, rank-1 {metrics.rank(1):.4f}, rank-5 {metrics.rank(5):.4f}, "
          f"rank-10 {metrics.rank(10):.4f}, mINP {metrics.mINP:.4f}" + (" (re-ranked)" if args.rerank else ""))
    if args.out:
        from perception.reid.viz import ranked_gallery
        from vlnce.fileio import save_png
        from vlnce.fileio import atomic_write_bytes

        out = Path(args.out)
        atomic_write_bytes(out / "results.json", json.dumps(res, indent=1).encode())
        save_png(ranked_gallery(data, dist, num_queries=args.queries), out / "ranked_gallery.png")
        print(f"wrote {out}/results.json, ranked_gallery.png")
    return 0


def _recipes(args) -> int:
    from perception.reid.registry import BACKBONES, DOWNSAMPLERS, LOSSES, PARTITIONERS, POOLS, RECIPES

    table = {"recipes": {n: RECIPES.get(n).describe() for n in RECIPES.names()},
             "backbones": BACKBONES.names(), "downsamplers": DOWNSAMPLERS.names(), "partitioners": PARTITIONERS.names(),
             "pools": POOLS.names(), "losses": LOSSES.names()}
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    for name, d in table["recipes"].items():
        print(f"{name:<14} {d['summary']}")
    for key in ("backbones", "downsamplers", "partitioners", "pools", "losses"):
        print(f"{key}: {', '.join(table[key])}")
    return 0


def _embed(args) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from perception.reid.datasets import IMAGE_SUFFIXES, load_image
    from perception.reid.embedder import ReidEmbedder
    from perception.reid.plugin import default_checkpoint
    from vlnce.errors import DatasetError
    from vlnce.fileio import atomic_path

    files = []
    for item in map(Path, args.inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise DatasetError(f"{item} is neither an image file nor a folder")
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(args.inputs)}")
    embedder = ReidEmbedder.from_checkpoint(args.checkpoint or default_checkpoint(), args.device)
    chunks = []
    for i in tqdm(range(0, len(files), 64), desc="embedding", unit="batch"):
        chunks.append(embedder.embed([load_image(p) for p in files[i:i + 64]]))
    emb = np.concatenate(chunks)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, names=np.array([str(p) for p in files]), embeddings=emb)
    print(f"wrote {len(files)} embeddings of dimension {emb.shape[1]} to {args.out}")
    return 0


def _export(args) -> int:
    from pathlib import Path

    from perception.reid.embedder import model_from_blob, read_reid_checkpoint, save_reid_model

    blob = read_reid_checkpoint(args.checkpoint)
    model, spec = model_from_blob(blob, args.checkpoint)
    model.half()
    meta = {"command": args.command, "epoch": int(blob.get("epoch", 0)), "best_map": float(blob.get("best_map", -1.0)),
            "source": Path(args.checkpoint).name}
    out = save_reid_model(args.out, model, spec, {"meta": meta})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0
