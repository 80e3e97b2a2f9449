"""A small PM / non-PM fundus classifier, trained on real images, that judges class-conditional samples.

The question it answers: when a class-conditional model is asked for PM (or non-PM), how often does a classifier
trained on real photographs agree? The recipe is fixed and seeded so numbers are comparable across models.

Agreement alone cannot fail: a classifier must put every input, RGB noise included, in one of its two classes, and a
model can reach 100% with samples that look like nothing. So every agreement comes with a realism guard
(``realism_guard``): how far the samples lie from the real photographs in the classifier's own features (an
out-of-distribution score over every stage's features, calibrated on held-out real images) and how confident it is on them, with a verdict that
says when the samples are not fundus-like and the agreement means nothing.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data.schema import LABEL_NAMES
from .arrays import dataset_arrays
from .augment import apply_augmentation
from .checks import native_resolution
from .realism import RealismRecipe, realism_test
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

    def stage_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every stage's output averaged over space, concatenated (``[N, 15 * width]``): the first stages see colour
        and texture, the last what the head classifies; the realism guard measures distances in all of them."""
        pooled = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


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
def classify(model: PMClassifier, images: torch.Tensor, batch_size: int = 128) -> Dict[str, torch.Tensor]:
    """For float ``[N, 3, H, W]`` images in [-1, 1]: ``features`` (``stage_features``, float ``[N, D]``) and
    ``logits`` ``[N, 2]``."""
    device = next(model.parameters()).device
    features, logits = [], []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size].to(device)
        features.append(model.stage_features(batch).float().cpu())
        logits.append(model(batch).float().cpu())
    return {"features": torch.cat(features), "logits": torch.cat(logits)}


def predict(model: PMClassifier, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Predicted class ids for float ``[N, 3, H, W]`` images in [-1, 1]."""
    return classify(model, images, batch_size)["logits"].argmax(1)


# The guard's calibration: a sample is out of distribution when its feature distance exceeds this quantile of the
# held-out real images' distances; the samples are "not fundus-like" when more than MAX_OOD_FRACTION of them are.
# A faithful model's samples sit at about 1 - OOD_QUANTILE; RGB noise at 100%.
OOD_QUANTILE = 0.99
MAX_OOD_FRACTION = 0.5
# A judge below this held-out accuracy on real images is too weak to judge samples (PALM's classes: 98.8% at 64 px).
MIN_JUDGE_ACCURACY = 0.7


def feature_distances(reference: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Each row of ``features``' distance from the ``reference`` features: the norm of its per-dimension z-score
    (a diagonal Mahalanobis distance, which a few hundred images can estimate, unlike a full covariance)."""
    mean, std = reference.mean(0), reference.std(0).clamp(min=1e-6)
    return ((features - mean) / std).norm(dim=1) / features.shape[1] ** 0.5


def realism_guard(
    train: Dict[str, torch.Tensor], held_out: Dict[str, torch.Tensor], synthetic: Dict[str, torch.Tensor]
) -> Dict:
    """Are the samples fundus-like enough for their label agreement to mean anything? (``classify`` outputs.)

    The out-of-distribution threshold is the ``OOD_QUANTILE`` quantile of the held-out real images' distances from
    the real training images' features; ``synthetic_ood_fraction`` is the share of samples beyond it, and the samples
    count as not fundus-like above ``MAX_OOD_FRACTION``. Confidence (the mean top softmax probability) is reported
    beside it for real and synthetic images: it is no guard alone (a classifier can be sure about noise), but a gap
    says the same thing.
    """
    threshold = float(torch.quantile(feature_distances(train["features"], held_out["features"]), OOD_QUANTILE))
    distances = feature_distances(train["features"], synthetic["features"])
    ood = float((distances > threshold).float().mean())
    fundus_like = ood <= MAX_OOD_FRACTION
    return {
        "fundus_like": fundus_like,
        "synthetic_ood_fraction": ood,
        "ood_threshold": threshold,
        "ood_rule": f"distance above the {OOD_QUANTILE:.0%} quantile of held-out real images'; not fundus-like above "
        f"{MAX_OOD_FRACTION:.0%} of samples",
        "median_distance": {
            "real_held_out": float(feature_distances(train["features"], held_out["features"]).median()),
            "synthetic": float(distances.median()),
        },
        "mean_confidence": {
            "real_held_out": float(held_out["logits"].softmax(1).max(1).values.mean()),
            "synthetic": float(synthetic["logits"].softmax(1).max(1).values.mean()),
        },
        "verdict": (
            f"fundus-like: {ood:.0%} of samples outside the real images' feature distribution"
            if fundus_like
            else f"NOT FUNDUS-LIKE: {ood:.0%} of samples lie outside the real images' feature distribution, so the "
            "label agreement says nothing about PM / non-PM fundus images"
        ),
    }


def label_agreement(predicted: Sequence[int], intended: Sequence[int]) -> Dict[str, float]:
    """Share of samples whose predicted class equals the intended one, overall and per class (with counts)."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    report = {"overall": float((predicted == intended).mean()), "n": int(len(intended))}
    for class_id, name in enumerate(LABEL_NAMES):
        chosen = intended == class_id
        report[name] = float((predicted[chosen] == class_id).mean()) if chosen.any() else float("nan")
        report[f"n_{name}"] = int(chosen.sum())
    return report


def labelled(dataset, name: str):
    """The rows of ``dataset`` with a PM / non-PM label; a ValueError naming the set and the fix when none has."""
    kept = dataset.filter(lambda label: label >= 0, input_columns="label")
    if len(kept) == 0:
        fix = (
            "generate it with --labels PM=N,non-PM=M" if name == "synthetic" else "pass labelled images (e.g. palm-224)"
        )
        raise ValueError(
            f"The {name} set has no PM / non-PM labels, so it cannot train or judge a PM classifier. Fix: {fix}."
        )
    return kept


def label_summary(report: Dict) -> str:
    """``judge_class_conditional``'s lines a reader must not miss: agreement, and whether the samples are fundus-like at all."""
    agreement, guard = report["synthetic_label_agreement"], report["realism_guard"]
    lines = [
        f"label agreement {agreement['overall']:.1%} of {agreement['n']} samples (real held-out accuracy "
        f"{report['real_held_out_accuracy']['overall']:.1%})",
        f"realism guard: {guard['verdict']} (mean confidence real {guard['mean_confidence']['real_held_out']:.2f}, "
        f"synthetic {guard['mean_confidence']['synthetic']:.2f})",
    ]
    test = report.get("realism_test")
    if test and test.get("computed"):
        lines.append(
            f"two-sample test ROC AUC real vs synthetic {test['real_vs_synthetic']['auc']['mean']:.3f}, real vs real "
            f"{test['real_vs_real']['auc']['mean']:.3f} (0.5 = indistinguishable)"
        )
    elif test:
        lines.append(f"two-sample test not computed: {test['reason']}")
    warnings = []
    held_out = report["real_held_out_accuracy"]
    per_class = [held_out[name] for name in LABEL_NAMES if name in held_out and held_out[name] == held_out[name]]
    balanced = sum(per_class) / len(per_class) if per_class else held_out["overall"]  # always-one-class scores 50%
    if balanced < MIN_JUDGE_ACCURACY:
        warnings.append(
            f"WARNING: the classifier tells PM from non-PM in only {balanced:.0%} of held-out real images (balanced "
            f"accuracy, below {MIN_JUDGE_ACCURACY:.0%}): neither its label agreement nor its realism guard means "
            "anything. Fix: train it longer (--steps) or on more real images."
        )
    if not guard["fundus_like"]:
        warnings.append("WARNING: the samples are not fundus-like; do not report the label agreement as a result.")
    if warnings:
        lines = ["!" * 100, *lines, *warnings, "!" * 100]
    return "\n".join(lines)


def judge_class_conditional(
    real, synthetic, resolution: Optional[int] = None, recipe: ClassifierRecipe = ClassifierRecipe(),
    test_fraction: float = 0.2, device="cpu", realism: Optional[RealismRecipe] = None, split_seed: int = 0,
) -> Dict:
    """Train the classifier on most of ``real`` (split by id with ``split_seed``, stratified by label; the recipe's
    seed changes the classifier only, never which images it is scored on), score it on the held-out rest, then report
    how often each ``synthetic`` sample is classified as the label it was generated for, beside the ``realism_guard``
    and, given a ``realism`` recipe, the classifier two-sample test (``realism.realism_test``). Judged at
    ``resolution``, default the synthetic images' native one."""
    real, synthetic = labelled(real, "real"), labelled(synthetic, "synthetic")
    resolution = resolution or native_resolution(synthetic)
    train, test = split_by_id(real, test_fraction, split_seed, stratify_column="label")

    def as_float(dataset, desc):
        return dataset_arrays(dataset, resolution, (), desc).float().div_(127.5).sub_(1.0)

    images = {"real train": as_float(train, "real train"), "real held-out": as_float(test, "real held-out")}
    images["synthetic"] = as_float(synthetic, "synthetic")
    model = train_pm_classifier(images["real train"], torch.tensor(list(train["label"])), recipe, device, progress=tqdm)
    outputs = {name: classify(model, batch) for name, batch in images.items()}
    report = {
        "resolution": resolution,
        "split_seed": split_seed,
        "recipe": vars(recipe),
        "n_real_train": len(train),
        "real_held_out_accuracy": label_agreement(outputs["real held-out"]["logits"].argmax(1), list(test["label"])),
        "synthetic_label_agreement": label_agreement(outputs["synthetic"]["logits"].argmax(1), list(synthetic["label"])),
        "realism_guard": realism_guard(outputs["real train"], outputs["real held-out"], outputs["synthetic"]),
    }
    if realism is not None:
        report["realism_test"] = realism_test(
            dataset_arrays(real, resolution, (), "real"), dataset_arrays(synthetic, resolution, (), "synthetic"), realism, device
        )
    return report
