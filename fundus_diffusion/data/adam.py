"""ADAM (age-related macular degeneration, Fang et al. 2022), 2020 challenge layout.

The paper used only the non-AMD training images and treats them as non-PM; AMD images are excluded unless
``include_amd`` (their PM status is unknown, so they get label -1). ADAM has disc masks (BMP, 0 = disc) and no
other mask: an ADAM-only dataset has the disc column alone, and built together with PALM its images are "not
annotated" for PALM's lesions.
"""

import os

from .readers import (
    IMAGES_ONLY_FIX,
    Candidate,
    MissingLayoutError,
    SourceScan,
    find_dir,
    images_by_stem,
    list_images,
    require_dir,
    stem,
    walk_dirs,
)
from .schema import UNKNOWN_LABEL

ADAM_LAYOUT = """ADAM 2020 layout:
  <adam_dir>/Training400/Non-AMD/N0001.jpg ...   (kept: non-PM)
  <adam_dir>/Training400/AMD/A0001.jpg ...       (kept only with --include_amd, label unknown)
  <adam_dir>/Training400/Disc_Masks/<name>.bmp  (0 = disc; also found as <adam_dir>/Disc_Masks/)"""
ADAM_CLASSES = {"Non-AMD": 0, "AMD": UNKNOWN_LABEL}


def find_adam_training(root: str):
    """The ``Training400`` folder that holds ``AMD/`` or ``Non-AMD/``, searched a few levels down."""
    dirs = walk_dirs(root, 3)
    found = find_dir(dirs, ("Training400", "Non-AMD"), ("Training400", "AMD"))
    return (os.path.dirname(found), dirs) if found else (None, dirs)


def scan_adam(root: str, include_amd: bool = False, require_masks: bool = True) -> SourceScan:
    require_dir(root, "--adam_dir", ADAM_LAYOUT)
    training, dirs = find_adam_training(root)
    if training is None:
        raise MissingLayoutError(f"The ADAM folder {root} has no Training400/Non-AMD/ or Training400/AMD/ folder. Expected the {ADAM_LAYOUT}")
    disc_dir = find_dir(dirs, ("Training400", "Disc_Masks"), ("Disc_Masks",))
    if disc_dir is None and require_masks:
        raise MissingLayoutError(
            f"The ADAM folder {root} has no Disc_Masks/ folder. Expected the {ADAM_LAYOUT}\nFix: unpack the disc and fovea "
            f"annotations beside the images, or {IMAGES_ONLY_FIX}."
        )
    scan, discs = SourceScan(root, "adam-2020", mask_names=["disc"]), images_by_stem(disc_dir)
    for folder, label in ADAM_CLASSES.items():
        for path in list_images(os.path.join(training, folder)):
            name = stem(path)
            if folder == "AMD" and not include_amd:
                scan.excluded.append((path, "AMD image (the paper kept non-AMD only; pass --include_amd to keep it)"))
            elif name not in discs and require_masks:
                scan.excluded.append((path, "no disc mask"))
            else:
                scan.candidates.append(
                    Candidate(
                        id=f"adam/Training400/{name}", source="ADAM", split="train", image_path=path,
                        masks={"disc": discs[name]} if name in discs else {}, label=label, zero_is_structure=True,
                        origin="ADAM",
                    )
                )  # fmt: skip
    return scan
