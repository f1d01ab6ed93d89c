"""Room sense: room types recognised from one RGB-D frame, a frozen perception input for CMA.

An instruction names rooms ("go right into the living room, walk into the bathroom"); to follow
it a policy must know which room it stands in and which rooms it sees through doorways. Policies
trained end to end by imitation learn little of this: heads trained on the shipped CMA's frozen
encoders (``vlnce train-rooms --probe``) tell the room a 4 x 4 image cell looks into at 0.46 in the
val_unseen houses, against 0.39 for always guessing the commonest type, and 0.56 for this module.
This module learns it on its own, supervised by the
room labels the embedded houses give every frame (``sim.sensors.rooms``), and hands the policy
probabilities over the room types: the seven names of the instructions' vocabulary, which the
policy's attention only has to match to words.

    here = softmax(W_h [C_rgb(I), C_depth(D)])           (R,)       the room the agent stands in
    cells_k = softmax(U relu(V [C_rgb(I), C_depth(D)]_k))  (16, R)  the room seen in cell k

C_rgb and C_depth are the policies' 4 x 4-grid CNNs (``encoders.ConvEncoder``); R = 7 room types.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.models.encoders import ConvEncoder
from sim.scenes.semantics import ROOM_TYPES
from sim.sensors.rooms import VIEW_CELLS


class RoomSense(nn.Module):
    """Room-type logits from RGB (N, S, S, 3) uint8 and depth (N, S, S, 1) in [0, 1].

    Args:
        image_size: S, the square frame size in pixels (4 * 2^k).
        channels: channels of each CNN's 4 x 4 grid.
        encoders: (rgb, depth) modules to use instead of new CNNs, e.g. a VLN policy's, to probe
            what they encode (``frozen_encoders``); their ``out_channels`` set the heads' sizes.
    """

    num_types = len(ROOM_TYPES)

    def __init__(self, image_size: int = 32, channels: int = 128, encoders: tuple | None = None) -> None:
        super().__init__()
        self.image_size, self.channels = int(image_size), int(channels)
        if encoders is None:
            encoders = ConvEncoder(3, channels, image_size), ConvEncoder(1, channels, image_size)
        self.rgb, self.depth = encoders
        both = self.rgb.out_channels + self.depth.out_channels
        self.here_head = nn.Linear(both * VIEW_CELLS, self.num_types)
        self.cell_head = nn.Sequential(nn.Conv2d(both, both, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(both, self.num_types, 1))

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (here (N, R), cells (N, 16, R)) logits; cells in row-major image order."""
        x = torch.cat([self.rgb(rgb), self.depth(depth)], 1)
        return self.here_head(x.flatten(1)), self.cell_head(x).flatten(2).transpose(1, 2)

    def probabilities(self, rgb: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        here, cells = self(rgb, depth)
        return here.softmax(-1), cells.softmax(-1)


def room_sense(image_size: int = 32, channels: int = 128) -> RoomSense:
    """Builder."""
    return RoomSense(image_size, channels)


def frozen_encoders(policy) -> tuple[nn.Module, nn.Module]:
    """A VLN policy's RGB and depth CNNs, frozen, for a room sense that probes what they encode
    (only its heads train)."""
    if policy.rgb_encoder is None or policy.depth_encoder is None:
        raise ValueError(f"probing needs a policy with RGB and depth encoders; this one's ablation is "
                         f"{policy.cfg.ablation!r}")
    return policy.rgb_encoder.requires_grad_(False), policy.depth_encoder.requires_grad_(False)


__all__ = ["RoomSense", "frozen_encoders", "room_sense"]
