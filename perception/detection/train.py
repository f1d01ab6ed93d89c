"""Training the detector: source-only, the two adversarial adaptations, MCAR, and the oracle.

Methods (``../shared/specs/lidar_and_detection.md`` section 2; the paper's Table 4 names):

- ``source_only``: detection loss on labelled source images.
- ``uadv``: plus the unconditional image-level adversary (GRL + focal loss), "uadv-w/o-MP-PR".
- ``mc``: plus the multi-label branch, and the adversary conditioned on its predictions
  (MCAR "w/o-PR", the MC row of Tables 1-3).
- ``mcar``: plus the prediction-consistency regulariser on both domains (MC + PR).
- ``oracle``: detection loss on the *labelled target* training images ("Train-on-Target").

Every iteration takes ``batch_size`` source images and, for the adaptive methods, as many target
images (whose labels are never read). L = L_det + adv_weight L_adv + multilabel_weight L_multi +
consistency_weight L_kl, weights 0.5 / 0.01 / 0.1 and gamma = 5 by default (the paper's).
``local_weight`` > 0 adds Strong-Weak DA's pixel-level alignment of the backbone's stage-1 features
(``adaptation.LocalDiscriminator``) to any adaptive method: + local_weight L_loc.

Outputs in ``out``: ``last.pt`` (everything needed to resume, written atomically after every
epoch and every ``save_every`` iterations), ``final.pt`` (the detector after the last epoch:
unsupervised adaptation has no target labels to select a checkpoint with, so the last one is the
one reported), ``logs/`` (TensorBoard + history.jsonl), ``curves.png``, ``eval_<epoch>.json``.
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

from perception.detection import adaptation as A
from perception.detection.checkpoint import load_detector, save_detector
from perception.detection.data import DetectionDataset, check_classes, read_coco
from perception.detection.evaluation import evaluate_detections, predict_records
from perception.detection.faster_rcnn import FasterRCNN, build_faster_rcnn
from perception.detection.roi_heads import RoIHeadsConfig
from perception.detection.rpn import RPNConfig
from vlnce.errors import CheckpointError, ConfigError, TrainingError
from vlnce.fileio import setting_changes
from vlnce.torchio import resolve_device

log = logging.getLogger(__name__)

METHODS = ("source_only", "uadv", "mc", "mcar", "oracle")
PANELS = (("train/loss", (200, 60, 40)), ("train/adv", (120, 60, 160)), ("eval/map50", (40, 120, 200)))


@dataclass
class DetectTrainConfig:
    """Options of ``vlnce detect train`` (see the module docstring for ``method``).

    Attributes:
        source, target, test: COCO annotation files (defaults: the ``make-data`` layout under the
            data folder: source_train, target_train, target_test).
        backbone, width, representation, reduce_channels, anchor_sizes: the detector.
        epochs: passes over the training domain's images. batch_size: images per domain per step.
        optimizer: "adamw" (default: from random initialisation it reached target mAP@0.5 0.25
            after 5 epochs where SGD with momentum 0.9 at lr 0.01 reached 0.11) or "sgd" (the
            paper's, whose LR it does not state; SW-DA used 1e-3). lr, weight_decay: as named.
        lr_steps: epochs after which the LR is multiplied by 0.1. warmup_iters: linear warm-up.
        adv_weight, multilabel_weight, consistency_weight, gamma: the paper's lambda, mu, epsilon, gamma.
        condition: "p" or "softmax_pq" (the Foggy Cityscapes variant). grl: reversal coefficient.
        grl_schedule: "constant" (the coefficient throughout) or "dann" (ramped from 0 as
            ``adaptation.reversal_coefficient``, over the whole run), for every discriminator.
        local_weight: weight of the local (pixel-level) alignment loss; 0 (default) leaves it out.
        hidden: channels of the multi-label head and discriminators (512 in the paper).
        min_size: resize short side (None: keep the images' size). flip: horizontal flips.
        eval_every: epochs between evaluations on ``test``. max_eval_images: cap (None: all).
    """

    method: str = "mcar"
    source: str | None = None
    target: str | None = None
    test: str | None = None
    backbone: str = "resnet26"
    width: float = 0.25
    representation: int = 256
    reduce_channels: int = 64
    anchor_sizes: tuple[float, ...] = (24.0, 48.0, 96.0, 192.0)
    epochs: int = 8
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    lr_steps: tuple[int, ...] = (6,)
    warmup_iters: int = 200
    adv_weight: float = A.PAPER_WEIGHTS["adv"]
    multilabel_weight: float = A.PAPER_WEIGHTS["multilabel"]
    consistency_weight: float = A.PAPER_WEIGHTS["consistency"]
    gamma: float = A.PAPER_WEIGHTS["gamma"]
    condition: str = "p"
    grl: float = 1.0
    grl_schedule: str = "constant"
    local_weight: float = 0.0
    hidden: int = 256
    min_size: int | None = None
    flip: bool = True
    eval_every: int = 1
    max_eval_images: int | None = None
    save_every: int = 200
    device: str = "auto"
    threads: int = 0
    seed: int = 0

    def validate(self) -> "DetectTrainConfig":
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.grl_schedule not in ("constant", "dann"):
            raise ConfigError(f"--grl-schedule must be constant or dann, got {self.grl_schedule!r}")
        if self.condition not in ("p", "softmax_pq"):
            raise ConfigError(f"--condition must be p or softmax_pq, got {self.condition!r}")
        for name in ("epochs", "batch_size", "eval_every", "save_every", "hidden", "representation"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or min(self.adv_weight, self.multilabel_weight, self.consistency_weight, self.gamma,
                               self.local_weight) < 0:
            raise ConfigError("lr must be > 0 and the loss weights and gamma >= 0")
        if self.local_weight > 0 and not self.adaptive:
            raise ConfigError(f"--local-weight needs an adaptive method (uadv, mc, mcar), not {self.method!r}")
        return self

    def to_json(self) -> dict:
        """The config as JSON values (tuples become lists), as stored in checkpoints."""
        return json.loads(json.dumps(asdict(self)))

    @property
    def adaptive(self) -> bool:
        return self.method in ("uadv", "mc", "mcar")


def _files(data: Path, cfg: DetectTrainConfig) -> tuple[Path, Path, Path]:
    train_default = "target_train.json" if cfg.method == "oracle" else "source_train.json"
    src = Path(cfg.source) if cfg.source else data / train_default
    tgt = Path(cfg.target) if cfg.target else data / "target_train.json"
    test = Path(cfg.test) if cfg.test else data / "target_test.json"
    return src, tgt, test


class DetectionTrainer:
    def __init__(self, data: str | Path, out: str | Path, cfg: DetectTrainConfig, resume: bool = True,
                 init: str | None = None) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        src, tgt, test = _files(Path(data), cfg)
        self.train_records, self.classes = read_coco(src)
        if not self.train_records:
            raise ConfigError(f"{src} lists no images")
        self.target_records = []
        if cfg.adaptive:
            self.target_records, tclasses = read_coco(tgt)
            check_classes(self.classes, tclasses, str(tgt))
        self.test_records = []
        if test.is_file():
            self.test_records, eclasses = read_coco(test)
            check_classes(self.classes, eclasses, str(test))
            if cfg.max_eval_images:
                self.test_records = self.test_records[: cfg.max_eval_images]
        self.model: FasterRCNN = build_faster_rcnn(
            self.classes, cfg.backbone, cfg.width, rpn=RPNConfig(anchor_sizes=tuple(cfg.anchor_sizes)),
            roi=RoIHeadsConfig(representation=cfg.representation, reduce_channels=cfg.reduce_channels)).to(self.device)
        c, k = self.model.feature_channels, len(self.classes)
        self.multilabel = A.MultiLabelHead(c, k, cfg.hidden).to(self.device) if cfg.method in ("mc", "mcar") else None
        self.disc = None
        if cfg.method == "uadv":
            self.disc = A.ImageDiscriminator(c, cfg.hidden).to(self.device)
        elif cfg.method in ("mc", "mcar"):
            self.disc = A.ConditionalDiscriminator(c, k, cfg.hidden).to(self.device)
        self.local_disc = None
        if cfg.local_weight > 0:
            self.local_disc = A.LocalDiscriminator(self.model.backbone.local_channels).to(self.device)
        params = [p for m in self._modules_all() for p in m.parameters()]
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epoch, self.it, self.step, self.seconds = 0, 0, 0, 0.0
        self.per_epoch = math.ceil(len(self.train_records) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.per_epoch
        self.out.mkdir(parents=True, exist_ok=True)
        # where the weights started, kept with the results: a fine-tuned model's numbers mean little without it
        self.init = str(init) if init else None
        if resume and (self.out / "last.pt").is_file():
            self._resume(self.out / "last.pt")
        elif init:
            other, _ = load_detector(init, "cpu", classes=self.classes)
            self.model.load_state_dict(other.state_dict())

    # --- checkpoints ----------------------------------------------------------------------------
    def _modules(self) -> dict:
        return {"multilabel": self.multilabel, "disc": self.disc, "local_disc": self.local_disc}

    def _modules_all(self) -> list:
        return [m for m in (self.model, *self._modules().values()) if m is not None]

    def _save(self) -> None:
        extra = {"optimizer": self.opt.state_dict(), "epoch": self.epoch, "it": self.it, "step": self.step,
                 "seconds": self.seconds, "train_config": self.cfg.to_json(), "init": self.init,
                 "rng": torch.get_rng_state()}
        for name, m in self._modules().items():
            if m is not None:
                extra[name] = m.state_dict()
        save_detector(self.out / "last.pt", self.model, extra)

    def _resume(self, path: Path) -> None:
        model, blob = load_detector(path, "cpu")
        keep = {"device", "threads", "eval_every", "max_eval_images", "save_every", "epochs"}
        diff = setting_changes(blob.get("train_config", {}), self.cfg.to_json(), keep,
                               defaults=DetectTrainConfig().to_json())
        if diff:
            raise ConfigError(f"{path} holds a run with other settings ({diff}); use the same options, "
                              "another --out or --no-resume")
        try:
            self.model.load_state_dict(model.state_dict())
            for name, m in self._modules().items():
                if m is not None:
                    m.load_state_dict(blob[name])
            self.opt.load_state_dict(blob["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} does not fit this run ({exc}); use another --out or --no-resume") from None
        self.epoch, self.it, self.step = int(blob["epoch"]), int(blob["it"]), int(blob["step"])
        self.seconds = float(blob.get("seconds", 0.0))
        self.init = blob.get("init", self.init)
        if "rng" in blob:
            torch.set_rng_state(blob["rng"])
        log.info("resumed %s at epoch %d, iteration %d", path, self.epoch, self.it)

    # --- optimisation ---------------------------------------------------------------------------
    def lr_at(self, step: int, epoch: int) -> float:
        lr = self.cfg.lr * 0.1 ** sum(epoch >= s for s in self.cfg.lr_steps)
        if step < self.cfg.warmup_iters:
            lr *= (step + 1) / self.cfg.warmup_iters
        return lr

    def grl_at(self, step: int) -> float:
        """The reversal coefficient of every discriminator at ``step``."""
        return self.cfg.grl * A.reversal_coefficient(step / max(self.total_steps - 1, 1), self.cfg.grl_schedule)

    def _batch(self, ds: DetectionDataset, idx) -> tuple[list[torch.Tensor], list[dict]]:
        items = [ds[int(i)] for i in idx]
        return ([x.to(self.device) for x, _ in items],
                [{k: v.to(self.device) for k, v in t.items()} for _, t in items])

    def loss(self, src, tgt) -> tuple[torch.Tensor, dict]:
        """The total loss of one step and its parts (floats)."""
        cfg = self.cfg
        images, targets = src
        out = self.model.forward_labelled(images, targets)
        total = sum(out.losses.values())
        parts = {k: v.item() for k, v in out.losses.items()}
        if not cfg.adaptive:
            return total, parts
        out_t = self.model.forward_unlabelled(tgt[0])
        f_t, roi_t = out_t.features, out_t.roi_logits
        p_s = p_t = q_s = q_t = None
        grl = self.grl_at(self.step)
        if self.multilabel is not None:
            logit_s, logit_t = self.multilabel(out.features), self.multilabel(f_t)
            y = A.multi_hot([t["labels"] for t in targets], len(self.classes)).to(self.device)
            l_multi = A.multilabel_loss(logit_s, y)
            total = total + cfg.multilabel_weight * l_multi
            parts["multilabel"] = l_multi.item()
            p_s, p_t = torch.sigmoid(logit_s), torch.sigmoid(logit_t)
            q_s, q_t = A.proposal_class_max(out.roi_logits), A.proposal_class_max(roi_t)
        if cfg.method == "uadv":
            d_s, d_t = self.disc(out.features, None, grl), self.disc(f_t, None, grl)
        else:
            d_s = self.disc(out.features, A.condition(p_s, q_s, cfg.condition), grl)
            d_t = self.disc(f_t, A.condition(p_t, q_t, cfg.condition), grl)
        l_adv = A.focal_adversarial_loss(d_s, d_t, cfg.gamma)
        total = total + cfg.adv_weight * l_adv
        parts["adv"] = l_adv.item()
        parts["grl"] = grl
        with torch.no_grad():
            parts["disc_acc"] = float(((d_s[:, 1] > d_s[:, 0]).float().mean() + (d_t[:, 0] >= d_t[:, 1]).float().mean()) / 2)
        if cfg.method == "mcar":
            l_kl = A.consistency_loss(p_s, q_s) + A.consistency_loss(p_t, q_t)
            total = total + cfg.consistency_weight * l_kl
            parts["consistency"] = l_kl.item()
        if self.local_disc is not None:
            l_s, l_t = self.local_disc(out.local_features, grl), self.local_disc(out_t.local_features, grl)
            l_loc = A.local_adversarial_loss(l_s, l_t)
            total = total + cfg.local_weight * l_loc
            parts["local_adv"] = l_loc.item()
            with torch.no_grad():
                parts["local_disc_acc"] = float(((l_s > 0).float().mean() + (l_t <= 0).float().mean()) / 2)
        return total, parts

    def evaluate(self, progress: bool = False) -> dict | None:
        if not self.test_records:
            return None
        dets = predict_records(self.model, self.test_records, 4, self.cfg.min_size, self.device, progress)
        return evaluate_detections(dets, self.test_records, self.classes)

    def train(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        from vlnce.tblog import TrainingLog, plot_curves

        cfg = self.cfg
        src_ds = DetectionDataset(self.train_records, cfg.min_size, flip=cfg.flip, seed=cfg.seed)
        tgt_ds = DetectionDataset(self.target_records, cfg.min_size, flip=cfg.flip, seed=cfg.seed + 1)
        tlog = TrainingLog(self.out / "logs")
        tlog.truncate_after(self.step)
        result = None
        try:
            while self.epoch < cfg.epochs:
                rng = np.random.default_rng([cfg.seed, self.epoch])
                order = rng.permutation(len(src_ds))
                t_order = rng.permutation(max(len(tgt_ds), 1))
                for m in self._modules_all():
                    m.train()
                bar = tqdm(total=self.per_epoch, initial=self.it, disable=not progress, unit="it",
                           desc=f"{cfg.method} epoch {self.epoch + 1}/{cfg.epochs}")
                running: dict[str, list[float]] = {}
                t0 = time.perf_counter()
                while self.it < self.per_epoch:
                    idx = order[self.it * cfg.batch_size:(self.it + 1) * cfg.batch_size]
                    src = self._batch(src_ds, idx)
                    tgt = None
                    if cfg.adaptive:
                        tidx = [t_order[(self.it * cfg.batch_size + j) % len(t_order)] for j in range(len(idx))]
                        tgt = self._batch(tgt_ds, tidx)
                    lr = self.lr_at(self.step, self.epoch)
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    total, parts = self.loss(src, tgt)
                    if not torch.isfinite(total):
                        raise TrainingError(f"the loss became {total.item()} at epoch {self.epoch + 1} iteration "
                                            f"{self.it} ({parts}); {self.out / 'last.pt'} keeps the last good weights; "
                                            "try a lower --lr")
                    self.opt.zero_grad(set_to_none=True)
                    total.backward()
                    torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 10.0)
                    self.opt.step()
                    self.it += 1
                    self.step += 1
                    parts["loss"] = total.item()
                    for k, v in parts.items():
                        running.setdefault(k, []).append(v)
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(running['loss'][-20:]):.3f}", lr=f"{lr:.1e}")
                    if self.step % 20 == 0:
                        tlog.scalars(self.step, {f"train/{k}": float(np.mean(v[-20:])) for k, v in running.items()}
                                     | {"train/lr": lr})
                    if self.it % cfg.save_every == 0:
                        self.seconds += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self._save()
                bar.close()
                self.seconds += time.perf_counter() - t0
                self.epoch += 1
                self.it = 0
                row = {f"train/{k}": float(np.mean(v)) for k, v in running.items()}
                if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                    result = self.evaluate(progress)
                    if result is not None:
                        row["eval/map50"] = result["map50"]
                        from vlnce.fileio import atomic_write_bytes

                        atomic_write_bytes(self.out / f"eval_{self.epoch:03d}.json", json.dumps(result, indent=1).encode())
                        log.info("epoch %d: loss %.4f, target mAP@0.5 %.4f", self.epoch, row.get("train/loss", 0),
                                 result["map50"])
                tlog.scalars(self.step, row)
                self._save()
                local_panel = (("train/local_adv", (60, 160, 90)),) if self.local_disc is not None else ()
                plot_curves(self.out / "logs", self.out / "curves.png", PANELS + local_panel)
        finally:
            tlog.close()
        save_detector(self.out / "final.pt", self.model, {"train_config": cfg.to_json(), "init": self.init})
        summary = {"method": cfg.method, "epochs": self.epoch, "steps": self.step, "train_seconds": round(self.seconds, 1),
                   "train_images": len(self.train_records), "target_images": len(self.target_records),
                   "classes": list(self.classes), "init": self.init, "device": str(self.device),
                   "threads": torch.get_num_threads(),
                   "final_eval": result}
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return summary


__all__ = ["DetectTrainConfig", "DetectionTrainer", "METHODS"]
