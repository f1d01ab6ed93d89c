"""``vlnce ros perception``: perception plugins as a ROS 2 node.

For every plugin input the node subscribes to a topic of the matching kind (best-effort, depth 1,
so a slow model always works on the newest message and stale ones are dropped) and publishes
each output with the input's header (stamp and frame unchanged):

    pointcloud    sensor_msgs/PointCloud2 in  (default /lidar/points; needs x, y, z; intensity optional)
    point_labels  sensor_msgs/PointCloud2 out (default /lidar/points_labeled, best-effort): the
                  input's layout (organised clouds stay organised) with x, y, z, intensity
                  (float32) and label (uint32; 0 where the input point was NaN)

Plugins that take an image and person boxes (``reid``) read two topics and pair them by stamp:

    image         sensor_msgs/Image in (default /camera/rgb/image_raw; rgb8, bgr8, rgba8, bgra8, mono8)
    boxes         sensor_msgs/Image in (default /camera/person_instances; 32SC1 or 16UC1 person
                  instance ids, 0 = background, at any resolution: boxes are scaled to the image)
    identities    std_msgs/String out (default /reid/identities, reliable): JSON
                  {"stamp": s, "frame_id": ..., "people": [{"identity": n, "box": [x0, y0, x1, y1]}]}

Image-only plugins that output boxes (``detection``) read the image topic alone and publish

    detections    std_msgs/String out (default /detection/detections, reliable): JSON
                  {"stamp": s, "frame_id": ..., "detections": [{"class": name, "class_id": k,
                  "score": s, "box": [x0, y0, x1, y1]}]} (k in 1..K, best score first)

and, when a box plugin (``reid``) runs too, its person boxes replace the instance topic: re-ID runs
on the detector's ``person`` boxes of the same image.

(vision_msgs/Detection2DArray is not available as a pip wheel, hence instance images in and JSON
out; the JSON carries the fields of a Detection2D: class id, score and the box.)

Bad messages (missing fields, wrong sizes) are logged once per kind and skipped; the node keeps
running. The model code is plain library code: this file only converts messages at the edge.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

from perception.base import PerceptionPlugin
from ros_bridge import messages, qos
from ros_bridge.node_logging import WarnOnce

DEFAULT_TOPICS = {"pointcloud": "/lidar/points", "point_labels": "/lidar/points_labeled",
                  "image": "/camera/rgb/image_raw", "boxes": "/camera/person_instances", "identities": "/reid/identities",
                  "detections": "/detection/detections"}


@dataclass
class PerceptionNodeConfig:
    """Which plugins to run and where their topics are.

    Attributes:
        plugins: plugin names (``vlnce plugins`` lists them).
        options: per-plugin constructor options, e.g. {"lidar_seg": {"checkpoint": "model.pt"}}.
        topics: kind -> topic overrides (inputs and outputs; see the module docstring).
        device: "auto" (CUDA when available), "cpu", "cuda".
        half: float16 inference on CUDA.
    """

    plugins: list[str] = field(default_factory=lambda: ["lidar_seg"])
    options: dict = field(default_factory=dict)
    topics: dict = field(default_factory=dict)
    device: str = "auto"
    half: bool = False

    def topic(self, kind: str) -> str:
        return self.topics.get(kind, DEFAULT_TOPICS[kind])


def cloud_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray, bool]:
    """(N, 4) float32 x, y, z, intensity of every cloud cell (row-major), a finite mask, and whether
    the cloud had an intensity field.

    Raises:
        messages.BadMessage: x, y or z is missing or the data size does not match the layout.
    """
    rec = messages.pointcloud_fields(msg, ("x", "y", "z")).reshape(-1)
    has_i = "intensity" in rec.dtype.names
    pts = np.empty((rec.shape[0], 4), np.float32)
    for i, n in enumerate(("x", "y", "z")):
        pts[:, i] = rec[n]
    pts[:, 3] = rec["intensity"] if has_i else 0.0
    return pts, np.isfinite(pts[:, :3]).all(axis=1), has_i


def labeled_cloud(msg: PointCloud2, pts: np.ndarray, finite: np.ndarray, labels: np.ndarray) -> PointCloud2:
    """A PointCloud2 with the input's header and layout, x, y, z, intensity and a uint32 label."""
    h, w = int(msg.height), int(msg.width)
    out = messages.pointcloud_msg(pts[:, :3].reshape(h, w, 3), pts[:, 3].reshape(h, w),
                                  labels.reshape(h, w), finite.reshape(h, w), 0.0, msg.header.frame_id)
    out.header = msg.header
    return out


class PerceptionNode(WarnOnce, Node):
    """Runs plugins on incoming messages; see the module docstring for topics and QoS."""

    def __init__(self, cfg: PerceptionNodeConfig, plugins: list[PerceptionPlugin]) -> None:
        super().__init__("vlnce_perception")
        self.cfg, self.plugins = cfg, plugins
        self.frames, self.skipped, self.seconds = 0, 0, 0.0
        self.pub_status = self.create_publisher(String, "/vlnce/perception_status", qos.EVENTS)
        from perception.wrappers import detects_people

        self._outputs, self._cloud_plugins, self._box_plugins, self._detectors = {}, [], [], []
        for p in plugins:
            kinds = {port.kind for port in p.inputs.values()}
            if kinds == {"image"} and {"boxes", "classes", "scores"} <= {o.kind for o in p.outputs.values()}:
                self._detectors.append(p)
                self._outputs[p.name] = self.create_publisher(String, cfg.topic("detections"), qos.EVENTS)
            elif kinds == {"pointcloud"}:
                self._cloud_plugins.append(p)
                self._outputs[p.name] = self.create_publisher(PointCloud2, cfg.topic("point_labels"), qos.SENSOR_PUB)
            elif kinds == {"image", "boxes"}:
                self._box_plugins.append(p)
                self._outputs[p.name] = self.create_publisher(String, cfg.topic("identities"), qos.EVENTS)
            else:
                raise ValueError(f"plugin {p.name!r} needs inputs of kinds {sorted(kinds)}; the ROS node converts "
                                 "a pointcloud, an image (detectors), or an image with person boxes")
            for out_name, port in p.outputs.items():
                if port.kind not in ("point_labels", "identities", "embeddings", "boxes", "classes", "scores"):
                    raise ValueError(f"plugin {p.name!r} output {out_name!r} of kind {port.kind!r} has no ROS "
                                     "conversion yet")
        if self._cloud_plugins:
            topic = cfg.topic("pointcloud")
            self.create_subscription(PointCloud2, topic, self._on_cloud, qos.SENSOR_SUB)
            self.get_logger().info(f"running {', '.join(p.name for p in self._cloud_plugins)} on {topic} -> "
                                   f"{cfg.topic('point_labels')}")
        self._people_source = next((d for d in self._detectors if detects_people(d)), None)
        if self._detectors:
            self.create_subscription(Image, cfg.topic("image"), self._on_rgb, qos.SENSOR_SUB)
            self.get_logger().info(f"running {', '.join(p.name for p in self._detectors)} on {cfg.topic('image')} -> "
                                   f"{cfg.topic('detections')}")
        if self._box_plugins and self._people_source is not None:
            self.get_logger().info(f"running {', '.join(p.name for p in self._box_plugins)} on the person boxes of "
                                   f"{self._people_source.name} -> {cfg.topic('identities')}")
        elif self._box_plugins:
            # keep a few of each so an image and its instance mask pair up whichever comes first
            self._pending: dict[str, dict] = {"image": {}, "boxes": {}}
            self.create_subscription(Image, cfg.topic("image"), lambda m: self._on_pair("image", m), qos.SENSOR_SUB)
            self.create_subscription(Image, cfg.topic("boxes"), lambda m: self._on_pair("boxes", m), qos.SENSOR_SUB)
            self.get_logger().info(f"running {', '.join(p.name for p in self._box_plugins)} on {cfg.topic('image')} + "
                                   f"{cfg.topic('boxes')} -> {cfg.topic('identities')}")

    def _on_pair(self, kind: str, msg: Image) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        pending = self._pending[kind]
        pending[key] = msg
        while len(pending) > 5:
            pending.pop(min(pending))
        other = self._pending["boxes" if kind == "image" else "image"]
        if key not in other:
            return
        partner = other.pop(key)
        pending.pop(key)
        self._on_image(*((msg, partner) if kind == "image" else (partner, msg)))

    def _on_rgb(self, image_msg: Image) -> None:
        from perception.wrappers import detected_people

        try:
            image = messages.rgb_from_msg(image_msg)
        except messages.BadMessage as exc:
            self.skipped += 1
            self._warn_once(f"bad_image:{exc}", f"{exc}; image skipped")
            return
        t0 = time.perf_counter()
        people = None
        for p in self._detectors:
            result = p({"image": [image]})
            dets = [{"class": p.classes[int(c) - 1], "class_id": int(c), "score": round(float(s), 4),
                     "box": [round(float(v), 1) for v in b]}
                    for b, c, s in zip(result["boxes"][0], result["classes"][0], result["scores"][0])]
            self._outputs[p.name].publish(String(data=json.dumps(
                {"stamp": messages.to_seconds(image_msg.header.stamp), "frame_id": image_msg.header.frame_id,
                 "detections": dets})))
            if p is self._people_source:
                people = detected_people(p, result, 64)
        self.seconds += time.perf_counter() - t0
        if people is not None and self._box_plugins:
            self._run_box_plugins(image_msg, image, people)
        else:
            self.frames += 1

    def _on_image(self, image_msg: Image, mask_msg: Image) -> None:
        from perception.wrappers import instance_boxes

        try:
            image = messages.rgb_from_msg(image_msg)
            instances = messages.instances_from_msg(mask_msg)
        except messages.BadMessage as exc:
            self.skipped += 1
            self._warn_once(f"bad_image:{exc}", f"{exc}; image skipped")
            return
        self._run_box_plugins(image_msg, image, instance_boxes(instances, out_shape=image.shape[:2]))

    def _run_box_plugins(self, image_msg: Image, image: np.ndarray, boxes: np.ndarray) -> None:
        t0 = time.perf_counter()
        for p in self._box_plugins:
            result = p({"image": [image], "boxes": [boxes]})
            people = [{"identity": int(i), "box": [round(float(v), 1) for v in b]}
                      for i, b in zip(result["identities"][0], boxes) if i > 0]
            self._outputs[p.name].publish(String(data=json.dumps(
                {"stamp": messages.to_seconds(image_msg.header.stamp), "frame_id": image_msg.header.frame_id,
                 "people": people})))
        self.seconds += time.perf_counter() - t0
        self.frames += 1

    def _on_cloud(self, msg: PointCloud2) -> None:
        topic = self.cfg.topic("pointcloud")
        try:
            pts, finite, has_i = cloud_points(msg)
        except messages.BadMessage as exc:
            self.skipped += 1
            self._warn_once(f"bad_cloud:{exc}", f"{topic}: {exc}; message skipped")
            return
        if not has_i:
            self._warn_once("no_intensity", f"{topic}: no intensity field; using 0")
        if not finite.any():
            self._warn_once("empty", f"{topic}: a cloud without finite points; published with every label 0")
        t0 = time.perf_counter()
        for p in self._cloud_plugins:
            labels = np.zeros(pts.shape[0], np.uint32)
            if finite.any():
                try:
                    result = p({"points": [pts[finite]]})
                except ValueError as exc:
                    self.skipped += 1
                    self._warn_once(f"plugin:{p.name}", f"plugin {p.name!r} rejected a cloud: {exc}; skipped")
                    return
                labels[finite] = result["labels"][0]
            self._outputs[p.name].publish(labeled_cloud(msg, pts, finite, labels))
        self.seconds += time.perf_counter() - t0
        self.frames += 1
        if self.frames % 20 == 1:
            self.pub_status.publish(String(data=json.dumps({"frames": self.frames, "skipped": self.skipped,
                                                            "mean_ms": round(1000 * self.seconds / self.frames, 2)})))


def run(cfg: PerceptionNodeConfig, max_frames: int = 0) -> int:
    """Build the plugins, then spin until Ctrl-C (or ``max_frames`` frames); returns frames processed."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from perception.registry import make_plugin

    plugins = [make_plugin(n, device=cfg.device, half=cfg.half, **cfg.options.get(n, {})) for n in cfg.plugins]
    rclpy.init()
    node = PerceptionNode(cfg, plugins)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not (max_frames and node.frames >= max_frames):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.get_logger().info(f"processed {node.frames} frames, skipped {node.skipped}")
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return node.frames
