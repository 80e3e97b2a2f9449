"""``evaluate``: the whole protocol of DESIGN.md ("Evaluation protocol") on a real and a synthetic dataset.

Every image goes through the same preprocessing as training (square fundus crop, ``resolution`` px; masks by
nearest neighbour), then: downstream segmentation (mean and per source of the held-out images), mask-image agreement,
mask plausibility, memorisation, the classifier two-sample realism test, FID / KID. The resolution defaults to the
synthetic set's native one (the size its images were generated at): a lower one can average away texture that makes
the samples useless at the size a user trains at.
``write_report`` turns the result into ``report.json``, ``report.md`` and PNG figures.
"""

import json
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.schema import MASK_COLUMNS, parse_mask_names
from ..data.transforms import pair_to_array
from ..visualization import contact_sheet
from .fid import fid_kid
from .figures import bar_chart, histograms, titled
from .memorisation import memorisation_report, pixel_features
from .metrics import dice_per_image, disc_geometry, iou_per_image, mask_plausibility, summarise
from .realism import TEST_NAME, RealismRecipe, realism_test
from .segmenter import SegmenterRecipe, encode_images, predict_masks, train_segmenter
from .splits import holdout_ids, read_split_file, source_of, split_by_ids, write_split_file

TRAINING_SETS = ("real", "synthetic", "real+synthetic")
# Optional rows (--equal_real_passes): real + synthetic trained for steps x (real + synthetic) / real, so each real
# image is drawn as often as when the segmenter trains on the real images alone; and, as its control, the real images
# alone trained for as many steps (longer training by itself may help).
EQUAL_REAL_PASSES = "real+synthetic, equal real passes"
REAL_AS_LONG = "real, as many steps as equal real passes"
PRIVACY_NOTE = (
    "This folder holds real photographs (`nearest_pairs.png`, and `worst_holdout.png`: held-out real images with "
    "their masks; `sample_grid.png` shows synthetic ones only). Keep it out of git and out of anything shared where "
    "the real data's terms do not allow it."
)
WORST_FIGURE = "worst_holdout"


@dataclass
class EvaluationConfig:
    resolution: Optional[int] = None  # None: the synthetic set's native resolution
    masks: Sequence[str] = ("disc",)
    seeds: int = 3
    segmenter_steps: int = 1000
    holdout_fraction: float = 0.2
    split_seed: int = 0
    split_file: Optional[str] = None
    inception_weights: Optional[str] = None
    device: Optional[str] = None
    num_pairs: int = 8
    grid_samples: int = 36
    equal_real_passes: bool = False
    worst_images: int = 8
    realism_steps: int = RealismRecipe.steps
    realism_folds: int = RealismRecipe.folds
    inputs: Dict = field(default_factory=dict)  # provenance (dataset paths), copied into the report


FLAGGED_FILE = "flagged_ids.txt"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolution_problem(resolution: int) -> Optional[str]:
    """Why the segmenter cannot work at ``resolution`` (None when it can): its U-Net halves the size three times."""
    if resolution < 8 or resolution % 8:
        low = max(8, resolution // 8 * 8)
        return f"--resolution {resolution}: the segmenter takes multiples of 8, e.g. {low} or {low + 8}."
    return None


def warn_if_upscaled(dataset, resolution: int, what: str) -> None:
    """Images smaller than --resolution are scaled up: say so, since it blurs what the segmenter sees."""
    if len(dataset) == 0:
        return
    width, height = dataset[0]["image"].size
    if min(width, height) < resolution:
        print(
            f"{os.path.basename(sys.argv[0])}: warning: {what} images are {width}x{height}, smaller than --resolution {resolution}: they are scaled "
            f"up. Pass --resolution {max(8, min(width, height) // 8 * 8)} to evaluate at their size.",
            file=sys.stderr,
        )


def native_resolution(dataset, what: str = "synthetic") -> int:
    """The side of ``dataset``'s images when they are all one square size (a multiple of 8), else a ValueError that
    says why and what to pass instead: mixed sizes or non-square images have no single native resolution."""
    sizes = {}
    for image in dataset["image"]:
        sizes[image.size] = sizes.get(image.size, 0) + 1
    if not sizes:
        raise ValueError(f"The {what} set is empty: there is nothing to evaluate.")
    listed = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1]))
    if len(sizes) > 1:
        raise ValueError(
            f"The {what} images come in several sizes ({listed}), so they have no single native resolution. Evaluate "
            "one size at a time, or pass --resolution N to judge them all at N px."
        )
    ((width, height),) = sizes
    if width != height:
        raise ValueError(
            f"The {what} images are {width}x{height}, not square, so they have no native evaluation resolution. Pass "
            f"--resolution N (a multiple of 8, e.g. {max(8, min(width, height) // 8 * 8)}): the fundus field is cropped "
            "square and resized to N px."
        )
    if resolution_problem(width):
        low = max(8, width // 8 * 8)
        raise ValueError(
            f"The {what} images are {width}x{height} px, but the segmenter takes multiples of 8: pass --resolution "
            f"{low} or {low + 8}."
        )
    return width


def dataset_arrays(dataset, resolution: int, mask_names: Sequence[str], desc: str) -> torch.Tensor:
    """``uint8 [N, 3 + M, R, R]``: every row cropped, resized and stacked as for training."""
    out = torch.empty((len(dataset), 3 + len(mask_names), resolution, resolution), dtype=torch.uint8)
    for i, row in enumerate(tqdm(dataset, desc=f"loading {desc}", unit="img", leave=False)):
        masks = {name: row[MASK_COLUMNS[name]] for name in mask_names}
        missing = [name for name, mask in masks.items() if mask is None]
        if missing:
            raise ValueError(
                f"{desc}: sample {row['id']} has no {' / '.join(missing)} mask; evaluate image-only data with --masks none."
            )
        out[i] = torch.from_numpy(pair_to_array(row["image"], masks, mask_names, resolution))
    return out


def _check_annotations(datasets: Dict[str, object], mask_names: Sequence[str]):
    """Atrophy can only be scored where every sample was annotated for it."""
    if "atrophy" not in mask_names:
        return
    for name, dataset in datasets.items():
        missing = len(dataset) - sum(dataset["has_atrophy_annotation"])
        if missing:
            raise ValueError(
                f"--masks includes atrophy, but {missing} of {len(dataset)} {name} samples have no atrophy annotation "
                "(has_atrophy_annotation = False). Evaluate with --masks disc."
            )


def resolve_split(real, holdout, config: EvaluationConfig) -> Tuple[object, object, str]:
    """``(real_train, holdout, how)``: the given holdout, the ids in ``split_file``, or a fresh split by id.

    A ``split_file`` that does not exist yet is written with the fresh split, so later runs reuse it.
    """
    if holdout is not None:
        overlap = set(real["id"]) & set(holdout["id"])
        if overlap:
            raise ValueError(
                f"{len(overlap)} held-out id(s) are also in the real training set, e.g. {sorted(overlap)[:3]}."
            )
        return real, holdout, "given held-out dataset"
    if config.split_file and os.path.exists(config.split_file):
        return (*split_by_ids(real, read_split_file(config.split_file)), f"ids from {config.split_file}")
    # Stratified by origin (source_of: a file name's prefix, else the source column), so every origin the per-source
    # breakdown reports is held out in proportion.
    strata = [source_of(i, s) for i, s in zip(real["id"], real["source"])]
    ids = holdout_ids(list(real["id"]), strata, config.holdout_fraction, config.split_seed)
    if config.split_file:
        write_split_file(config.split_file, ids)
    how = f"holdout_ids(test_fraction={config.holdout_fraction}, seed={config.split_seed}, stratified by source_of)"
    return (*split_by_ids(real, ids), how)


def _per_image_scores(pred: torch.Tensor, target: torch.Tensor, mask_names: Sequence[str]) -> Dict[str, Dict[str, np.ndarray]]:
    """Per-image Dice and IoU per mask for ``[N, M, H, W]`` predictions and targets (on any device)."""
    pred, target = pred.cpu().numpy(), target.cpu().numpy()
    return {
        name: {"dice": dice_per_image(pred[:, m], target[:, m]), "iou": iou_per_image(pred[:, m], target[:, m])}
        for m, name in enumerate(mask_names)
    }


def _means(per_image: Dict[str, Dict[str, np.ndarray]], select=slice(None)) -> Dict[str, Dict[str, float]]:
    """``{mask: {metric: mean}}`` of per-image scores, over the images ``select`` picks (default all)."""
    return {mask: {k: float(v[select].mean()) for k, v in metrics.items()} for mask, metrics in per_image.items()}


def _overlap_scores(pred: torch.Tensor, target: torch.Tensor, mask_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Mean per-image Dice and IoU per mask for ``[N, M, H, W]`` predictions and targets."""
    return _means(_per_image_scores(pred, target, mask_names))


def _across_seeds(per_seed: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``[{mask: {metric: value}}]`` per seed -> ``{mask: {metric: {mean, std, n}}}`` (n = seeds)."""
    return {
        mask: {metric: summarise([s[mask][metric] for s in per_seed]) for metric in per_seed[0][mask]}
        for mask in per_seed[0]
    }


def _to_pil(array: torch.Tensor, mask_names: Sequence[str]):
    image = Image.fromarray(array[:3].permute(1, 2, 0).numpy(), mode="RGB")
    return image, {name: Image.fromarray(array[3 + m].numpy(), mode="L") for m, name in enumerate(mask_names)}


def _strip_arrays(report: Dict) -> Dict:
    return {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}


def segmenter_scores(train, holdout, mask_names: Sequence[str], steps: int, seed: int, device, desc: str = ""):
    """The fixed recipe trained ``steps`` steps on ``train`` arrays and scored on ``holdout`` arrays: ``(scores,
    model, per_image)``, scores ``{mask: {"dice", "iou"}}`` (mean per held-out image), per_image the same as arrays
    over the held-out images."""
    recipe = SegmenterRecipe(steps=steps, seed=seed)
    progress = lambda it: tqdm(it, desc=f"segmenter on {desc}, seed {seed}", leave=False)  # noqa: E731
    model = train_segmenter(train, len(mask_names), recipe, device=device, progress=progress)
    per_image = _per_image_scores(predict_masks(model, holdout), holdout[:, 3:].bool(), mask_names)
    return _means(per_image), model, per_image


def _per_source(per_seed_images: List[Dict], sources: Sequence[str]) -> Dict:
    """``{mask: {source: {metric: {mean, std, n}}}}``: each seed's mean over the held-out images of each source,
    then mean and std over seeds."""
    sources = np.asarray(sources)
    return {
        mask: {
            source: {
                metric: summarise([s[mask][metric][sources == source].mean() for s in per_seed_images])
                for metric in per_seed_images[0][mask]
            }
            for source in sorted(set(sources))
        }
        for mask in per_seed_images[0]
    }


def _downstream(arrays, mask_names, config: EvaluationConfig, device, holdout_sources: Sequence[str]):
    """Section 1: the recipe trained on each training set for every seed, scored on the held-out real images, in the
    mean and per source of the held-out images.

    Returns the section, the segmenters per training set (one per seed; sections 2 and 4 reuse the real-trained
    ones) and the per-image scores of each training set's seed 0.
    """
    train_sets = {"real": arrays["real"], "synthetic": arrays["synthetic"]}
    train_sets["real+synthetic"] = torch.cat([arrays["real"], arrays["synthetic"]])
    steps = {name: config.segmenter_steps for name in train_sets}
    if config.equal_real_passes:
        longer = round(config.segmenter_steps * len(train_sets["real+synthetic"]) / len(arrays["real"]))
        train_sets[EQUAL_REAL_PASSES], steps[EQUAL_REAL_PASSES] = train_sets["real+synthetic"], longer
        train_sets[REAL_AS_LONG], steps[REAL_AS_LONG] = arrays["real"], longer
    per_seed, per_image, models = ({name: [] for name in train_sets} for _ in range(3))
    for seed in range(config.seeds):
        for name in train_sets:
            scores, model, images = segmenter_scores(
                train_sets[name], arrays["holdout"], mask_names, steps[name], seed, device, desc=name
            )
            per_seed[name].append(scores)
            per_image[name].append(images)
            models[name].append(model)
    section = {
        "recipe": {**SegmenterRecipe(steps=config.segmenter_steps).to_dict(), "seeds": list(range(config.seeds))},
        "n_train": {name: len(train_sets[name]) for name in train_sets},
        "steps": steps,
        "n_holdout": len(arrays["holdout"]),
        "results": {name: _across_seeds(per_seed[name]) for name in train_sets},
        "holdout_sources": {source: int(n) for source, n in zip(*np.unique(holdout_sources, return_counts=True))},
        "per_source": {name: _per_source(per_image[name], holdout_sources) for name in train_sets},
    }
    return section, models, {name: images[0] for name, images in per_image.items()}


def _worst_holdout(per_image, models, arrays, holdout_ids, holdout_sources, mask_names, n: int, resolution: int):
    """The ``n`` held-out images the synthetic-trained segmenter (seed 0) does worst on, by the first mask's Dice:
    listed, and drawn as photograph / prediction / truth (mask outlines) rows."""
    mask = mask_names[0]
    dice = per_image["synthetic"][mask]["dice"]
    order = np.argsort(dice, kind="stable")[:n]
    listed = [
        {"id": holdout_ids[i], "source": holdout_sources[i], f"{mask}_dice": float(dice[i])} for i in order.tolist()
    ]
    chosen = arrays["holdout"][torch.as_tensor(order, dtype=torch.long).to(arrays["holdout"].device)]
    predicted = predict_masks(models["synthetic"][0], chosen)
    tiles, masks, captions = [], [], []
    for row, i in enumerate(order.tolist()):
        image, truth = _to_pil(chosen[row].cpu(), mask_names)
        prediction = {name: Image.fromarray(predicted[row, m].numpy().astype(np.uint8) * 255) for m, name in enumerate(mask_names)}
        tiles += [image, image, image]
        masks += [{}, prediction, truth]
        captions += [f"{holdout_ids[i].split('/')[-1]} Dice {dice[i]:.2f}", "prediction", "truth"]
    sheet = contact_sheet(tiles, masks, captions, columns=3, tile=max(128, min(resolution, 256)))
    title = f"{len(order)} worst held-out, synthetic-trained (seed 0), {mask} Dice, {resolution} px"
    return {"training_set": "synthetic", "seed": 0, "mask": mask, "images": listed}, titled(sheet, title)


def _mask_figures(report: Dict, arrays, mask_names) -> Dict[str, Image.Image]:
    real_geo, syn_geo = (disc_geometry(arrays[k][:, 3].numpy() > 0) for k in ("real", "synthetic"))
    keys = ("area_fraction", "centroid_x", "centroid_y")
    results = report["downstream"]["results"]
    dice = {
        mask: {name: (results[name][mask]["dice"]["mean"], results[name][mask]["dice"]["std"]) for name in results}
        for mask in mask_names
    }
    seeds, resolution = report["config"]["seeds"], report["config"]["resolution"]
    return {
        "disc_histograms": histograms(
            {f"disc {k.replace('_', ' ')}, {resolution} px": {"real": real_geo[k], "synthetic": syn_geo[k]} for k in keys}
        ),
        "dice_bars": bar_chart(
            f"Dice at {resolution} px on {len(arrays['holdout'])} held-out real images (mean +- std, {seeds} seeds)", dice
        ),
    }


def _memorisation(arrays, real_models, resolution: int):
    """Section 4 in downsampled pixels and, where a real-trained segmenter exists, in its encoder features."""
    spaces = {
        "downsampled pixels (32x32 RGB in [0, 1], L2)": (
            pixel_features(arrays["synthetic"]),
            pixel_features(arrays["real"]),
        )
    }
    if real_models:
        name = f"real-trained segmenter encoder, global-average-pooled bottleneck (seed 0, {resolution} px, L2)"
        spaces[name] = (
            encode_images(real_models[0], arrays["synthetic"]),
            encode_images(real_models[0], arrays["real"]),
        )
    return {space: memorisation_report(syn, real) for space, (syn, real) in spaces.items()}


def _flagged(found: Dict, synthetic_ids, real_ids) -> List[Dict]:
    """The samples a memorisation check flagged, closest first, each with its nearest real training image."""
    order = np.argsort(found["distances"], kind="stable")
    return [
        {
            "synthetic_id": synthetic_ids[i],
            "real_id": real_ids[int(found["neighbours"][i])],
            "distance": float(found["distances"][i]),
        }
        for i in order
        if found["distances"][i] < found["threshold"]
    ]


def _closest_pairs(pixels: Dict, arrays, synthetic_ids, real_ids, num_pairs: int):
    """The synthetic samples nearest to a real training image (pixel space), listed and drawn side by side."""
    pairs, captions, listed = [], [], []
    for i in np.argsort(pixels["distances"], kind="stable")[:num_pairs]:
        j, distance = int(pixels["neighbours"][i]), float(pixels["distances"][i])
        pairs += [_to_pil(arrays["synthetic"][i], ())[0], _to_pil(arrays["real"][j], ())[0]]
        captions += [
            f"syn d={distance:.2f}{' COPY?' if distance < pixels['threshold'] else ''}",
            f"real {real_ids[j].split('/')[-1]}",
        ]
        listed.append({"synthetic_id": synthetic_ids[int(i)], "real_id": real_ids[j], "pixel_distance": distance})
    return listed, contact_sheet(pairs, captions=captions, columns=4)


def _resolution(config: EvaluationConfig, synthetic) -> Tuple[int, Dict]:
    """The evaluation resolution (``config.resolution``, else the synthetic set's native one) and how it was chosen."""
    try:
        native, why_not = native_resolution(synthetic), None
    except ValueError as error:
        native, why_not = None, str(error)
    if config.resolution is None:
        if native is None:
            raise ValueError(why_not)
        return native, {"px": native, "native": native, "how": f"native: the synthetic images are {native}x{native} px"}
    how = "given (--resolution)" + (
        "" if native is None else f"; the synthetic images are {native}x{native} px"
        + (" (native)" if native == config.resolution else ": a comparison, not the native-resolution headline")
    )
    return config.resolution, {"px": config.resolution, "native": native, "how": how}


def evaluate(
    real, synthetic, holdout=None, config: Optional[EvaluationConfig] = None
) -> Tuple[Dict, Dict[str, Image.Image]]:
    """Run the protocol on schema datasets; returns ``(report, figures)``: a JSON-able dict and named PIL figures.

    ``real`` is what the generative model was trained on; without ``holdout`` a deterministic part of it is held
    out by id (``config.split_file`` or ``split_by_id``) and the rest is the real training set. Without
    ``config.resolution`` everything is judged at the synthetic set's native resolution.
    """
    config = config or EvaluationConfig()
    device = config.device or default_device()
    mask_names = parse_mask_names(config.masks)
    resolution, resolution_info = _resolution(config, synthetic)
    real_train, holdout, split_how = resolve_split(real, holdout, config)
    _check_annotations({"real training": real_train, "held-out": holdout, "synthetic": synthetic}, mask_names)
    arrays = {
        "real": dataset_arrays(real_train, resolution, mask_names, "real training set"),
        "holdout": dataset_arrays(holdout, resolution, mask_names, "held-out set"),
        "synthetic": dataset_arrays(synthetic, resolution, mask_names, "synthetic set"),
    }
    on_device = {name: a.to(device) for name, a in arrays.items()}  # moved once; every network trains from these
    holdout_ids = list(holdout["id"])
    holdout_sources = [source_of(i, s) for i, s in zip(holdout_ids, holdout["source"])]
    report = {
        "config": {**asdict(config), "resolution": resolution, "masks": list(mask_names), "device": device},
        "resolution": resolution_info,
        "counts": {"real_train": len(real_train), "holdout": len(holdout), "synthetic": len(synthetic)},
        "holdout_split": split_how,
        "synthetic_sources": sorted(set(synthetic["source"])),
    }
    grid = [_to_pil(a, mask_names) for a in arrays["synthetic"][: config.grid_samples]]
    figures = {
        "sample_grid": titled(
            contact_sheet([g[0] for g in grid], [g[1] for g in grid]),
            f"{len(grid)} synthetic samples at {resolution} px with their masks",
        )
    }

    real_models = []
    if mask_names:
        report["downstream"], models, per_image = _downstream(on_device, mask_names, config, device, holdout_sources)
        real_models = models["real"]
        report["downstream"]["worst_holdout"], figures[WORST_FIGURE] = _worst_holdout(
            per_image, models, on_device, holdout_ids, holdout_sources, mask_names, config.worst_images, resolution
        )
        generated = on_device["synthetic"][:, 3:].bool()
        agreement = [_overlap_scores(predict_masks(m, on_device["synthetic"]), generated, mask_names) for m in real_models]
        report["agreement"] = {
            "n_synthetic": len(synthetic),
            "n_seeds": len(real_models),
            "results": _across_seeds(agreement),
        }
        as_masks = lambda a: {name: a[:, 3 + m].numpy() > 0 for m, name in enumerate(mask_names)}  # noqa: E731
        report["plausibility"] = mask_plausibility(as_masks(arrays["synthetic"]), as_masks(arrays["real"]))
        figures.update(_mask_figures(report, arrays, mask_names))
    else:
        for section in ("downstream", "agreement", "plausibility"):
            report[section] = {"computed": False, "reason": "evaluated with --masks none (image-only)"}

    memorisation = _memorisation(arrays, real_models, resolution)
    synthetic_ids, real_ids = list(synthetic["id"]), list(real_train["id"])
    report["memorisation"] = {
        space: {**_strip_arrays(m), "flagged": _flagged(m, synthetic_ids, real_ids)}
        for space, m in memorisation.items()
    }
    report["memorisation_closest_pairs"], pairs = _closest_pairs(
        next(iter(memorisation.values())), arrays, synthetic_ids, real_ids, config.num_pairs
    )
    figures["nearest_pairs"] = titled(pairs, f"synthetic samples nearest to a real training image, {resolution} px")
    recipe = RealismRecipe(steps=config.realism_steps, folds=config.realism_folds)
    all_real = torch.cat([on_device["real"][:, :3], on_device["holdout"][:, :3]])
    report["realism"] = realism_test(all_real, on_device["synthetic"][:, :3], recipe, device)
    report["fid_kid"] = fid_kid(
        arrays["real"][:, :3], arrays["synthetic"][:, :3], config.inception_weights, device=device
    )
    return report, figures


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _mean_std(stat: Dict) -> str:
    return f"{_fmt(stat['mean'])} ± {_fmt(stat['std'])}"


def render_markdown(report: Dict, figure_files: Sequence[str]) -> str:
    """The human-readable report: one section per protocol item, with sample counts."""
    counts, cfg = report["counts"], report["config"]
    px = f"{cfg['resolution']} px"
    how = report.get("resolution", {}).get("how", "given")
    lines = [
        "# Synthetic data evaluation",
        "",
        f"Synthetic: {', '.join(report['synthetic_sources'])} — {counts['synthetic']} samples. "
        f"Real training set: {counts['real_train']}; held-out real: {counts['holdout']} ({report['holdout_split']}). "
        f"Everything is judged at **{px}** ({how}); masks: {', '.join(cfg['masks']) or 'none'}, device {cfg['device']}.",
        "",
        f"> {PRIVACY_NOTE}",
        "",
        f"## 1. Downstream utility (headline, {px})",
        "",
    ]
    downstream = report["downstream"]
    if downstream.get("computed", True):
        recipe = downstream["recipe"]
        lines += [
            f"Segmenter: `fundus_diffusion.evaluation.segmenter` U-Net (width {recipe['width']}), {recipe['steps']} steps, "
            f"batch {recipe['batch_size']}, seeds {recipe['seeds']}; Dice / IoU at {px} on {downstream['n_holdout']} "
            "held-out real images, mean ± std over seeds.",
            "",
            f"| trained on ({px}) | n train | " + " | ".join(f"{m} Dice | {m} IoU" for m in cfg["masks"]) + " |",
            "|---|---|" + "---|---|" * len(cfg["masks"]),
        ]
        for name, result in downstream["results"].items():
            cells = [f"{_mean_std(result[m]['dice'])} | {_mean_std(result[m]['iou'])}" for m in cfg["masks"]]
            steps = downstream.get("steps", {}).get(name, recipe["steps"])
            label = name if steps == recipe["steps"] else f"{name} ({steps} steps)"
            lines.append(f"| {label} | {downstream['n_train'][name]} | " + " | ".join(cells) + " |")
        lines += _per_source_lines(downstream, cfg["masks"], px) + _worst_lines(downstream, px)
        agreement = report["agreement"]
        lines += [
            "",
            f"## 2. Mask-image agreement ({px})",
            "",
            f"Dice between each generated mask and the real-trained segmenter's prediction on the generated image "
            f"({agreement['n_synthetic']} samples, mean ± std over {agreement['n_seeds']} segmenter seeds):",
            "",
        ]
        lines += [
            f"- {m}: Dice {_mean_std(r['dice'])}, IoU {_mean_std(r['iou'])} (the same segmenters on held-out real images: "
            f"Dice {_mean_std(downstream['results']['real'][m]['dice'])})"
            for m, r in agreement["results"].items()
        ]
        p = report["plausibility"]
        lines += [
            "",
            f"## 3. Mask plausibility ({px})",
            "",
            f"- Exactly one disc component: {_fmt(p['one_disc_component_synthetic'])} of {p['n_synthetic']} synthetic "
            f"(real: {_fmt(p['one_disc_component_real'])} of {p['n_real']}); no disc at all: {_fmt(p['no_disc_synthetic'])}.",
            f"- Wasserstein distance to real — disc area fraction: {_fmt(p['wasserstein_disc_area_fraction'])}, "
            f"centroid x: {_fmt(p['wasserstein_disc_centroid_x'])}, centroid y: {_fmt(p['wasserstein_disc_centroid_y'])} "
            "(fractions of the image side).",
        ]
        if "atrophy_near_disc_synthetic" in p:
            lines.append(
                f"- Atrophy touching or within one disc radius of the disc: {_fmt(p['atrophy_near_disc_synthetic'])} of "
                f"{p['n_with_atrophy_synthetic']} synthetic samples with atrophy (real: {_fmt(p.get('atrophy_near_disc_real'))} "
                f"of {p.get('n_with_atrophy_real', 0)})."
            )
    else:
        lines += [f"Not computed: {downstream['reason']}. Sections 2 and 3 likewise.", ""]
    lines += ["", f"## 4. Memorisation ({px})", ""]
    for space, m in report["memorisation"].items():
        lines.append(
            f"- {space}: {m['n_flagged']} of {m['n_synthetic']} samples ({_fmt(m['share_flagged'])}) are closer to a real "
            f"training image than the {m['percentile']:g}st percentile of real-to-real nearest-neighbour distances "
            f"({_fmt(m['threshold'])}, over {m['n_real_train']} real images); median nearest distance synthetic→real "
            f"{_fmt(m['median_synthetic_to_real'])}, real→real {_fmt(m['median_real_to_real'])}."
        )
        lines += [
            f"  - flagged `{f['synthetic_id']}`: nearest `{f['real_id']}`, distance {_fmt(f['distance'])}"
            for f in m.get("flagged", [])
        ]
    if any(m.get("flagged") for m in report["memorisation"].values()):
        lines += [
            "",
            f"`{FLAGGED_FILE}` lists the flagged ids, to drop them before sharing the set (README: evaluate.py).",
        ]
    lines += _realism_lines(report.get("realism"), px)
    fid = report["fid_kid"]
    lines += ["", f"## 6. FID and KID (RGB at {px}, Inception-v3 via torchmetrics)", ""]
    if fid["computed"]:
        lines.append(
            f"FID {fid['fid']:.2f}; KID {fid['kid_mean']:.4f} ± {fid['kid_std']:.4f} ({fid['kid_subsets']} subsets of "
            f"{fid['kid_subset_size']}); {fid['n_real']} real vs {fid['n_synthetic']} synthetic images at "
            f"{cfg['resolution']} px, resized to 299 px by torchmetrics. Weights: {fid['inception_weights']}."
        )
    else:
        lines.append(f"Not computed: {fid['reason']}.")
    lines += ["", f"## Figures ({px})", ""] + [f"![{os.path.splitext(f)[0]}, {px}]({f})" for f in figure_files]
    return "\n".join(lines) + "\n"


def _per_source_lines(downstream: Dict, masks: Sequence[str], px: str) -> List[str]:
    """Dice per source of the held-out images, one row per training set (older reports have no breakdown)."""
    if "per_source" not in downstream:
        return []
    sources = downstream["holdout_sources"]
    lines = [
        "",
        f"Dice at {px} per source of the held-out images (a file name's prefix before `_`, else the `source` column), "
        "mean ± std over seeds:",
        "",
        f"| trained on ({px}) | " + " | ".join(f"{m} Dice, {s} (n={n})" for m in masks for s, n in sources.items()) + " |",
        "|---|" + "---|" * (len(masks) * len(sources)),
    ]
    for name, result in downstream["per_source"].items():
        lines.append(f"| {name} | " + " | ".join(_mean_std(result[m][s]["dice"]) for m in masks for s in sources) + " |")
    return lines


def _worst_lines(downstream: Dict, px: str) -> List[str]:
    worst = downstream.get("worst_holdout")
    if not worst:
        return []
    key = f"{worst['mask']}_dice"
    listed = ", ".join(f"`{w['id']}` ({w['source']}) {_fmt(w[key])}" for w in worst["images"])
    return [
        "",
        f"Worst held-out images for the segmenter trained on {worst['training_set']} (seed {worst['seed']}), "
        f"{worst['mask']} Dice at {px}: {listed} (`{WORST_FIGURE}.png`: photograph, prediction, truth).",
    ]


def _realism_lines(realism: Optional[Dict], px: str) -> List[str]:
    lines = ["", f"## 5. Realism: {TEST_NAME}, {px}", ""]
    if realism is None:
        return lines + ["Not computed: this report predates the test."]
    if not realism["computed"]:
        return lines + [f"Not computed: {realism['reason']}."]
    recipe, main, control = realism["recipe"], realism["real_vs_synthetic"], realism["real_vs_real"]
    return lines + [
        f"A small CNN (`fundus_diffusion.evaluation.realism`, width {recipe['width']}, {recipe['steps']} steps, flips "
        f"only), trained from scratch, tells the two sets apart; {main['folds']}-fold cross-validated ROC AUC on the "
        f"held-out folds, mean ± std over folds, {main['n_per_class']} images per side at {px}. Not FID.",
        "",
        f"| compared at {px} | ROC AUC | per fold |",
        "|---|---|---|",
        f"| real vs synthetic | {_mean_std(main['auc'])} | {', '.join(_fmt(a) for a in main['auc_per_fold'])} |",
        f"| real vs real (control: two halves of the real images) | {_mean_std(control['auc'])} | "
        f"{', '.join(_fmt(a) for a in control['auc_per_fold'])} |",
    ]


def _json_safe(value):
    """NaN (an undefined statistic) -> null, so that report.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_report(report: Dict, figures: Dict[str, Image.Image], output_dir: str) -> Dict[str, str]:
    """Write ``report.json``, ``report.md``, ``<figure>.png`` and ``flagged_ids.txt`` (the synthetic ids any
    memorisation check flagged, one per line); returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"flagged": os.path.join(output_dir, FLAGGED_FILE)}
    flagged = sorted({f["synthetic_id"] for m in report["memorisation"].values() for f in m.get("flagged", [])})
    with open(paths["flagged"], "w", encoding="utf-8") as f:
        f.write("".join(f"{synthetic_id}\n" for synthetic_id in flagged))
    for name, figure in figures.items():
        paths[name] = os.path.join(output_dir, f"{name}.png")
        figure.save(paths[name])
    report = {**report, "figures": sorted(f"{name}.png" for name in figures)}
    paths["json"] = os.path.join(output_dir, "report.json")
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(_json_safe(report), f, indent=2, allow_nan=False)
    paths["markdown"] = os.path.join(output_dir, "report.md")
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(render_markdown(report, report["figures"]))
    return paths


def model_card_metrics(report: Dict, sampler: Optional[str] = None) -> List[Dict]:
    """The report's headline numbers as model-card metrics (``FundusPipeline.save_pretrained(metrics=...)``);
    ``sampler`` (e.g. "DPM-Solver++, 20 steps") goes into every name, so that samplers of one model do not collide."""
    counts, config = report["counts"], report["config"]
    where = (
        f"{counts['synthetic']} synthetic vs {counts['real_train']} real training / {counts['holdout']} held-out "
        f"real images ({', '.join(filter(None, [config['inputs'].get('real'), config['inputs'].get('holdout')]))}), "
        f"{config['resolution']} px"
    )
    metrics = []
    if report["downstream"].get("results"):
        seeds = f"mean ± std over {config['seeds']} segmenter seeds; {where}"
        for mask in report["config"]["masks"]:
            dice = {k: v[mask]["dice"] for k, v in report["downstream"]["results"].items()}
            for training_set in [
                s for s in ("synthetic", "real+synthetic", EQUAL_REAL_PASSES, "real", REAL_AS_LONG) if s in dice
            ]:
                metrics.append({
                    "name": f"held-out {mask} Dice, segmenter trained on {training_set}",
                    "value": _mean_std(dice[training_set]),
                    "notes": seeds,
                })  # fmt: skip
            metrics.append({
                "name": f"{mask} mask-image agreement (Dice)",
                "value": _mean_std(report["agreement"]["results"][mask]["dice"]),
                "notes": f"generated masks vs what real-trained segmenters see in the generated images; {where}",
            })  # fmt: skip
        if "one_disc_component_synthetic" in report["plausibility"]:
            metrics.append({
                "name": "generated discs in one piece",
                "value": f"{report['plausibility']['one_disc_component_synthetic']:.1%}",
                "notes": f"real training set: {report['plausibility']['one_disc_component_real']:.1%}",
            })  # fmt: skip
    for space, found in report["memorisation"].items():
        metrics.append({
            "name": f"samples flagged as copies of training images ({space.split(' (')[0]})",
            "value": f"{found['n_flagged']} of {found['n_synthetic']}",
            "notes": f"nearest real neighbour closer than percentile {found['percentile']:g} of the real-to-real "
            f"nearest-neighbour distances; features: {space}",
        })  # fmt: skip
    realism = report.get("realism", {})
    if realism.get("computed"):
        main, control = realism["real_vs_synthetic"], realism["real_vs_real"]
        metrics.append({
            "name": f"{TEST_NAME}, real vs synthetic",
            "value": _mean_std(main["auc"]),
            "notes": f"mean ± std over {main['folds']} cross-validation folds, {main['n_per_class']} images per side; "
            f"real-vs-real control: {_mean_std(control['auc'])}; {where}",
        })  # fmt: skip
    if "fid" in report["fid_kid"]:
        metrics.append({"name": "FID", "value": round(report["fid_kid"]["fid"], 1), "notes": where})
    if sampler:
        metrics = [{**m, "name": f"{m['name']} ({sampler})"} for m in metrics]
    return metrics


def warn_if_other_data(model_dir: str, real: Optional[str]) -> None:
    """Warn when the model was trained on other data than the evaluation's ``real`` set (its memorisation check
    then compares against the wrong images)."""
    from ..generate import read_model_index

    trained_on = read_model_index(model_dir).get("training_info", {}).get("dataset")
    if trained_on and real and os.path.abspath(trained_on) != os.path.abspath(real):
        warnings.warn(
            f"{model_dir} was trained on {trained_on}, but the evaluation's real data is {real}: its card will quote "
            "memorisation and Dice measured against the latter (the card names it).",
            stacklevel=3,
        )


def update_model_card(report: Dict, synthetic_dir: str, model_dir: Optional[str] = None) -> str:
    """Add ``report``'s headline metrics, named by the sampler that made ``synthetic_dir``, to the card of
    ``model_dir`` (default: the local model recorded in the set's generation config); returns the card's path."""
    from ..generate import generating_model, sampler_description
    from ..hub import add_model_card_metrics

    model_dir = model_dir or generating_model(synthetic_dir)
    warn_if_other_data(model_dir, report["config"]["inputs"].get("real"))
    metrics = model_card_metrics(report, sampler=sampler_description(synthetic_dir))
    return add_model_card_metrics(model_dir, metrics)
