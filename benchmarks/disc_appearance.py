"""How the optic discs of several sets look beside real photographs' (``fundus_diffusion.evaluation.disc_appearance``,
which ``evaluate.py`` reports for one set): each channel's mean, fine and middle detail, and the orientation
coherence of that detail, in a window around each disc, as a table (mean ± std over images) and JSON.

Every set is located the same way, so that the numbers compare: ``--locate mask`` (the disc masks' centroids; every
set needs disc masks) or ``brightest`` (each image's brightest point; for sets saved without masks, such as
samples exported as images only). For each set with disc masks the table's JSON also gives ``brightest_in_disc``,
how often its brightest points lie inside its masks: how far the two ways agree.

    python benchmarks/disc_appearance.py --real <split>/train --holdout <split>/test --locate brightest \\
        --synthetic interp-5000-ddpm100=<set> --synthetic interp-10000-ddpm100=<set> --output_json discs.json
"""

import argparse
import json

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.data.schema import annotation_matrix, dataset_mask_names
from fundus_diffusion.evaluation.arrays import add_named_set_args, dataset_arrays, parse_named_sets
from fundus_diffusion.evaluation.disc_appearance import LOCATE, MIN_RESOLUTION, REAL, appearance_table, set_appearance
from fundus_diffusion.evaluation.spectrum import CONTROL


def load_set(path: str, resolution: int, locate: str, name: str) -> dict:
    """One set's ``set_appearance`` (a ValueError naming the set and the fix where ``--locate mask`` finds no disc
    annotation)."""
    dataset = load_fundus_dataset(path)
    annotated = "disc" in dataset_mask_names(dataset) and bool(annotation_matrix(dataset, ["disc"]).any())
    if locate == "mask" and not annotated:
        raise ValueError(f"{name} ({path}) has no disc masks to locate the discs by. Fix: --locate brightest.")
    arrays = dataset_arrays(dataset, resolution, ["disc"] if annotated else [], name)
    return set_appearance(arrays, arrays[:, 3] > 0 if annotated else None, locate)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_named_set_args(parser)
    parser.add_argument("--locate", choices=LOCATE, default="mask", help="Where each window is centred (above).")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution {args.resolution}: the measures need at least {MIN_RESOLUTION} px (their blurs fall under a pixel below).")
    try:
        paths = {REAL: args.real, **({CONTROL: args.holdout} if args.holdout else {}), **dict(parse_named_sets(args.synthetic))}
        sets = {name: load_set(path, args.resolution, args.locate, name) for name, path in paths.items()}
    except ValueError as err:
        parser.error(str(err))
    print(f"Optic discs at {args.resolution} px, windows located by {args.locate}:")
    print("\n".join(appearance_table(sets, REAL)))
    for name, row in sets.items():
        if row["brightest_in_disc"] is not None:
            print(f"{name}: brightest point inside the disc mask in {row['brightest_in_disc']:.0%} of images")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"resolution": args.resolution, "locate": args.locate, "sets": sets}, f, indent=2)
    return sets


if __name__ == "__main__":
    main()
