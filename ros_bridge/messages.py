"""numpy <-> ROS 2 message conversion, done once at the edge of every node.

cv_bridge (ROS 2) and sensor_msgs_py have no pip wheels, so images and point clouds are packed
and unpacked here with numpy. Every reader checks what it was given and raises
``BadMessage`` naming the field, the value seen and what was expected; nodes log it and drop
the message instead of crashing.
"""

from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from ros_bridge.frames import yaw_from_quaternion, yaw_quaternion

# encoding -> (dtype, channels)
IMAGE_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
                   "mono8": (np.uint8, 1), "32FC1": (np.float32, 1), "16UC1": (np.uint16, 1), "mono16": (np.uint16, 1),
                   "32SC1": (np.int32, 1)}
_POINTFIELD_DTYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
                      PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}
#: the LiDAR cloud layout we publish (point_step 20 bytes)
CLOUD_FIELDS = (("x", PointField.FLOAT32), ("y", PointField.FLOAT32), ("z", PointField.FLOAT32),
                ("intensity", PointField.FLOAT32), ("label", PointField.UINT32))


class BadMessage(ValueError):
    """A message that cannot be used, with what was wrong and what was expected."""


def stamp(seconds: float) -> Time:
    sec = int(math.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def to_seconds(t) -> float:
    return float(t.sec) + 1e-9 * float(t.nanosec)


def _payload(data: np.ndarray) -> array.array:
    # assigning an array.array skips rclpy's per-element checks (measured: ~0.1 ms per image)
    return array.array("B", np.ascontiguousarray(data).tobytes())


# --- images -----------------------------------------------------------------------------------
def image_msg(data: np.ndarray, encoding: str, stamp_s: float, frame_id: str) -> Image:
    """An Image from (H, W, C) or (H, W) data of the encoding's dtype."""
    dtype, channels = IMAGE_ENCODINGS[encoding]
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    want = data.shape[:2] + ((channels,) if channels > 1 else ())
    if data.shape != want or data.dtype != dtype:
        raise BadMessage(f"{encoding} image needs shape (H, W{', %d' % channels if channels > 1 else ''}) "
                         f"{np.dtype(dtype).name}, got {data.shape} {data.dtype}")
    msg = Image()
    msg.header.stamp = stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(data.shape[0]), int(data.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(data.shape[1] * np.dtype(dtype).itemsize * channels)
    msg.data = _payload(data)
    return msg


def image_from_msg(msg: Image, allowed: tuple[str, ...]) -> np.ndarray:
    """The pixels of an Image as (H, W, C) or (H, W), copied; checks encoding, step and size."""
    enc = msg.encoding
    if enc not in allowed:
        raise BadMessage(f"image encoding {enc!r} is not supported here; expected one of {', '.join(allowed)}")
    dtype, channels = IMAGE_ENCODINGS[enc]
    itemsize = np.dtype(dtype).itemsize
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise BadMessage(f"{enc} image has size {w}x{h}; expected a positive width and height")
    if step < w * channels * itemsize:
        raise BadMessage(f"{enc} image of width {w} has step {step}; expected at least {w * channels * itemsize} bytes")
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    if buf.size != step * h:
        raise BadMessage(f"{enc} image {w}x{h} with step {step} needs {step * h} bytes of data, got {buf.size}")
    rows = buf.reshape(h, step)[:, : w * channels * itemsize]
    order = ">" if msg.is_bigendian else "<"
    img = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order) if itemsize > 1 else dtype)
    img = img.reshape(h, w, channels).astype(dtype, copy=False)
    if enc in ("bgr8", "bgra8"):
        img = img[..., [2, 1, 0]]
    elif enc == "rgba8":
        img = img[..., :3]
    elif enc == "mono8":
        img = np.repeat(img, 3, axis=2)
    return img if channels > 1 or enc == "mono8" else img[..., 0]


def rgb_from_msg(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from rgb8, bgr8, rgba8, bgra8 or mono8."""
    return image_from_msg(msg, ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"))


def instances_from_msg(msg: Image) -> np.ndarray:
    """(H, W) int64 instance ids (0 = background) from 32SC1 or 16UC1."""
    return image_from_msg(msg, ("32SC1", "16UC1")).astype(np.int64)


def depth_from_msg(msg: Image) -> tuple[np.ndarray, int]:
    """(H, W) float32 metres from 32FC1 (metres) or 16UC1 (millimetres, as OpenNI/RealSense publish).

    REP-118: NaN is "no return" and becomes 0 (as Habitat renders missing depth); +inf is "too far"
    and -inf "too close", kept as +-inf for the caller's range clipping. 16UC1 zeros are "no
    return". Also returns how many pixels were not finite, so nodes can warn.
    """
    img = image_from_msg(msg, ("32FC1", "16UC1", "mono16"))
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 1000.0, 0
    img = img.astype(np.float32, copy=True)
    bad = ~np.isfinite(img)
    n_bad = int(bad.sum())
    if n_bad:
        img[np.isnan(img)] = 0.0
    return img, n_bad


def camera_info_msg(width: int, height: int, hfov_rad: float, stamp_s: float, frame_id: str) -> CameraInfo:
    """CameraInfo of an ideal pinhole (square pixels, principal point at the centre, no distortion)."""
    f = (width / 2.0) / math.tan(hfov_rad / 2.0)
    cx, cy = width / 2.0, height / 2.0
    msg = CameraInfo()
    msg.header.stamp = stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def hfov_from_camera_info(msg: CameraInfo) -> float:
    """Horizontal field of view (radians) of a CameraInfo's intrinsics."""
    fx = float(msg.k[0])
    if not (fx > 0 and msg.width > 0):
        raise BadMessage(f"camera_info has fx={fx} and width={msg.width}; expected both positive")
    return 2.0 * math.atan(msg.width / (2.0 * fx))


# --- point clouds -----------------------------------------------------------------------------
def pointcloud_msg(xyz: np.ndarray, intensity: np.ndarray, label: np.ndarray, valid: np.ndarray,
                   stamp_s: float, frame_id: str) -> PointCloud2:
    """An organised PointCloud2 (height = beams, width = columns) with x, y, z, intensity, label.

    Points without a return are NaN (``is_dense`` false), as ROS drivers publish them.
    """
    h, w = valid.shape
    rec = np.zeros((h, w), dtype=[(n, _POINTFIELD_DTYPES[t]) for n, t in CLOUD_FIELDS])
    xyz = np.where(valid[..., None], xyz, np.nan).astype(np.float32)
    rec["x"], rec["y"], rec["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    rec["intensity"] = intensity
    rec["label"] = label.astype(np.uint32)
    msg = PointCloud2()
    msg.header.stamp = stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(h), int(w)
    msg.fields = [PointField(name=n, offset=int(rec.dtype.fields[n][1]), datatype=t, count=1) for n, t in CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = rec.dtype.itemsize
    msg.row_step = msg.point_step * w
    msg.is_dense = bool(valid.all())
    msg.data = _payload(rec)
    return msg


def pointcloud_fields(msg: PointCloud2, required: tuple[str, ...] = ("x", "y", "z")) -> np.ndarray:
    """The points of a PointCloud2 as a structured (height, width) array; checks the layout."""
    names = [f.name for f in msg.fields]
    missing = [n for n in required if n not in names]
    if missing:
        raise BadMessage(f"point cloud lacks field(s) {', '.join(missing)}; it has {', '.join(names) or 'none'}")
    formats = {}
    for f in msg.fields:
        if f.datatype not in _POINTFIELD_DTYPES:
            raise BadMessage(f"point cloud field {f.name!r} has unknown datatype {f.datatype}")
        formats[f.name] = (np.dtype(("<" if not msg.is_bigendian else ">") + _POINTFIELD_DTYPES[f.datatype]), f.offset)
    dtype = np.dtype({"names": list(formats), "formats": [v[0] for v in formats.values()],
                      "offsets": [v[1] for v in formats.values()], "itemsize": int(msg.point_step)})
    n = int(msg.height) * int(msg.width)
    if int(msg.row_step) != int(msg.point_step) * int(msg.width) or len(msg.data) != int(msg.row_step) * int(msg.height):
        raise BadMessage(f"point cloud {msg.width}x{msg.height} with point_step {msg.point_step} and row_step "
                         f"{msg.row_step} does not match its {len(msg.data)} bytes of data")
    return np.frombuffer(bytes(msg.data), dtype, count=n).reshape(int(msg.height), int(msg.width))


# --- odometry and twist -----------------------------------------------------------------------
def odometry_msg(x: float, y: float, yaw: float, v_forward: float, v_left: float, yaw_rate: float,
                 stamp_s: float, frame_id: str = "odom", child_frame_id: str = "base_link") -> Odometry:
    """Odometry of a planar robot: pose in ``frame_id``, twist in ``child_frame_id`` (REP-105)."""
    msg = Odometry()
    msg.header.stamp = stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    q = yaw_quaternion(yaw)
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = q
    msg.twist.twist.linear.x, msg.twist.twist.linear.y = float(v_forward), float(v_left)
    msg.twist.twist.angular.z = float(yaw_rate)
    return msg


def pose_from_odometry(msg: Odometry) -> tuple[float, float, float]:
    """(x, y, yaw) of an Odometry's pose; checks it is finite."""
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    vals = (p.x, p.y, o.x, o.y, o.z, o.w)
    if not all(math.isfinite(v) for v in vals) or (o.x * o.x + o.y * o.y + o.z * o.z + o.w * o.w) < 1e-12:
        raise BadMessage(f"odometry pose is not finite or its quaternion is zero: position ({p.x}, {p.y}), "
                         f"orientation ({o.x}, {o.y}, {o.z}, {o.w})")
    return float(p.x), float(p.y), yaw_from_quaternion(o.x, o.y, o.z, o.w)


def twist_msg(v_forward: float = 0.0, yaw_rate: float = 0.0) -> Twist:
    msg = Twist()
    msg.linear.x = float(v_forward)
    msg.angular.z = float(yaw_rate)
    return msg
