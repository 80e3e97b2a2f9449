"""The downstream segmenter: one small U-Net and one fixed, seeded training recipe, used for every comparison.

Recipe (``SegmenterRecipe`` defaults, identical for real, synthetic and real + synthetic training sets):

- Model: a 4-level U-Net, widths 8-16-32-64, two 3x3 conv-GroupNorm-ReLU per level, max pooling down,
  nearest upsampling + skip concatenation up, a 1x1 head with one logit per mask (~0.12 M parameters).
- Input: RGB scaled to [-1, 1], the fundus field cropped square and resized to the evaluation resolution
  (``fundus_diffusion.data.transforms.pair_to_array``); targets are the binary masks.
- Augmentation: joint horizontal flip of image and masks, image gain and offset jitter of +-10 %
  (``augment.apply_augmentation``, shared with the other evaluation networks).
- Batches of 16 drawn uniformly with replacement from the pooled training set (real + synthetic is one pool).
- Loss: binary cross-entropy + soft Dice, per mask channel, over the images annotated for that mask. AdamW, lr 2e-3, weight decay 1e-4, one-cycle schedule.
- Everything random comes from ``torch.Generator().manual_seed(seed)`` (batches and augmentation, drawn in advance
  by ``recipe.plan_batches``) and ``torch.manual_seed(seed)`` (initial weights); the loop is ``recipe.fit``.
- Prediction: sigmoid > 0.5.
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .augment import apply_augmentation
from .recipe import Recipe, fit, plan_batches, seeded_generator


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class SegmenterUNet(nn.Module):
    """A plain U-Net: RGB in, one logit per mask out. ``encode`` gives the pooled bottleneck features."""

    def __init__(self, num_masks: int, width: int = 16, levels: int = 4):
        super().__init__()
        widths = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList(_block(cin, cout) for cin, cout in zip([3] + widths[:-1], widths))
        self.up = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in reversed(range(levels - 1)))
        self.head = nn.Conv2d(widths[0], num_masks, 1)

    def _encoder(self, x: torch.Tensor):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 ** (len(self.down) - 1):
            raise ValueError(f"Input size {x.shape[-1]} must be divisible by {2 ** (len(self.down) - 1)}.")
        skips = self._encoder(x)
        x = skips.pop()
        for block in self.up:
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skips.pop()], dim=1))
        return self.head(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled bottleneck activations ``[B, 8 * width]``: the memorisation feature space."""
        return self._encoder(x)[-1].mean(dim=(2, 3))


@dataclass
class SegmenterRecipe(Recipe):
    """The segmenter's recipe: ``Recipe``'s defaults (batches of 16, lr 2e-3, width 8) for 800 steps, the budget of
    every figure in RESULTS.md."""

    steps: int = 800


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, annotated: Optional[torch.Tensor] = None) -> torch.Tensor:
    """BCE + (1 - soft Dice), averaged over mask channels (in float32 whatever the logits' precision).

    ``annotated`` (``bool [B, M]``, None: all) leaves out each sample's masks it is not annotated for: they count in
    neither term, and a channel no sample of the batch is annotated for adds nothing.
    """
    logits = logits.float()
    weights = torch.ones(logits.shape[:2], device=logits.device) if annotated is None else annotated.float()
    pixel_weights = weights[:, :, None, None]
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bce = (bce * pixel_weights).sum() / (weights.sum() * logits[0, 0].numel()).clamp(min=1)
    probs, targets = torch.sigmoid(logits) * pixel_weights, targets * pixel_weights
    inter = (probs * targets).sum(dim=(0, 2, 3))
    soft_dice = (2 * inter + 1) / (probs.sum(dim=(0, 2, 3)) + targets.sum(dim=(0, 2, 3)) + 1)
    present = (weights.sum(dim=0) > 0).float()
    return bce + ((1 - soft_dice) * present).sum() / present.sum().clamp(min=1)


def to_model_inputs(arrays: torch.Tensor, num_masks: int):
    """``uint8 [N, 3 + M, H, W]`` (as ``pair_to_array`` stacks them) -> images in [-1, 1] and masks in {0, 1}."""
    x = arrays.float()
    return x[:, :3] / 127.5 - 1, (x[:, 3 : 3 + num_masks] > 127).float()


def train_segmenter(
    arrays: torch.Tensor,
    num_masks: int,
    recipe: SegmenterRecipe = SegmenterRecipe(),
    device="cpu",
    progress: Optional[Callable] = None,
    annotated: Optional[torch.Tensor] = None,
) -> SegmenterUNet:
    """Train the recipe on ``uint8 [N, 3 + num_masks, H, W]`` arrays (moved to ``device`` once, as uint8);
    ``annotated`` (``bool [N, num_masks]``, None: all) leaves the masks an image is not annotated for out of the loss."""
    if arrays.ndim != 4 or arrays.shape[1] < 3 + num_masks or len(arrays) == 0:
        raise ValueError(f"Expected uint8 arrays [N > 0, 3 + {num_masks}, H, W], got {list(arrays.shape)}.")
    generator = seeded_generator(recipe)
    model = SegmenterUNet(num_masks, recipe.width).to(device)
    arrays = arrays.to(device)
    if annotated is not None:
        annotated = torch.as_tensor(annotated, dtype=torch.bool).to(device)
        if annotated.shape != (len(arrays), num_masks):
            raise ValueError(f"Expected annotation flags [{len(arrays)}, {num_masks}], got {list(annotated.shape)}.")
    plan = {k: v.to(device) for k, v in plan_batches(generator, recipe.steps, recipe.batch_size, len(arrays)).items()}

    def loss_at(step: int) -> torch.Tensor:
        index = plan["index"][step]
        images, masks = to_model_inputs(arrays[index], num_masks)
        images, masks = apply_augmentation(images, plan, step, masks)
        return segmentation_loss(model(images), masks, None if annotated is None else annotated[index])

    return fit(model, loss_at, recipe, device, progress)


@torch.no_grad()
def _map_batches(fn: Callable, model: SegmenterUNet, arrays: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    outputs = [fn(to_model_inputs(arrays[i : i + batch_size].to(device), 0)[0]).cpu() for i in range(0, len(arrays), batch_size)]
    return torch.cat(outputs)


def predict_masks(model: SegmenterUNet, arrays: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Binary predictions ``bool [N, M, H, W]`` for ``uint8 [N, >=3, H, W]`` arrays."""
    return _map_batches(lambda x: model(x) > 0, model, arrays, batch_size)


def encode_images(model: SegmenterUNet, arrays: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Pooled bottleneck features ``[N, 8 * width]`` of ``uint8 [N, >=3, H, W]`` arrays."""
    return _map_batches(model.encode, model, arrays, batch_size)
