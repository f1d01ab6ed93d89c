"""Named parts and recipes of the re-ID library (habitat-style registries, filled at import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from perception.reid import adtc, air, apinet, arp, gasm, losses, models, msgn, parts, resnet
from vlnce.errors import ConfigError
from vlnce.registry import Registry

BACKBONES: Registry[Callable] = Registry("re-ID backbone")
BACKBONES.add("resnet50", resnet.resnet50)
BACKBONES.add("resnet101", resnet.resnet101)
BACKBONES.add("resnet26", resnet.resnet26)

DOWNSAMPLERS: Registry[Callable] = Registry("downsampler")
DOWNSAMPLERS.add("arp", arp.ARP)
DOWNSAMPLERS.add("region_pool", arp.RegionPool)

PARTITIONERS: Registry[Callable] = Registry("partitioner")
PARTITIONERS.add("uniform_stripes", parts.uniform_stripes)
PARTITIONERS.add("activation_balanced_stripes", parts.activation_balanced_stripes)
PARTITIONERS.add("receptive_partition", parts.receptive_partition)

POOLS: Registry[Callable] = Registry("pooling")
POOLS.add("gap", lambda x: parts.global_pool(x, "avg"))
POOLS.add("gmp", lambda x: parts.global_pool(x, "max"))
POOLS.add("interaction_attention_pool", parts.InteractionAttentionPool)
POOLS.add("voxel_attention", parts.VoxelAttention)

LOSSES: Registry[Callable] = Registry("loss")
LOSSES.add("ce", losses.id_cross_entropy)
LOSSES.add("triplet_batch_hard", losses.triplet_batch_hard)
LOSSES.add("api_score_rank", losses.api_rank_loss)


@dataclass(frozen=True)
class Recipe:
    """A paper's model and objective:

    ``loss = ce_weight * CE + triplet_weight * triplet + rank_weight * API rank
    + mask_weight * ||mask - target||_F + pose_weight * ||joints - target||_F``

    Attributes:
        model: a key of ``MODELS``; options: keyword arguments of the model class.
        margin, metric: the batch-hard triplet loss.
        reduction: how the CE terms and the triplet terms are each combined, "sum" (RMG sums its
            14 CE and 2 triplet terms) or "mean".
        label_smoothing: ID cross-entropy smoothing (no paper uses it; 0).
        rank_weight, rank_eps: API-Net's score-ranking loss.
        mask_weight, pose_weight: GASM's teacher-map losses (used when the data provides targets).
        flip_test: embed each image and its mirror and add the two (RMG).
        paper: where the recipe comes from, for listings.
    """

    name: str
    model: str
    options: dict = field(default_factory=dict)
    margin: float = 0.3
    metric: str = "euclidean"
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    reduction: str = "mean"
    label_smoothing: float = 0.0
    rank_weight: float = 0.0
    rank_eps: float = 0.05
    mask_weight: float = 0.0
    pose_weight: float = 0.0
    flip_test: bool = False
    paper: str = ""

    def loss(self, out: models.ReidOutput, labels: torch.Tensor, targets: dict | None = None) -> tuple[torch.Tensor, dict]:
        """The total loss and its named parts (floats, for logging).

        Args:
            out: the model's training output.
            labels: (N,) training labels of the batch.
            targets: optional teacher maps, "mask" (N, 1, H, W) and "pose" (N, 13, H, W) in [0, 1].
        """
        combine = torch.sum if self.reduction == "sum" else torch.mean
        total = labels.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        ce_terms = [losses.id_cross_entropy(lg, labels, self.label_smoothing) for lg in out.logits]
        ce_terms += [losses.id_cross_entropy(lg, y, self.label_smoothing) for lg, y in out.extras.get("pair_logits", [])]
        if self.ce_weight and ce_terms:
            ce = combine(torch.stack(ce_terms))
            total = total + self.ce_weight * ce
            parts["ce"] = float(ce.detach())
        if self.triplet_weight and out.triplet:
            tri = combine(torch.stack([losses.triplet_batch_hard(t, labels, self.margin, self.metric)
                                       for t in out.triplet]))
            total = total + self.triplet_weight * tri
            parts["triplet"] = float(tri.detach())
        if self.rank_weight and "api_scores" in out.extras:
            rank = losses.api_rank_loss(*out.extras["api_scores"], eps=self.rank_eps)
            total = total + self.rank_weight * rank
            parts["rank"] = float(rank.detach())
        for key, weight in (("mask", self.mask_weight), ("pose", self.pose_weight)):
            if weight and targets and key in targets and key in out.extras:
                term = gasm.frobenius_loss(out.extras[key], targets[key].to(out.extras[key].dtype))
                total = total + weight * term
                parts[key] = float(term.detach())
        return total, parts

    def describe(self) -> dict:
        terms = [f"{self.ce_weight:g} CE" if self.ce_weight else "",
                 f"{self.triplet_weight:g} triplet ({self.metric}, margin {self.margin:g})" if self.triplet_weight else "",
                 f"{self.rank_weight:g} API rank" if self.rank_weight else "",
                 f"{self.mask_weight:g} mask + {self.pose_weight:g} pose" if self.mask_weight or self.pose_weight else ""]
        return {"model": self.model, "options": self.options, "loss": " + ".join(t for t in terms if t),
                "reduction": self.reduction, "flip_test": self.flip_test, "paper": self.paper,
                "summary": f"{self.model} {self.options or ''} | {' + '.join(t for t in terms if t)} | {self.paper}"}


RECIPES: Registry[Recipe] = Registry("re-ID recipe")
# The plain global-pooling baseline, with the same triplet margin as RMG so the two train alike.
RECIPES.add("baseline", Recipe("baseline", "baseline", {"pool": "avg"}, margin=0.6, paper="BNNeck baseline (GAP)"))
RECIPES.add("baseline_gmp", Recipe("baseline_gmp", "baseline", {"pool": "max"}, margin=0.6,
                                   paper="BNNeck baseline (GMP)"))
# RMGL (specs 2.4): sum of CE per 256-d feature + a triplet (Euclidean, margin 0.6) per branch.
RECIPES.add("rmg", Recipe("rmg", "rmg", {"stripes": (2, 3), "rp": True, "abp": True}, margin=0.6,
                          reduction="sum", flip_test=True, paper="RMG (receptive multi-granularity)"))
RECIPES.add("rmg_no_rp", Recipe("rmg_no_rp", "rmg", {"stripes": (2, 3), "rp": False, "abp": True}, margin=0.6,
                                reduction="sum", flip_test=True, paper="RMG without receptive partition"))
# AIR-Net (specs 4.2): mean of 3 CE + mean of 3 triplets, cosine, margin 0.2.
RECIPES.add("air", Recipe("air", "air", {"normalize": "none"}, margin=0.2, metric="cosine", paper="AIR-Net"))
# API-Net (specs 3.2): CE over the 4 attentive sets + 1.0 x rank loss (eps 0.05); no triplet.
RECIPES.add("apinet", Recipe("apinet", "apinet", triplet_weight=0.0, rank_weight=1.0, paper="API-Net"))
# MSGN (specs 1.2): GVB + one ARP local view branch (k 0.7); CE + triplet for re-ID (margin not given).
RECIPES.add("msgn", Recipe("msgn", "msgn", {"lvb_k": 0.7}, paper="MSGN with ARP"))
# ADTC (specs 5.3): triplet only, squared Euclidean, margin 0.3 (CE only for supervised initialisation).
RECIPES.add("adtc", Recipe("adtc", "adtc", ce_weight=0.0, metric="sq_euclidean", paper="ADTC (voxel attention)"))
# GASM (specs 6.2): CE + triplet + 0.05 mask + 0.1 pose (triplet margin not given).
RECIPES.add("gasm", Recipe("gasm", "gasm", mask_weight=0.05, pose_weight=0.1, paper="GASM (guided saliency)"))

MODELS = {"baseline": models.GlobalBaseline, "rmg": models.RMG, "air": air.AIRNet, "apinet": apinet.APINet,
          "msgn": msgn.MSGN, "adtc": adtc.ADTCNet, "gasm": gasm.GASM}


def build_model(recipe: str | Recipe, num_classes: int, backbone: str = "resnet50", width: float = 1.0,
                weights=None, **options) -> torch.nn.Module:
    """Build a recipe's model on a registered backbone (random init unless ``weights`` names a local
    ImageNet state dict)."""
    rec = RECIPES.get(recipe) if isinstance(recipe, str) else recipe
    if num_classes < 2:
        raise ConfigError(f"a re-ID model needs at least 2 training identities, got {num_classes}")
    trunk = BACKBONES.get(backbone)(width=width, last_stride=1, weights=weights)
    return MODELS[rec.model](trunk, num_classes, **{**rec.options, **options})
