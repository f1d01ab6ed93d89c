import math

import numpy as np
import pytest

from sim.tasks.measures import MEASURES, Measurements, StepContext, dtw_exact, dtw_fast
from vlnce.errors import ConfigError
from vlnce.registry import Registry


def straight_line_geodesic(p, goals):
    return float(min(np.linalg.norm(np.asarray(p) - g) for g in np.atleast_2d(goals)))


def run(trajectory, goal, stop=True, gt=None, names=None, distractors=None):
    """Feed positions to the measures: reset at trajectory[0], one update per later position."""
    if names is None:
        from sim.tasks.measures import DEFAULT_MEASURES

        names = [n for n in DEFAULT_MEASURES if gt is not None or n not in ("ndtw", "sdtw")]
    m = Measurements(names)
    goal = np.array([goal], float)

    def ctx(p, stopped):
        return StepContext(np.array(p, float), stopped, goal, straight_line_geodesic, gt,
                           None if distractors is None else np.array(distractors, float))

    m.reset(ctx(trajectory[0], False))
    for i, p in enumerate(trajectory[1:], start=1):
        m.update(ctx(p, stop and i == len(trajectory) - 1))
    return m.values()


def test_success_needs_stop_within_three_metres_strictly():
    assert run([[0, 0, 0], [0, 0, 2.99]], [0, 0, 5.98])["success"] == 1.0  # 2.99 m < 3.0
    assert run([[0, 0, 0], [0, 0, 3.0]], [0, 0, 6.0])["success"] == 0.0  # exactly 3.0 m is not a success
    assert run([[0, 0, 0], [0, 0, 5.0]], [0, 0, 6.0], stop=False)["success"] == 0.0  # no STOP


def test_oracle_success_counts_a_pass_without_stopping():
    traj = [[0, 0, 0], [0, 0, 4.0], [0, 0, 0]]  # passes 2 m from the goal, walks back
    v = run(traj, [0, 0, 6.0], stop=False)
    assert v["oracle_success"] == 1.0 and v["success"] == 0.0
    assert v["oracle_navigation_error"] == pytest.approx(2.0)
    assert v["distance_to_goal"] == pytest.approx(6.0)


def test_path_length_sums_euclidean_steps():
    v = run([[0, 0, 0], [3, 0, 0], [3, 0, 4]], [3, 0, 4])
    assert v["path_length"] == pytest.approx(7.0)
    assert v["steps_taken"] == 2.0


def test_spl_divides_the_start_distance_by_the_longer_of_it_and_the_path():
    # d0 = 5 (straight to the goal), walked 3 + 4 = 7, success: SPL = 5/7
    v = run([[0, 0, 0], [3, 0, 0], [3, 0, 4]], [3, 0, 4])
    assert v["spl"] == pytest.approx(5.0 / 7.0)
    # a failed episode has SPL 0 whatever the path
    assert run([[0, 0, 0], [0, 0, 1]], [0, 0, 10])["spl"] == 0.0


def test_ndtw_of_the_reference_path_itself_is_one():
    ref = [[0, 0, 0], [0, 0, 0.25], [0, 0, 0.5], [0.25, 0, 0.5]]
    v = run(ref, ref[-1], gt=ref)
    assert v["ndtw"] == pytest.approx(1.0) and v["sdtw"] == pytest.approx(1.0)


def test_ndtw_matches_the_formula_on_a_hand_computed_case():
    ref = [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    path = [[0, 0, 0], [1, 0, 1], [2, 0, 1]]  # every point but the first is 1 m off the reference
    # DTW aligns index to index: 0 + 1 + 1 = 2; nDTW = exp(-2 / (3 * 3.0))
    assert dtw_exact(path, ref) == pytest.approx(2.0)
    v = run(path, ref[-1], gt=ref)
    assert v["ndtw"] == pytest.approx(math.exp(-2.0 / 9.0))
    # not a success (stopped 1 m from the goal is a success, so use a far goal for sDTW = 0)
    assert run(path, [20, 0, 0], gt=ref)["sdtw"] == 0.0


def test_ndtw_ignores_repeated_positions_from_turning_in_place():
    ref = [[0, 0, 0], [1, 0, 0]]
    with_turns = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert run(with_turns, ref[-1], gt=ref)["ndtw"] == pytest.approx(1.0)


def test_exact_and_fast_dtw_agree_on_short_paths():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 3)), rng.normal(size=(9, 3))
    assert dtw_fast(a, b) >= dtw_exact(a, b) - 1e-9  # fastdtw is an upper bound
    assert dtw_fast(a, b) == pytest.approx(dtw_exact(a, b), rel=0.25)


def test_measure_order_and_duplicates_are_checked():
    with pytest.raises(ConfigError, match="needs 'distance_to_goal'"):
        Measurements(["success", "distance_to_goal"])
    with pytest.raises(ConfigError, match="twice"):
        Measurements(["steps_taken", "steps_taken"])
    with pytest.raises(ConfigError, match="not enabled"):
        Measurements(["steps_taken"], options={"ndtw": {"fast": False}})


def test_ndtw_without_reference_locations_is_a_config_error():
    with pytest.raises(ConfigError, match="reference locations"):
        run([[0, 0, 0]], [0, 0, 1], gt=None, names=["ndtw"])


def test_route_followed_freezes_where_the_agent_strays():
    route = [[x / 4, 0, 0] for x in range(41)]  # 10 m along x, a point every 0.25 m
    follow = run([[0, 0, 0], [2, 0, 0], [4, 0, 0]], [10, 0, 0], gt=route, names=["route_followed"])
    assert follow["route_followed"] == pytest.approx(5.5 / 10)  # points within 1.5 m of x = 4
    # 3.5 m off the route at x = 4 it has strayed; coming back to x = 9 changes nothing
    strayed = run([[0, 0, 0], [4, 0, 0], [4, 0, 3.5], [9, 0, 0]], [10, 0, 0], gt=route, names=["route_followed"])
    assert strayed["route_followed"] == pytest.approx(0.55)
    # 2.9 m off is still near enough to carry on
    kept = run([[0, 0, 0], [4, 0, 0], [4, 0, 2.9], [9, 0, 0]], [10, 0, 0], gt=route, names=["route_followed"])
    assert kept["route_followed"] == 1.0
    # the wrong way from the start: only the start's neighbourhood counts
    back = run([[0, 0, 0], [-2, 0, 0], [-4, 0, 0]], [10, 0, 0], gt=route, names=["route_followed"])
    assert back["route_followed"] == pytest.approx(0.15)
    with pytest.raises(ConfigError, match="reference locations"):
        run([[0, 0, 0]], [0, 0, 1], gt=None, names=["route_followed"])
    with pytest.raises(ConfigError, match="near_m <= leave_m"):
        Measurements(["route_followed"], options={"route_followed": {"near_m": 4.0}})


def test_destination_success_counts_a_stop_at_the_goal_or_a_distractor():
    names = ["distance_to_goal", "success", "destination_success"]
    others = [[0, 0, -8.0], [8.0, 0, 0]]
    at = lambda end, **kw: run([[0, 0, 0], end], [0, 0, 8.0], names=names, distractors=others, **kw)  # noqa: E731
    assert at([0, 0, 6.0])["destination_success"] == 1.0  # the goal: 2 m
    assert at([0, 0, -5.5])["destination_success"] == 1.0  # a distractor, 2.5 m away
    assert at([0, 0, -5.0])["destination_success"] == 0.0  # exactly 3 m from it is not within
    assert at([5.5, 0, 0], stop=False)["destination_success"] == 0.0  # there, but no STOP
    assert math.isnan(run([[0, 0, 0]], [0, 0, 8.0], names=names)["destination_success"])  # none listed


def test_nearer_destination_counts_stops_at_distractors_nearer_than_the_goal():
    names = ["distance_to_goal", "success", "nearer_destination"]
    others = [[0, 0, -5.0], [12.0, 0, 0]]  # 5 m and 12 m from the start; the goal is 8 m away
    at = lambda end, **kw: run([[0, 0, 0], end], [0, 0, 8.0], names=names, distractors=others, **kw)  # noqa: E731
    assert at([0, 0, -4.0])["nearer_destination"] == 1.0  # 1 m from the nearer one
    assert at([0, 0, -4.0], stop=False)["nearer_destination"] == 0.0  # there without STOP
    assert at([11.0, 0, 0])["nearer_destination"] == 0.0  # at the farther one
    assert at([0, 0, 7.0])["nearer_destination"] == 0.0  # at the goal
    assert at([0, 0, 3.0])["nearer_destination"] == 0.0  # nowhere: 5 m from the goal, 8 m from the nearer one
    # measured from the start: walking towards the farther one first does not make it nearer
    assert run([[0, 0, 0], [12.0, 0, 2.0], [11.0, 0, 0]], [0, 0, 8.0], names=names,
               distractors=others)["nearer_destination"] == 0.0
    assert math.isnan(run([[0, 0, 0]], [0, 0, 8.0], names=names)["nearer_destination"])  # none listed
    from agents.evaluation import format_destinations

    # 0.6 at a destination, 0.2 the instructed one: 0.4 wrong, 0.3 of all nearer -> 0.75 of the wrong ones
    line = format_destinations({"destination_success": 0.6, "success": 0.2, "nearer_destination": 0.3})
    assert "instructed one in 0.33 of those" in line and "wrong ones 0.75 nearer" in line
    assert "nearer" not in format_destinations({"destination_success": 0.6, "success": 0.6, "nearer_destination": 0.0})


def test_exit_room_judges_the_first_room_entered_after_the_start_room():
    def room_at(p):  # x < 0: room 0 (the start), 0 <= x < 1: a doorway, then room 1 (z < 0) or room 2
        x, z = p[0], p[2]
        return 0 if x < 0 else None if x < 1 else 1 if z < 0 else 2

    route = [[-2.0, 0, -1.0], [0.5, 0, -1.0], [3.0, 0, -1.0], [3.0, 0, 2.0]]  # rooms 0, door, 1, 2

    def measured(name, trajectory, gt=route, rooms=room_at):
        m = Measurements([name])
        ctx = lambda p: StepContext(np.array(p, float), False, np.array([[3.0, 0, 2.0]]),  # noqa: E731
                                    straight_line_geodesic, gt, None, rooms)
        m.reset(ctx(trajectory[0]))
        for p in trajectory[1:]:
            m.update(ctx(p))
        return m.values()[name]

    def exit_room(trajectory, **kw):
        return measured("exit_room", trajectory, **kw)

    def turned_back(trajectory, **kw):
        return measured("turned_back", trajectory, **kw)

    assert exit_room([[-2, 0, -1], [0.5, 0, -1], [2, 0, -1], [2, 0, 3]]) == 1.0  # room 1, then on to room 2
    assert exit_room([[-2, 0, 1], [0.5, 0, 1], [2, 0, 1], [2, 0, -1]]) == 0.0  # room 2 first: decided there
    assert exit_room([[-2, 0, -1], [0.5, 0, -1], [-1, 0, -1]]) == 0.0  # to the doorway and back: never left
    assert exit_room([[-2, 0, -1]]) == 0.0
    assert math.isnan(exit_room([[-2, 0, -1], [2, 0, -1]], rooms=None))  # no room layout
    assert math.isnan(exit_room([[-2, 0, -1], [2, 0, -1]], gt=[[-2, 0, -1], [-1, 0, -1]]))  # a route in one room
    assert math.isnan(exit_room([[0.5, 0, -1], [2, 0, -1]]))  # a start between rooms

    # room 2 first, back through the start room, then room 1: undone
    assert turned_back([[-2, 0, 1], [2, 0, 1], [-1, 0, 0], [2, 0, -1]]) == 1.0
    assert turned_back([[-2, 0, 1], [2, 0, 1], [2, 0, -1]]) == 1.0  # from room 2 straight into room 1
    assert turned_back([[-2, 0, 1], [2, 0, 1], [-1, 0, 1], [2, 0, 1]]) == 0.0  # back, and room 2 again
    assert math.isnan(turned_back([[-2, 0, -1], [2, 0, -1], [2, 0, 3]]))  # the right exit: nothing to undo
    assert math.isnan(turned_back([[-2, 0, -1], [0.5, 0, -1], [-1, 0, -1]]))  # never left
    assert math.isnan(turned_back([[-2, 0, 1], [2, 0, 1]], rooms=None))
    from agents.evaluation import format_exit, success_by_exit

    recs = [{"metrics": {"exit_room": e, "success": s}} for e, s in ((1.0, 1.0), (1.0, 0.0), (1.0, 0.0), (0.0, 0.0),
                                                                      (0.0, 1.0), (None, 1.0))]
    by = success_by_exit(recs)
    assert by == {"right_exit": pytest.approx(1 / 3), "other_exit": 0.5}  # the unjudged episode in neither
    assert success_by_exit(recs[:3]) == {"right_exit": pytest.approx(1 / 3), "other_exit": None}
    assert success_by_exit(recs[5:]) == {}
    line = format_exit({"metrics": {"exit_room": 0.6}, "success_by_exit": by})
    assert "room the route enters next in 0.60 of" in line and "SR 0.33 after that exit, 0.50 after another" in line
    assert "undone" not in line
    assert format_exit({"metrics": {"exit_room": 0.6, "turned_back": 0.25}}).endswith("0.25 of the wrong exits undone")
    assert format_exit({"metrics": {"exit_room": None}}) is None


def test_navigation_failures_are_binned_by_the_route_they_followed():
    from agents.evaluation import failures_by_route_followed, format_failures_by_route

    def rec(success, oracle, stopped, followed):
        return {"metrics": {"success": success, "oracle_success": oracle, "route_followed": followed},
                "stopped": stopped}

    records = [rec(1.0, 1.0, True, 1.0), rec(0.0, 1.0, True, 0.9),  # a success and a stop failure: left out
               rec(0.0, 0.0, True, 0.1), rec(0.0, 0.0, True, 0.25), rec(0.0, 0.0, False, 0.3),
               rec(0.0, 0.0, True, 1.0)]
    fr = failures_by_route_followed(records)
    assert fr == {"under_25pct": 0.25, "25_to_50pct": 0.5, "50_to_75pct": 0.0, "75pct_or_more": 0.25}
    assert format_failures_by_route(fr).endswith("<25% 0.25, 25-50% 0.50, 50-75% 0.00, >=75% 0.25")
    assert failures_by_route_followed(records[:2]) == {}


def test_evaluations_are_tabulated_per_split_like_the_papers_tables(tmp_path, capsys):
    import json

    from agents.evaluation import load_results, paper_table
    from vlnce.cli.main import main
    from vlnce.errors import DatasetError

    def res(split, n, sr, tl=7.5):
        return {"agent": "cma", "split": split, "episodes": n, "metrics": {
            "path_length": tl, "distance_to_goal": 8.125, "ndtw": 0.4, "sdtw": 0.1, "oracle_success": 0.3,
            "success": sr, "spl": sr - 0.02}}

    for name, r in {"seen": res("val_seen", 312, 0.25), "unseen": res("val_unseen", 240, 0.125),
                    "subset": res("val_unseen", 60, 0.5, tl=3.0)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    table = paper_table([("CMA", [res("val_seen", 312, 0.25), res("val_unseen", 240, 0.125)]),
                         ("Seq2Seq", [res("val_unseen", 240, 0.0625)])])
    lines = table.splitlines()
    assert lines[0].startswith("| model | val_seen TL |") and lines[0].count("|") == 14
    # TL NE nDTW OS SR SPL per split, two decimals; a split without a result shows dashes
    assert lines[2] == "| CMA | 7.50 | 8.12 | 0.40 | 0.30 | 0.25 | 0.23 | 7.50 | 8.12 | 0.40 | 0.30 | 0.12 | 0.10 |"
    assert lines[3] == "| Seq2Seq | - | - | - | - | - | - | 7.50 | 8.12 | 0.40 | 0.30 | 0.06 | 0.04 |"
    assert lines[-2:] == ["val_seen: 312 episodes per row", "val_unseen: 240 episodes per row"]
    with pytest.raises(ConfigError, match="two results on split 'val_unseen'"):
        paper_table([("CMA", [res("val_unseen", 240, 0.1), res("val_unseen", 240, 0.2)])])
    with pytest.raises(ConfigError, match="split 'test'"):
        paper_table([("CMA", [res("test", 240, 0.1)])])
    with pytest.raises(ConfigError, match="two rows are labelled 'CMA'"):
        paper_table([("CMA", [res("val_seen", 312, 0.1)]), ("CMA", [res("val_unseen", 240, 0.1)])])
    assert paper_table([("a | b", [res("val_seen", 312, 0.1)])]).splitlines()[2].startswith("| a \\| b | 7.50 |")

    # the command: rows from eval directories; a row on a subset of the split is named below
    assert main(["table", f"CMA, PM=a={tmp_path / 'seen'},{tmp_path / 'unseen'}",
                 f"B={tmp_path / 'subset'}", f"C={tmp_path / 'unseen'}"]) == 0
    out = capsys.readouterr().out
    assert "| CMA, PM=a | 7.50 |" in out and "| B | - |" in out
    assert "val_unseen: 240 episodes per row; other counts: B (60)" in out
    assert main(["table", f"A={tmp_path / 'seen'}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"A": {"val_seen": {
        "episodes": 312, "TL": 7.5, "NE": 8.125, "nDTW": 0.4, "OS": 0.3, "SR": 0.25, "SPL": 0.23}}}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{\"split\": \"val_seen\"}")
    with pytest.raises(DatasetError, match="missing episodes, metrics"):
        load_results(tmp_path / "bad")
    assert main(["table", f"A={tmp_path / 'unseen'}", "--splits", "val_seen", "--json"]) == 2  # checked too
    assert "split 'val_unseen'" in capsys.readouterr().err
    assert main(["table", f"A={tmp_path / 'nowhere'}"]) == 1
    assert "no results.json" in capsys.readouterr().err
    assert main(["table", "no label"]) == 2


def test_measures_are_registered_by_name_and_a_fresh_registry_is_independent():
    assert {"distance_to_goal", "success", "spl", "ndtw", "sdtw", "path_length", "oracle_success",
            "steps_taken"} <= set(MEASURES.names())
    fresh = Registry("measure")
    with pytest.raises(Exception, match="unknown measure 'spl'"):
        Measurements(["spl"], registry=fresh)
