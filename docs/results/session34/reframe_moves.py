"""How far framing a generated sample again would move it (RESULTS.md session 34; CPU): for each sample, the square
box ``frame_pair`` used to crop before session 34 (``square_box(fundus_bbox(image))``) against the whole picture.

    python docs/results/session34/reframe_moves.py SYNTHETIC_SET [SYNTHETIC_SET ...]
"""

import sys

from fundus_diffusion.data.loading import load_fundus_dataset
from fundus_diffusion.data.transforms import fundus_bbox, square_box

for path in sys.argv[1:]:
    rows = load_fundus_dataset(path)
    boxes = [(square_box(fundus_bbox(row["image"])), (0, 0, *row["image"].size)) for row in rows]
    moved = [box for box, whole in boxes if box != whole]
    print(f"{path}: {len(moved)} of {len(rows)} moved; vertical shifts {sorted(abs(b[1]) for b in moved)} px, "
          f"horizontal {sorted(abs(b[0]) for b in moved)} px")
