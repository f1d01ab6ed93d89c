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

With ``room_compass`` (ours) the state also holds an egocentric memory of the rooms seen around
the agent, M_t (24, R): one bearing bin per heading the agent can face (VLN-CE turns by 15
degrees). Each step first turns it with the previous action (a left turn moves what was at bearing
b to b - 15 degrees), then writes the current view's room types into the bins inside the field of
view (each bin the row-mean of the grid column it looks through). c^_t = Attn([M_t, sin b, cos b],
s^_t) joins eq. 6's input: after a look-around scan, where the room the instruction names lies,
left or right, even when it has left the view. Its attention over the bins can be supervised
(``TrainConfig.compass_grounding``): towards the bins holding the room the instruction names next.
With ``compass_readout`` (ours) that attention alpha_c_t (24,) also reaches the action logits
directly, gated by the state:

    a_t = argmax softmax(W_a h_a_t + b_a + sigmoid(w_g . h_a_t + b_g) W_c (24 alpha_c_t))      (7')

W_c (4 x 24) starts at zero, so a policy grown with it acts as before. It reads the attention
against an even spread (24 alpha_c: 1 in every bin when even): with alpha_c itself the inputs are
a few hundredths, and Adam's steps of a fixed size on W_c moved the logits by that little, so
after an epoch the readout had the right signs at a twentieth of a logit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agents.models.encoders import Attention
from agents.models.policy import NUM_ACTIONS, POLICIES, PolicyConfig, VLNPolicy
from agents.models.room_sense import RoomSense
from sim.actions import Action
from sim.sensors.rooms import VIEW_CELLS, VIEW_GRID
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
        compass = rooms + 2 if cfg.room_compass else 0  # its attended bins: room types and bearing
        self.action_gru = nn.GRUCell(ds + cfg.rgb_channels + cfg.depth_channels + cfg.prev_action_dim + cfg.hidden
                                     + 2 * rooms + (3 if rooms else 2) * xy + compass, cfg.hidden)
        # not saved: derived from the grid sizes, so checkpoints stay free of constants
        self.register_buffer("rgb_places", grid_places(self.rgb_cells) if xy else None, persistent=False)
        self.register_buffer("depth_places", grid_places(self.depth_cells) if xy else None, persistent=False)
        self.register_buffer("room_places", grid_places(VIEW_CELLS) if xy and rooms else None, persistent=False)
        self.state_size = 2 * cfg.hidden
        self.next_room = nn.Linear(ds, RoomSense.num_types) if cfg.next_room_head else None
        self.compass_attn = None
        if cfg.room_compass:
            self.compass_attn = Attention(rooms + 2, ds)
            writes, bearings = compass_geometry()
            self.register_buffer("compass_writes", writes, persistent=False)
            self.register_buffer("compass_bearings", bearings, persistent=False)
            self.state_size += COMPASS_BINS * rooms
        self.compass_readout = self.compass_gate = None
        if cfg.compass_readout:
            self.compass_readout = nn.Linear(COMPASS_BINS, NUM_ACTIONS, bias=False)
            nn.init.zeros_(self.compass_readout.weight)
            self.compass_gate = nn.Linear(cfg.hidden, 1)
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
        hidden = self.cfg.hidden
        h_attn, h_a, compass = state[:, :hidden], state[:, hidden:2 * hidden], state[:, 2 * hidden:]
        a_prev = self.prev_action_embedding(prev_action.long() + 1)
        seen = [visual["rgb"], visual["depth"], a_prev] + ([visual["room_here"]] if self.room_attn is not None else [])
        h_attn = self.visual_gru(torch.cat(seen, 1), h_attn)
        prior, extras = None, {}
        if self.pointer_head is not None:
            where = torch.sigmoid(self.pointer_head(h_attn)).squeeze(-1)
            prior = -((places - where[:, None]) ** 2) / (2 * torch.exp(2 * self.pointer_log_width))
            extras["instruction_position"] = where
        s_hat, alpha_s = self.instruction_attn(states, h_attn, mask, keys, prior)
        if self.next_room is not None:
            extras["next_room"] = self.next_room(s_hat)
        v_hat, alpha_v = self.rgb_attn(placed(visual["rgb_grid"], self.rgb_places), s_hat)
        d_hat, alpha_d = self.depth_attn(placed(visual["depth_grid"], self.depth_places), s_hat)
        inputs = [s_hat, v_hat, d_hat, a_prev, h_attn]
        if self.room_attn is not None:
            r_hat, extras["room_attention"] = self.room_attn(placed(visual["room_cells"], self.room_places), s_hat)
            inputs += [r_hat, visual["room_here"]]
        if self.compass_attn is not None:
            memory = self.update_compass(compass.reshape(len(compass), COMPASS_BINS, -1), prev_action,
                                         visual["room_cells"])
            bearings = self.compass_bearings.to(memory.dtype).expand(len(memory), -1, -1)
            c_hat, extras["compass_attention"] = self.compass_attn(torch.cat([memory, bearings], -1), s_hat)
            extras["compass"] = memory  # the bins the attention chose among, for its supervision
            inputs.append(c_hat)
            compass = memory.flatten(1)
        h_a = self.action_gru(torch.cat(inputs, 1), h_a)
        extras.update(instruction_attention=alpha_s, rgb_attention=alpha_v, depth_attention=alpha_d)
        features = h_a if self.compass_readout is None else torch.cat([h_a, extras["compass_attention"]], 1)
        return features, torch.cat([h_attn, h_a, compass], 1), extras

    def heads(self, features: torch.Tensor):
        """Eq. 7, and with ``compass_readout`` eq. 7': ``features`` (..., hidden + 24) then end in
        the compass attention."""
        if self.compass_readout is None:
            return super().heads(features)
        h_a, alpha = features[..., :self.cfg.hidden], features[..., self.cfg.hidden:]
        logits, progress = super().heads(h_a)
        return logits + torch.sigmoid(self.compass_gate(h_a)) * self.compass_readout(alpha * COMPASS_BINS), progress

    def label_compass(self, prev_actions: torch.Tensor, view_rooms: torch.Tensor) -> torch.Tensor:
        """(B, T, 24, R) the compass that perfect room labels would build along teacher-forced
        trajectories: ``prev_actions`` (B, T) (-1 at t = 0), ``view_rooms`` (B, T, 16) room types
        of the view's cells, -1 for none (a store batch's "view_rooms"). The grounding loss's
        target when the policy's own compass holds the room sense's probabilities."""
        from agents.models.policy import _one_hot

        cells = _one_hot(torch.as_tensor(view_rooms, device=prev_actions.device).long())
        memory = torch.zeros(prev_actions.shape[0], COMPASS_BINS, cells.shape[-1], device=prev_actions.device)
        out = []
        for t in range(prev_actions.shape[1]):
            memory = self.update_compass(memory, prev_actions[:, t], cells[:, t])
            out.append(memory)
        return torch.stack(out, 1)

    def update_compass(self, memory: torch.Tensor, prev_action: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """The compass (B, 24, R) turned by ``prev_action`` (B,) and written with the room types of
        the view's cells ``cells`` (B, 16, R), row-major 4 x 4."""
        shift = (prev_action == Action.TURN_LEFT).long() - (prev_action == Action.TURN_RIGHT).long()
        index = (torch.arange(COMPASS_BINS, device=memory.device)[None] + shift[:, None]) % COMPASS_BINS
        memory = memory.gather(1, index[..., None].expand_as(memory))
        columns = cells.reshape(len(cells), VIEW_GRID, VIEW_GRID, -1).mean(1)  # (B, 4 columns, R)
        writes = self.compass_writes.to(memory.dtype)  # (24, 4): bin <- column; zero rows out of view
        seen = writes.sum(1)[None, :, None]
        return memory * (1 - seen) + torch.einsum("kc,bcr->bkr", writes, columns)


COMPASS_BINS = 24  # VLN-CE's 15-degree turns: one bin per heading the agent can face


def compass_geometry(hfov_deg: float = 90.0, grid: int = VIEW_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """(writes (24, grid), bearings (24, 2)). Bin k looks along bearing b_k = 15 k degrees, left
    of the heading positive; bearings holds (sin b_k, cos b_k). Row k of writes maps the view's
    grid columns (left to right) onto bin k: a one-hot of the column its bearing falls in, split
    evenly on a boundary, zeros where the bearing is not strictly inside the field of view."""
    half = math.radians(hfov_deg) / 2
    writes = torch.zeros(COMPASS_BINS, grid)
    angles = torch.arange(COMPASS_BINS) * 2 * math.pi / COMPASS_BINS
    for k in range(COMPASS_BINS):
        b = math.remainder(float(angles[k]), 2 * math.pi)
        if abs(b) >= half - 1e-6:
            continue
        x = (-math.tan(b) / math.tan(half) + 1) / 2 * grid  # image column coordinate, 0 at the left edge
        if abs(x - round(x)) < 1e-6 and 0 < round(x) < grid:
            writes[k, round(x) - 1] = writes[k, round(x)] = 0.5
        else:
            writes[k, min(int(x), grid - 1)] = 1.0
    return writes, torch.stack([torch.sin(angles), torch.cos(angles)], 1)


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
