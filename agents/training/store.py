"""An on-disk, memory-mapped store of trajectories (the role of VLN-CE's LMDB feature store).

Layout of a store directory::

    chunks/NNNN_WW/       one chunk per collection job (iteration NNNN, worker WW)
        rgb.npy           (steps, H, W, 3) uint8
        depth.npy         (steps, H, W, 1) float16 (normalised depth, [0, 1])
        steps.npy         (steps,) structured: oracle action, previous executed action, progress
        tokens.npy        (episodes, L) int32 instruction ids
        rooms.npy         (steps,) int8 type of the agent's room (``sim.sensors.rooms``; -1 none)
        view_rooms.npy    (steps, 16) int8 room types seen in the 4 x 4 image cells
        episodes.json     per episode: id, first step, length, iteration

Chunks written before room labels existed lack the two room arrays; they read as unlabelled.

A chunk is written to a temporary directory and renamed into place, so a crash never leaves a
half chunk: either it is there, complete, or it is collected again. Arrays open with
``mmap_mode="r"``; the aggregated data of all DAgger iterations can be far larger than memory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.sensors.rooms import VIEW_CELLS
from vlnce.errors import DatasetError

STEP_DTYPE = np.dtype([("action", np.int8), ("prev_action", np.int8), ("progress", np.float16)])


@dataclass
class Trajectory:
    chunk: int
    start: int
    length: int
    episode_id: str
    iteration: int
    token_row: int


class ChunkWriter:
    """Accumulates the steps of one collection job and commits them as a chunk."""

    def __init__(self, store_dir: Path, name: str, rgb_shape: tuple | None, depth_shape: tuple | None) -> None:
        self.final = Path(store_dir) / "chunks" / name
        self.tmp = self.final.with_name(self.final.name + f".tmp{os.getpid()}")
        self.rgb_shape, self.depth_shape = rgb_shape, depth_shape
        self.rgb: list[np.ndarray] = []
        self.depth: list[np.ndarray] = []
        self.steps: list[tuple] = []
        self.tokens: list[np.ndarray] = []
        self.rooms: list[np.ndarray] = []
        self.view_rooms: list[np.ndarray] = []
        self.episodes: list[dict] = []

    def add_episode(self, episode_id: str, iteration: int, tokens, frames: list[dict], actions, prev_actions,
                    progress, rooms=None, view_rooms=None) -> None:
        """Append one trajectory: per step the observation, oracle action, previous action, progress,
        and the room labels (None: unknown, stored as -1)."""
        n = len(actions)
        if not (len(frames) == len(prev_actions) == len(progress) == n) or n == 0:
            raise ValueError(f"episode {episode_id}: inconsistent trajectory lengths")
        rooms = np.full(n, -1, np.int8) if rooms is None else np.asarray(rooms, np.int8)
        view_rooms = np.full((n, VIEW_CELLS), -1, np.int8) if view_rooms is None else np.asarray(view_rooms, np.int8)
        if rooms.shape != (n,) or view_rooms.shape != (n, VIEW_CELLS):
            raise ValueError(f"episode {episode_id}: room labels of shapes {rooms.shape} and {view_rooms.shape}, "
                             f"expected ({n},) and ({n}, {VIEW_CELLS})")
        self.rooms.append(rooms)
        self.view_rooms.append(view_rooms)
        self.episodes.append({"episode_id": str(episode_id), "start": len(self.steps), "length": n,
                              "iteration": int(iteration), "token_row": len(self.tokens)})
        self.tokens.append(np.asarray(tokens, np.int32))
        for f in frames:
            if self.rgb_shape is not None:
                self.rgb.append(np.asarray(f["rgb"], np.uint8))
            if self.depth_shape is not None:
                self.depth.append(np.asarray(f["depth"], np.float16))
        self.steps.extend(zip(actions, prev_actions, progress))

    def commit(self) -> Path:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        n = len(self.steps)
        rgb = np.stack(self.rgb) if self.rgb else np.zeros((n, *(self.rgb_shape or (0, 0, 3))), np.uint8)
        depth = np.stack(self.depth) if self.depth else np.zeros((n, *(self.depth_shape or (0, 0, 1))), np.float16)
        np.save(self.tmp / "rgb.npy", rgb)
        np.save(self.tmp / "depth.npy", depth)
        np.save(self.tmp / "steps.npy", np.array(self.steps, STEP_DTYPE))
        np.save(self.tmp / "rooms.npy", np.concatenate(self.rooms) if self.rooms else np.zeros(0, np.int8))
        np.save(self.tmp / "view_rooms.npy",
                np.concatenate(self.view_rooms) if self.view_rooms else np.zeros((0, VIEW_CELLS), np.int8))
        width = max((len(t) for t in self.tokens), default=1)
        tokens = np.zeros((len(self.tokens), width), np.int32)
        for i, t in enumerate(self.tokens):
            tokens[i, : len(t)] = t
        np.save(self.tmp / "tokens.npy", tokens)
        (self.tmp / "episodes.json").write_text(json.dumps(self.episodes))
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final


class TrajectoryStore:
    """Read access to every committed chunk of a store directory."""

    def __init__(self, store_dir: str | Path) -> None:
        self.dir = Path(store_dir)
        self.reload()

    def reload(self) -> None:
        self.chunks: list[dict] = []
        self.trajectories: list[Trajectory] = []
        root = self.dir / "chunks"
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and ".tmp" not in p.name) if root.is_dir() else []
        for name in names:
            d = root / name
            try:
                chunk = {"name": name, "rgb": np.load(d / "rgb.npy", mmap_mode="r"),
                         "depth": np.load(d / "depth.npy", mmap_mode="r"),
                         "steps": np.load(d / "steps.npy", mmap_mode="r"),
                         "tokens": np.load(d / "tokens.npy", mmap_mode="r"),
                         "episodes": json.loads((d / "episodes.json").read_text())}
                labelled = (d / "rooms.npy").is_file() and (d / "view_rooms.npy").is_file()
                chunk["rooms"] = np.load(d / "rooms.npy", mmap_mode="r") if labelled else None
                chunk["view_rooms"] = np.load(d / "view_rooms.npy", mmap_mode="r") if labelled else None
            except (OSError, ValueError, json.JSONDecodeError) as exc:
                raise DatasetError(f"trajectory store chunk {d} is unreadable ({exc}); delete it to collect it again") from None
            k = len(self.chunks)
            self.chunks.append(chunk)
            for e in chunk["episodes"]:
                self.trajectories.append(Trajectory(k, e["start"], e["length"], e["episode_id"], e["iteration"],
                                                    e["token_row"]))

    def has_chunk(self, name: str) -> bool:
        return (self.dir / "chunks" / name).is_dir()

    def check_frames(self, rgb_size: int | None, depth_size: int | None) -> None:
        """Raises DatasetError when a chunk's frames are not the square sizes a policy takes
        (None: the policy has no such input, and any frames stored for it are ignored)."""
        for c in self.chunks:
            for key, size in (("rgb", rgb_size), ("depth", depth_size)):
                if size is not None and tuple(c[key].shape[1:3]) != (size, size):
                    h, w = c[key].shape[1:3]
                    raise DatasetError(f"store {self.dir}: chunk {c['name']} holds {h}x{w} {key} frames, this "
                                       f"policy takes {size}x{size} (--image-size); copy in a store collected at "
                                       "that size or use another --out")

    def check_room_labels(self) -> None:
        """Raises DatasetError when a chunk was collected before room labels were stored."""
        old = [c["name"] for c in self.chunks if c["rooms"] is None]
        if old:
            raise DatasetError(f"store {self.dir}: chunks {', '.join(old[:4])}{' ...' if len(old) > 4 else ''} have "
                               "no room labels (collected by an older version); --room-aux and --room-labels need them: use "
                               "another --out, or delete those chunks to collect them again")

    def iterations(self) -> set[int]:
        return {t.iteration for t in self.trajectories}

    @property
    def num_steps(self) -> int:
        return sum(t.length for t in self.trajectories)

    def actions(self, index: int) -> np.ndarray:
        """The expert actions (T,) of trajectory ``index``, without loading its frames."""
        t = self.trajectories[index]
        return self.chunks[t.chunk]["steps"]["action"][t.start:t.start + t.length]

    def tokens(self, index: int) -> np.ndarray:
        """The instruction token ids (L,) of trajectory ``index``, without padding."""
        t = self.trajectories[index]
        row = self.chunks[t.chunk]["tokens"][t.token_row]
        return row[row != 0]

    def batch(self, indices) -> dict[str, np.ndarray]:
        """Padded arrays for the trajectories ``indices``: rgb (B, T, H, W, 3), depth, action,
        prev_action, progress (B, T), mask (B, T) bool, tokens (B, L), room (B, T) and view_rooms
        (B, T, 16) int64 room types (-1 on padding and where unknown), index (B,) the trajectories'
        indices."""
        trajs = [self.trajectories[i] for i in indices]
        b, t = len(trajs), max(tr.length for tr in trajs)
        first = self.chunks[trajs[0].chunk]
        rgb = np.zeros((b, t, *first["rgb"].shape[1:]), np.uint8)
        depth = np.zeros((b, t, *first["depth"].shape[1:]), np.float16)
        action = np.zeros((b, t), np.int64)
        prev = np.full((b, t), -1, np.int64)
        progress = np.zeros((b, t), np.float32)
        mask = np.zeros((b, t), bool)
        room = np.full((b, t), -1, np.int64)
        view_rooms = np.full((b, t, VIEW_CELLS), -1, np.int64)
        width = max(self.chunks[tr.chunk]["tokens"].shape[1] for tr in trajs)
        tokens = np.zeros((b, width), np.int64)
        for i, tr in enumerate(trajs):
            c = self.chunks[tr.chunk]
            sl = slice(tr.start, tr.start + tr.length)
            if c["rgb"].shape[1:] != first["rgb"].shape[1:] or c["depth"].shape[1:] != first["depth"].shape[1:]:
                raise DatasetError(f"store {self.dir}: chunk {c['name']} has other image sizes than {first['name']}")
            rgb[i, : tr.length] = c["rgb"][sl]
            depth[i, : tr.length] = c["depth"][sl]
            steps = c["steps"][sl]
            action[i, : tr.length] = steps["action"]
            prev[i, : tr.length] = steps["prev_action"]
            progress[i, : tr.length] = steps["progress"]
            mask[i, : tr.length] = True
            if c["rooms"] is not None:
                room[i, : tr.length] = c["rooms"][sl]
                view_rooms[i, : tr.length] = c["view_rooms"][sl]
            row = c["tokens"][tr.token_row]
            tokens[i, : len(row)] = row
        return {"rgb": rgb, "depth": depth, "action": action, "prev_action": prev, "progress": progress,
                "mask": mask, "tokens": tokens, "room": room, "view_rooms": view_rooms,
                "index": np.asarray(indices, np.int64)}


def inflection_weights(actions, coef: float):
    """VLN-CE's inflection weights: ``coef`` at t = 0 and wherever a_t != a_{t-1}, 1 elsewhere.

    ``actions``: an int tensor (..., T), time last; returns float32 weights of that shape on its
    device (no host round trip, which on CUDA would synchronise once per batch).
    """
    import torch

    infl = torch.ones_like(actions, dtype=torch.bool)
    infl[..., 1:] = actions[..., 1:] != actions[..., :-1]
    return torch.where(infl, float(coef), 1.0)


def inflection_weighted_ce(logits, actions, mask, coef: float, step_weights=None):
    """VLN-CE's imitation loss: ``sum_t w_t CE_t / sum_t w_t`` per trajectory, averaged over the batch.

    Args:
        logits: (B, T, A). actions: (B, T) int64 expert actions. mask: (B, T) bool, False on padding.
        coef: the inflection weight (``inflection_weights``).
        step_weights: optional (B, T) float factors multiplying w_t (e.g. ``sibling_decision_steps``'s).
    """
    import torch.nn.functional as F

    w = inflection_weights(actions, coef) * mask
    if step_weights is not None:
        w = w * step_weights
    ce = F.cross_entropy(logits.float().flatten(0, 1), actions.flatten(), reduction="none").view_as(w)
    return ((ce * w).sum(1) / w.sum(1)).mean()


def inflection_coefficient(action_sequences) -> float:
    """Inverse inflection frequency: steps / inflections over the sequences (3.2 on R2R-CE)."""
    steps = infl = 0
    for a in action_sequences:
        a = np.asarray(a)
        if len(a) == 0:
            continue
        steps += len(a)
        infl += 1 + int(np.count_nonzero(a[1:] != a[:-1]))
    return steps / infl if infl else 1.0


def sibling_decision_steps(action_sequences) -> list[np.ndarray]:
    """For expert action sequences that start from one pose in one house (to different goals;
    ``sibling_groups``), the steps at which each first departs from one of the others, sorted.

    Up to such a step t both took the same actions, so at t they see the same frames and have the
    same previous action: only their instructions can tell them apart. Those are the steps that
    teach an imitation policy to read the instruction; identical sequences have none.
    """
    seqs = [np.asarray(a) for a in action_sequences]
    out = []
    for i, a in enumerate(seqs):
        steps = set()
        for j, b in enumerate(seqs):
            if j == i:
                continue
            n = min(len(a), len(b))
            differ = np.flatnonzero(a[:n] != b[:n])
            if len(differ):
                steps.add(int(differ[0]))
        out.append(np.array(sorted(steps), np.int64))
    return out


def sibling_groups(store: TrajectoryStore, episodes) -> list[list[int]]:
    """The store's teacher-forcing (iteration 0) trajectories grouped by start pose: indices of
    those whose episodes (``Episode`` records, by id) share a scene, start position and rotation;
    only groups of two or more. Destination-group Aug (``--aug-all-destinations``) makes them."""
    start = {e.episode_id: (e.scene_id, tuple(e.start_position), tuple(e.start_rotation)) for e in episodes}
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(store.trajectories):
        if t.iteration == 0 and t.episode_id in start:
            groups.setdefault(start[t.episode_id], []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def sibling_decisions(store: TrajectoryStore, groups: list[list[int]]) -> dict[int, np.ndarray]:
    """Trajectory index -> its sibling decision steps (``sibling_decision_steps``), for the
    trajectories of ``groups`` (``sibling_groups``) that have any."""
    out = {}
    for members in groups:
        for i, found in zip(members, sibling_decision_steps(store.actions(m) for m in members)):
            if len(found):
                out[i] = found
    return out


def parting_siblings(store: TrajectoryStore, members: list[int], i: int, t: int) -> list[int]:
    """The members of trajectory ``i``'s group (``sibling_groups``) that take its actions up to step
    ``t`` and another at ``t``: the siblings that part from it there."""
    a = store.actions(i)
    return [m for m in members if m != i and len(b := store.actions(m)) > t and (b[:t] == a[:t]).all() and b[t] != a[t]]


def telling_words(store: TrajectoryStore, groups: list[list[int]],
                  decisions: dict[int, np.ndarray]) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Trajectory index -> [(t, telling)] for each of its sibling decisions t (``sibling_decisions``):
    ``telling`` (L,) bool over its instruction's words, True for the words that no sibling parting
    from it at t has in its own instruction, the only words that can say which way to go there.
    Decisions where every word is shared are left out."""
    out: dict[int, list] = {}
    for members in groups:
        words = {m: store.tokens(m) for m in members}
        for i in members:
            for t in decisions.get(i, ()):
                parting = parting_siblings(store, members, i, t)
                telling = ~np.isin(words[i], np.concatenate([words[m] for m in parting]))
                if telling.any():
                    out.setdefault(i, []).append((int(t), telling))
    return out


def next_room_labels(rooms: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, T) the type of the next room each trajectory enters after the one it is in at step t: the
    first later label that differs from the step's own; -1 where it enters none (its last room, an
    unknown room, or padding). ``rooms``: (B, T) room types (-1: unknown); ``mask``: (B, T) steps."""
    out = np.full(rooms.shape, -1, np.int64)
    for b in range(rooms.shape[0]):
        nxt = -1
        for t in range(int(mask[b].sum()) - 1, -1, -1):
            if t + 1 < rooms.shape[1] and mask[b, t + 1] and rooms[b, t + 1] != rooms[b, t] and rooms[b, t + 1] >= 0:
                nxt = int(rooms[b, t + 1])
            out[b, t] = nxt if rooms[b, t] >= 0 else -1
    return out


def doorway_steps(rooms: np.ndarray, mask: np.ndarray, span: int = 3) -> np.ndarray:
    """(B, T) bool: the first ``span`` steps after each entry from the start room into a room of
    another type, where an agent that searches the exits decides to go on or to turn back. An
    entry is a step whose room type is known, differs from the first step's, and follows (over
    unknown steps, doorways) a step in the start room's type. ``rooms``: (B, T) room types (-1:
    unknown); ``mask``: (B, T) steps. Rooms of the start room's type are not told apart."""
    out = np.zeros(rooms.shape, bool)
    for b in range(rooms.shape[0]):
        n = int(mask[b].sum())
        start, last = int(rooms[b, 0]), int(rooms[b, 0])
        if start < 0:
            continue
        for t in range(1, n):
            here = int(rooms[b, t])
            if here < 0:
                continue
            if here != start and last == start:
                out[b, t:min(t + span, n)] = True
            last = here
    return out


def compass_grounding_ce(attention, compass, next_rooms):
    """Cross-entropy of CMA's room-compass attention against the bins that hold the next room.

    At step t with next room type n = ``next_rooms[b, t]`` the target over the 24 bins is
    q_k = M_k[n] / sum_j M_j[n], the compass's share of that type by bearing, and the loss is
    -sum_k q_k log alpha_k. Mean over the steps whose next room is known (n >= 0) and already in
    the compass (sum_j M_j[n] > 0); 0 when there is none.

    ``attention``: (B, T, K) weights summing to 1 over the bins; ``compass``: (B, T, K, R) room
    types (or probabilities) by bin; ``next_rooms``: (B, T) int64, -1 for none
    (``next_room_labels``; padding is -1 there).
    """
    import torch

    attention, compass = attention.float(), compass.float()
    n = next_rooms.clamp(min=0)
    held = compass.gather(-1, n[..., None, None].expand(*compass.shape[:-1], 1)).squeeze(-1)  # (B, T, K)
    total = held.sum(-1)
    known = (next_rooms >= 0) & (total > 0)
    if not bool(known.any()):
        return attention.sum() * 0.0
    target = held[known] / total[known][:, None]
    return -(target * torch.log(attention[known].clamp_min(1e-8))).sum(-1).mean()


def labelled_ce(logits, labels):
    """Mean cross-entropy over the entries whose label is not -1 (unknown or padding); 0 when none is.

    ``logits``: (..., C); ``labels``: int64 of the leading shape.
    """
    import torch.nn.functional as F

    logits, labels = logits.float().flatten(0, -2), labels.flatten()
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0  # keeps the graph, so a batch without labels still backpropagates
    return F.cross_entropy(logits[known], labels[known])
