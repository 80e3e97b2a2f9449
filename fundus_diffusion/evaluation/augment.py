"""The one augmentation of the evaluation networks (segmenter, PM classifier, realism classifier).

Random horizontal flips (masks flip with their image), optionally vertical flips, and optionally gain / offset
jitter of +-10 % on images in [-1, 1]. The random numbers come from a plan drawn in advance on a CPU generator
(``recipe.plan_batches``), so a seed gives the same run on any device and applying it needs no host sync.
"""

from typing import Dict, Optional, Tuple

import torch

from ..data.transforms import flip_where


def apply_augmentation(
    images: torch.Tensor, plan: Dict[str, torch.Tensor], step: int, masks: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Step ``step`` of a ``recipe.plan_batches`` plan (already on the images' device): horizontal flips, then, where
    planned, vertical flips and gain / offset jitter. Masks flip with their image and are never jittered."""
    flips = [(plan["hflip"][step], -1)] + ([(plan["vflip"][step], -2)] if "vflip" in plan else [])
    for flip, dim in flips:
        images = flip_where(images, flip, dim)
        if masks is not None:
            masks = flip_where(masks, flip, dim)
    if "gain" in plan:
        images = (images * plan["gain"][step] + plan["bias"][step]).clamp(-1, 1)
    return images, masks
