"""Small phantom trees laid out exactly as the official releases, so the readers are tested without real data.

Each writer returns the root it wrote. PALM and ADAM masks are BMPs with 0 = structure, as released; atrophy files
exist only where there is atrophy, as in PALM. Spreadsheets need openpyxl (the ``dev`` extra).
"""

import csv
import os
from collections import Counter
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image

from fundus_diffusion.data.phantom import Phantom, draw_phantom


def _phantoms(labels: Sequence[int], size: int, seed: int) -> Iterator[Phantom]:
    for i, label in enumerate(labels):
        yield draw_phantom(seed + i, size=size, label=label)


def _save(image: Image.Image, path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **({"quality": 95} if path.endswith(".jpg") else {}))


def _save_bmp_mask(mask: Image.Image, path: str):
    """Released polarity: 0 = structure, 255 = background."""
    _save(Image.fromarray(np.where(np.asarray(mask) > 0, 0, 255).astype(np.uint8)), path)


def write_xlsx(path: str, rows: List[Tuple]):
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(list(row))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    workbook.save(path)


def _palm_names(labels: Sequence[int], prefix: str = "") -> List[str]:
    """Training names carry the label (P = PM; N and H alternate for non-PM); other splits use one ``prefix``."""
    non_pm = np.cumsum([label == 0 for label in labels])
    letters = [prefix or ("P" if label == 1 else "NH"[(non_pm[i] - 1) % 2]) for i, label in enumerate(labels)]
    counts = Counter()
    names = []
    for letter in letters:
        counts[letter] += 1
        names.append(f"{letter}{counts[letter]:04d}")
    return names


def _write_palm_split(phantoms, names, image_dir, disc_dir, atrophy_dir, skip_disc=()):
    for p, name in zip(phantoms, names):
        _save(p.image, os.path.join(image_dir, f"{name}.jpg"))
        if name not in skip_disc:
            _save_bmp_mask(p.disc_mask, os.path.join(disc_dir, f"{name}.bmp"))
        if np.asarray(p.atrophy_mask).any():
            _save_bmp_mask(p.atrophy_mask, os.path.join(atrophy_dir, f"{name}.bmp"))


def write_palm2019_tree(
    root: str, num_train: int = 6, num_validation: int = 2, size: int = 64, seed: int = 0, skip_disc: Sequence[str] = ()
) -> str:
    """``PALM-Training400/`` (labels in names), its ``-Annotation-D&F`` and ``-Annotation-Lession`` folders, and
    ``PALM-Validation400/`` with ``PALM-Validation-GT/`` (masks and ``PM_Label_and_Fovea_Location.xlsx``)."""
    train_labels = [(i + 1) % 2 for i in range(num_train)]  # P first, then alternating
    _write_palm_split(
        _phantoms(train_labels, size, seed), _palm_names(train_labels), os.path.join(root, "PALM-Training400"),
        os.path.join(root, "PALM-Training400-Annotation-D&F", "Disc_Masks"),
        os.path.join(root, "PALM-Training400-Annotation-Lession", "Lesion_Masks", "Atrophy"), skip_disc,
    )  # fmt: skip
    if num_validation:
        labels = [i % 2 for i in range(num_validation)]
        names = _palm_names(labels, prefix="V")
        gt = os.path.join(root, "PALM-Validation-GT")
        _write_palm_split(
            _phantoms(labels, size, seed + 1000), names, os.path.join(root, "PALM-Validation400"),
            os.path.join(gt, "Disc_Masks"), os.path.join(gt, "Lesion_Masks", "Atrophy"), skip_disc,
        )  # fmt: skip
        rows = [(f"{n}.jpg", label, size / 2, size / 2) for n, label in zip(names, labels)]
        write_xlsx(os.path.join(gt, "PM_Label_and_Fovea_Location.xlsx"), [("imgName", "Label", "Fovea_X", "Fovea_Y"), *rows])
    return root


def write_palm2024_tree(
    root: str, splits: Sequence[str] = ("Training", "Validation", "Testing"), num_per_split: int = 3, size: int = 64, seed: int = 0
) -> str:
    """``PALM/{Training,Validation,Testing}/{Images, Disc Masks, Lesion Masks/{Atrophy,Detachment}}`` and each
    split's ``Classification Labels.xlsx`` (imgName, Label)."""
    for k, split in enumerate(splits):
        labels = [(i + 1) % 2 for i in range(num_per_split)]
        names = _palm_names(labels, prefix={"Training": "", "Validation": "V", "Testing": "T"}[split])
        base = os.path.join(root, "PALM", split)
        _write_palm_split(
            _phantoms(labels, size, seed + 1000 * k), names, os.path.join(base, "Images"),
            os.path.join(base, "Disc Masks"), os.path.join(base, "Lesion Masks", "Atrophy"),
        )  # fmt: skip
        os.makedirs(os.path.join(base, "Lesion Masks", "Detachment"), exist_ok=True)
        rows = [(f"{n}.jpg", label) for n, label in zip(names, labels)]
        write_xlsx(os.path.join(base, "Classification Labels.xlsx"), [("imgName", "Label"), *rows])
    return root


def write_adam_tree(
    root: str, num_amd: int = 2, num_non_amd: int = 3, size: int = 64, seed: int = 0, disc_dir: str = "Training400/Disc_Masks"
) -> str:
    """``Training400/{AMD,Non-AMD}/`` with ``A0001.jpg`` / ``N0001.jpg`` and disc BMPs under ``disc_dir``."""
    for folder, letter, count in (("AMD", "A", num_amd), ("Non-AMD", "N", num_non_amd)):
        for i, p in enumerate(_phantoms([0] * count, size, seed + 100 * (letter == "A"))):
            name = f"{letter}{i + 1:04d}"
            _save(p.image, os.path.join(root, "Training400", folder, f"{name}.jpg"))
            _save_bmp_mask(p.disc_mask, os.path.join(root, disc_dir, f"{name}.bmp"))
    return root


def write_folder_tree(
    root: str, num_samples: int = 4, size: int = 64, seed: int = 0, atrophy: bool = False, labels: bool = True
) -> str:
    """``images/<id>.jpg``, ``masks/disc/<id>.png`` (255 = disc), optionally ``masks/atrophy/``, and a
    ``metadata.csv`` shaped like fundus-od's (id, source, source_split, width, height), with a ``label`` column
    when ``labels``."""
    rows = []
    for i, p in enumerate(_phantoms([i % 2 for i in range(num_samples)], size, seed)):
        key = f"phantom_{i + 1:03d}"
        _save(p.image, os.path.join(root, "images", f"{key}.jpg"))
        _save(p.disc_mask, os.path.join(root, "masks", "disc", f"{key}.png"))
        if atrophy:
            _save(p.atrophy_mask, os.path.join(root, "masks", "atrophy", f"{key}.png"))
        rows.append([key, "phantom", "test" if i == num_samples - 1 else "train", size, size] + ([p.label] if labels else []))
    with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "source", "source_split", "width", "height"] + (["label"] if labels else []))
        writer.writerows(rows)
    return root
