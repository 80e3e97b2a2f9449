"""Checks of the input: the resolution the segmenter can work at, the synthetic set's native resolution, and a
warning when images would be scaled up (the protocol's first step)."""

import io
import os
import sys
from typing import Optional

import PIL.Image
from datasets import Image as ImageFeature


def resolution_problem(resolution: int) -> Optional[str]:
    """Why the segmenter cannot work at ``resolution`` (None when it can): its U-Net halves the size three times."""
    if resolution < 8 or resolution % 8:
        low = max(8, resolution // 8 * 8)
        return f"--resolution {resolution}: the segmenter takes multiples of 8, e.g. {low} or {low + 8}."
    return None


def realism_args_problem(args) -> Optional[str]:
    """Why the scripts' two-sample test settings (``--realism_folds``, ``--realism_steps``) cannot work (None when
    they can)."""
    if args.realism_folds < 2:
        return f"--realism_folds {args.realism_folds}: cross-validation needs at least 2 folds."
    if args.realism_steps < 1:
        return f"--realism_steps {args.realism_steps}: give at least 1."
    return None


def add_overwrite_arg(parser) -> None:
    """``--overwrite``: an evaluation script replaces a report its ``--output_dir`` holds only when asked to."""
    parser.add_argument("--overwrite", action="store_true", help="Replace the report --output_dir holds (refused without).")


def refuse_existing_report(parser, args, report_file: str) -> None:
    """``parser.error`` when ``args.output_dir`` holds ``report_file`` and ``--overwrite`` was not given: a second run
    would replace the first one's report without a word."""
    if os.path.isfile(os.path.join(args.output_dir, report_file)) and not args.overwrite:
        parser.error(
            f"--output_dir {args.output_dir} holds a report already ({report_file}). Fix: choose a new folder, or add "
            "--overwrite to replace it."
        )


def warn(message: str) -> None:
    """``<script>: warning: message`` on stderr: the one style of the scripts' warnings about their input (argparse's
    ``error:`` lines, and ``fundus_diffusion.cli.run_script``'s, look the same)."""
    print(f"{os.path.basename(sys.argv[0])}: warning: {message}", file=sys.stderr)


def _stored_size(image: dict) -> tuple:
    """The size of an undecoded ``datasets`` image (``{"bytes", "path"}``), from its header."""
    with PIL.Image.open(io.BytesIO(image["bytes"]) if image["bytes"] else image["path"]) as opened:
        return opened.size


def warn_if_upscaled(dataset, resolution: int, what: str) -> None:
    """Images smaller than the evaluation's resolution are scaled up: say so (the smallest), since it blurs what the
    segmenter and the realism judge see. Sizes are read from the files' headers, without decoding the pixels."""
    stored = dataset.cast_column("image", ImageFeature(decode=False))["image"]
    sizes = [_stored_size(f) for f in stored]
    small = [size for size in sizes if min(size) < resolution]
    if small:
        width, height = min(small, key=min)
        warn(
            f"{len(small)} of {len(sizes)} of {what} images are smaller than the evaluation's {resolution} px (the "
            f"smallest {width}x{height}): they are scaled up, which blurs them. Pass --resolution "
            f"{max(8, min(width, height) // 8 * 8)} to evaluate at their size."
        )

def native_resolution(dataset, what: str = "synthetic") -> int:
    """The side of ``dataset``'s images when they are all one square size (a multiple of 8), else a ValueError that
    says why and what to pass instead: mixed sizes or non-square images have no single native resolution."""
    sizes = {}
    for image in dataset["image"]:
        sizes[image.size] = sizes.get(image.size, 0) + 1
    if not sizes:
        raise ValueError(f"The {what} set is empty: there is nothing to evaluate.")
    listed = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1]))
    if len(sizes) > 1:
        raise ValueError(
            f"The {what} images come in several sizes ({listed}), so they have no single native resolution. Evaluate "
            "one size at a time, or pass --resolution N to judge them all at N px."
        )
    ((width, height),) = sizes
    if width != height:
        raise ValueError(
            f"The {what} images are {width}x{height}, not square, so they have no native evaluation resolution. Pass "
            f"--resolution N (a multiple of 8, e.g. {max(8, min(width, height) // 8 * 8)}): the fundus field is cropped "
            "square and resized to N px."
        )
    if resolution_problem(width):
        low = max(8, width // 8 * 8)
        raise ValueError(
            f"The {what} images are {width}x{height} px, but the segmenter takes multiples of 8: pass --resolution "
            f"{low} or {low + 8}."
        )
    return width
