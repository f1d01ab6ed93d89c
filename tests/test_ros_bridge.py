"""The ROS 2 bridge: frames, message conversion, timed actions, the velocity-driven robot, and an
end-to-end episode over real DDS (loopback only) against the same agent run in-process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_bridge import frames
from ros_bridge.control import ActionExecutor, MotionConfig
from sim.actions import Action
from sim.geometry import heading_from_quat
from tests.conftest import box_room, make_sim

REPO = Path(__file__).resolve().parent.parent


# --- frames (pure numpy) ------------------------------------------------------------------------
def test_habitat_to_ros_axes():
    # Habitat forward (-z) is ROS +x, Habitat right (+x) is ROS -y (ROS y is left), up stays up
    np.testing.assert_allclose(frames.position_to_ros([0, 0, -1]), [1, 0, 0])
    np.testing.assert_allclose(frames.position_to_ros([1, 0, 0]), [0, -1, 0])
    np.testing.assert_allclose(frames.position_to_ros([0, 1, 0]), [0, 0, 1])
    p = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(frames.position_from_ros(frames.position_to_ros(p)), p)
    assert np.linalg.det(frames.HABITAT_TO_ROS) == pytest.approx(1.0)  # a rotation, not a mirror


def test_heading_is_ros_yaw():
    # a Habitat heading h looks along (-sin h, 0, -cos h); in ROS that direction has yaw h
    for h in (0.0, 0.3, math.pi / 2, -2.0):
        d = frames.position_to_ros([-math.sin(h), 0, -math.cos(h)])
        assert math.atan2(d[1], d[0]) == pytest.approx(h)


def test_odom_frame_round_trip():
    odom = frames.OdomFrame([2.0, 0.1, -3.0], 0.7)
    p, yaw = odom.to_odom([2.0, 0.1, -3.0], 0.7)
    np.testing.assert_allclose(p, 0, atol=1e-12)
    assert yaw == pytest.approx(0)
    # one metre along the start heading is (1, 0) in odom
    fwd = np.array([-math.sin(0.7), 0, -math.cos(0.7)])
    p, _ = odom.to_odom(np.array([2.0, 0.1, -3.0]) + fwd, 0.7)
    np.testing.assert_allclose(p, [1, 0, 0], atol=1e-12)
    world, h = odom.to_world(*odom.to_odom([5.0, 0.1, 1.0], -1.2))
    np.testing.assert_allclose(world, [5.0, 0.1, 1.0], atol=1e-12)
    assert h == pytest.approx(-1.2)


def test_quaternions():
    for yaw in (0.0, 1.0, -2.5, math.pi):
        q = frames.yaw_quaternion(yaw)
        assert abs(frames.yaw_from_quaternion(*q) - math.atan2(math.sin(yaw), math.cos(yaw))) < 1e-9
    # the optical frame's z (viewing direction) is base_link's x (forward)
    from sim.geometry import rotation_matrix

    r = rotation_matrix(frames.matrix_to_quaternion(frames.BASE_TO_OPTICAL.T))
    np.testing.assert_allclose(r, frames.BASE_TO_OPTICAL.T, atol=1e-12)
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(frames.mount_to_base([0.0, 1.25, 0.0]), [0, 0, 1.25])


# --- timed actions (pure) ---------------------------------------------------------------------------
def _drive(ex: ActionExecutor, action, dt=0.02, pose=(0.0, 0.0, 0.0), closed=True, wall_x=None, steps=400, late=0):
    """Integrate the executor's commands like a robot with a physics step of ``dt``; with ``late``,
    each command takes effect that many physics steps after the pose it was computed from."""
    x, y, yaw = pose
    t = 0.0
    ex.start(action, t, (x, y, yaw) if closed else None)
    queue = [(0.0, 0.0)] * late
    for _ in range(steps):
        cmd = ex.update(t, (x, y, yaw) if closed else None, dt)
        if ex.done and not any(v or w for v, w in queue):
            break
        queue.append(cmd)
        v, w = queue.pop(0)
        nx = x + v * math.cos(yaw) * dt
        if wall_x is not None:
            nx = min(nx, wall_x)
        x, y, yaw, t = nx, y + v * math.sin(yaw) * dt, yaw + w * dt, t + dt
    return (x, y, yaw), t


def test_closed_loop_lands_on_the_step():
    ex = ActionExecutor(MotionConfig(linear_speed_mps=0.3, angular_speed_rps=math.radians(40)))
    (x, y, _), t = _drive(ex, Action.MOVE_FORWARD)
    assert x == pytest.approx(0.25, abs=1e-5) and y == pytest.approx(0)  # on the target, never past it
    assert x <= 0.25 + 1e-12
    assert 0.25 / 0.3 <= t <= 0.25 / 0.3 + 0.2  # full speed, then a few halving periods
    (_, _, yaw), _ = _drive(ex, Action.TURN_RIGHT, pose=(0, 0, 0.5))
    assert 0.5 - math.radians(15) - 1e-12 <= yaw <= 0.5 - math.radians(15 - 1e-3)


def test_closed_loop_tolerates_a_late_period():
    # commands acting one physics step late overshoot by at most half a step's travel at full speed
    # (asking for the whole remainder would overshoot by a whole step: 10 mm and 1.8 deg here)
    ex = ActionExecutor(MotionConfig(linear_speed_mps=0.5, angular_speed_rps=math.radians(90)))
    (x, _, _), _ = _drive(ex, Action.MOVE_FORWARD, late=1)
    assert abs(x - 0.25) <= 0.5 * 0.5 * 0.02 + 1e-9
    (_, _, yaw), _ = _drive(ex, Action.TURN_LEFT, late=1)
    assert abs(yaw - math.radians(15)) <= 0.5 * math.radians(90) * 0.02 + 1e-9


def test_open_loop_holds_for_distance_over_speed():
    ex = ActionExecutor(MotionConfig(linear_speed_mps=0.25, closed_loop=False))
    (x, _, _), t = _drive(ex, Action.MOVE_FORWARD, closed=False)
    assert t == pytest.approx(1.0, abs=0.021) and x == pytest.approx(0.25, abs=0.006)
    assert ex.nominal_duration(Action.TURN_LEFT) == pytest.approx(0.5)  # 15 deg at 30 deg/s


def test_blocked_step_gives_up():
    ex = ActionExecutor(MotionConfig())
    (x, _, _), t = _drive(ex, Action.MOVE_FORWARD, wall_x=0.1)
    assert ex.done and ex.gave_up and x == pytest.approx(0.1)
    assert t < 1.0 + 0.2  # nominal 1 s plus the stall window, not the 3x timeout


def test_motion_config_rejects_bad_values():
    from vlnce.errors import ConfigError

    with pytest.raises(ConfigError, match="linear_speed_mps"):
        MotionConfig(linear_speed_mps=0.0).validate()


# --- the velocity-driven robot (no ROS) -------------------------------------------------------------------
def test_step_velocity_integrates_exactly_in_free_space():
    sim = make_sim(box_room(), sensors={})
    sim.set_agent_state([3.0, 0.0, 3.0], [0, 0, 0, 1])
    for _ in range(50):
        sim.step_velocity(0.5, 0.0, 0.0, 0.02)  # 0.5 m/s for 1 s along -z
    np.testing.assert_allclose(sim.get_agent_state().position[[0, 2]], [3.0, 2.5], atol=1e-9)
    for _ in range(25):
        sim.step_velocity(0.0, 0.0, math.radians(60), 0.02)
    assert heading_from_quat(sim.get_agent_state().rotation) == pytest.approx(math.radians(30))
    sim.set_agent_state([3.0, 0.0, 1.0], [0, 0, 0, 1])
    collided = [sim.step_velocity(1.0, 0.0, 0.0, 0.1) for _ in range(20)]
    assert any(collided) and sim.get_agent_state().position[2] > 0.0  # stopped at the wall at z=0
    with pytest.raises(ValueError, match="finite"):
        sim.step_velocity(float("nan"), 0, 0, 0.02)


def test_robot_clamps_and_times_out_commands():
    from sim.robot import RobotLimits, SimulatedRobot

    sim = make_sim(box_room(), sensors={})
    sim.set_agent_state([3.0, 0.0, 4.0], [0, 0, 0, 1])
    robot = SimulatedRobot(sim, RobotLimits(physics_rate_hz=50, cmd_timeout_s=0.2, max_linear_mps=1.0))
    assert "clamped" in robot.command(5.0, 0.0, 0.0)
    robot.tick()
    assert robot.velocity[0] == pytest.approx(1.0)
    assert "not finite" in robot.command(float("inf"), 0.0, 0.0)
    robot.tick()
    assert robot.velocity == (0.0, 0.0, 0.0)
    robot.command(0.5, 0.0, 0.0)
    z0 = sim.get_agent_state().position[2]
    for _ in range(50):  # 1 s of ticks, but the command goes stale after 0.2 s
        robot.tick()
    moved = z0 - sim.get_agent_state().position[2]
    assert moved == pytest.approx(0.5 * 0.22, abs=1e-9)  # 11 ticks within the timeout (inclusive)
    assert robot.time_s == pytest.approx(52 * 0.02)


def test_announced_actions_measure_like_discrete_steps(bench):
    """Actions executed as velocities and announced give exactly the metrics of discrete steps."""
    from sim.config import SimulatorConfig
    from sim.robot import SimulatedRobot
    from sim.tasks.dataset import load_dataset
    from sim.tasks.vln import VLNCETask

    data, _ = bench
    ds = load_dataset(data, "val_unseen")
    ep = ds.episodes[0]
    gt = ds.gt[ep.episode_id]
    cfg = SimulatorConfig(sensors={})
    ref = VLNCETask(cfg, scenes_dir=data / "scenes")
    ref.reset(ep, gt)
    for a in gt.actions:
        ref.step(a)
    task = VLNCETask(cfg, scenes_dir=data / "scenes")
    task.reset(ep, gt)
    robot = SimulatedRobot(task.sim, task=task)
    robot.start_episode(task)
    for a in gt.actions:
        robot.announce(a)
        if a == Action.MOVE_FORWARD:
            for _ in range(25):  # 0.25 m at 0.5 m/s with 50 Hz physics
                robot.command(0.5, 0.0, 0.0)
                robot.tick()
        elif a in (Action.TURN_LEFT, Action.TURN_RIGHT):
            for _ in range(10):  # 15 deg at 75 deg/s
                robot.command(0.0, 0.0, math.radians(75) * (1 if a == Action.TURN_LEFT else -1))
                robot.tick()
    assert task.stop_called and task.steps == len(gt.actions)
    want, got = ref.metrics(), task.metrics()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=2e-3), k
    ref.close()
    task.close()


# --- messages (need the ROS 2 message packages) -----------------------------------------------------------
def test_image_round_trips():
    messages = pytest.importorskip("ros_bridge.messages", exc_type=ImportError)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = messages.image_msg(rgb, "rgb8", 12.5, "cam")
    assert (msg.width, msg.height, msg.step) == (7, 5, 21)
    assert messages.to_seconds(msg.header.stamp) == pytest.approx(12.5)
    np.testing.assert_array_equal(messages.rgb_from_msg(msg), rgb)
    bgr = messages.image_msg(rgb[..., ::-1].copy(), "bgr8", 0.0, "cam")
    np.testing.assert_array_equal(messages.rgb_from_msg(bgr), rgb)
    depth = rng.uniform(0.1, 9, (4, 6)).astype(np.float32)
    got, bad = messages.depth_from_msg(messages.image_msg(depth, "32FC1", 0.0, "d"))
    np.testing.assert_array_equal(got, depth)
    assert bad == 0
    mm = (depth * 1000).astype(np.uint16)
    got, _ = messages.depth_from_msg(messages.image_msg(mm, "16UC1", 0.0, "d"))
    np.testing.assert_allclose(got, mm / 1000.0, atol=1e-6)
    depth[0, 0], depth[1, 1] = np.nan, np.inf
    got, bad = messages.depth_from_msg(messages.image_msg(depth, "32FC1", 0.0, "d"))
    assert bad == 2 and got[0, 0] == 0.0 and got[1, 1] == np.inf


def test_bad_images_are_named():
    messages = pytest.importorskip("ros_bridge.messages", exc_type=ImportError)
    msg = messages.image_msg(np.zeros((4, 4, 3), np.uint8), "rgb8", 0.0, "cam")
    msg.encoding = "yuv422"
    with pytest.raises(messages.BadMessage, match="yuv422.*expected one of"):
        messages.rgb_from_msg(msg)
    msg = messages.image_msg(np.zeros((4, 4, 3), np.uint8), "rgb8", 0.0, "cam")
    msg.height = 5
    with pytest.raises(messages.BadMessage, match="needs 60 bytes"):
        messages.rgb_from_msg(msg)
    with pytest.raises(messages.BadMessage, match="expected one of 32FC1"):
        messages.depth_from_msg(messages.image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8", 0.0, "c"))


def test_pointcloud_camera_info_and_odometry():
    messages = pytest.importorskip("ros_bridge.messages", exc_type=ImportError)
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(3, 5, 3)).astype(np.float32)
    valid = rng.random((3, 5)) > 0.3
    label = rng.integers(0, 20, (3, 5))
    msg = messages.pointcloud_msg(xyz, rng.random((3, 5)).astype(np.float32), label, valid, 1.0, "lidar_link")
    assert msg.point_step == 20 and not msg.is_dense
    pts = messages.pointcloud_fields(msg, ("x", "y", "z", "label"))
    np.testing.assert_array_equal(pts["x"][valid], xyz[..., 0][valid])
    assert np.isnan(pts["x"][~valid]).all()
    np.testing.assert_array_equal(pts["label"], label)
    msg.fields = msg.fields[:3]
    with pytest.raises(messages.BadMessage, match="lacks field.*label"):
        messages.pointcloud_fields(msg, ("x", "y", "z", "label"))
    info = messages.camera_info_msg(224, 224, math.radians(90), 0.0, "cam")
    assert info.k[0] == pytest.approx(112.0) and info.k[2] == pytest.approx(112.0)
    assert math.degrees(messages.hfov_from_camera_info(info)) == pytest.approx(90.0)
    odom = messages.odometry_msg(1.0, -2.0, 0.8, 0.25, 0.0, 0.1, 3.0)
    assert messages.pose_from_odometry(odom) == pytest.approx((1.0, -2.0, 0.8))
    odom.pose.pose.position.x = float("nan")
    with pytest.raises(messages.BadMessage, match="not finite"):
        messages.pose_from_odometry(odom)


# --- end to end over loopback DDS -------------------------------------------------------------------------
def _ros_env():
    from ros_bridge.dds import loopback_environment

    env = loopback_environment()
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run_pair(tmp_path, dataset, episode, agent_args, sim_args=(), timeout=240):
    """Start the simulator node and the agent node as two processes; return the sim's results.

    Their output goes to files, not pipes: a pipe nobody reads fills up and blocks the writer.
    """
    pytest.importorskip("rclpy")
    vlnce = [sys.executable, "-m", "vlnce.cli.main"]
    results = tmp_path / "results.json"
    env = _ros_env()
    logs = {name: open(tmp_path / f"{name}.log", "w+") for name in ("sim", "agent")}
    sim = subprocess.Popen(vlnce + ["ros", "sim", "--dataset", str(dataset), "--split", "val_unseen", "--episodes", episode,
                                    "--exit-when-done", "--results", str(results), *sim_args],
                           env=env, cwd=REPO, stdout=logs["sim"], stderr=subprocess.STDOUT, text=True)
    agent = subprocess.Popen(vlnce + ["ros", "agent", "--episodes", "1", "--dataset", str(dataset), *agent_args],
                             env=env, cwd=REPO, stdout=logs["agent"], stderr=subprocess.STDOUT, text=True)

    def outputs():
        return "".join(f"--- {name} ---\n{(tmp_path / f'{name}.log').read_text()[-4000:]}\n" for name in logs)

    try:
        sim.wait(timeout=timeout)
        agent.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the ROS episode did not finish in time\n" + outputs())
    finally:
        for p in (sim, agent):
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
    assert sim.returncode == 0 and results.is_file(), outputs()
    assert agent.returncode == 0, outputs()
    return json.loads(results.read_text())[0], (tmp_path / "sim.log").read_text(), (tmp_path / "agent.log").read_text()


def _in_process(tmp_path, dataset, agent, checkpoint=None, max_steps=500, name=None):
    """Every val_unseen episode's record, run in this process: {episode id: record}."""
    from agents.evaluation import EvalConfig, evaluate, read_episode_log

    cfg = EvalConfig(agent=agent, split="val_unseen", dataset=str(dataset), checkpoint=checkpoint, maps=False,
                     max_steps=max_steps)
    out = tmp_path / (name or f"inproc_{agent}")
    evaluate(cfg, out, progress=False)
    return read_episode_log(out / "episodes.jsonl")


def _shortest_episode(dataset):
    from sim.tasks.dataset import load_dataset

    ds = load_dataset(dataset, "val_unseen")
    return min(ds.gt, key=lambda i: (len(ds.gt[i].actions), i))


def test_oracle_episode_over_ros_matches_in_process(bench, tmp_path):
    data, _ = bench
    episode = _shortest_episode(data)
    got, sim_out, _ = _run_pair(tmp_path, data, episode, ["--agent", "oracle", "--linear-speed", "0.5", "--angular-speed", "90"],
                                ["--rgb-size", "32", "--depth-size", "32", "--real-time-factor", "2"])
    want = _in_process(tmp_path, data, "oracle")[episode]
    # closed-loop motion lands each step within 0.01 mm / 0.001 deg, so on an idle machine the
    # action sequences and metrics are identical; the tolerances leave room for a busy one, where
    # late commands overshoot by millimetres and can change a later turn
    assert got["stopped"] and got["metrics"]["success"] == want["metrics"]["success"] == 1.0
    assert got["metrics"]["oracle_success"] == want["metrics"]["oracle_success"]
    assert got["metrics"]["distance_to_goal"] == pytest.approx(want["metrics"]["distance_to_goal"], abs=0.25)
    assert got["metrics"]["path_length"] == pytest.approx(want["metrics"]["path_length"], abs=0.25, rel=0.05)
    for k in ("spl", "ndtw"):
        assert got["metrics"][k] == pytest.approx(want["metrics"][k], abs=0.05), k


def _decisive_episode(tmp_path, dataset, checkpoint, max_steps, monkeypatch):
    """A val_unseen episode on which the bridge's fidelity decides the trained agent's actions.

    Returns (episode id, its in-process record, the number k of leading actions to compare, and the
    smallest top-1 minus top-2 logit gap among them). Two things make an episode a good witness:

    - the agent acts on what it sees there: with its frames flipped upside down (a row-order or
      camera-mount bug) its action k - 1 differs, so the first k actions catch such a bug. On
      episodes where it turns on the spot whatever it sees, a broken image path would go unnoticed;
    - those k decisions are clear of ties: frames sent over ROS are rendered at poses a few
      millimetres off the in-process ones (closed-loop velocity control, not teleporting), enough
      to flip a near-tie argmax, which would test the policy's knife edge, not the bridge. The
      offsets grow with every step, so only the leading actions are compared, and episodes whose
      flipped run diverges early are preferred.
    """
    from agents.learned import LearnedAgent

    gaps: dict[str, list[float]] = {}
    reset, act = LearnedAgent.reset, LearnedAgent.act
    flip = False

    def reset_and_track(self, info):
        gaps[info.episode_id] = []
        self._episode = info.episode_id
        return reset(self, info)

    def act_and_track(self, obs):
        if flip:
            obs = {k: v[::-1].copy() if k in ("rgb", "depth") else v for k, v in obs.items()}
        action = act(self, obs)
        top2 = self.last_logits.topk(2).values
        gaps[self._episode].append(float(top2[0] - top2[1]))
        return action

    monkeypatch.setattr(LearnedAgent, "reset", reset_and_track)
    monkeypatch.setattr(LearnedAgent, "act", act_and_track)
    records = []
    for flip in (False, True):
        records.append(_in_process(tmp_path, dataset, "cma", checkpoint, max_steps, name=f"inproc_flip{int(flip)}"))
        if not flip:
            upright_gaps = {e: list(g) for e, g in gaps.items()}
    monkeypatch.undo()
    witnesses = {}
    for e, r in records[0].items():
        a, b = r["actions"], records[1][e]["actions"]
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) + 1
            witnesses[e] = (min(upright_gaps[e][:k]), k)
    assert witnesses, "the agent takes the same actions on every episode whatever its frames show"
    # clear decisions first; among those (gap > 0.5), the shortest prefix
    best = max(witnesses, key=lambda e: (min(witnesses[e][0], 0.5), -witnesses[e][1], witnesses[e][0], e))
    return best, records[0][best], witnesses[best][1], witnesses[best][0]


def test_trained_agent_over_ros_matches_in_process(bench, tmp_path, monkeypatch):
    """The shipped CMA checkpoint, seeing 32x32 frames over ROS, acts as it does in-process."""
    ckpt = REPO / "configs" / "agents" / "cma_best.pt"
    if not ckpt.is_file():
        pytest.skip("no shipped checkpoint")
    data, _ = bench
    episode, want, k, gap = _decisive_episode(tmp_path, data, str(ckpt), 30, monkeypatch)
    assert gap > 0.2, f"every episode where vision matters has a near-tie decision (best smallest logit gap {gap:.3f})"
    # real time, not 2x: on a busy machine a command that lands late moves the robot on for sim
    # time in proportion to the factor, and at 2x (with other jobs on both cores) that once turned
    # a decisive frame far enough to change action 3 of 3
    got, _, _ = _run_pair(tmp_path, data, episode,
                          ["--agent", "cma", "--checkpoint", str(ckpt), "--linear-speed", "0.5", "--angular-speed", "90",
                           "--max-steps", "30"],
                          ["--rgb-size", "32", "--depth-size", "32", "--real-time-factor", "1", "--max-steps", "30"])
    # none of the first k decisions is a near-tie, so the greedy policy takes the same k actions;
    # frames mangled on the way would not (upside-down ones change action k - 1 here)
    assert got["actions"][:k] == want["actions"][:k], f"episode {episode}: first {k} actions, smallest gap {gap:.2f}"
    if got["actions"] == want["actions"]:
        assert got["metrics"]["distance_to_goal"] == pytest.approx(want["metrics"]["distance_to_goal"], abs=0.1)


def test_loopback_environment_never_allows_the_network(monkeypatch):
    from ros_bridge import dds

    env = dds.loopback_environment({"ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and "ROS_LOCALHOST_ONLY" not in env
    assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    assert "127.0.0.1" in Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read_text()
    monkeypatch.setenv("VLNCE_ROS_NETWORK", "1")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    assert "network allowed" in dds.configure()
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def _start(args, env=None):
    import tempfile

    log = tempfile.TemporaryFile("w+")  # not a pipe: an unread pipe fills up and blocks the node
    proc = subprocess.Popen([sys.executable, "-m", "vlnce.cli.main", *args], env=env or _ros_env(), cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def _stop(proc, timeout=15):
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.seek(0)
    out = proc.log.read()
    proc.log.close()
    return out


def test_record_writes_a_playable_bag(tmp_path):
    """A bag recorded from the free-roaming simulator reads back with an independent CDR decoder."""
    pytest.importorskip("rclpy")
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    from rosbags.typesys import Stores, get_typestore

    sim = _start(["ros", "sim", "--scene", "house:3", "--rgb-size", "48", "--depth-size", "40", "--lidar",
                  "--lidar-columns", "256"])
    bag = tmp_path / "bag"
    rec = subprocess.run([sys.executable, "-m", "vlnce.cli.main", "ros", "record", "--out", str(bag), "--duration", "6",
                          "--topics", "/clock,/odom,/camera/rgb/image_raw,/camera/depth/image_raw,/lidar/points"],
                         env=_ros_env(), cwd=REPO, capture_output=True, text=True, timeout=90)
    sim_out = _stop(sim)
    assert rec.returncode == 0, rec.stdout + rec.stderr + sim_out[-2000:]
    ts = get_typestore(Stores.ROS2_KILTED)
    seen: dict[str, list] = {}
    with rosbag2.Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            seen.setdefault(conn.topic, []).append(ts.deserialize_cdr(raw, conn.msgtype))
    assert {"/clock", "/odom", "/camera/rgb/image_raw", "/camera/depth/image_raw", "/lidar/points"} <= set(seen)
    img = seen["/camera/rgb/image_raw"][-1]
    assert (img.width, img.height, img.encoding, len(img.data)) == (48, 48, "rgb8", 48 * 48 * 3)
    depth = seen["/camera/depth/image_raw"][-1]
    d = np.frombuffer(bytes(depth.data), np.float32).reshape(40, 40)
    assert depth.encoding == "32FC1" and 0.0 < np.median(d) < 10.0  # metres inside a house
    cloud = seen["/lidar/points"][-1]
    assert (cloud.height, cloud.width, cloud.point_step) == (64, 256, 20)
    clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in seen["/clock"]]
    steps = np.diff(clock)
    assert (steps > 0).all() and np.allclose(steps[steps < 0.021], 0.02, atol=1e-6)  # 50 Hz sim time, no dropped stamps out of order


def test_agent_node_survives_bad_input_and_a_silent_robot(monkeypatch):
    """Wrong encodings, NaN depth, an empty instruction and a robot that goes quiet: logged, no crash."""
    for k, v in _ros_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ros_bridge import messages
    from ros_bridge.qos import LATCHED

    ckpt = REPO / "configs" / "agents" / "cma_best.pt"
    if not ckpt.is_file():
        pytest.skip("no shipped checkpoint")
    # with the exit gate on: the node builds it with the robot's step and turn, and acts through it
    agent = _start(["ros", "agent", "--agent", "cma", "--checkpoint", str(ckpt), "--wall-time", "--exit-gate"])
    rclpy.init()
    node = rclpy.create_node("bad_robot")
    try:
        instr = node.create_publisher(String, "/vlnce/instruction", LATCHED)
        rgb = node.create_publisher(Image, "/camera/rgb/image_raw", 10)
        depth = node.create_publisher(Image, "/camera/depth/image_raw", 10)
        odom = node.create_publisher(Odometry, "/odom", 10)
        cmds = []
        node.create_subscription(Twist, "/cmd_vel", cmds.append, 10)
        deadline = __import__("time").monotonic() + 20
        while rgb.get_subscription_count() == 0 and __import__("time").monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        instr.publish(String(data="  "))
        for _ in range(5):
            rclpy.spin_once(node, timeout_sec=0.1)
        instr.publish(String(data="walk to the kitchen and stop"))
        bad = messages.image_msg(np.zeros((32, 32, 3), np.uint8), "rgb8", 0.0, "cam")
        bad.encoding = "yuv422"
        nan_depth = np.full((32, 32), np.nan, np.float32)
        for _ in range(10):
            now = __import__("time").time()
            bad.header.stamp = messages.stamp(now)
            rgb.publish(bad)
            depth.publish(messages.image_msg(nan_depth, "32FC1", now, "cam"))
            rclpy.spin_once(node, timeout_sec=0.1)
        # a good pair at another size (resized) and one odometry message: the agent acts on them
        now = __import__("time").time()
        odom.publish(messages.odometry_msg(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, now))
        rgb.publish(messages.image_msg(np.full((64, 48, 3), 120, np.uint8), "rgb8", now, "cam"))
        depth.publish(messages.image_msg(np.full((64, 48), 2.0, np.float32), "32FC1", now, "cam"))
        end = __import__("time").monotonic() + 4.0  # then silence: longer than the 2 s stale timeout
        while __import__("time").monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert agent.poll() is None, "the agent node died"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        out = _stop(agent)
    assert "empty instruction ignored" in out
    assert "yuv422" in out and "frame dropped" in out
    assert "non-finite depth pixels" in out
    assert "resized to the agent's 32x32" in out
    assert "stopped publishing" in out
    assert any(c.linear.x or c.angular.z for c in cmds)  # it moved on the good frames
    assert cmds and cmds[-1].linear.x == 0.0 and cmds[-1].angular.z == 0.0  # left standing still


def test_sim_node_clamps_absurd_and_ignores_nonfinite_cmd_vel():
    """Over DDS: a 50 m/s command is clamped to the limit and warned about; NaN stops the robot."""
    rclpy = pytest.importorskip("rclpy")
    import time

    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry

    sim = _start(["ros", "sim", "--scene", "house:3", "--rgb-size", "16", "--depth-size", "16", "--max-linear", "0.4"])
    rclpy.init()
    node = rclpy.create_node("bad_driver")
    odoms = []
    try:
        pub = node.create_publisher(Twist, "/cmd_vel", 10)
        node.create_subscription(Odometry, "/odom", odoms.append, 10)
        deadline = time.monotonic() + 20
        while (pub.get_subscription_count() == 0 or not odoms) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        fast = Twist()
        fast.linear.x = 50.0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pub.publish(fast)
            rclpy.spin_once(node, timeout_sec=0.05)
        speeds = [o.twist.twist.linear.x for o in odoms[-10:]]
        nan = Twist()
        nan.angular.z = float("nan")
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            pub.publish(nan)
            rclpy.spin_once(node, timeout_sec=0.05)
        after = odoms[-1].twist.twist
        assert sim.poll() is None, "the simulator node died"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        out = _stop(sim)
    assert max(speeds) == pytest.approx(0.4)  # odometry reports the (clamped) commanded velocity
    assert "clamped to 0.4 m/s" in out
    assert "not finite" in out and after.linear.x == 0.0 and after.angular.z == 0.0


def test_perception_node_labels_clouds_keeps_headers_and_skips_bad_ones(tmp_path):
    """lidar_seg over DDS: an organised cloud with NaN holes comes back labelled, same header and
    layout, NaN points labelled 0; a cloud without z is logged and skipped, the node lives on."""
    rclpy = pytest.importorskip("rclpy")
    import time

    import torch
    from sensor_msgs.msg import PointCloud2

    from perception.lidar.labels import SensorConfig, load_label_config
    from perception.lidar.segmenter import save_segmenter
    from perception.lidar.ssgv3 import ssgv3_21
    from ros_bridge import messages
    from ros_bridge.qos import SENSOR_SUB

    labels = load_label_config("indoor")
    labels.sensor = SensorConfig(22.5, -22.5, 8, 32, [2, 0, 0, 0, 0.4], [1.4, 1.7, 1.7, 0.5, 0.15])
    torch.manual_seed(0)
    ckpt = save_segmenter(tmp_path / "rand.pt", ssgv3_21(labels.num_classes, width=0.125), labels)
    node_proc = _start(["ros", "perception", "--plugins", "lidar_seg", "--checkpoint", f"lidar_seg={ckpt}",
                        "--device", "cpu"])
    rclpy.init()
    node = rclpy.create_node("cloud_source")
    got = []
    try:
        pub = node.create_publisher(PointCloud2, "/lidar/points", 10)
        node.create_subscription(PointCloud2, "/lidar/points_labeled", got.append, SENSOR_SUB)  # best-effort output
        rng = np.random.default_rng(0)
        xyz = rng.uniform(-5, 5, (4, 16, 3)).astype(np.float32)
        valid = np.ones((4, 16), bool)
        valid[1, 3] = valid[2, 9] = False
        good = messages.pointcloud_msg(xyz, np.full((4, 16), 0.5, np.float32), np.zeros((4, 16)), valid, 12.5, "lidar_link")
        bad = messages.pointcloud_msg(xyz, np.zeros((4, 16), np.float32), np.zeros((4, 16)), valid, 13.0, "lidar_link")
        bad.fields = [f for f in bad.fields if f.name != "z"]
        deadline = time.monotonic() + 30
        while (pub.get_subscription_count() == 0 or node.count_publishers("/lidar/points_labeled") == 0) \
                and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        deadline = time.monotonic() + 60
        rounds = 0
        while (len(got) < 3 or rounds < 5) and time.monotonic() < deadline:
            pub.publish(bad)  # alone: the node's depth-1 queue would drop it for a newer cloud
            rclpy.spin_once(node, timeout_sec=0.5)
            pub.publish(good)
            rclpy.spin_once(node, timeout_sec=0.5)
            rounds += 1
        if not got:
            node_proc.send_signal(__import__("signal").SIGINT)
            pytest.fail("no labelled cloud arrived; node log:\n" + _stop(node_proc)[-3000:])
        out = got[0]
        assert out.header.frame_id == "lidar_link" and out.header.stamp == good.header.stamp
        assert (out.height, out.width) == (4, 16)
        rec = messages.pointcloud_fields(out, ("x", "y", "z", "intensity", "label"))
        assert rec["label"][1, 3] == 0 and rec["label"][2, 9] == 0
        assert set(np.unique(rec["label"][valid])) <= set(range(1, 14))
        np.testing.assert_allclose(rec["x"][valid], xyz[..., 0][valid])
        assert node_proc.poll() is None, "the perception node died"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        log = _stop(node_proc)
    assert "lacks field(s) z" in log and "message skipped" in log


def test_perception_node_reid_pairs_images_with_instances_and_keeps_identities(tmp_path):
    """reid over DDS: an image and a person-instance image with the same stamp make one JSON
    message; two people keep their identities when the next frame shows them swapped."""
    rclpy = pytest.importorskip("rclpy")
    import json
    import time

    import torch
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from perception.reid.embedder import ModelSpec, save_reid_model
    from perception.reid.registry import build_model
    from ros_bridge import messages

    torch.manual_seed(0)
    ckpt = save_reid_model(tmp_path / "reid.pt", build_model("baseline", 3, "resnet26", 0.125),
                           ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32)))
    node_proc = _start(["ros", "perception", "--plugins", "reid", "--checkpoint", f"reid={ckpt}", "--device", "cpu"])
    rclpy.init()
    node = rclpy.create_node("camera_source")
    got = []
    rng = np.random.default_rng(0)
    person_a = rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)
    person_b = np.zeros((40, 20, 3), np.uint8)
    person_b[:20] = (200, 30, 30)

    def frame(left, right, t):
        img = np.full((48, 60, 3), 90, np.uint8)
        img[4:44, 5:25], img[4:44, 35:55] = left, right
        inst = np.zeros((24, 30), np.int32)  # half resolution: boxes are scaled to the image
        inst[2:22, 2:13], inst[2:22, 17:28] = 3, 8
        return (messages.image_msg(img, "rgb8", t, "camera_rgb_optical_frame"),
                messages.image_msg(inst, "32SC1", t, "camera_rgb_optical_frame"))

    try:
        pub_img = node.create_publisher(Image, "/camera/rgb/image_raw", 10)
        pub_inst = node.create_publisher(Image, "/camera/person_instances", 10)
        node.create_subscription(String, "/reid/identities", got.append, 10)
        deadline = time.monotonic() + 30
        while (pub_img.get_subscription_count() == 0 or pub_inst.get_subscription_count() == 0
               or node.count_publishers("/reid/identities") == 0) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        for t, (left, right) in ((1.0, (person_a, person_b)), (2.0, (person_b, person_a))):
            img, inst = frame(left, right, t)
            n = len(got)
            deadline = time.monotonic() + 30
            while len(got) == n and time.monotonic() < deadline:
                pub_inst.publish(inst)  # the mask first: the node must wait for its image
                rclpy.spin_once(node, timeout_sec=0.2)
                pub_img.publish(img)
                rclpy.spin_once(node, timeout_sec=0.5)
        if len(got) < 2:
            pytest.fail("no identities arrived; node log:\n" + _stop(node_proc)[-3000:])
        first, second = (json.loads(m.data) for m in got[:2])
        assert first["stamp"] == 1.0 and first["frame_id"] == "camera_rgb_optical_frame"
        assert [p["box"] for p in first["people"]] == [[4.0, 4.0, 26.0, 44.0], [34.0, 4.0, 56.0, 44.0]]
        ids_1 = [p["identity"] for p in first["people"]]
        ids_2 = [p["identity"] for p in second["people"]]
        assert len(set(ids_1)) == 2 and ids_2 == ids_1[::-1]
    finally:
        node.destroy_node()
        rclpy.shutdown()
        _stop(node_proc)


def test_perception_node_detection_feeds_reid_without_instance_images(tmp_path):
    """detection + reid over DDS: an image alone yields a detections JSON message and, from the
    detector's person boxes of the same image, an identities message with those boxes."""
    rclpy = pytest.importorskip("rclpy")
    import json
    import time

    import torch
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from perception.detection.checkpoint import save_detector
    from perception.detection.faster_rcnn import build_faster_rcnn
    from perception.detection.roi_heads import RoIHeadsConfig
    from perception.reid.embedder import ModelSpec, save_reid_model
    from perception.reid.registry import build_model
    from ros_bridge import messages

    torch.manual_seed(0)
    det = save_detector(tmp_path / "det.pt", build_faster_rcnn(("person", "chair"), "resnet26", 0.25,
                                                                roi=RoIHeadsConfig(representation=32)))
    reid = save_reid_model(tmp_path / "reid.pt", build_model("baseline", 3, "resnet26", 0.125),
                           ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32)))
    # untrained, with no score threshold: every class gets boxes, so there are people to re-identify
    node_proc = _start(["ros", "perception", "--plugins", "detection,reid", "--checkpoint", f"detection={det}",
                        "--checkpoint", f"reid={reid}", "--option", "detection.score_threshold=0.0", "--device", "cpu"])
    rclpy.init()
    node = rclpy.create_node("camera_only")
    dets, ids = [], []
    try:
        pub = node.create_publisher(Image, "/camera/rgb/image_raw", 10)
        node.create_subscription(String, "/detection/detections", dets.append, 10)
        node.create_subscription(String, "/reid/identities", ids.append, 10)
        deadline = time.monotonic() + 30
        while (pub.get_subscription_count() == 0 or node.count_publishers("/reid/identities") == 0) \
                and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        img = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        msg = messages.image_msg(img, "rgb8", 3.0, "camera_rgb_optical_frame")
        deadline = time.monotonic() + 60
        while not (dets and ids) and time.monotonic() < deadline:
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.5)
        if not (dets and ids):
            pytest.fail("no detections or identities arrived; node log:\n" + _stop(node_proc)[-3000:])
        d, r = json.loads(dets[0].data), json.loads(ids[0].data)
        assert d["stamp"] == 3.0 and d["frame_id"] == "camera_rgb_optical_frame" and d["detections"]
        assert {x["class"] for x in d["detections"]} <= {"person", "chair"}
        assert all(x["class_id"] == (1 if x["class"] == "person" else 2) for x in d["detections"])
        people = sorted((x for x in d["detections"] if x["class"] == "person"), key=lambda x: -x["score"])
        boxes = [p["box"] for p in people]
        got_boxes = [p["box"] for p in r["people"]]  # boxes under 4 px a side carry no identity
        assert r["stamp"] == 3.0 and got_boxes and all(b in boxes for b in got_boxes)
        assert [boxes.index(b) for b in got_boxes] == sorted(boxes.index(b) for b in got_boxes)  # best first
    finally:
        node.destroy_node()
        rclpy.shutdown()
        _stop(node_proc)


def test_agent_node_refuses_an_agent_that_reads_simulator_only_sensors():
    from agents.models import PolicyConfig
    from ros_bridge.agent_node import robot_sensors
    from vlnce.errors import ConfigError

    plain = PolicyConfig(arch="cma").sensors()
    assert robot_sensors(plain) == plain
    with pytest.raises(ConfigError, match=r"room \(room\), rooms \(rooms\), which a robot does not have"):
        robot_sensors(PolicyConfig(arch="cma", room_labels=True).sensors())
