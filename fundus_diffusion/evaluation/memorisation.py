"""Memorisation: how close is each synthetic sample to its nearest real training image?

The yardstick is the real data itself: for every real training image, the distance to its nearest *other* real
training image. A synthetic sample closer to a training image than the 1st percentile of those real-to-real
distances is flagged as a likely copy. The check runs in any feature space; the report uses two, named as such:
downsampled pixels (32 x 32 RGB in [0, 1], Euclidean) and the real-trained segmenter's pooled encoder features.
"""

from typing import Dict

import numpy as np
import torch
from torch.nn import functional as F

COPY_PERCENTILE = 1.0


def pixel_features(arrays: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``uint8 [N, >=3, H, W]`` -> flattened area-downsampled RGB ``[N, 3 * size * size]`` in [0, 1]."""
    images = arrays[:, :3].float() / 255.0
    return F.adaptive_avg_pool2d(images, size).flatten(1)


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, exclude_self: bool = False, chunk: int = 1024):
    """Euclidean distance and index of each query's nearest key; ``exclude_self`` skips key ``i`` for query ``i``."""
    queries, keys = queries.double(), keys.double()  # float64: a copy must come out at distance 0, not 1e-3
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], keys)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        best = d.min(dim=1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def memorisation_report(synthetic: torch.Tensor, real_train: torch.Tensor, percentile: float = COPY_PERCENTILE) -> Dict:
    """Nearest-real-neighbour statistics of synthetic features against real training features ``[N, D]``.

    Returns the threshold (the ``percentile`` of real-to-real nearest-neighbour distances), the share and count of
    synthetic samples below it, medians of both distance sets, and per-sample distances and neighbour indices.
    """
    if len(real_train) < 2:
        raise ValueError("The memorisation check needs at least two real training images.")
    real_to_real, _ = nearest_neighbours(real_train, real_train, exclude_self=True)
    syn_to_real, neighbour = nearest_neighbours(synthetic, real_train)
    threshold = float(np.percentile(real_to_real, percentile))
    flagged = syn_to_real < threshold
    return {
        "threshold": threshold,
        "percentile": percentile,
        "n_synthetic": int(len(syn_to_real)),
        "n_real_train": int(len(real_train)),
        "n_flagged": int(flagged.sum()),
        "share_flagged": float(flagged.mean()),
        "median_synthetic_to_real": float(np.median(syn_to_real)),
        "median_real_to_real": float(np.median(real_to_real)),
        "distances": syn_to_real,
        "neighbours": neighbour,
    }
