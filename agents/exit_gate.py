"""An exit gate beside a learned policy (ours, not VLN-CE's): it checks the first room the agent
walks into against the room the instruction names next, and walks back out of a wrong one.

Why: the policies choose the exit from their start room at the rate of an instruction-blind walker
(README, "Where SR is lost"), yet a room sense standing inside the room it has just entered tells
the named type from the others well enough for an exact rule to pick the route's exit 0.88 of the
time. Policies trained to turn back did not learn the condition; this module states it.

The gate watches the policy act and, per frame, the room sense's guess of the room the agent
stands in (probabilities over ``ROOM_TYPES``). It knows:

- the start room: the mean guess over the frames before the policy's first forward step (its
  look-around);
- that the agent may have left it: after the first forward step, a guess at least ``frame_tv``
  (total variation) from the start room's for ``off_frames`` frames in a row;
- where it stands: by dead reckoning from the executed actions (``forward_step_m`` along the
  heading, ``turn_angle_deg`` per turn), so nothing but RGB-D and the instruction is read; a
  collision makes the estimate drift, as a robot's wheel odometry does.

Then it turns a full circle in place (the policy is not asked; it comes back to the view it left,
in the embedded simulator up to the last bits of a float heading, which can still change the
rest of an episode: README, "Exit gate") and averages the guess over the turn. The named room (``p >= accept_at`` or the
argmax): the gate stands down for the episode. Still the start room (``tv <= leave_tv``), or the
named room not ruled out (``p >= wrong_below``): it goes on watching. Otherwise the room is wrong:
the gate turns around, retraces the policy's actions in reverse (forward steps forward, turns
mirrored), turns back to the start heading, restarts the policy (a fresh state, the same
instruction) and from then on replaces a forward step that would end within ``forbid_radius_m``
of the wrong walk (the poses from the first off frame on), and nearer to it than before, by the
policy's better turn. It walks back out of at most ``max_wrong`` rooms, then stands down; with
``max_wrong = 0`` it only scans and judges, the control of its turns in place.

With ``rooms = N > 1`` it checks the first N rooms the instruction names (``named_route_rooms``)
in turn: an accepted room's scan becomes the guess of the room being left, and a walk back out of
a later room retraces the policy's actions since that acceptance and rewinds the policy to the
state it had there (``mark_fn`` / ``rewind_fn`` of ``act``) instead of restarting it;
``max_scans`` and ``max_wrong`` count per named room.

Measured on the shipped agent (val_seen and val_unseen): README, "Exit gate".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sim.actions import Action
from sim.scenes.semantics import ROOM_TYPES
from vlnce.errors import ConfigError

# words after a room's name that make it a modifier ("the kitchen counter"), not a room
_MODIFIED = ("counter", "door", "sink", "table", "cabinet", "window", "floor", "wall")
_LEAVING = re.compile(r"\b(leave|exit|out of)\b")
_ROOM = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(ROOM_TYPES, key=len, reverse=True)) + r")\b"
                   r"(?!\s+(?:" + "|".join(_MODIFIED) + r")\b)")


def named_rooms(text: str) -> list[str]:
    """The room types an instruction names, in order (``ROOM_TYPES`` words; "the kitchen counter"
    names an object, not a room)."""
    return [m.group(1) for m in _ROOM.finditer(text.lower())]


def named_route_rooms(text: str) -> list[int]:
    """Indices into ``ROOM_TYPES`` of the rooms an instruction names after the start room, in
    order, a type named twice in a row kept once ("... into the office, and stop by the desk in
    the office" names the office once).

    The start room is the one its first clause leaves ("Leave the bedroom, turn left down the
    hallway, ..." names the hallway next); an instruction whose first clause leaves no room names
    the next room first.
    """
    low = text.lower()
    first_clause = low.split(",")[0]
    rooms = [(m.start(), m.group(1)) for m in _ROOM.finditer(low)]
    if rooms and _LEAVING.search(first_clause) and rooms[0][0] < len(first_clause):
        rooms = rooms[1:]
    out: list[int] = []
    for _, name in rooms:
        if not out or out[-1] != ROOM_TYPES.index(name):
            out.append(ROOM_TYPES.index(name))
    return out


def named_next_room(text: str) -> int | None:
    """Index into ``ROOM_TYPES`` of the room an instruction names after the start room, or None
    when it names none (``named_route_rooms``' first)."""
    rooms = named_route_rooms(text)
    return rooms[0] if rooms else None


@dataclass(frozen=True)
class ExitGateConfig:
    """The gate's thresholds (probabilities over ``ROOM_TYPES``; tv is total variation, 0..1).

    ``frame_tv``, ``off_frames``, ``accept_at`` and the spacing and radius were set by looking at
    the shipped agent's scans on val_unseen; ``leave_tv`` and ``wrong_below`` were then chosen on
    val_seen among {0.4, 0.5} x {0.1, 0.15, 0.2} (README, "Exit gate").
    """

    frame_tv: float = 0.5
    off_frames: int = 2
    leave_tv: float = 0.4
    wrong_below: float = 0.15
    accept_at: float = 0.3
    max_scans: int = 8
    scan_spacing_m: float = 1.5
    forbid_radius_m: float = 0.75
    max_wrong: int = 2
    rooms: int = 1
    forward_step_m: float = 0.25
    turn_angle_deg: float = 15.0

    def validate(self) -> "ExitGateConfig":
        for name in ("frame_tv", "leave_tv", "wrong_below", "accept_at"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"exit gate {name} must be in [0, 1], got {v}")
        if self.rooms < 1:
            raise ConfigError(f"exit gate rooms (how many named rooms it checks in turn) must be >= 1, got {self.rooms}")
        for name in ("off_frames", "max_scans", "max_wrong"):
            if getattr(self, name) < 0:
                raise ConfigError(f"exit gate {name} must be >= 0, got {getattr(self, name)}")
        for name in ("forward_step_m", "scan_spacing_m", "forbid_radius_m"):
            v = getattr(self, name)
            if not (math.isfinite(v) and (v > 0 if name == "forward_step_m" else v >= 0)):
                raise ConfigError(f"exit gate {name} must be a finite distance in metres "
                                  f"({'> 0' if name == 'forward_step_m' else '>= 0'}), got {v}")
        turns = 360.0 / self.turn_angle_deg
        if not (0 < self.turn_angle_deg <= 180) or abs(turns - round(turns)) > 1e-9:
            raise ConfigError(f"exit gate turn_angle_deg must divide 360, got {self.turn_angle_deg}")
        return self


def gate_config(options: dict | None) -> ExitGateConfig:
    """An ``ExitGateConfig`` from {field: value} (values as numbers or strings, e.g. from the
    command line's ``--exit-gate-set max_wrong=0``)."""
    fields = {f.name: f.type for f in ExitGateConfig.__dataclass_fields__.values()}
    values = {}
    for key, value in (options or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown exit gate setting {key!r}; expected one of {', '.join(fields)}")
        cast = int if fields[key] in (int, "int") else float
        try:
            values[key] = cast(value)
        except (TypeError, ValueError):
            raise ConfigError(f"exit gate setting {key}={value!r} is not a{'n integer' if cast is int else ' number'}") from None
    return ExitGateConfig(**values).validate()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


_MIRROR = {Action.MOVE_FORWARD: Action.MOVE_FORWARD, Action.TURN_LEFT: Action.TURN_RIGHT,
           Action.TURN_RIGHT: Action.TURN_LEFT}


@dataclass
class GateSummary:
    """What the gate did in one episode (recorded per episode by ``vlnce eval --exit-gate``).

    ``named`` is the first room checked, ``rooms`` all it was to check in turn; ``scans``,
    ``wrong`` (rooms walked back out of) and ``accepted`` (named rooms accepted) count over them.
    """

    named: str | None = None
    rooms: list[str] = field(default_factory=list)
    scans: int = 0
    wrong: int = 0
    accepted: int = 0
    gate_steps: int = 0
    blocked: int = 0
    verdicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"named": self.named, "rooms": list(self.rooms), "scans": self.scans, "wrong": self.wrong,
                "accepted": self.accepted, "gate_steps": self.gate_steps, "blocked": self.blocked,
                "verdicts": list(self.verdicts)}


class ExitGate:
    """The gate's state for one episode; see the module docstring.

    Per step, ``act(probs, logits_fn, rewind_fn, mark_fn)`` with the frame's room-type
    probabilities (R,) returns the action to execute and whether the policy chose it.
    ``logits_fn()`` runs the policy on the frame and returns its action logits (4,) (it is called
    only when the policy acts); ``mark_fn()`` is called where the gate accepts a named room and
    goes on to check the next one (the policy keeps its state there); ``rewind_fn()`` gives the
    policy, before it acts again after a walk back, the state it had at the last mark (a fresh
    state, before any).
    """

    WATCH, SCAN, BACK, DONE = "watch", "scan", "back", "done"

    def __init__(self, cfg: ExitGateConfig | None = None) -> None:
        self.cfg = (cfg or ExitGateConfig()).validate()
        self.scan_turns = round(360.0 / self.cfg.turn_angle_deg)
        self.reset(None)

    def reset(self, named) -> None:
        """A new episode. ``named``: the room types (indices into ``ROOM_TYPES``) the instruction
        names after the start room, in order (``named_route_rooms``), or one index, or None; the
        gate checks the first ``cfg.rooms`` of them in turn (none: it only watches)."""
        rooms = [] if named is None else [int(named)] if np.isscalar(named) else [int(r) for r in named]
        self.rooms = rooms[:self.cfg.rooms]
        self.stage = 0  # which of self.rooms is checked now
        self.mode = self.WATCH if self.rooms else self.DONE
        self.pose = np.zeros(3)  # x, z (metres, start frame), heading (rad; 0 = the start heading)
        self.start_probs: list[np.ndarray] = []
        self.reference: np.ndarray | None = None  # the guess of the room the agent is leaving
        self.forbidden = np.zeros((0, 2))
        self.queue: list[int] = []
        self.scan_probs: list[np.ndarray] = []
        self.stage_scans = self.stage_wrong = 0
        self._restart_walk()
        self.summary = GateSummary(named=ROOM_TYPES[self.rooms[0]] if self.rooms else None,
                                   rooms=[ROOM_TYPES[r] for r in self.rooms])

    @property
    def named(self) -> int | None:
        """The room type checked now (None when the gate has nothing to check)."""
        return self.rooms[self.stage] if self.rooms else None

    def _restart_walk(self, last_scan: np.ndarray | None = None) -> None:
        self.history: list[int] = []  # the policy's actions since its (re)start or the last mark
        self.walk: list[np.ndarray] = []  # the poses it acted from, since then
        self.moved = False
        self.off = 0
        self.off_index = 0
        self.last_scan = last_scan

    # ---- the state machine ----

    def act(self, probs, logits_fn, rewind_fn, mark_fn=None) -> tuple[int, bool]:
        probs = np.asarray(probs, np.float64).reshape(-1)
        if probs.shape != (len(ROOM_TYPES),):
            raise ValueError(f"room probabilities of shape {probs.shape}; expected ({len(ROOM_TYPES)},)")
        own = self._own_action(probs, rewind_fn, mark_fn)
        if own is not None:
            self.summary.gate_steps += 1
            self._move(own)
            return own, False
        action = self._policy_action(np.asarray(logits_fn(), np.float64).reshape(-1))
        self._move(action)
        return action, True

    def _own_action(self, probs: np.ndarray, rewind_fn, mark_fn) -> int | None:
        if self.mode == self.SCAN:
            if self.queue:
                self.scan_probs.append(probs)
                return self.queue.pop(0)
            self._verdict(np.mean(self.scan_probs, 0), mark_fn)
        if self.mode == self.BACK:
            if self.queue:
                return self.queue.pop(0)
            rewind_fn()
            self._restart_walk()
            self.mode = self.WATCH if self.stage_wrong < self.cfg.max_wrong else self.DONE
        if self.mode != self.WATCH:
            return None
        if not self.moved:
            if self.stage == 0 and self.stage_wrong == 0:  # the look-around before the first step tells the start room
                self.start_probs.append(probs)
                self.reference = np.mean(self.start_probs, 0)
            return None
        off = total_variation(probs, self.reference) > self.cfg.frame_tv
        if off and self.off == 0:
            self.off_index = len(self.walk)
        self.off = self.off + 1 if off else 0
        far = self.last_scan is None or np.linalg.norm(self.pose[:2] - self.last_scan) > self.cfg.scan_spacing_m
        if self.off >= self.cfg.off_frames and self.stage_scans < self.cfg.max_scans and far:
            self.last_scan = self.pose[:2].copy()
            self.summary.scans += 1
            self.stage_scans += 1
            self.mode = self.SCAN
            self.scan_probs = [probs]
            self.queue = [int(Action.TURN_LEFT)] * self.scan_turns
            return self.queue.pop(0)
        return None

    def _verdict(self, mean: np.ndarray, mark_fn) -> None:
        p_named = float(mean[self.named])
        if int(mean.argmax()) == self.named or p_named >= self.cfg.accept_at:
            self.summary.accepted += 1
            self.summary.verdicts.append("named")
            if self.stage + 1 < len(self.rooms):  # on to the next named room, leaving this one
                self.stage += 1
                self.stage_scans = self.stage_wrong = 0
                self.reference = mean
                if mark_fn is not None:
                    mark_fn()
                self._restart_walk(last_scan=self.pose[:2].copy())
                self.mode = self.WATCH
            else:
                self.mode = self.DONE
        elif total_variation(mean, self.reference) <= self.cfg.leave_tv or p_named >= self.cfg.wrong_below:
            self.mode = self.WATCH
            self.off = 0
            self.summary.verdicts.append("unsure")
        elif self.stage_wrong >= self.cfg.max_wrong:  # judged, not acted on (max_wrong = 0: a control)
            self.mode = self.DONE
            self.summary.verdicts.append("wrong")
        else:
            self.stage_wrong += 1
            self.summary.wrong += 1
            self.summary.verdicts.append("wrong")
            self.forbidden = np.vstack([self.forbidden, *self.walk[self.off_index:]])
            half = [int(Action.TURN_LEFT)] * (self.scan_turns // 2)
            self.queue = half + [int(_MIRROR[Action(a)]) for a in reversed(self.history)] + half
            self.mode = self.BACK

    def _policy_action(self, logits: np.ndarray) -> int:
        action = int(logits.argmax())
        if action == Action.MOVE_FORWARD and len(self.forbidden) and self._into_forbidden():
            turns = [int(Action.TURN_LEFT), int(Action.TURN_RIGHT)]
            action = max(turns, key=lambda a: logits[a])
            self.summary.blocked += 1
        if self.mode == self.WATCH:
            if action == Action.MOVE_FORWARD:
                self.moved = True
            self.walk.append(self.pose[:2].copy())
            self.history.append(action)
        return action

    def _into_forbidden(self) -> bool:
        here = self.pose[:2]
        ahead = here + self.cfg.forward_step_m * self._forward()
        d_ahead = np.linalg.norm(self.forbidden - ahead, axis=1)
        d_here = np.linalg.norm(self.forbidden - here, axis=1)
        return bool(np.any((d_ahead < self.cfg.forbid_radius_m) & (d_ahead < d_here)))

    def _forward(self) -> np.ndarray:
        # headings as the simulator's: 0 looks along -z, left turns are positive
        return np.array([-math.sin(self.pose[2]), -math.cos(self.pose[2])])

    def _move(self, action: int) -> None:
        if action == Action.MOVE_FORWARD:
            self.pose[:2] += self.cfg.forward_step_m * self._forward()
        elif action == Action.TURN_LEFT:
            self.pose[2] += math.radians(self.cfg.turn_angle_deg)
        elif action == Action.TURN_RIGHT:
            self.pose[2] -= math.radians(self.cfg.turn_angle_deg)
