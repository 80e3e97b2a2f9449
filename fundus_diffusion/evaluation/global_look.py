"""How light spreads over the field: what the robust two-sample judge still sees once colour is standardised, one
feature at a time.

The robust judge (``realism``) standardises each channel of each image over its field of view, so a colour cast or a
global contrast carries no signal; what it is left with at coarse scale is how light is distributed over the field.
This section measures that distribution directly, on the same standardised view, so that a report says *what* of the
global look differs and not only *whether* the sets differ: per image, the shape of each channel's distribution over
the field (skew, kurtosis, 1st and 99th percentiles: the bright disc and highlights against the spread of the retina),
the mean in rings around the field's centroid (a brighter centre, a darker rim) and the correlation between channels.
Each feature gets its ROC AUC between the real photographs and the synthetic images (folded: 0.5 = no difference, 1 =
separates either way), beside the same between two random halves of the real photographs (the control); and all of
them together get a cross-validated logistic regression, a judge that sees nothing but these features.

Before measuring, specks outside the field (``clear_surround``) are cleared, or a single bright pixel in a corner
would move the field's centroid and radius.
"""

from typing import Dict

import torch
from torch.nn import functional as F

from .realism import FOV_THRESHOLD, field_of_view, roc_auc, standardise_colour, stratified_folds

RINGS = ((0.0, 0.3), (0.3, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.0))  # shares of the field's radius
FOLDS = 5
L2 = 1e-2  # the logistic regression's weight penalty on standardised features
MIN_PER_SET = 2 * FOLDS


def clear_surround(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` with every pixel outside its field set to 0. The field: where the brightest channel,
    averaged over a window of about 1/32 of the side (``2 round(side / 64) + 1`` px, at least 3), is brighter than
    ``FOV_THRESHOLD``, grown by half the window. A speck of a few pixels in the black surround falls outside it; the field's rim does not."""
    size = 2 * max(1, round(images.shape[-1] / 64)) + 1
    brightest = images.float().amax(dim=1, keepdim=True)
    field = F.avg_pool2d(brightest, size, 1, size // 2, count_include_pad=False) > FOV_THRESHOLD * 255
    field = F.max_pool2d(field.float(), size, 1, size // 2) > 0
    return torch.where(field, images, torch.zeros_like(images))


def has_field(images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``bool [N]``: which of ``uint8 [N, >=3, H, W]`` have a field of view once specks in the surround are cleared
    (in batches, as ``field_features``)."""
    return torch.cat([
        field_of_view(clear_surround(images[i : i + batch_size, :3]).float() / 255).flatten(1).any(dim=1)
        for i in range(0, len(images), batch_size)
    ])  # fmt: skip


def field_features(images: torch.Tensor, batch_size: int = 64) -> Dict[str, torch.Tensor]:
    """Per image of ``uint8 [N, >=3, H, W]``, each feature (``[N]`` float64) of how light spreads over its field,
    measured on the robust judge's view (each channel standardised to mean 0, std 1 over the field), in batches (the
    float64 copies of a whole set would not fit in memory). Every image needs a field (``has_field``)."""
    batches = [_features_of_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]}


def _features_of_batch(images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``field_features`` of one batch."""
    x = clear_surround(images[:, :3]).double() / 255
    fov = field_of_view(x)
    z, weight = standardise_colour(x, fov), fov[:, 0].double()
    n = weight.sum(dim=(1, 2)).clamp(min=1)
    yy, xx = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in x.shape[-2:]), indexing="ij")
    cy, cx = (weight * yy).sum(dim=(1, 2)) / n, (weight * xx).sum(dim=(1, 2)) / n
    radius = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2).sqrt()
    radius = radius / (radius * weight).amax(dim=(1, 2)).clamp(min=1)[:, None, None]
    features = {}
    for c, name in enumerate(("red", "green", "blue")):
        inside = [z[i, c][fov[i, 0]] for i in range(len(x))]
        features[f"{name} skew"] = torch.stack([(v**3).mean() for v in inside])
        features[f"{name} kurtosis"] = torch.stack([(v**4).mean() for v in inside])
        features[f"{name} 1st percentile"] = torch.stack([v.quantile(0.01) for v in inside])
        features[f"{name} 99th percentile"] = torch.stack([v.quantile(0.99) for v in inside])
        for low, high in RINGS:
            upper = radius < high if high < 1 else torch.ones_like(weight, dtype=torch.bool)  # the rim itself: radius 1
            ring = weight * ((radius >= low) & upper).double()
            mean = (z[:, c] * ring).sum(dim=(1, 2)) / ring.sum(dim=(1, 2)).clamp(min=1)
            features[f"{name} mean at {low:g}-{high:g} of the radius"] = mean
    for a, b in ((0, 1), (0, 2), (1, 2)):
        features[f"correlation {'rgb'[a]}-{'rgb'[b]}"] = (z[:, a] * z[:, b]).sum(dim=(1, 2)) / n
    return features


def folded_auc(first: torch.Tensor, second: torch.Tensor) -> float:
    """How well one feature separates the sets, whichever is higher: ``roc_auc`` folded to 0.5-1."""
    return abs(roc_auc(first, second) - 0.5) + 0.5


def _logistic_weights(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Weights (bias last) of an L2-penalised logistic regression of ``y`` on ``x``, fitted with LBFGS."""
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y) + L2 * (w[:-1] ** 2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach()


def combined_auc(first: Dict[str, torch.Tensor], second: Dict[str, torch.Tensor], seed: int = 0) -> Dict:
    """All features at once: a logistic regression (features standardised on the training folds) trained to tell
    ``second`` from ``first``, ROC AUC on each of ``FOLDS`` stratified held-out folds."""
    names = list(first)
    x = torch.cat([torch.stack([first[k] for k in names], 1), torch.stack([second[k] for k in names], 1)]).double()
    y = torch.cat([torch.zeros(len(first[names[0]])), torch.ones(len(second[names[0]]))]).double()
    fold = stratified_folds(y.long(), FOLDS, torch.Generator().manual_seed(seed))
    aucs = []
    for k in range(FOLDS):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-9)
        w = _logistic_weights((x[train] - mean) / std, y[train])
        scores = (x[test] - mean) / std @ w[:-1] + w[-1]
        aucs.append(roc_auc(scores[y[test] == 0], scores[y[test] == 1]))  # the regression's own direction: unfolded
    per_fold = torch.tensor(aucs)
    return {"mean": float(per_fold.mean()), "std": float(per_fold.std()), "per_fold": aucs, "n_features": len(names)}


def global_look_section(real: torch.Tensor, synthetic: torch.Tensor, seed: int = 0) -> Dict:
    """The evaluation report's global-look section: every feature's AUC between ``real`` and ``synthetic``
    (``uint8 [N, >=3, H, W]``; the real photographs pooled as the two-sample test pools them), their means, and the
    logistic regression on all of them. The control does the same between real photographs only: as many as the
    synthetic images (at most half of the real ones) against the rest, so that both comparisons have alike sizes
    (a folded AUC leans above 0.5 the more, the smaller a side). Images without a field (black, or too dark for
    ``FOV_THRESHOLD`` anywhere) are left out and counted. Rows are sorted by the real-vs-synthetic AUC."""
    with_field = {name: has_field(images) for name, images in (("real", real), ("synthetic", synthetic))}
    real, synthetic = real[with_field["real"]], synthetic[with_field["synthetic"]]
    left_out = {f"n_{name}_without_field": int((~kept).sum()) for name, kept in with_field.items()}
    if len(synthetic) < MIN_PER_SET or len(real) < 2 * MIN_PER_SET:
        return {
            "computed": False,
            "reason": f"it needs {MIN_PER_SET} synthetic and {2 * MIN_PER_SET} real images with a field of view or "
            f"more (got {len(synthetic)} and {len(real)})",
            **left_out,
        }
    of_real, of_synthetic = field_features(real), field_features(synthetic)
    as_synthetic = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed)) < min(
        len(synthetic), len(real) // 2
    )
    control_real = {k: v[~as_synthetic] for k, v in of_real.items()}
    control_synthetic = {k: v[as_synthetic] for k, v in of_real.items()}
    rows = [
        {
            "feature": name,
            "real": float(of_real[name].mean()),
            "synthetic": float(of_synthetic[name].mean()),
            "auc": folded_auc(of_real[name], of_synthetic[name]),
            "auc_real_vs_real": folded_auc(control_real[name], control_synthetic[name]),
        }
        for name in of_real
    ]
    return {
        "computed": True,
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        **left_out,
        "n_control": [int((~as_synthetic).sum()), int(as_synthetic.sum())],
        "features": sorted(rows, key=lambda row: -row["auc"]),
        "combined": combined_auc(of_real, of_synthetic, seed),
        "combined_real_vs_real": combined_auc(control_real, control_synthetic, seed),
    }
