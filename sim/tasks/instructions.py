"""Natural-English route instructions from a reference path through a labelled house.

The route is read as events: the rooms it passes (in order), the turns at its corners (left or
right relative to the direction of travel), a landmark seen on the way, and the goal object. The
goal is always named by its category and its room, a pair that is unique in the house, so the
instruction singles it out. Phrasing varies by a generator passed in by the caller.
"""

from __future__ import annotations

import math

import numpy as np

from sim.geometry import wrap_angle
from sim.scenes.scene import Scene, SceneObject

DISPLAY_NAMES = {
    "tv_monitor": "TV", "appliances": "fridge", "chest_of_drawers": "chest of drawers", "lighting": "lamp",
    "shelving": "bookshelf", "counter": "kitchen counter", "bathtub": "bathtub", "person": "person",
}
ORDINALS = {2: "second", 3: "third", 4: "fourth", 5: "fifth"}
TURN_MIN_RAD = math.radians(35)


def object_name(category: str) -> str:
    return DISPLAY_NAMES.get(category, category.replace("_", " "))


def room_phrase(name: str) -> str:
    """'bedroom 2' -> 'second bedroom'."""
    parts = name.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].isdigit():
        return f"{ORDINALS.get(int(parts[1]), parts[1] + 'th')} {parts[0]}"
    return name


def heading_of(delta) -> float:
    """Heading (rad) of a horizontal direction; 0 looks along -z, left is positive."""
    return math.atan2(-float(delta[0]), -float(delta[2]))


def rooms_along(scene: Scene, path: np.ndarray, step_m: float = 0.2) -> list[tuple[int, int]]:
    """Rooms visited along a polyline as (room_id, index of the first sample in it), in order."""
    samples, seg_of = densify(path, step_m)
    out: list[tuple[int, int]] = []
    for k, p in enumerate(samples):
        room = scene.room_at(p[0], p[2])
        if room is not None and (not out or out[-1][0] != room.room_id):
            out.append((room.room_id, seg_of[k]))
    return out


def densify(path: np.ndarray, step_m: float) -> tuple[np.ndarray, list[int]]:
    """Points along a polyline (N, 3) at most ``step_m`` apart, its vertices included, and the
    index of the segment each lies on."""
    pts, seg = [path[0]], [0]
    for i in range(len(path) - 1):
        a, b = path[i], path[i + 1]
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
        for t in range(1, n + 1):
            pts.append(a + (b - a) * t / n)
            seg.append(i)
    return np.array(pts), seg


def turns_along(path: np.ndarray) -> list[tuple[int, str]]:
    """(corner index, 'left' | 'right') for corners that turn more than 35 degrees."""
    out = []
    for i in range(1, len(path) - 1):
        h_in = heading_of(path[i] - path[i - 1])
        h_out = heading_of(path[i + 1] - path[i])
        d = wrap_angle(h_out - h_in)
        if abs(d) >= TURN_MIN_RAD:
            out.append((i, "left" if d > 0 else "right"))
    return out


def describe_goal(goal: SceneObject, scene: Scene) -> str:
    room = scene.rooms[goal.room_id]
    return f"the {object_name(goal.category)} in the {room_phrase(room.name)}"


def generate_instruction(scene: Scene, path: np.ndarray, goal: SceneObject, rng: np.random.Generator,
                         landmarks: list[SceneObject] | None = None) -> str:
    """An instruction for following ``path`` (N, 3) to ``goal``.

    Example: "Leave the bedroom, turn left down the hallway, and stop next to the sofa in the living room."
    """
    path = np.asarray(path, np.float64)
    rooms = rooms_along(scene, path)
    turns = turns_along(path)
    goal_room = scene.rooms[goal.room_id]
    start_room = scene.rooms[rooms[0][0]] if rooms else None
    clauses: list[str] = []
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731

    if start_room is not None and start_room.room_id != goal_room.room_id:
        clauses.append(pick(["leave the {r}", "walk out of the {r}", "exit the {r}", "head out of the {r}",
                             "go out of the {r}"]).format(r=room_phrase(start_room.name)))
    middle = [(rid, seg) for rid, seg in rooms[1:] if rid != goal_room.room_id]
    used_turns = set()

    def turn_near(seg_index):
        # the first unused corner at or after the segment where the room is entered
        for corner, direction in turns:
            if corner >= seg_index and corner not in used_turns and corner <= seg_index + 2:
                used_turns.add(corner)
                return direction
        return None

    for rid, seg in middle:
        room = scene.rooms[rid]
        name = room_phrase(room.name)
        direction = turn_near(seg)
        if room.room_type == "hallway":
            options = ["turn {d} down the {r}", "go {d} along the {r}"] if direction else ["walk down the {r}", "go along the {r}", "continue through the {r}"]
        else:
            options = ["turn {d} into the {r}", "go {d} into the {r}"] if direction else ["go through the {r}", "walk through the {r}", "cross the {r}"]
        clause = pick(options).format(d=direction, r=name)
        seen = [o for o in (landmarks or []) if o.room_id == rid]
        if seen and rng.random() < 0.6:
            clause += f" past the {object_name(seen[int(rng.integers(len(seen)))].category)}"
        clauses.append(clause)

    entered_goal_room = any(rid == goal_room.room_id for rid, _ in rooms[1:])
    goal_name = object_name(goal.category)
    if entered_goal_room:
        seg = next(s for rid, s in rooms[1:] if rid == goal_room.room_id)
        direction = turn_near(seg)
        options = ["turn {d} into the {r}", "enter the {r} on your {d}"] if direction else ["enter the {r}", "go into the {r}", "walk into the {r}"]
        clauses.append(pick(options).format(d=direction, r=room_phrase(goal_room.name)))
        final = pick(["stop next to the {o} there", "stop by the {o}", "wait beside the {o}", "stop in front of the {o}"])
        # "there"/bare object only when the room was just named: the goal stays uniquely described
        final = final.format(o=goal_name)
        if "there" not in final:
            final += f" in the {room_phrase(goal_room.name)}"
    else:
        final = pick(["stop next to {g}", "stop by {g}", "wait beside {g}", "stop in front of {g}"]).format(
            g=describe_goal(goal, scene))
    clauses.append(final)
    if len(clauses) == 1:
        text = clauses[0]
    else:
        text = ", ".join(clauses[:-1]) + ", and " + clauses[-1]
    return text[0].upper() + text[1:] + "."
