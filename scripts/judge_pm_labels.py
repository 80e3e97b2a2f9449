"""Does a class-conditional model make what it is asked for? A PM classifier trained on real images decides.

    fundus-judge-pm-labels --real data/PALM-Training400 --images_only \\
        --synthetic data/synthetic-palm --output_dir reports/palm-labels [--no-realism_test]

The label agreement comes with a realism guard (the samples' distance from the real images in the classifier's
features, and its confidence): a classifier labels RGB noise too, so agreement means something only for samples the
guard finds fundus-like, and the report says so loudly when they are not. The guard is a weak check (it passed the
demo's phantoms as fundus-like at 32 px), so the classifier two-sample test of fundus-evaluate (a CNN telling real
from synthetic) runs beside it unless ``--no-realism_test`` skips it.
"""

import argparse
import json
import os

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import default_device
from fundus_diffusion.evaluation.checks import add_overwrite_arg, realism_args_problem, refuse_existing_report
from fundus_diffusion.evaluation.pm_classifier import ClassifierRecipe, judge_class_conditional, label_summary
from fundus_diffusion.evaluation.realism import RealismRecipe
from fundus_diffusion.evaluation.report import json_safe
from fundus_diffusion.training.args import CommandParser


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--real", required=True, help="Real labelled images (anything load_fundus_dataset accepts).")
    parser.add_argument("--images_only", action="store_true", help="Real data without masks (e.g. palm-224).")
    parser.add_argument("--synthetic", required=True, help="Generated dataset with PM / non-PM labels.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resolution", type=int, default=None, help="Default: the synthetic images' native size.")
    parser.add_argument("--steps", type=int, default=ClassifierRecipe.steps, help=f"Training steps of the PM classifier (default {ClassifierRecipe.steps}).")
    parser.add_argument(
        "--realism_test", action=argparse.BooleanOptionalAction, default=True,
        help="Run the classifier two-sample test beside the guard (default; --no-realism_test skips it: faster).",
    )  # fmt: skip
    parser.add_argument("--realism_steps", type=int, default=RealismRecipe.steps, help="Training steps of each fold's judge.")
    parser.add_argument("--realism_folds", type=int, default=RealismRecipe.folds, help="Cross-validation folds of the test.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the classifier (and the two-sample test).")
    parser.add_argument("--split_seed", type=int, default=0, help="Seed of the real train / held-out split.")
    parser.add_argument("--device", default=None)
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)
    refuse_existing_report(parser, args, "pm_labels.json")
    if realism_args_problem(args):
        parser.error(realism_args_problem(args))
    return args


def main(args):
    real = load_fundus_dataset(args.real, require_masks=not args.images_only)
    synthetic = load_fundus_dataset(args.synthetic)
    report = judge_class_conditional(
        real, synthetic, args.resolution, ClassifierRecipe(steps=args.steps, seed=args.seed),
        device=args.device or default_device(), realism=RealismRecipe(steps=args.realism_steps, folds=args.realism_folds, seed=args.seed) if args.realism_test else None,
        split_seed=args.split_seed,
    )  # fmt: skip
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "pm_labels.json"), "w") as f:
        json.dump(json_safe(report), f, indent=2, allow_nan=False)  # strict JSON: an undefined statistic is null
    with open(os.path.join(args.output_dir, "report.md"), "w") as f:  # the lines to read, beside the full JSON
        f.write(f"# Do the samples show the labels they were drawn for?\n\n```\n{label_summary(report)}\n```\n")
    print(json.dumps(report, indent=2))
    print(label_summary(report))
    print(f"Wrote {os.path.join(args.output_dir, 'pm_labels.json')} and report.md")


if __name__ == "__main__":
    run_script(main, parse_args)
