"""Patch Diffusion (Wang et al. 2023, "Patch Diffusion: Faster and More Data-Efficient Training of Diffusion Models"):
a share of the training steps sees whole images, the others random square crops of a half or a quarter of the side,
each with two coordinate channels that say where in the whole image its pixels lie
(``pipeline_fundus.coordinate_channels``); sampling always denoises whole images, with the whole grid.

A step on crops takes ``(resolution / size) ** 2`` crops of each image of its batch, so that every step trains on as
many pixels (and costs about as much) as a step on whole images. That is ours, not the paper's: its loop enlarges the
batch by a multiplier per crop size (at 256 px, 8 times for quarter-side crops and 2 times for half-side ones: half
a whole-image step's pixels), each crop from another image; here the crops of a step come from the batch's images,
which a set of 134 photographs makes a small difference. The crop size of a step is
drawn with the paper's stochastic schedule: whole images with probability ``full_share``, else a quarter-side crop
with probability ``(1 - full_share) * 2 / 5`` and a half-side one with ``(1 - full_share) * 3 / 5``.

Why for fundus photographs: a few hundred photographs are few whole images but very many distinct crops, and what the
generated 256 px images lack (RESULTS.md) is local detail, the disc rim and vessels, which crops show at every noise
level. Whether it helps here is for ``benchmarks/realism_ablation.sh`` with ``--patch_diffusion`` to measure (not yet
run on real data).
"""

from typing import Tuple

import torch

from ..pipelines.pipeline_fundus import coordinate_channels

DIVISORS = (4, 2, 1)  # crop side = resolution / divisor: a quarter, a half, the whole image


def patch_size_probabilities(full_share: float) -> Tuple[float, ...]:
    """The probabilities of a quarter-side crop, a half-side crop and the whole image (``DIVISORS``)."""
    if not 0 <= full_share <= 1:
        raise ValueError(f"The share of steps on whole images must be in [0, 1], got {full_share}.")
    return ((1 - full_share) * 2 / 5, (1 - full_share) * 3 / 5, full_share)


def draw_patch_size(resolution: int, full_share: float) -> int:
    """This step's crop side, from the CPU's global generator (which checkpoints save, so a resumed run draws what
    an uninterrupted one would)."""
    probabilities = torch.tensor(patch_size_probabilities(full_share))
    divisor = DIVISORS[int(torch.multinomial(probabilities, 1).item())]
    return resolution // divisor


def random_patches(pixel_values: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(crops, coordinates, source)``: ``(R / size) ** 2`` random ``size`` x ``size`` crops of each image of the
    ``[B, C, R, R]`` batch (every channel, so masks stay with their image), their coordinate channels ``[N, 2, size,
    size]`` (where their pixels lie in the whole image), and each crop's image index ``[N]``, for the labels. At
    ``size == R`` the batch itself and the whole grid. Positions come from the global generator of the batch's
    device."""
    batch, _, resolution, _ = pixel_values.shape
    device = pixel_values.device
    grid = coordinate_channels(resolution, 1, device, pixel_values.dtype)
    if size == resolution:
        return pixel_values, grid.expand(batch, -1, -1, -1), torch.arange(batch, device=device)
    if resolution % size:
        raise ValueError(f"A {size} px crop does not tile a {resolution} px image.")
    source = torch.arange(batch, device=device).repeat_interleave((resolution // size) ** 2)
    top, left = (torch.randint(0, resolution - size + 1, (len(source),), device=device) for _ in range(2))
    offsets = torch.arange(size, device=device)
    rows, columns = (top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]
    crops = pixel_values[source[:, None, None], :, rows, columns].permute(0, 3, 1, 2)
    coordinates = grid[torch.zeros_like(source)[:, None, None], :, rows, columns].permute(0, 3, 1, 2)
    return crops.contiguous(), coordinates.contiguous(), source
