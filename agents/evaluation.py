"""The evaluation runner: agents on benchmark splits with VLN-CE's metrics.

Writes, under the output directory:

- ``episodes.jsonl``: one line per finished episode (id, metrics, trajectory positions and headings,
  actions) or per failed episode (id, error). Lines are flushed as episodes finish, so an
  interrupted run resumes without redoing them.
- ``results.json``: the mean of each measure over the evaluated episodes (VLN-CE's ``stats_*.json``
  semantics), counts, and how the episodes ended (``outcomes``).
- ``submission.json``: VLN-CE's R2R leaderboard format, ``{episode_id: [{position, heading, stop}, ...]}``,
  the reset state first, then one entry per action.
- ``maps/{episode_id}.png``: top-down map with the agent's path (red) and the reference path (blue).
- ``videos/{episode_id}.gif`` with ``video=True``: RGB, depth and the map, step by step.
- ``attention/{episode_id}.png`` with ``attention=True`` (CMA): the instruction attention over the
  words at every step, the instruction pointer's place when the policy has one, and the actions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import agents.learned  # noqa: F401  (registers seq2seq and cma)
import agents.nonlearning  # noqa: F401  (registers the baselines)
from agents.base import AGENTS, EpisodeInfo
from sim.actions import Action
from sim.geometry import heading_from_quat
from sim.tasks.measures import DEFAULT_MEASURES, DIAGNOSTIC_MEASURES, json_values
from vlnce.errors import ConfigError, DatasetError, NavigationError
from vlnce.fileio import atomic_write_bytes, setting_changes

log = logging.getLogger(__name__)
# How an episode can end; every episode ends exactly one way (see ``outcomes``).
OUTCOMES = ("success", "passed_goal", "stopped_elsewhere", "step_limit")
TABLE = (("TL", "path_length"), ("NE", "distance_to_goal"), ("nDTW", "ndtw"), ("sDTW", "sdtw"),
         ("OS", "oracle_success"), ("SR", "success"), ("SPL", "spl"))
# the columns of VLN-CE's Tables 2 and 3, per split: ours without sDTW, which the paper does not report
PAPER_TABLE = tuple((name, key) for name, key in TABLE if name != "sDTW")


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        agent: registered agent name.
        split: dataset split (embedded: train, val_seen, val_unseen, test).
        dataset: "embedded" (built into the cache on first use) or a R2R_VLNCE-style directory.
        scenes_dir: where scene ids resolve (embedded: the benchmark's own scenes).
        episodes: evaluate the first N episodes (by id), or all when None.
        workers: processes; episodes are grouped by scene.
        video: write per-episode videos (renders even for agents that do not look).
        maps: write a top-down PNG per episode.
        attention: write a PNG per episode of where a CMA agent attended in the instruction at
            each step (``sim.viz.attention``).
        seed: base seed; episode ``i`` draws from ``default_rng([seed, i])``.
        sim_overrides: simulator config overrides (dotlist or dict).
        max_steps: actions before an episode is cut off (VLN-CE: 500).
        plugins: perception plugins run on every observation (``vlnce plugins`` lists them); a
            LiDAR plugin turns the simulator's LiDAR on with the plugin's sensor.
        plugin_options: per-plugin constructor options, e.g. {"lidar_seg": {"checkpoint": PATH}}.
        stop_bias: learned agents only: nats taken off the STOP logit before the argmax (see
            ``LearnedAgent``); 0 is greedy decoding.
        expert_exit: a diagnostic (embedded simulator): the expert, the shortest-path follower
            to the goal, acts until the agent stands in another room than the one it started
            in; the agent is asked at every step as usual but its action is replaced and it is
            told so (``Agent.executed``), and from the first step outside the start room on it
            acts alone. SR then says how much is lost at the choice of exit from the start
            room, where the instruction names only the room beyond. Each episode records
            ``expert_steps``.
        exit_gate: learned agents with a room sense: the exit gate (``agents.exit_gate``) beside
            the policy; each episode records what it did (``exit_gate``) and results.json their
            totals.
        exit_gate_options: ``ExitGateConfig`` fields to change, {name: value}.
    """

    agent: str
    split: str = "val_unseen"
    dataset: str = "embedded"
    scenes_dir: str | None = None
    episodes: int | None = None
    workers: int = 1
    video: bool = False
    maps: bool = True
    attention: bool = False
    seed: int = 0
    checkpoint: str | None = None
    sim_overrides: dict | list[str] | None = None
    max_steps: int = 500
    plugins: list[str] = field(default_factory=list)
    plugin_options: dict = field(default_factory=dict)
    stop_bias: float = 0.0
    expert_exit: bool = False
    exit_gate: bool = False
    exit_gate_options: dict = field(default_factory=dict)


def _check_stop_bias(name: str, cls, stop_bias: float) -> None:
    if stop_bias and not cls.takes_checkpoint:
        raise ConfigError(f"--stop-bias applies to learned agents only, not {name!r}")
    if not math.isfinite(stop_bias):
        raise ConfigError(f"--stop-bias must be a finite number of nats, got {stop_bias}")


def _check_exit_gate(name: str, cls, exit_gate: bool, expert_exit: bool = False, options: dict | None = None):
    """The exit gate's ``ExitGateConfig`` (None without the gate), once its settings and the
    agent are checked: a bad setting fails before any work."""
    if options and not exit_gate:
        raise ConfigError("--exit-gate-set changes the exit gate; add --exit-gate")
    if not exit_gate:
        return None
    from agents.exit_gate import gate_config

    gate = gate_config(options)
    if not cls.takes_checkpoint:
        raise ConfigError(f"--exit-gate applies to learned agents only, not {name!r}")
    if expert_exit:
        raise ConfigError("--exit-gate and --expert-exit both decide the exit from the start room; give one")
    return gate


def make_agent(name: str, checkpoint: str | None = None, stop_bias: float = 0.0, exit_gate: bool = False,
               exit_gate_options: dict | None = None):
    """Instantiate a registered agent, passing the checkpoint (and the STOP bias and exit gate) to
    learned agents."""
    cls = AGENTS.get(name)
    _check_stop_bias(name, cls, stop_bias)
    gate = _check_exit_gate(name, cls, exit_gate, options=exit_gate_options)
    if not cls.takes_checkpoint:
        return cls()
    if gate is not None:
        return cls(checkpoint=checkpoint, stop_bias=stop_bias, exit_gate=gate)
    return cls(checkpoint=checkpoint, stop_bias=stop_bias)


def episode_seed(seed: int, episode_id: str) -> list[int]:
    """Seed of episode ``episode_id``'s random generator (the same wherever the agent runs)."""
    return [seed, int(episode_id)] if episode_id.isdigit() else [seed] + [ord(c) for c in episode_id]


class _Runner:
    """Runs episodes of one dataset in one process, reusing the task across episodes."""

    def __init__(self, cfg: EvalConfig, data_dir: Path, scenes_dir: Path | None, out: Path) -> None:
        from sim.config import load_simulator_config
        from sim.tasks.dataset import load_dataset
        from sim.tasks.vln import TaskConfig, VLNCETask

        self.cfg = cfg
        self.out = out
        self.dataset = load_dataset(data_dir, cfg.split, strict=False)
        self.episodes = self.dataset.by_id()
        self.agent = make_agent(cfg.agent, cfg.checkpoint, cfg.stop_bias, cfg.exit_gate, cfg.exit_gate_options)
        sim_cfg = load_simulator_config(overrides=cfg.sim_overrides)
        sensors = self.agent.sensor_config()
        if sensors is not None:
            from sim.config import CameraSensorConfig

            sim_cfg.sensors = {k: CameraSensorConfig(**v) for k, v in sensors.items()}
        self.render = self.agent.needs_observations or cfg.video
        if not self.render:
            sim_cfg.sensors = {}
        self.plugins = []
        if cfg.plugins:
            from perception.registry import make_plugin

            self.plugins = [make_plugin(name, **cfg.plugin_options.get(name, {})) for name in cfg.plugins]
            for p in self.plugins:
                if hasattr(p, "lidar_config"):
                    sim_cfg.lidar.enabled = True
                    for k, v in p.lidar_config().items():
                        setattr(sim_cfg.lidar, k, v)
        measures = [*DEFAULT_MEASURES, *DIAGNOSTIC_MEASURES]
        self.task = VLNCETask(sim_cfg, TaskConfig(max_episode_steps=cfg.max_steps, measures=measures),
                              scenes_dir=scenes_dir)
        self._maps: dict[str, object] = {}

    def run(self, episode_id: str) -> dict:
        ep = self.episodes[episode_id]
        try:
            return self._run(ep)
        except (DatasetError, NavigationError) as exc:
            return {"episode_id": ep.episode_id, "scene_id": ep.scene_id, "error": str(exc)}

    def _run(self, ep) -> dict:
        task = self.task
        gt = self.dataset.gt.get(ep.episode_id)
        obs = task.reset(ep, gt)
        scores = None
        if self.plugins:
            from perception.wrappers import PluginScores

            scores = PluginScores(self.plugins)
            obs = scores.observe(obs)
        obs["instruction"] = np.asarray(ep.instruction.instruction_tokens, np.int64)
        leader = self._exit_leader(ep) if self.cfg.expert_exit else None
        expert_steps = 0
        rng = np.random.default_rng(episode_seed(self.cfg.seed, ep.episode_id))
        privileged = None
        if self.agent.privileged:
            privileged = {"sim": task.sim, "goal": ep.goals[0].position,
                          "distractors": ep.info.get("distractors", []) if isinstance(ep.info, dict) else []}
        self.agent.reset(EpisodeInfo(ep.episode_id, ep.instruction.instruction_text, rng, privileged))
        poses = [self._pose()]
        actions: list[int] = []
        frames = [self._frame(obs, ep, poses)] if self.cfg.video else None
        reading: list[dict] | None = [] if self.cfg.attention else None
        while not task.done:
            action = self.agent.act(obs)
            if leader is not None:
                expert = leader.action(None)
                if leader.peek is None:  # the agent stands in another room (or the expert would stop)
                    leader = None
                else:
                    action = expert
                    self.agent.executed(action)
                    expert_steps += 1
            if reading is not None:
                reading.append(self.agent.last_extras)
            try:
                action = int(Action(int(action)))
            except (ValueError, TypeError):
                raise DatasetError(f"episode {ep.episode_id}: agent {self.cfg.agent!r} returned invalid action "
                                   f"{action!r}; expected 0..3") from None
            obs, _, _ = task.step(action)
            if scores is not None:
                obs = scores.observe(obs)
            obs["instruction"] = np.asarray(ep.instruction.instruction_tokens, np.int64)
            actions.append(action)
            poses.append(self._pose())
            if frames is not None:
                frames.append(self._frame(obs, ep, poses))
        metrics = json_values(task.metrics())
        record = {"episode_id": ep.episode_id, "scene_id": ep.scene_id, "metrics": metrics,
                  "stopped": task.stop_called, "steps": len(actions), "actions": actions,
                  "trajectory": [[round(float(x), 4) for x in p] for p in poses]}
        if self.cfg.expert_exit:
            record["expert_steps"] = expert_steps
        if getattr(self.agent, "gate", None) is not None:
            record["exit_gate"] = self.agent.gate.summary.as_dict()
        if scores is not None:
            record["perception"] = scores.summary()
        if self.cfg.maps:
            self._write_map(ep, poses)
        if frames is not None:
            self._write_video(ep, frames)
        if reading:
            self._write_attention(ep, reading, record)
        return record

    def _exit_leader(self, ep):
        """For ``expert_exit``: the collection's expert with the goal as its peek point, which
        leads toward the goal while the agent is in its start room (or between rooms, in a
        doorway) and drops its peek point from the first step the agent stands in another room
        (or where it would stop); None for a start between rooms."""
        from agents.training.collect import Expert
        from sim.navigation.follower import ShortestPathFollower

        sim = self.task.sim
        scene = getattr(sim, "scene", None)
        if not getattr(scene, "rooms", None):
            raise ConfigError("--expert-exit needs the rooms of the embedded simulator's houses; this backend "
                              "has no room layout")
        start = sim.get_agent_state().position
        if scene.room_at(start[0], start[2]) is None:
            return None
        goal = np.asarray(ep.goals[0].position, np.float64)
        follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)
        return Expert(sim, follower, goal, peek=goal)

    def _pose(self) -> list[float]:
        s = self.task.sim.get_agent_state()
        return [*map(float, s.position), float(heading_from_quat(s.rotation))]

    def _topdown(self, ep):
        if ep.scene_id not in self._maps:
            from sim.viz.topdown import TopDownMap

            sim = self.task.sim
            grid = getattr(sim, "navgrid", None)
            self._maps[ep.scene_id] = TopDownMap(sim.scene, grid.level_y if grid else 0.0, 30.0, caster=getattr(sim, "caster", None))
        return self._maps[ep.scene_id]

    def _draw(self, ep, poses):
        top = self._topdown(ep)
        return top.draw(paths=[(np.array(ep.reference_path), (40, 110, 230)), (np.array([p[:3] for p in poses]), (230, 40, 40))],
                        points=[(np.array(ep.start_position), (40, 170, 40), "start"), (np.array(ep.goals[0].position), (200, 120, 0), "goal")],
                        poses=[(np.array(poses[-1][:3]), poses[-1][3])])

    def _write_map(self, ep, poses) -> None:
        from vlnce.fileio import atomic_path

        path = self.out / "maps" / f"{ep.episode_id}.png"
        with atomic_path(path) as tmp:
            self._draw(ep, poses).save(tmp, format="PNG")

    def _frame(self, obs, ep, poses):
        from sim.viz.frames import colorize_depth, compose

        tiles = []
        if "rgb" in obs:
            tiles.append(obs["rgb"])
        if "depth" in obs:
            tiles.append(colorize_depth(obs["depth"], 1.0))
        tiles.append(np.asarray(self._draw(ep, poses).convert("RGB")))
        return compose(tiles, 256)

    def _write_video(self, ep, frames) -> None:
        import imageio.v2 as imageio

        from vlnce.fileio import atomic_path

        with atomic_path(self.out / "videos" / f"{ep.episode_id}.gif") as tmp:
            imageio.mimwrite(tmp, frames, duration=120, loop=0)

    def _write_attention(self, ep, reading: list[dict], record: dict) -> None:
        from sim.tasks.dataset import tokenize
        from sim.viz.attention import attention_figure
        from vlnce.fileio import atomic_path

        alpha = np.stack([r["instruction_attention"][0].float().cpu().numpy() for r in reading])
        pointer = None
        if "instruction_position" in reading[0]:
            pointer = np.array([float(r["instruction_position"][0]) for r in reading])
        words = tokenize(ep.instruction.instruction_text)[: alpha.shape[1]]
        words += ["<pad>"] * (alpha.shape[1] - len(words))  # an empty instruction reads one padding step
        m = record["metrics"]
        title = (f"episode {ep.episode_id}: {outcome(record)}, {len(reading)} steps, distance to goal "
                 f"{m.get('distance_to_goal', float('nan')):.2f} m")
        with atomic_path(self.out / "attention" / f"{ep.episode_id}.png") as tmp:
            attention_figure(words, alpha, record["actions"], pointer, title).save(tmp, format="PNG")

    def close(self):
        self.task.close()


def _worker(args):
    import torch

    # one intra-op thread per worker: with several workers, torch's default pool oversubscribes
    # the cores and single-frame inference slows down by an order of magnitude
    torch.set_num_threads(1)
    cfg, data_dir, scenes_dir, out, ids = args
    runner = _Runner(cfg, data_dir, scenes_dir, out)
    try:
        return [runner.run(eid) for eid in ids]
    finally:
        runner.close()


def read_episode_log(path: Path) -> dict[str, dict]:
    """Finished episodes of an ``episodes.jsonl``; a torn last line (from a crash) is ignored."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[str(rec["episode_id"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring an unreadable line in %s", path)
    return done


def evaluate(cfg: EvalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Evaluate ``cfg.agent`` on a split; returns the aggregated results (also written to disk).

    Raises:
        UnknownNameError: unknown agent. DatasetError: unknown split or unreadable dataset.
        ConfigError: bad options.
    """
    from tqdm import tqdm

    from sim.tasks.benchmark import locate_dataset
    from sim.tasks.dataset import load_dataset

    AGENTS.get(cfg.agent)  # unknown names fail before any work
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {cfg.workers}")
    if cfg.episodes is not None and cfg.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {cfg.episodes}")
    agent_cls = AGENTS.get(cfg.agent)
    if cfg.checkpoint is not None and not agent_cls.takes_checkpoint:
        raise ConfigError(f"agent {cfg.agent!r} does not take a checkpoint")
    _check_stop_bias(cfg.agent, agent_cls, cfg.stop_bias)  # here too, so it fails before any worker starts
    _check_exit_gate(cfg.agent, agent_cls, cfg.exit_gate, cfg.expert_exit, cfg.exit_gate_options)
    if cfg.sim_overrides:
        from sim.config import load_simulator_config

        load_simulator_config(overrides=cfg.sim_overrides)  # a bad override fails here, not in every worker
    if cfg.attention and cfg.exit_gate:
        raise ConfigError("--attention draws the policy's attention at every step, and with --exit-gate the gate "
                          "takes steps the policy is not asked about; give one")
    if cfg.attention and getattr(agent_cls, "arch", "") != "cma":
        raise ConfigError(f"--attention draws the instruction attention of a CMA agent; {cfg.agent!r} has none")
    if agent_cls.takes_checkpoint:
        if cfg.checkpoint is None:
            raise ConfigError(f"agent {cfg.agent!r} needs --checkpoint PATH")
        from agents.models.policy import read_checkpoint

        read_checkpoint(cfg.checkpoint)  # a bad file fails here, once, not in every worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, scenes_dir = locate_dataset(cfg.dataset, cfg.scenes_dir, workers=max(cfg.workers, 2), progress=progress)
    dataset = load_dataset(data_dir, cfg.split, strict=False)
    ordered = sorted(dataset.episodes, key=lambda e: (int(e.episode_id) if e.episode_id.isdigit() else 0, e.episode_id))
    if cfg.episodes is not None:
        ordered = ordered[: cfg.episodes]
    log_path = out / "episodes.jsonl"
    done = read_episode_log(log_path)
    _check_resume(cfg, out, resuming=bool(done))
    if log_path.is_file():
        # drop a line torn by a crash, so that appended records start on a fresh line
        atomic_write_bytes(log_path, "".join(json.dumps(r) + "\n" for r in done.values()).encode())
    todo = [e for e in ordered if e.episode_id not in done]
    by_scene: dict[str, list[str]] = {}
    for e in todo:
        by_scene.setdefault(e.scene_id, []).append(e.episode_id)
    chunks = []
    for ids in by_scene.values():  # scene groups split into small chunks keep the workers balanced
        chunks += [ids[i:i + 10] for i in range(0, len(ids), 10)]
    bar = tqdm(total=len(ordered), initial=len(ordered) - len(todo), desc=f"{cfg.agent} on {cfg.split}",
               unit="ep", disable=not progress)
    with open(log_path, "a", encoding="utf-8") as fh:
        def write(records):
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
                done[rec["episode_id"]] = rec
                bar.update()
            fh.flush()
            os.fsync(fh.fileno())

        jobs = [(cfg, data_dir, scenes_dir, out, ids) for ids in chunks]
        if cfg.workers > 1 and len(jobs) > 1:
            from vlnce.workers import spawn_pool

            with spawn_pool(cfg.workers) as pool:
                for records in pool.imap_unordered(_worker, jobs):
                    write(records)
        else:
            runner = _Runner(cfg, data_dir, scenes_dir, out) if jobs else None
            try:
                for _, _, _, _, ids in jobs:
                    for eid in ids:
                        write([runner.run(eid)])
            finally:
                if runner is not None:
                    runner.close()
    bar.close()
    wanted = [e.episode_id for e in ordered]
    return summarize(cfg, [done[i] for i in wanted if i in done], out, skipped=dataset.skipped)


def _run_identity(cfg: EvalConfig) -> dict:
    """The settings that change an episode's result: a resumed evaluation must match them."""
    checkpoint = None
    if cfg.checkpoint is not None:
        checkpoint = hashlib.sha256(Path(cfg.checkpoint).read_bytes()).hexdigest()
    dataset = cfg.dataset if cfg.dataset == "embedded" else str(Path(cfg.dataset).resolve())
    return {"agent": cfg.agent, "checkpoint_sha256": checkpoint, "split": cfg.split, "dataset": dataset,
            "max_steps": cfg.max_steps, "seed": cfg.seed, "stop_bias": cfg.stop_bias,
            "plugins": list(cfg.plugins), "sim_overrides": cfg.sim_overrides, "expert_exit": cfg.expert_exit,
            "exit_gate": cfg.exit_gate, "exit_gate_options": dict(cfg.exit_gate_options)}


def _check_resume(cfg: EvalConfig, out: Path, resuming: bool) -> None:
    """Refuse to add episodes to an output directory that holds another evaluation's.

    ``eval_config.json`` records ``_run_identity``; a directory from before it existed is adopted.
    """
    path = out / "eval_config.json"
    mine = _run_identity(cfg)
    if resuming and path.is_file():
        detail = setting_changes(json.loads(path.read_text()), mine, defaults={"expert_exit": False, "exit_gate": False,
                                                                                "exit_gate_options": {}})
        if detail:
            raise ConfigError(f"{out} holds episodes of another evaluation ({detail}); "
                              "use another --out or delete that directory")
    atomic_write_bytes(path, json.dumps(mine, indent=1).encode())


def gate_totals(records: list[dict]) -> dict:
    """The exit gate's episodes summed: how many named a room it could check, the mean scans and
    steps it took itself, the episodes where it judged a room wrong, those where it walked back
    (and the rooms it walked back out of), and those where it accepted the named room."""
    gated = [r["exit_gate"] for r in records if "exit_gate" in r]
    named = [g for g in gated if g["named"] is not None]
    return {"episodes": len(gated), "named": len(named),
            "mean_scans": float(np.mean([g["scans"] for g in gated])) if gated else None,
            "mean_gate_steps": float(np.mean([g["gate_steps"] for g in gated])) if gated else None,
            "judged_wrong": sum("wrong" in g["verdicts"] for g in gated),
            "walked_back": sum(g["wrong"] > 0 for g in gated), "wrong_calls": sum(g["wrong"] for g in gated),
            "accepted": sum(bool(g["accepted"]) for g in gated),
            "blocked_steps": sum(g["blocked"] for g in gated)}


def format_gate(results: dict) -> str:
    """One line on what the exit gate did, or "" when it was off."""
    g = results.get("exit_gate")
    if not g or not g["episodes"]:
        return ""
    return (f"exit gate: {g['named']} of {g['episodes']} instructions name a next room; {g['mean_scans']:.1f} "
            f"scans and {g['mean_gate_steps']:.0f} gate steps per episode; judged a room wrong in "
            f"{g['judged_wrong']} episodes and walked back out of it in {g['walked_back']} "
            f"({g['wrong_calls']} rooms), accepted the named room in "
            f"{g['accepted']}; {g['blocked_steps']} forward steps into a wrong room's walk replaced by turns")


def summarize(cfg: EvalConfig, records: list[dict], out: Path, skipped=()) -> dict:
    """Write results.json and submission.json from episode records and return the results."""
    ok = [r for r in records if "metrics" in r]
    errors = [r for r in records if "error" in r]
    keys = sorted({k for r in ok for k in r["metrics"]})
    means = {}
    for k in keys:
        vals = [r["metrics"][k] for r in ok if r["metrics"].get(k) is not None]
        means[k] = float(np.mean(vals)) if vals else None
    results = {"agent": cfg.agent, "split": cfg.split, "dataset": cfg.dataset, "episodes": len(ok),
               "errors": len(errors), "skipped_in_dataset": len(skipped), "metrics": means,
               "error_examples": [r["error"] for r in errors[:5]]}
    if cfg.stop_bias:
        results["stop_bias"] = cfg.stop_bias
    if cfg.expert_exit:
        results["expert_exit"] = True
        results["mean_expert_steps"] = float(np.mean([r["expert_steps"] for r in ok])) if ok else None
    if cfg.exit_gate:
        results["exit_gate"] = gate_totals(ok)
        if cfg.exit_gate_options:
            results["exit_gate"]["settings"] = dict(cfg.exit_gate_options)
    results["outcomes"] = outcomes(ok)
    results["success_by_exit"] = success_by_exit(ok)
    results["failures_by_route_followed"] = failures_by_route_followed(ok)
    perception = [r["perception"] for r in ok if "perception" in r]
    if perception:
        results["perception"] = {k: round(float(np.mean([p[k] for p in perception if k in p])), 4)
                                 for k in sorted({k for p in perception for k in p})}
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    submission = {}
    for r in ok:
        entries = [{"position": p[:3], "heading": p[3], "stop": False} for p in r["trajectory"]]
        if r.get("stopped"):
            entries[-1]["stop"] = True
        submission[r["episode_id"]] = entries
    atomic_write_bytes(out / "submission.json", json.dumps(submission).encode())
    return results


def outcome(record: dict) -> str:
    """How one finished episode ended, one of ``OUTCOMES``.

    Separates the two failures VLN papers tell apart: a stop failure (``passed_goal``: the agent was
    within the success radius at some step, oracle success, but ended outside it) and a navigation
    failure (never within the radius: it called STOP elsewhere, or ran out of steps).
    """
    m = record["metrics"]
    if m.get("success"):
        return "success"
    if m.get("oracle_success"):
        return "passed_goal"
    return "stopped_elsewhere" if record.get("stopped") else "step_limit"


def outcomes(records: list[dict]) -> dict[str, float]:
    """Fraction of the finished episodes ending each way of ``OUTCOMES`` (sums to 1; {} when none)."""
    if not records:
        return {}
    ends = [outcome(r) for r in records]
    return {k: round(ends.count(k) / len(ends), 4) for k in OUTCOMES}


ROUTE_QUARTERS = ("under_25pct", "25_to_50pct", "50_to_75pct", "75pct_or_more")


def failures_by_route_followed(records: list[dict]) -> dict[str, float]:
    """How far along the reference route the navigation failures got before they strayed.

    Navigation failures are the episodes that never came within the success radius (``outcome``
    ``stopped_elsewhere`` or ``step_limit``); each falls in the quarter of ``ROUTE_QUARTERS`` that
    holds its ``route_followed`` measure. Returns the fraction in each quarter (sums to 1), or {}
    when no record is such a failure with that measure.
    """
    shares = [r["metrics"]["route_followed"] for r in records
              if outcome(r) in ("stopped_elsewhere", "step_limit") and r["metrics"].get("route_followed") is not None]
    if not shares:
        return {}
    quarter = [min(int(x * 4), 3) for x in shares]
    return {k: round(quarter.count(i) / len(shares), 4) for i, k in enumerate(ROUTE_QUARTERS)}


def format_failures_by_route(fractions: dict[str, float]) -> str:
    """One line: ``navigation failures by share of the route followed: <25% 0.33, ...``."""
    labels = ("<25%", "25-50%", "50-75%", ">=75%")
    return "navigation failures by share of the route followed before straying: " + ", ".join(
        f"{label} {fractions[k]:.2f}" for label, k in zip(labels, ROUTE_QUARTERS))


def format_destinations(metrics: dict) -> str | None:
    """One line on whether failures went to the wrong destination (``destination_success``) and
    whether the wrong ones were nearer than the goal (``nearer_destination``), or None when the
    episodes list no distractors."""
    reached, sr = metrics.get("destination_success"), metrics.get("success")
    if reached is None or sr is None:
        return None
    choice = f"{sr / reached:.2f}" if reached > 0 else "-"
    line = (f"destinations: stopped at one (the goal or a distractor) {reached:.2f}, at the instructed one "
            f"{sr:.2f}, so the instructed one in {choice} of those")
    nearer, wrong = metrics.get("nearer_destination"), reached - sr
    if nearer is not None and wrong > 1e-9:
        line += f"; of the wrong ones {nearer / wrong:.2f} nearer the start than the goal"
    return line


def success_by_exit(records: list[dict]) -> dict[str, float | None]:
    """SR over the episodes whose agent left the start room by the route's exit (``exit_room``
    1) and over the others (0), each None where there are none; {} where no episode knows."""
    judged = [r for r in records if r["metrics"].get("exit_room") is not None]
    if not judged:
        return {}
    by = {"right_exit": [r for r in judged if r["metrics"]["exit_room"] == 1.0],
          "other_exit": [r for r in judged if r["metrics"]["exit_room"] != 1.0]}
    return {k: float(np.mean([r["metrics"]["success"] for r in rs])) if rs else None for k, rs in by.items()}


def format_exit(results: dict) -> str | None:
    """One line on the first choice of the walk (``exit_room``), SR after each kind of exit and
    the share of wrong exits undone (``turned_back``), or None where the rooms are unknown."""
    right = results["metrics"].get("exit_room")
    if right is None:
        return None
    line = f"exit: left the start room into the room the route enters next in {right:.2f} of the episodes"
    by = results.get("success_by_exit") or {}
    sr = [f"{by[k]:.2f}" if by.get(k) is not None else "-" for k in ("right_exit", "other_exit")]
    line += f"; SR {sr[0]} after that exit, {sr[1]} after another (or none)"
    back = results["metrics"].get("turned_back")
    if back is not None:
        line += f"; {back:.2f} of the wrong exits undone"
    return line


def format_outcomes(fractions: dict[str, float]) -> str:
    """One line: ``outcomes: success 0.24, passed goal 0.03, ...``."""
    return "outcomes: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in fractions.items())


def format_table(rows: list[dict]) -> str:
    """A text table of VLN-CE metrics, one row per results dict."""
    head = f"{'agent':<18}{'split':<12}{'eps':>5}" + "".join(f"{name:>8}" for name, _ in TABLE)
    lines = [head, "-" * len(head)]
    for res in rows:
        m = res["metrics"]
        cells = "".join(f"{m[key]:>8.2f}" if m.get(key) is not None else f"{'-':>8}" for _, key in TABLE)
        lines.append(f"{res['agent']:<18}{res['split']:<12}{res['episodes']:>5}" + cells)
    return "\n".join(lines)


def load_results(path: str | Path) -> dict:
    """The ``results.json`` of an evaluation directory (or the file itself), checked for what tables need."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise DatasetError(f"{path}: no results.json (expected the --out directory of a finished `vlnce eval`)")
    try:
        res = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(res, dict):
        raise DatasetError(f"{file}: expected a JSON object with 'split' and 'metrics', got {type(res).__name__}")
    missing = [k for k in ("split", "episodes", "metrics") if k not in res]
    if missing or not isinstance(res["metrics"], dict):
        raise DatasetError(f"{file}: missing {', '.join(missing) or 'a metrics object'}; expected the results.json "
                           "that `vlnce eval` writes")
    return res


def paper_table(rows: list[tuple[str, list[dict]]], splits: tuple[str, ...] = ("val_seen", "val_unseen")) -> str:
    """A Markdown table shaped like VLN-CE's Tables 2 and 3: one row per model, TL, NE, nDTW, OS, SR
    and SPL under each split.

    Args:
        rows: (label, results dicts of that model), at most one result per split; a split without
            a result shows dashes.
        splits: the column groups, in order.

    Below the table, one line per split gives the number of episodes behind its figures, and names
    the rows evaluated on a different number, as a subset is not comparable with the full split.
    """
    if not splits:
        raise ConfigError("paper_table needs at least one split")
    head = "| model | " + " | ".join(f"{s} {name}" for s in splits for name, _ in PAPER_TABLE) + " |"
    lines = [head, "|---|" + "---|" * (len(splits) * len(PAPER_TABLE))]
    counts: dict[str, dict[str, int]] = {s: {} for s in splits}
    for label, results in rows:
        if any(label in c for c in counts.values()):
            raise ConfigError(f"two rows are labelled {label!r}; give each row its own label")
        by_split: dict[str, dict] = {}
        for res in results:
            split = res.get("split")
            if split not in counts:
                raise ConfigError(f"row {label!r}: a result on split {split!r}; the table's splits are "
                                  f"{', '.join(splits)}")
            if split in by_split:
                raise ConfigError(f"row {label!r}: two results on split {split!r}; give one per split")
            by_split[split] = res
            counts[split][label] = int(res["episodes"])
        cells = []
        for s in splits:
            m = by_split.get(s, {}).get("metrics", {})
            cells += [f"{m[key]:.2f}" if m.get(key) is not None else "-" for _, key in PAPER_TABLE]
        lines.append(f"| {label.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    lines.append("")
    for s in splits:
        if not counts[s]:
            continue
        values = list(counts[s].values())
        usual = max(set(values), key=values.count)
        odd = [f"{label} ({n})" for label, n in counts[s].items() if n != usual]
        lines.append(f"{s}: {usual} episodes per row" + (f"; other counts: {', '.join(odd)}" if odd else ""))
    return "\n".join(lines)


__all__ = ["OUTCOMES", "PAPER_TABLE", "ROUTE_QUARTERS", "EvalConfig", "evaluate", "failures_by_route_followed",
           "format_destinations", "format_exit", "format_failures_by_route", "format_outcomes", "format_table",
           "load_results", "outcome", "outcomes", "paper_table", "read_episode_log", "success_by_exit", "summarize"]
