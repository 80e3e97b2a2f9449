"""``evaluate``: the whole protocol of DESIGN.md ("Evaluation protocol") on a real and a synthetic dataset.

Every image goes through the same preprocessing as training (square fundus crop, ``resolution`` px; masks by
nearest neighbour), then: downstream segmentation (mean and per source of the held-out images), mask-image agreement,
mask plausibility, memorisation (with the held-out control that decides whether the set is refused, ``refused``),
the classifier two-sample realism test, how light spreads over their field (``global_look``), where the synthetic images' detail differs (green-channel power spectra,
``spectrum``), how their optic discs look (colour, detail and its orientation, ``disc_appearance``), FID / KID. The resolution defaults to the
synthetic set's native one (the size its images were generated at): a lower one can average away texture that makes
the samples useless at the size a user trains at.
``report.write_report`` turns the result into ``report.json``, ``report.md`` and PNG figures.
"""

import os
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.schema import (
    ORIGIN_COLUMN,
    annotation_flags,
    annotation_matrix,
    dataset_mask_names,
    mask_channel,
    origins,
    origins_as_trained,
    parse_mask_names,
)
from ..visualization import contact_sheet
from .arrays import dataset_arrays, default_device, to_pil
from .checks import native_resolution, warn, warn_if_upscaled
from .disc_appearance import appearance_section
from .fid import fid_kid
from .figures import bar_chart, histograms, titled
from .global_look import global_look_section
from .memorisation import PIXEL_SPACE, copy_checks, nearest_training_neighbours, pixel_features, refusal
from .metrics import cup_to_disc_ratios, dice_per_image, disc_geometry, iou_per_image, mask_plausibility, summarise
from .realism import REGIONS, RealismRecipe, origin_tests, quarter_resolution_test, realism_test, region_test
from .segmenter import SegmenterRecipe, encode_images, predict_masks, train_segmenter
from .spectrum import edge_section, ratio_figure, spectrum_section
from .splits import holdout_ids, read_split_file, split_by_ids, write_split_file

TRAINING_SETS = ("real", "synthetic", "real+synthetic")
# Optional rows (--equal_real_passes): real + synthetic trained for steps x (real + synthetic) / real, so each real
# image is drawn as often as when the segmenter trains on the real images alone; and, as its control, the real images
# alone trained for as many steps (longer training by itself may help).
EQUAL_REAL_PASSES = "real+synthetic, equal real passes"
REAL_AS_LONG = "real, as many steps as equal real passes"
WORST_FIGURE = "worst_holdout"


@dataclass
class EvaluationConfig:
    resolution: Optional[int] = None  # None: the synthetic set's native resolution
    masks: Optional[Sequence[str]] = None  # None: every mask scorable (``masks_to_score``); else these, or "none"
    seeds: int = 3
    segmenter_steps: int = SegmenterRecipe.steps
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
    realism_invariance: str = RealismRecipe.invariance  # the judge: "robust", "colour" or "none" (realism.INVARIANCES)
    realism_repeats: int = RealismRecipe.repeats
    inputs: Dict = field(default_factory=dict)  # provenance (dataset paths), copied into the report

def annotation_flags_of(
    datasets: Dict[str, object], mask_names: Sequence[str], inputs: Optional[Dict] = None
) -> Dict[str, torch.Tensor]:
    """``{name: bool [N, M]}``: which images of each dataset are annotated for each mask. A mask a dataset has no
    column for is an error naming it; so is a synthetic set not annotated everywhere (its masks are the model's
    output, and agreement and plausibility are measured on all of them). ``inputs``: the command line's paths
    (``EvaluationConfig.inputs``), named in the errors."""
    flags, inputs = {}, inputs or {}
    remedies = {"synthetic": "generate it from a model trained with those masks (fundus-train-ddpm --masks ...)"}
    for name, dataset in datasets.items():
        where = f" (--{name} {inputs[name]})" if inputs.get(name) else ""
        flags[name] = torch.from_numpy(annotation_matrix(dataset, mask_names, f"The {name} set{where}", remedies.get(name)))
    missing = {m: int((~flags["synthetic"][:, i]).sum()) for i, m in enumerate(mask_names) if not flags["synthetic"][:, i].all()}
    if missing:
        listed = ", ".join(f"{m} ({n} samples)" for m, n in missing.items())
        raise ValueError(
            f"The synthetic set is not annotated everywhere for {listed}: a set made by fundus-generate always is. "
            "Fix: pass a generated set as --synthetic, or leave those masks out of --masks."
        )
    return flags

def masks_to_score(masks, real_train, holdout, synthetic, inputs: Optional[Dict] = None) -> Tuple[Tuple[str, ...], List[str]]:
    """The masks to score and the notes on those left out. A mask is scorable where the real training set and the
    held-out set hold it and each has at least one image annotated for it (a segmenter learns it from the one and is
    scored on the other; training refuses a mask no training image is annotated for, alike).

    ``masks`` None: every scorable mask of the synthetic set (a disc + cup set is scored on both without being told,
    where it was scored on the disc alone and the cup silently left out); the notes name the others, and a synthetic
    set with masks none of which is scorable is refused (``--masks none`` asks for the image-only evaluation).
    ``masks`` given: those, refusing one that a real set holds but has no annotated image of (a mask a set has no
    column for is ``annotation_flags_of``'s error). The masks are learnt by one segmenter together, so a mask's Dice
    depends on which others are scored: compare rows scored on the same masks."""
    inputs = inputs or {}
    where = {
        "real": f"--real {inputs['real']}" if inputs.get("real") else "the real training set",
        "holdout": f"--holdout {inputs['holdout']}" if inputs.get("holdout") else "the held-out part of --real",
    }
    real_sets = {"real": real_train, "holdout": holdout}

    def problem(name: str, require_column: bool) -> Optional[str]:
        for key, dataset in real_sets.items():
            if name not in dataset_mask_names(dataset):
                if require_column:
                    return f"{where[key]} has no {name} masks"
            elif not annotation_flags(dataset, name).any():
                return f"no image of {where[key]} is annotated for {name}"
        return None

    if masks is not None:
        names = parse_mask_names(masks)
        problems = [p for p in (problem(name, require_column=False) for name in names) if p]
        if problems:
            raise ValueError(
                f"{'; '.join(problems)}: nothing would learn or score it. Fix: leave it out of --masks, or use "
                "real sets annotated for it."
            )
        return names, []
    names, notes = [], []
    for name in dataset_mask_names(synthetic):
        why = problem(name, require_column=True)
        if why:
            notes.append(f"{name}: not scored, {why}")
        else:
            names.append(name)
    if notes and not names:
        raise ValueError(
            f"No mask of the synthetic set can be scored: {'; '.join(notes)}. Fix: pass real sets annotated for its "
            "masks, or --masks none for an image-only evaluation (realism and copies only)."
        )
    return tuple(names), notes


def resolve_split(real, holdout, config: EvaluationConfig) -> Tuple[object, object, str]:
    """``(real_train, holdout, how)``: the given holdout, the ids in ``split_file``, or a fresh split by id.

    A ``split_file`` that does not exist yet is written with the fresh split, so later runs reuse it (and ``how`` says
    so: a mistyped path gives a fresh split, not the one meant). A ``split_file`` beside a given holdout is refused:
    the two name the held-out images twice.
    """
    if holdout is not None and config.split_file:
        raise ValueError(
            f"--holdout and --split_file {config.split_file} both say which images are held out. Fix: pass one: "
            "--holdout for a held-out dataset, or --split_file for held-out ids of --real."
        )
    if holdout is not None:
        overlap = set(real["id"]) & set(holdout["id"])
        if overlap:
            raise ValueError(
                f"{len(overlap)} held-out id(s) are also in the real training set, e.g. {sorted(overlap)[:3]}. Fix: "
                "pass the two parts of one split (fundus-split-dataset writes train/ and test/) as --real and --holdout."
            )
        return real, holdout, "given held-out dataset"
    unseen_if = "; unseen by the generator only if it was trained without them (section 4 checks for copies of them)"
    if config.split_file and os.path.exists(config.split_file):
        try:
            parts = split_by_ids(real, read_split_file(config.split_file))
        except ValueError as error:
            raise ValueError(
                f"--split_file {config.split_file}: {error} It was written for another dataset. Fix: pass that "
                "dataset as --real, or a new --split_file path (written with a fresh split)."
            ) from error
        return (*parts, f"ids from {config.split_file}, held out of --real{unseen_if}")
    # Stratified by origin (a file name's shared prefix, else the source column), so every origin the per-source
    # breakdown reports is held out in proportion.
    strata = origins(list(real["id"]), list(real["source"]))
    ids = holdout_ids(list(real["id"]), strata, config.holdout_fraction, config.split_seed)
    how = (
        f"held out of --real by holdout_ids(test_fraction={config.holdout_fraction}, seed={config.split_seed}, "
        f"stratified by origin){unseen_if}"
    )
    if config.split_file:
        write_split_file(config.split_file, ids)
        how += f"; --split_file {config.split_file} did not exist, so this split was written there"
        warn(f"--split_file {config.split_file} did not exist: a fresh split was written there (check the path).")
    return (*split_by_ids(real, ids), how)

def _per_image_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask_names: Sequence[str],
    annotated: Optional[torch.Tensor] = None,
    empty_apart: bool = True,
) -> Dict[str, Dict[str, np.ndarray]]:
    """Per-image scores per mask for ``[N, M, H, W]`` predictions and targets (on any device): Dice and IoU on the
    images whose target holds the structure, and ``empty_kept_empty`` (1 where the prediction is empty too, else 0)
    on the images whose target is empty; NaN elsewhere, and for the images ``annotated`` (``bool [N, M]``, None: all)
    marks as not annotated for that mask.

    An empty target and an empty prediction would make Dice 1: averaged with the rest, a segmenter that never finds
    atrophy would outscore one that finds every lesion and adds a stray pixel on each healthy eye. So the two are
    scored apart; ``empty_apart=False`` scores Dice and IoU on every image instead (an agreement between two masks,
    where an empty one against a found structure must count as 0)."""
    pred, target = pred.cpu().numpy(), target.cpu().numpy()
    scored = np.ones(target.shape[:2], dtype=bool) if annotated is None else annotated.cpu().numpy()
    present = target.reshape(*target.shape[:2], -1).any(-1)
    overlap = scored & present if empty_apart else scored
    scores = {}
    for m, name in enumerate(mask_names):
        scores[name] = {
            "dice": np.where(overlap[:, m], dice_per_image(pred[:, m], target[:, m]), np.nan),
            "iou": np.where(overlap[:, m], iou_per_image(pred[:, m], target[:, m]), np.nan),
        }
        if empty_apart:
            left_empty = ~pred[:, m].reshape(len(pred), -1).any(-1)
            scores[name]["empty_kept_empty"] = np.where(scored[:, m] & ~present[:, m], left_empty.astype(float), np.nan)
    return scores

def _mean(values: np.ndarray) -> float:
    """The mean of the scored (not NaN) values; NaN when there are none (no annotated image)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")

def _means(per_image: Dict[str, Dict[str, np.ndarray]], select=slice(None)) -> Dict[str, Dict[str, float]]:
    """``{mask: {metric: mean}}`` of per-image scores over the images ``select`` picks (default all), leaving out the
    images not annotated for each mask."""
    return {mask: {k: _mean(v[select]) for k, v in metrics.items()} for mask, metrics in per_image.items()}

def _overlap_scores(pred: torch.Tensor, target: torch.Tensor, mask_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Mean per-image Dice and IoU per mask for ``[N, M, H, W]`` predictions and targets, every image counted (an
    agreement: see ``_per_image_scores``)."""
    return _means(_per_image_scores(pred, target, mask_names, empty_apart=False))

def _across_seeds(per_seed: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``[{mask: {metric: value}}]`` per seed -> ``{mask: {metric: {mean, std, n}}}`` (n = seeds)."""
    return {
        mask: {metric: summarise([s[mask][metric] for s in per_seed]) for metric in per_seed[0][mask]}
        for mask in per_seed[0]
    }

def segmenter_scores(
    train, holdout, mask_names: Sequence[str], steps: int, seed: int, device, desc: str = "",
    train_annotated=None, holdout_annotated=None,
):  # fmt: skip
    """The fixed recipe trained ``steps`` steps on ``train`` arrays and scored on ``holdout`` arrays: ``(scores,
    model, per_image)``, scores ``{mask: {"dice", "iou"}}`` (mean per held-out image annotated for the mask),
    per_image the same as arrays over the held-out images (NaN where not annotated). ``*_annotated``: ``bool [N, M]``
    flags (None: all annotated); the segmenter trains each mask on the images annotated for it."""
    recipe = SegmenterRecipe(steps=steps, seed=seed)
    progress = lambda it: tqdm(it, desc=f"segmenter on {desc}, seed {seed}", leave=False)  # noqa: E731
    model = train_segmenter(train, len(mask_names), recipe, device=device, progress=progress, annotated=train_annotated)
    per_image = _per_image_scores(predict_masks(model, holdout), holdout[:, 3:].bool(), mask_names, holdout_annotated)
    return _means(per_image), model, per_image

def _per_source(per_seed_images: List[Dict], sources: Sequence[str]) -> Dict:
    """``{mask: {source: {metric: {mean, std, n}}}}``: each seed's mean over the held-out images of each source,
    then mean and std over seeds."""
    sources = np.asarray(sources)
    return {
        mask: {
            source: {
                metric: summarise([_mean(s[mask][metric][sources == source]) for s in per_seed_images])
                for metric in per_seed_images[0][mask]
            }
            for source in sorted(set(sources))
        }
        for mask in per_seed_images[0]
    }


REUSED_MASK_DICE = 0.98  # a synthetic sample's masks this close to a held-out image's are that image's own


def held_out_masks_reused(
    synthetic: torch.Tensor, holdout: torch.Tensor, real: Optional[torch.Tensor] = None, chunk: int = 256
) -> int:
    """How many synthetic samples (``uint8 [N, 3 + M, S, S]``) carry a held-out image's masks: Dice at least
    ``REUSED_MASK_DICE`` in every mask that held-out image has pixels of (a mask it is not annotated for is drawn by
    the model and compared with nothing; held-out images without any mask pixel are left out), and closer to it than
    to every ``real`` training image's masks (at 32 px a training disc of 21 pixels can equal a held-out one: then
    a sample nearest both is not counted). These are images drawn for the held-out images' own masks (the
    mask-to-image path): segmenters trained on them have seen the test labels, so the synthetic and real + synthetic
    Dice rows are not a held-out score."""
    held_out = _mask_pixels(holdout)
    if synthetic.shape[1] <= 3 or not len(held_out):
        return 0
    present = held_out.sum(2) > 0  # [H, M]: the masks each held-out image has
    training = _mask_pixels(real) if real is not None else None
    reused = 0
    for start in range(0, len(synthetic), chunk):
        masks = (synthetic[start : start + chunk, 3:] > 127).flatten(2).float()  # [N, M, P]
        worst = torch.where(present[None], _mask_dice(masks, held_out), 1.0).amin(2)  # [N, H]: over its masks
        best, nearest = worst.max(1)
        if training is not None and len(training):  # the same masks (the nearest held-out image's) of each training image
            over = present[nearest][:, None]  # [N, 1, M]
            as_near = torch.where(over, _mask_dice(masks, training), 1.0).amin(2).amax(1) >= best
        else:
            as_near = torch.zeros_like(best, dtype=torch.bool)
        reused += int(((best >= REUSED_MASK_DICE) & ~as_near).sum())
    return reused


def _mask_pixels(arrays: torch.Tensor) -> torch.Tensor:
    """``[K, M, P]`` float masks of the images (``uint8 [N, 3 + M, S, S]``) that have some mask pixel."""
    masks = (arrays[:, 3:] > 127).flatten(2).float()
    return masks[masks.sum(2).amax(1) > 0]


def _mask_dice(masks: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``[N, K, M]``: Dice of each sample's masks (``[N, M, P]``) with each other image's (``[K, M, P]``), per mask."""
    overlap = torch.einsum("nmp,kmp->nkm", masks, others)
    return 2 * overlap / (masks.sum(2)[:, None] + others.sum(2)[None]).clamp(min=1)


def _downstream(arrays, annotated, mask_names, config: EvaluationConfig, device, holdout_sources: Sequence[str]):
    """Section 1: the recipe trained on each training set for every seed, scored on the held-out real images, in the
    mean and per source of the held-out images; each mask trained and scored on the images annotated for it
    (``annotated``: ``{set: bool [N, M]}`` as ``arrays``).

    Returns the section, the segmenters per training set (one per seed; sections 2 and 4 reuse the real-trained
    ones) and the per-image scores of each training set's seed 0.
    """
    train_sets = {"real": arrays["real"], "synthetic": arrays["synthetic"]}
    train_sets["real+synthetic"] = torch.cat([arrays["real"], arrays["synthetic"]])
    flags = {"real": annotated["real"], "synthetic": annotated["synthetic"]}
    flags["real+synthetic"] = torch.cat([annotated["real"], annotated["synthetic"]])
    steps = {name: config.segmenter_steps for name in train_sets}
    if config.equal_real_passes:
        longer = round(config.segmenter_steps * len(train_sets["real+synthetic"]) / len(arrays["real"]))
        train_sets[EQUAL_REAL_PASSES], steps[EQUAL_REAL_PASSES] = train_sets["real+synthetic"], longer
        train_sets[REAL_AS_LONG], steps[REAL_AS_LONG] = arrays["real"], longer
        flags[EQUAL_REAL_PASSES], flags[REAL_AS_LONG] = flags["real+synthetic"], flags["real"]
    per_seed, per_image, models = ({name: [] for name in train_sets} for _ in range(3))
    for seed in range(config.seeds):
        for name in train_sets:
            scores, model, images = segmenter_scores(
                train_sets[name], arrays["holdout"], mask_names, steps[name], seed, device, desc=name,
                train_annotated=flags[name], holdout_annotated=annotated["holdout"],
            )  # fmt: skip
            per_seed[name].append(scores)
            per_image[name].append(images)
            models[name].append(model)
    section = {
        "recipe": {**SegmenterRecipe(steps=config.segmenter_steps).to_dict(), "seeds": list(range(config.seeds))},
        "n_train": {name: len(train_sets[name]) for name in train_sets},
        "steps": steps,
        "n_holdout": len(arrays["holdout"]),
        "n_holdout_annotated": {m: int(annotated["holdout"][:, i].sum()) for i, m in enumerate(mask_names)},
        "n_holdout_empty": {  # annotated, and without the structure: scored by empty_kept_empty, not Dice
            m: int((annotated["holdout"][:, i].cpu() & ~arrays["holdout"][:, 3 + i].flatten(1).any(1).cpu()).sum())
            for i, m in enumerate(mask_names)
        },
        "n_train_annotated": {
            name: {m: int(flags[name][:, i].sum()) for i, m in enumerate(mask_names)} for name in train_sets
        },
        "results": {name: _across_seeds(per_seed[name]) for name in train_sets},
        "holdout_sources": {source: int(n) for source, n in zip(*np.unique(holdout_sources, return_counts=True))},
        "per_source": {name: _per_source(per_image[name], holdout_sources) for name in train_sets},
        "per_source_scored": {  # the held-out images of each source whose Dice counts (annotated, showing the mask)
            mask: {
                source: int((~np.isnan(scores["dice"][np.asarray(holdout_sources) == source])).sum())
                for source in sorted(set(holdout_sources))
            }
            for mask, scores in per_image["real"][0].items()
        },
    }
    return section, models, {name: images[0] for name, images in per_image.items()}

def _worst_holdout(per_image, models, arrays, holdout_ids, holdout_sources, mask_names, n: int, resolution: int):
    """The ``n`` held-out images the synthetic-trained segmenter (seed 0) does worst on, by the first mask's Dice
    (among the images annotated for it): listed, and drawn as photograph / prediction / truth (mask outlines) rows."""
    mask = mask_names[0]
    dice = per_image["synthetic"][mask]["dice"]
    order = np.array([i for i in np.argsort(dice, kind="stable") if not np.isnan(dice[i])][:n], dtype=np.int64)
    listed = [
        {"id": holdout_ids[i], "source": holdout_sources[i], f"{mask}_dice": float(dice[i])} for i in order.tolist()
    ]
    section = {"training_set": "synthetic", "seed": 0, "mask": mask, "images": listed}
    if not listed:  # no held-out image is annotated for the mask
        return section, None
    chosen = arrays["holdout"][torch.as_tensor(order, dtype=torch.long).to(arrays["holdout"].device)]
    predicted = predict_masks(models["synthetic"][0], chosen)
    tiles, masks, captions = [], [], []
    for row, i in enumerate(order.tolist()):
        image, truth = to_pil(chosen[row].cpu(), mask_names)
        prediction = {name: Image.fromarray(predicted[row, m].numpy().astype(np.uint8) * 255) for m, name in enumerate(mask_names)}
        tiles += [image, image, image]
        masks += [{}, prediction, truth]
        captions += [f"{holdout_ids[i].split('/')[-1]} Dice {dice[i]:.2f}", "prediction", "truth"]
    sheet = contact_sheet(tiles, masks, captions, columns=3, tile=sheet_tile(resolution))
    title = f"{len(order)} worst held-out, synthetic-trained (seed 0), {mask} Dice, {at_resolution(resolution)}"
    return section, titled(sheet, title, outlines=mask_names)

def sheet_tile(resolution: int) -> int:
    """The tile size of a contact sheet of images judged at ``resolution``: their own size, but at least 128 px (to
    be seen) and at most 256 px (a sheet of 36 stays a picture, not a poster)."""
    return max(128, min(resolution, 256))

def at_resolution(resolution: int) -> str:
    """"256 px", or where a sheet shows the images at another size, both."""
    shown = sheet_tile(resolution)
    return f"{resolution} px" if shown == resolution else f"{resolution} px, shown at {shown} px"

def _mask_figures(report: Dict, arrays, annotated, mask_names) -> Dict[str, Image.Image]:
    """Dice bars per mask and training set, and, with a disc mask, the disc geometry of the synthetic masks against
    the real ones annotated for the disc."""
    results = report["downstream"]["results"]
    dice = {
        mask: {name: (results[name][mask]["dice"]["mean"], results[name][mask]["dice"]["std"]) for name in results}
        for mask in mask_names
    }
    seeds, resolution = report["config"]["seeds"], report["config"]["resolution"]
    downstream = report["downstream"]
    counts = sorted({n - downstream["n_holdout_empty"][m] for m, n in downstream["n_holdout_annotated"].items()})
    n_holdout = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    figures = {
        "dice_bars": bar_chart(
            f"Dice at {resolution} px on {n_holdout} held-out real images showing the mask (mean +- std, {seeds} seed{'s' * (seeds != 1)})",
            dice,
            x_label="mask",
            y_label="Dice",
            legend_title="segmenter trained on",
        ),
    }
    if "disc" in mask_names:
        disc = mask_channel(mask_names, "disc")
        real = arrays["real"][annotated["real"][:, disc - 3]]
        real_geo, syn_geo = (disc_geometry(a[:, disc].numpy() > 0) for a in (real, arrays["synthetic"]))
        keys = ("area_fraction", "centroid_x", "centroid_y")
        figures["disc_histograms"] = histograms(
            {f"disc {k.replace('_', ' ')}, {resolution} px": {"real": real_geo[k], "synthetic": syn_geo[k]} for k in keys}
        )
        if "cup" in mask_names:
            cup = mask_channel(mask_names, "cup")
            both = annotated["real"][:, disc - 3] & annotated["real"][:, cup - 3]
            ratios = {
                name: cup_to_disc_ratios(a[:, cup].numpy() > 0, a[:, disc].numpy() > 0)
                for name, a in (("real", arrays["real"][both]), ("synthetic", arrays["synthetic"]))
            }
            figures["cup_to_disc"] = histograms({f"vertical cup-to-disc ratio, {resolution} px": ratios})
    return figures

def _memorisation(arrays, real_models, synthetic_ids, real_ids, holdout_ids, resolution: int) -> Dict:
    """Section 4: the copy check with its held-out control (``memorisation.controlled_copy_check``) in downsampled
    pixels and, where a real-trained segmenter exists, in its encoder features; against the training images and their
    mirror images (the DDPM trains on both)."""
    spaces = {PIXEL_SPACE: pixel_features}
    if real_models:
        name = f"real-trained segmenter encoder, global-average-pooled bottleneck (seed 0, {resolution} px, L2)"
        spaces[name] = partial(encode_images, real_models[0])
    return copy_checks(spaces, arrays, synthetic_ids, real_ids, holdout_ids)

def _closest_pairs(threshold: float, arrays, synthetic_ids, real_ids, num_pairs: int):
    """The synthetic samples nearest to a real training image or its mirror image (pixel space), listed and drawn side
    by side (the mirror image where it was the nearer); those below the copy check's ``threshold`` captioned as
    possible copies."""
    real, mirrored = arrays["real"], arrays["real"].flip(-1)
    distances, neighbours, nearer_mirrored = nearest_training_neighbours(
        pixel_features(arrays["synthetic"]), pixel_features(real), pixel_features(mirrored)
    )
    pairs, captions, listed = [], [], []
    for i in np.argsort(distances, kind="stable")[:num_pairs]:
        j, distance, flipped = int(neighbours[i]), float(distances[i]), bool(nearer_mirrored[i])
        pairs += [to_pil(arrays["synthetic"][i], ())[0], to_pil((mirrored if flipped else real)[j], ())[0]]
        captions += [
            f"syn d={distance:.2f}{' COPY?' if distance < threshold else ''}",
            f"real {real_ids[j].split('/')[-1]}{' mirrored' if flipped else ''}",
        ]
        listed.append(
            {"synthetic_id": synthetic_ids[int(i)], "real_id": real_ids[j], "pixel_distance": distance, "mirrored": flipped}
        )
    return listed, contact_sheet(pairs, captions=captions, columns=4, tile=sheet_tile(arrays["synthetic"].shape[-1]))

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
    if config.masks is not None:
        parse_mask_names(config.masks)  # a bad name is refused before any work
    for name, dataset in (("real", real), ("synthetic", synthetic), ("holdout", holdout)):
        if dataset is not None and len(dataset) == 0:
            where = f" {config.inputs[name]}" if (config.inputs or {}).get(name) else ""
            fix = "regenerate it with fundus-generate" if name == "synthetic" else "rebuild it"
            raise ValueError(f"--{name}{where} holds no samples: nothing to evaluate. Fix: {fix}.")
    resolution, resolution_info = _resolution(config, synthetic)
    for what, dataset in (("the synthetic", synthetic), ("the real", real), ("the held-out", holdout)):
        if dataset is not None:
            warn_if_upscaled(dataset, resolution, what)
    real_train, holdout, split_how = resolve_split(real, holdout, config)
    if len(holdout) < 1 or len(real_train) < 2:
        raise ValueError(
            f"{len(real_train)} real training and {len(holdout)} held-out images ({split_how}): the protocol needs at "
            "least two training images (the copy check compares each with its nearest other one) and one held-out "
            "image. Fix: pass a larger --real, or a --holdout set beside it."
        )
    mask_names, masks_left_out = masks_to_score(config.masks, real_train, holdout, synthetic, config.inputs)
    annotated = annotation_flags_of({"real": real_train, "holdout": holdout, "synthetic": synthetic}, mask_names, config.inputs)
    arrays = {
        "real": dataset_arrays(real_train, resolution, mask_names, "real training set"),
        "holdout": dataset_arrays(holdout, resolution, mask_names, "held-out set"),
        "synthetic": dataset_arrays(synthetic, resolution, mask_names, "synthetic set"),
    }
    on_device = {name: a.to(device) for name, a in arrays.items()}  # moved once; every network trains from these
    holdout_ids = list(holdout["id"])
    everyone = origins([*real_train["id"], *holdout_ids], [*real_train["source"], *holdout["source"]])
    holdout_sources = everyone[len(real_train) :]  # prefixes counted over all real images, as the split counted them
    report = {
        "config": {
            **asdict(config), "resolution": resolution, "masks": list(mask_names), "device": device,
            # CPU results depend on it (summation order): one thread against two moved a 32 px Dice by 0.05
            "cpu_threads": torch.get_num_threads(),
        },  # fmt: skip
        "masks_left_out": masks_left_out,
        "resolution": resolution_info,
        "counts": {"real_train": len(real_train), "holdout": len(holdout), "synthetic": len(synthetic)},
        "holdout_split": split_how,
        "synthetic_sources": sorted(set(synthetic["source"])),
        "refused": None,  # set with the copy check (section 4): first in report.json, as in report.md
    }
    grid = [to_pil(a, mask_names) for a in arrays["synthetic"][: config.grid_samples]]
    figures = {
        "sample_grid": titled(
            contact_sheet([g[0] for g in grid], [g[1] for g in grid], tile=sheet_tile(resolution)),
            f"{len(grid)} synthetic samples at {at_resolution(resolution)} with their masks",
            outlines=mask_names,
        )
    }

    real_models = []
    if mask_names:
        report["downstream"], models, per_image = _downstream(
            on_device, annotated, mask_names, config, device, holdout_sources
        )
        real_models = models["real"]
        report["downstream"]["synthetic_with_holdout_masks"] = held_out_masks_reused(
            arrays["synthetic"], arrays["holdout"], arrays["real"]
        )
        report["downstream"]["worst_holdout"], worst = _worst_holdout(
            per_image, models, on_device, holdout_ids, holdout_sources, mask_names, config.worst_images, resolution
        )
        if worst is not None:
            figures[WORST_FIGURE] = worst
        generated = on_device["synthetic"][:, 3:].bool()
        agreement = [_overlap_scores(predict_masks(m, on_device["synthetic"]), generated, mask_names) for m in real_models]
        report["agreement"] = {
            "n_synthetic": len(synthetic),
            "n_seeds": len(real_models),
            "results": _across_seeds(agreement),
        }
        as_masks = lambda a: {name: a[:, 3 + m].numpy() > 0 for m, name in enumerate(mask_names)}  # noqa: E731
        real_annotated = {name: annotated["real"][:, m].numpy() for m, name in enumerate(mask_names)}
        report["plausibility"] = mask_plausibility(
            as_masks(arrays["synthetic"]), as_masks(arrays["real"]), real_annotated
        )
        figures.update(_mask_figures(report, arrays, annotated, mask_names))
    else:
        for section in ("downstream", "agreement", "plausibility"):
            reason = "evaluated with --masks none (image-only)" if config.masks is not None else "the synthetic set holds no masks (image-only)"
            report[section] = {"computed": False, "reason": reason}

    synthetic_ids, real_ids = list(synthetic["id"]), list(real_train["id"])
    report["memorisation"] = _memorisation(arrays, real_models, synthetic_ids, real_ids, holdout_ids, resolution)
    refused = refusal(report["memorisation"])
    report["refused"] = None if refused is None else (
        f"{refused} The segmenters trained on this set are reported for inspection only: a score earned by copies "
        "says nothing about what the generator adds."
    )
    report["memorisation_closest_pairs"], pairs = _closest_pairs(
        report["memorisation"][PIXEL_SPACE]["threshold"], arrays, synthetic_ids, real_ids, config.num_pairs
    )
    figures["nearest_pairs"] = titled(pairs, f"synthetic samples nearest to a real training image, {at_resolution(resolution)}")
    recipe = RealismRecipe(
        steps=config.realism_steps, folds=config.realism_folds, invariance=config.realism_invariance,
        repeats=config.realism_repeats,
    )  # fmt: skip
    all_real = torch.cat([on_device["real"][:, :3], on_device["holdout"][:, :3]])
    report["realism"] = realism_test(all_real, on_device["synthetic"][:, :3], recipe, device)
    # The views below explain the whole-image figure, the bar's measure; they run once, whatever --realism_repeats.
    once = replace(recipe, repeats=1)
    if report["realism"]["computed"]:  # at which scale the sets differ: the same judge at a quarter of the resolution
        report["realism"]["quarter_resolution"] = quarter_resolution_test(all_real, on_device["synthetic"][:, :3], once, device)
    if "disc" in mask_names and report["realism"]["computed"]:  # the disc, where generated ones failed, and the rest
        disc = mask_channel(mask_names, "disc")
        real_discs = torch.cat([on_device["real"][:, disc], on_device["holdout"][:, disc]]) > 0
        for region in REGIONS:
            report["realism"][region] = region_test(
                region, all_real, real_discs, on_device["synthetic"][:, :3], on_device["synthetic"][:, disc] > 0,
                once, device,
            )  # fmt: skip
    if ORIGIN_COLUMN in synthetic.column_names and report["realism"]["computed"]:  # each camera against its own
        as_trained = origins_as_trained(real_ids, list(real_train["source"]), holdout_ids, list(holdout["source"]))
        report["realism"]["by_origin"] = origin_tests(
            all_real, as_trained, on_device["synthetic"][:, :3], list(synthetic[ORIGIN_COLUMN]), once, device
        )
    report["global_look"] = global_look_section(
        torch.cat([arrays["real"][:, :3], arrays["holdout"][:, :3]]), arrays["synthetic"][:, :3]
    )
    report["power_spectrum"] = spectrum_section(arrays["real"], arrays["holdout"], arrays["synthetic"])
    disc = mask_channel(mask_names, "disc") if "disc" in mask_names else None
    report["edge_detail"] = edge_section(arrays["real"], arrays["holdout"], arrays["synthetic"], disc)
    report["disc_appearance"] = appearance_section(
        arrays["real"], arrays["holdout"], arrays["synthetic"], disc,
        everyone[: len(real_train)], holdout_sources,  # the cameras: rows per camera and per camera style
    )  # fmt: skip
    if report["power_spectrum"]["computed"]:
        figures["power_spectrum"] = ratio_figure(report["power_spectrum"], resolution)
    report["fid_kid"] = fid_kid(
        arrays["real"][:, :3], arrays["synthetic"][:, :3], config.inception_weights, device=device
    )
    return report, figures
