"""``vlnce export``: a compact policy-only checkpoint (float16, no optimiser) for shipping."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a training checkpoint (best.pt or last.pt)")
    p.add_argument("--out", required=True, help="where to write the exported checkpoint")
    p.add_argument("--command", default=None, help="the command that trained it (stored in its meta)")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")


def run(args) -> int:
    import json
    from pathlib import Path

    from agents.models.policy import export_checkpoint, load_policy

    meta = {"command": args.command} if args.command else {}
    summary = Path(args.checkpoint).with_name("summary.json")
    if summary.is_file():
        s = json.loads(summary.read_text())
        meta.update({"val": s.get("best_val"), "best_at": s.get("best_at"), "hardware": s.get("hardware"),
                     "train_config": s.get("config")})
    path = export_checkpoint(args.checkpoint, args.out, meta, half=not args.float32)
    load_policy(path)  # the exported file must load
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
