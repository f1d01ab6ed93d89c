import gzip
import json
import shutil

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers VLNCE-v0)
from agents.evaluation import EvalConfig, evaluate, read_episode_log
from sim.tasks.benchmark import BenchmarkConfig, build_benchmark, generate_house_episodes
from sim.tasks.dataset import Vocab, load_dataset
from sim.tasks.vln import VLNCETask, resolve_scene_id
from conftest import TINY_BENCHMARK
from vlnce.cli.main import main
from vlnce.errors import ConfigError, DatasetError, UnknownNameError

SMALL_SENSORS = {"sensors": {"rgb": {"width_px": 32, "height_px": 32}, "depth": {"width_px": 32, "height_px": 32}}}


def _eval(bench, agent, out, **kw):
    data, _ = bench
    return evaluate(EvalConfig(agent=agent, dataset=str(data), scenes_dir=str(data / "scenes"), **kw), out, progress=False)


# --- datasets -----------------------------------------------------------------------------------
def _write_gz(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        json.dump(obj, fh)


R2R_EPISODE = {
    "episode_id": 17, "trajectory_id": 4, "scene_id": "mp3d/7y3sRwLe3Va/7y3sRwLe3Va.glb",
    "instruction": {"instruction_text": "Walk past the sofa and stop at the door.", "instruction_tokens": [2, 3, 0]},
    "start_position": [1.0, 0.1, -2.0], "start_rotation": [0, 0.7071, 0, 0.7071],
    "goals": [{"position": [4.0, 0.1, -6.0], "radius": 3.0}],
    "reference_path": [[1.0, 0.1, -2.0], [2.0, 0.1, -4.0], [4.0, 0.1, -6.0]],
    "info": {"geodesic_distance": 5.2},
}


def test_reads_a_hand_made_r2r_vlnce_file(tmp_path):
    _write_gz(tmp_path / "val_seen" / "val_seen.json.gz",
              {"episodes": [R2R_EPISODE], "instruction_vocab": {"word_list": ["<PAD>", "<UNK>", "walk", "past"]}})
    _write_gz(tmp_path / "val_seen" / "val_seen_gt.json.gz",
              {"17": {"actions": [1, 1, 0], "forward_steps": 2, "locations": [[1.0, 0.1, -2.0], [1.0, 0.1, -2.25]]}})
    ds = load_dataset(tmp_path, "val_seen")
    (ep,) = ds.episodes
    assert ep.episode_id == "17" and ep.trajectory_id == "4"
    assert ep.goals[0].radius == 3.0 and ep.reference_path[-1] == [4.0, 0.1, -6.0]
    assert ep.info["geodesic_distance"] == 5.2
    assert ds.vocab.word_list[:4] == ["<PAD>", "<UNK>", "walk", "past"]
    assert ds.gt["17"].forward_steps == 2
    # written back, it reads the same
    ds.save(tmp_path / "copy")
    again = load_dataset(tmp_path / "copy", "val_seen")
    assert again.episodes == ds.episodes and again.gt == ds.gt


def test_reads_rxr_role_files_without_a_vocab(tmp_path):
    ep = dict(R2R_EPISODE, instruction={"instruction_text": "Go.", "instruction_id": 9, "language": "en-US"})
    _write_gz(tmp_path / "val_unseen" / "val_unseen_guide.json.gz", {"episodes": [ep]})
    ds = load_dataset(tmp_path, "val_unseen", role="guide")
    assert ds.vocab is None and ds.episodes[0].instruction.extra == {"instruction_id": 9, "language": "en-US"}
    ds.save(tmp_path / "copy", role="guide")
    assert load_dataset(tmp_path / "copy", "val_unseen", role="guide").episodes == ds.episodes


@pytest.mark.parametrize("change,field", [
    ({"goals": []}, "goals"),
    ({"reference_path": []}, "reference_path"),
    ({"start_position": [1, 2]}, "start_position"),
    ({"start_rotation": "north"}, "start_rotation"),
    ({"instruction": {"instruction_text": "  "}}, "instruction_text"),
    ({"scene_id": 5}, "scene_id"),
])
def test_malformed_episodes_name_the_episode_and_field(tmp_path, change, field):
    bad = dict(R2R_EPISODE, **change)
    _write_gz(tmp_path / "x" / "x.json.gz", {"episodes": [bad]})
    with pytest.raises(DatasetError, match=rf"episode 17.*{field}"):
        load_dataset(tmp_path, "x")


def test_one_broken_episode_does_not_lose_the_others_when_not_strict(tmp_path):
    missing = {k: v for k, v in R2R_EPISODE.items() if k != "goals"}
    _write_gz(tmp_path / "x" / "x.json.gz", {"episodes": [dict(R2R_EPISODE, episode_id=1), dict(missing, episode_id=2)]})
    ds = load_dataset(tmp_path, "x", strict=False)
    assert [e.episode_id for e in ds.episodes] == ["1"] and ds.skipped[0][0] == "2"
    with pytest.raises(DatasetError, match="missing field 'goals'"):
        load_dataset(tmp_path, "x")


def test_unknown_split_lists_the_available_ones(bench):
    data, _ = bench
    with pytest.raises(DatasetError, match="available splits: test, train, val_seen, val_unseen"):
        load_dataset(data, "val_unsen")


def test_unreadable_dataset_file_is_a_dataset_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="not a gzipped JSON"):
        load_dataset(tmp_path, "x")


def test_vocab_encodes_with_unknown_and_padding():
    v = Vocab.build(["Turn left, then stop."])
    ids = v.encode("turn right", length=5)
    assert ids[0] == v.word2idx["turn"] and ids[1] == 1 and ids[2:] == [0, 0, 0]


# --- the embedded benchmark -----------------------------------------------------------------------
def test_benchmark_is_deterministic(tmp_path):
    cfg = BenchmarkConfig(train_houses=1, val_unseen_houses=1, test_houses=1, train_episodes_per_house=3,
                          val_seen_episodes_per_house=1, heldout_episodes_per_house=2)
    build_benchmark(tmp_path / "a", cfg, progress=False)
    build_benchmark(tmp_path / "b", cfg, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_benchmark_splits_use_train_houses_for_seen_and_held_out_houses_for_unseen(bench):
    data, summary = bench
    houses = {s: {e.scene_id for e in load_dataset(data, s).episodes} for s in ("train", "val_seen", "val_unseen", "test")}
    assert houses["val_seen"] <= houses["train"]
    assert not houses["val_unseen"] & houses["train"] and not houses["test"] & houses["train"]
    assert not houses["val_unseen"] & houses["test"]
    assert summary["sizes"]["val_unseen"]["episodes"] == 24


def test_every_episode_has_three_or_more_distractors_geodesically_apart(bench):
    data, _ = bench
    ds = load_dataset(data, "val_unseen")
    task = VLNCETask(scenes_dir=data / "scenes")
    task.sim_config.sensors = {}
    for ep in ds.episodes[:8]:
        task.reset(ep, ds.gt[ep.episode_id])
        points = [ep.goals[0].position] + ep.info["distractors"]
        assert len(points) >= 4
        for i in range(len(points)):
            for j in range(i + 1, len(points)):
                assert task.sim.geodesic_distance(points[i], points[j]) > 6.0
        # start and goal are in different rooms, and the instruction names the goal's room
        scene = task.sim.scene
        start_room = scene.room_at(ep.start_position[0], ep.start_position[2])
        goal_room = scene.room_at(ep.goals[0].position[0], ep.goals[0].position[2])
        assert start_room.room_id != goal_room.room_id
        assert ep.info["goal_object"]["description"].split(" in the ")[-1] in ep.instruction.instruction_text
    task.close()


def test_ground_truth_follows_the_task_actions_and_ends_with_stop(bench):
    data, _ = bench
    ds = load_dataset(data, "train")
    for ep in ds.episodes:
        gt = ds.gt[ep.episode_id]
        assert gt.actions[-1] == 0 and set(gt.actions) <= {0, 1, 2, 3}
        steps = np.diff(np.array(gt.locations), axis=0)
        assert np.all(np.linalg.norm(steps, axis=1) <= 0.25 + 1e-4)  # forward steps of at most 0.25 m (5-decimal files)
        assert len(gt.locations) <= gt.forward_steps + 1
        assert np.linalg.norm(np.subtract(gt.locations[-1], ep.goals[0].position)[[0, 2]]) < 0.75


def test_instructions_vary_in_phrasing(bench):
    data, _ = bench
    texts = [e.instruction.instruction_text for e in load_dataset(data, "val_unseen").episodes]
    openings = {t.split(" the ")[0] for t in texts}
    assert len(openings) >= 3 and all(t.endswith(".") for t in texts)


def test_house_episodes_are_reproducible():
    tiny = BenchmarkConfig(**TINY_BENCHMARK)
    a = generate_house_episodes(1000, {"train": 2}, tiny)
    b = generate_house_episodes(1000, {"train": 2}, tiny)
    assert a == b


# --- task and scenes ----------------------------------------------------------------------------
def test_unknown_scene_id_names_the_episode_field(tmp_path):
    with pytest.raises(DatasetError, match="unknown scene id 'mp3d/nope.glb'"):
        resolve_scene_id("mp3d/nope.glb", tmp_path)

def test_embedded_scene_ids_regenerate_the_benchmark_house(bench, tmp_path):
    data, _ = bench
    sid = "embedded/house_01000.glb"
    path = resolve_scene_id(sid, tmp_path)  # not in tmp_path: regenerated into the cache
    assert path != str(data / "scenes" / sid)
    assert open(path, "rb").read() == (data / "scenes" / sid).read_bytes()


def test_goal_off_the_navigable_area_is_reported_for_that_episode(bench):
    data, _ = bench
    ds = load_dataset(data, "val_unseen")
    ep = ds.episodes[0]
    ep.goals[0].position = [500.0, 0.0, 500.0]
    task = VLNCETask(scenes_dir=data / "scenes")
    task.sim_config.sensors = {}
    with pytest.raises(DatasetError, match=rf"episode {ep.episode_id}: field 'goals\[0\].position'"):
        task.reset(ep, ds.gt[ep.episode_id])
    task.close()


def test_episode_ends_by_stop_or_by_the_step_limit(bench):
    from sim.tasks.vln import TaskConfig

    data, _ = bench
    ds = load_dataset(data, "val_unseen")
    ep = ds.episodes[0]
    task = VLNCETask(task_config=TaskConfig(max_episode_steps=5), scenes_dir=data / "scenes")
    task.sim_config.sensors = {}
    task.reset(ep, ds.gt[ep.episode_id])
    for _ in range(4):
        _, terminated, truncated = task.step(2)
        assert not terminated and not truncated
    _, terminated, truncated = task.step(2)
    assert truncated and not terminated and task.metrics()["success"] == 0.0
    with pytest.raises(ValueError, match="reset"):
        task.step(1)
    task.reset(ep, ds.gt[ep.episode_id])
    _, terminated, truncated = task.step(0)
    assert terminated and not truncated and task.metrics()["steps_taken"] == 1.0
    task.reset(ep, ds.gt[ep.episode_id])
    with pytest.raises(ValueError, match="invalid action 7"):
        task.step(7)
    task.close()


# --- evaluation ---------------------------------------------------------------------------------
def test_oracle_succeeds_on_val_unseen(bench, tmp_path):
    res = _eval(bench, "oracle", tmp_path)
    assert res["episodes"] == 24 and res["errors"] == 0
    assert res["metrics"]["success"] >= 0.95
    assert res["metrics"]["ndtw"] > 0.95
    assert res["outcomes"]["success"] == pytest.approx(res["metrics"]["success"], abs=1e-4)
    for name in ("results.json", "submission.json", "episodes.jsonl"):
        assert (tmp_path / name).is_file()
    sub = json.loads((tmp_path / "submission.json").read_text())
    first = next(iter(sub.values()))
    assert set(first[0]) == {"position", "heading", "stop"} and first[-1]["stop"] is True
    assert len(list((tmp_path / "maps").glob("*.png"))) == 24


def test_outcomes_split_stop_failures_from_navigation_failures():
    from agents.evaluation import format_outcomes, outcome, outcomes

    def rec(success, oracle, stopped):
        return {"metrics": {"success": success, "oracle_success": oracle}, "stopped": stopped}

    records = [rec(1.0, 1.0, True), rec(0.0, 1.0, True), rec(0.0, 1.0, False),  # two passed the goal
               rec(0.0, 0.0, True), rec(0.0, 0.0, True), rec(0.0, 0.0, True), rec(0.0, 0.0, False),
               rec(0.0, 0.0, False)]
    assert [outcome(r) for r in records[:4]] == ["success", "passed_goal", "passed_goal", "stopped_elsewhere"]
    fr = outcomes(records)
    assert fr == {"success": 0.125, "passed_goal": 0.25, "stopped_elsewhere": 0.375, "step_limit": 0.25}
    assert outcomes([]) == {}
    assert format_outcomes(fr).startswith("outcomes: success 0.12, passed goal 0.25, stopped elsewhere 0.38")


def test_instruction_blind_agent_stays_under_the_ceiling(bench, tmp_path):
    res = _eval(bench, "instruction_blind", tmp_path)
    # by construction each episode has >= 4 destinations: expected success <= 0.25
    assert res["metrics"]["success"] <= 0.34  # 24 episodes: 0.25 plus sampling slack
    assert res["metrics"]["oracle_success"] <= 0.5
    # it walks to one of the destinations and stops there: nearly always at one, the right one by chance
    assert res["metrics"]["destination_success"] >= 0.9
    from agents.evaluation import format_destinations

    assert "instructed one in 0." in format_destinations(res["metrics"])
    assert 0.0 <= res["metrics"]["nearer_destination"] <= res["metrics"]["destination_success"] - res["metrics"]["success"]


def test_random_and_handcrafted_rarely_succeed(bench, tmp_path):
    for agent in ("random", "handcrafted"):
        res = _eval(bench, agent, tmp_path / agent)
        assert res["metrics"]["success"] <= 0.15, agent


def test_evaluation_in_two_worker_processes_matches_one(bench, tmp_path):
    one = _eval(bench, "random", tmp_path / "one", episodes=6)
    two = _eval(bench, "random", tmp_path / "two", episodes=6, workers=2)
    assert two["metrics"] == one["metrics"]  # episodes are seeded by id, not by the process that runs them
    assert sorted(read_episode_log(tmp_path / "two" / "episodes.jsonl")) == sorted(
        read_episode_log(tmp_path / "one" / "episodes.jsonl"))


def test_interrupted_evaluation_resumes_without_redoing_episodes(bench, tmp_path, monkeypatch):
    import agents.evaluation as ev

    full = _eval(bench, "random", tmp_path / "full", episodes=6)
    part = tmp_path / "part"
    _eval(bench, "random", part, episodes=6)
    lines = (part / "episodes.jsonl").read_text().splitlines()
    (part / "episodes.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # crash mid-write
    calls = []
    original = ev._Runner.run

    def counting(self, eid):
        calls.append(eid)
        return original(self, eid)

    monkeypatch.setattr(ev._Runner, "run", counting)
    resumed = _eval(bench, "random", part, episodes=6)
    assert len(calls) == 3
    assert resumed["metrics"] == full["metrics"]
    assert len(read_episode_log(part / "episodes.jsonl")) == 6
    # another agent, or another seed, must not be mixed into these episodes
    with pytest.raises(ConfigError, match=r"another evaluation \(agent: 'random' there, 'handcrafted' now"):
        _eval(bench, "handcrafted", part, episodes=6)
    with pytest.raises(ConfigError, match="seed: 0 there, 1 now"):
        _eval(bench, "random", part, episodes=6, seed=1)
    assert len(read_episode_log(part / "episodes.jsonl")) == 6


def test_expert_exit_drives_until_the_agent_stands_in_another_room_then_hands_over(bench, tmp_path, monkeypatch):
    import agents.evaluation as ev
    from agents.base import AGENTS, Agent

    told: dict[str, list[int]] = {}

    class Spinner(Agent):
        """Turns left whatever it sees, and notes each action executed in its place."""

        needs_observations = False

        def reset(self, info):
            self.episode = info.episode_id
            told[self.episode] = []

        def act(self, observations):
            return 2

        def executed(self, action):
            told[self.episode].append(action)

    monkeypatch.setitem(AGENTS._entries, "spinner", Spinner)
    res = _eval(bench, "spinner", tmp_path / "exit", episodes=4, max_steps=120, expert_exit=True)
    _eval(bench, "oracle", tmp_path / "oracle", episodes=4)
    exit_log = read_episode_log(tmp_path / "exit" / "episodes.jsonl")
    oracle = read_episode_log(tmp_path / "oracle" / "episodes.jsonl")
    data, _ = bench
    runner = ev._Runner(EvalConfig(agent="oracle", dataset=str(data)), data, data / "scenes", tmp_path / "r")
    for eid, rec in exit_log.items():
        k = rec["expert_steps"]
        assert k >= 1
        # the expert's steps are the oracle's (the same follower), and the agent was told each of them
        assert rec["actions"][:k] == oracle[eid]["actions"][:k] == told[eid]
        assert rec["trajectory"][:k + 1] == oracle[eid]["trajectory"][:k + 1]
        assert set(rec["actions"][k:]) == {2} and len(rec["actions"]) == 120  # then the agent alone
        runner.task.reset(runner.episodes[eid], runner.dataset.gt.get(eid))
        scene = runner.task.sim.scene
        rooms = [scene.room_at(p[0], p[2]) for p in rec["trajectory"][:k + 1]]
        start = rooms[0].room_id
        assert all(r is None or r.room_id == start for r in rooms[:k])  # the start room, or its doorway
        assert rooms[k] is not None and rooms[k].room_id != start  # handed over at the first step outside
    runner.close()
    assert res["expert_exit"] and res["mean_expert_steps"] == pytest.approx(
        np.mean([r["expert_steps"] for r in exit_log.values()]))
    with pytest.raises(ConfigError, match="expert_exit: True there, False now"):
        _eval(bench, "spinner", tmp_path / "exit", episodes=4, max_steps=120)


def test_a_broken_episode_is_recorded_and_the_others_still_count(bench, tmp_path):
    data, _ = bench
    copy = tmp_path / "data"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("scenes"))
    ds = load_dataset(copy, "val_unseen")
    ds.episodes[1].goals[0].position = [500.0, 0.0, 500.0]
    ds.save(copy)
    res = evaluate(EvalConfig(agent="oracle", dataset=str(copy), scenes_dir=str(data / "scenes"), episodes=4),
                   tmp_path / "out", progress=False)
    assert res["episodes"] == 3 and res["errors"] == 1
    assert "goals[0].position" in res["error_examples"][0]


def test_unknown_agent_and_split_are_clear_errors(bench, tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="did you mean 'oracle'"):
        _eval(bench, "oracel", tmp_path)
    data, _ = bench
    rc = main(["eval", "--agent", "random", "--dataset", str(data), "--split", "val_unsen", "--out", str(tmp_path)])
    assert rc == 1 and "available splits" in capsys.readouterr().err


def test_eval_command_prints_the_metrics_table(bench, tmp_path, capsys):
    data, _ = bench
    rc = main(["eval", "--agent", "oracle", "--dataset", str(data), "--scenes-dir", str(data / "scenes"),
               "--episodes", "2", "--video", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    for col in ("TL", "NE", "nDTW", "sDTW", "OS", "SR", "SPL"):
        assert col in out
    assert "outcomes: success 1.00, passed goal 0.00" in out
    assert len(list((tmp_path / "videos").glob("*.gif"))) == 2


def test_eval_command_without_out_writes_under_outputs_eval(bench, tmp_path, capsys, monkeypatch):
    data, _ = bench
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--agent", "oracle", "--dataset", str(data), "--scenes-dir", str(data / "scenes"),
            "--split", "val_seen", "--episodes", "1", "--no-maps"]
    assert main(args) == 0
    out = tmp_path / "outputs" / "eval" / "oracle-val_seen"
    assert json.loads((out / "results.json").read_text())["episodes"] == 1
    assert "wrote outputs/eval/oracle-val_seen/episodes.jsonl" in capsys.readouterr().out
    # the same command again resumes there: nothing is run twice
    assert main(args) == 0
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 1
    from vlnce.cli.eval import default_out

    assert default_out("cma", "configs/agents/cma_best.pt", "val_unseen") == "outputs/eval/cma-cma_best-val_unseen"


def test_eval_command_takes_simulator_overrides_and_records_them(bench, tmp_path, capsys):
    data, _ = bench
    common = ["eval", "--agent", "handcrafted", "--dataset", str(data), "--scenes-dir", str(data / "scenes"),
              "--episodes", "2", "--no-maps"]
    assert main([*common, "--sim-set", "agent.exact_turns=true", "--out", str(tmp_path / "a")]) == 0
    recorded = json.loads((tmp_path / "a" / "eval_config.json").read_text())
    assert recorded["sim_overrides"] == ["agent.exact_turns=true"]
    # another override into the same directory is refused, naming it
    assert main([*common, "--sim-set", "agent.exact_turns=false", "--out", str(tmp_path / "a")]) == 2
    assert "sim_overrides" in capsys.readouterr().err
    assert main([*common, "--sim-set", "agent.exact_turn=true", "--out", str(tmp_path / "b")]) == 2
    assert "exact_turn" in capsys.readouterr().err and not (tmp_path / "b" / "episodes.jsonl").exists()


# --- gymnasium ----------------------------------------------------------------------------------
def _env_kwargs(bench, **kw):
    data, _ = bench
    return dict(split="val_unseen", dataset=str(data), scenes_dir=str(data / "scenes"), sim_overrides=SMALL_SENSORS, **kw)


def test_env_passes_the_gymnasium_checker(bench):
    env = gymnasium.make("sim:VLNCE-v0", **_env_kwargs(bench, pose=True, semantic=True))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"rgb", "depth", "semantic", "instruction", "pose"}
    assert obs["instruction"].shape == (200,) and info["instruction"]
    env.close()


def test_env_reports_metrics_when_the_episode_ends(bench):
    env = gymnasium.make("sim:VLNCE-v0", **_env_kwargs(bench, reward="shaped"))
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated
    assert {"success", "spl", "ndtw", "distance_to_goal", "path_length"} <= set(info["metrics"])
    with pytest.raises(ValueError, match="not in Discrete"):
        env.unwrapped.step(9)
    env.close()


def test_env_runs_in_an_async_vector_env_with_two_workers(bench):
    from sim.envs.vlnce_env import make_vector_env

    venv = make_vector_env(2, **_env_kwargs(bench))
    obs, infos = venv.reset(seed=0)
    assert obs["rgb"].shape == (2, 32, 32, 3)
    assert infos["episode_id"][0] != infos["episode_id"][1]  # each worker has its own shard
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = venv.step(np.array([1, 2]))
    assert obs["instruction"].shape == (2, 200)
    venv.close()


def test_main_job_evaluates_every_baseline_and_writes_pictures(bench, tmp_path, capsys):
    data, _ = bench
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--dataset", str(data), "--scenes-dir", str(data / "scenes"),
                 "--episodes", "3", "--videos", "1", "--workers", "1"]) == 0
    table = (out / "metrics_table.txt").read_text()
    for agent in ("random", "handcrafted", "instruction_blind", "oracle"):
        assert agent in table
        assert len(list((out / agent / "maps").glob("*.png"))) == 3
    assert len(list((out / "oracle_videos" / "videos").glob("*.gif"))) == 1
    # the shipped CMA: its video episode and where it read the instruction along it
    assert len(list((out / "cma_videos" / "videos").glob("*.gif"))) == 1
    assert len(list((out / "cma_videos" / "attention").glob("*.png"))) == 1
    assert "SPL" in capsys.readouterr().out


def test_an_agent_returning_an_invalid_action_fails_only_that_episode(bench, tmp_path, monkeypatch):
    from agents.nonlearning import RandomAgent

    monkeypatch.setattr(RandomAgent, "act", lambda self, obs: 9)
    res = _eval(bench, "random", tmp_path, episodes=2)
    assert res["episodes"] == 0 and res["errors"] == 2
    assert "agent 'random' returned invalid action 9" in res["error_examples"][0]


def test_reid_plugin_attaches_to_the_environment(bench, tmp_path):
    """The reid plugin reads rgb + person boxes from the simulator's instance and semantic masks;
    per-box outputs are padded rows, and the gallery is reset with the environment."""
    import torch

    from perception.reid.embedder import ModelSpec, save_reid_model
    from perception.reid.plugin import ReidPlugin
    from perception.reid.registry import build_model
    from perception.wrappers import PerceptionObservation, person_boxes
    from vlnce.errors import ConfigError

    torch.manual_seed(0)
    ckpt = save_reid_model(tmp_path / "reid.pt", build_model("baseline", 3, "resnet26", 0.125),
                           ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32)))
    plugin = ReidPlugin(checkpoint=str(ckpt), device="cpu")
    with pytest.raises(ConfigError, match="instance=True, semantic=True"):
        PerceptionObservation(gymnasium.make("sim:VLNCE-v0", **_env_kwargs(bench)), [plugin])
    base = gymnasium.make("sim:VLNCE-v0", **_env_kwargs(bench, instance=True, semantic=True))
    env = PerceptionObservation(base, [plugin], max_boxes=4)
    obs, _ = env.reset(seed=0)
    assert obs["instance"].shape == obs["rgb"].shape[:2]
    for step in range(6):
        for key in ("reid/embeddings", "reid/identities", "reid/boxes"):
            assert env.observation_space[key].contains(obs[key]), key
        boxes = person_boxes(obs["instance"], obs["semantic"], obs["rgb"].shape[:2], max_boxes=4)
        np.testing.assert_array_equal(obs["reid/boxes"][:len(boxes)], boxes)
        has_box = obs["reid/boxes"][:, 2] > obs["reid/boxes"][:, 0]
        assert ((obs["reid/identities"] > 0) <= has_box).all()
        assert np.allclose(np.linalg.norm(obs["reid/embeddings"][obs["reid/identities"] > 0], axis=1), 1.0, atol=1e-4)
        obs, *_ = env.step(2)  # turn left: look around the room
    env.reset(seed=0)
    assert plugin.gallery.frame <= 1  # reset with the environment


def test_detection_feeds_person_boxes_to_reid_in_the_environment(bench, tmp_path):
    """With ``detection`` before ``reid``, re-ID reads the detector's person boxes (best first), so
    the environment needs no ground-truth masks; detection outputs are padded rows."""
    import torch

    from perception.detection.checkpoint import save_detector
    from perception.detection.faster_rcnn import build_faster_rcnn
    from perception.detection.plugin import DetectionPlugin
    from perception.detection.roi_heads import RoIHeadsConfig
    from perception.reid.embedder import ModelSpec, save_reid_model
    from perception.reid.plugin import ReidPlugin
    from perception.reid.registry import build_model
    from perception.wrappers import PerceptionObservation

    torch.manual_seed(0)
    det_ckpt = save_detector(tmp_path / "det.pt", build_faster_rcnn(("person", "chair"), "resnet26", 0.25,
                                                                     roi=RoIHeadsConfig(representation=32)))
    # untrained: every proposal scores about 1/3 per class, so there are person boxes to pass on
    detector = DetectionPlugin(checkpoint=str(det_ckpt), score_threshold=0.0, device="cpu")
    reid_ckpt = save_reid_model(tmp_path / "reid.pt", build_model("baseline", 3, "resnet26", 0.125),
                                ModelSpec("baseline", "resnet26", 0.125, 3, (64, 32)))
    reid = ReidPlugin(checkpoint=str(reid_ckpt), device="cpu")
    env = PerceptionObservation(gymnasium.make("sim:VLNCE-v0", **_env_kwargs(bench)), [detector, reid], max_boxes=5)
    obs, _ = env.reset(seed=0)
    for key in ("detection/boxes", "detection/classes", "detection/scores", "reid/boxes", "reid/identities"):
        assert env.observation_space[key].contains(obs[key]), key
    direct = detector({"image": [obs["rgb"][..., :3]]})
    person = direct["classes"][0] == 1
    assert person.any()
    order = np.argsort(-direct["scores"][0][person], kind="stable")[:5]
    np.testing.assert_allclose(obs["reid/boxes"][:len(order)], direct["boxes"][0][person][order], atol=1e-4)
    n = min(5, len(direct["boxes"][0]))
    np.testing.assert_allclose(obs["detection/scores"][:n], direct["scores"][0][:n], atol=1e-5)
