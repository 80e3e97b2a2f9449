"""Pathological-myopia detection utility (issue 20): does a class-conditional generator's synthetic set help a PM
classifier judged on real photographs?

The PM classifier of ``pm_classifier`` (its fixed recipe) is trained, for every seed, on three sets: the real images
the generator was trained on (``real``), the synthetic set alone and both together, and scored on one fixed held-out
real split: accuracy and ROC AUC of P(PM) (torchmetrics), mean ± std over seeds; chance beside them: the same recipe
on the real images with shuffled labels (``SHUFFLED``) and the AUC's null spread (``auc_null_std``), since a
classifier trained on a one-class or noise set need not score 0.5. Beside them, as in the segmentation
protocol: the two-sample realism test of the synthetic images (``realism.realism_test``) and the copy check of the
synthetic set against the generator's training images (``memorisation``, in downsampled pixels and in the
real-trained classifier's features), each beside its held-out control. A set whose samples are flagged more often
than the held-out real images (``memorisation.refusal``) is refused: the classifiers on synthetic images are not
trained and the report says why, loudly, since a score earned by copies of the training images says nothing about
what a generator adds. The real-trained classifier also labels the synthetic samples, with the realism guard
of ``pm_classifier`` beside the agreement.

``render_markdown`` and ``write_pm_report`` write ``report.json`` and ``report.md``.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Dict, List, Optional

import torch
from torchmetrics.functional.classification import binary_accuracy, binary_auroc
from tqdm.auto import tqdm

from ..data.schema import LABEL_NAMES
from .arrays import dataset_arrays, default_device
from .checks import native_resolution
from .memorisation import PIXEL_SPACE, copy_checks, pixel_features, refusal
from .metrics import format_mean_std, format_value, summarise
from .pm_classifier import (
    MIN_JUDGE_ACCURACY,
    ClassifierRecipe,
    classify,
    label_agreement,
    labelled,
    realism_guard,
    train_pm_classifier,
)
from .protocol import TRAINING_SETS
from .realism import RealismRecipe, realism_test
from .report import json_safe, memorisation_lines, realism_lines, realism_warning, refusal_banner, warning_lines

SYNTHETIC_SETS = TRAINING_SETS[1:]  # the classifiers a refused set (copies of training images) does not get
# The chance control: the same recipe, seeds and steps on the real training images with their labels shuffled (each
# seed its own permutation): what a classifier that learnt the images but nothing of PM scores on the held-out ones.
SHUFFLED = "real, labels shuffled (control)"
DETECTION_ROWS = (*TRAINING_SETS, SHUFFLED)  # the detection table's rows, in order
METRICS = ("accuracy", "auc")


@dataclass
class PMUtilityConfig:
    resolution: Optional[int] = None  # None: the synthetic set's native resolution
    seeds: int = 3
    classifier_steps: int = ClassifierRecipe.steps
    realism_steps: int = RealismRecipe.steps
    realism_folds: int = RealismRecipe.folds
    device: Optional[str] = None
    inputs: Dict = field(default_factory=dict)  # provenance (dataset paths), copied into the report
    synthetic_sampling: Optional[str] = None  # how the synthetic set was sampled (generate.sampler_description)


def class_counts(labels: torch.Tensor) -> Dict[str, int]:
    return {"n": len(labels), **{name: int((labels == i).sum()) for i, name in enumerate(LABEL_NAMES)}}


def detection_scores(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Accuracy (argmax) and ROC AUC of P(PM) for ``[N, 2]`` logits against 0 / 1 labels (AUC NaN for one class)."""
    probability = logits.float().softmax(1)[:, 1]
    auc = float(binary_auroc(probability, labels)) if len(labels.unique()) == 2 else float("nan")
    return {"accuracy": float(binary_accuracy(probability, labels)), "auc": auc}


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(127.5).sub_(1.0)


def _memorisation(arrays: Dict[str, torch.Tensor], real_model, synthetic_ids, real_ids, holdout_ids, resolution: int) -> Dict:
    """The copy check of the synthetic images against the real training images, with its held-out control
    (``memorisation.controlled_copy_check``), in downsampled pixels and in the real-trained classifier's stage
    features (seed 0); against the training images and their mirror images (the generators train on both)."""
    spaces = {
        PIXEL_SPACE: pixel_features,
        f"real-trained PM classifier, stage features (seed 0, {resolution} px, L2)": lambda images: classify(
            real_model, _as_float(images)
        )["features"],
    }
    return copy_checks(spaces, arrays, synthetic_ids, real_ids, holdout_ids)


def evaluate_pm_utility(real, holdout, synthetic, config: Optional[PMUtilityConfig] = None) -> Dict:
    """The PM-detection report for schema datasets: ``real`` (what the generator trained on), a disjoint real
    ``holdout`` and the labelled ``synthetic`` set; rows with an unknown label (-1) are left out of all three.

    Returns a JSON-able dict: counts per class, ``detection`` (accuracy and AUC per training set and for the
    shuffled-label control, per seed and mean ± std; ``chance``: the AUC's null spread), ``memorisation``,
    ``refused`` (None, or why the synthetic classifiers were not trained), ``synthetic_by_real_classifier`` (label
    agreement and realism guard) and ``realism``.
    """
    config = config or PMUtilityConfig()
    device = config.device or default_device()
    sets = {
        "real": labelled(real, "real"),
        "holdout": labelled(holdout, "held-out"),
        "synthetic": labelled(synthetic, "synthetic"),
    }
    overlap = set(sets["real"]["id"]) & set(sets["holdout"]["id"])
    if overlap:
        raise ValueError(
            f"{len(overlap)} held-out id(s) are also in the real training set, e.g. {sorted(overlap)[:3]}: pass a disjoint split."
        )
    resolution = config.resolution or native_resolution(sets["synthetic"])
    arrays = {name: dataset_arrays(dataset, resolution, (), name) for name, dataset in sets.items()}
    labels = {name: torch.tensor(list(dataset["label"])) for name, dataset in sets.items()}
    images = {name: _as_float(a).to(device) for name, a in arrays.items()}
    images["real+synthetic"] = torch.cat([images["real"], images["synthetic"]])
    labels["real+synthetic"] = torch.cat([labels["real"], labels["synthetic"]])
    recipe = ClassifierRecipe(steps=config.classifier_steps)
    seeds = list(range(config.seeds))

    def scores_of(name: str, shuffle: bool = False):
        """One classifier per seed trained on set ``name`` (``shuffle``: on its labels permuted, each seed its own
        permutation), each scored on the held-out images: ``(scores per seed, seed 0's classifier)``."""
        scores, first = [], None
        for seed in seeds:
            desc = f"PM classifier on {name}{' (labels shuffled)' if shuffle else ''}, seed {seed}"
            seeded = ClassifierRecipe(**{**recipe.to_dict(), "seed": seed})
            y = labels[name]
            if shuffle:
                y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
            model = train_pm_classifier(images[name], y, seeded, device, partial(tqdm, desc=desc, leave=False))
            scores.append(detection_scores(classify(model, images["holdout"])["logits"], labels["holdout"]))
            first = model if first is None else first
        return scores, first

    per_seed = {}
    per_seed["real"], real_model = scores_of("real")
    per_seed[SHUFFLED] = scores_of("real", shuffle=True)[0]
    memorisation = _memorisation(
        arrays, real_model, list(sets["synthetic"]["id"]), list(sets["real"]["id"]), list(sets["holdout"]["id"]), resolution
    )
    refused = refusal(memorisation)
    if refused:
        refused += (
            " The classifiers on synthetic images were not trained: a score earned by copies says nothing about what"
            " the generator adds."
        )
    else:
        for name in SYNTHETIC_SETS:
            per_seed[name] = scores_of(name)[0]
    outputs = {name: classify(real_model, images[name]) for name in ("real", "holdout", "synthetic")}
    realism = RealismRecipe(steps=config.realism_steps, folds=config.realism_folds)
    all_real = torch.cat([arrays["real"], arrays["holdout"]]).to(device)
    report = {
        "task": "PM detection (PM vs non-PM) on held-out real images",
        "config": {**asdict(config), "resolution": resolution, "device": device},
        "resolution": {
            "px": resolution,
            "how": "given (--resolution)" if config.resolution else f"native: the synthetic images are {resolution} px",
        },
        "counts": {name: class_counts(labels[name]) for name in sets},
        "detection": {
            "recipe": {**recipe.to_dict(), "seeds": seeds},
            "n_train": {**{name: len(labels[name]) for name in TRAINING_SETS}, SHUFFLED: len(labels["real"])},
            "chance": {"auc": 0.5, "auc_null_std": auc_null_std(labels["holdout"])},
            "per_seed": per_seed,
            "results": {
                name: {m: summarise([s[m] for s in scores]) for m in METRICS} for name, scores in per_seed.items()
            },
        },
        "refused": refused,
        "memorisation": memorisation,
        "synthetic_by_real_classifier": {
            "label_agreement": label_agreement(outputs["synthetic"]["logits"].argmax(1), labels["synthetic"].tolist()),
            "realism_guard": realism_guard(outputs["real"], outputs["holdout"], outputs["synthetic"]),
        },
        "realism": realism_test(all_real, arrays["synthetic"].to(device), realism, device),
    }
    return {**report, "warnings": pm_warnings(report)}


def auc_null_std(labels: torch.Tensor) -> float:
    """The standard deviation of the ROC AUC of scores that know nothing of the labels (Mann-Whitney's U under the
    null, without ties): ``sqrt((n1 + n0 + 1) / (12 n1 n0))`` for ``n1`` positive and ``n0`` negative 0 / 1 labels; NaN
    for one class. A row's AUC within about two of these of 0.5 is what chance gives on these held-out images."""
    positives = int((labels == 1).sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return math.sqrt((positives + negatives + 1) / (12 * positives * negatives))


def pm_warnings(report: Dict) -> List[str]:
    """What makes the detection rows mean little, for the top of the report: a real-trained classifier too weak to
    compare with (below ``MIN_JUDGE_ACCURACY`` on the held-out images), a synthetic set of one class (a classifier
    trained on it alone cannot learn PM against non-PM), samples the real-trained classifier finds not fundus-like,
    and samples the two-sample judge tells from the photographs or a judge whose control fails
    (``report.realism_warning``: the guard is weak, and the label agreement passes images unlike photographs)."""
    found = []
    real = report["detection"]["results"].get("real")
    if real and real["accuracy"]["mean"] < MIN_JUDGE_ACCURACY:
        found.append(
            f"The real-trained classifier reaches only {real['accuracy']['mean']:.0%} accuracy on the held-out images "
            f"(below {MIN_JUDGE_ACCURACY:.0%}): every row compares weak classifiers. Fix: train them longer (--steps)."
        )
    missing = [label for label in LABEL_NAMES if report["counts"]["synthetic"][label] == 0]
    if missing:
        found.append(
            f"The synthetic set holds no {' or '.join(missing)} image: a classifier trained on it alone cannot learn PM "
            "against non-PM, whatever its scores. Fix: generate both classes (--labels PM=N,non-PM=M)."
        )
    guard = report["synthetic_by_real_classifier"]["realism_guard"]
    if not guard["fundus_like"]:
        found.append(f"{guard['verdict']}: the rows trained on synthetic images say nothing about PM detection.")
    judged = realism_warning(report["realism"])  # told apart from the photographs, or a judge without power
    if judged:
        found.append(judged)
    return found


def render_markdown(report: Dict) -> str:
    """``report.md``: the refusal first when there is one, then detection, copy check, labels and realism."""
    px, detection, counts = f"{report['resolution']['px']} px", report["detection"], report["counts"]
    recipe = detection["recipe"]

    def described(name):
        c = counts[name]
        return f"{c['n']} ({', '.join(f'{c[label]} {label}' for label in LABEL_NAMES)})"

    lines = ["# PM detection utility", ""]
    lines += warning_lines(report.get("warnings", []))
    synthetic_path = report["config"]["inputs"].get("synthetic")  # the set's folder name and how it was sampled
    folder = synthetic_path and f"`{os.path.basename(os.path.normpath(synthetic_path))}`"
    origin = ", ".join(filter(None, [folder, report["config"].get("synthetic_sampling")]))
    lines += refusal_banner(report["refused"]) + [
        f"Real training images (the generator's): {described('real')}; synthetic: {described('synthetic')}"
        f"{f' ({origin})' if origin else ''}; held-out real: {described('holdout')}. Everything at **{px}** "
        f"({report['resolution']['how']}), device {report['config']['device']}.",
        "",
        f"## 1. PM detection on held-out real images ({px})",
        "",
        f"Classifier: `fundus_diffusion.evaluation.pm_classifier` (width {recipe['width']}, {recipe['steps']} steps, batch "
        f"{recipe['batch_size']}, class-balanced batches), seeds {recipe['seeds']}; accuracy and ROC AUC of P(PM) on the "
        f"{counts['holdout']['n']} held-out images, mean ± std over seeds. Chance: the last row, the same recipe on "
        "the real images with their labels shuffled, and, for scores that know nothing of the labels, an AUC of 0.5 "
        f"± {format_value(detection['chance']['auc_null_std'])} (the null's standard deviation on these held-out "
        "images): a row is evidence of PM detection only as far as it stands above both.",
        "",
        f"| trained on ({px}) | n train | accuracy | ROC AUC |",
        "|---|---|---|---|",
    ]
    for name in DETECTION_ROWS:
        result = detection["results"].get(name)
        cells = (
            "REFUSED (copies) | REFUSED (copies)"
            if result is None
            else " | ".join(format_mean_std(result[m]) for m in METRICS)
        )
        lines.append(f"| {name} | {detection['n_train'][name]} | {cells} |")
    lines += ["", f"## 2. Copies of the generator's training images ({px})", ""]
    lines += memorisation_lines(report["memorisation"], report["refused"])
    judged = report["synthetic_by_real_classifier"]
    agreement, guard = judged["label_agreement"], judged["realism_guard"]
    lines += [
        "",
        f"## 3. The synthetic labels, judged by the real-trained classifier (seed 0, {px})",
        "",
        f"Label agreement {format_value(agreement['overall'])} of {agreement['n']} samples ("
        + ", ".join(f"{name} {format_value(agreement[name])} of {agreement[f'n_{name}']}" for name in LABEL_NAMES)
        + f"). Realism guard: {guard['verdict']}.",
    ]
    lines += [line.replace("## 5. ", "## 4. ", 1) for line in realism_lines(report["realism"], px)]
    return "\n".join(lines) + "\n"


def write_pm_report(report: Dict, output_dir: str) -> Dict[str, str]:
    """Write ``report.json`` (strict JSON: NaN as null) and ``report.md`` into ``output_dir``; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "report.json"), "markdown": os.path.join(output_dir, "report.md")}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(json_safe(report), f, indent=2, allow_nan=False)
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(render_markdown(report))
    return paths
