"""``vlnce bench ros``: image and point-cloud latency (publish to receive) and achieved rates between
two processes over DDS (loopback unless the network is allowed).

A publisher process sends frames rendered by the embedded simulator (RGB rgb8) and a LiDAR scan
(PointCloud2 with x, y, z, intensity, label) at the requested rates, stamped with the wall clock
just before ``publish``; this process receives them best-effort, as the agent node does. The
baseline, measured in the same run, is serialising and deserialising the same messages in one
process (what DDS cannot avoid), so latency is also reported as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class RosBenchConfig:
    image_size: int = 224
    lidar_beams: int = 64
    lidar_columns: int = 2048
    image_rate_hz: float = 30.0
    cloud_rate_hz: float = 10.0
    duration_s: float = 5.0


def _messages(cfg: RosBenchConfig):
    from ros_bridge import messages
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import CameraSensorConfig, SimulatorConfig

    sc = SimulatorConfig(scene="house:0", sensors={"rgb": CameraSensorConfig(type="rgb", width_px=cfg.image_size,
                                                                              height_px=cfg.image_size)})
    sc.lidar.enabled, sc.lidar.beams, sc.lidar.columns = True, cfg.lidar_beams, cfg.lidar_columns
    with EmbeddedSimulator(sc) as sim:
        obs = sim.reset()
        scan = sim.get_lidar_scan()
    image = messages.image_msg(obs["rgb"], "rgb8", 0.0, "camera_rgb_optical_frame")
    cloud = messages.pointcloud_msg(scan.xyz, scan.intensity, scan.label, scan.valid, 0.0, "lidar_link")
    return image, cloud


def _publish(cfg: RosBenchConfig) -> None:
    """The publisher process: waits for the subscriber, then publishes for ``duration_s``."""
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2

    from ros_bridge import messages
    from ros_bridge.qos import SENSOR_PUB

    image, cloud = _messages(cfg)
    rclpy.init()
    node = rclpy.create_node("vlnce_bench_pub")
    pubs = {"image": (node.create_publisher(Image, "/bench/image", SENSOR_PUB), image, cfg.image_rate_hz),
            "cloud": (node.create_publisher(PointCloud2, "/bench/cloud", SENSOR_PUB), cloud, cfg.cloud_rate_hz)}
    deadline = time.monotonic() + 10.0
    while any(p.get_subscription_count() == 0 for p, _, _ in pubs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    start = time.monotonic()
    sent = {k: 0 for k in pubs}
    next_t = {k: start for k in pubs}
    while (now := time.monotonic()) < start + cfg.duration_s:
        for k, (pub, msg, rate) in pubs.items():
            if now >= next_t[k]:
                msg.header.stamp = messages.stamp(time.time())
                pub.publish(msg)
                sent[k] += 1
                next_t[k] += 1.0 / rate
        time.sleep(max(0.0, min(next_t.values()) - time.monotonic()))
    print(json.dumps(sent), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_ros_benchmark(cfg: RosBenchConfig) -> dict:
    import rclpy
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, PointCloud2

    from ros_bridge import messages
    from ros_bridge.qos import SENSOR_SUB

    image, cloud = _messages(cfg)
    baseline = {}
    for name, msg, cls in (("image", image, Image), ("cloud", cloud, PointCloud2)):
        t0 = time.perf_counter()
        for _ in range(20):
            deserialize_message(serialize_message(msg), cls)
        baseline[name] = (time.perf_counter() - t0) / 20 * 1e3
    rclpy.init()
    node = rclpy.create_node("vlnce_bench_sub")
    latencies: dict[str, list[float]] = {"image": [], "cloud": []}
    first_last: dict[str, list[float]] = {}

    def on(kind):
        def cb(msg):
            now = time.time()
            latencies[kind].append((now - messages.to_seconds(msg.header.stamp)) * 1e3)
            first_last.setdefault(kind, [now, now])[1] = now
        return cb

    # the agent node's QoS: best-effort, depth 1 (a slow reader sees the newest frame)
    node.create_subscription(Image, "/bench/image", on("image"), SENSOR_SUB)
    node.create_subscription(PointCloud2, "/bench/cloud", on("cloud"), SENSOR_SUB)
    # the publisher inherits this process's DDS settings (dds.configure ran before rclpy)
    pub = subprocess.Popen([sys.executable, "-m", "ros_bridge.bench", "--publish", json.dumps(cfg.__dict__)],
                           stdout=subprocess.PIPE, text=True)
    try:
        while pub.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        sent = json.loads(pub.stdout.read().strip().splitlines()[-1])
    finally:
        if pub.poll() is None:
            pub.kill()
        node.destroy_node()
        rclpy.shutdown()
    out = {"config": cfg.__dict__, "image_bytes": len(image.data), "cloud_bytes": len(cloud.data)}
    for kind, rate in (("image", cfg.image_rate_hz), ("cloud", cfg.cloud_rate_hz)):
        lat = np.array(latencies[kind])
        span = first_last.get(kind, [0, 0])
        got = len(lat)
        achieved = (got - 1) / (span[1] - span[0]) if got > 1 and span[1] > span[0] else 0.0
        out[kind] = {"sent": sent[kind], "received": got, "requested_hz": rate, "achieved_hz": round(achieved, 2),
                     "rate_ratio": round(achieved / rate, 3),
                     "latency_ms": {"mean": round(float(lat.mean()), 3) if got else None,
                                    "p95": round(float(np.percentile(lat, 95)), 3) if got else None,
                                    "max": round(float(lat.max()), 3) if got else None},
                     "serialize_roundtrip_ms": round(baseline[kind], 3),
                     "latency_to_serialize_ratio": round(float(lat.mean()) / baseline[kind], 2) if got else None}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish", required=True)
    _publish(RosBenchConfig(**json.loads(parser.parse_args().publish)))
