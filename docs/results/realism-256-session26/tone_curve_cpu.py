"""RESULTS.md session 26: does a global per-channel tone curve move the judge? The synthetic set's pooled in-field
histogram of each channel is mapped onto the training photographs' (a 256-level lookup table per channel, the black
surround left alone); the global-look regression and the robust judge (global_look_cpu.py's recipe: 5 folds x 400
steps, no control) then judge the set before and after. CPU; the 64 packed samples of a set against the 167 photographs.

    python tone_curve_cpu.py <split>/train <split>/test <set> out.json [raw,tone | none]
"""

import json
import os
import runpy
import sys

import torch

from fundus_diffusion.evaluation.global_look import combined_auc, field_features, global_look_section
from fundus_diffusion.evaluation.realism import RealismRecipe, draw_sides, field_of_view, two_sample_auc

g = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "realism-256-session20", "global_look_cpu.py")
)

train, test, synth_path, out = sys.argv[1:5]
views = [v for v in (sys.argv[5] if len(sys.argv) > 5 else "raw,tone").split(",") if v != "none"]
real_train, real_test = g["load"](train), g["load"](test)
real = torch.cat([real_train, real_test])
synthetic = g["load"](synth_path)


def luts(source, target):
    """per-channel 256-entry LUT mapping source's pooled in-field quantiles onto target's"""
    fs, ft = (field_of_view(x.float() / 255)[:, 0] for x in (source, target))
    q = torch.linspace(0, 1, 1001)
    out = []
    for c in range(3):
        s = source[:, c][fs].float()
        t = target[:, c][ft].float()
        sq, tq = (
            torch.quantile(s[torch.randperm(len(s), generator=torch.Generator().manual_seed(0))[:2_000_000]], q),
            torch.quantile(t[torch.randperm(len(t), generator=torch.Generator().manual_seed(1))[:2_000_000]], q),
        )
        levels = torch.arange(256.0)
        idx = torch.searchsorted(sq.contiguous(), levels).clamp(1, 1000)
        lo, hi = sq[idx - 1], sq[idx]
        w = ((levels - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        out.append((tq[idx - 1] + w * (tq[idx] - tq[idx - 1])).round().clamp(0, 255).to(torch.uint8))
    return out, fs


def tone(source, target):
    lut, field = luts(source, target)
    mapped = source.clone()
    for c in range(3):
        ch = mapped[:, c]
        ch[field] = lut[c][source[:, c][field].long()]
    return mapped


def write(result):
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


result = {"n_real": len(real), "n_synthetic": len(synthetic)}
sets = {"raw": synthetic, "tone": tone(synthetic, real_train)}
for name, s in sets.items():
    fr, fs = field_features(real), field_features(s)
    result[f"{name}: global-look regression"] = combined_auc(fr, fs)
    result[f"{name}: global-look features, top 6"] = global_look_section(real, s)["features"][:6]
    print(name, "features", result[f"{name}: global-look regression"]["mean"], flush=True)
recipe = RealismRecipe()
for name in views:  # "none": the features alone (seconds)
    real_side, _, picked = draw_sides(real, sets[name], min(len(real) // 2, len(synthetic)), recipe.seed)
    result[f"{name}: judge"] = two_sample_auc(real_side, picked, recipe, "cpu", name)
    print(name, "judge", result[f"{name}: judge"]["auc"], flush=True)
    write(result)
write(result)
