"""RESULTS.md session 19: at which scale the judge tells the samples from the photographs. The robust judge's default
recipe (fundus_diffusion.evaluation.realism), 5 folds, 256 px input every time, on the same draw of real photographs
(training + held-out, as evaluate.py pools them) against the same synthetic images, seen whole and with the detail
finer than 128 px and 64 px removed from both sides (antialiased bilinear down to that size, bilinear back up to 256:
the judge and its input size stay the same, only the finest detail goes); no controls (CPU time). The committed JSON
came from a local copy of what is now realism.keep_coarser_than (commit b0b47aa's version of this script), which
evaluate.py's quarter-resolution view uses since.

    python detail_scale_cpu.py <split>/train <split>/test <synthetic set> <output.json> [sizes, default 256,128,64]
"""

import json
import sys

import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.realism import RealismRecipe, draw_sides, keep_coarser_than, two_sample_auc

train, test, synthetic_path, out = sys.argv[1:5]
sets = (("real", train), ("held-out", test), ("synthetic", synthetic_path))
arrays = {name: dataset_arrays(load_fundus_dataset(path), 256, [], name) for name, path in sets}
real, synthetic = torch.cat([arrays["real"], arrays["held-out"]]), arrays["synthetic"]
recipe = RealismRecipe()
n = min(len(real) // 2, len(synthetic))
real_a, _, picked = draw_sides(real, synthetic, n, recipe.seed)  # realism_test's draw of its main test
results = {}
for size in map(int, (sys.argv[5] if len(sys.argv) > 5 else "256,128,64").split(",")):
    view = (lambda x: x) if size == 256 else (lambda x, s=size: keep_coarser_than(x, s))
    name = "whole" if size == 256 else f"coarser than {size} px"
    results[name] = two_sample_auc(view(real_a[:, :3]), view(picked[:, :3]), recipe, "cpu", name)
    print(name, results[name]["auc"], results[name]["auc_per_fold"], results[name]["n_per_class"], flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
