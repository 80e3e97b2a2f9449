"""RESULTS.md session 20: what of the samples' global look tells them from the photographs (CPU, no training).

Real side: the fundus-od training + held-out split (167 photographs); synthetic side: the first 56 samples of each set
the device packed back (`realism_samples-*.tgz`, a generic folder each). Every measurement names its set and n.

    python global_look_cpu.py framing  <train> <test> <out.json> SET [SET ...]   # camera framing: field height
    python global_look_cpu.py surround <train> <test> <out.json> SET [SET ...]   # the black surround
    python global_look_cpu.py features <train> <test> <out.json> SET [SET ...]   # one feature at a time, per framing,
                                                                                 # and all of them together
    python global_look_cpu.py judge    <train> <test> <out.json> SET [views] [seed]  # robust judge, views: raw,cleaned;
                                                                                 # seed: the recipe's (draw, folds, init)
    python global_look_cpu.py judge16  <train> <test> <out.json> SET [framing]    # within one framing at 16 px

The surround clearing, the features and their logistic regression are ``fundus_diffusion.evaluation.global_look``'s
(every evaluate.py report's section since); the committed judge JSONs came from a local copy of the same clearing.
`judge` and `judge16` are the robust judge's default recipe (5 folds x 400 steps, no controls: CPU time), about 15 min
per view on two cores at 56 per side.
"""

import json
import os
import sys

import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.global_look import clear_surround, combined_auc, field_features, folded_auc
from fundus_diffusion.evaluation.realism import (
    RealismRecipe,
    draw_sides,
    field_of_view,
    keep_coarser_than,
    two_sample_auc,
)

TALL = 0.76  # field height / side: DRISHTI-GS1-framed photographs 0.86, DRIONS-DB-framed 0.67 (none between)
FAR = 160  # px from the centre of a 256 px image: outside every photograph's field (the corners)


def load(path: str) -> torch.Tensor:
    """uint8 [N, 3, 256, 256]."""
    return dataset_arrays(load_fundus_dataset(path), 256, [], path)[:, :3]


def tall(images: torch.Tensor) -> torch.Tensor:
    """bool [N]: the field (any channel above 15/255, specks outside it cleared) spans more than TALL of the height."""
    return field_of_view(clear_surround(images).float() / 255)[:, 0].any(2).float().mean(1) > TALL


def surround(images: torch.Tensor) -> dict:
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    far = ((yy - 127.5) ** 2 + (xx - 127.5) ** 2).sqrt() > FAR
    brightest = images.float().amax(1)[:, far]
    return {
        "mean level (0-255)": brightest.mean(1),
        "pixels above 15/255": (brightest > 15).sum(1).float(),
        "share of images with one": (brightest > 15).any(1).float(),
    }


def compare(real: dict, synthetic: dict, top: int = 8) -> list:
    rows = [
        {"feature": k, "auc": folded_auc(real[k], synthetic[k]), "real": float(real[k].mean()),
         "synthetic": float(synthetic[k].mean())}
        for k in real
    ]  # fmt: skip
    return sorted(rows, key=lambda row: -row["auc"])[:top]


def main(mode, train, test, out, *rest):
    real = torch.cat([load(train), load(test)])
    result = {"n_real": len(real)}
    if mode in ("framing", "surround", "features"):
        for path in rest:
            synthetic, name = load(path), os.path.basename(path.rstrip("/"))
            if mode == "framing":
                result[name] = {"n": len(synthetic), "tall share": float(tall(synthetic).float().mean())}
                result["real tall share"] = float(tall(real).float().mean())
            elif mode == "surround":
                result[name] = {"n": len(synthetic), "rows": compare(surround(real), surround(synthetic))}
            else:
                real_tall, synthetic_tall = tall(real), tall(synthetic)
                fr, fs = field_features(real), field_features(synthetic)
                half = torch.randperm(len(real), generator=torch.Generator().manual_seed(0)) < len(real) // 2
                result[name] = {
                    "all features, logistic regression, 5 folds": combined_auc(fr, fs),
                    "control: the same between two halves of the real photographs": combined_auc(
                        {k: v[half] for k, v in fr.items()}, {k: v[~half] for k, v in fr.items()}
                    ),
                }
                result[name] |= {
                    framing: {"n_real": int(r.sum()), "n_synthetic": int(s.sum()),
                              "rows": compare({k: v[r] for k, v in fr.items()}, {k: v[s] for k, v in fs.items()})}
                    for framing, r, s in (("tall", real_tall, synthetic_tall), ("wide", ~real_tall, ~synthetic_tall))
                }  # fmt: skip
    elif mode == "judge":
        synthetic, recipe = load(rest[0]), RealismRecipe(seed=int(rest[2]) if len(rest) > 2 else RealismRecipe.seed)
        real_side, _, picked = draw_sides(real, synthetic, min(len(real) // 2, len(synthetic)), recipe.seed)
        for view in (rest[1] if len(rest) > 1 else "raw,cleaned").split(","):
            side = picked if view == "raw" else clear_surround(picked)
            result[view] = two_sample_auc(real_side, side, recipe, "cpu", view)
            print(view, result[view]["auc"], flush=True)
    elif mode == "judge16":
        synthetic, framing = load(rest[0]), rest[1] if len(rest) > 1 else "tall"
        pick = (lambda x: x[tall(x)]) if framing == "tall" else (lambda x: x[~tall(x)])
        real_side, synthetic_side = pick(real), pick(synthetic)
        n = min(len(real_side), len(synthetic_side))
        real_side = real_side[torch.randperm(len(real_side), generator=torch.Generator().manual_seed(0))[:n]]
        view = f"{framing}-framed, coarser than 16 px"
        result[view] = two_sample_auc(
            keep_coarser_than(real_side, 16), keep_coarser_than(synthetic_side[:n], 16), RealismRecipe(), "cpu", view
        )
        print(view, n, result[view]["auc"], flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
