"""Sequence-to-sequence baseline (Krantz et al. 2020, section 4.1, eqs. 1-2).

    v_t = mean-pool(V_t),  d_t = [d_1, ..., d_wh],  s = LSTM(w_1, ..., w_T)  (final state)
    h_t = GRU([v_t, d_t, s], h_{t-1}),             a_t = argmax softmax(W_a h_t + b_a)
"""

from __future__ import annotations

import torch
from torch import nn

from agents.models.policy import POLICIES, PolicyConfig, VLNPolicy


@POLICIES.register("seq2seq")
class Seq2SeqPolicy(VLNPolicy):
    bidirectional = False

    def __init__(self, cfg: PolicyConfig, embeddings: torch.Tensor | None = None) -> None:
        super().__init__(cfg, embeddings)
        self.gru = nn.GRUCell(cfg.rgb_dim + cfg.depth_dim + self.instruction_encoder.output_size, cfg.hidden)
        self.state_size = cfg.hidden

    def step(self, instruction, visual, prev_action, state):
        _, s, _ = instruction
        h = self.gru(torch.cat([visual["rgb"], visual["depth"], s], 1), state)
        return h, h, {}


def seq2seq(**overrides) -> Seq2SeqPolicy:
    """Builder with the defaults of ``PolicyConfig``."""
    return Seq2SeqPolicy(PolicyConfig(arch="seq2seq", **overrides))
