import math

import numpy as np
import pytest

from conftest import box_room, part
from sim.navigation.motion import try_step
from sim.navigation.navgrid import NavGrid, NavMeshSettings, build_navgrid, load_or_build_navgrid
from sim.navigation.pathfinder import PathFinder
from sim.scenes import shapes
from sim.scenes.scene import scene_from_parts
from vlnce.errors import ConfigError, SceneError


@pytest.fixture(scope="module")
def open_room():
    scene = box_room(8.0, 8.0)
    return scene, build_navgrid(scene)


@pytest.fixture(scope="module")
def divided_room():
    """An 8 x 8 m room split at x = 4 by a wall that leaves a gap only at z in [6.5, 8]."""
    wall = part(shapes.box((4.0, 1.3, 3.25), (0.1, 2.6, 6.5)), "wall", 20)
    scene = box_room(8.0, 8.0, extra=[wall])
    return scene, build_navgrid(scene)


def test_open_floor_is_navigable_except_a_radius_margin_along_walls(open_room):
    _, grid = open_room
    assert grid.is_navigable([4.0, 0.0, 4.0])
    assert grid.is_navigable([0.2, 0.0, 4.0])  # 0.2 m from the wall face: room for a 0.1 m radius
    assert not grid.is_navigable([0.05, 0.0, 4.0])  # the body would overlap the wall
    assert not grid.is_navigable([4.0, 0.0, 9.0])  # outside the house
    assert not grid.is_navigable([4.0, 2.0, 4.0])  # far above the floor
    # navigable area: the room shrunk by radius + half a cell (up to one cell of rasterisation)
    margin = 0.1 + 0.025
    lo, hi = (8 - 2 * margin - 0.1) ** 2, (8 - 2 * margin + 0.1) ** 2
    assert lo <= grid.navigable_area_m2 <= hi


def test_geodesic_is_the_straight_line_where_the_line_is_free(open_room):
    _, grid = open_room
    pf = PathFinder(grid)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
        assert pf.geodesic_distance(a, b) == pytest.approx(np.linalg.norm(a - b), rel=1e-9)


def test_geodesic_is_never_shorter_than_the_straight_line(house_grid):
    pf = PathFinder(house_grid)
    rng = np.random.default_rng(1)
    for _ in range(60):
        a, b = house_grid.sample_navigable_point(rng), house_grid.sample_navigable_point(rng)
        d = pf.geodesic_distance(a, b)
        assert np.isfinite(d)
        assert d >= np.linalg.norm((a - b)[[0, 2]]) - 1e-9


def test_geodesic_around_a_wall_goes_through_the_gap(divided_room):
    _, grid = divided_room
    pf = PathFinder(grid)
    a, b = np.array([2.0, 0.0, 2.0]), np.array([6.0, 0.0, 2.0])
    path, d = pf.find_path(a, b)
    # analytic: around both corners of the 0.1 m thick wall end at z = 6.5, at the clearance
    # margin m (radius 0.1 m + half a 0.05 m cell, plus up to one cell of rasterisation)
    for m in (0.125, 0.175):
        c1, c2 = np.array([3.95 - m, 6.5 + m]), np.array([4.05 + m, 6.5 + m])
        length = np.linalg.norm(c1 - a[[0, 2]]) + np.linalg.norm(c2 - c1) + np.linalg.norm(b[[0, 2]] - c2)
        if m == 0.125:
            assert d >= length - 1e-6
        else:
            assert d <= length * 1.01
    assert max(p[2] for p in path) > 6.5  # the path really passes the gap
    assert all(grid.is_navigable(p) for p in path)


def test_distance_field_overestimates_by_at_most_three_percent(open_room):
    _, grid = open_room
    pf = PathFinder(grid)
    goal = np.array([1.0, 0.0, 1.0])
    field = pf.distance_field(goal)
    gi, gk = grid.to_cell(goal)
    centre = grid.cell_center(gi, gk)
    rng = np.random.default_rng(2)
    for _ in range(40):
        p = grid.sample_navigable_point(rng)
        i, k = grid.to_cell(p)
        straight = np.linalg.norm((grid.cell_center(i, k) - centre)[[0, 2]])
        assert straight - 1e-6 <= field[i, k] <= straight * 1.03 + 1e-6


def test_unreachable_goal_gives_infinite_distance_and_no_path():
    wall = part(shapes.box((4.0, 1.3, 4.0), (0.2, 2.6, 8.2)), "wall", 20)
    grid = build_navgrid(box_room(8.0, 8.0, extra=[wall]))
    pf = PathFinder(grid)
    assert grid.num_islands == 2
    path, d = pf.find_path([2.0, 0, 4.0], [6.0, 0, 4.0])
    assert path == [] and d == math.inf


def test_agent_slides_along_a_wall_it_hits_at_an_angle(open_room):
    _, grid = open_room
    heading_into_wall = math.radians(45)  # forward is (-sin h, 0, -cos h): towards -x and -z
    fwd = np.array([-math.sin(heading_into_wall), 0.0, -math.cos(heading_into_wall)])
    p = np.array([4.0, 0.0, 1.0])
    # walk until in contact with the z = 0 wall, then every step slides 0.25 * sin(45 deg) along x
    slides = []
    for _ in range(12):
        q, collided = try_step(grid, p, p + 0.25 * fwd)
        assert grid.is_navigable(q)
        if collided:
            slides.append(p - q)
        p = q
    assert len(slides) >= 6
    steady = np.array(slides[1:])  # the first contact step still moves partly towards the wall
    assert np.allclose(steady[:, 0], 0.25 * math.sin(heading_into_wall), atol=0.02)
    assert np.allclose(steady[:, 2], 0.0, atol=0.01)


def test_without_sliding_the_agent_stops_at_the_wall(open_room):
    _, grid = open_room
    p = np.array([4.0, 0.0, 0.3])
    delta = np.array([-0.2, 0.0, -0.2])
    q, collided = try_step(grid, p, p + delta, allow_sliding=False)
    assert collided
    assert np.linalg.norm(q - p) < np.linalg.norm(delta) - 0.05
    assert np.allclose((q - p)[[0, 2]] / np.linalg.norm(q - p), delta[[0, 2]] / np.linalg.norm(delta))  # no sliding
    assert grid.is_navigable(q)


def test_random_walk_never_leaves_the_navigable_area(house_grid):
    rng = np.random.default_rng(3)
    p = house_grid.sample_navigable_point(rng)
    heading = 0.0
    for _ in range(1500):
        if rng.random() < 0.3:
            heading += rng.choice([-1, 1]) * math.radians(15)
        q, _ = try_step(house_grid, p, p + 0.25 * np.array([-math.sin(heading), 0, -math.cos(heading)]))
        assert house_grid.is_navigable(q)
        p = q


def test_snap_point_finds_the_nearest_navigable_cell(open_room):
    _, grid = open_room
    snapped = grid.snap_point([-1.0, 0.0, 4.0])
    assert grid.is_navigable(snapped)
    assert snapped[0] == pytest.approx(0.1 + 0.025 + 0.025, abs=0.06)
    assert snapped[2] == pytest.approx(4.0, abs=0.05)


def test_sampling_uses_the_generator_and_the_largest_island(house_grid):
    a = house_grid.sample_navigable_point(np.random.default_rng(9))
    b = house_grid.sample_navigable_point(np.random.default_rng(9))
    assert np.array_equal(a, b)
    assert house_grid.island_of(a) == house_grid.largest_island


def test_table_tops_and_thin_legs_block_but_open_floor_does_not():
    table = [part(shapes.box((4.0, 0.725, 4.0), (1.2, 0.05, 0.8)), "table", 30)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            table.append(part(shapes.box((4.0 + sx * 0.55, 0.35, 4.0 + sz * 0.35), (0.04, 0.7, 0.04)), "table", 30))
    grid = build_navgrid(box_room(8.0, 8.0, extra=table))
    assert not grid.is_navigable([4.0, 0, 4.0])  # under the table top: no headroom
    assert grid.is_navigable([2.0, 0, 4.0])


def test_zero_thickness_wall_planes_still_block():
    quad = (np.array([[4, 0, 0], [4, 2.6, 0], [4, 2.6, 8], [4, 0, 8]], float), np.array([[0, 1, 2], [0, 2, 3]]))
    grid = build_navgrid(box_room(8.0, 8.0, extra=[part(quad, "wall", 40)]))
    assert grid.num_islands == 2


def test_mesh_without_a_floor_is_rejected():
    walls_only = scene_from_parts([part(shapes.box((0, 1.3, 0), (0.1, 2.6, 4)), "wall", 1)])
    with pytest.raises(SceneError, match="no floor"):
        build_navgrid(walls_only)


def test_invalid_navigation_settings_are_config_errors():
    with pytest.raises(ConfigError, match="cell_size_m"):
        NavMeshSettings(cell_size_m=0.0).validate()
    with pytest.raises(ConfigError, match="agent_radius_m"):
        NavMeshSettings(agent_radius_m=-1).validate()


def test_nav_grid_cache_round_trips_and_rebuilds_a_corrupt_entry(open_room, tmp_path):
    scene, grid = open_room
    settings = NavMeshSettings()
    first = load_or_build_navgrid(scene, settings, tmp_path)
    files = list((tmp_path / "navgrid").glob("*.npz"))
    assert len(files) == 1
    again = load_or_build_navgrid(scene, settings, tmp_path)
    assert np.array_equal(again.navigable, grid.navigable) and np.array_equal(first.floor_y, again.floor_y, equal_nan=True)
    files[0].write_bytes(b"not an npz")
    rebuilt = load_or_build_navgrid(scene, settings, tmp_path)
    assert np.array_equal(rebuilt.navigable, grid.navigable)
    assert isinstance(NavGrid.load(files[0]), NavGrid)  # the rebuilt entry replaced the corrupt one


def test_house_doorways_are_passable(house, house_grid):
    doors = [o for o in house.objects if o.category == "door"]
    assert doors
    for d in doors:
        assert house_grid.is_navigable(house_grid.snap_point(d.center_m))
        nearest = house_grid.snap_point(d.center_m)
        assert np.linalg.norm((nearest - np.array(d.center_m))[[0, 2]]) < 0.1


def _follow(sim, start, heading, goal, hold):
    from sim.actions import Action
    from sim.geometry import heading_from_quat, quat_from_heading, wrap_angle
    from sim.navigation.follower import ShortestPathFollower

    sim.set_agent_state(np.asarray(start, float), quat_from_heading(heading))
    follower = ShortestPathFollower(sim, 0.5, 15.0, hold_angle_deg=hold)
    actions, errors, prev = [], [], None
    for _ in range(300):
        a = follower.get_next_action(goal, prev)
        s = sim.get_agent_state()
        d = np.asarray(goal) - s.position  # open room: the waypoint is the goal itself
        errors.append(abs(math.degrees(wrap_angle(math.atan2(-d[0], -d[2]) - heading_from_quat(s.rotation)))))
        actions.append(int(a))
        if a == Action.STOP:
            return actions, errors, sim.get_agent_state().position
        sim.step(a)
        prev = int(a)
    raise AssertionError("the follower never stopped")


def test_follower_hold_tolerance_removes_the_zigzag_on_stretches_off_its_headings(open_room):
    from conftest import make_sim

    scene, _ = open_room
    goal = np.array([7.0, 0.0, 1.5])
    with make_sim(scene, sensors={}) as sim:
        # the line from start to goal (bearing 53.1 degrees off the grid) is no multiple of 15 degrees
        plain, plain_err, plain_end = _follow(sim, [1.0, 0.0, 6.0], 0.0, goal, None)
        held, held_err, held_end = _follow(sim, [1.0, 0.0, 6.0], 0.0, goal, 11.25)
    for end in (plain_end, held_end):
        assert np.linalg.norm((end - goal)[[0, 2]]) < 0.5

    def zigzags(acts):  # a single turn between forward steps, undone by the next single turn
        return sum(1 for i in range(len(acts) - 4) if acts[i:i + 5] in ([1, 2, 1, 3, 1], [1, 3, 1, 2, 1]))

    assert zigzags(plain) >= 3 and zigzags(held) == 0
    assert held.count(1) == pytest.approx(plain.count(1), abs=1)  # the same walk, fewer turns
    assert held.count(2) + held.count(3) < plain.count(2) + plain.count(3)
    for k, a in enumerate(held):
        if a == 1:  # forward only within half a turn, or within the hold angle right after a forward step
            limit = 11.25 if k > 0 and held[k - 1] == 1 else 7.5
            assert held_err[k] <= limit + 1e-6
        elif a in (2, 3):
            assert held_err[k] > (11.25 if k > 0 and held[k - 1] == 1 else 7.5)
    assert max(e for a, e in zip(plain, plain_err) if a == 1) <= 7.5 + 1e-6
