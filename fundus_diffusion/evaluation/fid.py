"""FID and KID on the RGB channels with torchmetrics and the standard Inception weights, or a stated reason why not.

torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` need torch-fidelity (which imports
torchvision; this package does not) and the FID Inception weights (``pt_inception-2015-12-05-6726825d.pth``).
torch-fidelity downloads them on first use; offline, pass the file with ``inception_weights``. When anything is
missing the result says "not computed" and why. There is no fallback to another network: a number from other
features is not FID.
"""

import importlib.util
import os
from typing import Dict, Optional

import torch

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000


def _not_computed(reason: str) -> Dict:
    return {"computed": False, "reason": reason}


def fid_unavailable_reason(inception_weights: Optional[str] = None) -> Optional[str]:
    """None if FID can be attempted, else why not."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return "torch-fidelity is not installed (pip install torch-fidelity torchvision, or torchmetrics[image])"
    try:
        import torch_fidelity  # noqa: F401  (it imports torchvision, which must match the installed torch)
    except Exception as error:
        return f"torch-fidelity is installed but cannot be imported ({type(error).__name__}: {error}); it needs a torchvision built for this torch"
    if inception_weights is not None and not os.path.isfile(inception_weights):
        return f"the Inception weights file {inception_weights} does not exist"
    return None


def _batches(images: torch.Tensor, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


def fid_kid(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    inception_weights: Optional[str] = None,
    device="cpu",
    batch_size: int = 64,
) -> Dict:
    """FID and KID between ``uint8 [N, 3, H, W]`` image sets (torchmetrics resizes them to 299 px).

    Returns ``{"computed": True, "fid", "kid_mean", "kid_std", "n_real", "n_synthetic", "kid_subset_size"}`` or
    ``{"computed": False, "reason": ...}``.
    """
    reason = fid_unavailable_reason(inception_weights)
    if reason:
        return _not_computed(reason)
    # deferred on purpose: these need torch-fidelity (the optional fid extra), checked just above
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = min(KID_MAX_SUBSET_SIZE, len(real), len(synthetic))
    if subset_size < 2:
        return _not_computed(f"KID and FID need at least 2 images per side (got {len(real)} real, {len(synthetic)} synthetic)")
    try:
        kwargs = {"feature_extractor_weights_path": inception_weights}
        fid = FrechetInceptionDistance(feature=2048, **kwargs).to(device)
        kid = KernelInceptionDistance(feature=2048, subsets=KID_SUBSETS, subset_size=subset_size, **kwargs).to(device)
    except Exception as error:  # download refused offline, corrupt file, ... : say so, never substitute
        return _not_computed(
            f"the Inception weights could not be loaded ({type(error).__name__}: {error}); "
            f"pass --inception_weights PATH to a local {INCEPTION_WEIGHTS_FILE}"
        )
    for images, is_real in ((real, True), (synthetic, False)):
        for batch in _batches(images[:, :3], batch_size):
            batch = batch.to(device)
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {
        "computed": True,
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "n_real": int(len(real)),
        "n_synthetic": int(len(synthetic)),
        "kid_subset_size": subset_size,
        "kid_subsets": KID_SUBSETS,
        "inception_weights": inception_weights or "torch-fidelity default (downloaded)",
    }
