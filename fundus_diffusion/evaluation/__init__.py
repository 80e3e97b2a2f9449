"""Judging synthetic fundus datasets: downstream segmentation, mask metrics, memorisation, realism, power spectra,
FID / KID.

``protocol`` runs the evaluation, ``report`` writes it, ``model_card`` puts its numbers on a model's card, ``checks``
holds the scripts' input checks, ``arrays`` the shared image stacks, ``spectrum`` where the images' detail differs;
the networks (``segmenter``, ``pm_classifier``, ``realism``) train through one loop (``recipe``) with one augmentation
module (``augment``)."""

from .fid import fid_kid
from .memorisation import memorisation_report, nearest_neighbours, pixel_features
from .metrics import (
    atrophy_near_disc,
    count_components,
    dice_per_image,
    disc_geometry,
    iou_per_image,
    mask_plausibility,
)
from .protocol import EvaluationConfig, evaluate
from .report import write_report
from .segmenter import SegmenterRecipe, SegmenterUNet, predict_masks, train_segmenter
from .splits import holdout_ids, split_by_id, split_by_ids

__all__ = [
    "EvaluationConfig",
    "SegmenterRecipe",
    "SegmenterUNet",
    "atrophy_near_disc",
    "count_components",
    "dice_per_image",
    "disc_geometry",
    "evaluate",
    "fid_kid",
    "holdout_ids",
    "iou_per_image",
    "mask_plausibility",
    "memorisation_report",
    "nearest_neighbours",
    "pixel_features",
    "predict_masks",
    "split_by_id",
    "split_by_ids",
    "train_segmenter",
    "write_report",
]
