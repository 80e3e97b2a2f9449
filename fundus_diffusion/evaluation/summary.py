"""``summary.json``: one results folder's runs in one file (wall seconds, device, training arguments, evaluation
reports), as ``scripts/reproduce_results.sh`` writes it and ``scripts/summarise_results.py`` tabulates several.

A results folder holds ``logs/<name>.seconds``, ``runs/<run>/training_args.json`` and ``eval/<set>/report.json``.
"""

import glob
import json
import os
from typing import Dict, List, Sequence

import torch

from .realism import judge_of


def write_summary(root: str) -> str:
    """Gather the results folder ``root`` into ``root/summary.json``; returns its path."""
    summary = {"seconds": {}, "training_args": {}}
    for path in glob.glob(os.path.join(root, "logs", "*.seconds")):
        with open(path) as f:
            summary["seconds"][os.path.basename(path)[: -len(".seconds")]] = int(f.read())
    summary["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for path in glob.glob(os.path.join(root, "runs", "*", "training_args.json")):
        with open(path) as f:
            summary["training_args"][os.path.basename(os.path.dirname(path))] = json.load(f)
    for path in glob.glob(os.path.join(root, "eval", "*", "*.json")):
        with open(path) as f:
            summary[os.path.basename(os.path.dirname(path))] = json.load(f)
    out = os.path.join(root, "summary.json")
    with open(out, "w") as f:
        json.dump(summary, f, indent=1, default=str)
    return out


def load_summaries(paths: Sequence[str]) -> List[Dict]:
    """Each summary as ``{"device", "seconds", "training_args", "reports"}`` (older files lack some keys)."""
    parts = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file. scripts/reproduce_results.sh writes it as $RESULTS/summary.json (default reports/results/summary.json): run it first, or give the summary.json files.")
        with open(path) as f:
            part = json.load(f)
        if "seconds" not in part:
            raise ValueError(
                f"{path} is not a summary.json of scripts/reproduce_results.sh (it has no 'seconds'); an evaluate.py "
                "report.json is summarised in its own report.md."
            )
        parts.append({
            "device": part.pop("device", "?"), "seconds": part.pop("seconds", {}),
            "training_args": part.pop("training_args", {}), "reports": part,
        })  # fmt: skip
    return parts


def training_run(name: str) -> str:
    """The training run behind a synthetic set or log name (ddpm-256-dpm20 -> ddpm-256)."""
    for suffix in ("-dpm20", "-ddpm1000"):
        name = name.removesuffix(suffix)
    return name.removeprefix("gen-").removeprefix("eval-")


def row_source(parts: Sequence[Dict], name: str) -> Dict:
    """The summary a row's numbers come from, whole: the last one that evaluated ``name``, else the last one that
    trained or sampled it (so one row never mixes two sessions' runs)."""
    train = training_run(name)
    for part in reversed(parts):
        if name in part["reports"]:
            return part
    for part in reversed(parts):
        if train in part["seconds"] or f"gen-{name}" in part["seconds"]:
            return part
    return {"device": "—", "seconds": {}, "training_args": {}, "reports": {}}


def realism_cell(report: Dict) -> str:
    """The classifier two-sample test's real-vs-synthetic AUC with its real-vs-real control and the judge that
    measured both, as a table cell ("—" for reports that predate the test, the reason's start where it was not
    computed)."""
    realism = report.get("realism")
    if realism is None:
        return "—"
    if not realism.get("computed"):
        return "not computed"
    main, control = realism["real_vs_synthetic"]["auc"], realism["real_vs_real"]["auc"]
    return (
        f"{main['mean']:.3f} ± {main['std']:.3f} (real vs real: {control['mean']:.3f} ± {control['std']:.3f}, "
        f"{realism['real_vs_synthetic']['n_per_class']} per side, {judge_of(realism)} judge)"
    )
