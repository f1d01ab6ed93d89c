"""``vlnce ros record``: the bridge's topics to a rosbag2 bag (MCAP or SQLite3) that ``ros2 bag play``
can play back.

rosbag2_py has no pip wheel, so messages are taken serialised off the wire (``raw=True``, no
decode and re-encode) and written with the pure-Python ``rosbags`` writer, with message
definitions from its ROS 2 Kilted type store. Timestamps are receive times (wall clock, as
``ros2 bag record`` without ``--use-sim-time``). Each message is written as it arrives, and the
bag is closed properly on Ctrl-C, so nothing received is lost.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vlnce.errors import ConfigError, MissingDependencyError

#: the bridge's topics and their types
BRIDGE_TOPICS = {
    "/clock": "rosgraph_msgs/msg/Clock",
    "/odom": "nav_msgs/msg/Odometry",
    "/cmd_vel": "geometry_msgs/msg/Twist",
    "/camera/rgb/image_raw": "sensor_msgs/msg/Image",
    "/camera/rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/depth/image_raw": "sensor_msgs/msg/Image",
    "/camera/depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "/lidar/points": "sensor_msgs/msg/PointCloud2",
    "/vlnce/instruction": "std_msgs/msg/String",
    "/vlnce/episode": "std_msgs/msg/String",
    "/vlnce/metrics": "std_msgs/msg/String",
    "/vlnce/action": "std_msgs/msg/String",
    "/vlnce/agent_status": "std_msgs/msg/String",
}
LATCHED = {"/vlnce/instruction", "/vlnce/episode", "/vlnce/metrics"}


def _msg_class(type_name: str):
    pkg, kind, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"message type {type_name} is not importable here ({exc})") from None


class Recorder(Node):
    def __init__(self, writer, typestore, topics: dict[str, str]) -> None:
        super().__init__("vlnce_record")
        self.writer = writer
        self.count = 0
        self.per_topic: dict[str, int] = {}
        for topic, type_name in topics.items():
            latched = topic in LATCHED
            qos = QoSProfile(depth=10 if latched else 50,
                             reliability=ReliabilityPolicy.RELIABLE if latched else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            conn = writer.add_connection(topic, type_name, typestore=typestore)
            self.create_subscription(_msg_class(type_name), topic, self._callback(conn, topic), qos, raw=True)

    def _callback(self, conn, topic):
        def write(data: bytes) -> None:
            self.writer.write(conn, time.time_ns(), data)
            self.count += 1
            self.per_topic[topic] = self.per_topic.get(topic, 0) + 1
        return write


def record(out: str | Path, topics: list[str] | None = None, storage: str = "mcap", duration_s: float = 0.0) -> int:
    """Record until Ctrl-C (or ``duration_s`` wall seconds); returns the number of messages written.

    Raises:
        ConfigError: the bag exists, or a topic's type is unknown. MissingDependencyError: no rosbags.
    """
    try:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise MissingDependencyError("recording needs the rosbags package: pip install '.[ros]'") from exc
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; rosbag2 writes a new bag directory")
    chosen = {}
    for t in topics or list(BRIDGE_TOPICS):
        if t not in BRIDGE_TOPICS:
            raise ConfigError(f"topic {t!r} is not one of the bridge's topics: {', '.join(BRIDGE_TOPICS)}")
        chosen[t] = BRIDGE_TOPICS[t]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    typestore = get_typestore(Stores.ROS2_KILTED)
    rclpy.init()
    writer = Writer(out, version=9, storage_plugin=plugin)
    writer.open()
    node = None
    try:
        node = Recorder(writer, typestore, chosen)
        end = time.monotonic() + duration_s if duration_s > 0 else None
        while rclpy.ok() and (end is None or time.monotonic() < end):
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        writer.close()
        if node is not None:
            node.get_logger().info(f"recorded {node.count} messages: {node.per_topic}")
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0 if node is None else node.count
