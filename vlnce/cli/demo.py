"""``vlnce demo``: the main job.

Builds the embedded benchmark if it is missing, evaluates the non-learning baselines, the oracle
and the shipped Cross-Modal Attention agent (``configs/agents/cma_best.pt``) on ``val_unseen``,
prints VLN-CE's metrics table and writes pictures: a top-down map per episode, videos of a few
oracle and CMA episodes, and for those CMA episodes where it attended in the instruction.
"""

from __future__ import annotations

import argparse

BASELINES = ("random", "handcrafted", "instruction_blind", "oracle")
SHIPPED_CHECKPOINT = "agents/cma_best.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", help="output directory")
    p.add_argument("--split", default="val_unseen", help="benchmark split")
    p.add_argument("--episodes", type=int, default=None, help="first N episodes (default: the whole split)")
    p.add_argument("--videos", type=int, default=3, help="oracle episodes to render as videos")
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument("--dataset", default="embedded", help="'embedded' or a R2R_VLNCE-style directory")
    p.add_argument("--scenes-dir", default=None, help="where the dataset's scene ids resolve")


def run(args) -> int:
    import json
    from pathlib import Path

    from agents.evaluation import EvalConfig, evaluate, format_table
    from vlnce.errors import ConfigError
    from vlnce.fileio import atomic_write_bytes

    if args.videos < 0:
        raise ConfigError(f"--videos must be >= 0, got {args.videos}")
    out = Path(args.out)
    rows = []
    from configs import config_path

    shipped = config_path(SHIPPED_CHECKPOINT)
    agents = [(a, None) for a in BASELINES] + ([("cma", str(shipped))] if shipped.is_file() else [])
    for agent, checkpoint in agents:
        cfg = EvalConfig(agent=agent, split=args.split, episodes=args.episodes, workers=args.workers,
                         dataset=args.dataset, scenes_dir=args.scenes_dir, checkpoint=checkpoint)
        rows.append(evaluate(cfg, out / agent))
    if args.videos:
        for agent, checkpoint in agents:
            if agent in ("oracle", "cma"):
                evaluate(EvalConfig(agent=agent, split=args.split, episodes=args.videos, video=True,
                                    attention=agent == "cma", dataset=args.dataset, scenes_dir=args.scenes_dir,
                                    checkpoint=checkpoint),
                         out / f"{agent}_videos")
    table = format_table(rows)
    print(table)
    atomic_write_bytes(out / "metrics_table.txt", (table + "\n").encode())
    atomic_write_bytes(out / "results.json", json.dumps(rows, indent=1).encode())
    print(f"wrote {out}/<agent>/episodes.jsonl, results.json, submission.json, maps/; "
          f"{out}/<agent>_videos/videos/ (and cma_videos/attention/); "
          f"{out}/metrics_table.txt")
    return 0
