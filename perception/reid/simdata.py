"""Simulated re-ID data: people rendered in embedded houses, written in the Market-1501 layout.

An identity is a body (height, build, skin) and an outfit (shirt colour and pattern, trousers,
shoes, hair) with an optional accessory (backpack, cap, shoulder bag). A "camera" is a fixed view
in a house (position 1.3-2.6 m up, its own lighting gain and colour cast); each identity walks past
a few cameras and is shot there several times at different spots, headings (front, side, back)
and distances. Furniture in front of the person occludes it, because the person, rendered on its
own, is composited into the house image by depth (the shading uses a fixed key light, so this
equals rendering them together). The crop is a portrait camera aimed at the person with a jittered
box, like a detector's.

Files: ``{pid:04d}_c{cam}s1_{frame:06d}_{shot:02d}.jpg`` in ``bounding_box_train`` (training
identities), ``query`` (one image per test identity and camera, two cameras per identity) and
``bounding_box_test`` (the rest of the test images). ``teacher/{image stem}.npz`` holds each
image's exact GASM teacher maps (person mask and 13 joints; ``read_teacher_maps``), outside the
Market-1501 folders so that the layout's readers are unaffected.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sim.navigation.navgrid import build_navgrid
from sim.scenes import shapes
from sim.scenes.generator import HouseConfig, generate_house
from sim.scenes.scene import Scene, scene_from_parts
from sim.sensors.camera import PinholeCamera
from sim.sensors.raycast import RayCaster
from sim.sensors.shading import SceneTables
from vlnce.errors import ConfigError

SKINS = [(240, 200, 170), (220, 175, 140), (200, 150, 110), (150, 100, 70), (95, 65, 45)]
HAIR = [(20, 15, 10), (70, 45, 25), (150, 110, 60), (200, 180, 120), (120, 120, 120)]
CLOTH = [(200, 40, 40), (40, 70, 170), (40, 130, 60), (230, 200, 60), (240, 240, 240), (30, 30, 30),
         (130, 60, 150), (240, 130, 40), (120, 80, 50), (90, 160, 200), (200, 120, 150), (100, 100, 110)]
PATTERNS = ["flat", "stripes_horizontal", "stripes_vertical", "dots"]
ACCESSORIES = ["none", "backpack", "cap", "bag"]
TEACHER_DIR = "teacher"


@dataclass(frozen=True)
class Identity:
    """What makes a person recognisable; colours are RGB 0-255."""

    pid: int
    height: float
    build: float
    skin: tuple
    hair: tuple
    shirt: tuple
    shirt_pattern: str
    trousers: tuple
    shoes: tuple
    accessory: str
    accessory_color: tuple


def _colour(rng, palette, jitter=20):
    base = np.asarray(palette[int(rng.integers(len(palette)))], float)
    return tuple(int(v) for v in np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255))


def sample_identity(pid: int, seed: int) -> Identity:
    rng = np.random.default_rng([seed, pid])
    return Identity(pid=pid, height=float(rng.uniform(1.5, 1.95)), build=float(rng.uniform(0.8, 1.2)),
                    skin=_colour(rng, SKINS, 8), hair=_colour(rng, HAIR, 10), shirt=_colour(rng, CLOTH),
                    shirt_pattern=PATTERNS[int(rng.integers(len(PATTERNS)))], trousers=_colour(rng, CLOTH),
                    shoes=_colour(rng, HAIR, 10), accessory=ACCESSORIES[int(rng.integers(len(ACCESSORIES)))],
                    accessory_color=_colour(rng, CLOTH))


def _body(who: Identity) -> tuple[float, ...]:
    """The proportions shared by the body's geometry and its joints, in metres: leg length, head
    radius, torso length, torso radius, arm axis offset from the centre line, arm bottom height,
    arm length, leg axis offset."""
    h, b = who.height, who.build
    leg, head_r = 0.47 * h, 0.065 * h
    torso = h - leg - 2 * head_r
    r = 0.16 * b
    return leg, head_r, torso, r, r + 0.045, leg + 0.05 * h, torso * 0.9, 0.08 * b


def person_parts(who: Identity) -> list[tuple]:
    """(geometry, colour, pattern) parts of a standing person facing +z, feet at the origin."""
    b = who.build
    leg, head_r, torso, r, arm_x, arm_y, arm_len, hip_x = _body(who)
    parts = [
        (shapes.cylinder((-hip_x, 0.06, 0), 0.065 * b, leg - 0.06, 8), who.trousers, "flat"),
        (shapes.cylinder((hip_x, 0.06, 0), 0.065 * b, leg - 0.06, 8), who.trousers, "flat"),
        (shapes.box((-hip_x, 0.03, 0.03), (0.11, 0.06, 0.24)), who.shoes, "flat"),
        (shapes.box((hip_x, 0.03, 0.03), (0.11, 0.06, 0.24)), who.shoes, "flat"),
        (shapes.cylinder((0, leg, 0), r, torso, 12), who.shirt, who.shirt_pattern),
        (shapes.cylinder((-arm_x, arm_y, 0), 0.045, arm_len, 6), who.shirt, "flat"),
        (shapes.cylinder((arm_x, arm_y, 0), 0.045, arm_len, 6), who.shirt, "flat"),
        (shapes.sphere((0, leg + torso + head_r, 0), head_r), who.skin, "flat"),
        (shapes.sphere((0, leg + torso + head_r * 1.25, -0.01), head_r * 0.95), who.hair, "flat"),
    ]
    top = leg + torso
    if who.accessory == "backpack":
        parts.append((shapes.box((0, top - 0.3 * torso, -r - 0.08), (0.3 * b, 0.45 * torso, 0.16)), who.accessory_color, "flat"))
    elif who.accessory == "cap":
        parts.append((shapes.cylinder((0, top + 1.6 * head_r, 0.02), head_r * 1.15, 0.06, 10), who.accessory_color, "flat"))
    elif who.accessory == "bag":
        parts.append((shapes.box((r + 0.12, leg - 0.05, 0), (0.08, 0.3, 0.3)), who.accessory_color, "flat"))
    return parts


def person_joints(who: Identity) -> np.ndarray:
    """(13, 3) joint positions of ``person_parts``' body in the same frame (facing +z, so the
    person's left is +x), in GASM's order (``gasm.JOINTS``): head, shoulders, elbows, wrists, hips,
    knees, ankles, left before right."""
    leg, head_r, torso, _, arm_x, arm_y, arm_len, hip_x = _body(who)
    pts = [(0.0, leg + torso + head_r, 0.0)]
    for y, x in ((arm_y + arm_len, arm_x), (arm_y + 0.5 * arm_len, arm_x), (arm_y, arm_x),
                 (leg, hip_x), (0.5 * leg, hip_x), (0.06, hip_x)):
        pts += [(x, y, 0.0), (-x, y, 0.0)]
    return np.asarray(pts)


def person_scene(who: Identity, x: float, z: float, yaw: float) -> Scene:
    """The person alone, standing at (x, 0, z), turned ``yaw`` radians about y."""
    parts = []
    for geom, colour, pattern in person_parts(who):
        verts = shapes.transform(geom[0], yaw, (x, 0.0, z))
        parts.append({"vertices": verts, "faces": geom[1], "category": "person", "instance": 1,
                      "color": colour, "pattern": pattern})
    return scene_from_parts(parts)


def look_at(eye, target) -> np.ndarray:
    """Camera-to-world rotation of a camera at ``eye`` looking at ``target`` (x right, y up, -z forward)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=1)


@dataclass
class ReidDataConfig:
    """Sizes and variation of ``make_reid_dataset``; identities are split half train, half test."""

    identities: int = 200
    cameras: int = 6
    cameras_per_identity: int = 3
    shots_per_camera: int = 4
    height_px: int = 128
    width_px: int = 64
    first_house: int = 70000
    seed: int = 0

    def validate(self) -> None:
        if self.identities < 4 or self.identities % 2:
            raise ConfigError(f"identities must be an even number >= 4, got {self.identities}")
        if not 2 <= self.cameras_per_identity <= self.cameras:
            raise ConfigError(f"cameras_per_identity must be in 2..cameras ({self.cameras}), got {self.cameras_per_identity}")
        if self.shots_per_camera < 1 or self.height_px < 16 or self.width_px < 8:
            raise ConfigError("shots_per_camera must be >= 1 and images at least 16 x 8 pixels")


class _CameraView:
    """One fixed camera in a house: where people stand, where the lens is, its light."""

    def __init__(self, cam: int, cfg: ReidDataConfig, rng: np.random.Generator) -> None:
        self.scene = generate_house(cfg.first_house + cam, HouseConfig(people_min=0, people_max=0))
        self.caster = RayCaster(self.scene.triangles())
        self.tables = SceneTables(self.scene)
        grid = build_navgrid(self.scene, caster=self.caster)
        self.gain = float(rng.uniform(0.6, 1.25))
        self.cast = rng.uniform(0.88, 1.12, 3)
        for _ in range(500):
            spot = grid.sample_navigable_point(rng)
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(2.0, 4.5)
            eye = spot + np.array([math.cos(angle) * dist, rng.uniform(1.3, 2.6), math.sin(angle) * dist])
            room = self.scene.room_at(spot[0], spot[2])
            if room is None or not room.contains(eye[0], eye[2]):
                continue
            if self._free_line(eye, spot + np.array([0.0, 1.6, 0.0])):
                self.spot, self.eye, self.grid = spot, eye, grid
                return
        raise ConfigError(f"house {cfg.first_house + cam}: found no camera position with a clear view")

    def _free_line(self, a, b) -> bool:
        d = np.asarray(b, float) - np.asarray(a, float)
        length = float(np.linalg.norm(d))
        t, prim = self.caster.cast(np.asarray([a], np.float32), np.asarray([d / length], np.float32))
        return prim[0] < 0 or t[0] >= length - 0.05

    def shoot(self, who: Identity, rng: np.random.Generator, size: tuple[int, int]) -> tuple | None:
        """Render ``who`` near this camera's spot: (rgb (H, W, 3) uint8, teacher) or None when the
        person is hidden or off the floor. ``teacher`` holds GASM's exact supervision: ``mask``
        (H, W) uint8, 1 where the person is visible, and ``joints`` (13, 3) float32 of (x, y)
        pixel coordinates (pixel i spans [i, i + 1)) and 1 where the joint is in the frame and not
        hidden by the house."""
        for _ in range(20):
            offset = rng.uniform(-0.8, 0.8, 2)
            x, z = self.spot[0] + offset[0], self.spot[2] + offset[1]
            if self.grid.is_navigable(np.array([x, self.spot[1], z])):
                break
        else:
            return None
        yaw = float(rng.uniform(0, 2 * np.pi))  # front, side and back views
        centre = np.array([x, who.height * rng.uniform(0.47, 0.53), z])
        centre[[0, 2]] += rng.uniform(-0.08, 0.08, 2)  # a detector's box is never centred exactly
        dist = float(np.linalg.norm(centre - self.eye))
        extent = who.height * rng.uniform(1.08, 1.3)
        h, w = size
        vfov = 2 * math.atan(extent / 2 / dist)
        hfov = 2 * math.atan(math.tan(vfov / 2) * w / h)
        camera = PinholeCamera(w, h, hfov)
        rot = look_at(self.eye, centre)
        house = camera.render(self.caster, self.tables, self.eye, rot, ("rgb", "depth"))
        person = person_scene(who, x, z, yaw)
        caster = RayCaster(person.triangles())
        mine = camera.render(caster, SceneTables(person), self.eye, rot, ("rgb", "depth", "instance"))
        visible = (mine["instance"] > 0) & ((house["depth"] == 0) | (mine["depth"] < house["depth"]))
        if visible.sum() < 0.15 * (mine["instance"] > 0).sum() or not visible.any():
            return None  # mostly occluded: a detector would not have fired
        rgb = np.where(visible[..., None], mine["rgb"], house["rgb"]).astype(np.float32)
        rgb *= self.gain * rng.uniform(0.9, 1.1) * self.cast
        rgb = np.clip(rgb + rng.normal(0, 3.0, rgb.shape), 0, 255).astype(np.uint8)
        # joints into the camera frame (x right, y up, looking down -z), then onto the image
        cam = (shapes.transform(person_joints(who), yaw, (x, 0.0, z)) - self.eye) @ rot
        ahead = -cam[:, 2]
        px = w / 2 + camera.focal_px * cam[:, 0] / np.maximum(ahead, 1e-6)
        py = h / 2 - camera.focal_px * cam[:, 1] / np.maximum(ahead, 1e-6)
        seen = (ahead > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        col, row = np.clip(px.astype(int), 0, w - 1), np.clip(py.astype(int), 0, h - 1)
        wall = house["depth"][row, col]
        seen &= (wall == 0) | (wall > ahead - 0.05)
        joints = np.stack([px, py, seen], 1).astype(np.float32)
        return rgb, {"mask": visible.astype(np.uint8), "joints": joints}


def make_reid_dataset(out, cfg: ReidDataConfig | None = None, progress=None) -> dict:
    """Render the dataset to ``out`` (Market-1501 layout) and return a summary (also dataset.json)."""
    from PIL import Image

    cfg = cfg or ReidDataConfig()
    cfg.validate()
    out = Path(out)
    folders = {name: out / name for name in ("bounding_box_train", "query", "bounding_box_test")}
    teacher_dir = out / TEACHER_DIR
    for folder in (*folders.values(), teacher_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    views = [_CameraView(c, cfg, rng) for c in range(cfg.cameras)]
    n_train = cfg.identities // 2
    counts = {name: 0 for name in folders}
    frame = 0
    people = [sample_identity(pid, cfg.seed) for pid in range(1, cfg.identities + 1)]
    for who in people:
        pid = who.pid
        cams = sorted(rng.choice(cfg.cameras, cfg.cameras_per_identity, replace=False).tolist())
        query_cams = set(rng.choice(cams, 2, replace=False).tolist()) if pid > n_train else set()
        for cam in cams:
            shots = [views[cam].shoot(who, rng, (cfg.height_px, cfg.width_px)) for _ in range(cfg.shots_per_camera)]
            shots = [s for s in shots if s is not None]
            for i, (img, teacher) in enumerate(shots):
                frame += 1
                if pid <= n_train:
                    split = "bounding_box_train"
                else:
                    split = "query" if (cam in query_cams and i == 0) else "bounding_box_test"
                name = f"{pid:04d}_c{cam + 1}s1_{frame:06d}_{i:02d}.jpg"
                Image.fromarray(img).save(folders[split] / name, quality=92)
                np.savez_compressed(teacher_dir / f"{name[:-4]}.npz", **teacher)
                counts[split] += 1
        if progress is not None:
            progress(pid, cfg.identities)
    summary = {"config": asdict(cfg), "images": counts, "train_ids": n_train, "test_ids": cfg.identities - n_train,
               "identities": [asdict(who) for who in people]}
    (out / "dataset.json").write_text(json.dumps(summary, indent=1))
    return summary


def joint_heatmaps(joints: np.ndarray, size: tuple[int, int], scale: tuple[float, float] = (1.0, 1.0),
                   sigma: float = 0.03) -> np.ndarray:
    """(13, 3) joints (x px, y px, visible) -> (13, H, W) float32 Gaussian heatmaps with peak 1,
    zero for hidden joints. ``scale`` maps stored pixel coordinates to ``size`` (y, x factors);
    ``sigma`` is a fraction of the output height."""
    h, w = size
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    px, py = joints[:, 0] * scale[1], joints[:, 1] * scale[0]
    s2 = 2 * (sigma * h) ** 2
    gx = np.exp(-((xs[None] - px[:, None]) ** 2) / s2)
    gy = np.exp(-((ys[None] - py[:, None]) ** 2) / s2)
    return (gy[:, :, None] * gx[:, None, :] * (joints[:, 2] > 0)[:, None, None]).astype(np.float32)


def read_teacher_maps(root, names: list[str], size: tuple[int, int]) -> np.ndarray:
    """GASM teacher maps of the images ``names`` (file names) of a ``make_reid_dataset`` folder:
    (N, 14, H, W) uint8 at ``size`` = (H, W), the person mask then the 13 joint heatmaps, scaled to
    0-255 so that they travel through the image augmentations as extra channels.

    Raises:
        ConfigError: the folder has no teacher maps, or one is missing or unreadable.
    """
    import torch
    import torch.nn.functional as F

    folder = Path(root) / TEACHER_DIR
    if not folder.is_dir():
        raise ConfigError(f"{root} has no {TEACHER_DIR}/ folder of GASM teacher maps (datasets from "
                          "`vlnce reid make-data` have one); train without them or regenerate the data")
    out = np.zeros((len(names), 14, *size), np.uint8)
    for i, name in enumerate(names):
        path = folder / f"{Path(name).stem}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                mask, joints = z["mask"], z["joints"]
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable teacher map ({exc}); expected an npz with 'mask' (H, W) "
                              "and 'joints' (13, 3)") from None
        if mask.ndim != 2 or joints.shape != (13, 3):
            raise ConfigError(f"{path}: mask {mask.shape} / joints {joints.shape}; expected (H, W) and (13, 3)")
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        out[i, 0] = (F.interpolate(m, size=size, mode="area")[0, 0].numpy() * 255).round().astype(np.uint8)
        scale = (size[0] / mask.shape[0], size[1] / mask.shape[1])
        out[i, 1:] = (joint_heatmaps(joints, size, scale) * 255).round().astype(np.uint8)
    return out
