"""VLN-CE measures, computed exactly as VLN-CE and habitat-lab compute them.

Sources: habitat-lab ``habitat/tasks/nav/nav.py`` (DistanceToGoal, Success, SPL) and VLN-CE
``habitat_extensions/measures.py`` (PathLength, OracleSuccess, NDTW, SDTW, StepsTaken), as
summarised in shared/specs/navigation_anchors.md section 1.2. Each measure is a small state
machine: ``reset`` at the start of an episode (which also computes the value at step 0),
``update`` after every action (STOP included), ``value`` to read it. Measures that depend on
others read their values instead of recomputing them and are checked to come after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from vlnce.errors import ConfigError
from vlnce.registry import Registry

SUCCESS_DISTANCE_M = 3.0


@dataclass
class StepContext:
    """What measures may read after a reset or a step.

    Attributes:
        position: (3,) agent position, metres (Habitat frame).
        stop_called: the agent has issued STOP.
        goals: (G, 3) goal positions.
        geodesic: callable(position, goals) -> metres (``inf`` if unreachable).
        gt_locations: dense reference locations of the episode (for nDTW), or None.
        distractors: (D, 3) positions of the episode's other plausible destinations
            (``info.distractors`` of the embedded benchmark), or None.
        room_at: callable(position) -> the id of the room that contains it (None between rooms),
            where the simulator knows its house's rooms (the embedded backend); else None.
    """

    position: np.ndarray
    stop_called: bool
    goals: np.ndarray
    geodesic: Callable[[np.ndarray, np.ndarray], float]
    gt_locations: Sequence[Sequence[float]] | None = None
    distractors: np.ndarray | None = None
    room_at: Callable[[np.ndarray], int | None] | None = None
    measures: dict = field(default_factory=dict)


class Measure:
    """Base class. Subclasses set ``uuid`` (the registered name) and ``requires``."""

    uuid: str = ""
    requires: tuple[str, ...] = ()

    def __init__(self, **config) -> None:
        if config:
            raise ConfigError(f"measure {self.uuid!r} takes no options, got {sorted(config)}")
        self._value = 0.0

    def reset(self, ctx: StepContext) -> None:
        self.update(ctx)

    def update(self, ctx: StepContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def value(self) -> float:
        return float(self._value)


MEASURES: Registry = Registry("measure", base=Measure)


def json_values(values: dict[str, float], digits: int = 6) -> dict[str, float | None]:
    """Measure values for JSON files and messages: rounded, and None where not finite (JSON has no inf)."""
    return {k: (round(v, digits) if np.isfinite(v) else None) for k, v in values.items()}


def _register(cls):
    MEASURES.add(cls.uuid, cls)
    return cls


class _WithinRadius(Measure):
    """A measure judged against the success radius (``success_distance_m``, metres)."""

    def __init__(self, success_distance_m: float = SUCCESS_DISTANCE_M) -> None:
        super().__init__()
        self.success_distance_m = float(success_distance_m)


@_register
class DistanceToGoal(Measure):
    """Geodesic distance from the agent to the goal (habitat-lab DistanceToGoal; NE at the end).

    Metres; at step 0 the start's geodesic distance.
    """

    uuid = "distance_to_goal"

    def reset(self, ctx):
        self._last_position = None
        self.update(ctx)

    def update(self, ctx):
        # habitat-lab recomputes only when the agent moved more than 1e-4 m
        if self._last_position is None or np.linalg.norm(ctx.position - self._last_position) > 1e-4:
            self._value = ctx.geodesic(ctx.position, ctx.goals)
            self._last_position = np.array(ctx.position, dtype=np.float64)


@_register
class Success(_WithinRadius):
    """1 if STOP was called strictly within ``success_distance_m`` of the goal (geodesic), else 0."""

    uuid = "success"
    requires = ("distance_to_goal",)

    def update(self, ctx):
        d = ctx.measures["distance_to_goal"].value
        self._value = 1.0 if ctx.stop_called and d < self.success_distance_m else 0.0


@_register
class OracleSuccess(_WithinRadius):
    """1 once the agent has been strictly within ``success_distance_m`` of the goal; STOP not needed."""

    uuid = "oracle_success"
    requires = ("distance_to_goal",)

    def reset(self, ctx):
        self._value = 0.0
        self.update(ctx)

    def update(self, ctx):
        d = ctx.measures["distance_to_goal"].value
        self._value = float(bool(self._value) or d < self.success_distance_m)


@_register
class OracleNavigationError(Measure):
    """Smallest distance to the goal over the episode, metres."""

    uuid = "oracle_navigation_error"
    requires = ("distance_to_goal",)

    def reset(self, ctx):
        self._value = math.inf
        self.update(ctx)

    def update(self, ctx):
        self._value = min(self._value, ctx.measures["distance_to_goal"].value)


@_register
class PathLength(Measure):
    """Trajectory length TL: the sum of Euclidean distances between successive positions, metres.

    (VLN-CE's docstring says geodesic; its code, which we follow, sums Euclidean steps.)
    """

    uuid = "path_length"

    def reset(self, ctx):
        self._previous = np.array(ctx.position, dtype=np.float64)
        self._value = 0.0

    def update(self, ctx):
        current = np.array(ctx.position, dtype=np.float64)
        self._value += float(np.linalg.norm(current - self._previous))
        self._previous = current


@_register
class SPL(Measure):
    """Success weighted by path length (Anderson et al. 2018): S * d0 / max(d0, L), in [0, 1].

    ``d0`` is the geodesic distance at reset and ``L`` the Euclidean path length, as in habitat-lab.
    """

    uuid = "spl"
    requires = ("distance_to_goal", "success", "path_length")

    def reset(self, ctx):
        self._start_distance = ctx.measures["distance_to_goal"].value
        self.update(ctx)

    def update(self, ctx):
        success = ctx.measures["success"].value
        length = ctx.measures["path_length"].value
        denom = max(self._start_distance, length)
        self._value = success * (self._start_distance / denom) if denom > 0 else success


def dtw_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Dynamic time warping distance between point sequences (N, D) and (M, D), Euclidean cost."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row = acc[i]
        prev = acc[i - 1]
        c = cost[i - 1]
        diag_up = np.minimum(prev[1:], prev[:-1]) + c  # min(D[i-1, j], D[i-1, j-1]) + c
        # the left neighbour D[i, j-1] is a running recurrence along the row
        for j in range(1, m + 1):
            left = row[j - 1] + c[j - 1]
            row[j] = diag_up[j - 1] if diag_up[j - 1] < left else left
    return float(acc[n, m])


def dtw_fast(a, b) -> float:
    """fastdtw's approximate DTW (radius 1), VLN-CE's default (``FDTW: True``)."""
    from fastdtw import fastdtw

    return float(fastdtw(np.asarray(a, np.float64), np.asarray(b, np.float64),
                         dist=lambda x, y: float(np.linalg.norm(x - y)))[0])


@_register
class NDTW(Measure):
    """Normalised dynamic time warping (Ilharco et al. 2019): exp(-DTW(P, R) / (|R| * 3.0)), in (0, 1].

    P holds the agent's positions, appended only when they change; R is the episode's dense
    reference ``locations`` from ``{split}_gt.json.gz``. ``fast=True`` uses fastdtw as VLN-CE does.
    The DTW is evaluated lazily when the value is read (same result, fewer evaluations).
    """

    uuid = "ndtw"

    def __init__(self, fast: bool = True, success_distance_m: float = SUCCESS_DISTANCE_M) -> None:
        super().__init__()
        self.fast = bool(fast)
        self.success_distance_m = float(success_distance_m)

    def reset(self, ctx):
        if ctx.gt_locations is None or len(ctx.gt_locations) == 0:
            raise ConfigError("the ndtw measure needs the episode's reference locations ({split}_gt.json.gz)")
        self._gt = np.asarray(ctx.gt_locations, np.float64)
        self._locations: list[list[float]] = []
        self._cache: tuple[int, float] | None = None
        self.update(ctx)

    def update(self, ctx):
        current = [float(v) for v in ctx.position]
        if not self._locations or current != self._locations[-1]:
            self._locations.append(current)

    @property
    def value(self) -> float:
        n = len(self._locations)
        if self._cache is None or self._cache[0] != n:
            func = dtw_fast if self.fast else dtw_exact
            d = func(np.asarray(self._locations), self._gt)
            self._cache = (n, float(np.exp(-d / (len(self._gt) * self.success_distance_m))))
        return self._cache[1]


@_register
class SDTW(Measure):
    """Success weighted by nDTW: success * nDTW."""

    uuid = "sdtw"
    requires = ("success", "ndtw")

    def update(self, ctx):
        self._ctx_measures = ctx.measures

    @property
    def value(self) -> float:
        return self._ctx_measures["success"].value * self._ctx_measures["ndtw"].value


@_register
class StepsTaken(Measure):
    """Number of actions taken, STOP included (VLN-CE StepsTaken)."""

    uuid = "steps_taken"

    def reset(self, ctx):
        self._value = 0.0

    def update(self, ctx):
        self._value += 1.0


@_register
class RouteFollowed(Measure):
    """Share of the reference route the agent followed before it first strayed from it, in [0, 1].

    A diagnostic, not a VLN-CE measure: it tells the navigation failures that never found the route
    from those that lost it midway. The route is the episode's dense reference locations R (the
    ``{split}_gt.json.gz`` locations, as nDTW uses), each given the share of R's arc length up to it.
    After every step: once the agent is more than ``leave_m`` from every point of R it has strayed
    and the value is frozen; until then the value is the largest share among the points of R that
    have been within ``near_m`` of it. So an agent that never moves scores the share within
    ``near_m`` of the start, and one that reaches the goal along the route scores 1.
    """

    uuid = "route_followed"

    def __init__(self, leave_m: float = SUCCESS_DISTANCE_M, near_m: float = SUCCESS_DISTANCE_M / 2) -> None:
        super().__init__()
        if not 0 < near_m <= leave_m:
            raise ConfigError(f"route_followed needs 0 < near_m <= leave_m, got near_m={near_m}, leave_m={leave_m}")
        self.leave_m, self.near_m = float(leave_m), float(near_m)

    def reset(self, ctx):
        if ctx.gt_locations is None or len(ctx.gt_locations) == 0:
            raise ConfigError("the route_followed measure needs the episode's reference locations ({split}_gt.json.gz)")
        self._route = np.asarray(ctx.gt_locations, np.float64)
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(self._route, axis=0), axis=1))]
        self._share = arc / arc[-1] if arc[-1] > 0 else np.ones(len(arc))
        self._strayed = False
        self._value = 0.0
        self.update(ctx)

    def update(self, ctx):
        if self._strayed:
            return
        d = np.linalg.norm(self._route - np.asarray(ctx.position, np.float64), axis=1)
        if d.min() > self.leave_m:
            self._strayed = True
            return
        near = d <= self.near_m
        if near.any():
            self._value = max(self._value, float(self._share[near].max()))


@_register
class DestinationSuccess(_WithinRadius):
    """1 if STOP was called strictly within ``success_distance_m`` of the goal or of any of the
    episode's distractors (geodesic), else 0; NaN for an episode that lists no distractors.

    A diagnostic, not a VLN-CE measure. On the embedded benchmark the goal and its distractors
    are the destinations plausible from the start, pairwise more than twice the radius apart, so
    success / destination_success is how often the agent picked the instructed one among those it
    reached: near 1 / (1 + distractors) for an agent that ignores the instruction (the benchmark's
    ``instruction_blind`` agent: 0.17 on val_unseen, where episodes have 3-6 distractors).
    """

    uuid = "destination_success"
    requires = ("success",)

    def update(self, ctx):
        if ctx.distractors is None or len(ctx.distractors) == 0:
            self._value = math.nan
        elif ctx.measures["success"].value:
            self._value = 1.0
        else:
            near = ctx.stop_called and ctx.geodesic(ctx.position, ctx.distractors) < self.success_distance_m
            self._value = 1.0 if near else 0.0


@_register
class NearerDestination(_WithinRadius):
    """1 if STOP was called strictly within ``success_distance_m`` of a distractor that is nearer
    the start than the goal (geodesic, measured at reset), else 0; NaN for an episode that lists no
    distractors.

    A diagnostic, not a VLN-CE measure, read beside ``destination_success``: of the stops at a
    wrong destination, the share at a nearer one says whether the agent turns off the route too
    soon (an agent choosing among the destinations regardless of distance is near the share of
    nearer distractors, about a half on the embedded benchmark).
    """

    uuid = "nearer_destination"
    requires = ("success",)

    def reset(self, ctx):
        self._nearer = None
        if ctx.distractors is not None and len(ctx.distractors) > 0:
            to_goal = ctx.geodesic(ctx.position, ctx.goals)
            others = np.asarray(ctx.distractors, np.float64)
            self._nearer = others[[ctx.geodesic(ctx.position, p[None]) < to_goal for p in others]]
        self.update(ctx)

    def update(self, ctx):
        if self._nearer is None:
            self._value = math.nan
        elif ctx.stop_called and not ctx.measures["success"].value and len(self._nearer) > 0:
            self._value = 1.0 if ctx.geodesic(ctx.position, self._nearer) < self.success_distance_m else 0.0
        else:
            self._value = 0.0


@_register
class ExitRoom(Measure):
    """1 if the first room the agent stands in after its start room is the one the reference
    route enters first after it, 0 if it is another or the agent never left; NaN where the rooms
    are not known (no ``room_at``) or the route never leaves its start room.

    A diagnostic, not a VLN-CE measure. On the embedded benchmark the instruction names the room
    beyond the start room's exit ("leave the bedroom, turn left down the hallway, ..."), and the
    goal and its distractors often lie beyond different exits, so this says whether the agent
    read the first choice of the walk. Doorways (positions in no room) do not count as a room.
    """

    uuid = "exit_room"

    def reset(self, ctx):
        self._want = self._start = None
        self._decided = False
        self._value = 0.0
        if ctx.room_at is None or ctx.gt_locations is None:
            self._value = math.nan
            return
        self._start = ctx.room_at(np.asarray(ctx.position, np.float64))
        for p in ctx.gt_locations:
            room = ctx.room_at(np.asarray(p, np.float64))
            if room is not None and room != self._start:
                self._want = room
                break
        if self._start is None or self._want is None:
            self._value = math.nan

    def update(self, ctx):
        if self._decided or self._want is None or self._start is None:
            return
        room = ctx.room_at(np.asarray(ctx.position, np.float64))
        if room is not None and room != self._start:
            self._value = 1.0 if room == self._want else 0.0
            self._decided = True


@_register
class TurnedBack(ExitRoom):
    """Whether an agent that left its start room into another room than the route's later stood
    in the route's room: 1 if it did (it turned back, or found another way), 0 if not; NaN where
    ``exit_room`` is not 0 with a room entered (the right exit, no exit, or unknown rooms).

    A diagnostic, not a VLN-CE measure: the share of wrong exits that are undone.
    """

    uuid = "turned_back"

    def reset(self, ctx):
        self._back = math.nan
        super().reset(ctx)

    def update(self, ctx):
        decided = self._decided
        super().update(ctx)
        if not self._decided or self._value != 0.0:
            return
        if not decided:
            self._back = 0.0  # the first room entered is another than the route's
        elif self._back == 0.0 and ctx.room_at(np.asarray(ctx.position, np.float64)) == self._want:
            self._back = 1.0

    @property
    def value(self) -> float:
        return float(self._back)


DEFAULT_MEASURES = ("distance_to_goal", "success", "oracle_success", "oracle_navigation_error", "path_length",
                    "spl", "ndtw", "sdtw", "steps_taken")
# Not VLN-CE's: computed by ``vlnce eval`` to say where navigation failures go wrong.
DIAGNOSTIC_MEASURES = ("route_followed", "destination_success", "nearer_destination", "exit_room", "turned_back")


class Measurements:
    """An ordered set of measures, checked for duplicates and dependency order.

    Args:
        names: measure uuids in evaluation order.
        options: per-measure keyword options, e.g. ``{"ndtw": {"fast": False}}``.
        registry: where names are looked up (tests pass a fresh one).
    """

    def __init__(self, names: Sequence[str] = DEFAULT_MEASURES, options: dict | None = None,
                 registry: Registry = MEASURES) -> None:
        options = options or {}
        self.measures: dict[str, Measure] = {}
        for name in names:
            if name in self.measures:
                raise ConfigError(f"measure {name!r} is listed twice")
            cls = registry.get(name)
            for dep in cls.requires:
                if dep not in self.measures:
                    raise ConfigError(f"measure {name!r} needs {dep!r} listed before it (got order {list(names)})")
            self.measures[name] = cls(**options.get(name, {}))
        unknown = set(options) - set(self.measures)
        if unknown:
            raise ConfigError(f"options given for measures that are not enabled: {sorted(unknown)}")

    def reset(self, ctx: StepContext) -> None:
        ctx.measures = self.measures
        for m in self.measures.values():
            m.reset(ctx)

    def update(self, ctx: StepContext) -> None:
        ctx.measures = self.measures
        for m in self.measures.values():
            m.update(ctx)

    def values(self) -> dict[str, float]:
        return {name: m.value for name, m in self.measures.items()}
