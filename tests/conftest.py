"""Shared fixtures. Tests never write to the user's cache: VLNCE_CACHE_DIR points at a temp dir."""

from __future__ import annotations

import os

import pytest

# before any ROS 2 process can start (in this process or a subprocess): DDS on loopback only
from ros_bridge.dds import loopback_environment

os.environ.update(loopback_environment({}))
os.environ.pop("ROS_LOCALHOST_ONLY", None)

from sim.scenes.scene import scene_from_parts
from sim.scenes import shapes



@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    old = os.environ.get("VLNCE_CACHE_DIR")
    os.environ["VLNCE_CACHE_DIR"] = str(tmp_path_factory.mktemp("vlnce_cache"))
    yield
    if old is None:
        os.environ.pop("VLNCE_CACHE_DIR", None)
    else:
        os.environ["VLNCE_CACHE_DIR"] = old


TINY_BENCHMARK = dict(train_houses=1, val_unseen_houses=1, test_houses=1, train_episodes_per_house=6,
                      val_seen_episodes_per_house=2, heldout_episodes_per_house=24)


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """A tiny embedded benchmark (one house per split): (directory, summary)."""
    from sim.tasks.benchmark import BenchmarkConfig, build_benchmark

    out = tmp_path_factory.mktemp("bench")
    summary = build_benchmark(out, BenchmarkConfig(**TINY_BENCHMARK), workers=1, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def house():
    from sim.scenes.generator import generate_house

    return generate_house(7)


@pytest.fixture(scope="session")
def house_grid(house):
    from sim.navigation.navgrid import build_navgrid

    return build_navgrid(house)


def part(geom, category, instance, color=(200, 200, 200), pattern="flat"):
    return {"vertices": geom[0], "faces": geom[1], "category": category, "instance": instance, "color": color,
            "pattern": pattern}


def box_room(size_x=6.0, size_z=6.0, height=2.6, wall=0.1, extra=()):
    """A closed room: floor top at y=0 spanning [0, size_x] x [0, size_z], walls, ceiling."""
    parts = [
        part(shapes.box((size_x / 2, -0.05, size_z / 2), (size_x, 0.1, size_z)), "floor", 1),
        part(shapes.box((size_x / 2, height + 0.05, size_z / 2), (size_x, 0.1, size_z)), "ceiling", 2),
        part(shapes.box((-wall / 2, height / 2, size_z / 2), (wall, height, size_z + 2 * wall)), "wall", 3),
        part(shapes.box((size_x + wall / 2, height / 2, size_z / 2), (wall, height, size_z + 2 * wall)), "wall", 4),
        part(shapes.box((size_x / 2, height / 2, -wall / 2), (size_x + 2 * wall, height, wall)), "wall", 5),
        part(shapes.box((size_x / 2, height / 2, size_z + wall / 2), (size_x + 2 * wall, height, wall)), "wall", 6),
    ]
    return scene_from_parts(parts + list(extra))


@pytest.fixture
def room_scene():
    return box_room()


def make_sim(scene, **overrides):
    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import load_simulator_config

    return EmbeddedSimulator(load_simulator_config(overrides=overrides), scene=scene)
