import io
import json

import numpy as np
import pytest
import trimesh

from sim.scenes.generator import HouseConfig, generate_house
from sim.scenes.scene import PATTERNS, load_scene, load_scene_bytes
from sim.scenes.semantics import CATEGORIES, CATEGORY_INDEX, PERSON, ROOM_TYPES, UNLABELED
from vlnce.errors import ConfigError, SceneError


def _face_rows(scene):
    """Faces as sortable rows (centroid, labels) so that face order does not matter."""
    c = np.round(scene.triangles().mean(1), 4)
    return sorted(map(tuple, np.column_stack([c, scene.face_semantic, scene.face_instance, scene.face_color,
                                              scene.face_pattern]).tolist()))


def test_same_seed_builds_identical_house_bytes():
    assert generate_house(11).to_glb_bytes() == generate_house(11).to_glb_bytes()


def test_different_seeds_build_different_houses():
    assert generate_house(1).to_glb_bytes() != generate_house(2).to_glb_bytes()


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_house_has_3_to_9_named_rooms_of_known_types(seed):
    scene = generate_house(seed)
    assert 3 <= len(scene.rooms) <= 9
    assert all(r.room_type in ROOM_TYPES for r in scene.rooms)
    names = [r.name for r in scene.rooms]
    assert len(set(names)) == len(names)
    # rooms tile the footprint without overlapping
    for a in scene.rooms:
        for b in scene.rooms:
            if a.room_id < b.room_id:
                ax0, az0, ax1, az1 = a.bounds_m
                bx0, bz0, bx1, bz1 = b.bounds_m
                assert min(ax1, bx1) - max(ax0, bx0) <= 1e-9 or min(az1, bz1) - max(az0, bz0) <= 1e-9


def test_small_houses_exist_for_the_low_end_of_the_room_range():
    counts = {len(generate_house(s, HouseConfig(min_rooms=3, max_rooms=4)).rooms) for s in range(6)}
    assert counts <= {3, 4} and counts


def test_furniture_follows_room_type(house):
    by_room = {}
    for o in house.objects:
        by_room.setdefault(o.room_id, set()).add(o.category)
    required = {"bedroom": "bed", "bathroom": "toilet", "kitchen": "counter", "living room": "sofa"}
    for room in house.rooms:
        if room.room_type in required:
            assert required[room.room_type] in by_room.get(room.room_id, set()), room.name


def test_every_room_is_reachable_through_doors(house, house_grid):
    island = house_grid.largest_island
    for room in house.rooms:
        x0, z0, x1, z1 = room.bounds_m
        xs, zs = np.meshgrid(np.arange(x0 + 0.05, x1, 0.1), np.arange(z0 + 0.05, z1, 0.1))
        i, k = house_grid.to_cell(np.stack([xs.ravel(), zs.ravel()], 1))
        assert (house_grid.islands[i, k] == island).any(), f"{room.name} is not connected"


def test_faces_carry_mpcat40_labels_and_people_are_persons(house):
    assert house.face_semantic.min() >= 0 and house.face_semantic.max() < len(CATEGORIES)
    present = {CATEGORIES[s] for s in np.unique(house.face_semantic)}
    assert {"wall", "floor", "ceiling", "door"} <= present
    people = [o for o in house.objects if o.category == "person"]
    assert people
    for p in people:
        faces = house.face_instance == p.instance_id
        assert (house.face_semantic[faces] == PERSON).all()
        assert 1.5 <= p.size_m[1] <= 2.0  # standing adults


def test_objects_carry_surface_patterns(house):
    used = {PATTERNS[p] for p in np.unique(house.face_pattern)}
    assert len(used - {"flat"}) >= 4


def test_glb_round_trip_keeps_every_face_label(house, tmp_path):
    path = house.save(tmp_path / "h.glb")
    loaded = load_scene(path)
    assert loaded.num_faces == house.num_faces
    assert _face_rows(loaded) == _face_rows(house)
    assert loaded.rooms == house.rooms
    assert loaded.objects == house.objects
    assert loaded.metadata == house.metadata


def test_saved_glb_is_a_standard_gltf_readable_by_trimesh(house):
    tm = trimesh.load(io.BytesIO(house.to_glb_bytes()), file_type="glb")
    assert isinstance(tm, trimesh.Scene) and len(tm.geometry) > 10


def test_user_obj_and_ply_load_unlabeled_with_colours(tmp_path):
    box = trimesh.creation.box((2, 1, 3))
    box.visual.face_colors = [10, 200, 30, 255]
    for suffix in ("obj", "ply"):
        path = tmp_path / f"box.{suffix}"
        box.export(path)
        scene = load_scene(path)
        assert scene.num_faces == 12
        assert (scene.face_semantic == UNLABELED).all()
        assert np.allclose(scene.bounds[1] - scene.bounds[0], [2, 1, 3], atol=1e-5)
    ply = load_scene(tmp_path / "box.ply")
    assert (ply.face_color == [10, 200, 30]).all()


def test_ply_face_label_and_object_id_properties_are_read(tmp_path):
    box = trimesh.creation.box((1, 1, 1))
    box.face_attributes["label"] = np.full(12, CATEGORY_INDEX["chair"], np.int32)
    box.face_attributes["object_id"] = np.arange(12, dtype=np.int32)
    path = tmp_path / "labelled.ply"
    path.write_bytes(trimesh.exchange.ply.export_ply(box, include_attributes=True))
    scene = load_scene(path)
    assert (scene.face_semantic == CATEGORY_INDEX["chair"]).all()
    assert sorted(scene.face_instance.tolist()) == list(range(12))


def test_z_up_mesh_is_rotated_to_y_up(tmp_path):
    box = trimesh.creation.box((1, 2, 5))  # 5 m along z: "up" in a z-up file
    path = tmp_path / "tall.obj"
    box.export(path)
    scene = load_scene(path, up_axis="z")
    assert np.allclose(scene.bounds[1] - scene.bounds[0], [1, 5, 2], atol=1e-5)


def test_missing_scene_file_names_the_path(tmp_path):
    with pytest.raises(SceneError, match="not found"):
        load_scene(tmp_path / "nope.glb")


def test_malformed_glb_is_a_scene_error(tmp_path):
    path = tmp_path / "broken.glb"
    path.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(SceneError, match="broken.glb"):
        load_scene(path)


def test_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "scene.fbx"
    path.write_bytes(b"x")
    with pytest.raises(SceneError, match=r"\.glb"):
        load_scene(path)


def test_file_without_triangles_is_a_scene_error():
    points_only = trimesh.Scene(trimesh.PointCloud(np.random.default_rng(0).random((10, 3))))
    with pytest.raises(SceneError, match="no triangle"):
        load_scene_bytes(points_only.export(file_type="glb"))


def test_crash_during_save_leaves_no_file_behind(house, tmp_path, monkeypatch):
    target = tmp_path / "h.glb"

    def boom(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(type(house), "to_glb_bytes", boom)
    with pytest.raises(RuntimeError):
        house.save(target)
    assert list(tmp_path.iterdir()) == []


def test_invalid_generator_config_is_rejected():
    with pytest.raises(ConfigError, match="min_rooms"):
        generate_house(0, HouseConfig(min_rooms=2))
    with pytest.raises(ConfigError, match="seed"):
        generate_house(-1)


def test_scene_metadata_is_json(house):
    json.dumps(house.metadata)
    assert house.metadata["seed"] == 7
