"""``vlnce train-pointnav``: pretrain the depth encoder on point-goal navigation (VLN-CE's DD-PPO ResNet)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes-per-house", type=int, default=40, help="random start/goal pairs per training house")
    p.add_argument("--val-episodes", type=int, default=100, help="pairs in the val_unseen houses")
    p.add_argument("--min-distance", type=float, default=1.0, help="geodesic start-goal distance, metres")
    p.add_argument("--max-distance", type=float, default=10.0)
    p.add_argument("--success-distance", type=float, default=0.75, help="STOP within this many metres succeeds")
    p.add_argument("--image-size", type=int, default=32, help="depth resolution (that of the VLN policy)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32, help="trajectories per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dataset", default="embedded", help="'embedded' or a R2R_VLNCE-style directory (its houses)")
    p.add_argument("--workers", type=int, default=1, help="collection processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory (resumes when it holds a run)")


def run(args) -> int:
    from agents.training.pointnav import PointNavConfig, train_pointnav

    cfg = PointNavConfig(dataset=args.dataset, episodes_per_house=args.episodes_per_house,
                         val_episodes=args.val_episodes, min_distance_m=args.min_distance,
                         max_distance_m=args.max_distance, success_distance_m=args.success_distance,
                         image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         workers=args.workers, seed=args.seed)
    summary = train_pointnav(cfg, args.out)
    for h in summary["history"]:
        print(f"epoch {h['epoch']}: loss {h['loss']:.3f}, val SR {h['success']:.3f}, SPL {h['spl']:.3f}, "
              f"distance to goal {h['distance_to_goal']:.2f} m")
    print(f"{summary['train_pairs']} pairs, {summary['train_frames']} frames; best: epoch {summary['best_epoch']} "
          f"-> {args.out}/best.pt (use with vlnce train --depth-init)")
    return 0
