import json

import pytest

from vlnce.cli.main import COMMANDS, main
from vlnce.errors import UnknownNameError
from vlnce.registry import Registry


def test_registry_rejects_duplicates_and_suggests_close_names():
    reg = Registry("widget")
    reg.add("spinner", object)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("spinner", object)
    with pytest.raises(UnknownNameError, match="did you mean 'spinner'"):
        reg.get("spiner")


def test_registry_checks_the_base_class():
    reg = Registry("thing", base=dict)
    with pytest.raises(ValueError, match="subclass dict"):
        reg.add("x", list)


def test_setting_changes_names_each_difference_with_both_values():
    from vlnce.fileio import setting_changes

    recorded = {"lr": 0.001, "epochs": 5, "workers": 2}
    assert setting_changes(recorded, dict(recorded)) == ""
    assert setting_changes(recorded, {**recorded, "lr": 0.0005, "epochs": 6}) == \
        "epochs: 5 there, 6 now, lr: 0.001 there, 0.0005 now"
    assert setting_changes(recorded, {**recorded, "workers": 8}, ignore={"workers"}) == ""
    # a setting the run predates: equal to its default is no change, anything else is
    assert setting_changes(recorded, {**recorded, "dropout": 0.0}, defaults={"dropout": 0.0}) == ""
    assert setting_changes(recorded, {**recorded, "dropout": 0.3}, defaults={"dropout": 0.0}) == \
        "dropout: 0.0 there, 0.3 now"
    assert setting_changes(recorded, {**recorded, "dropout": 0.3}) == "dropout: None there, 0.3 now"


@pytest.mark.parametrize("argv", [[], *[[name] for name in COMMANDS], ["scene", "build"], ["scene", "show"],
                                  ["scene", "walk"], ["bench", "sim"], ["data", "build"]])
def test_every_command_has_help(argv, capsys):
    assert main(argv + ["--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_train_help_groups_its_options_and_its_examples_parse(capsys):
    import shlex

    from vlnce.cli.main import build_parser
    from vlnce.cli.train import EXAMPLES

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    sections = [line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections[:7] == ["options", "model", "training", "DAgger", "data and expert",
                            "rooms, grounding and reading (ours, not the paper's)", "run"]
    model, ours, run = out.index("\nmodel:"), out.index("\nrooms, grounding"), out.index("\nrun:")
    assert model < out.index("--agent {", model) < ours < out.index("--room-sense CKPT", model) < run
    commands = [c.strip() for c in EXAMPLES.replace("\\\n", " ").splitlines() if c.strip().startswith("vlnce train")]
    assert len(commands) == 3
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.command == "train" and args.out.startswith("runs/")


def test_scene_build_is_byte_identical_for_a_seed(tmp_path, capsys):
    assert main(["scene", "build", "--seed", "4", "--out", str(tmp_path / "a.glb")]) == 0
    assert main(["scene", "build", "--seed", "4", "--out", str(tmp_path / "b.glb")]) == 0
    assert (tmp_path / "a.glb").read_bytes() == (tmp_path / "b.glb").read_bytes()
    assert "rooms" in capsys.readouterr().out


def test_scene_show_draws_a_map_with_room_names(tmp_path):
    from PIL import Image

    assert main(["scene", "build", "--seed", "4", "--out", str(tmp_path / "a.glb")]) == 0
    assert main(["scene", "show", str(tmp_path / "a.glb"), "--out", str(tmp_path / "map.png"), "--navigable"]) == 0
    img = Image.open(tmp_path / "map.png")
    assert img.size[0] > 200 and img.size[1] > 200


def test_user_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    assert main(["scene", "show", str(tmp_path / "missing.glb"), "--out", str(tmp_path / "m.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and "missing.glb" in err[0]
    assert main(["scene", "build", "--seed", "-3", "--out", str(tmp_path / "x.glb")]) == 2
    assert main(["scene", "show", "house:1", "--out", str(tmp_path / "map.jpg")]) == 2
    assert main(["no-such-command"]) == 2


def test_scene_walk_reaches_the_goal_and_writes_pictures(tmp_path, capsys):
    out = tmp_path / "walk"
    assert main(["scene", "walk", "--out", str(out), "--seed", "1", "--video", "gif"]) == 0
    for name in ("house.glb", "map.png", "first_frame.png", "last_frame.png", "walk.gif", "walk.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "walk.json").read_text())
    assert record["stopped"] and record["final_geodesic_m"] < 0.5
    assert record["start_room"] != record["goal_room"]
    assert record["path_length_m"] >= record["start_geodesic_m"] - 0.5
    assert record["actions"][-1] == 0 and len(record["trajectory"]) == record["steps"] + 1


def test_bench_sim_prints_one_json_object(capsys):
    assert main(["bench", "sim", "--json", "--steps", "20", "--lidar-scans", "1", "--resolution", "64"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("steps_per_s", "raycast_only_steps_per_s", "step_to_raycast_ratio", "lidar_scans_per_s",
                "scene_triangles", "navmesh_build_s", "geodesic_query_us"):
        assert result[key] > 0, key
