"""Mask metrics: overlap (Dice, IoU), connected components, disc geometry and its plausibility against real masks.

Masks are boolean (or 0/1) numpy arrays ``[H, W]`` or stacks ``[N, H, W]``. Overlap scores are per image and then
averaged; an image where both masks are empty scores 1 (nothing to find, nothing found), which matters for atrophy,
absent from every non-PM eye. Images not annotated for a mask are left out of its scores by the caller.
"""

import math
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

CUP_INSIDE_SHARE = 0.95  # a cup counts as inside its disc when this share of its pixels is (resizing moves edges)


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


def inside_fraction(inner, outer) -> float:
    """The share of ``inner``'s pixels that lie inside ``outer`` (NaN when ``inner`` is empty)."""
    inner, outer = np.asarray(inner) > 0, np.asarray(outer) > 0
    return float((inner & outer).sum() / inner.sum()) if inner.any() else float("nan")


def vertical_extent(mask) -> int:
    """The number of rows an ``[H, W]`` mask spans, top to bottom (0 when empty)."""
    rows = np.flatnonzero((np.asarray(mask) > 0).any(axis=1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def vertical_cup_to_disc(cup, disc) -> float:
    """The vertical cup-to-disc ratio (the glaucoma biomarker): the cup's vertical extent over the disc's (NaN
    without a disc)."""
    disc_height = vertical_extent(disc)
    return vertical_extent(cup) / disc_height if disc_height else float("nan")


def cup_to_disc_ratios(cups, discs) -> np.ndarray:
    """The vertical cup-to-disc ratio of each image of two stacks ``[N, H, W]`` that has a cup."""
    return np.array([vertical_cup_to_disc(c, d) for c, d in zip(_as_stack(cups), _as_stack(discs)) if c.any()])


def mask_plausibility(
    synthetic: Dict[str, np.ndarray], real: Dict[str, np.ndarray], real_annotated: Optional[Dict[str, np.ndarray]] = None
) -> Dict[str, float]:
    """Disc (and, where given, atrophy and cup) plausibility of synthetic masks against real ones.

    ``synthetic`` and ``real`` map mask names to stacks ``[N, H, W]`` at the same resolution; ``real_annotated`` maps
    a name to the ``bool [N]`` real images annotated for it (None: all), and only those are compared. Returns the
    share of synthetic (and, for reference, real) samples with exactly one disc component, the Wasserstein distances
    of disc area fraction and centroid x / y to real; with atrophy, the share of samples with atrophy whose atrophy
    touches or lies within a disc radius of the disc; with a cup, the share of cups lying inside their disc (95 % of
    their pixels or more) and the vertical cup-to-disc ratios (their Wasserstein distance to real). Without a disc
    mask there is nothing to measure: only the counts are returned.
    """
    real_annotated = real_annotated or {}

    def scored(name: str, *others: str) -> Dict[str, np.ndarray]:
        """The real stacks of ``name`` and ``others``, on the images annotated for all of them."""
        keep = np.ones(len(_as_stack(real[name])), dtype=bool)
        for n in (name, *others):
            keep &= np.asarray(real_annotated.get(n, keep), dtype=bool)
        return {n: _as_stack(real[n])[keep] for n in (name, *others)}

    report = {"n_synthetic": int(len(_as_stack(next(iter(synthetic.values())))))}
    if "disc" not in synthetic:
        return report
    real_disc = scored("disc")["disc"]
    syn_geo, real_geo = disc_geometry(synthetic["disc"]), disc_geometry(real_disc)
    report.update({
        "n_real": int(len(real_geo["components"])),
        "one_disc_component_synthetic": float(np.mean(syn_geo["components"] == 1)),
        "one_disc_component_real": float(np.mean(real_geo["components"] == 1)) if len(real_disc) else float("nan"),
        "no_disc_synthetic": float(np.mean(syn_geo["components"] == 0)),
    })  # fmt: skip
    for key in ("area_fraction", "centroid_x", "centroid_y"):
        report[f"wasserstein_disc_{key}"] = wasserstein(syn_geo[key], real_geo[key])
    if "atrophy" in synthetic:
        for name, masks in (("synthetic", synthetic), ("real", scored("atrophy", "disc") if "atrophy" in real else None)):
            if masks is None:
                continue
            near = [atrophy_near_disc(a, d) for a, d in zip(_as_stack(masks["atrophy"]), _as_stack(masks["disc"])) if a.any()]
            report[f"n_with_atrophy_{name}"] = len(near)
            report[f"atrophy_near_disc_{name}"] = float(np.mean(near)) if near else float("nan")
    if "cup" in synthetic:
        ratios = {}
        for name, masks in (("synthetic", synthetic), ("real", scored("cup", "disc") if "cup" in real else None)):
            if masks is None:
                continue
            pairs = [(c, d) for c, d in zip(_as_stack(masks["cup"]), _as_stack(masks["disc"])) if c.any()]
            inside = [inside_fraction(c, d) >= CUP_INSIDE_SHARE for c, d in pairs]
            ratios[name] = cup_to_disc_ratios(masks["cup"], masks["disc"])
            report[f"n_with_cup_{name}"] = len(pairs)
            report[f"cup_inside_disc_{name}"] = float(np.mean(inside)) if inside else float("nan")
            report[f"vertical_cdr_median_{name}"] = float(np.nanmedian(ratios[name])) if np.isfinite(ratios[name]).any() else float("nan")
        if len(ratios) == 2:
            report["wasserstein_vertical_cdr"] = wasserstein(ratios["synthetic"], ratios["real"])
    return report



def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean, standard deviation (population) and count of a list of numbers."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}


def format_value(value) -> str:
    """Three decimals, or "n/a" for a missing or undefined (NaN) statistic."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_mean_std(stat: Dict) -> str:
    """A ``summarise`` result as "mean ± std", or "mean (n = 1)" for one value, whose std of 0 is no spread measured."""
    if stat.get("n") == 1:
        return f"{format_value(stat['mean'])} (n = 1)"
    return f"{format_value(stat['mean'])} ± {format_value(stat['std'])}"
