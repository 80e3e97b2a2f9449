"""The augmentation both evaluation networks (segmenter, PM classifier) train with."""

from typing import Dict, Optional, Tuple

import torch


def flip_and_jitter(
    images: torch.Tensor, generator: torch.Generator, masks: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Random horizontal flips (masks flip with their image) and gain / offset jitter of +-10 % on images in [-1, 1].

    The random numbers come from the CPU ``generator`` whatever the device, so a seed gives the same run anywhere.
    """
    n = images.shape[0]
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)[:, None, None, None]
    images = torch.where(flip, images.flip(-1), images)
    if masks is not None:
        masks = torch.where(flip, masks.flip(-1), masks)
    gain = (1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)).to(images.device)
    bias = (0.2 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)).to(images.device)
    return (images * gain + bias).clamp(-1, 1), masks


def apply_augmentation(
    images: torch.Tensor, plan: Dict[str, torch.Tensor], step: int, masks: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Step ``step`` of a ``recipe.plan_batches`` plan (already on the images' device): horizontal flips, then, where
    planned, gain / offset jitter and vertical flips. Masks flip with their image and are never jittered."""
    flips = [(plan["hflip"][step], -1)] + ([(plan["vflip"][step], -2)] if "vflip" in plan else [])
    for flip, dim in flips:
        flip = flip[:, None, None, None]
        images = torch.where(flip, images.flip(dim), images)
        if masks is not None:
            masks = torch.where(flip, masks.flip(dim), masks)
    if "gain" in plan:
        images = (images * plan["gain"][step] + plan["bias"][step]).clamp(-1, 1)
    return images, masks
