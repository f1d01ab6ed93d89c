"""``vlnce reid``: person re-identification data (training and evaluation commands follow)."""

from __future__ import annotations

import argparse


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
    raise AssertionError(args.reid_command)
