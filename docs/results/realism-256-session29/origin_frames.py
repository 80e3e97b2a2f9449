"""RESULTS.md session 29: does an origin-conditioned model draw the camera it is asked for? Each packed sample's frame
(session 27's count: the first bright row of the centre's columns, past row 25 = DRIONS-DB's black bands) against the
origin the pipeline drew it as. This session's pack was exported before `export_imagefolder` wrote the `origin`
column, so the drawn origin is found again as the pipeline drew it: `draw_origins` with the training's origin counts
(DRIONS-DB 72, DRISHTI-GS1 62 images of the split, in the model's order) and each sample's generator, seeded
`seed` (metadata.csv) as generate.py seeds it. The check of that reconstruction: it must give the report's 54 / 46 of
100. CPU, seconds.

    python origin_frames.py <synthetic set folder with images/ and metadata.csv>
"""

import csv
import json
import os
import sys
from collections import Counter

import numpy as np
import torch
from PIL import Image

from fundus_diffusion.pipelines.pipeline_fundus import draw_origins

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "realism-256-session27"))
from camera_frames import LETTERBOX_ROW, first_bright_row  # noqa: E402

ORIGINS, COUNTS, N_GENERATED = ["drions", "drishti"], [72, 62], 100


def main(synthetic_folder: str) -> dict:
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(N_GENERATED)]
    drawn = [ORIGINS[i] for i in draw_origins(COUNTS, generators, N_GENERATED, "cpu").tolist()]
    with open(os.path.join(synthetic_folder, "metadata.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    pairs, first_rows = Counter(), {origin: [] for origin in ORIGINS}
    for row in rows:
        rgb = np.asarray(Image.open(os.path.join(synthetic_folder, row["file_name"])).convert("RGB").resize((256, 256)))
        origin, first_row = drawn[int(row["seed"])], first_bright_row(rgb)
        pairs[f"drawn {origin}, frame {'drions' if first_row > LETTERBOX_ROW else 'drishti'}"] += 1
        first_rows[origin].append(first_row)
    return {
        "drawn_of_100": dict(Counter(drawn)),
        "samples_counted": len(rows),
        "drawn_vs_frame": dict(sorted(pairs.items())),
        "first_bright_row": {o: {"min": min(v), "max": max(v), "n": len(v)} for o, v in first_rows.items() if v},
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=1))
