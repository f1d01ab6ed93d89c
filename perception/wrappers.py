"""Attach perception plugins to Gymnasium environments as an observation wrapper.

Each plugin's inputs are read from the observation by kind:

- ``pointcloud``: the organised ``lidar`` observation (beams, columns, 6: x, y, z, range,
  intensity, label), using the returns with range > 0;
- ``image``: the ``rgb`` observation;
- ``boxes``: person boxes, in ``rgb`` pixels, at most ``max_boxes``: those of the ``person``
  class from an earlier plugin that detects people (``detection`` before ``reid``), or else the
  simulator's ground truth from its instance and semantic masks (``instance=True`` and
  ``semantic=True``; largest first).

Outputs are added under ``"<plugin>/<output>"``: ``point_labels`` go back into the organised
layout, (beams, columns) int32 with 0 where there was no return; per-box outputs are padded to
``max_boxes`` rows (``embeddings`` (max_boxes, D) float32 with zero rows, ``identities``,
``classes`` (max_boxes,) int64 with 0, ``scores`` (max_boxes,) float32 with 0, ``boxes``
(max_boxes, 4) float32 with zero rows), and for plugins that take boxes ``"<plugin>/boxes"`` says
which box each row belongs to.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from perception.base import PerceptionPlugin
from vlnce.errors import ConfigError

READABLE = ("pointcloud", "image", "boxes")


def lidar_points(obs_lidar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) points (x, y, z, intensity) of the returns and the (beams, columns) mask they came from."""
    valid = obs_lidar[..., 3] > 0
    return np.concatenate([obs_lidar[valid][:, :3], obs_lidar[valid][:, 4:5]], axis=1).astype(np.float32), valid


def _nearest(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == shape:
        return img
    rows = (np.arange(shape[0]) * img.shape[0] // shape[0])
    cols = (np.arange(shape[1]) * img.shape[1] // shape[1])
    return img[rows[:, None], cols[None, :]]


def instance_boxes(instance: np.ndarray, keep: np.ndarray | None = None, out_shape: tuple[int, int] | None = None,
                   min_pixels: int = 30, max_boxes: int = 16) -> np.ndarray:
    """(M, 4) float32 boxes (x0, y0, x1, y1, exclusive ends) of the instances, largest first.

    Args:
        instance: (H, W) instance ids (0 = none).
        keep: (H, W) bool, the pixels that count (e.g. the person class); None counts every pixel.
        out_shape: (H, W) of the image the boxes are for (scaled from the instance image).
        min_pixels: smallest visible area of an instance, in instance-image pixels.
    """
    inst = np.asarray(instance)
    counted = inst > 0 if keep is None else (inst > 0) & keep
    ids, counts = np.unique(inst[counted], return_counts=True)
    ok = counts >= min_pixels
    ids, counts = ids[ok], counts[ok]
    order = np.lexsort((ids, -counts))[:max_boxes]
    sy, sx = (1.0, 1.0) if out_shape is None else (out_shape[0] / inst.shape[0], out_shape[1] / inst.shape[1])
    boxes = np.zeros((len(order), 4), np.float32)
    for k, i in enumerate(ids[order]):
        ys, xs = np.nonzero((inst == i) & counted)
        boxes[k] = (xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)
    return boxes


def person_boxes(instance: np.ndarray, semantic: np.ndarray, out_shape: tuple[int, int] | None = None,
                 min_pixels: int = 30, max_boxes: int = 16) -> np.ndarray:
    """``instance_boxes`` of the simulator's person instances; ``semantic`` (category ids) may have
    another resolution (resampled to the instance image, nearest)."""
    from sim.scenes.semantics import PERSON

    inst, sem = np.asarray(instance), np.asarray(semantic)
    sem = _nearest(sem.reshape(sem.shape[:2]), inst.shape[:2])  # (H, W, 1) sensors too
    return instance_boxes(inst, sem == PERSON, out_shape, min_pixels, max_boxes)


class PerceptionObservation(gym.ObservationWrapper):
    """Adds plugin outputs to a Dict observation.

    Args:
        env: an environment with a Dict observation space holding what the plugins need.
        plugins: plugin instances, run in order on every observation.
        max_boxes: rows of the per-box outputs.

    Plugins with a ``reset()`` (e.g. the re-ID gallery) are reset with the environment.

    Raises:
        ConfigError: a plugin needs an input kind the environment does not provide.
    """

    def __init__(self, env: gym.Env, plugins: list[PerceptionPlugin], max_boxes: int = 16) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise ConfigError("perception plugins attach to environments with Dict observations")
        self.plugins = list(plugins)
        self.max_boxes = int(max_boxes)
        entries = dict(space.spaces)
        needs = {"pointcloud": (("lidar",), "enable the LiDAR: lidar=True or simulator.lidar.enabled=true"),
                 "image": (("rgb",), "enable an rgb sensor"),
                 "boxes": (("rgb", "instance", "semantic"), "make the environment with instance=True, semantic=True")}
        detector_before = False
        for p in self.plugins:
            for port_name, port in p.inputs.items():
                if port.kind == "boxes" and detector_before:
                    if "rgb" not in entries:
                        raise ConfigError(f"plugin {p.name!r} input {port_name!r} (boxes) needs the observation rgb")
                    continue
                if port.kind not in READABLE:
                    raise ConfigError(f"plugin {p.name!r} input {port_name!r} of kind {port.kind!r} cannot be read "
                                      f"from environment observations (readable kinds: {READABLE})")
                keys, how = needs[port.kind]
                missing = [k for k in keys if k not in entries]
                if missing:
                    raise ConfigError(f"plugin {p.name!r} input {port_name!r} ({port.kind}) needs the observation(s) "
                                      f"{missing}: {how}")
            for out_name, port in p.outputs.items():
                key = f"{p.name}/{out_name}"
                if port.kind == "point_labels":
                    beams, cols = entries["lidar"].shape[:2]
                    entries[key] = spaces.Box(0, np.iinfo(np.int32).max, (beams, cols), np.int32)
                elif port.kind == "embeddings":
                    dim = getattr(p, "embedding_dim", None)
                    if not dim:
                        raise ConfigError(f"plugin {p.name!r} outputs embeddings but has no embedding_dim attribute")
                    entries[key] = spaces.Box(-1.0, 1.0, (self.max_boxes, int(dim)), np.float32)
                elif port.kind in ("identities", "classes"):
                    entries[key] = spaces.Box(0, np.iinfo(np.int64).max, (self.max_boxes,), np.int64)
                elif port.kind == "scores":
                    entries[key] = spaces.Box(0.0, 1.0, (self.max_boxes,), np.float32)
                elif port.kind == "boxes":
                    entries[key] = spaces.Box(0.0, np.inf, (self.max_boxes, 4), np.float32)
                else:
                    raise ConfigError(f"plugin {p.name!r} output {out_name!r} of kind {port.kind!r} cannot be added "
                                      "to environment observations yet")
            if any(port.kind == "boxes" for port in p.inputs.values()):
                entries[f"{p.name}/boxes"] = spaces.Box(0.0, np.inf, (self.max_boxes, 4), np.float32)
            detector_before = detector_before or detects_people(p)
        self.observation_space = spaces.Dict(entries)

    def reset(self, *, seed=None, options=None):
        for p in self.plugins:
            if hasattr(p, "reset"):
                p.reset()
        return super().reset(seed=seed, options=options)

    def observation(self, observation: dict) -> dict:
        return run_plugins(observation, self.plugins, self.max_boxes)


def detects_people(plugin: PerceptionPlugin) -> bool:
    kinds = {port.kind for port in plugin.outputs.values()}
    return {"boxes", "classes"} <= kinds and getattr(plugin, "class_index", lambda name: 0)("person") > 0


def detected_people(plugin: PerceptionPlugin, result: dict, max_boxes: int) -> np.ndarray:
    """(M, 4) boxes of a detector's first sample whose class is ``person``, best score first."""
    names = {port.kind: name for name, port in plugin.outputs.items()}
    boxes, classes = result[names["boxes"]][0], result[names["classes"]][0]
    keep = np.nonzero(classes == plugin.class_index("person"))[0]
    if "scores" in names:
        keep = keep[np.argsort(-result[names["scores"]][0][keep], kind="stable")]
    return np.asarray(boxes[keep[:max_boxes]], np.float32).reshape(-1, 4)


def run_plugins(observation: dict, plugins: list[PerceptionPlugin], max_boxes: int = 16) -> dict:
    """A copy of ``observation`` with every plugin's outputs added (see the module docstring)."""
    obs = dict(observation)
    people = None  # person boxes of an earlier detector, which later plugins use instead of ground truth
    for p in plugins:
        batch, mask, boxes = {}, None, None
        for port_name, port in p.inputs.items():  # kinds checked when the wrapper was built
            if port.kind == "pointcloud":
                pts, mask = lidar_points(obs["lidar"])
                batch[port_name] = [pts]
            elif port.kind == "image":
                batch[port_name] = [obs["rgb"][..., :3]]
            elif people is not None:
                boxes = people
                batch[port_name] = [boxes]
            else:
                boxes = person_boxes(obs["instance"], obs["semantic"], obs["rgb"].shape[:2], max_boxes=max_boxes)
                batch[port_name] = [boxes]
        result = p(batch)
        if detects_people(p):
            people = detected_people(p, result, max_boxes)
        for out_name, port in p.outputs.items():
            value = result[out_name][0]
            if port.kind == "point_labels":
                img = np.zeros(mask.shape, np.int32)
                img[mask] = value
                obs[f"{p.name}/{out_name}"] = img
            else:
                padded = np.zeros((max_boxes,) + value.shape[1:], value.dtype)
                padded[:len(value)] = value[:max_boxes]
                obs[f"{p.name}/{out_name}"] = padded
        if boxes is not None:
            padded = np.zeros((max_boxes, 4), np.float32)
            padded[:len(boxes)] = boxes
            obs[f"{p.name}/boxes"] = padded
    return obs


class PluginScores:
    """Per-episode perception statistics for the evaluation runner: frames, mean latency and, for
    plugins that map the simulator's ground truth (``ground_truth_labels``), mIoU on the points."""

    def __init__(self, plugins: list[PerceptionPlugin]) -> None:
        from perception.lidar.metrics import IoUEvaluator

        self.plugins = plugins
        self.frames, self.seconds = 0, 0.0
        self.evals = {p.name: (p, IoUEvaluator(len(p.classes), [0])) for p in plugins
                      if hasattr(p, "ground_truth_labels") and hasattr(p, "classes")}

    def observe(self, observation: dict) -> dict:
        import time

        t0 = time.perf_counter()
        obs = run_plugins(observation, self.plugins)
        self.seconds += time.perf_counter() - t0
        self.frames += 1
        for name, (plugin, ev) in self.evals.items():
            valid = obs["lidar"][..., 3] > 0
            ev.add(obs[f"{name}/labels"][valid], plugin.ground_truth_labels(obs["lidar"][..., 5][valid]))
        return obs

    def summary(self) -> dict:
        out = {"frames": self.frames, "mean_ms": round(1000 * self.seconds / max(self.frames, 1), 2)}
        for name, (_, ev) in self.evals.items():
            out[f"{name}/miou"] = round(ev.iou()[0], 4)
        return out
