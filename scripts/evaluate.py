"""Judge a synthetic fundus dataset against real data: downstream segmentation (mean and per source), mask-image
agreement, mask plausibility, memorisation, a classifier two-sample realism test, FID / KID. Writes report.json,
report.md and PNG figures to --output_dir. Everything is judged at the synthetic images' native resolution unless
--resolution says otherwise (a comparison, labelled as such).

    fundus-evaluate --real data/pm --synthetic data/synthetic --output_dir reports/ddpm-256

The report folder holds real photographs (nearest-neighbour pairs, worst held-out images): keep it out of git
(reports/ is ignored).
"""


from fundus_diffusion.cli import run_script
from fundus_diffusion.data import FundusDataError, load_fundus_dataset
from fundus_diffusion.evaluation import EvaluationConfig, evaluate, write_report
from fundus_diffusion.evaluation.checks import (
    add_overwrite_arg,
    realism_args_problem,
    refuse_existing_report,
    resolution_problem,
)
from fundus_diffusion.evaluation.model_card import card_model_dir, update_model_card
from fundus_diffusion.evaluation.realism import INVARIANCES, RealismRecipe
from fundus_diffusion.generate import read_generation_config, sampler_description
from fundus_diffusion.training.args import CommandParser, RenamedFlag, output_dir_problem


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument(
        "--real", required=True, help="The real data the model was trained on (anything load_fundus_dataset accepts)."
    )
    parser.add_argument(
        "--synthetic", required=True, help="The synthetic dataset (e.g. written by scripts/generate.py)."
    )
    parser.add_argument(
        "--holdout", default=None, help="Held-out real data. Default: a deterministic part of --real, by id."
    )
    parser.add_argument(
        "--holdout_fraction", type=float, default=0.2, help="Share of --real held out when no --holdout is given."
    )
    parser.add_argument("--split_seed", type=int, default=0, help="Seed of the by-id hold-out split.")
    parser.add_argument(
        "--split_file", default=None, help="Held-out ids, one per line; written with the fresh split if absent."
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="Every image is cropped square and resized to this (a multiple of 8). Default: the synthetic images' "
        "native size (they must all be one square size); another value is a comparison, labelled in the report.",
    )
    parser.add_argument(
        "--masks",
        default=None,
        help="Masks to score, e.g. disc, disc,cup, disc,atrophy or none (each on the held-out images annotated for "
        "it; one segmenter learns them together, so a mask's Dice depends on the others scored). Default: every mask "
        "of the synthetic set that some real training and some held-out image are annotated for (the report names "
        "any other).",
    )
    parser.add_argument("--seeds", type=int, default=3, help="Segmenter training seeds (mean and std are reported).")
    parser.add_argument(
        "--segmenter_steps", type=int, default=EvaluationConfig.segmenter_steps, help="Training steps per segmenter."
    )
    parser.add_argument(
        "--equal_real_passes",
        action="store_true",
        help="Also train real + synthetic for proportionally more steps, so each real image is seen as often as when "
        "training on the real images alone (separates the synthetic pairs' effect from less real exposure), and the "
        "real images alone for as many steps (the control: longer training by itself may help).",
    )
    parser.add_argument(
        "--inception_weights", default=None, help="Local FID Inception weights (pt_inception-2015-12-05-6726825d.pth)."
    )
    parser.add_argument("--inference_weights", dest="inception_weights", action=RenamedFlag, new="--inception_weights")
    parser.add_argument(
        "--worst_images", type=int, default=8, help="Held-out images shown in worst_holdout.png (lowest Dice)."
    )
    parser.add_argument(
        "--realism_steps",
        type=int,
        default=RealismRecipe.steps,
        help="Training steps of each classifier in the two-sample realism test.",
    )
    parser.add_argument(
        "--realism_folds", type=int, default=RealismRecipe.folds, help="Cross-validation folds of the two-sample test."
    )
    parser.add_argument(
        "--realism_repeats",
        type=int,
        default=RealismRecipe.repeats,
        help="Run the whole-image two-sample test and its control this many times with other draws of the images, "
        "other folds and other judges, and pool their folds (default 1; the first repeat is the single test): a "
        "steadier mean for a figure near a bar. The quarter-resolution, disc-region and outside-disc views run once.",
    )
    parser.add_argument(
        "--realism_invariance",
        choices=sorted(INVARIANCES),
        default=RealismRecipe.invariance,
        help="The two-sample test's judge: robust (default: colour standardised in the field of view, the same random "
        "JPEG / gamma / blur / resize / noise for both sets, so it cannot be passed or failed on file statistics), "
        "colour (the standardisation alone) or none (flips only, the judge of reports before the robust default).",
    )
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    add_overwrite_arg(parser)
    parser.add_argument(
        "--update_model_card",
        nargs="?",
        const="auto",
        default=None,
        metavar="MODEL_DIR",
        help="Add the measured metrics to this saved model's card (no value: the model recorded in the synthetic "
        "set's generation_config.json).",
    )
    args = parser.parse_args(argv)
    if args.resolution is not None and resolution_problem(args.resolution):
        parser.error(resolution_problem(args.resolution))
    if realism_args_problem(args):
        parser.error(realism_args_problem(args))
    for name in ("seeds", "segmenter_steps", "realism_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: give at least 1.")
    if not 0 < args.holdout_fraction < 1:
        parser.error(f"--holdout_fraction {args.holdout_fraction}: a share of --real, between 0 and 1 (default 0.2).")
    problem = output_dir_problem(args.output_dir)
    if problem:  # now, not after the evaluation's minutes
        parser.error(f"--output_dir {args.output_dir}: {problem}")
    refuse_existing_report(parser, args, "report.json")
    return args


def load_input(flag: str, spec: str):
    """``load_fundus_dataset(spec)``, its data errors prefixed with the flag that named it."""
    try:
        return load_fundus_dataset(spec)
    except FundusDataError as err:
        raise FundusDataError(f"--{flag}: {err}") from None


def main(args):
    model_dir = None
    if args.update_model_card and args.resolution is not None:  # a comparison's figures replaced the card's headline
        raise ValueError(
            f"--update_model_card with --resolution {args.resolution}: the card states the native-resolution figures, "
            "and --resolution is for comparisons. Fix: leave --resolution out to update the card (a set is judged at "
            "its own size by default), or --update_model_card out for the comparison."
        )
    if args.update_model_card:  # checked now, not after the evaluation's minutes
        model_dir = card_model_dir(args.synthetic, None if args.update_model_card == "auto" else args.update_model_card)
    config = EvaluationConfig(
        resolution=args.resolution,
        masks=args.masks,
        seeds=args.seeds,
        segmenter_steps=args.segmenter_steps,
        equal_real_passes=args.equal_real_passes,
        worst_images=args.worst_images,
        realism_steps=args.realism_steps,
        realism_folds=args.realism_folds,
        realism_repeats=args.realism_repeats,
        realism_invariance=args.realism_invariance,
        holdout_fraction=args.holdout_fraction,
        split_seed=args.split_seed,
        split_file=args.split_file,
        inception_weights=args.inception_weights,
        device=args.device,
        inputs={
            "real": args.real, "synthetic": args.synthetic, "holdout": args.holdout,
            # how the set was made, for the report's reader (generate.py's record; absent for other sets)
            "sampler": sampler_description(args.synthetic), "generation_seed": read_generation_config(args.synthetic).get("seed"),
        },  # fmt: skip
    )
    real, synthetic = load_input("real", args.real), load_input("synthetic", args.synthetic)
    holdout = load_input("holdout", args.holdout) if args.holdout else None
    report, figures = evaluate(real, synthetic, holdout, config)
    paths = write_report(report, figures, args.output_dir)
    print(f"Wrote {paths['markdown']} and {len(figures)} figures")
    if model_dir:
        print(f"Updated {update_model_card(report, args.synthetic, model_dir)}")


if __name__ == "__main__":
    run_script(main, parse_args)
