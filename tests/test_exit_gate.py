"""The exit gate beside a learned policy: the instruction's next room, the gate's state machine
against a scripted world, and the gate in an evaluation."""

import math

import numpy as np
import pytest

from agents.exit_gate import ExitGate, ExitGateConfig, gate_config, named_next_room, named_rooms, named_route_rooms
from sim.scenes.semantics import ROOM_TYPES
from vlnce.errors import ConfigError

F, L, R = 1, 2, 3
BEDROOM, KITCHEN, HALLWAY, OFFICE = (ROOM_TYPES.index(t) for t in ("bedroom", "kitchen", "hallway", "office"))


def test_named_next_room_is_the_room_named_after_the_one_the_instruction_leaves():
    cases = {
        "Leave the bedroom, turn left down the hallway, and stop next to the sofa in the living room.": "hallway",
        "Walk out of the second bedroom, go through the kitchen, and stop by the sink": "kitchen",
        "Enter the dining room on your left, and stop by the table there": "dining room",
        "Exit the kitchen, and stop by the kitchen counter in the dining room": "dining room",
        "go out of the office, cross the living room past the sofa, and wait beside the bed in the bedroom": "living room",
    }
    for text, want in cases.items():
        assert named_next_room(text) == ROOM_TYPES.index(want), text
    assert named_next_room("Leave the bathroom, and stop in front of the chair") is None
    assert named_next_room("stop next to the bed") is None
    assert named_rooms("Exit the kitchen, and stop by the kitchen counter in the dining room") == ["kitchen", "dining room"]


def test_named_route_rooms_lists_the_rooms_after_the_start_once_each_in_order():
    def names(text):
        return [ROOM_TYPES[i] for i in named_route_rooms(text)]

    assert names("Head out of the bathroom, go left along the hallway past the plant, turn left into the "
                 "bedroom, and stop next to the cabinet there.") == ["hallway", "bedroom"]
    # the office named twice in a row is one room to check; the kitchen counter is not a room
    assert names("Exit the living room, walk down the hallway, enter the office, and stop by the desk in the "
                 "office") == ["hallway", "office"]
    assert names("Walk out of the kitchen, cross the dining room, and stop at the kitchen counter") == ["dining room"]
    # a room type again after another is a room of its own
    assert names("Exit the hallway, go through the bedroom, cross the hallway, and enter the bedroom") == [
        "bedroom", "hallway", "bedroom"]
    assert names("Enter the dining room, and stop by the table") == ["dining room"]
    assert named_route_rooms("stop next to the bed") == [] and named_next_room("stop next to the bed") is None


def test_named_route_rooms_follow_the_generators_routes_on_the_benchmark(bench):
    """On every episode, the rooms named after the start room are the types of the rooms the
    reference path enters after it, in order, a type entered twice in a row ("the bathroom, ...
    the second bathroom") counted once; at least the first of them in every episode that names one."""
    from sim.scenes.scene import load_scene
    from sim.tasks.dataset import load_dataset
    from sim.tasks.vln import resolve_scene_id
    from sim.tasks.instructions import rooms_along

    data, _ = bench
    checked = whole = 0
    for split in ("train", "val_seen", "val_unseen"):
        for ep in load_dataset(data, split, strict=False).episodes:
            scene = load_scene(resolve_scene_id(ep.scene_id, data / "scenes"))
            route = []
            for rid, _ in rooms_along(scene, np.asarray(ep.reference_path, np.float64))[1:]:
                kind = ROOM_TYPES.index(scene.rooms[rid].room_type)
                if not route or route[-1] != kind:
                    route.append(kind)
            named = named_route_rooms(ep.instruction.instruction_text)
            assert named == route[:len(named)], ep.instruction.instruction_text
            checked += bool(named)
            whole += named == route
    assert checked >= 10 and whole >= 0.9 * checked


def test_named_next_room_matches_the_generators_route_on_the_benchmark(bench):
    """On every episode that leaves its start room, the room named next is the type of the first
    room the route enters after the start room (or, when that is the goal's, of the first other
    one, which the generator names before the goal's)."""
    from sim.scenes.scene import load_scene
    from sim.tasks.dataset import load_dataset
    from sim.tasks.vln import resolve_scene_id
    from sim.tasks.instructions import rooms_along

    data, _ = bench
    checked = 0
    for split in ("train", "val_seen", "val_unseen"):
        for ep in load_dataset(data, split, strict=False).episodes:
            scene = load_scene(resolve_scene_id(ep.scene_id, data / "scenes"))
            rooms = [rid for rid, _ in rooms_along(scene, np.asarray(ep.reference_path, np.float64))]
            goal_room = scene.room_at(ep.goals[0].position[0], ep.goals[0].position[2]).room_id
            if len(rooms) < 2 or rooms[0] == goal_room:
                continue
            middle = [rid for rid in rooms[1:] if rid != goal_room]
            want = scene.rooms[middle[0] if middle else goal_room].room_type
            assert named_next_room(ep.instruction.instruction_text) == ROOM_TYPES.index(want), ep.instruction.instruction_text
            checked += 1
    assert checked >= 10


def _probs(kind, p=0.9):
    out = np.full(len(ROOM_TYPES), (1 - p) / (len(ROOM_TYPES) - 1))
    out[kind] = p
    return out


class _World:
    """The agent's true pose under the executed actions (no walls), the room the room sense sees
    there (``room_at(x, z)``), and a policy that asks for the actions of ``script`` first, then
    always for ``logits``."""

    def __init__(self, room_at, logits=(0.0, 5.0, 1.0, 2.0), script=()):
        self.x = self.z = self.h = 0.0
        self.room_at = room_at
        self.logits = np.asarray(logits)
        self.script = list(script)
        self.restarts = 0
        self.marks = 0
        self.asked = 0
        self.events = []

    def step(self, gate):
        def logits():
            self.asked += 1
            if self.asked <= len(self.script):
                return np.eye(4)[self.script[self.asked - 1]] * 5.0
            return self.logits

        def restart():
            self.restarts += 1
            self.events.append(("rewind", self.x, self.z))

        def mark():
            self.marks += 1
            self.events.append(("mark", self.x, self.z))

        seen = self.room_at(self.x, self.z)
        action, by_policy = gate.act(_probs(seen) if isinstance(seen, int) else seen, logits, restart, mark)
        if action == F:
            self.x -= 0.25 * math.sin(self.h)
            self.z -= 0.25 * math.cos(self.h)
        elif action in (L, R):
            self.h += math.radians(15) * (1 if action == L else -1)
        return action, by_policy


def _run(gate, world, n):
    return [world.step(gate) for _ in range(n)]


def test_gate_walks_back_out_of_a_wrong_room_and_keeps_the_policy_out_of_it():
    # the start room (bedroom) ends 0.4 m ahead; beyond it a kitchen; the instruction names the hallway.
    # The policy turns left once, then walks (each step 0.25 cos 15 = 0.24 m nearer the kitchen).
    world = _World(lambda x, z: KITCHEN if z < -0.4 else BEDROOM, script=[L])
    gate = ExitGate()
    gate.reset(HALLWAY)
    steps = _run(gate, world, 4)
    assert steps == [(L, True)] + [(F, True)] * 3  # bedroom x 3, then the first kitchen frame (one off frame)
    # the second kitchen frame: a full turn in place, the policy not asked
    scan = _run(gate, world, 24)
    assert scan == [(L, False)] * 24 and world.asked == 4
    assert gate.summary.scans == 1
    # the kitchen is not the hallway: half a turn, the walk retraced (forward steps forward, the
    # left turn undone by a right one), half a turn
    back = _run(gate, world, 12 + 4 + 12)
    assert [a for a, _ in back] == [L] * 12 + [F] * 3 + [R] + [L] * 12
    assert not any(by for _, by in back)
    assert gate.summary.wrong == 1 and gate.summary.verdicts == ["wrong"]
    assert (world.x, world.z) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert math.cos(world.h) == pytest.approx(1.0)  # facing the start heading again
    assert gate.pose[:2] == pytest.approx([0.0, 0.0], abs=1e-9)  # dead reckoning agrees
    # the policy restarts; its forward step would end 0.27 m from the wrong walk's first off pose
    # (-0.5 sin 15, -0.5 cos 15), nearer than now (0.5 m): its better turn (right, 2.0 > 1.0) is
    # taken instead
    action, by_policy = world.step(gate)
    assert world.restarts == 1 and (action, by_policy) == (R, True)
    assert gate.summary.blocked == 1
    s15, c15 = math.sin(math.radians(15)), math.cos(math.radians(15))
    assert gate.forbidden == pytest.approx(np.array([[-0.5 * s15, -0.5 * c15]]))


def test_gate_stands_down_in_the_named_room_and_judges_again_after_an_unsure_turn():
    world = _World(lambda x, z: HALLWAY if z < -0.4 else BEDROOM)
    gate = ExitGate()
    gate.reset(HALLWAY)
    _run(gate, world, 3 + 24)
    assert gate.summary.verdicts == []  # judged at the next step, after the 24th turn
    rest = _run(gate, world, 40)
    assert gate.summary.verdicts == ["named"] and gate.summary.accepted
    assert rest == [(F, True)] * 40 and gate.summary.scans == 1  # no more turns, ever

    # a room that is not the start room but may be the named one (p = 0.2, between wrong_below and
    # accept_at, and not the most likely): the gate watches on, and turns again only after
    # scan_spacing_m more (dead-reckoned) metres
    unsure = np.full(len(ROOM_TYPES), 0.02)
    unsure[KITCHEN], unsure[HALLWAY] = 0.7, 0.2
    world = _World(lambda x, z: unsure if z < -0.4 else BEDROOM)
    gate = ExitGate(ExitGateConfig(scan_spacing_m=1.0))
    gate.reset(HALLWAY)
    actions = [a for a, _ in _run(gate, world, 3 + 24 + 6)]
    assert actions[:3] == [F] * 3 and actions[3:27] == [L] * 24
    assert gate.summary.verdicts == ["unsure"]
    # from the first turn's pose (0.75 m out) it turns again once more than 1 m farther: 1.0 is not
    # farther, 1.25 is (5 more forward steps)
    assert actions[27:32] == [F] * 5 and actions[32] == L and gate.summary.scans == 2


def _house(x, z):
    # the start bedroom down to z = -0.4, a hallway down to z = -2.4, a kitchen beyond
    return BEDROOM if z > -0.4 else HALLWAY if z > -2.4 else KITCHEN


def test_gate_checks_the_named_rooms_in_turn_and_walks_back_to_the_last_accepted_one():
    # the instruction names the hallway, then an office; the policy walks straight on into the kitchen
    world = _World(_house)
    gate = ExitGate(ExitGateConfig(rooms=2))
    gate.reset([HALLWAY, OFFICE])
    # the hallway: 3 steps, a full turn, accepted at the next step, where the gate marks the policy's
    # state and the policy walks on (the bedroom is not looked at again: the hallway is the reference)
    steps = _run(gate, world, 3 + 24 + 1)
    assert [a for a, _ in steps] == [F] * 3 + [L] * 24 + [F]
    assert gate.summary.verdicts == ["named"] and gate.summary.accepted == 1 and gate.named == OFFICE
    assert world.events == [("mark", 0.0, pytest.approx(-0.75))]
    # on to z = -2.5 (off 1), -2.75 (off 2): 2 m from the last turn, so a full turn; the kitchen is
    # not the office: half a turn, the 8 forward steps since the mark back, half a turn
    steps = _run(gate, world, 7 + 24 + 12 + 8 + 12)
    assert [a for a, _ in steps] == [F] * 7 + [L] * 24 + [L] * 12 + [F] * 8 + [L] * 12
    assert gate.summary.verdicts == ["named", "wrong"] and gate.summary.wrong == 1 and gate.summary.scans == 2
    assert (world.x, world.z) == pytest.approx((0.0, -0.75), abs=1e-9) and math.cos(world.h) == pytest.approx(1.0)
    assert gate.pose[:2] == pytest.approx([0.0, -0.75], abs=1e-9)
    # the policy goes on from the state it had at the mark (rewound, not restarted), fenced from the
    # kitchen walk (from the first off pose, z = -2.5): forward until a step would end within 0.75 m
    steps = _run(gate, world, 5)
    assert world.events[1] == ("rewind", pytest.approx(0.0, abs=1e-9), pytest.approx(-0.75))
    assert world.restarts == 1 and world.marks == 1
    assert [a for a, _ in steps] == [F] * 4 + [R] and gate.summary.blocked == 1
    assert gate.summary.as_dict()["rooms"] == ["hallway", "office"]

    # with rooms = 1 (the default) the same list is checked only as far as the hallway
    world = _World(_house)
    gate = ExitGate()
    gate.reset([HALLWAY, OFFICE])
    steps = _run(gate, world, 3 + 24 + 20)
    assert [a for a, _ in steps] == [F] * 3 + [L] * 24 + [F] * 20 and world.marks == 0
    assert gate.summary.verdicts == ["named"] and gate.mode == gate.DONE


def test_gate_control_and_instructions_without_a_next_room_leave_the_policy_alone():
    # max_wrong = 0: the same turn and verdict, no walk back
    world = _World(lambda x, z: KITCHEN if z < -0.4 else BEDROOM)
    gate = ExitGate(ExitGateConfig(max_wrong=0))
    gate.reset(HALLWAY)
    actions = [a for a, _ in _run(gate, world, 3 + 24 + 20)]
    assert actions == [F] * 3 + [L] * 24 + [F] * 20
    assert gate.summary.verdicts == ["wrong"] and gate.summary.wrong == 0
    # no room named after the start room: nothing but the policy
    world = _World(lambda x, z: KITCHEN if z < -0.4 else BEDROOM)
    gate.reset(None)
    assert _run(gate, world, 40) == [(F, True)] * 40 and gate.summary.scans == 0


def test_gate_settings_and_inputs_are_checked():
    assert gate_config({"max_wrong": "0", "wrong_below": "0.2"}) == ExitGateConfig(max_wrong=0, wrong_below=0.2)
    with pytest.raises(ConfigError, match="unknown exit gate setting 'radius'"):
        gate_config({"radius": 1})
    with pytest.raises(ConfigError, match="max_wrong=.*integer"):
        gate_config({"max_wrong": "two"})
    with pytest.raises(ConfigError, match=r"accept_at must be in \[0, 1\]"):
        ExitGateConfig(accept_at=1.5).validate()
    with pytest.raises(ConfigError, match=r"forward_step_m must be a finite distance in metres \(> 0\), got nan"):
        gate_config({"forward_step_m": "nan"})
    with pytest.raises(ConfigError, match="divide 360"):
        ExitGateConfig(turn_angle_deg=25).validate()
    with pytest.raises(ConfigError, match="rooms .* must be >= 1, got 0"):
        gate_config({"rooms": "0"})
    gate = ExitGate()
    gate.reset(HALLWAY)
    with pytest.raises(ValueError, match=r"room probabilities of shape \(3,\)"):
        gate.act(np.ones(3) / 3, lambda: np.zeros(4), lambda: None)


def test_gate_totals_add_up_hand_made_episodes():
    from agents.evaluation import format_gate, gate_totals

    def rec(named, scans, wrong, accepted, steps, blocked, verdicts):
        return {"exit_gate": {"named": named, "scans": scans, "wrong": wrong, "accepted": accepted,
                              "gate_steps": steps, "blocked": blocked, "verdicts": verdicts}}

    records = [rec("hallway", 2, 1, True, 24 * 2 + 30, 5, ["wrong", "named"]),
               rec("kitchen", 1, 0, False, 24, 0, ["wrong"]),  # judged wrong, not acted on
               rec(None, 0, 0, False, 0, 0, []),
               {"metrics": {}}]  # an episode run without the gate
    t = gate_totals(records)
    assert t == {"episodes": 3, "named": 2, "mean_scans": 1.0, "mean_gate_steps": (78 + 24) / 3,
                 "judged_wrong": 2, "walked_back": 1, "wrong_calls": 1, "accepted": 1, "blocked_steps": 5}
    line = format_gate({"exit_gate": t})
    assert line.startswith("exit gate: 2 of 3 instructions name a next room; 1.0 scans and 34 gate steps")
    assert "judged a room wrong in 2 episodes and walked back out of it in 1 (1 rooms)" in line
    assert format_gate({}) == ""
