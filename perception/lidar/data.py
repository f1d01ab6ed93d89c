"""Simulated LiDAR datasets in the SemanticKITTI layout, and a torch dataset over that layout.

``make_dataset`` scans procedural houses of the embedded simulator: one sequence per house,
``sequences/NN/velodyne/*.bin`` + ``labels/*.label`` (raw ids = the simulator's semantic
categories, instance ids in the upper 16 bits) + ``poses.txt`` (KITTI 3x4 sensor-to-world rows in
the REP-103 world of ``sim.geometry.HABITAT_TO_REP103``, the frame the ROS bridge publishes).
Houses are split into train / valid / test, so held-out houses are never seen in training.
``dataset.yaml`` describes the whole set: the indoor label map, the sensor, input statistics and
class frequencies of the training split.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from perception.lidar.labels import LabelConfig, SensorConfig, load_label_config
from perception.lidar.projection import project
from perception.lidar.semantickitti import pack_labels, read_labels, read_scan, scan_files, write_labels, write_scan
from vlnce.errors import ConfigError, DatasetError
from vlnce.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

DATASET_FILE = "dataset.yaml"


@dataclass
class MakeDataConfig:
    """What ``vlnce lidar make-data`` renders.

    Attributes:
        train_houses, valid_houses, test_houses: procedural houses per split (one sequence each).
        scans_per_house: scans from random navigable poses (random heading) in each house.
        first_house: seed of the first house; houses are consecutive seeds (the VLN benchmark
            uses small seeds, so the default keeps LiDAR houses apart from them).
        beams, columns, fov_up_deg, fov_down_deg, max_range_m: the spinning LiDAR (by default like
            an Ouster OS1-32 in 512-column mode, a common indoor-robot sensor).
        mount_height_m: sensor height above the floor.
        noise_std_m, dropout_prob: Gaussian range noise and random return loss.
        seed: poses, noise and dropout.
    """

    train_houses: int = 30
    valid_houses: int = 5
    test_houses: int = 5
    scans_per_house: int = 40
    first_house: int = 50000
    beams: int = 32
    columns: int = 512
    fov_up_deg: float = 22.5
    fov_down_deg: float = -22.5
    max_range_m: float = 30.0
    mount_height_m: float = 1.0
    noise_std_m: float = 0.01
    dropout_prob: float = 0.02
    seed: int = 0

    def validate(self) -> "MakeDataConfig":
        if min(self.train_houses, self.valid_houses, self.test_houses) < 0 or self.train_houses < 1:
            raise ConfigError("need train_houses >= 1 and valid/test houses >= 0")
        if self.scans_per_house < 1:
            raise ConfigError(f"scans_per_house must be >= 1, got {self.scans_per_house}")
        SensorConfig(self.fov_up_deg, self.fov_down_deg, self.beams, self.columns).validate("make-data sensor")
        return self


def make_dataset(out: str | Path, cfg: MakeDataConfig, progress: bool = True) -> dict:
    """Render the dataset into ``out`` and return a summary. Finished sequences are kept: a rerun
    with the same config skips sequences whose scans are all present.

    Raises:
        ConfigError: bad config.
    """
    from tqdm import tqdm

    from sim.backends.embedded import EmbeddedSimulator
    from sim.config import LidarConfig, SimulatorConfig

    cfg.validate()
    out = Path(out)
    labels = load_label_config("indoor")
    n_houses = cfg.train_houses + cfg.valid_houses + cfg.test_houses
    seqs = [f"{i:02d}" for i in range(n_houses)]
    split = {"train": seqs[:cfg.train_houses],
             "valid": seqs[cfg.train_houses:cfg.train_houses + cfg.valid_houses],
             "test": seqs[cfg.train_houses + cfg.valid_houses:]}
    rng = np.random.default_rng(cfg.seed)
    seq_seeds = rng.integers(0, 2**31 - 1, size=n_houses)
    bar = tqdm(total=n_houses * cfg.scans_per_house, desc="lidar scans", unit="scan", disable=not progress)
    for i, seq in enumerate(seqs):
        seq_dir = out / "sequences" / seq
        if (seq_dir / "poses.txt").is_file() and len(list((seq_dir / "velodyne").glob("*.bin"))) == cfg.scans_per_house:
            bar.update(cfg.scans_per_house)
            continue
        house = cfg.first_house + i
        sim_cfg = SimulatorConfig(scene=f"house:{house}", sensors={}, seed=int(seq_seeds[i]), lidar=LidarConfig(
            enabled=True, beams=cfg.beams, columns=cfg.columns, fov_up_deg=cfg.fov_up_deg,
            fov_down_deg=cfg.fov_down_deg, max_range_m=cfg.max_range_m, noise_std_m=cfg.noise_std_m,
            dropout_prob=cfg.dropout_prob, position_m=[0.0, cfg.mount_height_m, 0.0]))
        sim = EmbeddedSimulator(sim_cfg)
        srng = np.random.default_rng(int(seq_seeds[i]))
        poses = []
        for j in range(cfg.scans_per_house):
            pos = sim.navgrid.sample_navigable_point(srng)
            heading = float(srng.uniform(-math.pi, math.pi))
            scan = sim.get_lidar_scan(pos, heading)
            pts = scan.points()
            cloud = np.concatenate([pts["xyz"], pts["intensity"][:, None]], axis=1)
            write_scan(seq_dir / "velodyne" / f"{j:06d}.bin", cloud)
            write_labels(seq_dir / "labels" / f"{j:06d}.label", pack_labels(pts["label"], pts["instance"]))
            poses.append(_sensor_pose(pos, heading, cfg.mount_height_m))
            bar.update(1)
        atomic_write_bytes(seq_dir / "poses.txt", "".join(" ".join(f"{v:.6f}" for v in p.ravel()) + "\n"
                                                          for p in poses).encode())
    bar.close()
    sensor = SensorConfig(cfg.fov_up_deg, cfg.fov_down_deg, cfg.beams, cfg.columns)
    means, stds, content = input_statistics(out, split["train"], sensor)
    sensor.means, sensor.stds = means, stds
    labels.sensor, labels.content = sensor, content
    desc = labels.to_dict()
    desc["name"] = "embedded-indoor-lidar"
    desc["split"] = split
    desc["houses"] = {seq: cfg.first_house + i for i, seq in enumerate(seqs)}
    desc["generator"] = asdict(cfg)
    atomic_write_bytes(out / DATASET_FILE, yaml.safe_dump(desc, sort_keys=False).encode())
    return {"out": str(out), "sequences": split, "scans": n_houses * cfg.scans_per_house,
            "means": means, "stds": stds}


def _sensor_pose(position, heading: float, mount: float) -> np.ndarray:
    """3x4 sensor-to-world pose in the REP-103 world frame."""
    from sim.geometry import HABITAT_TO_REP103, heading_matrix
    from sim.sensors.lidar import SENSOR_TO_AGENT

    rot = heading_matrix(heading) @ SENSOR_TO_AGENT  # sensor axes in the Habitat world
    origin = np.asarray(position, np.float64) + np.array([0.0, mount, 0.0])
    return np.concatenate([HABITAT_TO_REP103 @ rot, (HABITAT_TO_REP103 @ origin)[:, None]], axis=1)


def input_statistics(root: Path, sequences: list[str], sensor: SensorConfig, max_scans: int = 400):
    """Per-channel mean and std of the projected inputs over filled pixels, and the fraction of
    points per raw semantic id, on (a sample of) the given sequences."""
    pairs = scan_files(root, sequences)
    step = max(1, len(pairs) // max_scans)
    sums, sq, count = np.zeros(5), np.zeros(5), 0
    hist: dict[int, int] = {}
    for scan_path, label_path in pairs[::step]:
        pts = read_scan(scan_path)
        p = project(pts, sensor, warn=False)
        img = p.channels()[:, p.mask]
        sums += img.sum(axis=1)
        sq += (img.astype(np.float64) ** 2).sum(axis=1)
        count += img.shape[1]
        if label_path is not None:
            ids, n = np.unique(read_labels(label_path, len(pts)) & 0xFFFF, return_counts=True)
            for k, v in zip(ids.tolist(), n.tolist()):
                hist[k] = hist.get(k, 0) + v
    if count == 0:
        raise DatasetError(f"no points in the training sequences under {root}")
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 1e-8))
    total = max(1, sum(hist.values()))
    return ([round(float(v), 4) for v in mean], [round(float(v), 4) for v in std],
            {k: v / total for k, v in sorted(hist.items())})


def load_dataset_config(root: str | Path) -> LabelConfig:
    """The ``dataset.yaml`` of a dataset made by ``make_dataset`` (or written by hand).

    Raises:
        DatasetError: the file is missing; ConfigError: it is malformed.
    """
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        raise DatasetError(f"{root} has no {DATASET_FILE}; make one with `vlnce lidar make-data --out {root}` "
                           "or pass a label config")
    labels = load_label_config(path)
    if labels.sensor is None:
        raise ConfigError(f"{path}: missing the 'sensor' block (fov_up_deg, fov_down_deg, height, width, means, stds)")
    if "split" not in labels.extra:
        raise ConfigError(f"{path}: missing 'split' (train/valid/test sequence lists)")
    return labels


class RangeImageDataset:
    """Projected scans of one split as training pairs (a map-style torch dataset).

    Item: (input (5, H, W) float32, label (H, W) int64 training ids, index).

    Args:
        augment: random rotation about z and random mirror (y -> -y) before projection.
    """

    def __init__(self, root: str | Path, split: str, labels: LabelConfig, augment: bool = False,
                 seed: int = 0, max_scans: int | None = None) -> None:
        sequences = labels.extra.get("split", {}).get(split)
        if sequences is None:
            raise DatasetError(f"the dataset config has no split {split!r} (has: {sorted(labels.extra.get('split', {}))})")
        self.pairs = scan_files(root, list(sequences)) if sequences else []
        if max_scans is not None:
            self.pairs = self.pairs[:max_scans]
        self.labels, self.sensor = labels, labels.sensor
        self.lut = labels.lut()
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Points (N, 4) and training ids (N,) of scan ``i``."""
        scan_path, label_path = self.pairs[i]
        pts = read_scan(scan_path)
        if label_path is None:
            raise DatasetError(f"scan {scan_path} has no label file")
        return pts, self.lut[read_labels(label_path, len(pts)) & 0xFFFF]

    def __getitem__(self, i: int):
        pts, lab = self.load(i)
        if self.augment:
            pts = pts.copy()
            a = self.rng.uniform(-np.pi, np.pi)
            c, s = np.cos(a), np.sin(a)
            pts[:, :2] = pts[:, :2] @ np.array([[c, s], [-s, c]], np.float32)
            if self.rng.random() < 0.5:
                pts[:, 1] = -pts[:, 1]
        proj = project(pts, self.sensor, warn=False)
        return proj.network_input(self.sensor), proj.label_image(lab), i
