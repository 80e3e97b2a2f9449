"""Can the realism judge be passed at all? The classifier two-sample test between two halves of the REAL photographs,
one half left as it is and the other changed imperceptibly (issue 18).

    python benchmarks/realism_judge_calibration.py --data ../shared/data/fundus-od \
        --output_json docs/results/realism-judge-calibration.json

Every synthetic set so far gets ROC AUC 1.0 from ``fundus_diffusion.evaluation.realism`` (a small CNN trained from
scratch, K-fold cross-validated). A judge is only useful if it can pass as well as fail: if a change nobody would
call unrealistic (a JPEG re-encode, a 0.5 px blur, grain of 2/255) already lets the CNN tell real photographs from
the same kind of real photographs, the AUC <= 0.80 bar measures file statistics, not realism.

The real images are loaded as ``scripts/evaluate.py`` loads them (``dataset_arrays``: square fundus crop, Lanczos
resize to ``--resolution``), split by id into two disjoint halves A and B (seeded), and ``two_sample_auc`` with
``RealismRecipe`` (the default recipe unless ``--steps`` / ``--folds`` say otherwise) is run between A and each
perturbed copy of B; the first row, B unchanged, is the real-vs-real control. Every perturbation is applied to the
``--resolution`` px arrays, i.e. to what the judge sees and the size a generator writes. Prints a Markdown table and
writes the numbers (never an image) to ``--output_json``, rewritten after every row so a cut-short run keeps the rows
it finished.
"""

import argparse
import io
import json
import os
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.realism import TEST_NAME, RealismRecipe, two_sample_auc

CONTROL = "none (control: A vs B unchanged)"


def _per_image(images: torch.Tensor, change) -> torch.Tensor:
    """``change`` (PIL RGB -> PIL RGB) applied to each of ``uint8 [N, 3, H, W]`` images."""
    out = []
    for image in images:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB")
        out.append(torch.from_numpy(np.asarray(change(pil).convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out)


def jpeg(quality: int):
    """Re-encode as JPEG with PIL at ``quality`` (PIL's default 4:2:0 chroma subsampling) and decode again."""

    def change(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    return lambda images, generator: _per_image(images, change)


def gaussian_blur(sigma: float):
    """PIL's Gaussian blur with standard deviation ``sigma`` px. Kept lossless: a PNG round trip of the result is
    exact, so this row is the JPEG-free, slightly soft version of B."""
    return lambda images, generator: _per_image(images, lambda image: image.filter(ImageFilter.GaussianBlur(sigma)))


def gaussian_noise(sigma: float):
    """Add seeded Gaussian noise of standard deviation ``sigma`` (in 0-255 units), rounded and clipped to uint8."""

    def change(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(images.shape, generator=generator) * sigma
        return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)

    return change


def down_up(low: int):
    """Resize to ``low`` px and back to the original size, both bilinear (PIL)."""

    def change(image: Image.Image) -> Image.Image:
        return image.resize((low, low), Image.BILINEAR).resize(image.size, Image.BILINEAR)

    return lambda images, generator: _per_image(images, change)


def red_shift(levels: int):
    """Add ``levels`` (of 255) to the red channel, clipped at 255."""

    def change(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = images.clone()
        out[:, 0] = (out[:, 0].int() + levels).clamp(max=255).to(torch.uint8)
        return out

    return change


def perturbations(resolution: int):
    """``{row name: change(uint8 [N, 3, H, W], generator) -> same}``, the control first."""
    return {
        CONTROL: lambda images, generator: images,
        "JPEG re-encode, quality 95 (PIL, 4:2:0)": jpeg(95),
        "JPEG re-encode, quality 75 (PIL, 4:2:0)": jpeg(75),
        "Gaussian blur sigma 0.5 px, lossless (PNG-exact)": gaussian_blur(0.5),
        "Gaussian noise sigma 2/255": gaussian_noise(2.0),
        f"down to {resolution // 2} px and back up (bilinear)": down_up(resolution // 2),
        "colour shift +3/255 red": red_shift(3),
    }


def split_halves(ids, seed: int):
    """Two disjoint index halves of equal size (one id left out when the count is odd), shuffled by ``seed``."""
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    n = len(ids) // 2
    return order[:n], order[n : 2 * n]


def markdown_table(result: dict) -> str:
    """The rows finished so far as a Markdown table whose header states resolution, recipe and sizes."""
    recipe = result["recipe"]
    default = RealismRecipe().to_dict()
    changed = {k: v for k, v in recipe.items() if v != default[k]}
    header = f"{TEST_NAME}, real half A vs (perturbed) real half B, {result['resolution']} px, " \
        f"{result['n_per_side']} images per side, {recipe['folds']} folds"
    if changed:
        header += f" -- **REDUCED RECIPE, NOT THE DEFAULT: {changed} (default {({k: default[k] for k in changed})})**"
    else:
        header += " -- default RealismRecipe"
    lines = [header, "", "| perturbation of B | AUC mean ± std | per fold | seconds |", "|---|---|---|---|"]
    for name, row in result["rows"].items():
        auc = row["auc"]
        folds = ", ".join(f"{a:.3f}" for a in row["auc_per_fold"])
        lines.append(f"| {name} | {auc['mean']:.3f} ± {auc['std']:.3f} | {folds} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def calibrate(images: torch.Tensor, ids, recipe: RealismRecipe, seed: int = 0, output_json=None, device="cpu") -> dict:
    """The two-sample test between half A of ``images`` (``uint8 [N, 3, R, R]``, one per id) and each perturbed
    copy of half B. Writes ``output_json`` after every row when given."""
    first, second = split_halves(ids, seed)
    a, b = images[first], images[second]
    result = {
        "name": TEST_NAME,
        "resolution": int(images.shape[-1]),
        "recipe": recipe.to_dict(),
        "split_seed": seed,
        "n_per_side": len(first),
        "ids_a": [ids[i] for i in first],
        "ids_b": [ids[i] for i in second],
        "perturbations_applied_at": f"{images.shape[-1]} px arrays (what the judge sees)",
        "rows": {},
    }
    for name, change in perturbations(result["resolution"]).items():
        start = time.perf_counter()
        changed = change(b, torch.Generator().manual_seed(seed))
        mean_abs = float((changed.float() - b.float()).abs().mean())
        row = two_sample_auc(a, changed, recipe, device, desc=name)
        result["rows"][name] = {**row, "mean_abs_change_0_255": mean_abs, "seconds": time.perf_counter() - start}
        print(f"{name}: AUC {row['auc']['mean']:.3f} ± {row['auc']['std']:.3f} ({result['rows'][name]['seconds']:.0f} s)", flush=True)
        if output_json:
            with open(output_json, "w") as f:
                json.dump(result, f, indent=2)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data/fundus-od", help="The real set (anything load_fundus_dataset accepts).")
    parser.add_argument("--resolution", type=int, default=256, help="Side of the arrays the judge sees, as evaluate.py's --resolution.")
    parser.add_argument("--steps", type=int, default=RealismRecipe.steps, help="Training steps of each fold's classifier.")
    parser.add_argument("--folds", type=int, default=RealismRecipe.folds)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the A/B split, the noise and the recipe.")
    parser.add_argument("--output_json", default=None, help="Where to write the numbers (rewritten after every row).")
    args = parser.parse_args(argv)
    if not args.data.startswith("phantom") and not os.path.exists(args.data):
        parser.error(f"--data {args.data}: no such folder. Fix: pass the real fundus-od set built by scripts/build_dataset.py.")
    return args


def main(args):
    start = time.perf_counter()
    dataset = load_fundus_dataset(args.data)
    images = dataset_arrays(dataset, args.resolution, (), "real set")
    recipe = RealismRecipe(steps=args.steps, folds=args.folds, seed=args.seed)
    result = calibrate(images, list(dataset["id"]), recipe, args.seed, args.output_json)
    result["wall_seconds"] = time.perf_counter() - start
    result["torch_threads"] = torch.get_num_threads()
    result["data"] = args.data
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown_table(result))
    print(f"\nwall time {result['wall_seconds']:.0f} s with {result['torch_threads']} torch thread(s)")


if __name__ == "__main__":
    run_script(main, parse_args)
