"""Build one fundus dataset (image + disc / atrophy masks + PM label) from raw PALM, ADAM and generic folders.

    fundus-build-dataset --palm_dir data/raw/PALM --adam_dir data/raw/ADAM --output_dir data/pm

Writes the dataset as the Hub lays one out (data/train-*.parquet, with the dataset card in README.md) and its rows
again in arrow/ (save_to_disk, what load_fundus_dataset memory-maps), and prints the build report.
Nothing is written to ``--output_dir`` unless the build succeeds.
"""


from fundus_diffusion.cli import add_dataset_push_args, dataset_repo_id, run_script
from fundus_diffusion.data.build import build_dataset, push_dataset_to_hub
from fundus_diffusion.training.args import CommandParser


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--palm_dir", action="append", default=[], help="PALM root, 2019 or 2024 layout (repeatable).")
    parser.add_argument("--adam_dir", action="append", default=[], help="ADAM 2020 root (repeatable).")
    parser.add_argument(
        "--folder_dir", action="append", default=[], help="Generic folder: images/, masks/<name>/, metadata.csv (repeatable)."
    )
    parser.add_argument("--output_dir", required=True, help="Where the dataset folder is written.")
    parser.add_argument(
        "--labels", default=None, help="CSV or XLSX of image name (or id), label (PM / non-PM / 1 / 0 / -1); overrides the readers."
    )
    parser.add_argument("--include_amd", action="store_true", help="Keep ADAM's AMD images (label unknown).")
    parser.add_argument(
        "--images_only",
        action="store_true",
        help="Keep images without a disc mask, marked not annotated (no mask; has_disc_annotation false), for image-only work.",
    )
    parser.add_argument("--skip_bad", action="store_true", help="Leave out unreadable or inconsistent files and list them.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output_dir.")
    add_dataset_push_args(parser)
    return parser.parse_args(argv)


def main(args):
    report = build_dataset(
        args.output_dir,
        palm_dirs=args.palm_dir,
        adam_dirs=args.adam_dir,
        folder_dirs=args.folder_dir,
        labels=args.labels,
        include_amd=args.include_amd,
        require_masks=not args.images_only,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
    )
    print(report.summary())
    print(f"Wrote {len(report.kept)} samples to {args.output_dir}")
    if args.push_to_hub:
        repo_id = dataset_repo_id(args)
        push_dataset_to_hub(args.output_dir, repo_id, private=args.hub_private_repo or None, token=args.hub_token)
        print(f"Pushed to https://huggingface.co/datasets/{repo_id}")


if __name__ == "__main__":
    run_script(main, parse_args)
