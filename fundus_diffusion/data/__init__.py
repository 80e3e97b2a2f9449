"""Fundus data: the sample schema, readers, the training view and the phantom default."""

from .build import BuildReport, build_dataset, detect_layout, scan_sources
from .loading import load_fundus_dataset
from .phantom import draw_phantom, load_phantom_dataset, phantom_rows
from .readers import BadFileError, FundusDataError, MissingLayoutError
from .schema import (
    DEFAULT_MASK_NAMES,
    LABEL_NAMES,
    NULL_CLASS_ID,
    NUM_CLASS_EMBEDS,
    UNKNOWN_LABEL,
    annotation_column,
    annotation_flags,
    annotation_matrix,
    dataset_mask_names,
    fundus_features,
    label_to_id,
    mask_column,
    num_channels,
    parse_mask_names,
)
from .training_view import FundusTrainingView

__all__ = [
    "BadFileError",
    "BuildReport",
    "FundusDataError",
    "FundusTrainingView",
    "MissingLayoutError",
    "build_dataset",
    "detect_layout",
    "load_fundus_dataset",
    "scan_sources",
    "DEFAULT_MASK_NAMES",
    "LABEL_NAMES",
    "NULL_CLASS_ID",
    "NUM_CLASS_EMBEDS",
    "UNKNOWN_LABEL",
    "annotation_column",
    "annotation_flags",
    "annotation_matrix",
    "dataset_mask_names",
    "draw_phantom",
    "fundus_features",
    "label_to_id",
    "mask_column",
    "load_phantom_dataset",
    "num_channels",
    "parse_mask_names",
    "phantom_rows",
]
