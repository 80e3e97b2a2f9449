"""A small PM / non-PM fundus classifier, trained on real images, that judges class-conditional samples.

The question it answers: when a class-conditional model is asked for PM (or non-PM), how often does a classifier
trained on real photographs agree? The recipe is fixed and seeded so numbers are comparable across models.
"""

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data.schema import LABEL_NAMES
from .arrays import dataset_arrays
from .augment import apply_augmentation
from .recipe import Recipe, fit, plan_batches, seeded_generator
from .splits import split_by_id


class PMClassifier(nn.Module):
    """Four conv-BN-ReLU stages with max pooling, global average pooling and a linear head (two classes)."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, len(LABEL_NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass
class ClassifierRecipe(Recipe):
    """The PM classifier's recipe."""

    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3
    width: int = 32


def train_pm_classifier(
    images: torch.Tensor, labels: torch.Tensor, recipe: ClassifierRecipe = ClassifierRecipe(), device="cpu", progress=None
) -> PMClassifier:
    """Train on ``images`` (float ``[N, 3, H, W]`` in [-1, 1]) with ``labels`` (0 non-PM, 1 PM)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected RGB images [N, 3, H, W], got {list(images.shape)}.")
    if set(labels.unique().tolist()) - {0, 1}:
        raise ValueError("Labels must be 0 (non-PM) or 1 (PM); drop unknown (-1) labels before training.")
    generator = seeded_generator(recipe)
    model = PMClassifier(recipe.width).to(device)
    images, labels = images.to(device), labels.to(device)
    # Balance the classes by sampling each batch with weights inverse to class frequency.
    counts = torch.bincount(labels.cpu(), minlength=2).clamp(min=1).float()
    weights = (1.0 / counts)[labels.cpu()]
    plan = plan_batches(generator, recipe.steps, recipe.batch_size, len(images), weights=weights)
    plan = {k: v.to(device) for k, v in plan.items()}

    def loss_at(step: int) -> torch.Tensor:
        index = plan["index"][step]
        return F.cross_entropy(model(apply_augmentation(images[index], plan, step)[0]).float(), labels[index])

    return fit(model, loss_at, recipe, device, progress)


@torch.no_grad()
def predict(model: PMClassifier, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Predicted class ids for float ``[N, 3, H, W]`` images in [-1, 1]."""
    device = next(model.parameters()).device
    return torch.cat([model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)])


def label_agreement(predicted: Sequence[int], intended: Sequence[int]) -> Dict[str, float]:
    """Share of samples whose predicted class equals the intended one, overall and per class (with counts)."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    report = {"overall": float((predicted == intended).mean()), "n": int(len(intended))}
    for class_id, name in enumerate(LABEL_NAMES):
        chosen = intended == class_id
        report[name] = float((predicted[chosen] == class_id).mean()) if chosen.any() else float("nan")
        report[f"n_{name}"] = int(chosen.sum())
    return report


def judge_class_conditional(
    real, synthetic, resolution: int = 128, recipe: ClassifierRecipe = ClassifierRecipe(), test_fraction: float = 0.2,
    device="cpu",
) -> Dict:
    """Train the classifier on most of ``real`` (split by id, stratified by label), score it on the held-out rest,
    then report how often each ``synthetic`` sample is classified as the label it was generated for."""
    real = real.filter(lambda label: label >= 0, input_columns="label")
    synthetic = synthetic.filter(lambda label: label >= 0, input_columns="label")
    if len(synthetic) == 0:
        raise ValueError("The synthetic dataset has no PM / non-PM labels: generate it with --labels PM=N,non-PM=M.")
    train, test = split_by_id(real, test_fraction, recipe.seed, stratify_column="label")

    def as_float(dataset, desc):
        return dataset_arrays(dataset, resolution, (), desc).float().div_(127.5).sub_(1.0)

    model = train_pm_classifier(
        as_float(train, "real train"), torch.tensor(list(train["label"])), recipe, device, progress=tqdm
    )
    real_test = label_agreement(predict(model, as_float(test, "real held-out")), list(test["label"]))
    generated = label_agreement(predict(model, as_float(synthetic, "synthetic")), list(synthetic["label"]))
    return {
        "resolution": resolution,
        "recipe": vars(recipe),
        "n_real_train": len(train),
        "real_held_out_accuracy": real_test,
        "synthetic_label_agreement": generated,
    }
