"""Augmentation for training on a few hundred C-channel fundus tensors without the samples learning it.

For the DDPM, ``random_quarter_turns``: rotations the UNet is told about (rotation conditioning, see
``pipeline_fundus.embedding_ids``), so they enlarge the set without leaking into upright samples.

For the DCGAN, differentiable augmentation (DiffAugment, Zhao et al. 2020):

With a few hundred real pairs the discriminator memorises the training set and stops teaching the generator.
DiffAugment applies the same family of random, differentiable transforms to every tensor the discriminator sees,
real and generated, in both the discriminator and the generator update, so the generator is never pushed to
reproduce the augmentations themselves. Colour transforms touch only the RGB channels; geometric ones move image
and masks together, so the discriminator still judges whether a mask fits its image.
"""

from typing import Callable, Dict, Sequence, Tuple

import torch

from ..pipelines.pipeline_fundus import ROTATIONS

RGB = 3


def random_quarter_turns(x: torch.Tensor, prob: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn each square sample, with probability ``prob``, by 1, 2 or 3 quarter turns (equally likely), image and
    masks together; returns the turned batch and each sample's number of quarter turns (``[B]`` long, 0 = upright)."""
    turned = (torch.rand(x.shape[0], device=x.device) < prob).long()
    turns = turned * torch.randint(1, ROTATIONS, (x.shape[0],), device=x.device)
    views = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(ROTATIONS)])  # [ROTATIONS, B, C, H, W]
    return views[turns, torch.arange(x.shape[0], device=x.device)], turns


def _per_sample(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(low, high)


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation and contrast of the RGB channels; mask channels pass unchanged."""
    rgb = x[:, :RGB]
    rgb = rgb + _per_sample(x, -0.5, 0.5)
    mean = rgb.mean(dim=1, keepdim=True)
    rgb = (rgb - mean) * _per_sample(x, 0.0, 2.0) + mean
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * _per_sample(x, 0.5, 1.5) + mean
    return torch.cat([rgb, x[:, RGB:]], dim=1)


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ``ratio`` of its size in x and y, filling with zeros."""
    b, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (b, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (b, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None] - dy  # source row of every output row, [B, H]
    cols = torch.arange(w, device=x.device)[None] - dx
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    index = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    shifted = x.flatten(2).gather(2, index.flatten(1)[:, None].expand(b, c, h * w)).view_as(x)
    return shifted * inside[:, None].to(x.dtype)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of side ``ratio`` of the image per sample, in every channel."""
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_y % 2), (b, 1), device=x.device) - size_y // 2
    left = torch.randint(0, w + (1 - size_x % 2), (b, 1), device=x.device) - size_x // 2
    rows = torch.arange(h, device=x.device)[None] - top
    cols = torch.arange(w, device=x.device)[None] - left
    hole = ((rows >= 0) & (rows < size_y))[:, :, None] & ((cols >= 0) & (cols < size_x))[:, None, :]
    return x * (~hole)[:, None].to(x.dtype)


AUGMENTATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


class DiffAugment:
    """``DiffAugment("color,translation,cutout")(x)``: the named transforms in order; ``""`` is the identity."""

    def __init__(self, policy: str = "color,translation,cutout"):
        names = [p.strip() for p in policy.split(",") if p.strip()] if isinstance(policy, str) else list(policy)
        unknown = [n for n in names if n not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"Unknown DiffAugment transform(s) {unknown}: choose from {', '.join(AUGMENTATIONS)}.")
        self.names: Sequence[str] = tuple(names)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = AUGMENTATIONS[name](x)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.names)!r})"
