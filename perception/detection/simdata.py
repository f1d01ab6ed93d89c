"""A two-domain detection set rendered by the embedded simulator (``vlnce detect make-data``).

Source domain: clear images of procedural houses from a robot's camera. Target domain: other
houses, seen through synthetic fog made from depth as Foggy Cityscapes was (Sakaridis et al.
2018: I = J t + A (1 - t), transmission t = exp(-beta d)), plus a lighting and colour shift
(dimmer, a colour cast, a gamma change, sensor noise). Boxes come from the instance masks: the
tight box of the visible pixels of each instance of a detection class, kept when at least
``min_pixels`` are visible.

Layout of ``out``::

    images/<split>/<n>.png     split in source_train, target_train, source_test, target_test
    <split>.json               COCO annotations (categories 1..K in ``classes`` order)
    detection.json             the generator's settings, classes and houses per split

``target_train`` carries labels so that the train-on-target oracle can be trained; adaptation
methods read its images only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vlnce.errors import ConfigError
from vlnce.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

CLASSES = ("person", "chair", "table", "sofa", "bed", "toilet", "tv_monitor", "plant")
SPLITS = ("source_train", "target_train", "source_test", "target_test")


@dataclass
class FogConfig:
    """Target-domain appearance (per image, each value drawn uniformly from its range).

    Attributes:
        beta: fog attenuation per metre (visibility 3 / beta: 9-20 m, dense for indoor distances).
        airlight: brightness of the fog's light in [0, 1]. tint: its blue shift.
        gain: overall light level. cast: per-channel gain spread (a colour cast). gamma: tone curve.
        noise: Gaussian sensor noise, in 8-bit levels.
        far_m: depth given to pixels where nothing was hit.
    """

    beta: tuple[float, float] = (0.15, 0.35)
    airlight: tuple[float, float] = (0.7, 0.9)
    tint: tuple[float, float] = (0.0, 0.06)
    gain: tuple[float, float] = (0.55, 0.85)
    cast: float = 0.12
    gamma: tuple[float, float] = (0.8, 1.25)
    noise: float = 3.0
    far_m: float = 20.0


def synthesize_fog(rgb: np.ndarray, depth_m: np.ndarray, beta: float, airlight) -> np.ndarray:
    """Koschmieder's model: J t + A (1 - t) with t = exp(-beta * depth).

    Args:
        rgb: (H, W, 3) uint8 clear image J. depth_m: (H, W) metres along the optical axis.
        beta: attenuation per metre (>= 0). airlight: A, a scalar or (3,) in [0, 1].

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != depth_m.shape:
        raise ValueError(f"rgb (H, W, 3) and depth (H, W) must agree, got {rgb.shape} and {depth_m.shape}")
    if beta < 0:
        raise ValueError(f"fog beta must be >= 0, got {beta}")
    t = np.exp(-beta * np.asarray(depth_m, np.float32))[..., None]
    a = np.broadcast_to(np.asarray(airlight, np.float32), (3,))
    return (rgb.astype(np.float32) / 255.0) * t + a * (1.0 - t)


def target_appearance(rgb: np.ndarray, depth_m: np.ndarray, cfg: FogConfig, rng: np.random.Generator) -> np.ndarray:
    """The target domain's look of one clear frame: fog, then light, colour cast, gamma, noise -> uint8."""
    depth = np.where(depth_m > 0, depth_m, cfg.far_m)
    a = rng.uniform(*cfg.airlight)
    tint = rng.uniform(*cfg.tint)
    img = synthesize_fog(rgb, depth, rng.uniform(*cfg.beta), np.array([a - tint, a, a + tint]).clip(0, 1))
    img = img * rng.uniform(*cfg.gain) * (1.0 + rng.uniform(-cfg.cast, cfg.cast, size=3))
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(*cfg.gamma) * 255.0
    img = img + rng.normal(0.0, cfg.noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def boxes_from_instances(semantic: np.ndarray, instance: np.ndarray, classes: tuple[str, ...],
                         min_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Tight (x0, y0, x1, y1) boxes (x1, y1 exclusive) of the visible pixels of each instance whose
    semantic category is a detection class, and their labels (1..K). Instance 0 is "none"."""
    from sim.scenes.semantics import CATEGORY_INDEX

    label_of = {CATEGORY_INDEX[name]: k + 1 for k, name in enumerate(classes)}
    boxes, labels = [], []
    ids, counts = np.unique(instance[instance > 0], return_counts=True)
    for inst, n in zip(ids.tolist(), counts.tolist()):
        if n < min_pixels:
            continue
        mask = instance == inst
        cats, cat_counts = np.unique(semantic[mask], return_counts=True)
        cat = int(cats[np.argmax(cat_counts)])
        if cat not in label_of:
            continue
        ys, xs = np.nonzero(mask)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        labels.append(label_of[cat])
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


@dataclass
class DetectionDataConfig:
    """What ``vlnce detect make-data`` renders.

    Attributes:
        houses: procedural houses per split (each split has its own houses).
        images_per_house: frames kept per house (frames without an object are redrawn).
        width, height, hfov_deg, camera_height_m: the camera (a robot's head camera).
        min_pixels: smallest visible instance that gets a box.
        first_house: seed of the first house (away from the VLN and LiDAR houses).
        fog: the target domain's appearance.
    """

    houses: dict = field(default_factory=lambda: {"source_train": 40, "target_train": 40, "source_test": 8,
                                                  "target_test": 12})
    images_per_house: int = 25
    width: int = 320
    height: int = 240
    hfov_deg: float = 90.0
    camera_height_m: float = 1.25
    min_pixels: int = 120
    classes: tuple[str, ...] = CLASSES
    first_house: int = 70000
    fog: FogConfig = field(default_factory=FogConfig)
    seed: int = 0

    def validate(self) -> "DetectionDataConfig":
        from sim.scenes.semantics import CATEGORY_INDEX

        unknown = [s for s in self.houses if s not in SPLITS]
        if unknown:
            raise ConfigError(f"unknown splits {unknown}; expected {SPLITS}")
        if any(int(v) < 0 for v in self.houses.values()) or self.images_per_house < 1:
            raise ConfigError("house counts must be >= 0 and images_per_house >= 1")
        bad = [c for c in self.classes if c not in CATEGORY_INDEX]
        if bad:
            raise ConfigError(f"classes {bad} are not simulator categories")
        if self.width < 32 or self.height < 32:
            raise ConfigError(f"image size must be at least 32 x 32, got {self.width} x {self.height}")
        return self


def _coco(classes, images, annotations) -> dict:
    return {"info": {"description": "vlnce embedded two-domain detection set"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "object"} for k, n in enumerate(classes)]}


def make_detection_dataset(out: str | Path, cfg: DetectionDataConfig | None = None, progress: bool = True) -> dict:
    """Render the set into ``out`` and return a summary. A split whose json exists is kept, so an
    interrupted run resumes at the first unfinished split."""
    from tqdm import tqdm

    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import CameraSensorConfig, SimulatorConfig
    from sim.geometry import quat_from_heading
    from vlnce.fileio import save_png

    cfg = (cfg or DetectionDataConfig()).validate()
    out = Path(out)
    total = sum(cfg.houses.values()) * cfg.images_per_house
    bar = tqdm(total=total, desc="detection images", unit="img", disable=not progress)
    cam = dict(width_px=cfg.width, height_px=cfg.height, hfov_deg=cfg.hfov_deg,
               position_m=[0.0, cfg.camera_height_m, 0.0])
    sensors = {"rgb": CameraSensorConfig(type="rgb", **cam),
               "depth": CameraSensorConfig(type="depth", normalize_depth=False, max_depth_m=cfg.fog.far_m, **cam),
               "semantic": CameraSensorConfig(type="semantic", **cam),
               "instance": CameraSensorConfig(type="instance", **cam)}
    house = cfg.first_house
    houses_of, counts = {}, {}
    for split in SPLITS:
        n_houses = int(cfg.houses.get(split, 0))
        houses_of[split] = list(range(house, house + n_houses))
        house += n_houses
        ann_file = out / f"{split}.json"
        if ann_file.is_file():
            counts[split] = len(json.loads(ann_file.read_text())["images"])
            bar.update(n_houses * cfg.images_per_house)
            continue
        target = split.startswith("target")
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
        images, annotations = [], []
        for h in houses_of[split]:
            sim = EmbeddedSimulator(SimulatorConfig(scene=f"house:{h}", sensors=sensors, seed=h))
            kept, tries = 0, 0
            while kept < cfg.images_per_house and tries < 20 * cfg.images_per_house:
                tries += 1
                pos = sim.navgrid.sample_navigable_point(rng)
                obs = sim.get_observations_at(pos, quat_from_heading(float(rng.uniform(-math.pi, math.pi))))
                boxes, labels = boxes_from_instances(obs["semantic"], obs["instance"], cfg.classes, cfg.min_pixels)
                if not len(boxes):
                    continue
                rgb = target_appearance(obs["rgb"], obs["depth"][..., 0], cfg.fog, rng) if target else obs["rgb"]
                image_id = len(images) + 1
                name = f"images/{split}/{image_id:06d}.png"
                save_png(rgb, out / name)
                images.append({"id": image_id, "file_name": name, "height": cfg.height, "width": cfg.width,
                               "house": h})
                for b, lab in zip(boxes.tolist(), labels.tolist()):
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": lab,
                                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                        "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
                kept += 1
                bar.update(1)
            sim.close()
            bar.update(cfg.images_per_house - kept)
        atomic_write_bytes(out / f"{split}.json", json.dumps(_coco(cfg.classes, images, annotations)).encode())
        counts[split] = len(images)
    bar.close()
    desc = {"name": "embedded-two-domain-detection", "classes": list(cfg.classes), "houses": houses_of,
            "images": counts, "generator": asdict(cfg)}
    atomic_write_bytes(out / "detection.json", json.dumps(desc, indent=1).encode())
    return desc


__all__ = ["CLASSES", "DetectionDataConfig", "FogConfig", "SPLITS", "boxes_from_instances", "make_detection_dataset",
           "synthesize_fog", "target_appearance"]
