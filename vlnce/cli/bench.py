"""``vlnce bench sim|train|ros``: simulator and training speed, printed as one JSON object."""

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
    t.add_argument("--episodes", type=int, default=24, help="episodes to collect per measurement")
    t.add_argument("--collect-envs", type=int, default=8,
                   help="environments stepped together in the vector-collection measurement")


    r = sub.add_parser("ros", help="image and point-cloud latency and rates between two processes over DDS")
    r.add_argument("--json", action="store_true", help="print only the JSON object")
    r.add_argument("--image-size", type=int, default=224)
    r.add_argument("--lidar-columns", type=int, default=2048)
    r.add_argument("--image-rate", type=float, default=30.0, help="Hz")
    r.add_argument("--cloud-rate", type=float, default=10.0, help="Hz")
    r.add_argument("--duration", type=float, default=5.0, help="seconds")
    r.add_argument("--network", action="store_true", help="let DDS use the network (default: loopback only)")


def run(args) -> int:
    import json

    if args.bench_command == "ros":
        from ros_bridge import dds

        note = dds.configure(args.network)
        dds.import_rclpy()
        from ros_bridge.bench import RosBenchConfig, run_ros_benchmark

        if not args.json:
            print(note)
        result = run_ros_benchmark(RosBenchConfig(args.image_size, 64, args.lidar_columns, args.image_rate,
                                                  args.cloud_rate, args.duration))
        print(json.dumps(result, indent=None if args.json else 2))
        return 0

    if args.bench_command == "train":
        from agents.training.bench import TrainBenchConfig, run_train_benchmark

        result = run_train_benchmark(TrainBenchConfig(args.agent, args.image_size, args.batch_size, args.steps,
                                                      episodes=args.episodes, collect_envs=args.collect_envs),
                                     progress=not args.json)
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
