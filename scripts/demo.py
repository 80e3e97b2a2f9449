"""The README's main job on the embedded default: phantoms, drawn as a contact sheet."""

import argparse
import os

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.visualization import contact_sheet


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    dataset = load_phantom_dataset(args.num_samples, size=args.resolution, seed=args.seed)
    dataset.save_to_disk(os.path.join(args.output_dir, "phantom_dataset"))
    sheet = contact_sheet(
        dataset["image"],
        [{"disc": r["disc_mask"], "atrophy": r["atrophy_mask"]} for r in dataset],
        captions=[dataset.features["label"].int2str(label) for label in dataset["label"]],
    )
    path = os.path.join(args.output_dir, "contact_sheet.png")
    sheet.save(path)
    print(f"Wrote {len(dataset)} phantom pairs to {args.output_dir} and the contact sheet {path}")


if __name__ == "__main__":
    main(parse_args())
