"""Training a re-ID recipe on a Market-1501-layout dataset.

P x K batches (triplet losses need positives in the batch), the recipe's objective, Adam with a
linear warm-up then cosine decay, RSA + flip + optional random erasing. Splits are decoded once
into uint8 tensors (re-ID sets at 128 x 64 fit in memory many times over). Every epoch ends with an
atomic ``last.pt`` (weights, optimiser, progress); every ``eval_every`` epochs query/gallery are
scored and ``best.pt`` keeps the best mAP; a rerun continues from ``last.pt``. Scalars go to
TensorBoard event files and ``history.jsonl``; ``curves.png`` plots them.

``pseudo_labels`` trains ADTC-style (unsupervised): before each round the training images are
embedded, clustered with two-stage clustering, and the clusters replace the identity labels.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from perception.reid.datasets import ReidDataset, read_dataset
from perception.reid.embedder import ModelSpec, ReidEmbedder, evaluate_embedder, load_items, model_from_blob
from perception.reid.embedder import read_reid_checkpoint, save_reid_model
from perception.reid.sampler import PKSampler
from perception.reid.transforms import RSA, random_erasing
from vlnce.errors import ConfigError, TrainingError
from vlnce.torchio import resolve_device

log = logging.getLogger(__name__)

PANELS = (("train/loss", (200, 60, 40)), ("eval/mAP", (40, 120, 200)), ("eval/rank1", (40, 160, 90)),
          ("train/lr", (120, 120, 120)))


@dataclass
class ReidTrainConfig:
    """Training settings (``vlnce reid train`` flags map onto these).

    Attributes:
        recipe, backbone, width: the model (``perception.reid.registry``).
        height, width_px: input size in pixels.
        dataset: reader name (market1501, cuhk03_np, msmt17).
        epochs, p, k: epochs and P identities x K images per batch.
        lr, weight_decay, warmup_epochs: Adam; LR warms up linearly then follows a cosine to
            ``lr * final_lr_ratio``.
        augment: "rsa" (RMG's random shifting), "flip" or "none"; flip is added to rsa;
            erasing: random-erasing probability.
        eval_every: score query/gallery every N epochs (and after the last).
        pseudo_labels: ADTC unsupervised training, re-clustering every ``cluster_every`` epochs into
            ``clusters`` clusters (0: as many as training identities, only for reporting).
        weights: a local ImageNet state dict for the backbone (none: random init).
        device, threads, seed: as usual.
    """

    recipe: str = "rmg"
    backbone: str = "resnet26"
    width: float = 0.5
    height: int = 128
    width_px: int = 64
    dataset: str = "market1501"
    epochs: int = 40
    p: int = 16
    k: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    final_lr_ratio: float = 0.01
    augment: str = "rsa"
    erasing: float = 0.0
    eval_every: int = 5
    pseudo_labels: bool = False
    cluster_every: int = 2
    clusters: int = 0
    weights: str | None = None
    device: str = "auto"
    threads: int = 0
    seed: int = 0

    def validate(self) -> "ReidTrainConfig":
        from perception.reid.registry import BACKBONES, RECIPES

        RECIPES.get(self.recipe)
        BACKBONES.get(self.backbone)
        if self.epochs < 1 or self.p < 2 or self.k < 2:
            raise ConfigError(f"need epochs >= 1, P >= 2, K >= 2; got {self.epochs}, {self.p}, {self.k}")
        if self.height < 32 or self.width_px < 16:
            raise ConfigError(f"input size {self.height} x {self.width_px} is below the 32 x 16 minimum")
        if self.augment not in ("rsa", "flip", "none"):
            raise ConfigError(f"augment must be 'rsa', 'flip' or 'none', got {self.augment!r}")
        if not (self.lr > 0 and 0 < self.final_lr_ratio <= 1 and self.warmup_epochs >= 0 and 0 <= self.erasing <= 1):
            raise ConfigError("need lr > 0, 0 < final_lr_ratio <= 1, warmup_epochs >= 0, 0 <= erasing <= 1")
        return self


def lr_at(cfg: ReidTrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from lr / 10 over ``warmup_epochs``, then cosine from lr to lr * final_lr_ratio."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (0.1 + 0.9 * step / warm)
    t = min(1.0, (step - warm) / max(1.0, total - warm))
    lo = cfg.lr * cfg.final_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * t))


class ReidTrainer:
    def __init__(self, data: str | Path, out: str | Path, cfg: ReidTrainConfig, resume: bool = True) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.data: ReidDataset = read_dataset(cfg.dataset, data)
        if not self.data.train:
            raise ConfigError(f"{data}: the training split has no images")
        size = (cfg.height, cfg.width_px)
        classes = cfg.clusters if cfg.pseudo_labels and cfg.clusters else self.data.num_train_ids
        self.spec = ModelSpec(cfg.recipe, cfg.backbone, cfg.width, classes, size)
        from perception.reid.registry import RECIPES, build_model

        self.recipe = RECIPES.get(cfg.recipe)
        self.model = build_model(cfg.recipe, classes, cfg.backbone, cfg.width, cfg.weights).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.labels = torch.tensor([it.label for it in self.data.train])
        self.epoch, self.step, self.best, self.seconds = 0, 0, -1.0, 0.0
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.out / "last.pt"
        if resume and last.is_file():
            self._resume(last)
        log.info("decoding %d training images", len(self.data.train))
        self.train_images = load_items(self.data.train, size)
        # GASM's teacher maps ride along as extra channels so that every augmentation moves them
        # with the pixels; without them (real datasets) the recipe trains without its map losses
        self.teacher = None
        if self.recipe.mask_weight or self.recipe.pose_weight:
            from perception.reid.simdata import TEACHER_DIR, read_teacher_maps

            if (Path(data) / TEACHER_DIR).is_dir():
                maps = read_teacher_maps(data, [it.path.name for it in self.data.train], size)
                self.teacher = torch.from_numpy(maps)
            else:
                log.warning("%s has no %s/ maps: %s trains without its mask and pose losses", data, TEACHER_DIR,
                            cfg.recipe)
        self._eval_images: tuple[torch.Tensor, torch.Tensor] | None = None
        self.rsa = RSA() if cfg.augment == "rsa" else None

    def _resume(self, path: Path) -> None:
        blob = read_reid_checkpoint(path)
        model, spec = model_from_blob(blob, path)
        if spec != self.spec:
            raise ConfigError(f"{path} holds a different model ({spec}) than asked ({self.spec}); "
                              "use another --out or --no-resume")
        self.model.load_state_dict(model.state_dict())
        if "optimizer" in blob:
            self.opt.load_state_dict(blob["optimizer"])
        if "pseudo_labels" in blob:
            self.labels = blob["pseudo_labels"]
        self.epoch, self.step = int(blob.get("epoch", 0)), int(blob.get("step", 0))
        self.best, self.seconds = float(blob.get("best_map", -1.0)), float(blob.get("seconds", 0.0))
        log.info("resumed from %s at epoch %d (best mAP %.4f)", path, self.epoch, self.best)

    def _save(self, name: str, with_state: bool) -> None:
        extra = {"epoch": self.epoch, "step": self.step, "best_map": self.best, "seconds": self.seconds,
                 "train_config": json.loads(json.dumps(asdict(self.cfg)))}
        if with_state:
            extra["optimizer"] = self.opt.state_dict()
            if self.cfg.pseudo_labels:
                extra["pseudo_labels"] = self.labels
        save_reid_model(self.out / name, self.model, self.spec, extra)

    def _augment(self, idx: list[int], rng: np.random.Generator) -> tuple[torch.Tensor, dict | None]:
        """Augmented images (B, 3, H, W) in [0, 1] and, with teacher maps, GASM's targets
        {"mask": (B, 1, H, W), "pose": (B, 13, H, W)} moved by the same shifts and flips."""
        from perception.reid.gasm import FLIP_JOINTS

        out = []
        for i in idx:
            img = self.train_images[i]
            if self.teacher is not None:
                img = torch.cat([img, self.teacher[i]])
            if self.rsa is not None:
                img = self.rsa(img, rng, image_channels=3)
            if self.cfg.augment != "none" and rng.random() < 0.5:
                img = img.flip(-1)
                if self.teacher is not None:  # a mirrored left wrist is a right wrist
                    img = torch.cat([img[:4], img[4:][list(FLIP_JOINTS)]])
            if self.cfg.erasing:  # an occluder: the teacher maps stay as they were
                img = torch.cat([random_erasing(img[:3], rng, self.cfg.erasing), img[3:]])
            out.append(img)
        batch = torch.stack(out).float() / 255.0
        if self.teacher is None:
            return batch, None
        return batch[:, :3], {"mask": batch[:, 3:4], "pose": batch[:, 4:]}

    def embedder(self) -> ReidEmbedder:
        return ReidEmbedder(self.model, self.spec, self.device)  # puts the model in eval mode

    def evaluate(self, rerank: bool = False):
        if self._eval_images is None:
            size = self.spec.input_size
            self._eval_images = (load_items(self.data.query, size), load_items(self.data.gallery, size))
        metrics, _ = evaluate_embedder(self.embedder(), self.data, rerank, *self._eval_images)
        return metrics

    def relabel_by_clustering(self) -> dict:
        """ADTC: embed the training images, two-stage cluster them, and train on the clusters.
        Images the clustering drops keep no label (-1) and are left out of batches."""
        from perception.reid.clustering import nmi, two_stage_cluster

        feats = self.embedder().embed_tensor(self.train_images)
        m = self.cfg.clusters or self.data.num_train_ids
        # ADTC keeps p = 20 points per centroid with m = 1000 on Market-1501 (~13 images per
        # identity); keep the same ratio of images per cluster here.
        p = max(2, round(len(feats) / m))
        c = two_stage_cluster(feats, m=m, p=p, seed=self.cfg.seed + self.epoch)
        self.labels = torch.as_tensor(c.labels, dtype=torch.long)
        truth = np.array([it.label for it in self.data.train])
        kept = c.labels >= 0
        return {"cluster/nmi": nmi(truth[kept], c.labels[kept]) if kept.any() else 0.0,
                "cluster/kept": float(kept.mean())}

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        from vlnce.tblog import TrainingLog, plot_curves

        cfg = self.cfg
        tlog = TrainingLog(self.out / "logs")
        tlog.truncate_after(self.step)
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                row: dict[str, float] = {}
                if cfg.pseudo_labels and self.epoch % cfg.cluster_every == 0:
                    row.update(self.relabel_by_clustering())
                keep = (self.labels >= 0).nonzero().flatten()
                counts = torch.bincount(self.labels[keep]) if len(keep) else torch.zeros(0)
                usable = keep[counts[self.labels[keep]] >= 2] if len(keep) else keep
                sampler = PKSampler(self.labels[usable].tolist(), cfg.p, cfg.k, seed=cfg.seed)
                sampler.set_epoch(self.epoch)
                batches = sampler.batches()
                steps_per_epoch = max(1, len(batches))
                rng = np.random.default_rng(cfg.seed * 100003 + self.epoch)
                self.model.train()
                bar = tqdm(batches, disable=not progress, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch")
                running = []
                for batch in bar:
                    idx = [int(usable[i]) for i in batch]
                    lr = lr_at(cfg, self.step, steps_per_epoch)
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    x, targets = self._augment(idx, rng)
                    x, y = x.to(self.device), self.labels[idx].to(self.device)
                    if targets is not None:
                        targets = {k: v.to(self.device) for k, v in targets.items()}
                    loss, parts = self.recipe.loss(self.model(x, y), y, targets)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"the loss became {loss.item()} at step {self.step} (epoch {self.epoch + 1}); "
                                            f"{self.out / 'last.pt'} keeps the last good weights; try a lower --lr")
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    self.step += 1
                    running.append(loss.item())
                    bar.set_postfix(loss=f"{np.mean(running[-10:]):.3f}", lr=f"{lr:.1e}")
                    if self.step % 10 == 0:
                        tlog.scalars(self.step, {"train/loss": float(np.mean(running[-10:])), "train/lr": lr,
                                                 **{f"train/{k}": v for k, v in parts.items()}})
                self.epoch += 1
                self.seconds += time.perf_counter() - t0
                row.update({"train/loss": float(np.mean(running)), "train/epoch_seconds": time.perf_counter() - t0})
                if (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs) and self.data.query:
                    m = self.evaluate()
                    row.update({"eval/mAP": m.mAP, "eval/rank1": m.rank(1)})
                    if m.mAP > self.best:
                        self.best = m.mAP
                        self._save("best.pt", with_state=False)
                    log.info("epoch %d: loss %.4f, mAP %.4f, rank-1 %.4f (best mAP %.4f)", self.epoch,
                             row["train/loss"], m.mAP, m.rank(1), self.best)
                tlog.scalars(self.step, row)
                self._save("last.pt", with_state=True)
                plot_curves(self.out / "logs", self.out / "curves.png", PANELS)
        finally:
            tlog.close()
        if not (self.out / "best.pt").is_file():
            self._save("best.pt", with_state=False)
        summary = {"epochs": self.epoch, "steps": self.step, "best_mAP": round(self.best, 4),
                   "train_seconds": round(self.seconds, 1), "train_images": len(self.data.train),
                   "train_ids": self.data.num_train_ids, "model": self.spec.to_dict(), "device": str(self.device),
                   "threads": torch.get_num_threads()}
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return summary
