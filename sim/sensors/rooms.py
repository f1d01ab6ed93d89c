"""Room-type ground truth: the room the agent stands in and the rooms its camera sees.

A privileged signal for training (as the geodesic distance is for the progress monitor): the
embedded houses know their rooms, so every frame can be labelled with the type of the room under
the agent and, for each cell of a coarse grid over the image, the type of the room the camera
looks into there. The second is what a policy needs to follow "turn left into the kitchen": the
room beyond a doorway, seen through it.

Room types are indices into ``sim.scenes.semantics.ROOM_TYPES``; -1 means none (outside every
room, nothing hit, or a scene without rooms).
"""

from __future__ import annotations

import math

import numpy as np

from sim.geometry import heading_matrix
from sim.scenes.semantics import ROOM_TYPES
from sim.sensors.camera import PinholeCamera

NO_ROOM = -1
VIEW_GRID = 4  # cells per side of the policies' visual grids (their CNNs end at 4 x 4)
VIEW_CELLS = VIEW_GRID * VIEW_GRID
# a hit is moved this far back along its ray before its room is looked up: a wall's face lies half
# a wall (5-10 cm) from the rooms' shared edge, and stepping back puts the point inside the room
# the ray crossed last, which is the room the camera sees there
_BACK_M = 0.3
_TYPE_INDEX = {name: i for i, name in enumerate(ROOM_TYPES)}


def room_type_at(scene, x: float, z: float) -> int:
    """Index of the type of the room containing (x, z), or -1."""
    room = scene.room_at(x, z)
    return _TYPE_INDEX.get(room.room_type, NO_ROOM) if room is not None else NO_ROOM


class RoomCamera:
    """A room-type image: pixel (r, c) is the type of the room a pinhole camera looks into there.

    The simulator's ``rooms`` sensor (embedded backend). At the policies' 4 x 4 grid its pixels are
    the cell labels of the training stores (``RoomLabeler``), since a grid x grid camera's pixel
    centres are the cell centres of any image of that camera.

    Args:
        width_px, height_px: the image size. hfov_deg: horizontal field of view.
        mount_m: (3,) the camera's place on the agent (x right, y up, z back), metres.
    """

    def __init__(self, width_px: int, height_px: int, hfov_deg: float = 90.0, mount_m=(0.0, 1.25, 0.0)) -> None:
        self.dirs_cam = PinholeCamera(width_px, height_px, math.radians(hfov_deg)).dirs_cam.astype(np.float64)
        self.mount = np.asarray(mount_m, np.float64)
        self.shape = (height_px, width_px)

    def render(self, scene, caster, position, heading_rad: float) -> np.ndarray:
        """(H, W) int32 room types (-1: none), rows from the top of the image."""
        position = np.asarray(position, np.float64)
        out = np.full(len(self.dirs_cam), NO_ROOM, np.int32)
        if scene.rooms:
            rot = heading_matrix(heading_rad)
            dirs = self.dirs_cam @ rot.T
            origin = position + rot @ self.mount
            t, prim = caster.cast(np.repeat(origin[None], len(dirs), 0).astype(np.float32), dirs.astype(np.float32))
            for k in np.flatnonzero(prim >= 0):
                p = origin + dirs[k] * max(float(t[k]) - _BACK_M, 0.0)
                out[k] = room_type_at(scene, p[0], p[2])
        return out.reshape(self.shape)


class RoomLabeler:
    """Labels frames of a camera with room types.

    Args:
        grid: cells per image side (the policies' visual grids are 4 x 4).
        hfov_deg: the camera's horizontal field of view (square images).
        camera_height_m: the camera's height above the agent's position.
    """

    def __init__(self, grid: int = VIEW_GRID, hfov_deg: float = 90.0, camera_height_m: float = 1.25) -> None:
        self.camera = RoomCamera(grid, grid, hfov_deg, (0.0, camera_height_m, 0.0))

    def __call__(self, scene, caster, position, heading_rad: float) -> tuple[int, np.ndarray]:
        """(type of the agent's room, (grid * grid,) int8 types seen at the cell centres, row-major
        from the top-left cell)."""
        here = room_type_at(scene, float(position[0]), float(position[2]))
        return here, self.camera.render(scene, caster, position, heading_rad).reshape(-1).astype(np.int8)


__all__ = ["NO_ROOM", "VIEW_CELLS", "VIEW_GRID", "RoomCamera", "RoomLabeler", "room_type_at"]
