"""RESULTS.md session 21: the synthetic-only Dice of three sets again, with three segmenter seeds (CPU).

The device's reports trained one segmenter (seed 0) per set on all 200 pairs. Here the evaluation's own segmenter
recipe (``segmenter_scores``: 800 steps, 256 px) trains on the first 56 pairs of each set (the samples the device
packed back, a generic folder each) with seeds 0, 1 and 2, and is scored on the 33 held-out photographs, so the
sets' ranking can be seen beside the segmenter's own spread. A set of more than 56 (the real training split, as the
real-trained baseline of the same size) gives 56 rows drawn at random (seed 0).

    python dice_seeds_cpu.py <split>/test out.json SET [SET ...]
"""

import json
import os
import sys

import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.protocol import segmenter_scores

SEEDS = (0, 1, 2)
N = 56


def load(path: str):
    """uint8 [N, 4, 256, 256]: RGB and the disc mask."""
    return dataset_arrays(load_fundus_dataset(path), 256, ["disc"], path)


def main(test: str, out: str, *sets: str) -> None:
    holdout = load(test)
    result = {"n_holdout": len(holdout), "seeds": list(SEEDS)}
    for path in sets:
        train, name = load(path), os.path.basename(path.rstrip("/"))
        if len(train) > N:
            train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:N]]
        dice = [segmenter_scores(train, holdout, ["disc"], 800, seed, "cpu", name)[0]["disc"]["dice"] for seed in SEEDS]
        result[name] = {"n": len(train), "dice per seed": dice}
        print(name, len(train), [round(d, 3) for d in dice], flush=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
