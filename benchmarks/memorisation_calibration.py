"""Can the memorisation check fail, and what does it flag? Its feature spaces on real photographs and known copies.

``evaluate.py`` flags a synthetic sample as a likely copy when it is closer to a real training image than the 1st
percentile of real-to-real nearest-neighbour distances (``fundus_diffusion.evaluation.memorisation``). On fundus-od,
whose DRIONS-DB half comes from one camera with one framing, the 32 x 32 px pixel space flags samples that share a
training photograph's camera, framing and colour but not its vessel tree (RESULTS.md session 10). This benchmark
puts each feature space to controls with known answers, beside the synthetic sets given:

- the held-out real photographs (never seen: should be flagged about as often as the percentile, 1 %);
- copies of training photographs re-encoded as JPEG at quality 75 with red x 1.05 (should all be flagged);
- the same copies flipped left-right (a copy too: the DDPM trains on flipped images, so it may reproduce them flipped),
  against the check as it runs (the training images and their mirror images) and against the training images alone
  (the check before session 10, which missed them);

in two spaces: ``evaluate.py``'s downsampled pixels, and a vessel-structure space (the green channel at 64 px minus
its Gaussian blur, sigma 2 px, unit norm: the vessel tree and the disc rim without the colour and illumination that
one camera gives every photograph). For each synthetic set it prints the share flagged and its closest samples with
their nearest training photographs (ids only), to look at side by side where the real data is.

    python benchmarks/memorisation_calibration.py --real <split>/train --holdout <split>/test \\
        --synthetic ours-10000=<set> --output_json memorisation_calibration.json
"""

import argparse
import json
from typing import Callable, Dict

import numpy as np
import torch
from realism_judge_calibration import jpeg
from torch.nn import functional as F

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import add_named_set_args, dataset_arrays, named_sets
from fundus_diffusion.evaluation.augment import gaussian_blur
from fundus_diffusion.evaluation.memorisation import (
    COPY_PERCENTILE,
    PIXEL_SPACE,
    nearest_training_neighbours,
    pixel_features,
)

VESSEL_SPACE = "vessel structure (green at 64 px minus its blur, sigma 2 px, unit norm, L2)"


def vessel_features(arrays: torch.Tensor, size: int = 64, sigma: float = 2.0) -> torch.Tensor:
    """``uint8 [N, >=3, H, W]`` -> the green channel's high-pass at ``size`` px, zero mean and unit norm per image."""
    green = F.adaptive_avg_pool2d(arrays[:, 1:2].float() / 255.0, size)
    detail = (green - gaussian_blur(green, torch.full((len(green),), sigma), int(3 * sigma))).flatten(1)
    detail = detail - detail.mean(dim=1, keepdim=True)
    return detail / detail.norm(dim=1, keepdim=True).clamp_min(1e-8)


SPACES: Dict[str, Callable] = {PIXEL_SPACE: pixel_features, VESSEL_SPACE: vessel_features}


def jpeg_copies(arrays: torch.Tensor, quality: int = 75, red_gain: float = 1.05) -> torch.Tensor:
    """Re-encoded copies of ``uint8 [N, >=3, H, W]`` images (RGB only), red channel scaled: a copy a check must catch."""
    copies = jpeg(quality)(arrays[:, :3], None, None).float()
    copies[:, 0] = (copies[:, 0] * red_gain).clamp(0, 255)
    return copies.round().to(torch.uint8)


def flagged_against(features: torch.Tensor, train: torch.Tensor, mirrored, threshold: float) -> Dict:
    distances, neighbours, nearer_mirrored = nearest_training_neighbours(features, train, mirrored)
    return {
        "n": len(features),
        "n_flagged": int((distances < threshold).sum()),
        "median_distance": float(np.median(distances)),
        "distances": distances,
        "neighbours": neighbours,
        "mirrored": nearer_mirrored,
    }


def calibrate(real, holdout, synthetic: Dict[str, torch.Tensor], real_ids, synthetic_ids, closest: int = 8) -> Dict:
    """Per feature space: the threshold, and the flagged count and median distance of every control and set."""
    copies = jpeg_copies(real)
    controls = {"held-out real (should: about 1%)": holdout, "JPEG-75 copies (should: all)": copies,
                "flipped JPEG-75 copies (should: all)": copies.flip(-1)}  # fmt: skip
    unmirrored = "flipped JPEG-75 copies, against the training images alone (the check before session 10)"
    results = {}
    for space, features in SPACES.items():
        train, mirrored = features(real), features(real.flip(-1))
        threshold, threshold_unmirrored = (
            float(np.percentile(nearest_training_neighbours(train, train, m, exclude_self=True)[0], COPY_PERCENTILE))
            for m in (mirrored, None)
        )
        real_to_real = nearest_training_neighbours(train, train, mirrored, exclude_self=True)[0]
        rows = {unmirrored: flagged_against(features(copies.flip(-1)), train, None, threshold_unmirrored)}
        for per_image in ("distances", "neighbours", "mirrored"):
            rows[unmirrored].pop(per_image)
        for name, arrays in {**controls, **synthetic}.items():
            found = flagged_against(features(arrays), train, mirrored, threshold)
            distances, neighbours, nearer_mirrored = (found.pop(k) for k in ("distances", "neighbours", "mirrored"))
            if name in synthetic:
                found["closest"] = [
                    {"synthetic_id": synthetic_ids[name][i], "real_id": real_ids[neighbours[i]],
                     "mirrored": bool(nearer_mirrored[i]), "distance": float(distances[i])}  # fmt: skip
                    for i in np.argsort(distances)[:closest]
                ]
            rows[name] = found
        results[space] = {"threshold": threshold, "median_real_to_real": float(np.median(real_to_real)), "rows": rows}
    return results


def table(results: Dict) -> str:
    lines = []
    for space, result in results.items():
        lines += [
            f"\n{space}: threshold {result['threshold']:.3f} (1st percentile of real-to-real), median real-to-real "
            f"{result['median_real_to_real']:.3f}",
            "| images | flagged | median distance to the nearest training image |",
            "|---|---:|---:|",
        ]
        for name, row in result["rows"].items():
            lines.append(f"| {name} | {row['n_flagged']} of {row['n']} | {row['median_distance']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_named_set_args(
        parser, "The generator's real training set (a saved dataset).", "Held-out real photographs (never trained on).",
        holdout_required=True,
    )  # fmt: skip
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    try:
        loaded = named_sets(args.synthetic, args.resolution)
    except ValueError as err:
        parser.error(str(err))
    real_set = load_fundus_dataset(args.real)
    real = dataset_arrays(real_set, args.resolution, [], "real training set")
    holdout = dataset_arrays(load_fundus_dataset(args.holdout), args.resolution, [], "held-out set")
    synthetic = {name: arrays for name, (arrays, _) in loaded.items()}
    synthetic_ids = {name: ids for name, (_, ids) in loaded.items()}
    results = calibrate(real, holdout, synthetic, list(real_set["id"]), synthetic_ids)
    print(table(results))
    for space, result in results.items():
        for name, row in result["rows"].items():
            if "closest" in row:
                print(f"\n{name}, closest in {space}:")
                print("\n".join(
                    f"  {c['synthetic_id']} ~ {c['real_id']}{' (mirrored)' if c['mirrored'] else ''}: {c['distance']:.3f}"
                    for c in row["closest"]
                ))  # fmt: skip
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"resolution": args.resolution, "percentile": COPY_PERCENTILE, "spaces": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
