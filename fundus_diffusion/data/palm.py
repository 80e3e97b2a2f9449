"""PALM (pathologic myopia, Fang et al. 2024) in its two official layouts.

2019 challenge release: training labels are in the file names (``P`` = PM, ``N`` / ``H`` = non-PM), validation
labels in ``PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx``. 2024 Scientific Data release: one folder per
split with a ``Classification Labels.xlsx`` and, besides the atrophy masks, retinal-detachment masks. Masks are
BMPs with 0 = structure. Where a split has a lesion folder, an image without a file in it has no such lesion (an
empty mask, annotated); a split without the folder is not annotated for that lesion. An image without a disc mask is
excluded (as the paper did), unless masks are not required.
"""

import os
from typing import Dict, Optional

from .readers import (
    IMAGES_ONLY_FIX,
    Candidate,
    MissingLayoutError,
    SourceScan,
    find_dir,
    find_label_table,
    images_by_stem,
    list_images,
    palm_name_label,
    read_label_table,
    require_dir,
    stem,
    walk_dirs,
)
from .schema import UNKNOWN_LABEL

PALM_2019_LAYOUT = """PALM 2019 challenge layout:
  <palm_dir>/PALM-Training400/{P,N,H}0001.jpg ...                  (label in the file name)
  <palm_dir>/PALM-Training400-Annotation-D&F/Disc_Masks/<name>.bmp    (0 = disc)
  <palm_dir>/PALM-Training400-Annotation-Lession/Lesion_Masks/Atrophy/<name>.bmp   (0 = atrophy; optional per image)
  optional: <palm_dir>/PALM-Validation400/V0001.jpg ... with <palm_dir>/PALM-Validation-GT/{Disc_Masks,
  Lesion_Masks/Atrophy, PM_Label_and_Fovea_Location.xlsx}"""

PALM_2024_LAYOUT = """PALM 2024 Scientific Data layout:
  <palm_dir>/PALM/{Training,Validation,Testing}/Images/<name>.jpg
  <palm_dir>/PALM/<split>/Disc Masks/<name>.bmp                  (0 = disc)
  <palm_dir>/PALM/<split>/Lesion Masks/Atrophy/<name>.bmp         (0 = atrophy; optional per image)
  <palm_dir>/PALM/<split>/Lesion Masks/Detachment/<name>.bmp      (0 = detachment; optional per image)
  <palm_dir>/PALM/<split>/Classification Labels.xlsx              (imgName, Label)"""

PALM_2024_SPLITS = {"Training": "train", "Validation": "validation", "Testing": "test"}
PALM_2024_LESIONS = {"atrophy": "Atrophy", "detachment": "Detachment"}  # mask name -> folder under Lesion Masks/
PALM_2024_MASKS = ["disc", *PALM_2024_LESIONS]
PALM_2019_MASKS = ["disc", "atrophy"]  # the challenge release has no detachment masks
# split folder name -> (split, image folder, disc-mask folders, atrophy folders, folder of the label spreadsheet);
# folders are path endings (see ``find_dir``); "Lession" is the release's own spelling.
PALM_2019_SPLITS = {
    "Training": (
        "train",
        ("PALM-Training400",),
        [("PALM-Training400-Annotation-D&F", "Disc_Masks")],
        [("PALM-Training400-Annotation-Lession", "Lesion_Masks", "Atrophy"), ("PALM-Training400-Annotation-Lesion", "Lesion_Masks", "Atrophy")],
        None,
    ),
    "Validation": (
        "validation",
        ("PALM-Validation400",),
        [("PALM-Validation-GT", "Disc_Masks")],
        [("PALM-Validation-GT", "Lesion_Masks", "Atrophy")],
        ("PALM-Validation-GT",),
    ),
}  # fmt: skip


def palm_2024_root(root: str) -> Optional[str]:
    """``root`` or ``root/PALM`` when it holds the 2024 split folders (``<split>/Images``)."""
    for base in (root, os.path.join(root, "PALM")):
        if any(os.path.isdir(os.path.join(base, s, "Images")) for s in PALM_2024_SPLITS):
            return base
    return None


def is_palm_2019(root: str) -> bool:
    return find_dir(walk_dirs(root, 2), ("PALM-Training400",), ("PALM-Validation400",)) is not None


def scan_palm(root: str, require_masks: bool = True) -> SourceScan:
    """Find the PALM images under ``root`` (2019 or 2024 layout, detected)."""
    require_dir(root, "--palm_dir", f"{PALM_2019_LAYOUT}\nor the {PALM_2024_LAYOUT}")
    base = palm_2024_root(root)
    if base is not None:
        scan, layout, found_disc_dir = SourceScan(root, "palm-2024", mask_names=PALM_2024_MASKS), PALM_2024_LAYOUT, False
        for folder, split in PALM_2024_SPLITS.items():
            split_dir = os.path.join(base, folder)
            if not os.path.isdir(split_dir):
                continue
            images = require_dir(os.path.join(split_dir, "Images"), "PALM image folder", PALM_2024_LAYOUT)
            found_disc_dir |= _add_split(
                scan, folder, split, list_images(images),
                disc_dir=_dir_or_none(os.path.join(split_dir, "Disc Masks")),
                lesion_dirs={
                    mask: _dir_or_none(os.path.join(split_dir, "Lesion Masks", lesion))
                    for mask, lesion in PALM_2024_LESIONS.items()
                },
                label_table=find_label_table(split_dir), require_masks=require_masks,
            )  # fmt: skip
    elif is_palm_2019(root):
        scan, layout, found_disc_dir = SourceScan(root, "palm-2019", mask_names=PALM_2019_MASKS), PALM_2019_LAYOUT, False
        dirs = walk_dirs(root)
        for folder, (split, image_name, disc_names, atrophy_names, label_dir) in PALM_2019_SPLITS.items():
            images = next((d for d in dirs if find_dir([d], image_name) and list_images(d)), None)
            if images is None:
                continue
            found_disc_dir |= _add_split(
                scan, folder, split, list_images(images),
                disc_dir=find_dir(dirs, *disc_names), lesion_dirs={"atrophy": find_dir(dirs, *atrophy_names)},
                label_table=find_label_table(find_dir(dirs, label_dir)) if label_dir else None,
                require_masks=require_masks,
            )  # fmt: skip
    else:
        raise MissingLayoutError(
            f"The PALM folder {root} holds neither PALM layout (no PALM-Training400/ or PALM-Validation400/ folder, no "
            f"PALM/<split>/Images/ folder). Expected the {PALM_2019_LAYOUT}\nor the {PALM_2024_LAYOUT}"
        )
    if require_masks and not found_disc_dir and scan.excluded:
        raise MissingLayoutError(
            f"The PALM folder {root} has {len(scan.excluded)} images but no disc-mask folder. Expected the {layout}\n"
            f"Fix: add the annotation folders, or {IMAGES_ONLY_FIX} (its images are then not annotated for the disc)."
        )
    return scan


def _dir_or_none(path: str) -> Optional[str]:
    return path if os.path.isdir(path) else None


def _add_split(scan, folder, split, images, disc_dir, lesion_dirs, label_table, require_masks) -> bool:
    """Add one split's images to ``scan``; returns whether the split has a disc-mask folder. ``lesion_dirs`` maps a
    lesion mask name to its folder (None: the split is not annotated for it)."""
    discs = images_by_stem(disc_dir)
    lesions = {mask: images_by_stem(d) for mask, d in lesion_dirs.items() if d is not None}
    table_labels: Dict[str, int] = read_label_table(label_table) if label_table else {}
    for mask, d in lesion_dirs.items():
        if d is None:
            scan.notes.append(f"PALM {folder}: no {mask} folder, so its images are not annotated for {mask}")
    unlabelled = 0
    for path in images:
        name = stem(path)
        label = table_labels.get(os.path.basename(path), table_labels.get(name, palm_name_label(name)))
        unlabelled += label == UNKNOWN_LABEL
        if name not in discs and require_masks:
            scan.excluded.append((path, "no disc mask" if disc_dir else f"no disc-mask folder for PALM {folder}"))
            continue
        scan.candidates.append(
            Candidate(
                id=f"palm/{folder}/{name}", source="PALM", split=split, image_path=path,
                masks={**({"disc": discs[name]} if name in discs else {}), **{m: f.get(name) for m, f in lesions.items()}},
                label=label, zero_is_structure=True, origin="PALM",
            )
        )  # fmt: skip
    if unlabelled:
        scan.notes.append(f"PALM {folder}: {unlabelled} images without a label (no label spreadsheet); pass --labels")
    return disc_dir is not None
