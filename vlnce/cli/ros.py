"""``vlnce ros sim|agent|record``: the ROS 2 bridge's nodes.

DDS stays on this machine (loopback) unless ``--network`` is given or ``VLNCE_ROS_NETWORK=1``
is set; the setting is applied before rclpy is imported.
"""

from __future__ import annotations

import argparse
import math


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ros_command", metavar="NODE", required=True)

    s = sub.add_parser("sim", help="the embedded simulator as a ROS 2 robot (sim time, /clock, cameras, LiDAR, odom)")
    s.add_argument("--scene", default=None, help="free roaming in this scene (house:SEED or a mesh file) instead of episodes")
    s.add_argument("--dataset", default="embedded", help="'embedded' or a R2R_VLNCE-style directory")
    s.add_argument("--split", default="val_unseen")
    s.add_argument("--episodes", default="", help="comma-separated episode ids (default: the split's first)")
    s.add_argument("--rgb-size", type=int, default=224, help="RGB width and height, pixels")
    s.add_argument("--depth-size", type=int, default=256, help="depth width and height, pixels")
    s.add_argument("--camera-rate", type=float, default=10.0, help="camera frames per second of sim time")
    s.add_argument("--lidar", action="store_true", help="publish /lidar/points")
    s.add_argument("--lidar-columns", type=int, default=1024)
    s.add_argument("--lidar-rate", type=float, default=5.0, help="scans per second of sim time")
    s.add_argument("--physics-rate", type=float, default=50.0, help="physics steps per second of sim time")
    s.add_argument("--real-time-factor", type=float, default=1.0, help="sim seconds per wall second (0: as fast as possible)")
    s.add_argument("--max-linear", type=float, default=1.0, help="cmd_vel speed limit, m/s")
    s.add_argument("--max-angular", type=float, default=2.0, help="cmd_vel yaw-rate limit, rad/s")
    s.add_argument("--max-steps", type=int, default=500, help="actions before an episode is cut off (VLN-CE: 500)")
    s.add_argument("--exit-when-done", action="store_true", help="exit after the last episode's metrics")
    s.add_argument("--results", default=None, help="also write the episodes' metrics to this JSON file on exit")
    s.add_argument("--network", action="store_true", help="let DDS use the network (default: loopback only)")

    a = sub.add_parser("agent", help="run one of our agents on a ROS 2 robot (images, odom, instruction -> /cmd_vel)")
    a.add_argument("--agent", required=True, help="agent name (cma, seq2seq, oracle, handcrafted, ...)")
    a.add_argument("--checkpoint", default=None, help="model checkpoint (learned agents)")
    a.add_argument("--forward-step", type=float, default=0.25, help="metres per MOVE_FORWARD")
    a.add_argument("--turn-angle", type=float, default=15.0, help="degrees per turn")
    a.add_argument("--linear-speed", type=float, default=0.25, help="m/s while moving forward")
    a.add_argument("--angular-speed", type=float, default=30.0, help="deg/s while turning")
    a.add_argument("--open-loop", action="store_true", help="time the commands instead of closing the loop on /odom")
    a.add_argument("--max-steps", type=int, default=500)
    a.add_argument("--exit-gate", action="store_true",
                   help="learned agents with a room sense: the exit gate beside the policy (as vlnce eval --exit-gate)")
    a.add_argument("--wall-time", action="store_true", help="use wall-clock time (a robot without /clock)")
    a.add_argument("--episodes", type=int, default=0, help="exit after this many episodes (0: run until Ctrl-C)")
    a.add_argument("--dataset", default="embedded", help="where privileged agents (oracle) find the episode's scene")
    a.add_argument("--network", action="store_true", help="let DDS use the network (default: loopback only)")

    pc = sub.add_parser("perception", help="perception plugins as a node (e.g. /lidar/points -> /lidar/points_labeled)")
    pc.add_argument("--plugins", default="lidar_seg", help="comma-separated plugin names (see `vlnce plugins`)")
    pc.add_argument("--checkpoint", action="append", default=[], metavar="PLUGIN=PATH",
                    help="weights for a plugin, e.g. lidar_seg=model.pt (repeatable)")
    pc.add_argument("--points-topic", default="/lidar/points", help="PointCloud2 input")
    pc.add_argument("--labeled-topic", default="/lidar/points_labeled", help="labelled PointCloud2 output")
    pc.add_argument("--image-topic", default="/camera/rgb/image_raw", help="Image input of image plugins (reid)")
    pc.add_argument("--instances-topic", default="/camera/person_instances",
                    help="person instance-id Image (32SC1/16UC1) paired with --image-topic by stamp")
    pc.add_argument("--identities-topic", default="/reid/identities", help="String (JSON) output of reid")
    pc.add_argument("--detections-topic", default="/detection/detections", help="String (JSON) output of detectors")
    pc.add_argument("--option", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                    help="a plugin option, e.g. detection.score_threshold=0.3 (repeatable; VALUE is YAML)")
    pc.add_argument("--device", default="auto")
    pc.add_argument("--half", action="store_true", help="float16 on CUDA")
    pc.add_argument("--max-frames", type=int, default=0, help="exit after this many clouds (0: run until Ctrl-C)")
    pc.add_argument("--network", action="store_true", help="let DDS use the network (default: loopback only)")

    r = sub.add_parser("record", help="record the bridge's topics to a rosbag2 file")
    r.add_argument("--out", required=True, help="bag directory to create")
    r.add_argument("--topics", default="", help="comma-separated topics (default: all the bridge's topics)")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    r.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds (0: Ctrl-C)")
    r.add_argument("--network", action="store_true", help="let DDS use the network (default: loopback only)")


def run(args) -> int:
    from ros_bridge import dds

    print(dds.configure(args.network))
    dds.import_rclpy()
    if args.ros_command == "sim":
        from pathlib import Path

        from ros_bridge.sim_node import SimNodeConfig, run as run_sim

        cfg = SimNodeConfig(scene=args.scene or "house:0", dataset=args.dataset, split=args.split,
                            episodes=[e for e in args.episodes.split(",") if e], free_roam=args.scene is not None,
                            rgb_size=args.rgb_size, depth_size=args.depth_size, camera_rate_hz=args.camera_rate,
                            lidar=args.lidar, lidar_columns=args.lidar_columns, lidar_rate_hz=args.lidar_rate,
                            physics_rate_hz=args.physics_rate, real_time_factor=args.real_time_factor,
                            max_linear_mps=args.max_linear, max_angular_rps=args.max_angular,
                            exit_when_done=args.exit_when_done, max_steps=args.max_steps)
        results = run_sim(cfg, Path(args.results) if args.results else None)
        for r in results:
            print(f"episode {r['episode_id']}: " + ", ".join(f"{k}={v:.3f}" for k, v in r["metrics"].items() if v is not None))
        return 0
    if args.ros_command == "agent":
        from ros_bridge.agent_node import AgentNodeConfig, run as run_agent
        from ros_bridge.control import MotionConfig

        motion = MotionConfig(forward_step_m=args.forward_step, turn_angle_deg=args.turn_angle,
                              linear_speed_mps=args.linear_speed, angular_speed_rps=math.radians(args.angular_speed),
                              closed_loop=not args.open_loop)
        cfg = AgentNodeConfig(agent=args.agent, checkpoint=args.checkpoint, motion=motion.validate(),
                              max_steps=args.max_steps, use_sim_time=not args.wall_time, dataset=args.dataset,
                              exit_gate=args.exit_gate)
        run_agent(cfg, episodes=args.episodes)
        return 0
    if args.ros_command == "perception":
        from perception.registry import parse_checkpoint_options, parse_plugin_list, parse_plugin_options
        from ros_bridge.perception_node import PerceptionNodeConfig, run as run_perception

        names = parse_plugin_list(args.plugins)
        options = parse_checkpoint_options(names, args.checkpoint)
        for name, opts in parse_plugin_options(names, args.option).items():
            options.setdefault(name, {}).update(opts)
        cfg = PerceptionNodeConfig(plugins=names, options=options, device=args.device, half=args.half,
                                   topics={"pointcloud": args.points_topic, "point_labels": args.labeled_topic,
                                           "image": args.image_topic, "boxes": args.instances_topic,
                                           "identities": args.identities_topic, "detections": args.detections_topic})
        frames = run_perception(cfg, max_frames=args.max_frames)
        print(f"processed {frames} frames")
        return 0
    from ros_bridge.record import record

    topics = [t for t in args.topics.split(",") if t] or None
    n = record(args.out, topics, storage=args.storage, duration_s=args.duration)
    print(f"wrote {n} messages to {args.out}")
    return 0
