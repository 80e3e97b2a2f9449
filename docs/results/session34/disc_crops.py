"""The first four samples' discs of each synthetic set, 64 x 64 px around the disc mask's centre at 4x (nearest), a
row per set (RESULTS.md session 34; synthetic samples only: look at real photographs beside them locally).

    python docs/results/session34/disc_crops.py OUT.png SYNTHETIC_SET [SYNTHETIC_SET ...]
"""

import sys

import numpy as np
from PIL import Image

from fundus_diffusion.data.loading import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays


def disc_crop(array):
    ys, xs = np.nonzero(array[3].numpy() > 127)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (128, 128)
    cy, cx = min(max(cy, 32), 224), min(max(cx, 32), 224)
    crop = array[:3, cy - 32 : cy + 32, cx - 32 : cx + 32].permute(1, 2, 0).numpy()
    return np.asarray(Image.fromarray(crop).resize((256, 256), Image.NEAREST))


def main(out, *sets):
    rows = [dataset_arrays(load_fundus_dataset(path), 256, ["disc"], "synthetic")[:4] for path in sets]
    Image.fromarray(np.concatenate([np.concatenate([disc_crop(a) for a in row], 1) for row in rows], 0)).save(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
