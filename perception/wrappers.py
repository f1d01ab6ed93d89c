"""Attach perception plugins to Gymnasium environments as an observation wrapper.

Each plugin's inputs are read from the observation by kind: a ``pointcloud`` input comes from the
organised ``lidar`` observation (beams, columns, 6: x, y, z, range, intensity, label), using the
returns with range > 0. Outputs are added under ``"<plugin>/<output>"``; ``point_labels`` go back
into the organised layout, (beams, columns) int32 with 0 where there was no return.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from perception.base import PerceptionPlugin
from vlnce.errors import ConfigError


def lidar_points(obs_lidar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) points (x, y, z, intensity) of the returns and the (beams, columns) mask they came from."""
    valid = obs_lidar[..., 3] > 0
    return np.concatenate([obs_lidar[valid][:, :3], obs_lidar[valid][:, 4:5]], axis=1).astype(np.float32), valid


class PerceptionObservation(gym.ObservationWrapper):
    """Adds plugin outputs to a Dict observation.

    Args:
        env: an environment with a Dict observation space holding what the plugins need.
        plugins: plugin instances, run in order on every observation.

    Raises:
        ConfigError: a plugin needs an input kind the environment does not provide.
    """

    def __init__(self, env: gym.Env, plugins: list[PerceptionPlugin]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise ConfigError("perception plugins attach to environments with Dict observations")
        self.plugins = list(plugins)
        entries = dict(space.spaces)
        for p in self.plugins:
            for port_name, port in p.inputs.items():
                if port.kind == "pointcloud" and "lidar" not in entries:
                    raise ConfigError(f"plugin {p.name!r} needs a point cloud but the environment has no 'lidar' "
                                      "observation (enable the LiDAR: lidar=True or simulator.lidar.enabled=true)")
                if port.kind not in ("pointcloud",):
                    raise ConfigError(f"plugin {p.name!r} input {port_name!r} of kind {port.kind!r} cannot be read "
                                      "from environment observations yet")
            for out_name, port in p.outputs.items():
                key = f"{p.name}/{out_name}"
                if port.kind == "point_labels":
                    beams, cols = entries["lidar"].shape[:2]
                    entries[key] = spaces.Box(0, np.iinfo(np.int32).max, (beams, cols), np.int32)
                else:
                    raise ConfigError(f"plugin {p.name!r} output {out_name!r} of kind {port.kind!r} cannot be added "
                                      "to environment observations yet")
        self.observation_space = spaces.Dict(entries)

    def observation(self, observation: dict) -> dict:
        return run_plugins(observation, self.plugins)


def run_plugins(observation: dict, plugins: list[PerceptionPlugin]) -> dict:
    """A copy of ``observation`` with every plugin's outputs added (see the module docstring)."""
    obs = dict(observation)
    for p in plugins:
        batch, mask = {}, None
        for port_name in p.inputs:  # pointcloud inputs, checked when the wrapper was built
            pts, mask = lidar_points(obs["lidar"])
            batch[port_name] = [pts]
        result = p(batch)
        for out_name in p.outputs:  # point_labels
            img = np.zeros(mask.shape, np.int32)
            img[mask] = result[out_name][0]
            obs[f"{p.name}/{out_name}"] = img
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
