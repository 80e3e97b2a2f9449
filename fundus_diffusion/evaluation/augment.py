"""The one augmentation of the evaluation networks (segmenter, PM classifier, realism classifier).

Random horizontal flips (masks flip with their image), optionally vertical flips, and optionally gain / offset
jitter of +-10 % on images in [-1, 1]. The random numbers come from a plan drawn in advance on a CPU generator
(``recipe.plan_batches``), so a seed gives the same run on any device and applying it needs no host sync.

The realism classifier's robust judge adds nuisance that no one would call unrealistic, drawn identically for both
sets it compares (``recipe.plan_nuisance``): a JPEG re-encode (``jpeg_copies``, PIL on the CPU, done once per image
before training), then on the device per-channel gamma, Gaussian blur, a down-up resize round trip and Gaussian noise
(``apply_nuisance``).
"""

import io
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

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


def jpeg_copies(images: torch.Tensor, generator: torch.Generator, copies: int, quality_min: int) -> torch.Tensor:
    """``uint8 [N, copies, 3, H, W]``: each of ``uint8 [N, 3, H, W]`` images (CPU) re-encoded ``copies`` times as JPEG
    with PIL (its default 4:2:0 chroma subsampling), each at a quality drawn uniformly from [``quality_min``, 100]."""
    qualities = torch.randint(quality_min, 101, (len(images), copies), generator=generator)
    out = torch.empty((len(images), copies, *images.shape[1:]), dtype=torch.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB")
        for j, quality in enumerate(qualities[i].tolist()):
            buffer = io.BytesIO()
            pil.save(buffer, format="JPEG", quality=quality)
            decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            out[i, j] = torch.from_numpy(decoded.copy()).permute(2, 0, 1)
    return out


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of each of ``images [B, C, H, W]`` with its own ``sigma [B]`` px (0 = unchanged),
    kernel radius ``radius`` px, reflect padding: one grouped convolution per axis, no host sync."""
    b, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
    x = F.pad(images.reshape(1, b * c, h, w), (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def down_up(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, C, H, W]`` (float) brought down to ``size`` px (bilinear, antialiased) and back up to their own size
    (bilinear): the detail finer than the ``size`` px grid gone, the rest where it was."""
    down = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=images.shape[-2:], mode="bilinear", align_corners=False)


def resize_round_trip(images: torch.Tensor, level: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """Each of ``images [B, C, H, W]`` resized to ``scales[level]`` of its size and back (bilinear, antialiased on
    the way down; a scale of 1 leaves it as it is). Every scale is applied to the whole batch and selected per image,
    so nothing waits on the device."""
    out = images
    for i, scale in enumerate(scales):
        if scale >= 1:
            continue
        up = down_up(images, max(1, round(images.shape[-1] * scale)))
        out = torch.where((level == i)[:, None, None, None], up, out)
    return out


def apply_nuisance(
    images: torch.Tensor,
    plan: Dict[str, torch.Tensor],
    step: int,
    noise_bank: torch.Tensor,
    resize_scales: Sequence[float],
    blur_radius: int,
) -> torch.Tensor:
    """Step ``step`` of a ``recipe.plan_nuisance`` plan on ``images [B, 3, H, W]`` in [0, 1]: per-channel gamma,
    Gaussian blur, the down-up round trip, then Gaussian noise (``noise_bank [F, 3, H, W]`` unit-variance fields on
    the device, one chosen per image), clipped to [0, 1]. Runs in float32 even under autocast: bf16 would itself
    round by about 1/255."""
    with torch.autocast(images.device.type, enabled=False):
        x = images.float().clamp(min=1e-6) ** plan["gamma"][step]
        x = gaussian_blur(x, plan["blur"][step], blur_radius)
        x = resize_round_trip(x, plan["resize"][step], resize_scales)
        x = x + plan["noise"][step][:, None, None, None] * noise_bank[plan["noise_field"][step]]
        return x.clamp(0, 1)
