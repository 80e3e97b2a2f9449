"""RESULTS.md session 18: the robust judge's default recipe (fundus_diffusion.evaluation.realism), 5 folds, on the
whole images and on the images without the disc's square, the same draw of real photographs (training + held-out,
as evaluate.py pools them) against the same synthetic pairs; no controls (CPU time).

    python outside_disc_cpu.py <split>/train <split>/test <synthetic set with disc masks> <output.json>
"""

import json
import sys

import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.realism import (
    DISC_CROP_FRACTION,
    RealismRecipe,
    draw_sides,
    two_sample_auc,
    without_disc,
)

train, test, synthetic_path, out = sys.argv[1:5]
sets = (("real", train), ("held-out", test), ("synthetic", synthetic_path))
arrays = {name: dataset_arrays(load_fundus_dataset(path), 256, ["disc"], name) for name, path in sets}
real, synthetic = torch.cat([arrays["real"], arrays["held-out"]]), arrays["synthetic"]
recipe = RealismRecipe()
n = min(len(real) // 2, len(synthetic))
real_a, _, picked = draw_sides(real, synthetic, n, recipe.seed)  # realism_test's draw of its main test
side = 256 // DISC_CROP_FRACTION
results = {
    "outside_disc": two_sample_auc(
        without_disc(real_a[:, :3], real_a[:, 3] > 0, side), without_disc(picked[:, :3], picked[:, 3] > 0, side),
        recipe, "cpu", "outside the disc",
    ),
    "whole": two_sample_auc(real_a[:, :3], picked[:, :3], recipe, "cpu", "whole image"),
}
with open(out, "w") as f:
    json.dump(results, f, indent=1)
for name, result in results.items():
    print(name, result["auc"], result["auc_per_fold"], result["n_per_class"])
