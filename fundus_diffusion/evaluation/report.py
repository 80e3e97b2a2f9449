"""``write_report``: a protocol result (``protocol.evaluate``) as ``report.json``, ``report.md`` (one section per
protocol item, every table titled with the resolution; a refused set's verdict first) and PNG figures. The pieces
shared with ``pm_utility``'s report (refusal banner, memorisation and realism sections, strict JSON) are public."""

import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

from PIL import Image

from ..data.schema import ORIGIN_MIN_IMAGES
from .disc_appearance import REAL, appearance_table
from .memorisation import REFUSE_P, copy_excess_p
from .metrics import CUP_INSIDE_SHARE, format_mean_std, format_value
from .protocol import WORST_FIGURE
from .realism import INVARIANCES, REALISM_AUC_BAR, TEST_NAME
from .spectrum import band_table, edge_table

FLAGGED_FILE = "flagged_ids.txt"
GLOBAL_LOOK_ROWS = 8  # the features shown in report.md (report.json holds every one)
# The caption under each figure in report.md (a figure without one is shown with its name only).
FIGURE_CAPTIONS = {
    "sample_grid": "The first synthetic samples with their generated masks drawn as outlines (colours in the legend).",
    "dice_bars": "Dice of segmenters trained on each set, all scored on the same held-out real images; bars: mean over "
    "seeds, whiskers: standard deviation.",
    "disc_histograms": "Disc area and centroid of the synthetic masks against the real masks annotated for the disc; "
    "each histogram sums to 1.",
    "cup_to_disc": "Vertical cup-to-disc ratio of the synthetic masks against the real images annotated for both cup "
    "and disc; each histogram sums to 1.",
    WORST_FIGURE: "The held-out real images the synthetic-trained segmenter does worst on: photograph, its prediction, "
    "the truth (outline colours in the legend).",
    "nearest_pairs": "Each synthetic sample beside its nearest real training image (the memorisation check's closest "
    "pairs).",
    "power_spectrum": "Green-channel power per spatial frequency as a ratio to the real training photographs' (1 = the "
    "same energy; below 1: missing detail); dashed: held-out real photographs, the control.",
}


def _empty_lines(downstream: Dict, masks: Sequence[str]) -> List[str]:
    """For each mask some held-out images are annotated as without (atrophy on a healthy eye): Dice and IoU above
    leave those out, and the share predicted empty scores them."""
    lines = []
    for m in masks:
        n = downstream.get("n_holdout_empty", {}).get(m, 0)
        if n:
            kept = ", ".join(f"{name} {format_mean_std(r[m]['empty_kept_empty'])}" for name, r in downstream["results"].items())
            lines.append(
                f"- {m}: {n} held-out images have none (annotated as empty); Dice and IoU above are over the others. "
                f"Share of those {n} a segmenter predicts empty: {kept}."
            )
    return [""] + lines if lines else []


def privacy_note(figure_files: Sequence[str]) -> str:
    """Which of the report's figures show real photographs (the held-out worst cases only where masks were judged)."""
    worst = f", and `{WORST_FIGURE}.png`: held-out real images with their masks" if f"{WORST_FIGURE}.png" in figure_files else ""
    return (
        f"This folder holds real photographs (`nearest_pairs.png`{worst}; `sample_grid.png` shows synthetic ones only). "
        "Keep it out of git and out of anything shared where the real data's terms do not allow it."
    )


def _headline(report: Dict) -> str:
    """"headline, " where the report judges at the synthetic set's native resolution (or predates the record)."""
    resolution = report.get("resolution", {})
    native = resolution.get("native", resolution.get("px"))
    return "headline, " if native == resolution.get("px") else "a comparison, not the native-resolution headline: "


def render_markdown(report: Dict, figure_files: Sequence[str]) -> str:
    """The human-readable report: one section per protocol item, with sample counts."""
    counts, cfg = report["counts"], report["config"]
    px = f"{cfg['resolution']} px"
    how = report.get("resolution", {}).get("how", "given")
    threads = f" ({cfg['cpu_threads']} CPU threads)" if cfg["device"] == "cpu" and "cpu_threads" in cfg else ""
    inputs = cfg.get("inputs") or {}
    made = [f"sampled with {inputs['sampler']}"] if inputs.get("sampler") else []
    made += [f"generation seed {inputs['generation_seed']}"] if inputs.get("generation_seed") is not None else []
    made = f" ({'; '.join(made)})" if made else ""
    lines = [
        "# Synthetic data evaluation",
        "",
        *warning_lines(report_warnings(report)),
        *refusal_banner(report["refused"]),
        f"Synthetic: {', '.join(report['synthetic_sources'])} — {counts['synthetic']} samples{made}. "
        f"Real training set: {counts['real_train']}; held-out real: {counts['holdout']} ({report['holdout_split']}). "
        f"Everything is judged at **{px}** ({how}); masks: {', '.join(cfg['masks']) or 'none'}"
        f"{''.join(f' ({note})' for note in report.get('masks_left_out', []))}, device {cfg['device']}{threads}.",
        "",
        f"> {privacy_note(figure_files)}",
        "",
        f"## 1. Downstream utility ({_headline(report)}{px})",
        "",
    ]
    downstream = report["downstream"]
    if downstream.get("computed", True):
        recipe = downstream["recipe"]
        lines += [
            f"Segmenter: `fundus_diffusion.evaluation.segmenter` U-Net (width {recipe['width']}), {recipe['steps']} steps, "
            f"batch {recipe['batch_size']}, seeds {recipe['seeds']}; Dice / IoU at {px} on {downstream['n_holdout']} "
            "held-out real images, mean ± std over seeds.",
            *_annotation_lines(downstream, cfg["masks"]),
            "",
            f"| trained on ({px}) | n train | " + " | ".join(f"{m} Dice | {m} IoU" for m in cfg["masks"]) + " |",
            "|---|---|" + "---|---|" * len(cfg["masks"]),
        ]
        for name, result in downstream["results"].items():
            cells = [f"{format_mean_std(result[m]['dice'])} | {format_mean_std(result[m]['iou'])}" for m in cfg["masks"]]
            steps = downstream.get("steps", {}).get(name, recipe["steps"])
            label = name if steps == recipe["steps"] else f"{name} ({steps} steps)"
            lines.append(f"| {label} | {downstream['n_train'][name]} | " + " | ".join(cells) + " |")
        lines += _empty_lines(downstream, cfg["masks"])
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
            f"- {m}: Dice {format_mean_std(r['dice'])}, IoU {format_mean_std(r['iou'])} (the same segmenters on held-out real images: "
            f"Dice {format_mean_std(downstream['results']['real'][m]['dice'])})"
            for m, r in agreement["results"].items()
        ]
        lines += _plausibility_lines(report["plausibility"], px)
    else:
        lines += [f"Not computed: {downstream['reason']}. Sections 2 and 3 likewise.", ""]
    lines += ["", f"## 4. Memorisation ({px})", ""] + memorisation_lines(report["memorisation"], report["refused"])
    if any(m["flagged"] for m in report["memorisation"].values()):
        lines += [
            "",
            f"`{FLAGGED_FILE}` lists the flagged ids, to drop them before sharing the set (README: evaluate.py).",
        ]
    lines += realism_lines(report.get("realism"), px) + global_look_lines(report.get("global_look"), px)
    lines += spectrum_lines(report.get("power_spectrum"), px)
    lines += edge_lines(report.get("edge_detail"), px)
    lines += disc_appearance_lines(report.get("disc_appearance"))
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
    lines += ["", f"## Figures ({px})"]
    for f in figure_files:
        name = os.path.splitext(f)[0]
        lines += ["", f"![{name}, {px}]({f})"] + ([f"*{FIGURE_CAPTIONS[name]}*"] if name in FIGURE_CAPTIONS else [])
    return "\n".join(lines) + "\n"

def _annotation_lines(downstream: Dict, masks: Sequence[str]) -> List[str]:
    """How many images each mask was trained and scored on, where some are not annotated for it (older reports:
    none)."""
    annotated = downstream.get("n_holdout_annotated")
    if not annotated or all(annotated[m] == downstream["n_holdout"] for m in masks):
        return []
    scored = ", ".join(f"{m} on {annotated[m]}" for m in masks)
    trained = "; ".join(
        f"{name}: " + ", ".join(f"{m} {n[m]} of {downstream['n_train'][name]}" for m in masks)
        for name, n in downstream["n_train_annotated"].items()
    )
    return [
        "",
        f"Each mask is scored on the held-out images annotated for it ({scored}) and trained on the images annotated "
        f"for it ({trained}); an image not annotated for a mask is left out of that mask's loss and scores.",
    ]

def _plausibility_lines(p: Dict, px: str) -> List[str]:
    lines = ["", f"## 3. Mask plausibility ({px})", ""]
    if "one_disc_component_synthetic" not in p:
        return lines + ["Not computed: the masks include no disc (every measure here is relative to the disc)."]
    lines += [
        f"- Exactly one disc component: {format_value(p['one_disc_component_synthetic'])} of {p['n_synthetic']} synthetic "
        f"(real: {format_value(p['one_disc_component_real'])} of {p['n_real']}); no disc at all: {format_value(p['no_disc_synthetic'])}.",
        f"- Wasserstein distance to real — disc area fraction: {format_value(p['wasserstein_disc_area_fraction'])}, "
        f"centroid x: {format_value(p['wasserstein_disc_centroid_x'])}, centroid y: {format_value(p['wasserstein_disc_centroid_y'])} "
        "(fractions of the image side).",
    ]
    if "atrophy_near_disc_synthetic" in p:
        lines.append(
            f"- Atrophy touching or within one disc radius of the disc: {format_value(p['atrophy_near_disc_synthetic'])} of "
            f"{p['n_with_atrophy_synthetic']} synthetic samples with atrophy (real: {format_value(p.get('atrophy_near_disc_real'))} "
            f"of {p.get('n_with_atrophy_real', 0)})."
        )
    if "cup_inside_disc_synthetic" in p:
        lines.append(
            f"- Cup inside its disc (at least {CUP_INSIDE_SHARE:.0%} of its pixels): {format_value(p['cup_inside_disc_synthetic'])} "
            f"of {p['n_with_cup_synthetic']} synthetic samples with a cup (real: {format_value(p.get('cup_inside_disc_real'))} of "
            f"{p.get('n_with_cup_real', 0)}); median vertical cup-to-disc ratio {format_value(p['vertical_cdr_median_synthetic'])} "
            f"(real: {format_value(p.get('vertical_cdr_median_real'))}), Wasserstein distance "
            f"{format_value(p.get('wasserstein_vertical_cdr'))} (`cup_to_disc.png`)."
        )
    return lines

def _per_source_lines(downstream: Dict, masks: Sequence[str], px: str) -> List[str]:
    """Dice per source of the held-out images, one row per training set (older reports have no breakdown)."""
    if "per_source" not in downstream:
        return []
    sources = downstream["holdout_sources"]
    scored = downstream["per_source_scored"]
    columns = [(m, s) for m in masks for s in sources if scored[m][s]]  # a source with none scored has no Dice
    lines = [
        "",
        f"Dice at {px} per source of the held-out images (a file name's prefix before `_` where at least "
        f"{ORIGIN_MIN_IMAGES} images share it, else the `source` column), mean ± std over seeds; n: the images scored "
        "(annotated for the mask and showing it):",
        "",
        f"| trained on ({px}) | " + " | ".join(f"{m} Dice, {s} (n={scored[m][s]})" for m, s in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, result in downstream["per_source"].items():
        lines.append(f"| {name} | " + " | ".join(format_mean_std(result[m][s]["dice"]) for m, s in columns) + " |")
    unscored = [f"{m} on {s}" for m in masks for s in sources if not scored[m][s]]
    if unscored:
        lines += ["", f"No column for {', '.join(unscored)}: no held-out image of that source is annotated for the mask and shows it."]
    return lines


def _worst_lines(downstream: Dict, px: str) -> List[str]:
    worst = downstream.get("worst_holdout")
    if not worst:
        return []
    key = f"{worst['mask']}_dice"
    listed = ", ".join(f"`{w['id']}` ({w['source']}) {format_value(w[key])}" for w in worst["images"])
    return [
        "",
        f"Worst held-out images for the segmenter trained on {worst['training_set']} (seed {worst['seed']}), "
        f"{worst['mask']} Dice at {px}: {listed} (`{WORST_FIGURE}.png`: photograph, prediction, truth).",
    ]

def refusal_banner(refused: Optional[str]) -> List[str]:
    """The lines that open a report.md whose synthetic set is refused (``memorisation.refusal``); none otherwise."""
    return ["> " + "!" * 60, f"> **{refused}**", "> " + "!" * 60, ""] if refused else []

def duplicates_note(n: int) -> str:
    """Where the training images hold exact duplicates, that they were left out of the threshold's yardstick."""
    if not n:
        return ""
    return (
        f" {n} training image(s) have an exact duplicate among the training images; those zero distances are left "
        "out of the real→real distances the threshold is taken from."
    )


def memorisation_lines(memorisation: Dict[str, Dict], refused: Optional[str]) -> List[str]:
    """The copy check of each feature space (``memorisation.controlled_copy_check``) beside its held-out control,
    the flagged samples, and the verdict of ``memorisation.refusal``: one wording for evaluate.py and evaluate_pm.py."""
    lines = []
    for space, m in memorisation.items():
        control = m["held_out_control"]
        lines.append(
            f"- {space}: {m['n_flagged']} of {m['n_synthetic']} samples ({format_value(m['share_flagged'])}) are closer "
            f"to a training image{' or its mirror image' if m.get('mirrored_too') else ''} than the {m['percentile']:g}st percentile of real-to-real nearest-neighbour distances "
            f"({format_value(m['threshold'])}, over {m['n_real_train']} training images). Control: "
            f"{control['n_flagged']} of {control['n_held_out']} held-out real images ({format_value(control['share_flagged'])}) "
            f"are flagged the same way; one-sided Fisher p = {copy_excess_p(m):.2g} that "
            f"the samples are flagged more often. Median nearest distance synthetic→real "
            f"{format_value(m['median_synthetic_to_real'])}, real→real {format_value(m['median_real_to_real'])}."
            + duplicates_note(m.get("n_real_train_duplicates", 0))
        )
        lines += [
            f"  - flagged `{f['synthetic_id']}`: nearest `{f['real_id']}`{' (mirrored)' if f.get('mirrored') else ''}, "
            f"distance {format_value(f['distance'])}"
            for f in m["flagged"]
        ]
        held_out = m.get("held_out_copies")  # reports written before this check have none
        if held_out:
            training = held_out["training_control"]
            lines.append(
                f"  - Copies of the held-out images (seen by the generator only if it was trained on them): "
                f"{held_out['n_flagged']} of {m['n_synthetic']} samples are as close to one of the "
                f"{held_out['n_held_out']} held-out images (or its mirror image); {training['n_flagged']} of "
                f"{training['n_real_train']} training images are; one-sided Fisher p = "
                f"{held_out['p_above_control']:.2g} that the samples are closer more often."
            )
            lines += [
                f"    - flagged `{f['synthetic_id']}`: nearest held-out `{f['held_out_id']}`"
                f"{' (mirrored)' if f.get('mirrored') else ''}, distance {format_value(f['distance'])}"
                for f in held_out["flagged"]
            ]
    verdict = (
        f"**{refused}**"
        if refused
        else "Not refused: in no feature space are the samples flagged more often than the held-out real images, "
        f"nor as copies of the held-out images more often than the training images (one-sided Fisher exact p < {REFUSE_P:g})."
    )
    return lines + ["", verdict]


MIN_REAL_DICE = 0.70  # the real-trained segmenter's held-out Dice below which the utility rows compare weak segmenters


def leaked_labels_warning(report: Dict) -> Optional[str]:
    """The warning for a report's top when synthetic samples carry held-out images' own masks (images drawn for
    them): the synthetic and real + synthetic segmenters were trained on the test labels."""
    reused = report.get("downstream", {}).get("synthetic_with_holdout_masks", 0)
    if not reused:
        return None
    return (
        f"TEST LABELS IN TRAINING: {reused} of the {report['counts']['synthetic']} synthetic samples carry a held-out "
        "image's own masks (images drawn for the held-out masks), so the synthetic and real + synthetic Dice rows were "
        "trained on the labels they are scored against. Fix: judge such a set for realism and mask agreement only, or "
        "draw images for masks outside the held-out split."
    )


def segmenter_warning(report: Dict) -> Optional[str]:
    """The warning for a report's top when a segmenter trained on the real photographs scores below ``MIN_REAL_DICE``
    on the held-out ones for some mask (None otherwise): the synthetic rows, and the copy check in that segmenter's
    features, are then measured against a yardstick that has not learnt the task."""
    real = report.get("downstream", {}).get("results", {}).get("real", {})  # none where section 1 was not computed
    means = {mask: row["dice"]["mean"] for mask, row in real.items()}  # None: no held-out image annotated for it
    weak = {mask: dice for mask, dice in means.items() if dice is not None and dice < MIN_REAL_DICE}
    if not weak:
        return None
    scores = ", ".join(f"{mask} {dice:.3f}" for mask, dice in weak.items())
    return (
        f"WEAK YARDSTICK: the segmenter trained on the real photographs reaches only {scores} Dice on the held-out ones "
        f"(below {MIN_REAL_DICE:.2f}): every Dice row compares weak segmenters, and the copy check in their features "
        "means little. Fix: train them longer (--segmenter_steps; the default is the measured recipe)."
    )


def realism_warning(realism: Optional[Dict]) -> Optional[str]:
    """The warning for a report's top when the two-sample judge tells the synthetic images from the real photographs
    above ``REALISM_AUC_BAR`` (None when it does not, or was not run): the other sections (Dice or PM detection, label
    agreement, the realism guard) can look fine for images no one would take for photographs. When the judge's own
    control, real photographs against other real photographs, is above the bar too, the judge has no power (too few
    images or steps) and the warning says the test is inconclusive instead of passing or failing the set."""
    if not realism or not realism.get("computed"):
        return None
    auc, control = (realism[test]["auc"]["mean"] for test in ("real_vs_synthetic", "real_vs_real"))
    if control > REALISM_AUC_BAR:
        return (
            f"REALISM INCONCLUSIVE: the two-sample judge tells real photographs from other real photographs at ROC AUC "
            f"{control:.3f}, above the bar of {REALISM_AUC_BAR:.2f}, so its {auc:.3f} for the synthetic images says "
            f"nothing: {realism['real_vs_real']['n_per_class']} images per side or {realism['recipe']['steps']} "
            "training steps are too few. Fix: judge more images (a larger synthetic set, more real photographs) with "
            "the default --realism_steps and --realism_folds."
        )
    if auc <= REALISM_AUC_BAR:
        return None
    return (
        f"NOT PHOTOGRAPH-LIKE: the two-sample judge tells the synthetic images from the real photographs at ROC AUC "
        f"{auc:.3f} (real vs real: {control:.3f}; the bar is {REALISM_AUC_BAR:.2f}). Whatever the other sections of "
        "this report find, a model trained on these images learns from pictures unlike the photographs it will be "
        "used on."
    )


def report_warnings(report: Dict) -> List[str]:
    """What makes the report's figures mean less than they seem, for its top and the model card's: a weak real-trained
    segmenter or one trained on the test labels, then the two-sample judge's verdict (told apart, or no power)."""
    return list(filter(None, [leaked_labels_warning(report), segmenter_warning(report), realism_warning(report.get("realism"))]))


def warning_lines(warnings: Iterable[str]) -> List[str]:
    """Each warning as a bold quoted line, for the top of a report."""
    return [f"> **WARNING: {warning}**\n" for warning in warnings]


def realism_lines(realism: Optional[Dict], px: str) -> List[str]:
    lines = ["", f"## 5. Realism: {TEST_NAME}, {px}", ""]
    if realism is None:
        return lines + ["Not computed: this report predates the test."]
    if not realism["computed"]:
        return lines + [f"Not computed: {realism['reason']}."]
    recipe, main, control = realism["recipe"], realism["real_vs_synthetic"], realism["real_vs_real"]
    invariance = recipe.get("invariance", "none")  # reports from before the robust judge used the plain one
    lines += [
        f"**Judge: {INVARIANCES[invariance]}** (`--realism_invariance {invariance}`). A small CNN "
        f"(`fundus_diffusion.evaluation.realism`, width {recipe['width']}, {recipe['steps']} steps), trained from "
        f"scratch, tells the two sets apart; {main['folds']}-fold cross-validated ROC AUC on the held-out folds, "
        f"{folds_phrase(main)}, {main['n_per_class']} images per side at {px}. Not FID. AUCs of different judges "
        "are not comparable.",
    ]
    if invariance == "robust":
        lines += [
            "",
            f"Nuisance, drawn alike for both sets: JPEG re-encode at quality {recipe['jpeg_quality_min']}-100, "
            f"per-channel gamma within 1/{recipe['gamma_max']:g}-{recipe['gamma_max']:g}, Gaussian blur sigma 0-"
            f"{recipe['blur_sigma_max']:g} px, down-up resize to {recipe['resize_min']:g}-{recipe.get('resize_max', 1):g} of the "
            f"size, noise sigma 0-"
            f"{recipe['noise_max']:g}/255; held-out images scored as the mean logit of {recipe['copies']} draws.",
        ]
    lines += auc_table(main, control, f"compared at {px}")
    lines += colour_lines(realism.get("colour_statistics"), px)
    lines += region_lines(
        realism.get("quarter_resolution"), "At a quarter of the resolution", "images at a quarter of the resolution",
        "the whole-image test's images",
    )  # fmt: skip
    lines += region_lines(realism.get("disc_region"), "Disc region", "disc crops")
    lines += region_lines(realism.get("outside_disc"), "Outside the disc", "images without the disc")
    for origin, test in (realism.get("by_origin") or {}).items():  # an origin-conditioned model's set, per camera
        weaker = "fewer per side than above: a weaker judge, see its control"
        lines += region_lines(test, f"Drawn as {origin}", f"images of {origin}", weaker)
    return lines


def folds_phrase(test: Dict) -> str:
    """What a two-sample AUC's mean ± std is over: the folds, or the folds of each repeat (``RealismRecipe.repeats``)."""
    repeats = test.get("repeats", 1)
    if repeats == 1:
        return "mean ± std over folds"
    return f"mean ± std over the {test['folds'] * repeats} held-out folds of {repeats} repeats (other draws, folds and judges)"


def per_fold_cell(test: Dict) -> str:
    """A two-sample test's per-fold AUCs; with repeats, grouped per repeat with the repeat's mean, so that how far one
    evaluation's figure moves from the next (other draws, folds and judges of the same sets) is in the report."""
    aucs, repeats = test["auc_per_fold"], test.get("repeats", 1)
    if repeats == 1:
        return ", ".join(format_value(a) for a in aucs)
    folds = test["folds"]
    groups = [aucs[r * folds : (r + 1) * folds] for r in range(repeats)]
    return "; ".join(f"{', '.join(format_value(a) for a in g)} (mean {format_value(sum(g) / len(g))})" for g in groups)


def auc_table(main: Dict, control: Dict, heading: str) -> List[str]:
    """The two-sample test's table: real vs synthetic, then the real-vs-real control, each with its per-fold AUCs."""
    column = "per fold" if main.get("repeats", 1) == 1 else "per fold, by repeat (the repeat's mean)"
    return [
        "",
        f"| {heading} | ROC AUC | {column} |",
        "|---|---|---|",
        f"| real vs synthetic | {format_mean_std(main['auc'])} | {per_fold_cell(main)} |",
        f"| real vs real (control: two halves of the real images) | {format_mean_std(control['auc'])} | "
        f"{per_fold_cell(control)} |",
    ]


def region_lines(
    region: Optional[Dict], title: str, views: str, images: str = "images without a disc left out"
) -> List[str]:
    """The same judge on one view of the images (``realism.region_test``: the optic-disc crops, where a whole-image
    judge dilutes a fault of the disc, or everything else; ``realism.quarter_resolution_test``: the images without
    their finest detail), ``views`` naming what it compares and ``images`` which images it uses."""
    if region is None:
        return []
    lines = ["", f"**{title}** ({region['region']}; {images})."]
    if not region["computed"]:
        return lines + [f"Not computed: {region['reason']}."]
    compared = f"{region['resolution']} px {views}"
    lines[-1] += (
        f" The same judge and recipe, {region['real_vs_synthetic']['n_per_class']} per side, "
        f"{folds_phrase(region['real_vs_synthetic'])}."
    )
    lines += auc_table(region["real_vs_synthetic"], region["real_vs_real"], f"compared on {compared}")
    return lines + colour_lines(region.get("colour_statistics"), compared)


def colour_lines(colour: Optional[Dict], px: str) -> List[str]:
    """The realism section's colour table: what the robust judge is blind to, with the real-vs-real yardstick."""
    if colour is None:
        return []
    real, other, synthetic = colour["real"], colour["real_b"], colour["synthetic"]
    lines = [
        "",
        f"Global colour at {px} (the robust judge ignores it by design): each channel's mean and standard deviation "
        "inside the field of view (pixels brighter than 15/255), per image, averaged over the same images as the "
        "test; 0-255 units. The real-vs-real difference (the control's two halves) is the yardstick.",
        "",
        "| channel | statistic | real | synthetic | synthetic − real | real − real (control) |",
        "|---|---|---|---|---|---|",
    ]
    for c, channel in enumerate(("red", "green", "blue")):
        for stat in ("mean", "std"):
            lines.append(
                f"| {channel} | {stat} | {real[stat][c]:.1f} | {synthetic[stat][c]:.1f} | "
                f"{synthetic[stat][c] - real[stat][c]:+.1f} | {other[stat][c] - real[stat][c]:+.1f} |"
            )
    return lines


def global_look_lines(section: Optional[Dict], px: str) -> List[str]:
    """report.md's lines for ``global_look_section`` (none for reports from before it)."""
    if section is None:
        return []
    lines = [
        "",
        f"**How light spreads over the field ({px})**: what the robust judge still sees once each channel is "
        "standardised over the field, one feature at a time (`fundus_diffusion.evaluation.global_look`; specks in the "
        "black surround cleared first, unlike the judge). ROC AUC folded to 0.5-1 (0.5: no difference, either way); "
        "the control: the same between real photographs only, as many as the synthetic images against the rest.",
    ]
    dark = {key: section.get(f"n_{key}_without_field", 0) for key in ("real", "synthetic")}
    if any(dark.values()):
        lines[-1] += f" Left out, without a field of view (black or too dark): {dark['real']} real, {dark['synthetic']} synthetic."
    if not section["computed"]:
        return lines + ["", f"Not computed: {section['reason']}."]
    combined, control = section["combined"], section["combined_real_vs_real"]
    lines += [
        "",
        f"All {combined['n_features']} features together (a logistic regression, {len(combined['per_fold'])}-fold "
        f"cross-validated; {section['n_real']} real, {section['n_synthetic']} synthetic): ROC AUC "
        f"{format_mean_std(combined)}; real vs real (control) {format_mean_std(control)}. The {GLOBAL_LOOK_ROWS} that separate the sets best (every feature: report.json; the best "
        f"of {combined['n_features']}, so their AUCs lean high):",
        "",
        "| feature (channels standardised over the field) | real | synthetic | ROC AUC | real vs real (control) |",
        "|---|---:|---:|---:|---:|",
    ]
    return lines + [
        f"| {row['feature']} | {row['real']:.2f} | {row['synthetic']:.2f} | {row['auc']:.3f} | {row['auc_real_vs_real']:.3f} |"
        for row in section["features"][:GLOBAL_LOOK_ROWS]
    ]


def spectrum_lines(section: Optional[Dict], px: str) -> List[str]:
    """Where the synthetic images' detail differs from the real photographs' (``spectrum.spectrum_section``; older
    reports: none), per band, with the held-out photographs as the yardstick."""
    if section is None:
        return []
    lines = ["", f"Where the energy differs ({px}): green-channel power spectra as ratios to the real training photographs' (1 = the same; below 1: missing detail)."]
    if not section["computed"]:
        return lines + ["", f"Not computed: {section['reason']}."]
    return lines + [""] + band_table(section["sets"])


def edge_lines(section: Optional[Dict], px: str) -> List[str]:
    """Where the finest detail differs, by distance to the disc mask's edge (``spectrum.edge_section``; older
    reports: none)."""
    if section is None:
        return []
    lines = [
        "",
        f"Where the finest detail sits ({px}): high-pass power (the RGB image minus its 3 x 3 mean, squared) by distance "
        "to the disc mask's edge, inside the field, as ratios to the real training photographs' at the same distance "
        "(1 = the same; above 1 on the edge: speckle on the rim).",
    ]
    if not section["computed"]:
        return lines + ["", f"Not computed: {section['reason']}."]
    return lines + [""] + edge_table(section["sets"])


def disc_appearance_lines(section: Optional[Dict]) -> List[str]:
    """How the optic discs look (``disc_appearance.appearance_section``; older reports: none), with the held-out
    photographs as the yardstick."""
    if section is None:
        return []
    if not section["computed"]:
        return ["", f"How the optic discs look: not computed, {section['reason']}."]
    located = {row["located_by"] for row in section["sets"].values()}
    where = "the centroid of each disc mask" if located == {"mask"} else "each image's brightest point"
    return [
        "",
        f"How the optic discs look ({section['resolution']} px): in a {section['window_side_px']} px square around "
        f"{where}, each channel's mean (0-255), the detail finer than a Gaussian blur of sigma 1.5 px at 256 px and "
        "between 1.5 and 4 px (RMS, 0-255), and the orientation coherence of the green channel's gradients (1: edges "
        "and lines that run one way, as vessels and the rim do; about 0.17 for independent noise); the same coherence "
        "in the ring 16-26 px from the centre at 256 px (the rim), and the RMS gradient 28-48 px from it (the vessels "
        "leaving the disc; 0-255 per px); mean ± std over images (disc_appearance.py says more).",
        "",
        *appearance_table(section["sets"], REAL),
    ]


def json_safe(value):
    """NaN (an undefined statistic) -> null, so that report.json is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value

def write_report(report: Dict, figures: Dict[str, Image.Image], output_dir: str) -> Dict[str, str]:
    """Write ``report.json``, ``report.md``, ``<figure>.png`` and ``flagged_ids.txt`` (the synthetic ids any
    memorisation check flagged, as near a training or a held-out image, one per line); returns the paths written.
    A report already in ``output_dir`` is replaced whole: its figures go too, so none of them outlives it."""
    os.makedirs(output_dir, exist_ok=True)
    previous = os.path.join(output_dir, "report.json")
    if os.path.isfile(previous):
        with open(previous, encoding="utf-8") as f:
            old_figures = json.load(f).get("figures", [])
        for name in [*old_figures, "report.json", "report.md", FLAGGED_FILE]:
            if os.path.basename(name) == name and os.path.isfile(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    paths = {"flagged": os.path.join(output_dir, FLAGGED_FILE)}
    checks = report["memorisation"].values()
    flagged = sorted(
        {f["synthetic_id"] for m in checks for f in m["flagged"] + m.get("held_out_copies", {}).get("flagged", [])}
    )
    with open(paths["flagged"], "w", encoding="utf-8") as f:
        f.write("".join(f"{synthetic_id}\n" for synthetic_id in flagged))
    for name, figure in figures.items():
        paths[name] = os.path.join(output_dir, f"{name}.png")
        figure.save(paths[name])
    report = {**report, "figures": sorted(f"{name}.png" for name in figures)}
    paths["json"] = os.path.join(output_dir, "report.json")
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(json_safe(report), f, indent=2, allow_nan=False)
    paths["markdown"] = os.path.join(output_dir, "report.md")
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(render_markdown(report, report["figures"]))
    return paths
