"""Does a class-conditional model make what it is asked for? A PM classifier trained on real images decides.

    python scripts/judge_pm_labels.py --real ../shared/data/palm-224/PALM-Training400 --images_only \
        --synthetic data/synthetic-palm --output_dir reports/palm-labels
"""

import argparse
import json
import os

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import default_device
from fundus_diffusion.evaluation.pm_classifier import ClassifierRecipe, judge_class_conditional


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="Real labelled images (anything load_fundus_dataset accepts).")
    parser.add_argument("--images_only", action="store_true", help="Real data without masks (e.g. palm-224).")
    parser.add_argument("--synthetic", required=True, help="Generated dataset with PM / non-PM labels.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=ClassifierRecipe.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


def main(args):
    real = load_fundus_dataset(args.real, require_masks=not args.images_only)
    synthetic = load_fundus_dataset(args.synthetic)
    report = judge_class_conditional(
        real, synthetic, args.resolution, ClassifierRecipe(steps=args.steps, seed=args.seed), device=args.device or default_device()
    )
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "pm_labels.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    run_script(main, parse_args)
