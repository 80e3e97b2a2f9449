"""Joint image + mask transforms between schema samples and C-channel model tensors in [-1, 1].

Channel layout: 0-2 RGB, then one channel per mask in ``mask_names`` order (disc = 3, atrophy = 4). Mask channels
are -1 / +1 on input; on output a mask is ``channel > 0``. Images are resized with antialiasing, masks with nearest
neighbour, and every geometric operation is applied to both.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

FUNDUS_THRESHOLD = 12  # a pixel whose brightest channel exceeds this (of 255) belongs to the fundus field


def fundus_bbox(image: Image.Image) -> Tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of the bright fundus field on its black surround."""
    rgb = np.asarray(image.convert("RGB"))
    field = rgb.max(axis=2) > FUNDUS_THRESHOLD
    rows, cols = np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))
    if rows.size == 0:  # an all-black image: keep everything
        return 0, 0, image.width, image.height
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def square_box(box: Tuple[int, int, int, int]) -> Tuple[int, int, int, int]:
    """The square box centred on ``box`` whose side is the longer of its sides (it may extend past the image)."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def pair_to_array(
    image: Image.Image, masks: Dict[str, Image.Image], mask_names: Sequence[str], resolution: int
) -> np.ndarray:
    """Crop the fundus field to a square (padding with black), resize, and stack to ``uint8 [C, H, W]``.

    Mask channels hold 0 or 255. The uint8 form is what the training cache stores (4x smaller than float).
    """
    box = square_box(fundus_bbox(image))
    size = (resolution, resolution)
    rgb = image.convert("RGB").crop(box).resize(size, Image.LANCZOS, reducing_gap=3.0)
    channels = [np.asarray(rgb).transpose(2, 0, 1)]
    for name in mask_names:
        mask = masks[name].convert("L").crop(box).resize(size, Image.NEAREST)
        channels.append(np.where(np.asarray(mask)[None] >= 128, 255, 0).astype(np.uint8))
    return np.concatenate(channels, axis=0)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``uint8 [C, H, W]`` -> float32 in [-1, 1] (mask channels become exactly -1 / +1)."""
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(127.5).sub_(1.0)


def flip_where(x: torch.Tensor, flags: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The batch ``x`` (``[N, C, H, W]``) with the samples whose ``flags`` (``[N]`` bool, on ``x``'s device) are set
    flipped along ``dim`` (-1: left-right, -2: up-down): every channel, so masks flip with their image. The one flip of
    the training batches and the evaluation networks; no host sync."""
    return torch.where(flags[:, None, None, None], x.flip(dim), x)


def split_channels(x: torch.Tensor, mask_names: Sequence[str]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """``[B, C, H, W]`` in [-1, 1] -> RGB in [0, 1] ``[B, 3, H, W]`` and binary float masks ``{name: [B, H, W]}``."""
    if x.ndim != 4 or x.shape[1] != 3 + len(mask_names):
        raise ValueError(f"Expected [B, {3 + len(mask_names)}, H, W] for masks {list(mask_names)}, got {list(x.shape)}.")
    images = (x[:, :3].float() / 2 + 0.5).clamp(0, 1)
    masks = {name: (x[:, 3 + i].float() > 0).float() for i, name in enumerate(mask_names)}
    return images, masks


def tensor_to_outputs(x: torch.Tensor, mask_names: Sequence[str], output_type: str = "pil"):
    """Model output ``[B, C, H, W]`` in [-1, 1] -> (images, masks) as the pipelines return them.

    ``pil``: a list of RGB images and a list of ``{name: L image (0 / 255)}``; ``np``: float32 ``[B, H, W, 3]`` in
    [0, 1] and a list of ``{name: float32 [H, W] in {0, 1}}``; ``pt``: ``[B, 3, H, W]`` in [0, 1] and a list of
    ``{name: [H, W] in {0, 1}}``.
    """
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}.")
    images, masks = split_channels(x, mask_names)
    batch = images.shape[0]
    if output_type == "pt":
        return images, [{name: masks[name][i] for name in mask_names} for i in range(batch)]
    images_np = images.permute(0, 2, 3, 1).cpu().numpy()
    masks_np = {name: m.cpu().numpy() for name, m in masks.items()}
    if output_type == "np":
        return images_np, [{name: masks_np[name][i] for name in mask_names} for i in range(batch)]
    pil_images: List[Image.Image] = [Image.fromarray((im * 255).round().astype(np.uint8), mode="RGB") for im in images_np]
    pil_masks = [
        {name: Image.fromarray((masks_np[name][i] * 255).astype(np.uint8), mode="L") for name in mask_names}
        for i in range(batch)
    ]
    return pil_images, pil_masks
