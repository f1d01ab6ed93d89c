import math
import sys
import types

import gymnasium
import numpy as np
import pytest

from conftest import make_sim
from sim.actions import Action
from sim.backends import BACKENDS, make_simulator
from sim.backends.habitat import HabitatSimulator, build_configuration
from sim.config import SimulatorConfig, load_simulator_config
from sim.geometry import heading_from_quat, quat_from_heading, wrap_angle
from vlnce.errors import ConfigError, MissingDependencyError, NavigationError, UnknownNameError


@pytest.fixture(scope="module")
def sim(house):
    s = make_sim(house, seed=3, lidar={"enabled": True, "beams": 8, "columns": 64},
                 sensors={"semantic": {"type": "semantic", "width_px": 32, "height_px": 24},
                          "instance": {"type": "instance", "width_px": 32, "height_px": 24}})
    yield s
    s.close()


def test_observations_match_the_declared_space(sim):
    obs = sim.reset()
    space = sim.observation_space
    assert isinstance(space, gymnasium.spaces.Dict)
    assert set(obs) == {"rgb", "depth", "semantic", "instance", "lidar"}
    assert obs["rgb"].shape == (224, 224, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (256, 256, 1) and obs["depth"].dtype == np.float32
    assert obs["lidar"].shape == (8, 64, 6)
    assert space.contains(obs)
    for _ in range(5):
        assert space.contains(sim.step(Action.MOVE_FORWARD))


def test_forward_moves_a_quarter_metre_and_turns_are_fifteen_degrees(sim):
    sim.reset()
    s0 = sim.get_agent_state()
    sim.step(Action.TURN_LEFT)
    assert heading_from_quat(sim.get_agent_state().rotation) == pytest.approx(heading_from_quat(s0.rotation) + math.radians(15))
    sim.step(Action.TURN_RIGHT)
    sim.step(Action.TURN_RIGHT)
    h = heading_from_quat(sim.get_agent_state().rotation)
    assert h == pytest.approx(heading_from_quat(s0.rotation) - math.radians(15))
    start = sim.get_agent_state().position
    sim.step(Action.MOVE_FORWARD)
    moved = sim.get_agent_state().position - start
    if not sim.previous_step_collided():
        assert np.linalg.norm(moved) == pytest.approx(0.25, abs=1e-6)
        assert moved[[0, 2]] / 0.25 == pytest.approx([-math.sin(h), -math.cos(h)], abs=1e-6)


def test_full_circles_in_place_leave_the_pose_bit_for_bit_with_exact_turns(house):
    """Float turns come back from a full circle only up to the last bits; exact turns come back
    exactly, and a later forward step lands where it would have without the circles."""
    def walk(exact, circles):
        sim = make_sim(house, agent={"exact_turns": exact})
        sim.set_start_state(sim.get_agent_state().position, quat_from_heading(0.3))
        sim.reset()
        headings = []
        for k, action in enumerate([Action.TURN_LEFT] * 5 + [Action.MOVE_FORWARD, Action.TURN_RIGHT] * 3):
            if k in circles:
                for _ in range(24):
                    sim.step(Action.TURN_LEFT)
            sim.step(action)
            headings.append(sim._heading)
        end = sim.get_agent_state().position
        sim.close()
        return headings, end

    plain, plain_end = walk(True, ())
    circled, circled_end = walk(True, (2, 6, 7))
    assert circled == plain and (circled_end == plain_end).all()  # bit for bit
    assert plain[4] == pytest.approx(wrap_angle(0.3 + 5 * math.radians(15)), abs=1e-12)
    drifted, _ = walk(False, (2, 6, 7))
    floats, _ = walk(False, ())
    assert drifted == pytest.approx(floats, abs=1e-12)  # the same to 1e-12 ...
    assert drifted != floats  # ... but not bit for bit: what exact_turns is for


def test_stop_does_not_move_the_agent(sim):
    sim.reset()
    before = sim.get_agent_state()
    sim.step(Action.STOP)
    after = sim.get_agent_state()
    assert np.array_equal(before.position, after.position) and np.array_equal(before.rotation, after.rotation)


def test_same_seed_gives_the_same_start_and_observations(house):
    with make_sim(house, seed=5) as a, make_sim(house, seed=5) as b:
        oa, ob = a.reset(), b.reset()
        assert np.array_equal(a.get_agent_state().position, b.get_agent_state().position)
        assert np.array_equal(oa["rgb"], ob["rgb"]) and np.array_equal(oa["depth"], ob["depth"])


@pytest.mark.parametrize("bad", [4, -1, "left", None])
def test_invalid_action_names_the_valid_ones(sim, bad):
    with pytest.raises(ValueError, match="MOVE_FORWARD"):
        sim.step(bad)


def test_teleport_off_the_navigable_area_is_a_navigation_error(sim):
    with pytest.raises(NavigationError, match="not on the navigable area"):
        sim.set_agent_state([-50.0, 0.0, -50.0], quat_from_heading(0.0))
    with pytest.raises(NavigationError, match="start position"):
        sim.set_start_state([-50.0, 0.0, -50.0], quat_from_heading(0.0))


def test_observations_elsewhere_leave_the_agent_unless_asked(sim):
    sim.reset()
    here = sim.get_agent_state().position
    there = sim.sample_navigable_point()
    sim.get_observations_at(there, quat_from_heading(1.0))
    assert np.array_equal(sim.get_agent_state().position, here)
    sim.get_observations_at(there, quat_from_heading(1.0), keep_agent_at_new_pose=True)
    assert np.allclose(sim.get_agent_state().position[[0, 2]], there[[0, 2]])


def test_start_state_is_used_by_reset(sim):
    p = sim.sample_navigable_point()
    sim.set_start_state(p, quat_from_heading(0.5))
    sim.step(Action.MOVE_FORWARD)
    sim.reset()
    s = sim.get_agent_state()
    assert np.allclose(s.position[[0, 2]], p[[0, 2]]) and heading_from_quat(s.rotation) == pytest.approx(0.5)


def test_lidar_scan_is_available_through_the_simulator(sim):
    scan = sim.get_lidar_scan()
    assert scan.range.shape == (8, 64) and scan.valid.any()


def test_unknown_backend_suggests_the_closest_name():
    with pytest.raises(UnknownNameError, match="did you mean 'embedded'"):
        make_simulator(SimulatorConfig(type="embeded"))
    assert BACKENDS.names() == ["embedded", "habitat"]


def test_habitat_backend_without_habitat_sim_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)
    with pytest.raises(MissingDependencyError, match="conda install habitat-sim"):
        make_simulator(SimulatorConfig(type="habitat", scene="x.glb"))


# --- a stand-in for habitat_sim that records what the backend asks of it ------------------------
def fake_habitat_sim():
    hs = types.ModuleType("habitat_sim")

    class Record:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
            for k, v in kwargs.items():
                setattr(self, k, v)

    class PathFinder:
        is_loaded = True
        distance = 3.5

        def seed(self, s):
            self.seeded = s

        def find_path(self, path):
            path.geodesic_distance = self.distance
            path.points = [np.zeros(3), np.ones(3)]
            return math.isfinite(self.distance)

        def is_navigable(self, p):
            return bool(p[0] >= 0)

        def snap_point(self, p):
            return np.asarray(p) + 0.5

        def get_random_navigable_point(self):
            return np.array([1.0, 0.0, 2.0])

    class Agent:
        def __init__(self):
            self.state = types.SimpleNamespace(position=np.zeros(3), rotation=np.array([0, 0, 0, 1.0]))

        def get_state(self):
            return self.state

        def set_state(self, state, reset_sensors=True):
            self.state = state

    class Simulator:
        def __init__(self, cfg):
            self.cfg = cfg
            self.pathfinder = PathFinder()
            self.steps = []
            self.previous_step_collided = False
            self.agent = Agent()

        def _obs(self):
            return {"rgb": np.full((224, 224, 4), 7, np.uint8), "depth": np.full((256, 256), 5.0, np.float32)}

        def reset(self):
            return self._obs()

        def step(self, name):
            self.steps.append(name)
            return self._obs()

        def get_sensor_observations(self):
            return self._obs()

        def get_agent(self, i):
            return self.agent

        def close(self):
            self.closed = True

    hs.SimulatorConfiguration = Record
    hs.CameraSensorSpec = Record
    hs.Configuration = Record
    hs.NavMeshSettings = Record
    hs.ShortestPath = Record
    hs.MultiGoalShortestPath = Record
    hs.AgentState = Record
    hs.Simulator = Simulator
    hs.SensorType = types.SimpleNamespace(COLOR="COLOR", DEPTH="DEPTH", SEMANTIC="SEMANTIC")
    hs.agent = types.SimpleNamespace(AgentConfiguration=Record, ActionSpec=Record, ActuationSpec=Record)
    return hs


def test_habitat_configuration_refuses_the_embedded_room_sensors():
    from sim.config import CameraSensorConfig

    cfg = load_simulator_config(overrides={"type": "habitat", "scene": "scene.glb"})
    cfg.sensors["rooms"] = CameraSensorConfig(type="rooms", width_px=4, height_px=4)
    with pytest.raises(ConfigError, match=r"\['rooms'\]: room-type sensors .* embedded"):
        build_configuration(fake_habitat_sim(), cfg)


def test_habitat_configuration_mirrors_the_vlnce_settings():
    hs = fake_habitat_sim()
    cfg = load_simulator_config(overrides={"type": "habitat", "scene": "scene.glb", "seed": 4})
    conf = build_configuration(hs, cfg)
    backend, (agent,) = conf.args
    assert backend.scene_id == "scene.glb" and backend.allow_sliding is True and backend.random_seed == 4
    specs = {s.uuid: s for s in agent.sensor_specifications}
    assert specs["rgb"].resolution == [224, 224] and specs["rgb"].sensor_type == "COLOR"
    assert specs["depth"].resolution == [256, 256] and specs["depth"].hfov == 90.0
    assert specs["rgb"].position == [0.0, 1.25, 0.0]
    assert agent.height == 1.5 and agent.radius == 0.1
    amounts = {k: v.args[1].kwargs["amount"] for k, v in agent.action_space.items()}
    assert amounts == {"move_forward": 0.25, "turn_left": 15.0, "turn_right": 15.0}


def test_habitat_backend_converts_observations_and_forwards_calls():
    hs = fake_habitat_sim()
    cfg = load_simulator_config(overrides={"type": "habitat", "scene": "scene.glb"})
    sim = HabitatSimulator(cfg, habitat_sim_module=hs)
    obs = sim.reset()
    assert obs["rgb"].shape == (224, 224, 3)
    assert obs["depth"].shape == (256, 256, 1) and np.allclose(obs["depth"], 0.5)
    assert sim.observation_space.contains(obs)
    sim.step(Action.TURN_LEFT)
    sim.step(Action.MOVE_FORWARD)
    assert sim._sim.steps == ["turn_left", "move_forward"]
    assert sim.geodesic_distance([0, 0, 0], [1, 0, 1]) == 3.5
    sim._sim.pathfinder.distance = math.inf
    assert sim.geodesic_distance([0, 0, 0], [1, 0, 1]) == math.inf
    with pytest.raises(NavigationError):
        sim.set_agent_state([-1.0, 0, 0], quat_from_heading(0))
    sim.close()


def test_habitat_backend_rejects_embedded_only_features():
    hs = fake_habitat_sim()
    with pytest.raises(ConfigError, match="LiDAR"):
        build_configuration(hs, load_simulator_config(overrides={"type": "habitat", "scene": "a.glb", "lidar": {"enabled": True}}))
    with pytest.raises(ConfigError, match="house:SEED"):
        build_configuration(hs, load_simulator_config(overrides={"type": "habitat"}))
    with pytest.raises(ConfigError, match="exact_turns is an embedded-backend option"):
        build_configuration(hs, load_simulator_config(overrides={"type": "habitat", "scene": "a.glb",
                                                                 "agent": {"exact_turns": True}}))


# --- configuration --------------------------------------------------------------------------
def test_config_defaults_are_vlnce():
    cfg = SimulatorConfig()
    assert (cfg.sensors["rgb"].width_px, cfg.sensors["depth"].width_px) == (224, 256)
    assert cfg.agent.forward_step_m == 0.25 and cfg.agent.turn_angle_deg == 15.0
    assert cfg.sensors["depth"].max_depth_m == 10.0 and cfg.sensors["depth"].normalize_depth


@pytest.mark.parametrize("override,field", [
    ({"sensors": {"rgb": {"width_px": 0}}}, "resolution"),
    ({"sensors": {"rgb": {"hfov_deg": 190.0}}}, "hfov_deg"),
    ({"sensors": {"depth": {"min_depth_m": 5.0, "max_depth_m": 1.0}}}, "min_depth_m"),
    ({"sensors": {"rgb": {"type": "thermal"}}}, "type"),
    ({"agent": {"turn_angle_deg": 0.0}}, "turn_angle_deg"),
    ({"no_such_key": 1}, "no_such_key"),
    ({"agent": {"radius_m": "wide"}}, "radius_m"),
])
def test_bad_config_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        load_simulator_config(overrides=override)


def test_config_yaml_unknown_key_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("simulator:\n  agent:\n    speed: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*speed"):
        load_simulator_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_simulator_config(tmp_path / "missing.yaml")


def test_packaged_configs_load():
    from configs import config_path

    assert load_simulator_config(config_path("sim/lidar.yaml")).lidar.enabled
    assert load_simulator_config(config_path("sim/embedded.yaml")).type == "embedded"
