"""Training of the room sense (``agents.models.room_sense``) on the room labels of a trajectory store.

Every frame a VLN training run collects in the embedded houses carries the type of the room the
agent stands in and of the room each 4 x 4 image cell looks into (``store.py``). This trains the
room sense on those frames by the two cross-entropies, keeps the checkpoint with the best cell
accuracy on held-out frames, and ``load_room_sense`` puts it, frozen, into a CMA policy
(``vlnce train --room-sense``).

Held-out frames are a second store (``val_store``, e.g. one collected by ``vlnce probe --houses
val_unseen`` in unseen houses) or else a fraction of the training store's trajectories (seen
houses, which flatter the accuracies).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlnce.errors import CheckpointError, ConfigError, DatasetError, TrainingError
from vlnce.torchio import load_blob, resume_training, save_blob

log = logging.getLogger(__name__)
KIND = "room_sense"  # the ``format`` tag of its checkpoints (vlnce.torchio)
WHAT = "room-sense checkpoint (made by `vlnce train-rooms`)"


@dataclass
class RoomSenseConfig:
    """A room-sense training run.

    Attributes:
        stores: trajectory store directories (``RUN/store``) with room labels.
        val_store: a store of held-out frames; None: hold out ``val_fraction`` of the trajectories.
        val_fraction: share of the training stores' trajectories held out when there is no val_store.
        stride: keep every stride-th frame of a trajectory (neighbouring frames are near copies).
        channels: each CNN's grid channels. epochs, batch_size (frames), lr: Adam.
        probe: a VLN policy checkpoint; instead of new CNNs, its RGB and depth encoders, frozen,
            and only the heads train: how much of the rooms its encoders hold. Such a checkpoint
            is a measurement, not an input for a policy (``read_room_sense`` refuses it).
        mirror: mirror a random half of each batch left to right (``mirror_frames``): a room's
            type does not depend on which side its furniture stands, so each frame counts twice.
        door_weight: weight of the cells that look into another room than the agent's in the
            cells' cross-entropy (``room_loss``).
    """

    stores: tuple[str, ...] = ()
    val_store: str | None = None
    val_fraction: float = 0.1
    stride: int = 3
    channels: int = 128
    epochs: int = 6
    batch_size: int = 256
    lr: float = 1e-3
    probe: str | None = None
    mirror: bool = False
    door_weight: float = 1.0
    seed: int = 0

    def validate(self) -> "RoomSenseConfig":
        if not self.stores:
            raise ConfigError("train-rooms needs at least one --store (a training run's RUN/store)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("stride", "channels", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not self.door_weight > 0:
            raise ConfigError(f"--door-weight must be > 0, got {self.door_weight}")
        return self


def load_frames(store_dir: str | Path, stride: int, trajectories=None) -> dict[str, np.ndarray]:
    """Every ``stride``-th frame of the store's trajectories (all, or the indices given):
    rgb (N, S, S, 3) uint8, depth (N, S, S, 1) float16, here (N,) and cells (N, 16) int64 room types.

    Raises:
        DatasetError: a store without trajectories or without room labels.
    """
    from agents.training.store import TrajectoryStore

    store = TrajectoryStore(store_dir)
    if not store.trajectories:
        raise DatasetError(f"store {store_dir} holds no trajectories (expected RUN/store of a training run)")
    store.check_room_labels()
    picks: dict[int, list[np.ndarray]] = {}
    for i in range(len(store.trajectories)) if trajectories is None else trajectories:
        t = store.trajectories[i]
        picks.setdefault(t.chunk, []).append(t.start + np.arange(0, t.length, stride))
    out = {k: [] for k in ("rgb", "depth", "here", "cells")}
    for k, rows in sorted(picks.items()):
        c, idx = store.chunks[k], np.sort(np.concatenate(rows))
        out["rgb"].append(np.asarray(c["rgb"][idx]))
        out["depth"].append(np.asarray(c["depth"][idx]))
        out["here"].append(np.asarray(c["rooms"][idx], np.int64))
        out["cells"].append(np.asarray(c["view_rooms"][idx], np.int64))
    return {k: np.concatenate(v) for k, v in out.items()}


def _tensors(frames: dict, idx) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(frames[k][idx]) for k in ("rgb", "depth", "here", "cells"))


def mirror_frames(rgb: torch.Tensor, depth: torch.Tensor, cells: torch.Tensor, which: torch.Tensor):
    """Frames ``which`` (N,) bool mirrored left to right: rgb (N, S, S, 3) and depth (N, S, S, 1)
    along their width, and the cells' labels (N, 16), row-major over the 4 x 4 grid, along the
    grid's columns so that each cell keeps the label of what it now shows. The room the agent
    stands in is the same in the mirror."""
    rgb, depth, cells = rgb.clone(), depth.clone(), cells.clone()
    side = int(round(cells.shape[1] ** 0.5))
    rgb[which] = rgb[which].flip(2)
    depth[which] = depth[which].flip(2)
    cells[which] = cells[which].reshape(-1, side, side).flip(2).reshape(-1, side * side)
    return rgb, depth, cells


def room_loss(model, rgb, depth, here, cells, door_weight: float = 1.0) -> torch.Tensor:
    """CE(here) + CE(cells), each a mean over the labelled entries (-1: unlabelled); the cells'
    mean weighted by ``door_weight`` on the cells that look into another room than the agent's
    (what the start of a walk needs: the room beyond each doorway) and 1 on the others."""
    h, c = model(rgb, depth.float())
    ce = F.cross_entropy(c.reshape(-1, c.shape[-1]), cells.reshape(-1), ignore_index=-1, reduction="none")
    door = (cells >= 0) & (here[:, None] >= 0) & (cells != here[:, None])
    w = torch.where(door, float(door_weight), 1.0).reshape(-1) * (cells.reshape(-1) >= 0)
    return F.cross_entropy(h, here, ignore_index=-1) + (w * ce).sum() / w.sum().clamp(min=1e-12)


@torch.no_grad()
def accuracies(model, frames: dict, batch: int = 1024) -> dict[str, float]:
    """Accuracy on the room the agent stands in ("here"), on every labelled cell ("cells") and on the
    cells that look into another room than the agent's ("through_doors", what "turn into the
    kitchen" needs), with the rates of always guessing the commonest type of each ("*_majority")."""
    was = model.training
    model.eval()
    hits = {"here": [0, 0], "cells": [0, 0], "through_doors": [0, 0]}
    counts = {k: np.zeros(model.num_types, np.int64) for k in hits}
    for i in range(0, len(frames["here"]), batch):
        rgb, depth, here, cells = _tensors(frames, slice(i, i + batch))
        h, c = model(rgb, depth.float())
        door = (cells >= 0) & (here[:, None] >= 0) & (cells != here[:, None])
        for name, pred, label, m in (("here", h.argmax(-1), here, here >= 0),
                                     ("cells", c.argmax(-1), cells, cells >= 0),
                                     ("through_doors", c.argmax(-1), cells, door)):
            hits[name][0] += int((pred[m] == label[m]).sum())
            hits[name][1] += int(m.sum())
            counts[name] += np.bincount(label[m].numpy(), minlength=model.num_types)
    model.train(was)
    out = {k: a / max(n, 1) for k, (a, n) in hits.items()}
    out.update({f"{k}_majority": float(v.max() / max(v.sum(), 1)) for k, v in counts.items()})
    out["frames"] = int(len(frames["here"]))
    return out


def train_room_sense(cfg: RoomSenseConfig, out: str | Path, progress: bool = True) -> dict:
    """Train, validate after each epoch, keep ``best.pt`` (best held-out cell accuracy) and
    ``last.pt`` (a rerun with the same ``out`` resumes). Returns the summary (also summary.json)."""
    from tqdm import tqdm

    from agents.models.room_sense import RoomSense
    from agents.training.store import TrajectoryStore
    from vlnce.fileio import atomic_write_bytes, setting_changes

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "room_sense_config.json"
    recorded = asdict(cfg)
    recorded["stores"] = list(cfg.stores)
    diff = (setting_changes(json.loads(cfg_path.read_text()), recorded, defaults={"mirror": False, "door_weight": 1.0})
            if cfg_path.is_file() else "")
    if diff:
        raise ConfigError(f"{out} holds a room-sense run with other settings ({diff}); use another --out or the "
                          "same options")
    atomic_write_bytes(cfg_path, json.dumps(recorded, indent=1).encode())
    t0 = time.perf_counter()
    parts, held = [], []
    rng = np.random.default_rng(cfg.seed)
    for s in cfg.stores:
        n = len(TrajectoryStore(s).trajectories)
        order = rng.permutation(n)
        k = 0 if cfg.val_store else max(1, int(round(cfg.val_fraction * n)))
        parts.append(load_frames(s, cfg.stride, sorted(order[k:])))
        if k:
            held.append(load_frames(s, cfg.stride, sorted(order[:k])))
    train = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    val = (load_frames(cfg.val_store, cfg.stride) if cfg.val_store
           else {key: np.concatenate([p[key] for p in held]) for key in held[0]})
    sizes = {train["rgb"].shape[1:3], val["rgb"].shape[1:3]}
    if len(sizes) != 1 or train["rgb"].shape[1] != train["rgb"].shape[2]:
        raise DatasetError(f"room-sense frames must be square and of one size; got {sorted(sizes)}")
    image_size = int(train["rgb"].shape[1])
    load_s = time.perf_counter() - t0
    log.info("room sense: %d training frames, %d held out (%s), %d px, loaded in %.0f s", len(train["here"]),
             len(val["here"]), cfg.val_store or "a share of the training stores", image_size, load_s)
    torch.manual_seed(cfg.seed)
    if cfg.probe:
        from agents.models.policy import load_policy
        from agents.models.room_sense import frozen_encoders

        policy, _ = load_policy(cfg.probe)
        if policy.cfg.rgb_size != image_size or policy.cfg.depth_size != image_size:
            raise ConfigError(f"--probe {cfg.probe} takes {policy.cfg.rgb_size} px frames; the stores hold "
                              f"{image_size} px")
        try:
            model = RoomSense(image_size, cfg.channels, frozen_encoders(policy.float()))
        except ValueError as exc:
            raise ConfigError(f"--probe {cfg.probe}: {exc}") from None
    else:
        model = RoomSense(image_size, cfg.channels)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    last = out / "last.pt"
    fresh = {"epoch": 0, "best_cells": -1.0, "history": [], "train_seconds": 0.0}
    state = resume_training(last, KIND, WHAT, model, opt, fresh)
    for epoch in range(state["epoch"], cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train["here"]))
        batches = [np.sort(order[i:i + cfg.batch_size]) for i in range(0, len(order), cfg.batch_size)]
        losses, t1 = [], time.perf_counter()
        bar = tqdm(batches, desc=f"room sense epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        mirror_rng = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        for idx in bar:
            rgb, depth, here, cells = _tensors(train, idx)
            if cfg.mirror:
                which = torch.rand(len(idx), generator=mirror_rng) < 0.5
                rgb, depth, cells = mirror_frames(rgb, depth, cells, which)
            loss = room_loss(model, rgb, depth, here, cells, cfg.door_weight)
            if not torch.isfinite(loss):
                raise TrainingError(f"the room loss became {loss.item()} in epoch {epoch + 1}; the last good "
                                    f"checkpoint is {last} (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        state["train_seconds"] += time.perf_counter() - t1
        acc = accuracies(model, val)
        state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **acc})
        log.info("room sense epoch %d: loss %.3f, held-out accuracy here %.3f (majority %.3f), cells %.3f (%.3f), "
                 "through doors %.3f (%.3f)", epoch + 1, np.mean(losses), acc["here"], acc["here_majority"],
                 acc["cells"], acc["cells_majority"], acc["through_doors"], acc["through_doors_majority"])
        blob = {"format": KIND, "config": {"image_size": image_size, "channels": cfg.channels, "probe": cfg.probe},
                "state_dict": model.state_dict(), "val": acc}
        if acc["cells"] > state["best_cells"]:
            state["best_cells"], state["best_epoch"] = acc["cells"], epoch + 1
            save_blob(out / "best.pt", blob)
        state["epoch"] = epoch + 1
        save_blob(last, {**blob, "optimizer": opt.state_dict(), "state": state})
    summary = {"config": recorded, "image_size": image_size, "train_frames": int(len(train["here"])),
               "val_frames": int(len(val["here"])), "history": state["history"],
               "best_epoch": state.get("best_epoch"), "best_cells": state["best_cells"],
               "load_seconds": load_s, "train_seconds": state["train_seconds"]}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    return summary


def read_room_sense(path: str | Path):
    """(RoomSense, held-out accuracies) from a ``vlnce train-rooms`` checkpoint.

    Raises:
        CheckpointError: unreadable file or not a room-sense checkpoint.
    """
    from agents.models.room_sense import RoomSense

    try:
        blob = load_blob(path, KIND, WHAT, required=("config", "state_dict"))
    except CheckpointError as exc:
        raise CheckpointError(f"--room-sense: not a room-sense checkpoint ({exc})") from None
    if blob["config"].get("probe"):
        raise CheckpointError(f"--room-sense {path}: a probe of the encoders of {blob['config']['probe']} "
                              "(`vlnce train-rooms --probe`), not a room sense to give a policy")
    model = RoomSense(int(blob["config"]["image_size"]), int(blob["config"]["channels"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"--room-sense {path}: its weights do not fit a room sense of its own config ({exc})") from None
    return model, blob.get("val", {})


def load_room_sense(policy, path: str | Path) -> dict:
    """Copy a room-sense checkpoint into a policy built with ``PolicyConfig.room_sense`` (it stays
    frozen). Returns the checkpoint's held-out accuracies.

    Raises:
        CheckpointError: not a room-sense checkpoint, or one of another image size or width.
    """
    model, val = read_room_sense(path)
    install_room_sense(policy, model, path)
    return val


def install_room_sense(policy, model, path: str | Path) -> None:
    """Copy a room sense already read from ``path`` (``read_room_sense``) into ``policy``.

    Raises:
        CheckpointError: a policy without a room sense, or one of another image size or width.
    """
    mine = policy.room_sense
    if mine is None:
        raise CheckpointError(f"--room-sense {path}: this policy was built without a room sense")
    if (model.image_size, model.channels) != (mine.image_size, mine.channels):
        raise CheckpointError(f"--room-sense {path}: made for {model.image_size} px frames and {model.channels} "
                              f"channels; the policy has {mine.image_size} px and {mine.channels}")
    mine.load_state_dict(model.state_dict())


__all__ = ["KIND", "RoomSenseConfig", "accuracies", "install_room_sense", "load_frames", "load_room_sense",
           "mirror_frames", "read_room_sense", "room_loss", "train_room_sense"]
