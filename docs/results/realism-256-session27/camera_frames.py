"""RESULTS.md session 27: a second count of the samples' camera styles, by the frame instead of the colours around the
disc (quality_curve.py's `camera_styles`). fundus-od's two cameras frame the field differently once the training view
squares it (`pair_to_array`: the field's bounding box padded to a square): DRIONS-DB's 600 x 400 photographs leave
black bands above and below the field, DRISHTI-GS1's field fills the square's height. The row at which the centre's
columns (96-160 of 256) first average more than 20 (the brightest channel, 0-255) tells them apart on every
photograph; the samples' surround is not black (session 20), so the threshold sits well above it. DRIONS-DB's
photographs also carry a white number stamp at the field's left edge (session 26 saw it mirrored on samples, from the
trainer's left-right flips): the white pixels (every channel above 110) in the outer 14 columns of rows 60-200 count
it on each side, 10 or more marking a stamp. CPU, seconds.

    python camera_frames.py <fundus-od folder> <synthetic set folder with images/>
"""

import glob
import json
import os
import sys

import numpy as np
from PIL import Image

from fundus_diffusion.data.transforms import pair_to_array

LETTERBOX_ROW = 25  # first bright row at or below this: a DRISHTI-GS1 frame; past it: DRIONS-DB's bands
STAMP_PIXELS = 10  # white pixels at one edge that mark a stamp there


def first_bright_row(rgb: np.ndarray) -> int:
    profile = rgb[:, 96:160].max(-1).mean(1)
    return int(np.argmax(profile > 20))


def stamp_sides(rgb: np.ndarray) -> dict:
    white = rgb[60:200].min(-1) > 110
    left, right = int(white[:, :14].sum()) >= STAMP_PIXELS, int(white[:, -14:].sum()) >= STAMP_PIXELS
    return {"left": left, "right": right}


def side_counts(sides: list) -> dict:
    return {
        "left_only": sum(s["left"] and not s["right"] for s in sides),
        "right_only": sum(s["right"] and not s["left"] for s in sides),
        "both": sum(s["left"] and s["right"] for s in sides),
        "neither": sum(not s["left"] and not s["right"] for s in sides),
    }


def main(real_folder: str, synthetic_folder: str) -> dict:
    real, real_stamps = {}, {}
    for path in sorted(glob.glob(os.path.join(real_folder, "images", "*"))):
        rgb = pair_to_array(Image.open(path), {}, [], 256)[:3].transpose(1, 2, 0)
        name = os.path.basename(path).split(".")[0]
        real[name], real_stamps[name] = first_bright_row(rgb), stamp_sides(rgb)
    rows = {
        camera: sorted(v for k, v in real.items() if k.startswith(camera)) for camera in ("drions", "drishti")
    }
    images = [np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in sorted(glob.glob(os.path.join(synthetic_folder, "images", "*.png")))]
    synthetic = [first_bright_row(rgb) for rgb in images]
    result = {
        "real_first_bright_row": {c: {"n": len(v), "min": v[0], "max": v[-1]} for c, v in rows.items()},
        "real_separated": rows["drishti"][-1] <= LETTERBOX_ROW < rows["drions"][0],
        "synthetic_n": len(synthetic),
        "synthetic_drions_framed": sum(r > LETTERBOX_ROW for r in synthetic),
        "synthetic_first_bright_rows": sorted(synthetic),
    }
    result["synthetic_drions_share"] = result["synthetic_drions_framed"] / len(synthetic)
    result["stamp_sides"] = {
        f"real_{camera}": side_counts([v for k, v in real_stamps.items() if k.startswith(camera)]) for camera in ("drions", "drishti")
    }
    result["stamp_sides"]["synthetic_drions_framed"] = side_counts([stamp_sides(rgb) for rgb, row in zip(images, synthetic) if row > LETTERBOX_ROW])
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3]), indent=1))
