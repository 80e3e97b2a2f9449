"""Held-out Dice of the evaluation's fixed segmenter recipe against its number of steps, on real images alone.

    python benchmarks/segmenter_budget.py --real reports/results/split/train --holdout reports/results/split/test \\
        --steps 800,1994 --json segmenter_budget.json

The control for ``scripts/evaluate.py --equal_real_passes``: that row trains real + synthetic for longer (800 x 334 /
134 = 1,994 steps for 134 real and 200 synthetic pairs) than the real-only row (800); this table says how much of a
difference the longer training alone makes (``evaluate.py`` now also trains that control itself). Same preprocessing,
recipe, seeds and scoring as ``evaluate.py``.
"""

import argparse
import json
import time

import torch

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.data.schema import parse_mask_names
from fundus_diffusion.evaluation.arrays import dataset_arrays, default_device
from fundus_diffusion.evaluation.checks import resolution_problem, warn_if_upscaled
from fundus_diffusion.evaluation.metrics import summarise
from fundus_diffusion.evaluation.protocol import EvaluationConfig, resolve_split, segmenter_scores
from fundus_diffusion.evaluation.segmenter import SegmenterRecipe


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="Real training data (anything load_fundus_dataset accepts).")
    parser.add_argument("--holdout", default=None, help="Held-out real data. Default: a part of --real, by id.")
    parser.add_argument("--masks", default="disc")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", default="800,1994", help="Comma list of segmenter step counts.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",")]
    if resolution_problem(args.resolution):
        parser.error(resolution_problem(args.resolution))
    return args


def main(args):
    device = args.device or default_device()
    mask_names = parse_mask_names(args.masks)
    holdout = load_fundus_dataset(args.holdout) if args.holdout else None
    config = EvaluationConfig(resolution=args.resolution, masks=mask_names)
    train, holdout, _ = resolve_split(load_fundus_dataset(args.real), holdout, config)
    warn_if_upscaled(train, args.resolution, "the real training")
    train = dataset_arrays(train, args.resolution, mask_names, "real training set").to(device)  # moved once
    holdout = dataset_arrays(holdout, args.resolution, mask_names, "held-out set").to(device)
    batch = SegmenterRecipe().batch_size
    rows = []
    for steps in args.steps:
        start = time.perf_counter()
        per_seed = [
            segmenter_scores(train, holdout, mask_names, steps, seed, device, desc=f"real, {steps} steps")[0]
            for seed in range(args.seeds)
        ]
        rows.append({
            "steps": steps, "passes_per_real_image": steps * batch / len(train),
            "dice": {m: summarise([s[m]["dice"] for s in per_seed]) for m in mask_names},
            "dice_per_seed": {m: [s[m]["dice"] for s in per_seed] for m in mask_names},
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
    print(
        f"{len(train)} real training / {len(holdout)} held-out images, {args.resolution} px, {args.seeds} seeds, {device}"
    )
    print(
        "| steps | passes per real image | " + " | ".join(f"{m} Dice (mean ± std)" for m in mask_names) + " | seconds |"
    )
    print("|---:|---:|" + "---|" * len(mask_names) + "---:|")
    for row in rows:
        dice = " | ".join(f"{row['dice'][m]['mean']:.4f} ± {row['dice'][m]['std']:.4f}" for m in mask_names)
        print(f"| {row['steps']:,} | {row['passes_per_real_image']:.0f} | {dice} | {row['seconds']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
            json.dump({"device": name, "n_train": len(train), "n_holdout": len(holdout), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    run_script(main, parse_args)
