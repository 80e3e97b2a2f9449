"""The sample schema shared by real, phantom and synthetic datasets (see DESIGN.md, "The data model").

Masks are named by the data: a dataset has one ``<name>_mask`` Image column (L, 255 = structure) and one
``has_<name>_annotation`` bool column per mask, for any name matching ``[a-z][a-z0-9_]*`` (``disc``, ``cup``,
``atrophy``, ``detachment``, ...). The features (``dataset_info.json``) are the record of which masks a dataset has:
``dataset_mask_names`` reads them back. "Not annotated" is not "empty": an unannotated mask is stored as None with its
flag False, an annotated image without the structure as an all-zero mask with its flag True.
"""

import difflib
import re
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import numpy as np
from datasets import ClassLabel, Features, Image, Value

LABEL_NAMES: Tuple[str, ...] = ("non-PM", "PM")
UNKNOWN_LABEL = -1
# Class id fed to the UNet for "no label": unknown labels during training, and the unconditional branch of
# classifier-free guidance. The UNet therefore has len(LABEL_NAMES) + 1 class embeddings.
NULL_CLASS_ID = len(LABEL_NAMES)
NUM_CLASS_EMBEDS = len(LABEL_NAMES) + 1

# The masks of the phantoms, and of datasets built before mask names came from the data (which have no
# has_disc_annotation column: see ``annotation_flags``).
DEFAULT_MASK_NAMES: Tuple[str, ...] = ("disc", "atrophy")
MASK_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
IMAGE_CHANNELS = 3
_MASK_SUFFIX = "_mask"


def mask_column(name: str) -> str:
    """The Image column of mask ``name``: ``disc`` -> ``disc_mask``."""
    return f"{name}{_MASK_SUFFIX}"


def annotation_column(name: str) -> str:
    """The bool column saying which images were annotated for mask ``name``: ``cup`` -> ``has_cup_annotation``."""
    return f"has_{name}_annotation"


def check_mask_name(name: str, where: str = "--masks") -> str:
    """``name`` if it can name a mask (a column ``<name>_mask``, a folder ``masks/<name>/``), else a ValueError."""
    if not isinstance(name, str) or not MASK_NAME_PATTERN.fullmatch(name) or name == "none":
        raise ValueError(
            f"{where}: {name!r} is not a valid mask name. Fix: use lower-case letters, digits and '_', starting with a "
            "letter (e.g. disc, cup, atrophy, detachment); 'none' alone means no masks."
        )
    return name


def parse_mask_names(masks) -> Tuple[str, ...]:
    """``"disc,cup"``, ``"none"`` (image only) or a sequence -> a validated tuple in channel order.

    Channel 3 is the first name, channel 4 the second, and so on; ``()`` means an image-only (3-channel) model. Any
    name matching ``[a-z][a-z0-9_]*`` is accepted here; whether a dataset has it is checked where the data is read.
    """
    if isinstance(masks, str):
        masks = [] if masks.strip().lower() in ("", "none") else masks.split(",")
    names = tuple(check_mask_name(m.strip()) for m in masks if str(m).strip())
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ValueError(f"--masks: {', '.join(repeated)} given more than once in {','.join(names)}. Fix: name each mask once.")
    return names


def num_channels(mask_names: Sequence[str]) -> int:
    return IMAGE_CHANNELS + len(mask_names)


def mask_channel(mask_names: Sequence[str], name: str) -> int:
    """The channel of mask ``name`` in a training tensor of ``mask_names`` (after the RGB channels)."""
    return IMAGE_CHANNELS + list(mask_names).index(name)


def label_to_id(label) -> int:
    """A label name ("PM", "non-PM"), an id (0, 1) or None / -1 (unknown) -> the class id."""
    if label is None:
        return UNKNOWN_LABEL
    if isinstance(label, str):
        if label not in LABEL_NAMES:
            raise ValueError(f"Unknown class label {label!r}: use one of {list(LABEL_NAMES)} or an id 0..{len(LABEL_NAMES) - 1}.")
        return LABEL_NAMES.index(label)
    label = int(label)
    if label != UNKNOWN_LABEL and not 0 <= label < len(LABEL_NAMES):
        raise ValueError(f"Unknown class id {label}: use 0..{len(LABEL_NAMES) - 1} ({', '.join(LABEL_NAMES)}) or -1 for unknown.")
    return label


def fundus_features(mask_names: Sequence[str] = DEFAULT_MASK_NAMES) -> Features:
    """The ``datasets.Features`` of one sample with the masks ``mask_names`` (in that column order)."""
    columns = {"id": Value("string"), "source": Value("string"), "split": Value("string"), "image": Image()}
    for name in parse_mask_names(mask_names):
        columns[mask_column(name)] = Image()
        columns[annotation_column(name)] = Value("bool")
    columns["label"] = ClassLabel(names=list(LABEL_NAMES))
    return Features(columns)


def dataset_mask_names(dataset_or_features) -> Tuple[str, ...]:
    """The masks a dataset holds, in column order: every Image column ``<name>_mask`` of its features."""
    features = getattr(dataset_or_features, "features", dataset_or_features)
    return tuple(
        column[: -len(_MASK_SUFFIX)]
        for column, feature in features.items()
        if column.endswith(_MASK_SUFFIX) and isinstance(feature, Image)
    )


def check_has_masks(dataset, mask_names: Sequence[str], what: str = "the dataset", remedy: Optional[str] = None) -> None:
    """A ValueError naming the masks of ``mask_names`` that ``dataset`` has no column for, the ones it has, a close
    name it has (a typo: ``cups`` for ``cup``) and the fix; ``remedy`` replaces the fix's "rebuild the dataset"
    (a generated set is not rebuilt but generated again)."""
    have = dataset_mask_names(dataset)
    missing = [name for name in mask_names if name not in have]
    if missing:
        typos = [f"{name}: did you mean {close[0]}?" for name in missing if (close := difflib.get_close_matches(name, have, n=1))]
        remedy = remedy or f"rebuild the dataset with the masks (a generic folder: masks/{missing[0]}/<id>.png)"
        raise ValueError(
            f"{what} has no {', '.join(missing)} mask{'s' if len(missing) > 1 else ''} (its masks: "
            f"{', '.join(have) or 'none'}{'; ' + ' '.join(typos) if typos else ''}). Fix: choose --masks among "
            f"{','.join(have) or 'none'}, or {remedy}."
        )


def annotation_flags(dataset, name: str) -> np.ndarray:
    """``bool [N]``: which rows of ``dataset`` are annotated for mask ``name``.

    The ``has_<name>_annotation`` column where there is one; datasets built before it existed (no
    ``has_disc_annotation``) count a row as annotated where its mask is not None. Nothing is decoded.
    """
    check_has_masks(dataset, (name,))
    arrow = dataset.with_format("arrow")
    column = annotation_column(name)
    if column in dataset.column_names:
        return np.asarray(arrow[column].to_pylist(), dtype=bool)
    return ~np.asarray(arrow[mask_column(name)].is_null().to_pylist(), dtype=bool)


def annotation_matrix(
    dataset, mask_names: Sequence[str], what: Optional[str] = None, remedy: Optional[str] = None
) -> np.ndarray:
    """``bool [N, M]``: per row and mask of ``mask_names``, whether the row is annotated for it; a ValueError (naming
    ``what``, with ``check_has_masks``' ``remedy``) for a mask the dataset has no column for."""
    check_has_masks(dataset, mask_names, what or "the dataset", remedy)
    flags = [annotation_flags(dataset, name) for name in mask_names]
    return np.stack(flags, axis=1) if flags else np.zeros((len(dataset), 0), dtype=bool)


def file_name(sample_id: str) -> str:
    """The last part of an id, the image's file name without its extension ("folder:fundus-od/drions_001" ->
    "drions_001")."""
    return sample_id.rsplit("/", 1)[-1]


ORIGIN_MIN_IMAGES = 5  # a file-name prefix fewer images share names a patient or an image, not a camera
# A synthetic set's column (an origin-conditioned model's samples): the origin each sample was drawn as
ORIGIN_COLUMN = "origin"


def origins(ids: List[str], sources: List[str]) -> List[str]:
    """The origin a per-source breakdown, evaluate.py's own split and the DDPM's ``--origin_conditioning`` group each
    image under (its camera or collection): the prefix of its file name before ``_`` where at least
    ``ORIGIN_MIN_IMAGES`` images share it (``folder:fundus-od/drishti_012`` -> ``drishti``: a generic folder records
    its origins only there), else its ``source`` column (``phantom``, ``palm``, ...). Names such as ``12_left.jpg`` /
    ``12_right.jpg`` share a prefix per patient: those fall back to the source, so that a split neither makes one
    stratum per patient nor holds out one eye of each."""
    prefixes = [name.split("_")[0] if "_" in name else None for name in map(file_name, ids)]
    counts = Counter(p for p in prefixes if p is not None)
    return [p if p is not None and counts[p] >= ORIGIN_MIN_IMAGES else s for p, s in zip(prefixes, sources)]


def origins_as_trained(train_ids: List[str], train_sources: List[str], ids: List[str], sources: List[str]) -> List[str]:
    """The origins of the training images and then of the images ``ids`` as a model trained on the training images
    named them (``--origin_conditioning``): ``origins`` over the training images alone, as its training view counted
    them, and for each other image its file-name prefix where that names a training origin, else its source. (On a
    small training subset a camera with fewer than ``ORIGIN_MIN_IMAGES`` images goes by its source, and so do its
    other images here.)"""
    trained = origins(train_ids, train_sources)
    named = set(trained)
    prefixes = [file_name(i).split("_")[0] for i in ids]
    return trained + [p if p in named else s for p, s in zip(prefixes, sources)]
