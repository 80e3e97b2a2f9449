"""The generic folder layout, for any dataset that is neither PALM nor ADAM (e.g. ``../shared/data/fundus-od``).

Masks here use the schema's polarity (255 = structure), one sub-folder of ``masks/`` per mask name. ``metadata.csv`` is optional; its ``label`` column
(PM / non-PM / 1 / 0 / -1) is optional too, and without it every label is unknown (-1, the null class).
"""

import csv
import os
from typing import Dict, List

from datasets import Dataset

from .readers import (
    IMAGES_ONLY_FIX,
    Candidate,
    FundusDataError,
    MissingLayoutError,
    SourceScan,
    images_by_stem,
    list_images,
    normalize_split,
    parse_label,
    require_dir,
    stem,
)
from .schema import ORIGIN_COLUMN, UNKNOWN_LABEL, check_mask_name
from .transforms import is_generated_source

FOLDER_LAYOUT = """generic folder layout:
  <folder_dir>/images/<id>.jpg (or .png, ...)
  <folder_dir>/masks/disc/<id>.png        (255 = disc, same size as the image)
  <folder_dir>/masks/<name>/<id>.png      (any other masks: cup, atrophy, ...; 255 = structure; a missing file
                                          = that image is not annotated for <name>; an all-zero file = absent)
  <folder_dir>/metadata.csv               (optional: id, and optional label, split / source_split, source; a
                                          synthetic set's origin, as fundus-generate --png writes it)"""
_ID_COLUMNS = ("id", "image", "image_name", "name", "file", "filename")


def folder_mask_names(masks_root: str) -> List[str]:
    """``disc`` then every other sub-folder of ``masks/`` (sorted): the masks of a generic folder. A folder whose
    name cannot name a mask is an error (its masks would otherwise be dropped unseen)."""
    found = sorted(e.name for e in os.scandir(masks_root) if e.is_dir() and not e.name.startswith(".")) if os.path.isdir(masks_root) else []
    for name in found:
        try:
            check_mask_name(name, where=os.path.join(masks_root, name))
        except ValueError as err:
            raise FundusDataError(f"{err} Rename the folder (it becomes the mask's name and its column {name}_mask).") from None
    return ["disc"] + [name for name in found if name != "disc"]


def scan_folder(root: str, require_masks: bool = True) -> SourceScan:
    """Every image of ``images/`` with the masks of ``masks/<name>/`` it has a file in: a missing file means "not
    annotated" for that mask, except the disc, whose absence excludes the image unless ``require_masks`` is False."""
    require_dir(root, "--folder_dir", FOLDER_LAYOUT)
    if os.path.basename(os.path.normpath(root)) == "images" and not os.path.isdir(os.path.join(root, "images")):
        raise MissingLayoutError(
            f"{root} is the images/ folder of a generic layout. Fix: give its parent, {os.path.dirname(os.path.normpath(root))}, "
            f"which holds images/ and masks/<name>/. Expected the {FOLDER_LAYOUT}"
        )
    images = list_images(require_dir(os.path.join(root, "images"), "Image folder", FOLDER_LAYOUT))
    name = os.path.basename(os.path.normpath(os.path.abspath(root)))
    masks_root = os.path.join(root, "masks")
    scan = SourceScan(root, "folder", mask_names=folder_mask_names(masks_root))
    if require_masks:
        require_dir(os.path.join(masks_root, "disc"), "Disc-mask folder", FOLDER_LAYOUT + f"\nFix: add masks/disc/, or {IMAGES_ONLY_FIX}.")
    files = {mask: images_by_stem(os.path.join(masks_root, mask)) for mask in scan.mask_names}
    metadata = read_metadata(os.path.join(root, "metadata.csv"))
    image_ids = {stem(p) for p in images}
    unmatched = set(metadata) - image_ids
    if unmatched:
        scan.notes.append(f"{root}/metadata.csv: {len(unmatched)} rows name no image (e.g. {sorted(unmatched)[0]!r})")
    for mask, found in files.items():
        if strays := sorted(set(found) - image_ids):
            scan.notes.append(
                f"{masks_root}/{mask}: {len(strays)} files name no image (e.g. {os.path.basename(found[strays[0]])!r}). "
                f"Fix: name each mask as its image (images/<id>.jpg or .png, masks/{mask}/<id>.png)"
            )
    for path in images:
        key = stem(path)
        meta = metadata.get(key, {})
        if key not in files["disc"] and require_masks:
            scan.excluded.append((path, "no disc mask"))
            continue
        # a generated set written as a folder (fundus-generate --png, export_imagefolder) keeps its synthetic:<model>
        # source, by which its pictures are known to be framed already (transforms.is_generated)
        generated = is_generated_source(meta.get("source"))
        scan.candidates.append(
            Candidate(
                id=f"folder:{name}/{key}", source=meta["source"] if generated else f"folder:{name}",
                split=meta.get("split", "train"), image_path=path,
                masks={mask: found[key] for mask, found in files.items() if key in found},
                label=meta.get("label", UNKNOWN_LABEL), zero_is_structure=False, origin=meta.get("source") or f"folder:{name}",
            )
        )  # fmt: skip
    return scan


def with_drawn_origins(dataset: Dataset, root: str) -> Dataset:
    """A generic folder's rows with the ``origin`` column of ``root/metadata.csv`` (a synthetic set from an
    origin-conditioned model, written by ``fundus-generate --png`` or ``export_imagefolder``), so that fundus-evaluate
    judges such a folder per origin as it does the saved set; unchanged where the file, the column or any row's value
    is missing: a set is judged per origin only if every sample has one."""
    origins = {key: entry.get("origin") for key, entry in read_metadata(os.path.join(root, "metadata.csv")).items()}
    keys = [row_id.rsplit("/", 1)[-1] for row_id in dataset["id"]]  # folder:<name>/<id>
    if not origins or not all(origins.values()) or any(key not in origins for key in keys):
        return dataset
    return dataset.add_column(ORIGIN_COLUMN, [origins[key] for key in keys])


def read_metadata(path: str) -> Dict[str, dict]:
    """``{id: {"label": int, "split": str, "source": str, "origin": str}}`` from an optional ``metadata.csv`` (each
    key only where its column is there)."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        id_column = next((columns[c] for c in _ID_COLUMNS if c in columns), None)
        if id_column is None:
            raise FundusDataError(
                f"{path} has no id column (columns: {reader.fieldnames}). Fix: add a column 'id' holding each "
                "image's file name without extension, or remove metadata.csv."
            )
        split_column = columns.get("split") or columns.get("source_split")
        metadata = {}
        for i, row in enumerate(reader, start=2):
            where = f"{path}, row {i}"
            entry = {name: (row[columns[name]] or "").strip() for name in ("source", "origin") if name in columns}
            if "label" in columns:
                entry["label"] = parse_label(row[columns["label"]], where)
            if split_column and (row[split_column] or "").strip():
                entry["split"] = normalize_split(row[split_column], where)
            metadata[stem(row[id_column].strip())] = entry
    return metadata
