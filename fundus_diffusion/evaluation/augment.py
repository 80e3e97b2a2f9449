"""The augmentation both evaluation networks (segmenter, PM classifier) train with."""

from typing import Optional, Tuple

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
