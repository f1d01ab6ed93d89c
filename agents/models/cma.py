"""Cross-Modal Attention policy (Krantz et al. 2020, section 4.2, eqs. 3-7).

    h_attn_t = GRU([v_t, d_t, a_{t-1}], h_attn_{t-1})                  (3)  a_{t-1}: 32-d embedding
    S = {s_1..s_T} = BiLSTM(w_1..w_T)                                  (4)
    s^_t = Attn(S, h_attn_t), v^_t = Attn(V_t, s^_t), d^_t = Attn(D_t, s^_t)   (5)
    h_a_t = GRU([s^_t, v^_t, d^_t, a_{t-1}, h_attn_t], h_a_{t-1})     (6)
    a_t = argmax softmax(W_a h_a_t + b_a)                              (7)

Attn is scaled dot-product attention with a learned key projection (``encoders.Attention``).
The recurrent state is the concatenation [h_attn, h_a].

With ``instruction_pointer`` (ours, not the paper's) the instruction attention of eq. 5 gets a
log-prior around where along the instruction the agent is:

    p_t = sigmoid(w_p . h_attn_t + b_p),   s^_t = Attn(S, h_attn_t, bias_i = -(r_i - p_t)^2 / (2 sigma^2))

where r_i = i / (L - 1) is word i's place in an instruction of L words and sigma is learned.

With ``room_sense`` (ours) a frozen recogniser gives room-type probabilities for the room the agent
stands in, q_t (R,), and for each grid cell, Q_t (16, R); q_t joins eq. 3's input, and
r^_t = Attn(Q_t, s^_t) and q_t join eq. 6's. With ``room_labels`` q_t and Q_t are one-hot room
types from the simulator's room-type sensors instead: the same policy with perfect room perception.

With ``grid_positions`` (ours) each cell of V_t, D_t and Q_t carries its image place (x, y) in
[-1, 1] appended to its features, so v^_t, d^_t and r^_t end in the attention-weighted place.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agents.models.encoders import Attention
from agents.models.policy import NUM_ACTIONS, POLICIES, PolicyConfig, VLNPolicy
from agents.models.room_sense import RoomSense
from sim.sensors.rooms import VIEW_CELLS
from vlnce.errors import ConfigError


@POLICIES.register("cma")
class CMAPolicy(VLNPolicy):
    bidirectional = True

    def __init__(self, cfg: PolicyConfig, embeddings: torch.Tensor | None = None) -> None:
        super().__init__(cfg, embeddings)
        ds = self.instruction_encoder.output_size
        # index 0 is "no previous action" (t = 0); action k is k + 1
        self.prev_action_embedding = nn.Embedding(NUM_ACTIONS + 1, cfg.prev_action_dim)
        rooms = RoomSense.num_types if cfg.room_sense or cfg.room_labels else 0
        self.visual_gru = nn.GRUCell(cfg.rgb_dim + cfg.depth_dim + cfg.prev_action_dim + rooms, cfg.hidden)
        self.instruction_attn = Attention(ds, cfg.hidden)
        xy = 2 if cfg.grid_positions else 0
        self.rgb_attn = Attention(cfg.rgb_channels + xy, ds)
        self.depth_attn = Attention(cfg.depth_channels + xy, ds)
        self.room_attn = Attention(rooms + xy, ds) if rooms else None
        self.action_gru = nn.GRUCell(ds + cfg.rgb_channels + cfg.depth_channels + cfg.prev_action_dim + cfg.hidden
                                     + 2 * rooms + (3 if rooms else 2) * xy, cfg.hidden)
        # not saved: derived from the grid sizes, so checkpoints stay free of constants
        self.register_buffer("rgb_places", grid_places(self.rgb_cells) if xy else None, persistent=False)
        self.register_buffer("depth_places", grid_places(self.depth_cells) if xy else None, persistent=False)
        self.register_buffer("room_places", grid_places(VIEW_CELLS) if xy and rooms else None, persistent=False)
        self.state_size = 2 * cfg.hidden
        self.pointer_head = self.pointer_log_width = None
        if cfg.instruction_pointer:
            self.pointer_head = nn.Linear(cfg.hidden, 1)
            # a fifth of the instruction either side at the start; the run learns the width
            self.pointer_log_width = nn.Parameter(torch.tensor(math.log(0.2)))

    def encode_instruction(self, tokens: torch.Tensor):
        """(states, final, mask, keys, places): the instruction's attention keys W_K s_i are
        projected once per episode rather than at every step (they were a third of a training
        step's FLOPs); places (B, L) are the words' fractions i / (L - 1) of their instruction."""
        states, final, mask = super().encode_instruction(tokens)
        last = (mask.sum(1, keepdim=True) - 1).clamp(min=1)
        places = torch.arange(mask.shape[1], device=mask.device)[None] / last
        return states, final, mask, self.instruction_attn.key(states), places

    def step(self, instruction, visual, prev_action, state):
        states, _, mask, keys, places = instruction
        h_attn, h_a = state.chunk(2, dim=1)
        a_prev = self.prev_action_embedding(prev_action.long() + 1)
        seen = [visual["rgb"], visual["depth"], a_prev] + ([visual["room_here"]] if self.room_attn is not None else [])
        h_attn = self.visual_gru(torch.cat(seen, 1), h_attn)
        prior, extras = None, {}
        if self.pointer_head is not None:
            where = torch.sigmoid(self.pointer_head(h_attn)).squeeze(-1)
            prior = -((places - where[:, None]) ** 2) / (2 * torch.exp(2 * self.pointer_log_width))
            extras["instruction_position"] = where
        s_hat, alpha_s = self.instruction_attn(states, h_attn, mask, keys, prior)
        v_hat, alpha_v = self.rgb_attn(placed(visual["rgb_grid"], self.rgb_places), s_hat)
        d_hat, alpha_d = self.depth_attn(placed(visual["depth_grid"], self.depth_places), s_hat)
        inputs = [s_hat, v_hat, d_hat, a_prev, h_attn]
        if self.room_attn is not None:
            r_hat, extras["room_attention"] = self.room_attn(placed(visual["room_cells"], self.room_places), s_hat)
            inputs += [r_hat, visual["room_here"]]
        h_a = self.action_gru(torch.cat(inputs, 1), h_a)
        extras.update(instruction_attention=alpha_s, rgb_attention=alpha_v, depth_attention=alpha_d)
        return h_a, torch.cat([h_attn, h_a], 1), extras


def grid_places(cells: int) -> torch.Tensor:
    """(cells, 2) centres (x, y) in [-1, 1] of a square grid's cells, row-major from the top left."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ConfigError(f"grid_positions needs square visual grids; this one has {cells} cells")
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1)


def placed(grid: torch.Tensor, places: torch.Tensor | None) -> torch.Tensor:
    """(B, cells, C + 2) ``grid`` (B, cells, C) with each cell's place appended; unchanged without places."""
    if places is None:
        return grid
    return torch.cat([grid, places.to(grid.dtype).expand(grid.shape[0], -1, -1)], -1)


def cma(**overrides) -> CMAPolicy:
    """Builder with the defaults of ``PolicyConfig``."""
    return CMAPolicy(PolicyConfig(arch="cma", **overrides))
