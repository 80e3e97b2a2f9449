"""Memorisation: how close is each synthetic sample to its nearest real training image?

The yardstick is the real data itself: for every real training image, the distance to its nearest *other* real
training image. A synthetic sample closer to a training image than the 1st percentile of those real-to-real
distances is flagged as a likely copy. The check runs in any feature space; the report uses two, named as such:
downsampled pixels (32 x 32 RGB in [0, 1], Euclidean) and the real-trained network's pooled features.

The generators train on left-right flipped images too, so a copy may come out mirrored; in no feature space used here is
a mirror image near its original (``benchmarks/memorisation_calibration.py``: in pixels 5 of 134 mirrored copies of
fundus-od training photographs were flagged, all of 134 unmirrored ones). Where the callers give the training images'
mirror features, every distance to "a training image" is the smaller of the distances to it and to its mirror image,
and a real image's nearest *other* image excludes its own mirror.

One refusal rule serves every report (``evaluate.py``, ``evaluate_pm.py``) and the figures built from them: the
held-out real images, which the generator never saw and so cannot copy, are checked against the training images the
same way as the synthetic samples (the *control*), and a synthetic set is refused only when, in some feature space, its
samples are flagged more often than the control (one-sided Fisher exact test, p < ``REFUSE_P``). Not "any sample
flagged": at small N the threshold is about the smallest of N real-to-real distances, and on palm-224 it flags up to
7 of 80 held-out images as copies of 20 training images, so a faultless generator would be refused as well.

The held-out images are unseen only if the generator was trained without them, which an evaluation cannot know (a
generator trained on all of ``--real``, split afterwards by ``evaluate.py``, has seen them; its copies of them would
lift every Dice measured on them). So the samples are also checked against the held-out images, with the training
images checked the same way as the control, and a set that copies held-out images more often than the training images
resemble them is refused by the same test.

Exact duplicates within the training images (a photograph stored twice) are left out of the real-to-real yardstick
and counted: one duplicate pair among a hundred images would otherwise set the threshold to 0, and nothing could be
flagged.
"""

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy.stats import fisher_exact
from torch.nn import functional as F

COPY_PERCENTILE = 1.0
PIXEL_SPACE = "downsampled pixels (32x32 RGB in [0, 1], L2)"  # the name of ``pixel_features``'s space in reports
REFUSE_P = 0.01  # refuse when samples are flagged more often than the held-out control at this significance
DUPLICATE_DISTANCE = 1e-6  # real-to-real nearest distances at most this are duplicates, not the yardstick


def pixel_features(arrays: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``uint8 [N, >=3, H, W]`` -> flattened area-downsampled RGB ``[N, 3 * size * size]`` in [0, 1]."""
    images = arrays[:, :3].float() / 255.0
    return F.adaptive_avg_pool2d(images, size).flatten(1)


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, exclude_self: bool = False, chunk: int = 1024):
    """Euclidean distance and index of each query's nearest key; ``exclude_self`` skips key ``i`` for query ``i``."""
    queries, keys = queries.double(), keys.double()  # float64: a copy must come out at distance 0, not 1e-3
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        # Not through matrix products (cdist's default for many rows): those leave identical rows 1e-6 to 1e-4 apart,
        # and an exact copy or duplicate must come out at 0.
        d = torch.cdist(queries[start : start + chunk], keys, compute_mode="donot_use_mm_for_euclid_dist")
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        best = d.min(dim=1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def nearest_training_neighbours(queries: torch.Tensor, real_train: torch.Tensor, mirrored: Optional[torch.Tensor], exclude_self=False):
    """``nearest_neighbours`` against the training features and, where given, their mirror images' (row ``i`` the
    mirror of training image ``i``): the smaller distance, the training index, and whether the mirror was nearer."""
    distances, indices = nearest_neighbours(queries, real_train, exclude_self=exclude_self)
    if mirrored is None:
        return distances, indices, np.zeros(len(distances), dtype=bool)
    mirror_distances, mirror_indices = nearest_neighbours(queries, mirrored, exclude_self=exclude_self)
    nearer = mirror_distances < distances
    return np.where(nearer, mirror_distances, distances), np.where(nearer, mirror_indices, indices), nearer


def memorisation_report(
    synthetic: torch.Tensor,
    real_train: torch.Tensor,
    percentile: float = COPY_PERCENTILE,
    real_train_mirrored: Optional[torch.Tensor] = None,
) -> Dict:
    """Nearest-real-neighbour statistics of synthetic features against real training features ``[N, D]`` (and their
    mirror images' features ``real_train_mirrored``, row ``i`` the mirror of image ``i``, where given).

    Returns the threshold (the ``percentile`` of real-to-real nearest-neighbour distances), the share and count of
    synthetic samples below it, medians of both distance sets, and per-sample distances, neighbour indices and whether
    the neighbour's mirror image was the nearer.
    """
    if len(real_train) < 2:
        raise ValueError(
            f"The copy check compares each real training image with its nearest other one, and there are "
            f"{len(real_train)}. Fix: evaluate against a real training set of at least two images (--real)."
        )
    real_to_real, _, _ = nearest_training_neighbours(real_train, real_train, real_train_mirrored, exclude_self=True)
    syn_to_real, neighbour, mirrored = nearest_training_neighbours(synthetic, real_train, real_train_mirrored)
    distinct = real_to_real[real_to_real > DUPLICATE_DISTANCE]
    threshold = float(np.percentile(distinct, percentile)) if len(distinct) else 0.0
    flagged = syn_to_real < threshold
    return {
        "threshold": threshold,
        "percentile": percentile,
        "n_synthetic": int(len(syn_to_real)),
        "n_real_train": int(len(real_train)),
        "n_real_train_duplicates": int(len(real_to_real) - len(distinct)),
        "n_flagged": int(flagged.sum()),
        "share_flagged": float(flagged.mean()),
        "median_synthetic_to_real": float(np.median(syn_to_real)),
        "median_real_to_real": float(np.median(real_to_real)),
        "mirrored_too": real_train_mirrored is not None,
        "distances": syn_to_real,
        "neighbours": neighbour,
        "mirrored": mirrored,
    }


def _flagged(found: Dict, synthetic_ids: Sequence[str], real_ids: Sequence[str]) -> List[Dict]:
    """The samples ``memorisation_report`` flagged, closest first, each with its nearest real training image."""
    order = np.argsort(found["distances"], kind="stable")
    return [
        {
            "synthetic_id": synthetic_ids[i],
            "real_id": real_ids[int(found["neighbours"][i])],
            "distance": float(found["distances"][i]),
            "mirrored": bool(found["mirrored"][i]),
        }
        for i in order
        if found["distances"][i] < found["threshold"]
    ]


def controlled_copy_check(
    synthetic: torch.Tensor,
    real_train: torch.Tensor,
    held_out: torch.Tensor,
    synthetic_ids: Sequence[str],
    real_ids: Sequence[str],
    real_train_mirrored: Optional[torch.Tensor] = None,
    held_out_ids: Optional[Sequence[str]] = None,
    held_out_mirrored: Optional[torch.Tensor] = None,
) -> Dict:
    """The copy check in one feature space with its control, as a JSON-able report section.

    ``synthetic``, ``real_train`` and ``held_out`` are ``[N, D]`` features of the synthetic samples, the generator's
    training images and held-out real images; ``real_train_mirrored`` those of the training images flipped left-right
    (row ``i`` the mirror of image ``i``), so that a mirrored copy is caught too. Returns ``memorisation_report``'s
    statistics without the per-sample arrays, ``flagged`` (each flagged sample and its nearest training image, by id),
    ``held_out_control`` (how many held-out images the same threshold flags) and ``p_above_control``
    (``copy_excess_p``). With ``held_out_ids`` also ``held_out_copies``: the samples closer to a held-out image (or
    its mirror, ``held_out_mirrored``) than the same threshold, against the training images checked the same way.
    """
    found, control = (
        memorisation_report(features, real_train, real_train_mirrored=real_train_mirrored) for features in (synthetic, held_out)
    )
    section = {k: v for k, v in found.items() if not isinstance(v, np.ndarray)}
    section["flagged"] = _flagged(found, synthetic_ids, real_ids)
    section["held_out_control"] = {
        "n_held_out": control["n_synthetic"],
        "n_flagged": control["n_flagged"],
        "share_flagged": control["share_flagged"],
    }
    section["p_above_control"] = copy_excess_p(section)
    if held_out_ids is not None:
        section["held_out_copies"] = _held_out_copies(
            synthetic, real_train, held_out, held_out_mirrored, found["threshold"], synthetic_ids, held_out_ids
        )  # fmt: skip
    return section


def _held_out_copies(synthetic, real_train, held_out, held_out_mirrored, threshold, synthetic_ids, held_out_ids) -> Dict:
    """The samples closer than ``threshold`` to a held-out image (or its mirror), and as control how many training
    images are (a generator that never saw the held-out images has no reason to come closer to them than its
    training images do)."""
    distances, neighbours, mirrored = nearest_training_neighbours(synthetic, held_out, held_out_mirrored)
    control, _, _ = nearest_training_neighbours(real_train, held_out, held_out_mirrored)
    found = {"threshold": threshold, "distances": distances, "neighbours": neighbours, "mirrored": mirrored}
    flagged = [{("held_out_id" if k == "real_id" else k): v for k, v in f.items()} for f in _flagged(found, synthetic_ids, held_out_ids)]
    n_control = int((control < threshold).sum())
    return {
        "n_held_out": int(len(held_out)),
        "n_flagged": len(flagged),
        "flagged": flagged,
        "training_control": {"n_real_train": int(len(real_train)), "n_flagged": n_control},
        "p_above_control": _excess_p(len(flagged), len(synthetic), n_control, len(real_train)),
    }


def copy_checks(
    spaces: Dict[str, Callable[[torch.Tensor], torch.Tensor]],
    arrays: Dict[str, torch.Tensor],
    synthetic_ids: Sequence[str],
    real_ids: Sequence[str],
    held_out_ids: Sequence[str],
) -> Dict[str, Dict]:
    """``controlled_copy_check`` in each feature space (``{name: images -> [N, D] features}``) of ``arrays``'
    ``"synthetic"``, ``"real"`` (the generator's training images) and ``"holdout"`` images, each compared with their
    mirror images too, held-out copies included: the report section every evaluation writes."""
    return {
        space: controlled_copy_check(
            *(features(arrays[name]) for name in ("synthetic", "real", "holdout")), synthetic_ids, real_ids,
            real_train_mirrored=features(arrays["real"].flip(-1)),
            held_out_ids=held_out_ids,
            held_out_mirrored=features(arrays["holdout"].flip(-1)),
        )
        for space, features in spaces.items()
    }


def copy_excess_p(space: Dict) -> float:
    """One-sided Fisher exact p-value that the synthetic samples of one feature space (a ``controlled_copy_check``
    section) are flagged more often than the held-out control; 1.0 when none is flagged."""
    control = space["held_out_control"]
    return _excess_p(space["n_flagged"], space["n_synthetic"], control["n_flagged"], control["n_held_out"])


def _excess_p(flagged: int, n: int, control_flagged: int, control_n: int) -> float:
    """One-sided Fisher exact p-value that ``flagged`` of ``n`` is a higher rate than ``control_flagged`` of
    ``control_n``; 1.0 when none is flagged."""
    if flagged == 0:
        return 1.0
    table = [[flagged, n - flagged], [control_flagged, control_n - control_flagged]]
    return float(fisher_exact(table, alternative="greater")[1])


def refusal(memorisation: Dict[str, Dict]) -> Optional[str]:
    """Why a synthetic set is refused, or None: in some feature space (``{space: controlled_copy_check section}``)
    its samples are flagged as copies more often than the held-out real images, or as copies of held-out images more
    often than the training images are, at one-sided Fisher p < ``REFUSE_P``.

    Copies of training images lie far below the threshold and outnumber the control's chance flags; chance flags at
    the control's rate, or a few flags against a small control, are not evidence of copying. The string starts with
    ``REFUSED:`` and names each failing space with both counts; callers add what the refusal means for their report.
    """
    reasons = []
    for space, m in memorisation.items():
        p, control = copy_excess_p(m), m["held_out_control"]
        if p < REFUSE_P:
            reasons.append(
                f"{m['n_flagged']} of {m['n_synthetic']} synthetic samples flagged as copies of the generator's "
                f"{m['n_real_train']} training images in {space}, against {control['n_flagged']} of "
                f"{control['n_held_out']} held-out real images (one-sided Fisher p = {p:.2g})"
            )
        held_out = m.get("held_out_copies")
        if held_out and held_out["p_above_control"] < REFUSE_P:
            training = held_out["training_control"]
            reasons.append(
                f"{held_out['n_flagged']} of {m['n_synthetic']} synthetic samples flagged as copies of the "
                f"{held_out['n_held_out']} held-out real images in {space}, against {training['n_flagged']} of "
                f"{training['n_real_train']} training images (one-sided Fisher p = {held_out['p_above_control']:.2g}): "
                "the generator has seen the images it is judged on. Fix: train it on the training part only "
                "(fundus-split-dataset writes both parts) and pass the other part as --holdout"
            )
    return "REFUSED: " + "; ".join(reasons) + "." if reasons else None
