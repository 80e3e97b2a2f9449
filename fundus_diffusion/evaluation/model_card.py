"""The evaluation's headline numbers on a saved model's card (``metrics.json`` and the README table), named by the
sampler that made the judged set."""

import os
from typing import Dict, List, Optional

from ..generate import CONFIG_FILE, generating_model, read_generation_config, sampler_description
from ..hub import add_model_card_metrics
from ..model_cards import portable_name
from ..pipelines.loading import read_model_index
from .checks import warn
from .memorisation import REFUSE_P
from .metrics import format_mean_std, format_value
from .protocol import EQUAL_REAL_PASSES, REAL_AS_LONG
from .realism import TEST_NAME, judge_of
from .report import folds_phrase, report_warnings


def model_card_metrics(report: Dict, sampler: Optional[str] = None) -> List[Dict]:
    """The report's headline numbers as model-card metrics (``hub.save_model(..., metrics=...)``,
    ``hub.add_model_card_metrics``);
    ``sampler`` (e.g. "DPM-Solver++, 20 steps") goes into every name, so that samplers of one model do not collide."""
    counts, config = report["counts"], report["config"]
    where = (
        f"{counts['synthetic']} synthetic vs {counts['real_train']} real training / {counts['holdout']} held-out "
        f"real images ({', '.join(portable_name(config['inputs'][k]) for k in ('real', 'holdout') if config['inputs'].get(k))}), "
        f"{config['resolution']} px"
    )
    metrics = []
    refused = report.get("refused")
    if refused:  # first, and no score earned by copies goes on the card as a result
        metrics.append({"name": "synthetic set", "value": "REFUSED (copies)", "notes": refused})
    # Then what the report's top warns of, before the figures it qualifies; one entry, "none" included, so that a
    # later evaluation of the same sampler replaces an earlier one's warning on the card (metrics merge by name).
    warnings = report_warnings(report)
    metrics.append({
        "name": "evaluation warnings",
        "value": "; ".join(warning.partition(": ")[0] for warning in warnings) or "none",
        "notes": " ".join(warnings) or "the report's top warns of nothing",
    })  # fmt: skip
    if report["downstream"].get("results"):
        # one segmenter learns every scored mask, so a mask's Dice depends on which others were scored: say which
        together = f" (each learns {' + '.join(config['masks'])} together)" if len(config["masks"]) > 1 else ""
        over = "one segmenter seed (no spread measured)" if config["seeds"] == 1 else f"mean ± std over {config['seeds']} segmenter seeds"
        seeds = f"{over}{together}; {where}"
        # a refused set's rows, and rows of segmenters trained on the held-out labels, are not results
        leaked = report["downstream"].get("synthetic_with_holdout_masks", 0)
        annotated = report["downstream"].get("n_holdout_annotated", {})
        empty = report["downstream"].get("n_holdout_empty", {})
        for mask in report["config"]["masks"]:
            dice = {k: v[mask]["dice"] for k, v in report["downstream"]["results"].items()}
            scored = annotated.get(mask, counts["holdout"]) - empty.get(mask, 0)
            notes = seeds if scored == counts["holdout"] else f"{seeds}; scored on the {scored} held-out images that show {mask}"
            if empty.get(mask):
                notes += f" ({empty[mask]} annotated as without it are scored apart, in the report)"
            trained_on = ("real", REAL_AS_LONG) if refused or leaked else ("synthetic", "real+synthetic", EQUAL_REAL_PASSES, "real", REAL_AS_LONG)
            for training_set in [s for s in trained_on if s in dice]:
                metrics.append({
                    "name": f"held-out {mask} Dice, segmenter trained on {training_set}",
                    "value": format_mean_std(dice[training_set]),
                    "notes": notes,
                })  # fmt: skip
            metrics.append({
                "name": f"{mask} mask-image agreement (Dice)",
                "value": format_mean_std(report["agreement"]["results"][mask]["dice"]),
                "notes": f"generated masks vs what real-trained segmenters see in the generated images; {where}",
            })  # fmt: skip
        if "one_disc_component_synthetic" in report["plausibility"]:
            metrics.append({
                "name": "generated discs in one piece",
                "value": f"{report['plausibility']['one_disc_component_synthetic']:.1%}",
                "notes": f"real training set: {report['plausibility']['one_disc_component_real']:.1%}",
            })  # fmt: skip
        if report["plausibility"].get("n_with_cup_synthetic"):
            p = report["plausibility"]
            metrics.append({
                "name": "generated cups inside their disc",
                "value": f"{p['cup_inside_disc_synthetic']:.1%}",
                "notes": f"of {p['n_with_cup_synthetic']} samples with a cup; median vertical cup-to-disc ratio "
                f"{format_value(p['vertical_cdr_median_synthetic'])} (real: {format_value(p.get('vertical_cdr_median_real'))}); {where}",
            })  # fmt: skip
    for space, found in report["memorisation"].items():
        metrics.append({
            "name": f"samples flagged as copies of training images ({space.split(' (')[0]})",
            "value": f"{found['n_flagged']} of {found['n_synthetic']}",
            "notes": f"nearest real neighbour closer than percentile {found['percentile']:g} of the real-to-real "
            f"nearest-neighbour distances; features: {space}{control_note(found)}",
        })  # fmt: skip
    realism = report.get("realism", {})
    if realism.get("computed"):
        main, control = realism["real_vs_synthetic"], realism["real_vs_real"]
        metrics.append({
            "name": f"{TEST_NAME}, {judge_of(realism)} judge, real vs synthetic",
            "value": format_mean_std(main["auc"]),
            "notes": f"{folds_phrase(main)} ({main['folds']}-fold cross-validation), {main['n_per_class']} images per side; "
            f"real-vs-real control: {format_mean_std(control['auc'])}; {where}",
        })  # fmt: skip
    if "fid" in report["fid_kid"]:
        metrics.append({"name": "FID", "value": round(report["fid_kid"]["fid"], 1), "notes": where})
    if sampler:  # not on the real-trained baselines, which no sampler made
        real_only = {f"held-out {mask} Dice, segmenter trained on {s}" for mask in config["masks"] for s in ("real", REAL_AS_LONG)}
        metrics = [m if m["name"] in real_only else {**m, "name": f"{m['name']} ({sampler})"} for m in metrics]
    return metrics

def warn_if_other_data(model_dir: str, real: Optional[str]) -> None:
    """Warn when the model was trained on other data than the evaluation's ``real`` set (its memorisation check
    then compares against the wrong images)."""
    trained_on = (read_model_index(model_dir).get("training_info") or {}).get("dataset")
    # Saved models record local paths by their last component only (model_cards.portable_name): compare those.
    if trained_on and real and portable_name(trained_on) != portable_name(real):
        warn(
            f"{model_dir} was trained on {trained_on}, but the evaluation's real data is {real}: its card will quote "
            "memorisation and Dice measured against the latter (the card names it)."
        )


def card_model_dir(synthetic_dir: str, model_dir: Optional[str] = None) -> str:
    """The saved model folder whose card an evaluation of ``synthetic_dir`` updates: ``model_dir``, or the local model
    recorded in the set's generation config; a ValueError naming the fix when it is not a saved model (callers check
    it before the evaluation's minutes)."""
    model_dir = model_dir or generating_model(synthetic_dir)
    if not os.path.isfile(os.path.join(model_dir, "model_index.json")):
        raise ValueError(
            f"--update_model_card {model_dir}: not a saved model folder (no model_index.json). Fix: give the folder "
            "train_ddpm.py or train_dcgan.py saved, or leave --update_model_card out."
        )
    recorded = read_generation_config(synthetic_dir).get("model")
    # The recorded path is as typed where the set was generated (maybe relative to another folder): where it does not
    # resolve here, the folder names must agree.
    if recorded and os.path.isfile(os.path.join(recorded, "model_index.json")):
        other = not os.path.samefile(recorded, model_dir)
    else:
        folder_name = lambda path: os.path.basename(os.path.normpath(path))  # noqa: E731  ("runs/model-a/" -> "model-a")
        other = bool(recorded) and folder_name(recorded) != folder_name(model_dir)
    if other:
        raise ValueError(
            f"--update_model_card {model_dir}: {synthetic_dir} was generated by another model, {recorded} (its "
            f"{CONFIG_FILE}), so these metrics are not {model_dir}'s. Fix: give --update_model_card {recorded} (or no "
            "folder: the recorded one; a relative path resolves from where the set was generated), or evaluate a set "
            f"that model generated (if {model_dir} is that model renamed, set 'model' in {CONFIG_FILE} to it)."
        )
    return model_dir


def update_model_card(report: Dict, synthetic_dir: str, model_dir: Optional[str] = None) -> str:
    """Add ``report``'s headline metrics, named by the sampler that made ``synthetic_dir``, to the card of
    ``card_model_dir(synthetic_dir, model_dir)``; returns the card's path."""
    model_dir = card_model_dir(synthetic_dir, model_dir)
    inputs = report["config"]["inputs"]
    warn_if_other_data(model_dir, inputs.get("real"))
    metrics = model_card_metrics(report, sampler=sampler_description(synthetic_dir))
    seen = holdout_seen_by_generator(model_dir, inputs)
    if seen:
        warn(f"{model_dir}: {seen}; the card says so.")
        metrics = [{**m, "notes": f"{m['notes']}; {seen}"} if m["name"].startswith("held-out ") else m for m in metrics]
    return add_model_card_metrics(model_dir, metrics)


def holdout_seen_by_generator(model_dir: str, inputs: Dict) -> Optional[str]:
    """Why the evaluation's held-out images are not held out from the generator, or None: it trained on the whole
    ``--real`` set and the evaluation split off its held-out part itself (no ``--holdout``), so a "held-out" Dice
    is measured on images the generator saw."""
    trained_on = (read_model_index(model_dir).get("training_info") or {}).get("dataset")
    real = inputs.get("real")
    if not trained_on or not real or inputs.get("holdout") or portable_name(trained_on) != portable_name(real):
        return None
    return (
        f"the generator trained on {portable_name(trained_on)}, the held-out images included: held out from the "
        "segmenters only (train the generator on a split's train part and pass its test part as --holdout)"
    )


def control_note(found: Dict) -> str:
    """The held-out control of one copy-check feature space and whether it refuses the set (reports written before
    the control existed have none: nothing is added)."""
    control = found.get("held_out_control")
    if not control:
        return ""
    verdict = "REFUSED: more copies than chance" if found["p_above_control"] < REFUSE_P else "not refused"
    note = (
        f"; held-out real images flagged by the same threshold: {control['n_flagged']} of {control['n_held_out']} "
        f"(one-sided Fisher p = {found['p_above_control']:.3g}, {verdict})"
    )
    held_out = found.get("held_out_copies")
    if held_out:
        verdict = "REFUSED: the generator saw the held-out images" if held_out["p_above_control"] < REFUSE_P else "not refused"
        training = held_out["training_control"]
        note += (
            f"; samples as close to a held-out image: {held_out['n_flagged']} of {found['n_synthetic']}, training images "
            f"{training['n_flagged']} of {training['n_real_train']} (one-sided Fisher p = "
            f"{held_out['p_above_control']:.3g}, {verdict})"
        )
    return note
