"""Split a dataset once, deterministically by id: into train/ and test/ folders (and the held-out id list), into nested
training subsets for learning curves (--subsets), or into one part per source for cross-camera tests (--by_source).
Every part written says what it is in its `split` column: train for train/ and the subsets, test for test/ (not the
source's own split, e.g. a folder's metadata.csv source_split, which the split by id does not follow).

    fundus-split-dataset --dataset data/fundus-od --test_fraction 0.2 --stratify id_prefix \\
        --output_dir data/fundus-od-split
    # the same, with each eye's repeat photographs on one side (issue 20's learning curves use this split; draw their
    # subsets from its train/ and the per-source parts with its test_ids.txt)
    fundus-split-dataset --dataset data/fundus-od --stratify id_prefix \\
        --groups docs/splits/fundus-od_eye_groups.csv --output_dir data/fundus-od-split-by-eye
    # n10-seed0/ ... n50-seed2/ and subsets.json: 10 inside 25 inside 50 for each seed, DRIONS / DRISHTI kept 90:77
    fundus-split-dataset --dataset data/fundus-od-split/train --stratify id_prefix \\
        --subsets 10,25,50 --subset_seeds 0,1,2 --output_dir data/fundus-od-subsets
    # drions/train (its training-split images), drions/test (everything else: held-out and DRISHTI), the same for
    # drishti, and sources.json
    fundus-split-dataset --dataset data/fundus-od --stratify id_prefix --by_source \\
        --test_ids data/fundus-od-split/test_ids.txt --output_dir data/fundus-od-by-source
"""

import argparse

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.splits import (
    ORIGIN,
    STRATA,
    read_groups_file,
    read_split_file,
    sources_to_disk,
    split_to_disk,
    subsets_to_disk,
)
from fundus_diffusion.training.args import CommandParser


def int_list(text: str):
    try:
        return [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,25,50, got {text!r}") from None


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="Anything load_fundus_dataset accepts.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out split.")
    parser.add_argument(
        "--stratify",
        choices=sorted(STRATA),
        default=ORIGIN,
        help="origin: a generic folder's file-name prefix shared by at least 5 images (drions_001 -> drions), else the "
        "source column (evaluate.py's own grouping); source, label, id_prefix or none.",
    )
    parser.add_argument(
        "--groups",
        metavar="CSV",
        help="A held-out split that keeps each group's images on one side: a CSV with the columns id and group (e.g. "
        "repeat photographs of one eye, or one patient's eyes; ids as in the dataset or their file names; images it "
        "does not name split alone). docs/splits/fundus-od_eye_groups.csv groups fundus-od's repeat photographs.",
    )
    parser.add_argument("--images_only", action="store_true", help="Keep images without masks.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--subsets", type=int_list, metavar="N,N,...",
        help="Instead of a held-out split: nested subsets of --dataset (a training split) of these sizes, stratified.",
    )  # fmt: skip
    mode.add_argument(
        "--by_source", action="store_true",
        help="Instead of a held-out split: for each source of --stratify, train on it and test on everything else.",
    )  # fmt: skip
    parser.add_argument("--subset_seeds", type=int_list, default=[0], metavar="S,S,...", help="With --subsets.")
    parser.add_argument(
        "--test_ids", help="With --by_source: held-out ids (a split's test_ids.txt) kept out of every train part."
    )
    args = parser.parse_args(argv)
    if args.test_ids and not args.by_source:
        parser.error("--test_ids applies to --by_source only; drop it or add --by_source.")
    if args.groups and (args.subsets or args.by_source):
        parser.error("--groups applies to a held-out split only; split with it first, then draw --subsets from that "
                     "split's train/ and --by_source parts with its test_ids.txt")
    return args


def main(args):
    dataset = load_fundus_dataset(args.dataset, require_masks=not args.images_only)
    groups = None
    if args.groups:  # its errors name the groups file, not the dataset
        try:
            groups = read_groups_file(args.groups, list(dataset["id"]))
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"--groups {error}") from None
    try:
        if args.subsets:
            record = subsets_to_disk(dataset, args.output_dir, args.subsets, args.subset_seeds, args.stratify)
            for name, subset in record["subsets"].items():
                print(f"{name}: {subset['strata']}")
        elif args.by_source:
            test_ids = read_split_file(args.test_ids) if args.test_ids else ()
            record = sources_to_disk(dataset, args.output_dir, args.stratify, test_ids)
            for source, parts in record["sources"].items():
                print(f"{source}: train {parts['train']['strata']}, test {parts['test']['strata']}")
        else:
            train, test = split_to_disk(dataset, args.output_dir, args.test_fraction, args.seed, args.stratify, groups)
            grouping = f", {len(set(filter(None, groups)))} groups kept whole" if groups else ""
            print(f"{len(train)} train / {len(test)} test rows (stratified by {args.stratify}, seed {args.seed}"
                  f"{grouping}); their split column says train / test")
    except ValueError as error:  # run_script prints it as split_dataset.py: error: ...
        raise ValueError(f"{args.dataset}: {error}") from None
    print(f"written to {args.output_dir}")


if __name__ == "__main__":
    run_script(main, parse_args)
