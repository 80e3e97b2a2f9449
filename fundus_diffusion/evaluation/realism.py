"""Classifier two-sample test: can a small CNN trained from scratch tell real photographs from synthetic ones?

A realism measure that needs no downloaded weights (unlike FID, which it is not). The two sets are balanced (the same
number of images drawn from each), split into K stratified folds, and for every fold a fresh CNN is trained on the
other folds and scores the held-out fold; the result is the ROC AUC (torchmetrics) of each held-out fold, reported as
mean ± std over folds. 0.5 means the classifier cannot tell the sets apart; 1.0 means it always can.

The same recipe, with the same number of images per side, is run between two random halves of the real images: that
control should come out near 0.5, and it shows how far from 0.5 the test drifts on data that truly is alike.
Augmentation is flips only (horizontal and vertical), identical for both sides, so that nothing the recipe does
to one set can be told from the other; the held-out fold is never trained on.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.classification import binary_auroc
from tqdm.auto import tqdm

from .augment import apply_augmentation
from .metrics import summarise
from .recipe import Recipe, fit, plan_batches, seeded_generator

TEST_NAME = "classifier two-sample test (ROC AUC; 0.5 = indistinguishable)"


class RealismCNN(nn.Module):
    """``levels`` stride-2 conv-BN-ReLU stages (width doubling up to 8x), global average pooling, one logit."""

    def __init__(self, width: int = 16, levels: int = 5):
        super().__init__()
        layers, channels = [], 3
        for level in range(levels):
            out = width * 2 ** min(level, 3)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out)]
            layers += [nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


@dataclass
class RealismRecipe(Recipe):
    """The realism classifier's recipe, per fold (fold k trains with seed ``seed + k``)."""

    steps: int = 400
    batch_size: int = 32
    width: int = 16
    folds: int = 5


def _as_inputs(images: torch.Tensor) -> torch.Tensor:
    return images[:, :3].float() / 127.5 - 1


def train_realism_classifier(
    images: torch.Tensor, labels: torch.Tensor, recipe: RealismRecipe, device="cpu", progress: Optional[Callable] = None
) -> RealismCNN:
    """Train on ``uint8 [N, >=3, H, W]`` images with binary ``labels``; batches are drawn with weights inverse to
    class frequency, so each batch is balanced in expectation."""
    generator = seeded_generator(recipe)
    model = RealismCNN(recipe.width).to(device)
    images, labels = images.to(device), labels.to(device)
    counts = torch.bincount(labels.cpu(), minlength=2).clamp(min=1).float()
    plan = plan_batches(
        generator, recipe.steps, recipe.batch_size, len(images), weights=(1.0 / counts)[labels.cpu()], jitter=False,
        vertical_flips=True,
    )  # fmt: skip
    plan = {k: v.to(device) for k, v in plan.items()}
    targets = labels.float()

    def loss_at(step: int) -> torch.Tensor:
        index = plan["index"][step]
        batch, _ = apply_augmentation(_as_inputs(images[index]), plan, step)
        return F.binary_cross_entropy_with_logits(model(batch).float(), targets[index])

    return fit(model, loss_at, recipe, device, progress)


@torch.no_grad()
def realism_scores(model: RealismCNN, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """The classifier's logit (higher = more likely the second set) for each of ``uint8 [N, >=3, H, W]`` images."""
    device = next(model.parameters()).device
    return torch.cat([model(_as_inputs(images[i : i + batch_size].to(device))) for i in range(0, len(images), batch_size)])


def stratified_folds(labels: torch.Tensor, folds: int, generator: torch.Generator) -> torch.Tensor:
    """A fold id per item: each class is shuffled and dealt round-robin into ``folds`` folds."""
    fold = torch.empty(len(labels), dtype=torch.long)
    for value in labels.unique():
        members = torch.nonzero(labels == value).squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        fold[members] = torch.arange(len(members)) % folds
    return fold


def two_sample_auc(
    first: torch.Tensor, second: torch.Tensor, recipe: RealismRecipe = RealismRecipe(), device="cpu", desc: str = ""
) -> Dict:
    """K-fold cross-validated ROC AUC of telling ``second`` from ``first`` (``uint8 [N, >=3, H, W]`` each).

    Both sets must already be balanced (equal sizes) and hold at least ``recipe.folds`` images each. Returns
    ``{"auc": {mean, std, n}, "auc_per_fold", "n_per_class", "folds"}`` (std over folds).
    """
    if len(first) != len(second):
        raise ValueError(f"The two-sample test needs balanced sets; got {len(first)} and {len(second)} images.")
    if len(first) < recipe.folds:
        raise ValueError(f"The two-sample test needs at least {recipe.folds} images per side, got {len(first)}.")
    images = torch.cat([first[:, :3], second[:, :3]]).to(device)
    labels = torch.cat([torch.zeros(len(first), dtype=torch.long), torch.ones(len(second), dtype=torch.long)])
    fold = stratified_folds(labels, recipe.folds, torch.Generator().manual_seed(recipe.seed))
    aucs = []
    for k in range(recipe.folds):
        train, test = torch.nonzero(fold != k).squeeze(1), torch.nonzero(fold == k).squeeze(1)
        progress = partial(tqdm, desc=f"two-sample test {desc}, fold {k + 1}/{recipe.folds}", leave=False)
        recipe_k = RealismRecipe(**{**recipe.to_dict(), "seed": recipe.seed + k})
        model = train_realism_classifier(images[train.to(device)], labels[train], recipe_k, device, progress)
        scores = realism_scores(model, images[test.to(device)]).float().cpu()
        aucs.append(float(binary_auroc(scores, labels[test])))
    return {"auc": summarise(aucs), "auc_per_fold": aucs, "n_per_class": len(first), "folds": recipe.folds}


def realism_test(
    real: torch.Tensor, synthetic: torch.Tensor, recipe: RealismRecipe = RealismRecipe(), device="cpu"
) -> Dict:
    """The two-sample test real vs synthetic and its control, real vs real, with the same images per side.

    ``n`` = min(half the real images, the synthetic images) per side: the control splits the real images into two
    disjoint random halves of ``n``; the main test draws ``n`` real and ``n`` synthetic images at random (seeded).
    Returns ``{"computed": False, "reason"}`` when there are too few images for ``recipe.folds`` folds.
    """
    n = min(len(real) // 2, len(synthetic))
    if n < recipe.folds:
        return {
            "computed": False,
            "reason": f"{TEST_NAME} needs at least {recipe.folds} images per side in {recipe.folds} folds "
            f"(got {len(real)} real, {len(synthetic)} synthetic; the control uses half the real images per side)",
        }
    generator = torch.Generator().manual_seed(recipe.seed)
    real_order = torch.randperm(len(real), generator=generator)
    synthetic_pick = torch.randperm(len(synthetic), generator=generator)[:n]
    return {
        "computed": True,
        "name": TEST_NAME,
        "resolution": int(real.shape[-1]),
        "recipe": recipe.to_dict(),
        "n_real_available": len(real),
        "n_synthetic_available": len(synthetic),
        "real_vs_synthetic": two_sample_auc(real[real_order[:n]], synthetic[synthetic_pick], recipe, device, "real vs synthetic"),
        "real_vs_real": two_sample_auc(real[real_order[:n]], real[real_order[n : 2 * n]], recipe, device, "real vs real"),
    }
