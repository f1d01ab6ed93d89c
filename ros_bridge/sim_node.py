"""``vlnce ros sim``: the embedded simulator as a ROS 2 robot, in simulated time.

Publishes (REP-103/105 frames; stamps in sim time, which ``/clock`` carries):

==========================  ===============================  =====================================
topic                       type                             notes
==========================  ===============================  =====================================
/clock                      rosgraph_msgs/Clock              every physics step
/odom                       nav_msgs/Odometry                odom -> base_link, every physics step
/camera/rgb/image_raw       sensor_msgs/Image rgb8           frame camera_rgb_optical_frame
/camera/rgb/camera_info     sensor_msgs/CameraInfo
/camera/depth/image_raw     sensor_msgs/Image 32FC1          metres, frame camera_depth_optical_frame
/camera/depth/camera_info   sensor_msgs/CameraInfo
/lidar/points               sensor_msgs/PointCloud2          x, y, z, intensity float32, label uint32
/vlnce/instruction          std_msgs/String                  transient-local (late joiners get it)
/vlnce/episode              std_msgs/String (JSON)           transient-local; goal and start pose
                                                             for privileged reference agents
/vlnce/metrics              std_msgs/String (JSON)           transient-local; VLN-CE metrics
/tf, /tf_static             tf2_msgs/TFMessage               only when tf2_msgs is importable
==========================  ===============================  =====================================

Subscribes to ``/cmd_vel`` (geometry_msgs/Twist: linear.x forward, linear.y left, angular.z
counter-clockwise; best-effort, so reliable and best-effort publishers both match) and
``/vlnce/action`` (std_msgs/String: the name of the discrete action the agent starts; STOP ends
the episode and publishes its metrics; END says the previous action was the last, when the
agent's step limit ends the episode).

The node owns time: a wall-clock timer runs physics steps of ``1/physics_rate_hz`` s of sim
time at ``real_time_factor`` times real time; when rendering is slower than that, sim time
slows down instead of the physics coarsening. It never waits for subscribers.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

from ros_bridge import frames, messages, qos
from ros_bridge.node_logging import WarnOnce
from sim.actions import Action
from sim.tasks.measures import json_values

log = logging.getLogger(__name__)



@dataclass
class SimNodeConfig:
    """What the simulator node simulates and how fast.

    Sizes in pixels, rates in Hz of sim time, speeds in m/s and rad/s.
    """

    scene: str = "house:0"
    dataset: str = "embedded"
    split: str = "val_unseen"
    episodes: list[str] = field(default_factory=list)  # ids; empty with a split: the first episode
    free_roam: bool = False
    rgb_size: int = 224
    depth_size: int = 256
    hfov_deg: float = 90.0
    camera_rate_hz: float = 10.0
    lidar: bool = False
    lidar_beams: int = 64
    lidar_columns: int = 1024
    lidar_rate_hz: float = 5.0
    physics_rate_hz: float = 50.0
    real_time_factor: float = 1.0
    max_linear_mps: float = 1.0
    max_angular_rps: float = 2.0
    cmd_timeout_s: float = 0.5
    exit_when_done: bool = False
    episode_gap_s: float = 1.0
    max_steps: int = 500

    def validate(self) -> "SimNodeConfig":
        from vlnce.errors import ConfigError

        for name in ("rgb_size", "depth_size", "lidar_beams", "lidar_columns"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("camera_rate_hz", "lidar_rate_hz", "physics_rate_hz", "max_linear_mps", "max_angular_rps", "cmd_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v}")
        if not (math.isfinite(self.real_time_factor) and self.real_time_factor >= 0):
            raise ConfigError(f"real_time_factor must be >= 0 (0: as fast as possible), got {self.real_time_factor}")
        if self.camera_rate_hz > self.physics_rate_hz or self.lidar_rate_hz > self.physics_rate_hz:
            raise ConfigError("camera_rate_hz and lidar_rate_hz cannot exceed physics_rate_hz")
        return self

    def simulator_config(self):
        from sim.config import CameraSensorConfig, SimulatorConfig

        cfg = SimulatorConfig(scene=self.scene)
        cfg.sensors = {
            "rgb": CameraSensorConfig(type="rgb", width_px=self.rgb_size, height_px=self.rgb_size, hfov_deg=self.hfov_deg),
            "depth": CameraSensorConfig(type="depth", width_px=self.depth_size, height_px=self.depth_size,
                                        hfov_deg=self.hfov_deg, normalize_depth=False),
        }
        cfg.lidar.enabled = self.lidar
        cfg.lidar.beams, cfg.lidar.columns = self.lidar_beams, self.lidar_columns
        return cfg


def _tf_module():
    try:
        from geometry_msgs.msg import TransformStamped
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage, TransformStamped


class SimulatorNode(WarnOnce, Node):
    """Thin ROS layer over ``sim.robot.SimulatedRobot`` and ``sim.tasks.vln.VLNCETask``."""

    def __init__(self, cfg: SimNodeConfig) -> None:
        super().__init__("vlnce_sim")
        self.cfg = cfg.validate()
        self._load_world()
        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.pub_odom = self.create_publisher(Odometry, "/odom", 10)
        self.pub_rgb = self.create_publisher(Image, "/camera/rgb/image_raw", qos.SENSOR_PUB)
        self.pub_rgb_info = self.create_publisher(CameraInfo, "/camera/rgb/camera_info", qos.SENSOR_PUB)
        self.pub_depth = self.create_publisher(Image, "/camera/depth/image_raw", qos.SENSOR_PUB)
        self.pub_depth_info = self.create_publisher(CameraInfo, "/camera/depth/camera_info", qos.SENSOR_PUB)
        self.pub_lidar = self.create_publisher(PointCloud2, "/lidar/points", qos.SENSOR_PUB) if cfg.lidar else None
        self.pub_instruction = self.create_publisher(String, "/vlnce/instruction", qos.LATCHED)
        self.pub_episode = self.create_publisher(String, "/vlnce/episode", qos.LATCHED)
        self.pub_metrics = self.create_publisher(String, "/vlnce/metrics", qos.LATCHED)
        self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, qos.CMD_SUB)
        self.create_subscription(String, "/vlnce/action", self._on_action, qos.EVENTS)
        self._setup_tf()
        self.finished = False
        self._next_camera = 0.0
        self._next_lidar = 0.0
        self._done_at: float | None = None
        self.results: list[dict] = []
        if self.episode_ids:
            self._start_episode(0)
        period = (1.0 / cfg.physics_rate_hz) / cfg.real_time_factor if cfg.real_time_factor > 0 else 1e-4
        self.timer = self.create_timer(period, self._tick)
        self.get_logger().info(f"simulating {self._describe()} at {cfg.physics_rate_hz:g} Hz physics, "
                               f"real-time factor {cfg.real_time_factor:g}")

    # --- world and episodes -----------------------------------------------------------------
    def _load_world(self) -> None:
        from sim.backends import make_simulator
        from sim.robot import RobotLimits, SimulatedRobot

        cfg = self.cfg
        self.limits = RobotLimits(cfg.physics_rate_hz, cfg.cmd_timeout_s, cfg.max_linear_mps, cfg.max_angular_rps)
        self.task = None
        self.episode_ids: list[str] = []
        if cfg.free_roam:
            sim = make_simulator(cfg.simulator_config())
            sim.reset()
            self.robot = SimulatedRobot(sim, self.limits)
            self.odom_frame = frames.OdomFrame(*self.robot.pose())
            return
        from sim.tasks.benchmark import locate_dataset
        from sim.tasks.dataset import load_dataset
        from sim.tasks.vln import TaskConfig, VLNCETask

        data_dir, scenes_dir = locate_dataset(cfg.dataset)
        self.dataset = load_dataset(data_dir, cfg.split, strict=False)
        by_id = self.dataset.by_id()
        ids = cfg.episodes or [sorted(by_id, key=lambda i: (len(i), i))[0]]
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            from vlnce.errors import DatasetError

            raise DatasetError(f"episode id(s) {', '.join(unknown)} not in {cfg.dataset} split {cfg.split!r}")
        self.episode_ids = list(ids)
        self.by_id = by_id
        self.task = VLNCETask(cfg.simulator_config(), TaskConfig(max_episode_steps=cfg.max_steps), scenes_dir=scenes_dir)
        self.robot = None

    def _describe(self) -> str:
        if self.cfg.free_roam:
            return f"scene {self.cfg.scene} (free roaming)"
        return f"{len(self.episode_ids)} episode(s) of {self.cfg.dataset}/{self.cfg.split}"

    def _start_episode(self, index: int) -> None:
        from sim.robot import SimulatedRobot

        self.episode_index = index
        ep = self.by_id[self.episode_ids[index]]
        self.task.reset(ep, self.dataset.gt.get(ep.episode_id))
        if self.robot is None:
            self.robot = SimulatedRobot(self.task.sim, self.limits, self.task)
        self.robot.start_episode(self.task)
        self.odom_frame = frames.OdomFrame(*self.robot.pose())
        self._done_at = None
        self._next_camera = self.robot.time_s
        self._next_lidar = self.robot.time_s
        self.pub_instruction.publish(String(data=ep.instruction.instruction_text))
        info = {"episode_id": ep.episode_id, "scene_id": ep.scene_id, "instruction": ep.instruction.instruction_text,
                "start_position": list(map(float, ep.start_position)), "start_rotation": list(map(float, ep.start_rotation)),
                "goal": list(map(float, ep.goals[0].position)), "start_time_s": self.robot.time_s,
                "goal_in_odom": self.odom_frame.to_odom(ep.goals[0].position, 0.0)[0].round(4).tolist(),
                "success_distance_m": self.task.task_config.success_distance_m,
                "turn_angle_deg": self.task.sim_config.agent.turn_angle_deg,
                "forward_step_m": self.task.sim_config.agent.forward_step_m}
        self.pub_episode.publish(String(data=json.dumps(info)))
        self.get_logger().info(f"episode {ep.episode_id} in {ep.scene_id}: {ep.instruction.instruction_text!r}")

    def _finish_episode(self) -> None:
        task, robot = self.task, self.robot
        metrics = json_values(task.metrics())
        result = {"episode_id": task.episode.episode_id, "scene_id": task.episode.scene_id, "metrics": metrics,
                  "stopped": task.stop_called, "steps": task.steps, "actions": robot.actions,
                  "sim_time_s": round(robot.time_s, 4)}
        self.results.append(result)
        self.pub_metrics.publish(String(data=json.dumps(result)))
        self.get_logger().info(f"episode {result['episode_id']} finished after {task.steps} actions: "
                               + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if v is not None))
        self._done_at = robot.time_s

    # --- callbacks --------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        warning = self.robot.command(msg.linear.x, msg.linear.y, msg.angular.z)
        if warning:
            self._warn_once("cmd_vel_nonfinite" if "not finite" in warning else "cmd_vel_clamped", f"/cmd_vel: {warning}")

    def _on_action(self, msg: String) -> None:
        name = msg.data.strip().upper()
        if name == "END":
            if self.robot is not None and self.task is not None and self._done_at is None:
                self.robot.end()
                self._finish_episode()
            return
        if name not in Action.__members__:
            self._warn_once("action", f"/vlnce/action: unknown action {msg.data!r}; expected one of {', '.join(Action.__members__)}")
            return
        if self.robot is not None and self.task is not None and self._done_at is None and self.robot.announce(Action[name]):
            self._finish_episode()

    def _tick(self) -> None:
        robot = self.robot
        if robot is None or self.finished:
            return
        robot.tick()
        t = robot.time_s
        self.pub_clock.publish(Clock(clock=messages.stamp(t)))
        self._publish_odom(t)
        if t + 1e-9 >= self._next_camera:
            self._next_camera += 1.0 / self.cfg.camera_rate_hz
            self._publish_cameras(t)
        if self.pub_lidar is not None and t + 1e-9 >= self._next_lidar:
            self._next_lidar += 1.0 / self.cfg.lidar_rate_hz
            self._publish_lidar(t)
        if self.task is not None:
            if self._done_at is None and robot.episode_done:  # step limit
                self._finish_episode()
            if self._done_at is not None and t - self._done_at >= self.cfg.episode_gap_s:
                if self.episode_index + 1 < len(self.episode_ids):
                    self._start_episode(self.episode_index + 1)
                elif self.cfg.exit_when_done:
                    self.finished = True

    # --- publishing ---------------------------------------------------------------------------
    def _publish_odom(self, t: float) -> None:
        pos, heading = self.robot.pose()
        p, yaw = self.odom_frame.to_odom(pos, heading)
        fwd, left, yaw_rate = self.robot.velocity
        self.pub_odom.publish(messages.odometry_msg(p[0], p[1], yaw, fwd, left, yaw_rate, t))
        if self._tf is not None:
            self._publish_tf(t, p, yaw)

    def _publish_cameras(self, t: float) -> None:
        obs = self.robot.sim.get_observations_at()
        hfov = math.radians(self.cfg.hfov_deg)
        self.pub_rgb.publish(messages.image_msg(obs["rgb"], "rgb8", t, "camera_rgb_optical_frame"))
        self.pub_rgb_info.publish(messages.camera_info_msg(self.cfg.rgb_size, self.cfg.rgb_size, hfov, t, "camera_rgb_optical_frame"))
        self.pub_depth.publish(messages.image_msg(obs["depth"][..., 0], "32FC1", t, "camera_depth_optical_frame"))
        self.pub_depth_info.publish(messages.camera_info_msg(self.cfg.depth_size, self.cfg.depth_size, hfov, t,
                                                             "camera_depth_optical_frame"))

    def _publish_lidar(self, t: float) -> None:
        scan = self.robot.sim.get_lidar_scan()
        self.pub_lidar.publish(messages.pointcloud_msg(scan.xyz, scan.intensity, scan.label, scan.valid, t, "lidar_link"))

    # --- tf -----------------------------------------------------------------------------------
    def _setup_tf(self) -> None:
        mod = _tf_module()
        self._tf = None
        if mod is None:
            self.get_logger().info("tf2_msgs is not importable (it has no pip wheel): /tf and /tf_static are not "
                                   "published; odom -> base_link is in /odom and the sensor mounts are fixed "
                                   "(see README, 'Run an agent on your robot')")
            return
        tf_msg, stamped = mod
        self._tf = (tf_msg, stamped)
        self.pub_tf = self.create_publisher(tf_msg, "/tf", 10)
        self.pub_tf_static = self.create_publisher(tf_msg, "/tf_static", qos.LATCHED)
        statics = []
        for child, mount, optical in self._sensor_mounts():
            statics.append(self._transform(0.0, "base_link", child, mount, (0.0, 0.0, 0.0, 1.0)))
            if optical:
                q = frames.matrix_to_quaternion(frames.BASE_TO_OPTICAL.T)
                statics.append(self._transform(0.0, child, optical, np.zeros(3), q))
        self.pub_tf_static.publish(tf_msg(transforms=statics))

    def _sensor_mounts(self):
        sim_cfg = self.cfg.simulator_config()
        out = [("camera_rgb_link", frames.mount_to_base(sim_cfg.sensors["rgb"].position_m), "camera_rgb_optical_frame"),
               ("camera_depth_link", frames.mount_to_base(sim_cfg.sensors["depth"].position_m), "camera_depth_optical_frame")]
        if self.cfg.lidar:
            out.append(("lidar_link", frames.mount_to_base(sim_cfg.lidar.position_m), None))
        return out

    def _transform(self, t: float, parent: str, child: str, xyz, q):
        msg = self._tf[1]()
        msg.header.stamp = messages.stamp(t)
        msg.header.frame_id, msg.child_frame_id = parent, child
        msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in xyz)
        r = msg.transform.rotation
        r.x, r.y, r.z, r.w = (float(v) for v in q)
        return msg

    def _publish_tf(self, t: float, p, yaw: float) -> None:
        self.pub_tf.publish(self._tf[0](transforms=[self._transform(t, "odom", "base_link", p, frames.yaw_quaternion(yaw))]))


def run(cfg: SimNodeConfig, results_path: Path | None = None) -> list[dict]:
    """Spin the simulator node until Ctrl-C (or, with ``exit_when_done``, the last episode's end)."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init()
    node = SimulatorNode(cfg)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not node.finished:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        results = node.results
        if results_path is not None:
            from vlnce.fileio import atomic_write_bytes

            atomic_write_bytes(results_path, json.dumps(results, indent=1).encode())
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return results
