"""Split a dataset once, deterministically by id, into train/ and test/ folders (and the held-out id list).

    python scripts/split_dataset.py --dataset ../shared/data/fundus-od --test_fraction 0.2 --stratify id_prefix \
        --output_dir data/fundus-od-split
"""

import argparse
import os

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.splits import split_by_id, write_split_file

STRATA = {
    "source": "source",
    "label": "label",
    # "folder:fundus-od/drions_001" -> "drions": the origin named in a generic folder's file names
    "id_prefix": lambda sample_id: sample_id.rsplit("/", 1)[-1].split("_")[0],
    "none": None,
}


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
    train, test = split_by_id(dataset, args.test_fraction, args.seed, STRATA[args.stratify])
    if os.path.exists(args.output_dir):
        raise SystemExit(f"{args.output_dir} exists; choose a new --output_dir (a split is written once).")
    train.save_to_disk(os.path.join(args.output_dir, "train"))
    test.save_to_disk(os.path.join(args.output_dir, "test"))
    write_split_file(os.path.join(args.output_dir, "test_ids.txt"), list(test["id"]))
    print(f"{len(train)} train / {len(test)} test rows (stratified by {args.stratify}, seed {args.seed}) in {args.output_dir}")


if __name__ == "__main__":
    main(parse_args())
