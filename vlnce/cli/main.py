"""The ``vlnce`` console script: a table of sub-commands, each in its own module.

Sub-command modules define ``add_arguments(parser)`` and ``run(args) -> int`` and import heavy
libraries (torch, rclpy, trimesh) only inside ``run``, so ``vlnce --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from vlnce import __version__

# name -> (module, one-line summary), in help order
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vlnce.cli.demo", "the main job: evaluate the baselines on val_unseen (metrics table, pictures)"),
    "eval": ("vlnce.cli.eval", "evaluate an agent on a benchmark split"),
    "train": ("vlnce.cli.train", "train a Seq2Seq or Cross-Modal Attention agent (IL, DAgger)"),
    "train-pointnav": ("vlnce.cli.train_pointnav", "pretrain the depth encoder on point-goal navigation (VLN-CE's "
                      "DD-PPO encoder)"),
    "train-rooms": ("vlnce.cli.train_rooms", "train the room sense: room types recognised from RGB-D frames, a "
                    "frozen input for CMA (vlnce train --room-sense)"),
    "probe": ("vlnce.cli.probe", "does a policy read the instruction where only it can tell? (teacher-forced, a "
              "training run's destination groups)"),
    "table": ("vlnce.cli.table", "evaluations side by side per split, shaped like VLN-CE's Tables 2 and 3"),
    "export": ("vlnce.cli.export", "write a compact policy-only checkpoint for shipping"),
    "data": ("vlnce.cli.data", "build the embedded VLN-CE benchmark"),
    "scene": ("vlnce.cli.scene", "build procedural houses, draw top-down maps, walk through a house"),
    "lidar": ("vlnce.cli.lidar", "LiDAR semantic segmentation (SqueezeSegV3): make-data, train, eval, predict, show, bench"),
    "detect": ("vlnce.cli.detect", "object detection with domain adaptation (Faster R-CNN, MCAR): make-data, train, eval, "
               "predict, show, bench"),
    "reid": ("vlnce.cli.reid", "person re-identification: make-data (simulated people, Market-1501 layout)"),
    "plugins": ("vlnce.cli.plugins", "list the installed perception plugins"),
    "ros": ("vlnce.cli.ros", "ROS 2 bridge: the simulator as a robot, agents on robots, recording"),
    "bench": ("vlnce.cli.bench", "benchmarks that print JSON"),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlnce", description="Vision-and-language navigation in continuous environments.")
    parser.add_argument("--version", action="version", version=f"vlnce {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (the console script exits with it)."""
    from vlnce.errors import VlnceError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 for --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_module", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except VlnceError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Aborted.", file=sys.stderr)
        return EXIT_FAILURE


def console() -> None:  # pragma: no cover - the installed script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console()
