"""Quality against training time (issues 18 and 19): for each variant of a realism ablation, the synthetic-only Dice
(as a share of the real-trained Dice) and the two-sample AUC of every evaluated snapshot, against the minutes its
training had run when it wrote that snapshot; and the first snapshot that meets both bars and whose set the copy check
did not refuse (time to quality). The table also gives, from reports that have it (evaluate.py's power-spectrum
section), the synthetic images' green-channel power in the middle and fine bands as a share of the real photographs',
and (its disc-appearance section) the orientation coherence of the detail around the generated discs and the share
of samples drawn in each camera's style.

    python benchmarks/quality_curve.py /tmp/realism --figure quality_curve.png --json quality_curve.json
    python benchmarks/quality_curve.py docs/results/realism-256-session11 docs/results/realism-256-session15 \\
        --sampler_suffix=,-ddpm100 --figure sessions.png          # two sessions' committed results, one figure

Reads what ``benchmarks/realism_ablation.sh`` writes (and packs into realism_reports.tgz): ``runs/<variant>/logs/
metrics.csv`` (its ``step`` and ``wall_s`` columns: seconds since the training started, compilation included) and
``eval/<variant>-<step><suffix>/report.json``; ``--sampler_suffix`` picks the sets of the samplers named (comma-separated
suffixes; default "": the ablation's DPM-Solver++ 20 sets; ``--sampler_suffix=,-ddpm100`` adds the DDPM 100 sets as a
curve of their own, named ``<variant>-ddpm100``). The minutes are the training's own wall clock: where several
trainings or evaluations shared the GPU they are not GPU minutes of one training, and the figure's title says so. Each AUC
is named by its judge (``realism.judge_of``); AUCs of different judges are not comparable. ``wall_s`` starts again
at 0 when a training resumes from a checkpoint, and does not hold a pre-training it started from (``--init_from``):
add those minutes by hand for such runs. Reports without the mask's Dice (images-only evaluations) are left out, with
a line on stderr. The figure needs matplotlib; without it the table is printed alone.
"""

import argparse
import bisect
import csv
import json
import os
import re
import sys

from utility_figure import pyplot, save, two_sample_aucs

from fundus_diffusion.evaluation.realism import REALISM_AUC_BAR as AUC_BAR
from fundus_diffusion.evaluation.realism import judge_of

DICE_SHARE_BAR = 0.90  # issue 18's targets: synthetic-only Dice >= 90 % of real, and the judge's AUC <= AUC_BAR


def training_minutes(metrics_csv: str) -> dict:
    """``{step: minutes}`` from a run's ``logs/metrics.csv``."""
    with open(metrics_csv, newline="") as f:
        return {int(row["step"]): float(row["wall_s"]) / 60 for row in csv.DictReader(f)}


def minutes_at(minutes: dict, step: int):
    """The minutes at ``step``, or at the last logged step before it (the log is written every few steps); None
    when nothing was logged by then."""
    steps = sorted(minutes)
    i = bisect.bisect_right(steps, step)
    return minutes[steps[i - 1]] if i else None


def point(report: dict, mask: str):
    """One snapshot's figures from its evaluate.py report; None when it scored no ``mask`` (an images-only or
    other-mask evaluation) or its real-trained Dice is 0 (no share to take)."""
    results = report.get("downstream", {}).get("results", {})
    try:
        real, synthetic = (results[name][mask]["dice"]["mean"] for name in ("real", "synthetic"))
    except KeyError:
        return None
    if not real:
        return None
    realism = report.get("realism", {})
    auc, auc_control = two_sample_aucs(realism)
    spectrum = report.get("power_spectrum", {})  # reports since session 12
    bands = spectrum["sets"]["synthetic"]["bands"] if spectrum.get("computed") else {}
    discs = report.get("disc_appearance", {})  # reports since session 16
    look = report.get("global_look", {})  # reports since session 20
    edges = report.get("edge_detail", {})  # reports since session 34
    coherence = discs["sets"]["synthetic"]["statistics"]["orientation_coherence"]["mean"] if discs.get("computed") else None
    styles = {
        name.split(" / like ", 1)[1]: row["share"]
        for name, row in (discs.get("sets") or {}).items()
        if name.startswith("synthetic / like ")
    }  # fmt: skip
    return {
        "dice_synthetic": synthetic,
        "dice_real": real,
        "dice_share": synthetic / real,
        "dice_real_plus_synthetic": results["real+synthetic"][mask]["dice"]["mean"],
        "auc": auc,
        "auc_control": auc_control,
        "judge": judge_of(realism) if realism.get("computed") else None,
        # the same judge on squares around the discs (reports since session 9), beside the bar's whole-image AUC
        "auc_disc_region": two_sample_aucs(realism.get("disc_region", {}))[0],
        # and on the images without those squares (reports since session 18): how much of it lies outside the disc
        "auc_outside_disc": two_sample_aucs(realism.get("outside_disc", {}))[0],
        # and on the images at a quarter of the resolution (reports since session 19): how much needs no fine detail
        "auc_quarter_resolution": two_sample_aucs(realism.get("quarter_resolution", {}))[0],
        # a judge that sees only how light spreads over the field (global_look's logistic regression on its features)
        "auc_global_look": look["combined"]["mean"] if look.get("computed") else None,
        # the synthetic images' green-channel power as a share of the real photographs' (1 = real): disc rim and
        # large vessels (middle band), small vessels (fine band)
        "power_middle": bands.get("middle"),
        "power_fine": bands.get("fine"),
        "power_pixel": bands.get("pixel"),  # speckle and noise at 2-3 px
        # the same speckle located: high-pass power within 3 px of the disc mask's edge, as a share of the photographs'
        "edge_detail": edges["sets"]["synthetic"]["ratio"]["the edge, within 3 px"] if edges.get("computed") else None,
        # how much of the detail around the generated discs runs along lines, as vessels do (real photographs: 0.66)
        "disc_coherence": coherence,
        # the share of samples in each camera's style (by the colours around the disc; session 16: one style over-drawn)
        "camera_styles": styles,
        # the copy check refused the set: its scores may be earned by copies, so it cannot meet the bars
        "refused": report.get("refused") is not None,
    }


def training_logs(work: str) -> dict:
    """``{variant: metrics.csv path}`` of a WORK folder (``runs/<variant>/logs/metrics.csv``) or of a results folder
    under docs/results (``<variant>_metrics.csv``)."""
    runs_dir = os.path.join(work, "runs")
    if os.path.isdir(runs_dir):
        logs = {variant: os.path.join(runs_dir, variant, "logs", "metrics.csv") for variant in os.listdir(runs_dir)}
    else:
        logs = {name[: -len("_metrics.csv")]: os.path.join(work, name) for name in os.listdir(work) if name.endswith("_metrics.csv")}
    return {variant: path for variant, path in sorted(logs.items()) if os.path.isfile(path)}


def reports(work: str) -> dict:
    """``{set name: report.json path}``: ``eval/<set>/report.json`` of a WORK folder, or ``<set>.report.json`` of a
    results folder."""
    eval_dir = os.path.join(work, "eval")
    if os.path.isdir(eval_dir):
        found = {name: os.path.join(eval_dir, name, "report.json") for name in os.listdir(eval_dir)}
    else:
        found = {name[: -len(".report.json")]: os.path.join(work, name) for name in os.listdir(work) if name.endswith(".report.json")}
    return {name: path for name, path in sorted(found.items()) if os.path.isfile(path)}


def collect(work: str, sampler_suffixes=("",), mask: str = "disc") -> dict:
    """``{variant + suffix: [point, ...]}`` for each sampler suffix, sorted by step, each point with its ``step`` and
    ``minutes`` (the variant's training clock: the sets of every sampler of a snapshot share it)."""
    curves = {}
    evaluated = reports(work)
    for variant, metrics in training_logs(work).items():
        minutes = training_minutes(metrics)
        suffixes = "|".join(re.escape(suffix) for suffix in sampler_suffixes)
        pattern = re.compile(rf"^{re.escape(variant)}-(\d+)({suffixes})$")
        for name, report_path in evaluated.items():
            found = pattern.match(name)
            if not found:
                continue
            with open(report_path) as f:
                report = json.load(f)
            figures = point(report, mask)
            if figures is None:
                print(f"{report_path}: no {mask} Dice of real and synthetic segmenters; left out.", file=sys.stderr)
                continue
            step = int(found.group(1))
            series = variant + found.group(2)
            curves.setdefault(series, []).append({"step": step, "minutes": minutes_at(minutes, step), **figures})
    return {series: sorted(points, key=lambda p: p["step"]) for series, points in sorted(curves.items())}


def collect_all(works, sampler_suffixes=("",), mask: str = "disc") -> dict:
    """``collect`` of each folder, together; a curve name found in several folders is prefixed with its folder's
    name (``realism-256-session11/rot50``), or its path as given where two folders share a name."""
    folders = [os.path.normpath(work) for work in works]
    basenames = [os.path.basename(folder) for folder in folders]
    found = {
        basename if basenames.count(basename) == 1 else folder: collect(folder, sampler_suffixes, mask)
        for folder, basename in zip(folders, basenames)
    }
    names = [name for curves in found.values() for name in curves]
    return {
        (f"{label}/{name}" if names.count(name) > 1 else name): points
        for label, curves in found.items()
        for name, points in curves.items()
    }


def meets_bars(p: dict) -> bool:
    return p["dice_share"] >= DICE_SHARE_BAR and p["auc"] is not None and p["auc"] <= AUC_BAR and not p["refused"]


def time_to_quality(points) -> dict:
    """The first snapshot meeting both bars, or None."""
    return next((p for p in points if meets_bars(p)), None)


def table(curves: dict) -> str:
    lines = [
        f"| variant | step | minutes | synthetic-only Dice | share of real | real + synthetic | two-sample AUC (judge) | control | disc-region AUC | outside-disc AUC | quarter-resolution AUC | global-look AUC (features) | power / real, middle / fine / pixel band | disc-edge detail / real's | disc detail coherence | camera styles | both bars (Dice >= {DICE_SHARE_BAR:.0%}, AUC <= {AUC_BAR}, not refused as copies) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for variant, points in curves.items():
        for p in points:
            minutes = f"{p['minutes']:.1f}" if p["minutes"] is not None else "?"
            auc = f"{p['auc']:.3f} ({p['judge']})" if p["auc"] is not None else "not computed"
            control = f"{p['auc_control']:.3f}" if p["auc_control"] is not None else ""
            region, outside, quarter, look = (
                f"{p[key]:.3f}" if p.get(key) is not None else ""
                for key in ("auc_disc_region", "auc_outside_disc", "auc_quarter_resolution", "auc_global_look")
            )
            power = f"{p['power_middle']:.2f} / {p['power_fine']:.2f} / {p['power_pixel']:.2f}" if p["power_middle"] is not None else ""
            edge = f"{p['edge_detail']:.2f}" if p.get("edge_detail") is not None else ""
            coherence = f"{p['disc_coherence']:.3f}" if p["disc_coherence"] is not None else ""
            styles = ", ".join(f"{name} {share:.0%}" for name, share in p["camera_styles"].items())
            lines.append(
                f"| {variant} | {p['step']:,} | {minutes} | {p['dice_synthetic']:.3f} | {p['dice_share']:.1%} | "
                f"{p['dice_real_plus_synthetic']:.3f} | {auc} | {control} | {region} | {outside} | {quarter} | {look} | {power} | {edge} | {coherence} | {styles} | "
                f"{'met' if meets_bars(p) else 'refused: copies' if p['refused'] else 'no'} |"
            )
    for variant, points in curves.items():
        first = time_to_quality(points)
        minutes = f"{first['minutes']:.1f} min" if first and first["minutes"] is not None else "minutes not logged"
        reached = f"step {first['step']:,}, {minutes}" if first else "not reached by any evaluated snapshot"
        lines.append(f"\n{variant}: time to quality {reached}.")
    return "\n".join(lines)


def draw(curves: dict, path: str, title: str) -> bool:
    """Two panels against minutes: Dice share of real and the two-sample AUC, the bars dashed; False without
    matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    figure, (dice_axis, auc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, points in curves.items():
        timed = [p for p in points if p["minutes"] is not None]
        dice_axis.plot([p["minutes"] for p in timed], [p["dice_share"] for p in timed], marker="o", label=variant)
        judged = [p for p in timed if p["auc"] is not None]
        judges = sorted({p["judge"] for p in judged})
        auc_axis.plot(
            [p["minutes"] for p in judged], [p["auc"] for p in judged], marker="o", label=f"{variant} ({', '.join(judges)} judge)"
        )
    dice_axis.axhline(DICE_SHARE_BAR, linestyle="--", color="grey", label=f"bar {DICE_SHARE_BAR:.0%}")
    auc_axis.axhline(AUC_BAR, linestyle="--", color="grey", label=f"bar {AUC_BAR}")
    auc_axis.axhline(0.5, linestyle=":", color="grey", label="indistinguishable")
    dice_axis.set_ylabel("synthetic-only Dice / real-trained Dice")
    auc_axis.set_ylabel("two-sample ROC AUC (real vs synthetic)")
    auc_axis.set_ylim(0.4, 1.02)
    for axis in (dice_axis, auc_axis):
        axis.set_xlabel("training minutes (its own clock, compilation included)")
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return save(plt, figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "work", nargs="+",
        help="The ablation's WORK folder (or an unpacked realism_reports.tgz), or a results folder of docs/results "
        "(<variant>_metrics.csv, <set>.report.json); several draw their curves together (a variant named alike in two "
        "is named by its folder too).",
    )  # fmt: skip
    parser.add_argument(
        "--sampler_suffix", default="",
        help="The sets of these samplers, comma-separated set-name suffixes: --sampler_suffix=-ddpm100, or "
        "--sampler_suffix=,-ddpm100 for DPM-Solver++ 20 and DDPM 100 as two curves (default: DPM-Solver++ 20 alone).",
    )
    parser.add_argument("--mask", default="disc", help="The mask whose Dice is plotted.")
    parser.add_argument("--figure", default=None, help="Write the figure here (PNG).")
    parser.add_argument("--json", default=None, help="Write the points here.")
    args = parser.parse_args(argv)
    suffixes = args.sampler_suffix.split(",")
    curves = collect_all(args.work, suffixes, args.mask)
    if not curves:
        sets = " or ".join(f"eval/<variant>-<step>{suffix}/report.json" for suffix in suffixes)
        sys.exit(f"{', '.join(args.work)}: no evaluated snapshot ({sets} beside runs/<variant>/logs/metrics.csv).")
    print(table(curves))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sampler_suffixes": suffixes, "mask": args.mask, "curves": curves}, f, indent=2)
    if args.figure:
        samplers = " and ".join(suffix.lstrip("-") or "DPM-Solver++ 20" for suffix in suffixes)
        title = (
            f"{args.mask} quality against training time, sampled with {samplers}\n(the minutes are not one training's "
            "GPU minutes where several jobs shared the GPU)"
        )
        if not draw(curves, args.figure, title):
            print("matplotlib is not installed: no figure.", file=sys.stderr)
    return curves


if __name__ == "__main__":
    main()
