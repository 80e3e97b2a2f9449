"""Does a class-conditional generator's synthetic set help detect pathological myopia?

    fundus-evaluate-pm --real data/palm-subsets/n20-seed0 --holdout data/palm-split/test \\
        --synthetic data/synthetic-palm-n20 --output_dir reports/pm-n20-seed0 [--seeds 3] [--steps 600]

--real is what the generator was trained on (its copy check is against these images), --holdout a disjoint labelled
real split (scripts/split_dataset.py --images_only --stratify label). A PM classifier is trained on real, synthetic
and real + synthetic images for every seed and scored on the held-out images (accuracy, ROC AUC), beside chance (the
same recipe on shuffled real labels, and the AUC's null spread); the report adds the two-sample realism test and the
copy check, and refuses, loudly, a synthetic set whose samples are flagged as copies more often than the held-out
real images (fundus-evaluate's rule). Writes report.json and report.md (no images: nothing of the real data leaves
in them but ids).
"""


from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.checks import add_overwrite_arg, refuse_existing_report
from fundus_diffusion.evaluation.pm_classifier import ClassifierRecipe
from fundus_diffusion.evaluation.pm_utility import PMUtilityConfig, evaluate_pm_utility, write_pm_report
from fundus_diffusion.evaluation.realism import RealismRecipe
from fundus_diffusion.generate import sampler_description
from fundus_diffusion.training.args import CommandParser


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--real", required=True, help="The generator's labelled real training images.")
    parser.add_argument("--holdout", required=True, help="Labelled held-out real images, none of them in --real.")
    parser.add_argument("--synthetic", required=True, help="A generated set with PM / non-PM labels.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resolution", type=int, default=None, help="Default: the synthetic images' native size.")
    parser.add_argument("--seeds", type=int, default=3, help="Classifier seeds per training set.")
    parser.add_argument("--steps", type=int, default=ClassifierRecipe.steps, help="PM classifier training steps.")
    parser.add_argument("--realism_steps", type=int, default=RealismRecipe.steps, help="Two-sample judge training steps.")
    parser.add_argument("--realism_folds", type=int, default=RealismRecipe.folds, help="Two-sample judge folds.")
    parser.add_argument("--device", default=None, help="Default: cuda where available, else cpu.")
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)
    refuse_existing_report(parser, args, "report.json")
    return args


def main(args):
    datasets = {
        name: load_fundus_dataset(getattr(args, name), require_masks=False) for name in ("real", "holdout", "synthetic")
    }
    config = PMUtilityConfig(
        resolution=args.resolution, seeds=args.seeds, classifier_steps=args.steps, realism_steps=args.realism_steps,
        realism_folds=args.realism_folds, device=args.device,
        inputs={name: getattr(args, name) for name in ("real", "holdout", "synthetic")},
        synthetic_sampling=sampler_description(args.synthetic),
    )  # fmt: skip
    report = evaluate_pm_utility(datasets["real"], datasets["holdout"], datasets["synthetic"], config)
    paths = write_pm_report(report, args.output_dir)
    with open(paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    print(f"written: {paths['json']}, {paths['markdown']}")


if __name__ == "__main__":
    run_script(main, parse_args)
