"""Split a dataset once, deterministically by id, into train/ and test/ folders (and the held-out id list).

    python scripts/split_dataset.py --dataset ../shared/data/fundus-od --test_fraction 0.2 --stratify id_prefix \
        --output_dir data/fundus-od-split
"""

import argparse

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.splits import STRATA, split_to_disk


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="Anything load_fundus_dataset accepts.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stratify", choices=sorted(STRATA), default="source")
    parser.add_argument("--images_only", action="store_true", help="Keep images without masks.")
    return parser.parse_args(argv)


def main(args):
    dataset = load_fundus_dataset(args.dataset, require_masks=not args.images_only)
    try:
        train, test = split_to_disk(dataset, args.output_dir, args.test_fraction, args.seed, args.stratify)
    except FileExistsError as error:
        raise SystemExit(str(error)) from None
    print(f"{len(train)} train / {len(test)} test rows (stratified by {args.stratify}, seed {args.seed}) in {args.output_dir}")


if __name__ == "__main__":
    run_script(main, parse_args)
