"""Where a synthetic set's pixel-scale excess sits (RESULTS.md session 34; CPU, local): high-pass power (each RGB
image minus its 3 x 3 mean, squared, summed over channels) averaged by signed distance to the disc mask's edge inside
the fundus field, as a ratio to the real training photographs'. Also the green-channel band powers of
``fundus_diffusion.evaluation.spectrum`` (the report's), to check a packed subset against its set's report.

    python docs/results/session34/edge_speckle.py SPLIT_DIR SYNTHETIC_SET [SYNTHETIC_SET ...]

SPLIT_DIR holds train/ and test/ of scripts/split_dataset.py --stratify id_prefix (seed 0) on fundus-od.
"""

import sys

import numpy as np
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from fundus_diffusion.data.loading import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.spectrum import spectrum_section

BANDS = {"disc inside >6 px": (-99, -6), "inside 3-6": (-6, -3), "rim +-3 px": (-3, 3), "outside 3-6": (3, 6),
         "outside 6-20": (6, 20), "retina >20 px": (20, 999)}  # fmt: skip


def profile(arrays):
    x = arrays[:, :3].float() / 255
    power = ((x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)) ** 2).sum(1).numpy()
    field = arrays[:, :3].amax(1).numpy() > 15
    out = {k: [] for k in BANDS}
    for i in range(len(arrays)):
        disc = arrays[i, 3].numpy() > 127
        if not disc.any():
            continue
        distance = distance_transform_edt(~disc) - distance_transform_edt(disc)  # negative inside the disc
        for k, (low, high) in BANDS.items():
            inside = (distance >= low) & (distance < high) & field[i]
            if inside.any():
                out[k].append(power[i][inside].mean())
    return {k: float(np.mean(v)) for k, v in out.items()}


def main(split_dir, *sets):
    load = lambda path, desc: dataset_arrays(load_fundus_dataset(path), 256, ["disc"], desc)  # noqa: E731
    real, held_out = load(f"{split_dir}/train", "real"), load(f"{split_dir}/test", "held-out")
    reference = profile(real)
    print("| set | n | " + " | ".join(BANDS) + " | pixel band (green, report's) |")
    print("|---|---:|" + "---:|" * (len(BANDS) + 1))
    for name, arrays in [("held-out real (control)", held_out)] + [(p.rstrip("/").split("/")[-1], load(p, "synthetic")) for p in sets]:
        ratios = profile(arrays)
        bands = spectrum_section(real, held_out, arrays)["sets"]["synthetic"]["bands"]
        cells = " | ".join(f"{ratios[k] / reference[k]:.2f}" for k in BANDS)
        print(f"| {name} | {len(arrays)} | {cells} | {bands['pixel']:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
