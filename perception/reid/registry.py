"""Named parts and recipes of the re-ID library (habitat-style registries, filled at import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from perception.reid import arp, losses, models, parts, resnet
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
    """A paper's model and objective: ``loss = ce_weight * mean-or-sum CE + triplet_weight * triplet``.

    Attributes:
        model: "baseline" or "rmg"; options: keyword arguments of the model class.
        margin, metric: the triplet loss; reduction: how the CE terms and the triplet terms are each
            combined, "sum" (RMG sums its 14 CE and 2 triplet terms) or "mean".
        label_smoothing: ID cross-entropy smoothing (no paper uses it; 0).
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
    flip_test: bool = False

    def loss(self, out: models.ReidOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ce_terms = torch.stack([losses.id_cross_entropy(lg, labels, self.label_smoothing) for lg in out.logits])
        tri_terms = torch.stack([losses.triplet_batch_hard(t, labels, self.margin, self.metric) for t in out.triplet])
        combine = torch.sum if self.reduction == "sum" else torch.mean
        ce, tri = combine(ce_terms), combine(tri_terms)
        total = self.ce_weight * ce + self.triplet_weight * tri
        return total, {"ce": float(ce.detach()), "triplet": float(tri.detach())}


RECIPES: Registry[Recipe] = Registry("re-ID recipe")
# The plain global-pooling baseline, with the same triplet margin as RMG so the two train alike.
RECIPES.add("baseline", Recipe("baseline", "baseline", {"pool": "avg"}, margin=0.6))
RECIPES.add("baseline_gmp", Recipe("baseline_gmp", "baseline", {"pool": "max"}, margin=0.6))
# RMGL (specs 2.4): sum of CE per 256-d feature + a triplet (Euclidean, margin 0.6) per branch.
RECIPES.add("rmg", Recipe("rmg", "rmg", {"stripes": (2, 3), "rp": True, "abp": True}, margin=0.6,
                          reduction="sum", flip_test=True))
RECIPES.add("rmg_no_rp", Recipe("rmg_no_rp", "rmg", {"stripes": (2, 3), "rp": False, "abp": True}, margin=0.6,
                                reduction="sum", flip_test=True))

MODELS = {"baseline": models.GlobalBaseline, "rmg": models.RMG}


def build_model(recipe: str | Recipe, num_classes: int, backbone: str = "resnet50", width: float = 1.0,
                weights=None, **options) -> torch.nn.Module:
    """Build a recipe's model on a registered backbone (random init unless ``weights`` names a local
    ImageNet state dict)."""
    rec = RECIPES.get(recipe) if isinstance(recipe, str) else recipe
    if num_classes < 2:
        raise ConfigError(f"a re-ID model needs at least 2 training identities, got {num_classes}")
    trunk = BACKBONES.get(backbone)(width=width, last_stride=1, weights=weights)
    return MODELS[rec.model](trunk, num_classes, **{**rec.options, **options})
