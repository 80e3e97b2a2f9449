"""Dice against the number of real training pairs (issue 20), from the evaluate.py reports benchmarks/utility_curves.sh
packs: one line per segmenter training set (real N, synthetic alone, real N + synthetic, and the last two for the
two-step sets where the driver made them), the mean over subset seeds with their standard deviation as error bars, and
the cross-camera table of the per-source jobs.

    python benchmarks/utility_figure.py /tmp/utility/eval --figure utility_curves.png --json utility_table.json

Reads ``<reports>/<job>/report.json``; a job is ``n<N>-seed<S>``, ``all`` or ``source-<name>``, each optionally with
``-twostep``, and N is read from the report (the real pairs its segmenters trained on). A job whose report refuses
its synthetic set (``report["refused"]``: its samples are flagged as copies of the N training images more often than
held-out real images are, ``fundus_diffusion.evaluation.memorisation.refusal``) has its synthetic and real + synthetic
Dice left out of the curves, and the table names it, loudly. A report written before that verdict existed is judged
by the old rule (refused if any sample is flagged), and the table says which jobs were. The per-source jobs also get a
table of their own: each job's two-sample AUC and real-vs-real control (its report's realism section: the real side is
every photograph its evaluation saw, both cameras), the same against its own camera's photographs alone (the
image-only reports utility_curves.sh writes to ``eval-own-camera/<job>/`` beside ``eval/``, where they exist) and its
copy check.
The figure needs matplotlib (imported here, not in the package); without it the table is printed alone.
"""

import argparse
import json
import os
import re
import sys
from collections import defaultdict

import numpy as np

TRAINING_SETS = ("real", "synthetic", "real+synthetic")
SYNTHETIC_SETS = ("synthetic", "real+synthetic")
TWO_STEP = "-twostep"  # the job suffix of the two-step sets (masks first, then images for them)
# The lines of the figure: evaluate.py's training sets, and the two-step job's synthetic ones (its "real" segmenters are
# the joint job's, trained on the same N pairs with the same seeds).
CURVE_SETS = TRAINING_SETS + tuple(f"{name} (two-step)" for name in SYNTHETIC_SETS)
CURVE_JOB_BASE = r"(n\d+-seed(?P<seed>\d+)|all)"  # a learning-curve job: subset size and seed, or the whole split
CURVE_JOB = re.compile(rf"^{CURVE_JOB_BASE}(?P<two_step>{TWO_STEP})?$")
OWN_CAMERA = "eval-own-camera"  # utility_curves.sh's folder of per-source reports judged against one camera
VERDICT_RULE = "the report's verdict (flagged more often than held-out real images)"
ANY_FLAG_RULE = "any sample flagged (the report has no held-out control)"


def load_reports(root: str, required: bool = True) -> dict:
    """``{job: report}`` for every ``<root>/<job>/report.json`` (none: an error if ``required``, else ``{}``)."""
    if not required and not os.path.isdir(root):
        return {}
    reports = {}
    for job in sorted(os.listdir(root)):
        path = os.path.join(root, job, "report.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                reports[job] = json.load(f)
    if not reports and required:
        raise SystemExit(f"{root}: no <job>/report.json inside; point at the eval/ folder of utility_curves.sh.")
    return reports


def flagged_copies(report: dict) -> int:
    """The most synthetic samples flagged as copies of a training image in any feature space of the copy check."""
    return max((space.get("n_flagged", 0) for space in report.get("memorisation", {}).values()), default=0)


def refusal_of(report: dict) -> tuple:
    """``(refused, rule)``: why the job's synthetic set is refused (None when it is not) and by which rule: the
    verdict its report carries (``VERDICT_RULE``) or, for a report written before evaluate.py gave one,
    ``ANY_FLAG_RULE`` (refused if any sample is flagged in any feature space)."""
    if "refused" in report:
        return report["refused"], VERDICT_RULE
    copies = flagged_copies(report)
    why = f"REFUSED by the old any-flag rule: {copies} synthetic samples flagged as copies (no held-out control)"
    return (why if copies else None), ANY_FLAG_RULE


def judged_jobs(reports: dict) -> list:
    """``{job, refused, rule}`` (``refusal_of``) for every learning-curve and per-source job."""
    jobs = [job for job in reports if CURVE_JOB.match(job) or job.startswith("source-")]
    return [dict(zip(("job", "refused", "rule"), (job, *refusal_of(reports[job])))) for job in jobs]


def refusal_lines(rows: list) -> list:
    """The lines that close a table: the refused jobs, and the jobs judged by the old any-flag rule, of ``rows``
    (each with ``job``, ``refused`` and ``rule``)."""
    lines = []
    refused = [row["job"] for row in rows if row["refused"]]
    if refused:
        lines += ["", f"REFUSED for copies of training images (synthetic rows left out): {', '.join(refused)}"]
    old = [row["job"] for row in rows if row["rule"] == ANY_FLAG_RULE]
    if old:
        lines += [
            "",
            f"Judged by the old any-flag rule (their reports predate the copy check's held-out control; re-run "
            f"evaluate.py for the verdict): {', '.join(old)}",
        ]
    return lines


def print_refusals(rows: list):
    """Each refused job and why on stderr (the driver's log), beside the table's list."""
    for row in rows:
        if row["refused"]:
            print(f"{row['job']}: {row['refused']}", file=sys.stderr)


def _sets_of(job: str) -> dict:
    """``{name in the table: evaluate.py's training set}`` for a job: the two-step jobs' synthetic sets renamed."""
    if job.endswith(TWO_STEP):
        return {f"{name} (two-step)": name for name in SYNTHETIC_SETS}
    return {name: name for name in TRAINING_SETS}


def curve_rows(reports: dict, mask: str = "disc") -> list:
    """One row per learning-curve job: its N, subset seed, copies flagged, the refusal (None or why) and its rule,
    and Dice (mean over segmenter seeds) of each training set (``CURVE_SETS``), None where the job is refused."""
    rows = []
    for job, report in reports.items():
        match = CURVE_JOB.match(job)
        if not match:
            continue
        downstream, (refused, rule) = report["downstream"], refusal_of(report)
        results = downstream["results"]
        dice = {
            name: None if refused and source in SYNTHETIC_SETS else results[source][mask]["dice"]["mean"]
            for name, source in _sets_of(job).items()
            if source in results
        }
        seed = match.group("seed")
        row = {"job": job, "n": downstream["n_train"]["real"], "subset_seed": None if seed is None else int(seed)}
        rows.append({**row, "flagged_copies": flagged_copies(report), "refused": refused, "rule": rule, "dice": dice})
    return sorted(rows, key=lambda r: (r["n"], r["job"]))


def curve_summary(rows: list, key: str = "dice", sets: tuple = CURVE_SETS) -> dict:
    """``{training set: {N: {mean, std, n}}}`` of ``row[key]`` over the subset seeds (refused entries, None, left
    out), for the training sets of ``sets`` in that order."""
    values = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for name, value in row[key].items():
            if value is not None:
                values[name][row["n"]].append(value)
    return {
        name: {
            n: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
            for n, v in sorted(values[name].items())
        }
        for name in sets
        if name in values
    }


def source_rows(reports: dict, mask: str = "disc") -> list:
    """One row per per-source job and training set: Dice on the held-out images of each source (the trained source
    and the other camera); a refused job's synthetic sets left out."""
    rows = []
    for job, report in reports.items():
        if not job.startswith("source-"):
            continue
        per_source, (refused, _) = report["downstream"]["per_source"], refusal_of(report)
        trained_on = job[len("source-") :].removesuffix(TWO_STEP)
        for name, training_set in _sets_of(job).items():
            if training_set not in per_source or (refused and training_set in SYNTHETIC_SETS):
                continue
            by_source = {source: scores["dice"]["mean"] for source, scores in per_source[training_set][mask].items()}
            rows.append({"job": job, "trained_on": trained_on, "training_set": name, "dice": by_source})
    return rows


def two_sample_aucs(test: dict) -> tuple:
    """``(real vs synthetic, real vs real)``: the mean two-sample AUCs of a report's realism section or one of its
    views (``realism["disc_region"]``, ...), None where it was not computed."""
    if not test.get("computed"):
        return None, None
    return tuple(test.get(side, {}).get("auc", {}).get("mean") for side in ("real_vs_synthetic", "real_vs_real"))


def source_job_rows(reports: dict, own_camera: dict = None) -> list:
    """One row per per-source job: its report's two-sample AUC and real-vs-real control (0.5 = indistinguishable; the
    real side is every photograph of its evaluation, both cameras), the same from its report in ``own_camera``
    (``{job: report}`` judged against its own camera's photographs alone; None where there is none) and its copy
    check."""
    rows = []
    for job, report in reports.items():
        if job.startswith("source-"):
            auc, control = two_sample_aucs(report.get("realism", {}))
            own_auc, own_control = two_sample_aucs((own_camera or {}).get(job, {}).get("realism", {}))
            refused, rule = refusal_of(report)
            rows.append({"job": job, "auc": auc, "control": control, "own_camera_auc": own_auc,
                         "own_camera_control": own_control, "flagged_copies": flagged_copies(report),
                         "refused": refused, "rule": rule})  # fmt: skip
    return rows


def format_tables(rows: list, summary: dict, sources: list, judged: list, source_jobs: list = ()) -> str:
    """Markdown tables: every curve job (with its copy check) and the summary over subset seeds (where there are
    curve jobs), the per-source rows, the per-source jobs' two-sample AUCs and copy checks (``source_job_rows``); then
    the refused jobs, and the jobs judged by the old any-flag rule, of ``judged`` (``judged_jobs``)."""
    sets = [name for name in CURVE_SETS if any(name in row["dice"] for row in rows)]

    def fmt(row, name):
        if name not in row["dice"]:
            return "-"
        return "refused" if row["dice"][name] is None else f"{row['dice'][name]:.3f}"

    def verdict(row):
        return ("REFUSED" if row["refused"] else "passed") + (
            " (any-flag rule)" if row["rule"] == ANY_FLAG_RULE else ""
        )

    lines = []
    if rows:  # the learning curves (a run of per-source jobs alone has none)
        lines += ["| job | N | " + " | ".join(sets) + " | copies flagged | copy check |", "|---" * (len(sets) + 4) + "|"]
        for row in rows:
            dice = " | ".join(fmt(row, name) for name in sets)
            lines.append(f"| {row['job']} | {row['n']} | {dice} | {row['flagged_copies']} | {verdict(row)} |")
        lines += ["", "| N | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
        for n in sorted({n for by_n in summary.values() for n in by_n}):
            cells = []
            for name in sets:
                entry = summary.get(name, {}).get(n)
                cells.append("-" if entry is None else f"{entry['mean']:.3f} ± {entry['std']:.3f} ({entry['n']})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if sources:
        held_out = sorted({source for row in sources for source in row["dice"]})
        lines += ["| trained on | training set | " + " | ".join(f"Dice on {s}" for s in held_out) + " |"]
        lines.append("|---" * (len(held_out) + 2) + "|")
        for row in sources:
            cells = " | ".join(f"{row['dice'][s]:.3f}" if s in row["dice"] else "-" for s in held_out)
            lines.append(f"| {row['trained_on']} | {row['training_set']} | {cells} |")
        lines.append("")
    if source_jobs:
        lines += ["| per-source job | two-sample AUC, both cameras (control) | two-sample AUC, its own camera (control) | "
                  "copies flagged | copy check |", "|---" * 5 + "|"]  # fmt: skip
        for row in source_jobs:
            both, own = (
                "-" if row[auc] is None else f"{row[auc]:.3f} ({'-' if row[control] is None else f'{row[control]:.3f}'})"
                for auc, control in (("auc", "control"), ("own_camera_auc", "own_camera_control"))
            )
            lines.append(f"| {row['job']} | {both} | {own} | {row['flagged_copies']} | {verdict(row)} |")
    return "\n".join((lines[:-1] if lines and lines[-1] == "" else lines) + refusal_lines(judged))


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None where matplotlib is not installed (the tables need none)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(axis, summary: dict, x_label: str, y_label: str, legend_title: str):
    """One line per training set of ``summary`` (``curve_summary``) against N on a log axis, error bars the std over
    subset seeds, the lines shifted a little apart so that their error bars do not hide each other."""
    for line, (name, by_n) in enumerate(summary.items()):
        ns = sorted(by_n)
        shifted = [n * 1.04 ** (line - 1) for n in ns]
        axis.errorbar(
            shifted, [by_n[n]["mean"] for n in ns], yerr=[by_n[n]["std"] for n in ns], marker="o", capsize=3, label=name
        )
    every_n = sorted({n for by_n in summary.values() for n in by_n})
    axis.set_xscale("log")
    axis.set_xticks(every_n, [str(n) for n in every_n])
    axis.minorticks_off()
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.legend(title=legend_title)
    axis.grid(alpha=0.3)


def draw(summary: dict, path: str, mask: str = "disc") -> bool:
    """Dice vs N with error bars (std over subset seeds), one line per training set; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6, 4))
    plot_curves(
        axis, summary, "real training pairs N (generator and segmenter trained on these only)",
        f"{mask} Dice on the held-out real images", "segmenter trained on",
    )  # fmt: skip
    return save(plt, figure, path)


def save(plt, figure, path: str) -> bool:
    """Lay ``figure`` out, write it to ``path`` (PNG, 150 dpi) and close it; True (drawn)."""
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", help="The folder of <job>/report.json (utility_curves.sh's eval/).")
    parser.add_argument("--mask", default="disc")
    parser.add_argument("--figure", help="Write the Dice-vs-N figure here (PNG; needs matplotlib).")
    parser.add_argument(
        "--json", help="Write the rows, the summary, the per-source rows and jobs, and each job's copy check here."
    )
    parser.add_argument(
        "--own_camera_reports",
        help="The per-source jobs' reports judged against their own camera's photographs (default: eval-own-camera/ "
        "beside the reports folder, where it exists).",
    )
    args = parser.parse_args(argv)
    reports = load_reports(args.reports)
    rows, sources = curve_rows(reports, args.mask), source_rows(reports, args.mask)
    summary = curve_summary(rows)
    judged = judged_jobs(reports)
    own_camera_dir = args.own_camera_reports or os.path.join(os.path.dirname(os.path.abspath(args.reports)), OWN_CAMERA)
    own_camera = load_reports(own_camera_dir, required=bool(args.own_camera_reports))
    source_jobs = source_job_rows(reports, own_camera)
    print(format_tables(rows, summary, sources, judged, source_jobs))
    print_refusals(judged)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"mask": args.mask, "rows": rows, "summary": summary, "per_source": sources,
                 "per_source_jobs": source_jobs, "copy_check": judged},
                f, indent=2,
            )  # fmt: skip
    if args.figure and not summary:
        print(f"no learning-curve job among the reports: {args.figure} not drawn", file=sys.stderr)
    elif args.figure and not draw(summary, args.figure, args.mask):
        print(f"matplotlib is not installed: {args.figure} not drawn (pip install matplotlib)", file=sys.stderr)


if __name__ == "__main__":
    main()
