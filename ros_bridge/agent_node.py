"""``vlnce ros agent``: any of our agents driving any ROS 2 robot.

Subscribes (sensor topics best-effort with a shallow queue, so a slow agent sees the newest
frame instead of a backlog):

- ``/camera/rgb/image_raw`` (rgb8, bgr8, rgba8, bgra8 or mono8) and ``/camera/depth/image_raw``
  (32FC1 metres or 16UC1 millimetres, as real depth cameras publish), with their ``camera_info``;
- ``/odom`` (nav_msgs/Odometry) for closed-loop motion;
- ``/vlnce/instruction`` (std_msgs/String, transient-local): a new text starts a new episode;
- ``/vlnce/episode`` (JSON, only read by privileged reference agents such as ``oracle``).

Publishes ``/cmd_vel`` (geometry_msgs/Twist), ``/vlnce/action`` (the name of each action as it
starts, and ``END`` after the last one when the step limit ends the episode; the simulator node
measures on it) and ``/vlnce/agent_status`` (JSON: state, step,
action).

The agent decides when frames newer than the end of its previous action have arrived (older
frames are stale and dropped), then executes the action with ``ros_bridge.control``. It never
waits for subscribers, and when the robot stops publishing it stops the robot and says so.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ros_bridge import frames, messages, qos
from ros_bridge.control import ActionExecutor, MotionConfig
from ros_bridge.node_logging import WarnOnce
from sim.actions import Action



def robot_sensors(sensors: dict) -> dict:
    """``sensors`` ({uuid: camera settings}) when a robot's RGB and depth cameras can provide them.

    Raises:
        ConfigError: the agent reads a simulator-only sensor (e.g. the privileged room-type
            sensors of a ``--room-labels`` checkpoint).
    """
    from vlnce.errors import ConfigError

    other = sorted(f"{uuid} ({s['type']})" for uuid, s in sensors.items() if s["type"] not in ("rgb", "depth"))
    if other:
        raise ConfigError(f"this agent reads the simulator's sensors {', '.join(other)}, which a robot does not have "
                          "(the topics give RGB and depth only); it is a measurement for the simulator")
    return sensors


@dataclass
class AgentNodeConfig:
    agent: str = "cma"
    checkpoint: str | None = None
    motion: MotionConfig = field(default_factory=MotionConfig)
    max_steps: int = 500
    use_sim_time: bool = True
    stale_timeout_s: float = 2.0  # wall seconds without sensor data before the robot is stopped
    dataset: str = "embedded"  # where privileged agents find the episode's scene
    seed: int = 0
    exit_gate: bool = False  # learned agents with a room sense: agents.exit_gate beside the policy


class PrivilegedView:
    """What privileged reference agents (oracle, instruction_blind) read from a simulator, rebuilt on
    the robot's side: the episode scene's navigation grid, and the pose from odometry."""

    def __init__(self, info: dict, dataset: str) -> None:
        from sim.backends.embedded import EmbeddedSimulator
        from sim.config import SimulatorConfig
        from sim.tasks.benchmark import locate_dataset
        from sim.tasks.vln import resolve_scene_id

        _, scenes_dir = locate_dataset(dataset, progress=False)
        cfg = SimulatorConfig(scene=resolve_scene_id(info["scene_id"], scenes_dir), sensors={})
        cfg.agent.turn_angle_deg = float(info.get("turn_angle_deg", cfg.agent.turn_angle_deg))
        self._sim = EmbeddedSimulator(cfg)
        self.config, self.pathfinder = self._sim.config, self._sim.pathfinder
        from sim.geometry import heading_from_quat

        self.frame = frames.OdomFrame(info["start_position"], heading_from_quat(info["start_rotation"]))
        self.odom = (0.0, 0.0, 0.0)

    def get_agent_state(self):
        from sim.backends.base import AgentState
        from sim.geometry import quat_from_heading

        position, heading = self.frame.to_world(np.array([self.odom[0], self.odom[1], 0.0]), self.odom[2])
        return AgentState(position, quat_from_heading(heading))

    def get_straight_shortest_path_points(self, a, b):
        return self._sim.get_straight_shortest_path_points(a, b)

    def geodesic_distance(self, a, b):
        return self._sim.geodesic_distance(a, b)

    def close(self):
        self._sim.close()


class AgentNode(WarnOnce, Node):
    """Thin ROS layer over an ``agents`` Agent and ``ros_bridge.control.ActionExecutor``."""

    def __init__(self, cfg: AgentNodeConfig) -> None:
        super().__init__("vlnce_agent", parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, cfg.use_sim_time)])
        from agents.evaluation import make_agent

        self.cfg = cfg
        # the gate dead-reckons from the actions it chose, so it steps and turns as the robot does
        gate = {"forward_step_m": cfg.motion.forward_step_m, "turn_angle_deg": cfg.motion.turn_angle_deg}
        self.agent = make_agent(cfg.agent, cfg.checkpoint, exit_gate=cfg.exit_gate,
                                exit_gate_options=gate if cfg.exit_gate else None)
        self.sensors = robot_sensors(self.agent.sensor_config()) if self.agent.needs_observations else None
        self.executor_ = ActionExecutor(cfg.motion)
        self.pub_cmd = self.create_publisher(Twist, "/cmd_vel", 10)
        self.pub_action = self.create_publisher(String, "/vlnce/action", qos.EVENTS)
        self.pub_status = self.create_publisher(String, "/vlnce/agent_status", 10)
        self.create_subscription(Image, "/camera/rgb/image_raw", self._on_rgb, qos.SENSOR_SUB)
        self.create_subscription(Image, "/camera/depth/image_raw", self._on_depth, qos.SENSOR_SUB)
        self.create_subscription(CameraInfo, "/camera/rgb/camera_info", self._on_info, qos.SENSOR_SUB)
        self.create_subscription(Odometry, "/odom", self._on_odom, qos.SENSOR_SUB)
        self.create_subscription(String, "/vlnce/instruction", self._on_instruction, qos.LATCHED)
        self.create_subscription(String, "/vlnce/episode", self._on_episode, qos.LATCHED)
        self.create_timer(0.02, self._on_timer)  # sim time when use_sim_time
        from rclpy.clock import Clock, ClockType

        self.create_timer(0.5, self._watchdog, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.state = "waiting_for_instruction"
        self.step = 0
        self.instruction: str | None = None
        self.episode_info: dict | None = None
        self.view: PrivilegedView | None = None
        self.frames_ = {}  # name -> (stamp_s, array)
        self.pose = None
        self.odom_stamp = None
        self.control_dt = 0.02
        self.ready_after = math.inf
        self.last_data_wall = time.monotonic()
        self.episodes_done = 0
        self.blocked_steps = 0
        self.get_logger().info(f"agent {cfg.agent!r} ready; waiting for an instruction on /vlnce/instruction")

    # --- helpers --------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _status(self, action: str | None = None) -> None:
        self.pub_status.publish(String(data=json.dumps({"state": self.state, "step": self.step, "action": action,
                                                        "instruction": self.instruction})))

    # --- episodes ---------------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self._warn_once("empty", "/vlnce/instruction: empty instruction ignored; the agent keeps waiting")
            return
        if text == self.instruction:
            return
        self.instruction = text
        self._maybe_start()

    def _on_episode(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
            info["scene_id"], info["instruction"]  # noqa: B018 - required fields
        except (ValueError, KeyError, TypeError) as exc:
            self._warn_once("episode", f"/vlnce/episode: unreadable episode info ({exc}); ignored")
            return
        self.episode_info = info
        self._maybe_start()

    def _maybe_start(self) -> None:
        from agents.base import EpisodeInfo
        from agents.evaluation import episode_seed

        privileged = None
        if self.agent.privileged:
            info = self.episode_info
            if info is None or info.get("instruction", "").strip() != self.instruction:
                return  # the matching /vlnce/episode has not arrived yet
            if self.view is not None:
                self.view.close()
            self.view = PrivilegedView(info, self.cfg.dataset)
            if self.pose is not None:
                self.view.odom = self.pose
            privileged = {"sim": self.view, "goal": info["goal"], "distractors": info.get("distractors", [])}
        episode_id = str(self.episode_info["episode_id"]) if self.episode_info else str(self.episodes_done)
        rng = np.random.default_rng(episode_seed(self.cfg.seed, episode_id))
        self.agent.reset(EpisodeInfo(episode_id, self.instruction, rng, privileged))
        self.step = 0
        self.state = "deciding"
        self.ready_after = self._now()
        self.get_logger().info(f"new episode {episode_id}: {self.instruction!r}")
        self._status()

    # --- sensors ------------------------------------------------------------------------------------
    def _on_rgb(self, msg: Image) -> None:
        self._store_frame("rgb", msg)

    def _on_depth(self, msg: Image) -> None:
        self._store_frame("depth", msg)

    def _on_info(self, msg: CameraInfo) -> None:
        if self.sensors and "rgb" in self.sensors:
            try:
                hfov = math.degrees(messages.hfov_from_camera_info(msg))
            except messages.BadMessage as exc:
                self._warn_once("info", f"/camera/rgb/camera_info: {exc}")
                return
            want = self.sensors["rgb"]["hfov_deg"]
            if abs(hfov - want) > 2.0:
                self._warn_once("hfov", f"camera HFOV is {hfov:.1f} deg but the agent was trained with {want:.1f} deg; "
                                        "it will see a different field of view")

    def _store_frame(self, kind: str, msg: Image) -> None:
        self.last_data_wall = time.monotonic()
        if not self.sensors or kind not in self.sensors:
            return
        try:
            if kind == "rgb":
                img = messages.rgb_from_msg(msg)
            else:
                img, n_bad = messages.depth_from_msg(msg)
                if n_bad:
                    self._warn_once("depth_nan", f"/camera/depth/image_raw: {n_bad} non-finite depth pixels "
                                                 "(NaN read as no return = 0, +-inf clipped to the depth range)")
            self.frames_[kind] = (messages.to_seconds(msg.header.stamp), self._prepare(kind, img))
        except messages.BadMessage as exc:
            self._warn_once(f"bad_{kind}", f"/camera/{kind}/image_raw: {exc}; frame dropped")
            return
        self._try_decide()

    def _prepare(self, kind: str, img: np.ndarray) -> np.ndarray:
        """Resize and normalise a frame to what the agent was trained on."""
        from PIL import Image as PILImage

        s = self.sensors[kind]
        h, w = s["height_px"], s["width_px"]
        if img.shape[:2] != (h, w):
            self._warn_once(f"size_{kind}", f"{kind} images are {img.shape[1]}x{img.shape[0]}; resized to the agent's {w}x{h}")
            if kind == "rgb":
                img = np.asarray(PILImage.fromarray(img).resize((w, h), PILImage.BILINEAR))
            else:
                img = np.asarray(PILImage.fromarray(img.astype(np.float32), mode="F").resize((w, h), PILImage.NEAREST))
        if kind == "depth":
            from sim.sensors.camera import finish_depth

            lo, hi = float(s.get("min_depth_m", 0.0)), float(s.get("max_depth_m", 10.0))
            # the clip inside maps +-inf to the range ends; NaN was already read as 0 (no return)
            return finish_depth(np.nan_to_num(img, nan=0.0, posinf=hi, neginf=lo), lo, hi, s.get("normalize_depth", True))
        return np.array(img, dtype=np.uint8)  # a writable copy: torch warns on read-only buffers

    def _on_odom(self, msg: Odometry) -> None:
        self.last_data_wall = time.monotonic()
        try:
            pose = messages.pose_from_odometry(msg)
        except messages.BadMessage as exc:
            self._warn_once("odom", f"/odom: {exc}; message dropped")
            return
        t = messages.to_seconds(msg.header.stamp)
        if self.odom_stamp is not None and t > self.odom_stamp:
            self.control_dt = min(t - self.odom_stamp, 0.2)
        self.pose, self.odom_stamp = pose, t
        if self.view is not None:
            self.view.odom = pose
        if self.state == "executing":
            self._control(t)
        else:
            self._try_decide()

    # --- deciding and acting ------------------------------------------------------------------------
    def _fresh_observations(self) -> dict | None:
        if not self.sensors:
            return {}
        obs = {}
        for kind in self.sensors:
            got = self.frames_.get(kind)
            if got is None or got[0] + 1e-6 < self.ready_after:
                return None  # missing or stale: taken before the last action ended
            obs[kind] = got[1]
        return obs

    def _try_decide(self) -> None:
        if self.state != "deciding":
            return
        if self.cfg.motion.closed_loop and (self.odom_stamp is None or self.odom_stamp + 1e-6 < self.ready_after):
            return  # the pose at the end of the last action has not arrived yet
        obs = self._fresh_observations()
        if obs is None:
            return
        action = int(self.agent.act(obs))
        if action not in tuple(Action):
            self.get_logger().error(f"agent {self.cfg.agent!r} returned invalid action {action!r}; stopping")
            action = int(Action.STOP)
        self.step += 1
        name = Action(action).name
        self.pub_action.publish(String(data=name))
        if action == Action.STOP:
            self._finish("stopped")
            return
        now = self.odom_stamp if self.cfg.motion.closed_loop and self.odom_stamp is not None else self._now()
        self.executor_.start(action, now, self.pose)
        self.state = "executing"
        self._status(name)
        self._control(now)

    def _control(self, t: float) -> None:
        fwd, yaw_rate = self.executor_.update(t, self.pose if self.cfg.motion.closed_loop else None, self.control_dt)
        self.pub_cmd.publish(messages.twist_msg(fwd, yaw_rate))
        if self.executor_.done:
            if self.executor_.gave_up:
                self.blocked_steps += 1
                self.get_logger().info(f"step {self.step} ({self.executor_.action.name}) stopped short: blocked "
                                       f"({self.blocked_steps} so far)", throttle_duration_sec=5.0)
            if self.step >= self.cfg.max_steps:
                # the last action is done and none follows: "END" lets the simulator measure it
                self.pub_action.publish(String(data="END"))
                self._finish("step_limit")
                return
            self.state = "deciding"
            # decide on frames taken after the robot has come to rest: one control period later
            self.ready_after = t + self.control_dt
            self._status()

    def _on_timer(self) -> None:
        if self.state == "executing" and not (self.cfg.motion.closed_loop and self.pose is not None):
            self._control(self._now())
        elif self.state == "deciding":
            self._try_decide()

    def _finish(self, why: str) -> None:
        self.pub_cmd.publish(messages.twist_msg(0.0, 0.0))
        self.state = why
        self.episodes_done += 1
        self.get_logger().info(f"episode over after {self.step} actions ({why})")
        self._status("STOP" if why == "stopped" else None)

    def _watchdog(self) -> None:
        if self.state in ("executing", "deciding") and time.monotonic() - self.last_data_wall > self.cfg.stale_timeout_s:
            self.pub_cmd.publish(messages.twist_msg(0.0, 0.0))
            self._warn_once("stale", f"no odometry or images for {self.cfg.stale_timeout_s:g} s: the robot has stopped "
                                     "publishing; holding still and waiting")


def run(cfg: AgentNodeConfig, episodes: int = 0) -> int:
    """Spin until Ctrl-C, or until ``episodes`` episodes are over (0: forever)."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init()
    node = AgentNode(cfg)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not (episodes and node.episodes_done >= episodes):
            executor.spin_once(timeout_sec=0.1)
        # the last /vlnce/action (STOP or END) must reach the simulator before this process goes:
        # a reliable message still unacknowledged when its writer dies can be lost, and the
        # simulator would then wait for an end that never comes
        from rclpy.duration import Duration

        if not node.pub_action.wait_for_all_acked(Duration(seconds=5.0)):
            node.get_logger().warning("the last /vlnce/action was not acknowledged by every subscriber within 5 s")
        end = time.monotonic() + 0.2
        while rclpy.ok() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.pub_cmd.publish(messages.twist_msg(0.0, 0.0))
        except Exception:  # noqa: BLE001 - the context may already be gone on Ctrl-C
            pass
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return node.episodes_done
