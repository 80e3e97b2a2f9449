"""The sample schema shared by real, phantom and synthetic datasets (see DESIGN.md, "The data model")."""

from typing import Dict, Sequence, Tuple

from datasets import ClassLabel, Features, Image, Value

LABEL_NAMES: Tuple[str, ...] = ("non-PM", "PM")
UNKNOWN_LABEL = -1
# Class id fed to the UNet for "no label": unknown labels during training, and the unconditional branch of
# classifier-free guidance. The UNet therefore has len(LABEL_NAMES) + 1 class embeddings.
NULL_CLASS_ID = len(LABEL_NAMES)
NUM_CLASS_EMBEDS = len(LABEL_NAMES) + 1

MASK_NAMES: Tuple[str, ...] = ("disc", "atrophy")
MASK_COLUMNS: Dict[str, str] = {"disc": "disc_mask", "atrophy": "atrophy_mask"}
IMAGE_CHANNELS = 3


def parse_mask_names(masks) -> Tuple[str, ...]:
    """``"disc,atrophy"``, ``"none"`` (image only) or a sequence -> a validated tuple in channel order.

    Channel 3 is the disc and channel 4 the atrophy; ``()`` means an image-only (3-channel) model.
    """
    if isinstance(masks, str):
        masks = [] if masks.strip().lower() in ("", "none") else masks.split(",")
    names = [m.strip() for m in masks if m.strip()]
    unknown = [m for m in names if m not in MASK_NAMES]
    if unknown:
        raise ValueError(f"Unknown mask name(s) {unknown!r}: choose from {', '.join(MASK_NAMES)} (e.g. 'disc', 'disc,atrophy' or 'none').")
    if len(set(names)) != len(names):
        raise ValueError(f"Mask names repeat in {names!r}.")
    if names and names[0] != "disc":
        raise ValueError(f"The disc mask must come first (channel 3); got {names!r}. Use 'disc' or 'disc,atrophy'.")
    return tuple(names)


def num_channels(mask_names: Sequence[str]) -> int:
    return IMAGE_CHANNELS + len(mask_names)


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


def fundus_features():
    """The ``datasets.Features`` of one sample."""
    return Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "split": Value("string"),
            "image": Image(),
            "disc_mask": Image(),
            "atrophy_mask": Image(),
            "has_atrophy_annotation": Value("bool"),
            "label": ClassLabel(names=list(LABEL_NAMES)),
        }
    )
