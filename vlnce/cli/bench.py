"""``vlnce bench sim``: simulator speed, printed as one JSON object."""

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


def run(args) -> int:
    import json

    from sim.bench import SimBenchConfig, run_sim_benchmark
    from vlnce.errors import ConfigError

    if args.steps < 20 or args.resolution <= 0 or args.lidar_scans < 1:
        raise ConfigError("--steps must be >= 20, --resolution > 0 and --lidar-scans >= 1")
    result = run_sim_benchmark(SimBenchConfig(args.scene, args.steps, args.resolution, args.lidar_scans),
                               progress=not args.json)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
