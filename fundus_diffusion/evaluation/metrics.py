"""Mask metrics: overlap (Dice, IoU), connected components, disc geometry and its plausibility against real masks.

Masks are boolean (or 0/1) numpy arrays ``[H, W]`` or stacks ``[N, H, W]``. Overlap scores are per image and then
averaged; an image where both masks are empty scores 1 (nothing to find, nothing found), which matters for atrophy,
absent from every non-PM eye.
"""

import math
from typing import Dict, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance


def _as_stack(masks) -> np.ndarray:
    masks = np.asarray(masks) > 0
    return masks[None] if masks.ndim == 2 else masks


def dice_per_image(pred, target) -> np.ndarray:
    """Dice ``2|A∩B| / (|A|+|B|)`` of each pair in two stacks ``[N, H, W]`` (1 where both are empty)."""
    pred, target = _as_stack(pred), _as_stack(target)
    if pred.shape != target.shape:
        raise ValueError(f"Mask stacks differ in shape: {pred.shape} vs {target.shape}.")
    inter = (pred & target).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + target.sum(axis=(1, 2))
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou_per_image(pred, target) -> np.ndarray:
    """Intersection over union of each pair (1 where both are empty)."""
    pred, target = _as_stack(pred), _as_stack(target)
    if pred.shape != target.shape:
        raise ValueError(f"Mask stacks differ in shape: {pred.shape} vs {target.shape}.")
    inter = (pred & target).sum(axis=(1, 2))
    union = (pred | target).sum(axis=(1, 2))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def count_components(mask) -> int:
    """Number of 8-connected foreground components of one ``[H, W]`` mask."""
    return int(ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3)))[1])


def disc_geometry(discs) -> Dict[str, np.ndarray]:
    """Per mask: component count, area fraction, centroid x and y (as fractions of width and height; NaN if empty)."""
    discs = _as_stack(discs)
    _, height, width = discs.shape
    area = discs.sum(axis=(1, 2))
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (discs.sum(axis=1) * xs).sum(axis=1) / area / width
        cy = (discs.sum(axis=2) * ys).sum(axis=1) / area / height
    return {
        "components": np.array([count_components(d) for d in discs]),
        "area_fraction": area / (height * width),
        "centroid_x": cx,
        "centroid_y": cy,
    }


def atrophy_near_disc(atrophy, disc) -> bool:
    """True if the atrophy touches the disc or lies within one disc radius (``sqrt(area / pi)``) of it."""
    atrophy, disc = np.asarray(atrophy) > 0, np.asarray(disc) > 0
    if not atrophy.any() or not disc.any():
        return False
    radius = np.sqrt(disc.sum() / np.pi)
    distance_to_disc = ndimage.distance_transform_edt(~disc)
    return bool(distance_to_disc[atrophy].min() <= radius + 1)  # +1: an adjacent pixel is at distance 1, "touching"


def wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    """1-D Wasserstein distance between two samples, NaNs dropped (NaN if either side is then empty)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    return float(wasserstein_distance(a, b)) if len(a) and len(b) else float("nan")


def mask_plausibility(synthetic: Dict[str, np.ndarray], real: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Disc (and, where given, atrophy) plausibility of synthetic masks against real ones.

    ``synthetic`` and ``real`` map mask names to stacks ``[N, H, W]`` at the same resolution. Returns the share of
    synthetic (and, for reference, real) samples with exactly one disc component, the Wasserstein distances of
    disc area fraction and centroid x / y to real, and, with atrophy, the share of samples with atrophy whose
    atrophy touches or lies within a disc radius of the disc.
    """
    syn_geo, real_geo = disc_geometry(synthetic["disc"]), disc_geometry(real["disc"])
    report = {
        "n_synthetic": int(len(syn_geo["components"])),
        "n_real": int(len(real_geo["components"])),
        "one_disc_component_synthetic": float(np.mean(syn_geo["components"] == 1)),
        "one_disc_component_real": float(np.mean(real_geo["components"] == 1)),
        "no_disc_synthetic": float(np.mean(syn_geo["components"] == 0)),
    }
    for key in ("area_fraction", "centroid_x", "centroid_y"):
        report[f"wasserstein_disc_{key}"] = wasserstein(syn_geo[key], real_geo[key])
    if "atrophy" in synthetic:
        for name, masks in (("synthetic", synthetic), ("real", real)):
            if "atrophy" not in masks:
                continue
            near = [atrophy_near_disc(a, d) for a, d in zip(_as_stack(masks["atrophy"]), _as_stack(masks["disc"])) if a.any()]
            report[f"n_with_atrophy_{name}"] = len(near)
            report[f"atrophy_near_disc_{name}"] = float(np.mean(near)) if near else float("nan")
    return report


def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean, standard deviation (population) and count of a list of numbers."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def format_value(value) -> str:
    """Three decimals, or "n/a" for a missing or undefined (NaN) statistic."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_mean_std(stat: Dict) -> str:
    """A ``summarise`` result as "mean ± std"."""
    return f"{format_value(stat['mean'])} ± {format_value(stat['std'])}"
