"""Training SqueezeSegV3 on a SemanticKITTI-layout dataset.

The authors' recipe by default (specs/lidar_and_detection.md section 1.6): SGD, momentum 0.9,
weight decay 1e-4, LR 0.01 reached by a linear warm-up over the first epoch then multiplied by
0.995 per epoch, the multi-layer weighted cross-entropy, model selection on the validation split's
mIoU measured on the range image. Every epoch ends with an atomic ``last.pt`` (weights, optimiser,
progress) and, when validation improved, ``best.pt``; a rerun with ``resume`` continues from
``last.pt``. Scalars go to TensorBoard event files and ``history.jsonl``; ``curves.png`` plots them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from perception.lidar.data import RangeImageDataset, load_dataset_config
from perception.lidar.evaluation import evaluate_dataset
from perception.lidar.segmenter import LidarSegmenter, model_from_blob, read_segmenter_checkpoint, save_segmenter
from perception.lidar.ssgv3 import SqueezeSegV3, SSGV3Config, multilayer_loss
from vlnce.errors import ConfigError, TrainingError
from vlnce.torchio import resolve_device

log = logging.getLogger(__name__)

PANELS = (("train/loss", (200, 60, 40)), ("val/miou", (40, 120, 200)), ("train/lr", (120, 120, 120)))


@dataclass
class LidarTrainConfig:
    """Training settings (``vlnce lidar train`` flags map onto these).

    Attributes:
        model: the network (depth, conv variant, width ...); num_classes comes from the data.
        epochs, batch_size: as usual.
        optimizer: "sgd" (the paper) or "adamw".
        lr, momentum, weight_decay: optimiser settings.
        warmup_epochs: linear warm-up length (fraction of an epoch allowed).
        lr_decay: LR factor per epoch after warm-up.
        class_weight_power: loss weights 1 / (f + 0.001) ** power; 1 is the reference, 0.5 is gentler
            on rare classes for short schedules.
        augment: random rotation about z and mirroring of training scans (the reference uses none).
        max_train_scans, max_val_scans: use only the first N scans of a split (quick runs).
        device: "auto" (CUDA when present), "cpu", "cuda".
        amp: float16 autocast on CUDA.
        threads: torch CPU threads (0 = torch's default).
    """

    model: SSGV3Config = field(default_factory=SSGV3Config)
    epochs: int = 150
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    lr_decay: float = 0.995
    class_weight_power: float = 1.0
    augment: bool = False
    max_train_scans: int | None = None
    max_val_scans: int | None = None
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    seed: int = 0

    def validate(self) -> "LidarTrainConfig":
        self.model.validate()
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not (self.lr > 0 and 0 < self.lr_decay <= 1 and self.warmup_epochs >= 0):
            raise ConfigError(f"need lr > 0, 0 < lr_decay <= 1, warmup_epochs >= 0; got {self.lr}, "
                              f"{self.lr_decay}, {self.warmup_epochs}")
        return self


def lr_at(cfg: LidarTrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_epochs``, then ``lr * lr_decay ** epochs_after_warmup``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * cfg.lr_decay ** ((step - warm) / steps_per_epoch)


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _stack(ds: RangeImageDataset, idx) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[int(i)] for i in idx]
    return (torch.from_numpy(np.stack([it[0] for it in items])),
            torch.from_numpy(np.stack([it[1] for it in items])))


class LidarTrainer:
    def __init__(self, data: str | Path, out: str | Path, cfg: LidarTrainConfig, resume: bool = True,
                 init: str | Path | None = None) -> None:
        self.cfg = cfg.validate()
        self.data, self.out = Path(data), Path(out)
        self.labels = load_dataset_config(self.data)
        self.cfg.model.num_classes = self.labels.num_classes
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.train_ds = RangeImageDataset(self.data, "train", self.labels, augment=cfg.augment, seed=cfg.seed,
                                          max_scans=cfg.max_train_scans)
        self.val_ds = RangeImageDataset(self.data, "valid", self.labels, max_scans=cfg.max_val_scans)
        if len(self.train_ds) == 0:
            raise ConfigError(f"{self.data}: the train split has no scans")
        self.model = SqueezeSegV3(self.cfg.model).to(self.device)
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.weight = torch.from_numpy(self.labels.loss_weights(power=self.cfg.class_weight_power)).to(self.device)
        self.epoch, self.step, self.best, self.seconds = 0, 0, -1.0, 0.0
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if resume and last.is_file():
            self._resume(last)
        elif init is not None:
            model, labels = model_from_blob(read_segmenter_checkpoint(init), init)
            if labels.names != self.labels.names:
                raise ConfigError(f"{init} was trained on classes {labels.names}, this dataset has {self.labels.names}")
            self.model.load_state_dict(model.state_dict())
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")

    def _resume(self, path: Path) -> None:
        blob = read_segmenter_checkpoint(path)
        model, _ = model_from_blob(blob, path)
        if model.cfg != self.cfg.model:
            raise ConfigError(f"{path} holds a different model ({model.cfg}) than asked ({self.cfg.model}); "
                              "use another --out or --no-resume")
        self.model.load_state_dict(model.state_dict())
        if "optimizer" in blob:
            self.opt.load_state_dict(blob["optimizer"])
        self.epoch, self.step = int(blob.get("epoch", 0)), int(blob.get("step", 0))
        self.best, self.seconds = float(blob.get("best_miou", -1.0)), float(blob.get("seconds", 0.0))
        log.info("resumed from %s at epoch %d (best val mIoU %.4f)", path, self.epoch, self.best)

    def _save(self, name: str, with_state: bool) -> None:
        extra = {"epoch": self.epoch, "step": self.step, "best_miou": self.best, "seconds": self.seconds,
                 "train_config": json.loads(json.dumps(asdict(self.cfg)))}
        if with_state:
            extra["optimizer"] = self.opt.state_dict()
        save_segmenter(self.out / name, self.model, self.labels, extra)

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        from vlnce.tblog import TrainingLog, plot_curves

        cfg = self.cfg
        tlog = TrainingLog(self.out / "logs")
        tlog.truncate_after(self.step)
        steps_per_epoch = math.ceil(len(self.train_ds) / cfg.batch_size)
        rng = np.random.default_rng(cfg.seed)
        for _ in range(self.epoch):  # the same shuffles as an uninterrupted run
            rng.permutation(len(self.train_ds))
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                self.model.train()
                bar = tqdm(list(_batches(len(self.train_ds), cfg.batch_size, rng)), disable=not progress,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch")
                running = []
                for idx in bar:
                    lr = lr_at(cfg, self.step, steps_per_epoch)
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    x, y = _stack(self.train_ds, idx)
                    x, y = x.to(self.device), y.to(self.device)
                    with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
                        loss = multilayer_loss(self.model(x), y, self.weight)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"the loss became {loss.item()} at step {self.step} (epoch {self.epoch + 1}); "
                                            f"{self.out / 'last.pt'} keeps the last good weights; try a lower --lr")
                    self.opt.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.opt)
                    self.scaler.update()
                    self.step += 1
                    running.append(loss.item())
                    bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}", lr=f"{lr:.2e}")
                    if self.step % 20 == 0:
                        tlog.scalars(self.step, {"train/loss": float(np.mean(running[-20:])), "train/lr": lr})
                self.epoch += 1
                self.seconds += time.perf_counter() - t0
                row = {"train/loss": float(np.mean(running)), "train/epoch_seconds": time.perf_counter() - t0}
                if len(self.val_ds):
                    seg = LidarSegmenter(self.model, self.labels, self.device)  # puts the model in eval mode
                    res = evaluate_dataset(seg, self.val_ds, "valid", cfg.batch_size, progress)
                    miou = res["miou_2d"]  # on the range image, as the paper selects models
                    row.update({"val/miou": miou, "val/accuracy": res["accuracy_2d"]})
                    if miou > self.best:
                        self.best = miou
                        self._save("best.pt", with_state=False)
                    log.info("epoch %d: loss %.4f, val mIoU %.4f (best %.4f)", self.epoch, row["train/loss"], miou, self.best)
                else:
                    self._save("best.pt", with_state=False)
                tlog.scalars(self.step, row)
                self._save("last.pt", with_state=True)
                plot_curves(self.out / "logs", self.out / "curves.png", PANELS)
        finally:
            tlog.close()
        summary = {"epochs": self.epoch, "steps": self.step, "best_val_miou_2d": round(self.best, 4),
                   "train_seconds": round(self.seconds, 1), "train_scans": len(self.train_ds),
                   "model": self.cfg.model.to_dict(), "device": str(self.device)}
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return summary
