"""PM-detection accuracy and ROC AUC against the number of real training images (issue 20), from the evaluate_pm.py
reports benchmarks/pm_detection.sh packs: one line per classifier training set (real N, synthetic alone, real N +
synthetic) and for the chance control (real N with shuffled labels), the mean over subset seeds with their standard
deviation as error bars, one panel per metric.

    python benchmarks/pm_figure.py /tmp/pm/eval --figure pm_curves.png --json pm_table.json

Reads ``<reports>/<job>/report.json`` for jobs ``n<N>-seed<S>`` and ``all``; N is the report's real training count.
A job ``<job>-w<scale>`` is the same generator sampled again at guidance ``<scale>`` (pm_detection.sh's further
GUIDANCE values): its synthetic and real + synthetic classifiers become the lines "synthetic (guidance <scale>)" and
"real+synthetic (guidance <scale>)", paired with the job's own (its real and control classifiers are the job's again);
the lines without a scale are the driver's first GUIDANCE scale's.
A refused set (its synthetic samples copy the generator's training images more often than held-out real images are
flagged: the same rule and verdict, ``report["refused"]``, as evaluate.py's) has no synthetic rows: the table says
REFUSED, loudly, and the curves leave it out. The loading, refusal, summary and plotting are
benchmarks/utility_figure.py's (the segmentation curves); matplotlib is optional, as there.
"""

import argparse
import json
import re
import sys

from utility_figure import (
    CURVE_JOB_BASE,
    curve_summary,
    load_reports,
    plot_curves,
    print_refusals,
    pyplot,
    refusal_lines,
    refusal_of,
    save,
)

from fundus_diffusion.evaluation.pm_utility import DETECTION_ROWS as SETS  # the training sets, then the chance control
from fundus_diffusion.evaluation.pm_utility import SYNTHETIC_SETS

METRICS = {"accuracy": "accuracy", "auc": "ROC AUC of P(PM)"}
PM_JOB = re.compile(rf"^{CURVE_JOB_BASE}(-w(?P<guidance>\d+(\.\d+)?))?$")  # -w<scale>: sampled again at that guidance


def sets_of(guidance) -> dict:
    """``{name in the table: evaluate_pm.py's training set}`` of a job (``guidance``: its -w<scale>, None for the
    job's own set): a guidance variant contributes only its synthetic sets, renamed; its real and control classifiers
    repeat the job's own and are not counted twice."""
    if guidance is None:
        return {name: name for name in SETS}
    return {f"{name} (guidance {guidance})": name for name in SYNTHETIC_SETS}


def curve_rows(reports: dict) -> list:
    """One row per learning-curve job and guidance variant: N, subset seed, guidance (None: the job's own set), the
    refusal (None or why) and its rule (``refusal_of``) and, per metric, the mean over classifier seeds of each training
    set under its table name (``sets_of``; sets a refused job did not train are absent)."""
    rows = []
    for job, report in reports.items():
        match = PM_JOB.match(job)
        if not match or "detection" not in report:
            continue
        results, seed = report["detection"]["results"], match.group("seed")
        row = {"job": job, "n": report["counts"]["real"]["n"], "subset_seed": None if seed is None else int(seed)}
        row["refused"], row["rule"] = refusal_of(report)
        row["guidance"] = match.group("guidance")
        names = sets_of(row["guidance"])
        for metric in METRICS:
            row[metric] = {name: results[source][metric]["mean"] for name, source in names.items() if source in results}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["n"], r["job"]))


def table_sets(rows: list) -> list:
    """The training sets of the table and the curves: ``SETS``, then each guidance variant's (refused ones too), in
    their jobs' order."""
    variants = [name for row in rows if row["guidance"] is not None for name in sets_of(row["guidance"])]
    return list(SETS) + list(dict.fromkeys(variants))


def format_tables(rows: list, summaries: dict) -> str:
    """Markdown: every job (both metrics per training set) and the summary over subset seeds; refused jobs named."""
    sets = table_sets(rows)

    def cell(row, name, metric):  # a refused set's synthetic classifiers were not trained; "-": not this job's
        value = row[metric].get(name)
        if value is not None:
            return f"{value:.3f}"
        return "REFUSED" if row["refused"] and sets_of(row["guidance"]).get(name) in SYNTHETIC_SETS else "-"

    header = " | ".join(f"{name} {metric}" for name in sets for metric in METRICS)
    lines = [f"| job | N | {header} |", "|---" * (2 + len(sets) * len(METRICS)) + "|"]
    for row in rows:
        cells = " | ".join(cell(row, name, metric) for name in sets for metric in METRICS)
        lines.append(f"| {row['job']} | {row['n']} | {cells} |")
    lines += ["", f"| N | {header} |", "|---" * (1 + len(sets) * len(METRICS)) + "|"]
    for n in sorted({row["n"] for row in rows}):
        cells = []
        for name in sets:
            for metric in METRICS:
                entry = summaries[metric].get(name, {}).get(n)
                cells.append("-" if entry is None else f"{entry['mean']:.3f} ± {entry['std']:.3f} ({entry['n']})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines + refusal_lines(rows))


def draw(summaries: dict, path: str) -> bool:
    """Accuracy and AUC vs N side by side (error bars: std over subset seeds); False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    figure, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
    for axis, (metric, label) in zip(axes, METRICS.items()):
        x_label = "real training images N\n(generator and classifier trained on these only)"
        plot_curves(
            axis, summaries[metric], x_label, f"PM detection {label}\non held-out real images", "classifier trained on"
        )
    return save(plt, figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", help="The folder of <job>/report.json (pm_detection.sh's eval/).")
    parser.add_argument("--figure", help="Write the accuracy / AUC vs N figure here (PNG; needs matplotlib).")
    parser.add_argument("--json", help="Write the rows and the summaries here.")
    args = parser.parse_args(argv)
    rows = curve_rows(load_reports(args.reports))
    summaries = {metric: curve_summary(rows, metric, table_sets(rows)) for metric in METRICS}
    print(format_tables(rows, summaries))
    print_refusals(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "summary": summaries}, f, indent=2)
    if args.figure and not draw(summaries, args.figure):
        print(f"matplotlib is not installed: {args.figure} not drawn (pip install matplotlib)", file=sys.stderr)


if __name__ == "__main__":
    main()
