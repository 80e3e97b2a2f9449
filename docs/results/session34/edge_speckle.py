"""Where a synthetic set's pixel-scale excess sits (RESULTS.md session 34; CPU): ``spectrum.edge_section`` (high-pass
power by distance to the disc mask's edge, as ratios to the real training photographs'), and the green-channel
pixel band of ``spectrum.spectrum_section`` (the report's), to check a packed subset against its set's report.

    python docs/results/session34/edge_speckle.py SPLIT_DIR SYNTHETIC_SET [SYNTHETIC_SET ...]

SPLIT_DIR holds train/ and test/ of scripts/split_dataset.py --stratify id_prefix (seed 0) on fundus-od. Reports
written since session 34 hold the same table (``edge_detail``).
"""

import sys

from fundus_diffusion.data.loading import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.spectrum import CONTROL, EDGE_BANDS, edge_section, spectrum_section


def main(split_dir, *sets):
    load = lambda path, desc: dataset_arrays(load_fundus_dataset(path), 256, ["disc"], desc)  # noqa: E731
    real, held_out = load(f"{split_dir}/train", "real"), load(f"{split_dir}/test", "held-out")
    print("| set | n | " + " | ".join(EDGE_BANDS) + " | pixel band (green, report's) |")
    print("|---|---:|" + "---:|" * (len(EDGE_BANDS) + 1))
    for i, path in enumerate(sets):
        synthetic = load(path, "synthetic")
        edges = edge_section(real, held_out, synthetic, 3)["sets"]
        bands = spectrum_section(real, held_out, synthetic)["sets"]
        rows = [(CONTROL, CONTROL)] if i == 0 else []
        for name, key in rows + [(path.rstrip("/").split("/")[-1], "synthetic")]:
            cells = " | ".join(f"{edges[key]['ratio'][band]:.2f}" for band in EDGE_BANDS)
            print(f"| {name} | {edges[key]['n']} | {cells} | {bands[key]['bands']['pixel']:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
