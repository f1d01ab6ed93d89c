import math

import numpy as np
import pytest

from conftest import part
from sim.geometry import heading_matrix
from sim.scenes import shapes
from sim.scenes.scene import scene_from_parts
from sim.scenes.semantics import CATEGORY_INDEX, VOID
from sim.sensors.camera import PinholeCamera, finish_depth
from sim.sensors.lidar import SENSOR_TO_AGENT, SpinningLidar
from sim.sensors.raycast import RayCaster
from sim.sensors.shading import SceneTables
from vlnce.errors import ConfigError


def wall_scene(distance=3.0, pattern="flat"):
    """A 40 x 40 m wall whose front face is the plane z = -distance."""
    return scene_from_parts([part(shapes.box((0, 0, -distance - 0.05), (40, 40, 0.1)), "wall", 9, (180, 120, 60), pattern)])


def render(scene, position, rotation, w=64, h=48, hfov=math.pi / 2, modalities=("rgb", "depth", "semantic", "instance")):
    cam = PinholeCamera(w, h, hfov)
    caster = RayCaster(scene.triangles(), num_threads=1)
    try:
        return cam, cam.render(caster, SceneTables(scene), np.asarray(position, float), rotation, modalities)
    finally:
        caster.close()


def test_camera_facing_a_wall_sees_constant_planar_depth():
    _, out = render(wall_scene(3.0), [0, 0, 0], np.eye(3))
    assert out["depth"].shape == (48, 64)
    assert np.allclose(out["depth"], 3.0, atol=1e-4)  # planar z-depth, not ray length


def test_depth_of_a_turned_camera_matches_the_analytic_plane():
    heading = math.radians(30)
    rot = heading_matrix(heading)
    cam, out = render(wall_scene(3.0), [0.4, 0.2, 0.0], rot)
    d_world = cam.dirs_cam @ rot.T
    t = (3.0 + 0.0) / -d_world[:, 2]
    expected = (t * -cam.dirs_cam[:, 2]).reshape(48, 64)
    assert np.allclose(out["depth"], expected, rtol=1e-4)


def test_depth_clipping_and_normalisation_follow_habitat():
    depth = np.array([[0.0, 0.5, 3.0, 12.0]], np.float32)
    assert np.allclose(finish_depth(depth, 0.0, 10.0, True)[..., 0], [[0.0, 0.05, 0.3, 1.0]])
    assert np.allclose(finish_depth(depth, 1.0, 10.0, False)[..., 0], [[1.0, 1.0, 3.0, 10.0]])
    assert finish_depth(depth, 0.0, 10.0, True).shape == (1, 4, 1)


def test_semantic_and_instance_images_label_hit_faces_and_void_elsewhere():
    # looking along -z at a wall that fills only the left half of the view
    scene = scene_from_parts([part(shapes.box((-10.0, 0, -3.05), (20, 40, 0.1)), "door", 42)])
    _, out = render(scene, [0, 0, 0], np.eye(3))
    assert (out["semantic"][:, :30] == CATEGORY_INDEX["door"]).all()
    assert (out["instance"][:, :30] == 42).all()
    assert (out["semantic"][:, 34:] == VOID).all() and (out["instance"][:, 34:] == 0).all()
    assert (out["depth"][:, 34:] == 0).all()
    assert (out["rgb"][:, 34:] == 0).all()


def test_patterned_surfaces_vary_in_colour_and_flat_ones_do_not():
    _, flat = render(wall_scene(3.0, "flat"), [0, 0, 0], np.eye(3), 128, 128)
    _, tiles = render(wall_scene(3.0, "tiles"), [0, 0, 0], np.eye(3), 128, 128)
    assert len(np.unique(flat["rgb"].reshape(-1, 3), axis=0)) == 1
    colours = np.unique(tiles["rgb"].reshape(-1, 3), axis=0).astype(float)
    assert len(colours) == 2  # 0.3 m tiles alternate between the albedo and its darker shade
    dark, light = sorted(colours, key=lambda c: c.sum())
    assert np.allclose(dark, light * 0.65, atol=1.0)


@pytest.mark.parametrize("w,h,hfov", [(0, 10, 1.0), (10, -1, 1.0), (10, 10, 0.0), (10, 10, math.pi)])
def test_invalid_camera_intrinsics_are_config_errors(w, h, hfov):
    with pytest.raises(ConfigError):
        PinholeCamera(w, h, hfov)


def test_two_thread_cast_equals_one_thread_cast(house):
    rng = np.random.default_rng(0)
    origins = np.tile(np.array([[house.rooms[0].center[0], 1.2, house.rooms[0].center[1]]], np.float32), (20000, 1))
    dirs = rng.normal(size=(20000, 3)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    one, two = RayCaster(house.triangles(), 1), RayCaster(house.triangles(), 2)
    t1, p1 = one.cast(origins, dirs)
    t2, p2 = two.cast(origins, dirs)
    assert np.array_equal(p1, p2) and np.array_equal(t1[p1 >= 0], t2[p2 >= 0])


def _box_room_expected_ranges(lidar, origin, size=6.0, height=2.6):
    d = lidar.dirs_sensor @ SENSOR_TO_AGENT.T  # identity agent rotation: sensor -> world
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(d[:, 0] > 0, (size - origin[0]) / d[:, 0], (0 - origin[0]) / d[:, 0])
        ty = np.where(d[:, 1] > 0, (height - origin[1]) / d[:, 1], (0 - origin[1]) / d[:, 1])
        tz = np.where(d[:, 2] > 0, (size - origin[2]) / d[:, 2], (0 - origin[2]) / d[:, 2])
    t = np.stack([tx, ty, tz], 1)
    t[~np.isfinite(t) | (t <= 0)] = np.inf
    return t.min(1).reshape(lidar.beams, lidar.columns)


def test_lidar_inside_a_box_room_measures_analytic_ranges(room_scene):
    lidar = SpinningLidar(beams=16, columns=360, fov_up_deg=30, fov_down_deg=-30, max_range_m=30)
    origin = np.array([2.0, 1.0, 3.5])
    caster = RayCaster(room_scene.triangles(), 1)
    scan = lidar.scan(caster, SceneTables(room_scene), origin, np.eye(3))
    expected = _box_room_expected_ranges(lidar, origin)
    assert scan.valid.all()
    assert np.allclose(scan.range, expected, atol=2e-3)
    assert np.allclose(np.linalg.norm(scan.xyz, axis=-1), scan.range, atol=1e-4)
    # downward beams see the floor, upward beams the ceiling, near-horizontal beams the walls
    assert (scan.label[-1] == CATEGORY_INDEX["floor"]).mean() > 0.5
    assert (scan.label[0] == CATEGORY_INDEX["ceiling"]).mean() > 0.5
    assert ((scan.intensity >= 0) & (scan.intensity <= 1)).all()


def test_lidar_columns_and_rows_follow_the_semantickitti_projection(room_scene):
    lidar = SpinningLidar(beams=32, columns=512, fov_up_deg=15, fov_down_deg=-25)
    scan = lidar.scan(RayCaster(room_scene.triangles(), 1), SceneTables(room_scene), np.array([3.0, 1.0, 3.0]), np.eye(3))
    x, y, z = scan.xyz[..., 0], scan.xyz[..., 1], scan.xyz[..., 2]
    r = scan.range
    yaw = -np.arctan2(y, x)
    pitch = np.arcsin(z / r)
    fov_down, fov = math.radians(25), math.radians(40)
    col = np.floor(0.5 * (yaw / np.pi + 1.0) * 512).astype(int)
    row = np.floor((1.0 - (pitch + fov_down) / fov) * 32).astype(int)
    rows, cols = np.indices((32, 512))
    assert np.array_equal(col, cols) and np.array_equal(row, rows)


def test_lidar_sensor_frame_is_x_forward_y_left_z_up(room_scene):
    lidar = SpinningLidar(beams=8, columns=64, fov_up_deg=10, fov_down_deg=-10)
    # agent at heading 0 looks along world -z; the room's near wall that way is 2 m away, left (-x) 1 m
    scan = lidar.scan(RayCaster(room_scene.triangles(), 1), SceneTables(room_scene), np.array([1.0, 1.0, 2.0]), np.eye(3))
    fwd = scan.range[3:5, 31:33].mean()
    assert 1.9 < fwd < 2.2
    pts = scan.points()["xyz"]
    assert pts[:, 0].min() > -4.5 and pts[:, 1].max() < 1.05 + 1e-3  # nothing further left than the left wall


def test_lidar_noise_and_dropout_come_from_the_given_generator(room_scene):
    lidar = SpinningLidar(beams=16, columns=256, noise_std_m=0.02, dropout_prob=0.1)
    caster, tables = RayCaster(room_scene.triangles(), 1), SceneTables(room_scene)
    args = (caster, tables, np.array([3.0, 1.0, 3.0]), np.eye(3))
    a = lidar.scan(*args, rng=np.random.default_rng(5))
    b = lidar.scan(*args, rng=np.random.default_rng(5))
    clean = SpinningLidar(beams=16, columns=256).scan(*args)
    assert np.array_equal(a.range, b.range)
    assert 0.07 < 1 - a.valid.mean() < 0.13
    both = a.valid & clean.valid
    assert 0.015 < np.std(a.range[both] - clean.range[both]) < 0.025
    with pytest.raises(ValueError, match="Generator"):
        lidar.scan(*args)


def test_lidar_max_range_drops_far_returns(room_scene):
    lidar = SpinningLidar(beams=4, columns=64, max_range_m=3.05)
    scan = lidar.scan(RayCaster(room_scene.triangles(), 1), SceneTables(room_scene), np.array([3.0, 1.0, 3.0]), np.eye(3))
    assert scan.valid.any() and not scan.valid.all()
    assert scan.range[scan.valid].max() <= 3.05
    assert (scan.label[~scan.valid] == VOID).all()


@pytest.mark.parametrize("kwargs", [dict(beams=0), dict(columns=-5), dict(fov_up_deg=-30, fov_down_deg=-25),
                                    dict(max_range_m=0.0), dict(dropout_prob=1.0), dict(noise_std_m=-1)])
def test_invalid_lidar_configs_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SpinningLidar(**kwargs)
