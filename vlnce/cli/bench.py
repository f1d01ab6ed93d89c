"""``vlnce bench sim|train``: simulator and training speed, printed as one JSON object."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench_command", metavar="TARGET", required=True)
    s = sub.add_parser("sim", help="steps/s, ray-cast baseline, LiDAR scans/s, nav build and geodesic queries")
    s.add_argument("--json", action="store_true", help="print only the JSON object")
    s.add_argument("--scene", default="house:0", help="scene file or house:SEED")
    s.add_argument("--steps", type=int, default=400, help="agent steps to time")
    s.add_argument("--resolution", type=int, default=256, help="camera width and height, pixels")
    s.add_argument("--lidar-scans", type=int, default=40, help="LiDAR scans to time")
    t = sub.add_parser("train", help="teacher-forcing and DAgger-collection frames/s of a learned policy")
    t.add_argument("--json", action="store_true", help="print only the JSON object")
    t.add_argument("--agent", default="cma", choices=("seq2seq", "cma"))
    t.add_argument("--image-size", type=int, default=32)
    t.add_argument("--batch-size", type=int, default=16, help="trajectories per batch")
    t.add_argument("--steps", type=int, default=64, help="steps per trajectory")
    t.add_argument("--episodes", type=int, default=6, help="episodes to collect per measurement")


def run(args) -> int:
    import json

    if args.bench_command == "train":
        from agents.training.bench import TrainBenchConfig, run_train_benchmark

        result = run_train_benchmark(TrainBenchConfig(args.agent, args.image_size, args.batch_size, args.steps,
                                                      episodes=args.episodes), progress=not args.json)
        print(json.dumps(result, indent=None if args.json else 2))
        return 0
    from sim.bench import SimBenchConfig, run_sim_benchmark
    from vlnce.errors import ConfigError

    if args.steps < 20 or args.resolution <= 0 or args.lidar_scans < 1:
        raise ConfigError("--steps must be >= 20, --resolution > 0 and --lidar-scans >= 1")
    result = run_sim_benchmark(SimBenchConfig(args.scene, args.steps, args.resolution, args.lidar_scans),
                               progress=not args.json)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
