"""Fundus data: the sample schema, readers, the training view and the phantom default."""

from .loading import load_fundus_dataset
from .phantom import draw_phantom, load_phantom_dataset, phantom_rows
from .schema import (
    LABEL_NAMES,
    MASK_COLUMNS,
    MASK_NAMES,
    NULL_CLASS_ID,
    NUM_CLASS_EMBEDS,
    UNKNOWN_LABEL,
    fundus_features,
    label_to_id,
    num_channels,
    parse_mask_names,
)
from .training_view import FundusTrainingView

__all__ = [
    "FundusTrainingView",
    "load_fundus_dataset",
    "LABEL_NAMES",
    "MASK_COLUMNS",
    "MASK_NAMES",
    "NULL_CLASS_ID",
    "NUM_CLASS_EMBEDS",
    "UNKNOWN_LABEL",
    "draw_phantom",
    "fundus_features",
    "label_to_id",
    "load_phantom_dataset",
    "num_channels",
    "parse_mask_names",
    "phantom_rows",
]
