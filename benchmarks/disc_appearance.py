"""How the optic discs of several sets look beside real photographs' (``fundus_diffusion.evaluation.disc_appearance``,
which ``evaluate.py`` reports for one set): each channel's mean, fine and middle detail, the orientation coherence of
the edges and lines (and at the rim), and the vessels' gradient around the disc, in the disc-region judge's square,
as a table (mean ± std over images) and JSON.

Every set is located the same way, so that the numbers compare: ``--locate mask`` (the disc masks' centroids; every
set needs disc masks) or ``brightest`` (each image's brightest point; for sets saved without masks, such as
samples exported as images only). For each set with disc masks the JSON also gives ``brightest_in_disc``, how often
its brightest points lie inside its masks: how far the two ways agree. ``--real_by_origin`` adds a row per camera of
the real and held-out photographs; ``--assign_origin`` also splits the held-out and synthetic images by the camera
whose colours they take, with each style's share and, for the held-out photographs, how often that is their camera.

    python benchmarks/disc_appearance.py --real <split>/train --holdout <split>/test --locate brightest --assign_origin \\
        --synthetic interp-5000-ddpm100=<set> --synthetic interp-10000-ddpm100=<set> --output_json discs.json
"""

import argparse
import json
from typing import Dict

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.data.schema import annotation_matrix, dataset_mask_names, origins
from fundus_diffusion.evaluation.arrays import add_named_set_args, dataset_arrays, parse_named_sets
from fundus_diffusion.evaluation.disc_appearance import (
    LOCATE,
    MIN_RESOLUTION,
    REAL,
    appearance_table,
    origin_rows,
    set_appearance,
    with_assigned_origins,
)
from fundus_diffusion.evaluation.report import json_safe
from fundus_diffusion.evaluation.spectrum import CONTROL


def load_set(path: str, resolution: int, locate: str, name: str, by_origin: bool = False) -> Dict[str, dict]:
    """``{name: set_appearance}`` of one set, and with ``by_origin`` also ``{name / origin: ...}`` per origin of its
    images (``schema.origins``: the camera or collection); a ValueError naming the set and the fix where ``--locate
    mask`` finds no disc annotation."""
    dataset = load_fundus_dataset(path)
    annotated = "disc" in dataset_mask_names(dataset) and bool(annotation_matrix(dataset, ["disc"]).any())
    if locate == "mask" and not annotated:
        raise ValueError(f"{name} ({path}) has no disc masks to locate the discs by. Fix: --locate brightest.")
    arrays = dataset_arrays(dataset, resolution, ["disc"] if annotated else [], name)
    discs = arrays[:, 3] > 0 if annotated else None
    rows = {name: set_appearance(arrays, discs, locate)}
    if by_origin:
        rows.update(origin_rows(name, arrays, discs, locate, origins(list(dataset["id"]), list(dataset["source"]))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_named_set_args(parser)
    parser.add_argument("--locate", choices=LOCATE, default="mask", help="Where each window is centred (above).")
    parser.add_argument(
        "--real_by_origin", action="store_true",
        help="Add a row per origin (camera or collection: schema.origins) of the real and held-out photographs.",
    )  # fmt: skip
    parser.add_argument(
        "--assign_origin", action="store_true",
        help="Give each held-out and synthetic image the origin whose colour around the disc is nearest "
        "(disc_appearance.nearest_origin; implies --real_by_origin) and add a row per set and origin: which camera's "
        "style the samples take, and how each style compares with its camera's photographs.",
    )  # fmt: skip
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    args.real_by_origin |= args.assign_origin
    if args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution {args.resolution}: the measures need at least {MIN_RESOLUTION} px (their blurs fall under a pixel below).")
    try:
        paths = {REAL: args.real, **({CONTROL: args.holdout} if args.holdout else {}), **dict(parse_named_sets(args.synthetic))}
        sets = {}
        for name, path in paths.items():
            sets.update(load_set(path, args.resolution, args.locate, name, args.real_by_origin and name in (REAL, CONTROL)))
    except ValueError as err:
        parser.error(str(err))
    if args.assign_origin:
        try:
            sets = with_assigned_origins(sets, list(paths)[1:])
        except ValueError as err:
            parser.error(f"--assign_origin {err}")
    print(f"Optic discs at {args.resolution} px, windows located by {args.locate}:")
    print("\n".join(appearance_table(sets, REAL)))
    for name, row in sets.items():
        if row["brightest_in_disc"] is not None:
            print(f"{name}: brightest point inside the disc mask in {row['brightest_in_disc']:.0%} of images")
        if "share" in row:
            print(f"{name}: {row['share']:.0%} of the set's images")
        if "assignment_accuracy" in row:
            print(f"{name}: nearest origin by colour is the true one for {row['assignment_accuracy']:.0%} of images")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(json_safe({"resolution": args.resolution, "locate": args.locate, "sets": sets}), f, indent=2, allow_nan=False)
    return sets


if __name__ == "__main__":
    main()
