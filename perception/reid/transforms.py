"""Training-time image transforms for re-ID: RMG's random shifting augmentation and random erasing
(the trainer flips, because flipping GASM's joint maps also swaps left and right).

Images are torch tensors (C, H, W), float in [0, 1] or uint8. Every transform takes a
``numpy.random.Generator`` so a seeded run repeats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if img.shape[-2:] == (h, w):
        return img.clone()
    out = F.interpolate(img[None].float(), size=(h, w), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    if img.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(img.dtype)


@dataclass
class RSA:
    """Random shifting augmentation (RMG section III-D).

    With probability p: with probability p_c crop a region of r_c in [r_c_min, 1] of the height and
    width at a uniform position (else keep the whole image); resize it by r_h in [r_h_min, 1/r_c]
    in height and r_w in [r_w_min, 1] in width; paste it at a uniform position fully inside a
    canvas of the input size filled with grey (0.5 float, 127 uint8). Paper settings: p_c 0.5,
    r_c_min 0.7, r_h_min = r_w_min = 0.5; p is not given (1.0 here).
    """

    p: float = 1.0
    p_c: float = 0.5
    r_c_min: float = 0.7
    r_h_min: float = 0.5
    r_w_min: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p", "p_c", "r_c_min", "r_h_min", "r_w_min"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RSA {name} must be in [0, 1], got {value}")
        if self.r_c_min == 0.0:
            raise ValueError("RSA r_c_min must be > 0")

    def sample(self, h: int, w: int, rng: np.random.Generator) -> dict | None:
        """Draw the parameters for an (h, w) image; None means leave the image as it is."""
        if rng.random() >= self.p:
            return None
        r_c = rng.uniform(self.r_c_min, 1.0) if rng.random() < self.p_c else 1.0
        ch, cw = max(1, round(h * r_c)), max(1, round(w * r_c))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        r_h = rng.uniform(self.r_h_min, 1.0 / r_c)
        r_w = rng.uniform(self.r_w_min, 1.0)
        ph, pw = min(h, max(1, round(ch * r_h))), min(w, max(1, round(cw * r_w)))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        return dict(r_c=r_c, r_h=r_h, r_w=r_w, crop=(top, left, ch, cw), size=(ph, pw), at=(y, x))

    def __call__(self, img: torch.Tensor, rng: np.random.Generator, image_channels: int | None = None) -> torch.Tensor:
        """Shift ``img``; channels from ``image_channels`` on (label maps that travel with the
        image, such as GASM's teacher maps) are filled with 0 instead of grey."""
        if img.ndim != 3:
            raise ValueError(f"RSA expects a (C, H, W) image, got shape {tuple(img.shape)}")
        h, w = img.shape[-2:]
        params = self.sample(h, w, rng)
        if params is None:
            return img
        top, left, ch, cw = params["crop"]
        patch = _resize(img[:, top:top + ch, left:left + cw], *params["size"])
        fill = 127 if img.dtype == torch.uint8 else 0.5
        out = torch.full_like(img, fill)
        if image_channels is not None:
            out[image_channels:] = 0
        y, x = params["at"]
        out[:, y:y + patch.shape[1], x:x + patch.shape[2]] = patch
        return out


def random_erasing(img: torch.Tensor, rng: np.random.Generator, p: float = 0.5, area=(0.02, 0.4),
                   aspect=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): a random rectangle filled with uniform noise."""
    if rng.random() >= p:
        return img
    _, h, w = img.shape
    for _ in range(10):
        target = rng.uniform(*area) * h * w
        ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
        eh, ew = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < eh < h and 0 < ew < w:
            y, x = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            out = img.clone()
            noise = torch.from_numpy(rng.random((img.shape[0], eh, ew))).to(torch.float32)
            out[:, y:y + eh, x:x + ew] = (noise * 255).to(img.dtype) if img.dtype == torch.uint8 else noise.to(img.dtype)
            return out
    return img
