"""Learned VLN-CE policies: encoders, Seq2Seq, Cross-Modal Attention, checkpoints.

Importing the package registers both architectures in ``policy.POLICIES``.
"""

from agents.models import cma, seq2seq  # noqa: F401  (registration)
from agents.models.policy import PolicyConfig, build_policy, load_policy, save_checkpoint

__all__ = ["PolicyConfig", "build_policy", "load_policy", "save_checkpoint"]
