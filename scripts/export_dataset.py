"""Export a fundus dataset for other tools: the Hub layout (``load_dataset``), imagefolder, or nnU-Net v2.

    fundus-export-dataset --dataset data/pm --format hub
    fundus-export-dataset --dataset data/synthetic --format imagefolder --output_dir data/synthetic-png
    fundus-export-dataset --dataset data/pm --format nnunet --masks disc --output_dir $nnUNet_raw/Dataset501_Disc
    fundus-export-dataset --dataset data/mine --format imagefolder --resolution 256 --output_dir my_masks

``hub`` lays a saved folder (from build_dataset.py or generate.py, which now write this layout themselves) out as
``push_to_hub`` uploads it, in place, so ``datasets.load_dataset(folder)`` reads it. ``imagefolder`` and ``nnunet``
take any --dataset that training takes (saved folder, raw folder, phantom, Hub id) and add to --output_dir.
``imagefolder --resolution R`` frames every photograph and its masks as training does at R px (the fundus field cropped
square, then resized): its masks/ is what ``generate.py --masks_from`` takes for a model of that resolution.
"""


from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.export import export_imagefolder, export_nnunet, write_hub_layout
from fundus_diffusion.training.args import CommandParser

FORMATS = ("hub", "imagefolder", "nnunet")


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="A saved / raw dataset folder, phantom[:N] or a Hub id.")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output_dir", default=None, help="imagefolder / nnunet: where to write (rows there are kept).")
    parser.add_argument("--masks", default=None, help="Masks to export, e.g. disc,cup (default: all the dataset's).")
    parser.add_argument("--split", default="train", help="The split of a Hub dataset to export.")
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="imagefolder: frame each photograph and its masks as training does at this size (PNG), e.g. for "
        "generate.py --masks_from with a model of this resolution. Default: the stored files unchanged.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.resolution is not None and (args.format != "imagefolder" or args.resolution < 1):
        parser.error("--resolution frames the photographs for --format imagefolder only, at a size of at least 1 px (e.g. 256): drop it, or use --format imagefolder.")
    if args.format == "hub" and (args.output_dir or args.masks):
        parser.error("--format hub rewrites --dataset in place and keeps every mask: drop --output_dir and --masks.")
    if args.format != "hub" and not args.output_dir:
        parser.error(f"--format {args.format} needs --output_dir.")
    return args


def main(args):
    if args.format == "hub":
        shards = write_hub_layout(args.dataset)
        print(f"Wrote {len(shards)} parquet shards to {args.dataset}/data: datasets.load_dataset({args.dataset!r}) reads it")
        return
    dataset = load_fundus_dataset(args.dataset, split=args.split)
    if args.format == "imagefolder":
        rows = export_imagefolder(dataset, args.output_dir, mask_names=args.masks, resolution=args.resolution)
        print(f"{args.output_dir}: {rows} rows in metadata.csv (load_dataset('imagefolder', data_dir=...), --folder_dir)")
    else:
        info = export_nnunet(dataset, args.output_dir, mask_names=args.masks)
        print(f"{args.output_dir}: {info['numTraining']} cases, labels {info['labels']}. {info['description']}")


if __name__ == "__main__":
    run_script(main, parse_args)
