"""RESULTS.md session 22: do two trainings of one configuration draw the same picture from the same sample seed?

Each argument is NAME=FOLDER, a generic folder the device packed back (`realism_samples-*.tgz`: metadata.csv with a
`seed` column, images/). For every two sets, over the sample seeds both hold: the Pearson correlation of the two
images drawn from the same seed (RGB, 0-1, every pixel), the same for each image against the other set's image of
the next seed (the yardstick: two different fundus pictures, which share the black surround and the field's shape),
how many same-seed pairs correlate below 0.95, the mean absolute pixel difference at the same seed, and the same two
correlations on the detail alone (grey level minus its Gaussian blur of sigma 3 px: vessels, the disc's mottling,
grain; where the whole-image correlation is mostly the field's shape and light).

    python pair_similarity.py seed1=<folder> seed2=<folder> ... > pair_similarity.json
    python pair_similarity.py --sheet same_seed_across_trainings.png "seed 1 (session 21)=<folder>" ...  # one row per
                                                                        # set, the first 6 sample seeds all sets hold
    python pair_similarity.py "seed 1 (s20)=<fullsize.png>" ...   # session 23: the 8 samples of committed sheets
    python pair_similarity.py --within seed3-3500=<folder> ...   # session 23: within each set, the detail of one
                   # sample seed against the next's (median), in the whole image, the black surround and the field
"""

import csv
import itertools
import json
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def load(folder: str) -> dict:
    """{sample seed: float32 [H, W, 3] in 0-1}. A .png instead of a folder is a set's fullsize.png
    (benchmarks/realism_pictures.py: its first 8 samples, sample seeds 0-7, in 256 px tiles, 4 to a row)."""
    if folder.endswith(".png"):
        sheet = np.asarray(Image.open(folder).convert("RGB"), np.float32) / 255
        if sheet.shape[:2] != (512, 1024):
            raise ValueError(f"{folder}: {sheet.shape[1]}x{sheet.shape[0]} px, not a fullsize.png of 8 tiles of 256 px (1024x512)")
        return {4 * r + c: sheet[256 * r : 256 * (r + 1), 256 * c : 256 * (c + 1)] for r in range(2) for c in range(4)}
    with open(f"{folder}/metadata.csv") as f:
        rows = list(csv.DictReader(f))
    return {int(r["seed"]): np.asarray(Image.open(f"{folder}/{r['file_name']}").convert("RGB"), np.float32) / 255 for r in rows}


def detail(image: np.ndarray) -> np.ndarray:
    """The grey level minus its Gaussian blur (sigma 3 px), float32 [H, W]."""
    grey = Image.fromarray((image * 255).round().astype(np.uint8)).convert("L")
    return np.asarray(grey, np.float32) - np.asarray(grey.filter(ImageFilter.GaussianBlur(3)), np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def sheet(sets: dict, path: str, columns: int = 6, side: int = 200, label: int = 130, top: int = 22) -> None:
    """The same sample seeds (columns) drawn by each set (rows), side px each."""
    seeds = sorted(set.intersection(*(set(images) for images in sets.values())))[:columns]
    canvas = Image.new("RGB", (label + side * len(seeds), top + side * len(sets)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, seed in enumerate(seeds):
        draw.text((label + j * side + 70, 5), f"sample seed {seed}", fill="black")
    for i, (name, images) in enumerate(sets.items()):
        draw.text((5, top + i * side + side // 2), name, fill="black")
        for j, seed in enumerate(seeds):
            picture = Image.fromarray((images[seed] * 255).round().astype(np.uint8)).resize((side, side), Image.LANCZOS)
            canvas.paste(picture, (label + j * side, top + i * side))
    canvas.save(path, optimize=True)


def within(images: dict) -> dict:
    """One sample seed's detail against the next seed's, median over the set: in the whole image, where both are black
    surround (every channel below 0.08) and where both are field; high values mean a pattern the samples share."""
    seeds = sorted(images)
    details = {seed: detail(images[seed]) for seed in seeds}
    dark = {seed: images[seed].max(-1) < 0.08 for seed in seeds}
    pairs = list(zip(seeds, seeds[1:]))
    return {
        "n_pairs": len(pairs),
        "detail_next_seed_correlation_median": float(np.median([correlation(details[a], details[b]) for a, b in pairs])),
        "in_surround": float(np.median([correlation(details[a][dark[a] & dark[b]], details[b][dark[a] & dark[b]]) for a, b in pairs])),
        "in_field": float(np.median([correlation(details[a][~dark[a] & ~dark[b]], details[b][~dark[a] & ~dark[b]]) for a, b in pairs])),
    }  # fmt: skip


def main(*args: str) -> None:
    mode = args[0] if args[0] in ("--sheet", "--within") else None
    sheet_path, named_folders = (args[1], args[2:]) if mode == "--sheet" else (None, args[1:] if mode else args)
    sets = {name: load(folder) for name, folder in (arg.split("=", 1) for arg in named_folders)}
    if sheet_path:
        return sheet(sets, sheet_path)
    if mode == "--within":
        return print(json.dumps({name: within(images) for name, images in sets.items()}, indent=1))
    details = {name: {seed: detail(image) for seed, image in images.items()} for name, images in sets.items()}
    result = {}
    for x, y in itertools.combinations(sets, 2):
        seeds = sorted(set(sets[x]) & set(sets[y]))
        same = [correlation(sets[x][s], sets[y][s]) for s in seeds]
        other = [correlation(sets[x][s], sets[y][t]) for s, t in zip(seeds, seeds[1:] + seeds[:1])]
        result[f"{x} vs {y}"] = {
            "n": len(seeds),
            "same_seed_correlation_median": float(np.median(same)),
            "same_seed_correlation_min": float(np.min(same)),
            "same_seed_pairs_below_0.95": int(np.sum(np.asarray(same) < 0.95)),
            "next_seed_correlation_median": float(np.median(other)),
            "same_seed_mean_abs_difference": float(np.mean([np.abs(sets[x][s] - sets[y][s]).mean() for s in seeds])),
            "detail_same_seed_correlation_median": float(np.median([correlation(details[x][s], details[y][s]) for s in seeds])),
            "detail_next_seed_correlation_median": float(
                np.median([correlation(details[x][s], details[y][t]) for s, t in zip(seeds, seeds[1:] + seeds[:1])])
            ),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
