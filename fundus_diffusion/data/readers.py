"""What every layout reader shares: the record of one found image, the errors, folder search and label tables.

A reader (``palm.py``, ``adam.py``, ``folder.py``) only lists files: it returns ``Candidate`` records and the
images it excluded, with the reason. Decoding, mask checks and writing happen once for all layouts in ``build.py``.
"""

import csv
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .schema import LABEL_NAMES, UNKNOWN_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip
# PALM training file names carry the label: P = pathologic myopia, N = normal, H = high myopia without PM.
PALM_NAME_LABELS = {"P": 1, "N": 0, "H": 0}
_PALM_NAME = re.compile(r"^([PNH])\d+$")
# Column headers that name the image in a label table (PALM's spreadsheets use "imgName").
_NAME_HEADERS = ("imgname", "image", "image_name", "name", "id", "file", "filename", "file_name")


class FundusDataError(ValueError):
    """A problem with the input data, with a message that names the file and the fix."""


class MissingLayoutError(FundusDataError, FileNotFoundError):
    """A root or a sub-folder that the expected layout needs is absent."""


class BadFileError(FundusDataError):
    """One image or mask that cannot be used; ``--skip_bad`` leaves such pairs out and lists them."""

    def __init__(self, path: str, reason: str, fix: str):
        super().__init__(f"{path}: {reason}. Fix: {fix}")
        self.path, self.reason = path, reason


@dataclass
class Candidate:
    """One image a reader found, before anything is decoded."""

    id: str
    source: str  # PALM, ADAM or folder:<name>
    split: str  # train, validation or test
    image_path: str
    # Per mask the image is annotated for: its file, or None where the annotation says "absent" (an empty mask, e.g.
    # a PALM image without an atrophy file). A mask name missing here is not annotated for this image.
    masks: Dict[str, Optional[str]]
    label: int  # 0 non-PM, 1 PM, -1 unknown
    zero_is_structure: bool  # PALM / ADAM BMPs: 0 = structure, 255 = background
    origin: str  # the dataset the image comes from (PALM, ADAM, DRISHTI-GS1, ...), for the card's citations


@dataclass
class SourceScan:
    """What a reader found under one root; ``mask_names``: the masks this source can annotate (its columns)."""

    root: str
    layout: str
    mask_names: List[str] = field(default_factory=list)
    candidates: List[Candidate] = field(default_factory=list)
    excluded: List[Tuple[str, str]] = field(default_factory=list)  # (image path, reason)
    notes: List[str] = field(default_factory=list)


# How a layout error names the way to image-only data: the trainers read built datasets and have no --images_only.
IMAGES_ONLY_FIX = (
    "for image-only work pass --images_only where the command has it (fundus-build-dataset, fundus-split-dataset, "
    "...), or build the folder once with it and give the trainer that dataset"
)


def require_dir(path: str, what: str, layout: str) -> str:
    if not os.path.isdir(path):
        kind = "does not exist" if not os.path.exists(path) else "is not a folder"
        raise MissingLayoutError(f"{what} {path} {kind}. Expected the {layout}")
    return path


def walk_dirs(root: str, max_depth: int = 5) -> List[str]:
    """All folders below ``root`` (itself included) up to ``max_depth`` levels, shallowest first, sorted."""
    found, level = [], [root]
    for _ in range(max_depth + 1):
        found.extend(level)
        level = sorted(
            e.path for d in level for e in os.scandir(d) if e.is_dir() and not e.name.startswith((".", "__MACOSX"))
        )
    return found


def find_dir(dirs: Sequence[str], *suffixes: Sequence[str]) -> Optional[str]:
    """The shallowest folder in ``dirs`` whose path ends with one of ``suffixes`` (case-insensitive parts).

    Releases unpack with extra nesting (``PALM-Training400/PALM-Training400/``), so folders are found by the end
    of their path rather than at a fixed place.
    """
    for d in dirs:
        parts = [p.lower() for p in os.path.normpath(d).split(os.sep)]
        for suffix in suffixes:
            suffix = [s.lower() for s in suffix]
            if parts[-len(suffix) :] == suffix:
                return d
    return None


def list_images(folder: Optional[str]) -> List[str]:
    if folder is None or not os.path.isdir(folder):
        return []
    return sorted(
        e.path for e in os.scandir(folder) if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )


def images_by_stem(folder: Optional[str]) -> Dict[str, str]:
    """``{stem: path}`` of the images in ``folder`` (masks are matched to images by file stem)."""
    return {stem(p): p for p in list_images(folder)}


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def normalize_split(value: str, where: str) -> str:
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise FundusDataError(f"{where}: unknown split {value!r}. Fix: use one of train, validation, test.")
    return split


def palm_name_label(name: str) -> int:
    """The label PALM's training file names carry (``P0001`` -> PM), or unknown for other names."""
    match = _PALM_NAME.match(name)
    return PALM_NAME_LABELS[match.group(1)] if match else UNKNOWN_LABEL


def parse_label(value, where: str) -> int:
    """A label cell (``PM``, ``non-PM``, 1, 0, -1 or blank) -> 1, 0 or -1."""
    if value is None:
        return UNKNOWN_LABEL
    text = str(value).strip()
    if text.lower() in ("", "-1", "-1.0", "nan", "none", "unknown"):
        return UNKNOWN_LABEL
    for i, name in enumerate(LABEL_NAMES):
        if text.lower() in (name.lower(), str(i), f"{i}.0"):
            return i
    raise FundusDataError(
        f"{where}: unknown label {value!r}. Fix: use PM or 1, non-PM or 0, and -1 or an empty cell for unknown."
    )


def read_table(path: str) -> List[List]:
    """The rows of a CSV or XLSX file (first sheet), as lists of cell values."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if ext in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError as err:
            raise ImportError(f"Reading {path} needs openpyxl: pip install openpyxl (or save the sheet as CSV).") from err
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            rows = [list(r) for r in workbook.worksheets[0].iter_rows(values_only=True)]
        finally:
            workbook.close()
        return [r for r in rows if any(c is not None and str(c).strip() for c in r)]
    raise FundusDataError(f"{path}: label tables must be .csv or .xlsx. Fix: save it as CSV with columns name,label.")


def read_label_table(path: str) -> Dict[str, int]:
    """``{image name: label}`` from a CSV / XLSX whose columns are an image name and a label.

    A header row is recognised by a name column (``imgName``, ``image``, ``name``, ``id``, ``file``) and a
    ``label`` column (other columns, such as PALM's fovea coordinates, are ignored); without a header the first two
    columns are name and label. Names may carry an extension (``P0001.jpg``) or not.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Label file {path} does not exist. Fix: pass a CSV or XLSX with columns name,label.")
    rows = read_table(path)
    if not rows:
        raise FundusDataError(f"{path} is empty. Fix: give one row per image: name,label.")
    header = [str(c).strip().lower() if c is not None else "" for c in rows[0]]
    name_col, label_col = 0, 1
    if "label" in header:
        label_col = header.index("label")
        name_col = next((header.index(h) for h in _NAME_HEADERS if h in header), 0 if label_col != 0 else 1)
        rows = rows[1:]
    labels = {}
    for i, row in enumerate(rows, start=2 if "label" in header else 1):
        if len(row) <= max(name_col, label_col) or row[name_col] is None:
            raise FundusDataError(f"{path}, row {i}: expected an image name and a label, got {row!r}.")
        labels[str(row[name_col]).strip()] = parse_label(row[label_col], f"{path}, row {i}")
    return labels


def find_label_table(folder: Optional[str]) -> Optional[str]:
    """A spreadsheet of labels shipped in ``folder`` (PALM: ``Classification Labels.xlsx``,
    ``PM_Label_and_Fovea_Location.xlsx``)."""
    if folder is None or not os.path.isdir(folder):
        return None
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name.lower()
        if entry.is_file() and "label" in name and name.endswith((".xlsx", ".csv")) and not name.startswith("~$"):
            return entry.path
    return None
