"""The one training loop of the evaluation networks (segmenter, PM classifier, realism classifier).

Each network is trained the same way: a seeded initialisation, AdamW with a one-cycle learning-rate schedule, and
batches whose indices and augmentation are drawn in advance from a CPU ``torch.Generator`` (``plan_batches``), so a
seed gives the same run on any device and the loop needs no host-device synchronisation per step. On CUDA the
forward pass runs under bf16 autocast; losses are computed in float32.
"""

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn


@dataclass
class Recipe:
    """What every evaluation network's training fixes; each network's recipe subclasses it with its own defaults."""

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 8
    seed: int = 0

    def to_dict(self) -> Dict:
        return asdict(self)


def seeded_generator(recipe: Recipe) -> torch.Generator:
    """Seed the initial weights (``torch.manual_seed``) and return the CPU generator that plans the batches."""
    torch.manual_seed(recipe.seed)
    return torch.Generator().manual_seed(recipe.seed)


def autocast_for(device) -> object:
    """bf16 autocast on CUDA (the networks are convolutional, their norms and losses stay float32); none elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def plan_batches(
    generator: torch.Generator,
    steps: int,
    batch_size: int,
    num_items: int,
    weights: Optional[torch.Tensor] = None,
    jitter: bool = True,
    vertical_flips: bool = False,
) -> Dict[str, torch.Tensor]:
    """Every step's batch indices and augmentation parameters, drawn step by step from ``generator``.

    Per step, in this order: ``batch_size`` indices (uniform with replacement, or ``torch.multinomial`` over
    ``weights``), horizontal flips, then, with ``jitter``, gain and offset, and, with ``vertical_flips``, vertical
    flips. Returns tensors with a leading ``steps`` dimension (``augment.apply_augmentation`` reads one step).
    """
    plan = {"index": [], "hflip": []}
    if jitter:
        plan.update(gain=[], bias=[])
    if vertical_flips:
        plan["vflip"] = []
    for _ in range(steps):
        if weights is None:
            plan["index"].append(torch.randint(num_items, (batch_size,), generator=generator))
        else:
            plan["index"].append(torch.multinomial(weights, batch_size, replacement=True, generator=generator))
        plan["hflip"].append(torch.rand(batch_size, generator=generator) < 0.5)
        if jitter:
            plan["gain"].append(1 + 0.2 * (torch.rand(batch_size, 1, 1, 1, generator=generator) - 0.5))
            plan["bias"].append(0.2 * (torch.rand(batch_size, 1, 1, 1, generator=generator) - 0.5))
        if vertical_flips:
            plan["vflip"].append(torch.rand(batch_size, generator=generator) < 0.5)
    return {key: torch.stack(values) if values else torch.empty(0) for key, values in plan.items()}


def plan_nuisance(
    generator: torch.Generator,
    steps: int,
    batch_size: int,
    gamma_max: float,
    blur_sigma_max: float,
    noise_max: float,
    resize_scales: Sequence[float],
    copies: int,
    noise_fields: int,
) -> Dict[str, torch.Tensor]:
    """Every step's photometric nuisance per image (``augment.apply_nuisance`` reads one step), drawn step by step
    from ``generator`` after ``plan_batches`` (so the batches are the same as without it).

    Per step, in this order: per-channel gamma ``[B, 3, 1, 1]`` log-uniform in [1 / ``gamma_max``, ``gamma_max``],
    blur sigma ``[B]`` uniform in [0, ``blur_sigma_max``] px, noise standard deviation ``[B]`` uniform in
    [0, ``noise_max``] (0-255 units), which of ``noise_fields`` precomputed noise fields, which of ``resize_scales``
    (a down-up round trip; 1.0 = none) and which of ``copies`` JPEG re-encoded copies of the image.
    """
    keys = ("gamma", "blur", "noise", "noise_field", "resize", "copy")
    plan = {key: [] for key in keys}
    log_gamma = torch.log(torch.tensor(gamma_max))
    for _ in range(steps):
        plan["gamma"].append(torch.exp(log_gamma * (2 * torch.rand(batch_size, 3, 1, 1, generator=generator) - 1)))
        plan["blur"].append(blur_sigma_max * torch.rand(batch_size, generator=generator))
        plan["noise"].append(noise_max / 255 * torch.rand(batch_size, generator=generator))
        plan["noise_field"].append(torch.randint(noise_fields, (batch_size,), generator=generator))
        plan["resize"].append(torch.randint(len(resize_scales), (batch_size,), generator=generator))
        plan["copy"].append(torch.randint(copies, (batch_size,), generator=generator))
    return {key: torch.stack(values) for key, values in plan.items()}


def fit(
    model: nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    recipe: Recipe,
    device="cpu",
    progress: Optional[Callable] = None,
) -> nn.Module:
    """Train ``model`` for ``recipe.steps`` steps of ``loss_at(step)`` (AdamW, one-cycle schedule); returns it in eval
    mode.

    ``loss_at`` builds the step's batch (usually from a ``plan_batches`` plan already on the device) and returns
    the loss; it runs under ``autocast_for(device)``.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=max(recipe.steps, 2))
    model.train()
    for step in progress(range(recipe.steps)) if progress else range(recipe.steps):
        with autocast_for(device):
            loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval()
