"""Where synthetic photographs' detail differs from real ones: radially averaged green-channel power spectra.

The two-sample judge (``realism``) says *whether* synthetic photographs can be told from real ones; this says where
their energy differs. For each image: the green channel (where the vessels have their contrast) in model space
([-1, 1]), zero mean, times a Hann window (so the square's edges add no false high frequencies), its 2-D power spectrum
averaged over rings of equal frequency; per set, the geometric mean over its images. The result is each set's ratio
to the real training set's spectrum per frequency: 1 = the same energy, below 1 = missing detail. Held-out real
photographs are the control (how far from 1 a set of real photographs lies by chance). Bands: coarse (below 1/32
cycles per px: illumination and the field of view), middle (1/32 to 1/8: the disc and large vessels), fine (1/8 to
1/3: small vessels and texture, 3-8 px), pixel (above 1/3: speckle and noise at 2-3 px).

``noise_crossings`` gives, per band, the log-SNR at which the real photographs' band carries as much energy as a
diffusion model's noise: a sampler whose last step lies below it returns that band as an average, not a sample.
``training_share_near_crossings`` gives, per band, the share of a noise schedule's training timesteps near that
crossing: where a model learns to draw the band.

``edge_section`` says where in the picture the finest detail differs: each pixel's high-pass power (the RGB image
minus its 3 x 3 mean, squared) averaged by distance to the disc mask's edge, as a ratio to the real training
photographs' at the same distance. The generated discs' speckle sat on their masks' edges (RESULTS.md session 34).
"""

from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from ..data.transforms import FUNDUS_THRESHOLD
from .figures import ratio_chart

# cycles per px; a band's ratio is the geometric mean of the ratios at its frequencies
BANDS = {"coarse": (0.0, 1 / 32), "middle": (1 / 32, 1 / 8), "fine": (1 / 8, 1 / 3), "pixel": (1 / 3, 0.5)}
MIN_RESOLUTION = 128  # the coarse band (below 1/32 cycles per px) holds frequencies 1-3 of a 128 px image
CONTROL = "held-out real (control)"
# signed distance to the disc mask's edge in px at the judged resolution, measured from the boundary between pixels
# (the first ring outside the disc at 0.5, the first inside at -0.5: the edge band takes three rings on each side)
EDGE_BANDS = {
    "disc, over 6 px inside": (-np.inf, -6), "3-6 px inside": (-6, -3), "the edge, within 3 px": (-3, 3),
    "3-6 px outside": (3, 6), "6-20 px outside": (6, 20), "retina, over 20 px out": (20, np.inf),
}  # fmt: skip


def green_power(arrays: torch.Tensor, windowed: bool) -> torch.Tensor:
    """``uint8 [N, >=3, S, S]`` -> ``[N, S, S]``: the 2-D power spectrum (unshifted) of each image's green channel in
    model space ([-1, 1]), its mean removed and, ``windowed``, times a Hann window."""
    green = arrays[:, 1].cpu().double() / 127.5 - 1.0
    green = green - green.mean(dim=(1, 2), keepdim=True)
    if windowed:
        window = torch.hann_window(green.shape[-1], periodic=False, dtype=torch.float64)
        green = green * window[:, None] * window[None, :]
    return torch.fft.fft2(green).abs() ** 2


def log_radial_spectra(arrays: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, >=3, S, S]`` -> ``[N, S // 2]``: the log of each image's windowed green-channel power, averaged over
    the ring of each integer frequency 0 .. S/2 - 1 (in cycles per image; divide by S for cycles per px)."""
    size = arrays.shape[-1]
    power = torch.fft.fftshift(green_power(arrays, windowed=True), dim=(-2, -1))
    centre = torch.arange(size, dtype=torch.float64) - size // 2
    ring = torch.sqrt(centre[:, None] ** 2 + centre[None, :] ** 2).round().long().flatten()
    keep = ring < size // 2
    sums = torch.zeros(len(arrays), size // 2, dtype=torch.float64).index_add_(1, ring[keep], power.flatten(1)[:, keep])
    counts = torch.bincount(ring[keep], minlength=size // 2).double()
    return torch.log(sums / counts + 1e-20)


def compare(real: torch.Tensor, sets: Dict[str, torch.Tensor]) -> Dict:
    """Per set: its spectrum's ratio to ``real``'s per frequency (geometric means over images) and per band."""
    reference = log_radial_spectra(real).mean(dim=0)
    frequencies = np.arange(len(reference)) / real.shape[-1]
    results = {"frequencies_cycles_per_px": frequencies[1:].tolist(), "sets": {}}
    for name, arrays in sets.items():
        log_ratio = (log_radial_spectra(arrays).mean(dim=0) - reference).numpy()[1:]  # the mean (frequency 0) is removed
        bands = {
            band: float(np.exp(log_ratio[(frequencies[1:] >= low) & (frequencies[1:] < high)].mean()))
            for band, (low, high) in BANDS.items()
        }
        results["sets"][name] = {"n": len(arrays), "ratio": np.exp(log_ratio).tolist(), "bands": bands}
    return results


def noise_crossings(real: torch.Tensor) -> Dict[str, float]:
    """Per band, the log-SNR at which the green channel's energy in it equals white noise's: ``log(share of the
    frequencies in the band / band energy per pixel)``, images in model space ([-1, 1]). Above it the band shows
    through the noise."""
    size = real.shape[-1]
    power = green_power(real, windowed=False).mean(dim=0) / size**4
    f = torch.fft.fftfreq(size, dtype=torch.float64).abs()
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    crossings = {}
    for band, (low, high) in BANDS.items():
        inside = (radius >= low) & (radius < (high if high < 0.5 else 1.0))  # the pixel band takes the corners too
        crossings[band] = float(torch.log(inside.double().mean() / power[inside].sum()))
    return crossings


def training_share_near_crossings(
    alphas_cumprod: torch.Tensor, crossings: Dict[str, float], width: float = 1.0
) -> Dict[str, float]:
    """Per band, the share of a noise schedule's training timesteps (drawn uniformly, as the trainer draws them)
    whose log-SNR lies within ``width`` of the band's noise crossing (``noise_crossings``): where the band is neither
    plain above the noise nor wholly under it, so where the model learns to draw it rather than copy or ignore it.
    Shares, not loss weights: min-SNR-gamma weighs the clean image's error alike at every log-SNR above ln(gamma)
    (1.6 for gamma 5, below the middle and fine crossings), so there the share is the training's emphasis."""
    alpha_bar = alphas_cumprod.double()
    log_snr = torch.log(alpha_bar / (1.0 - alpha_bar))
    return {band: float(((log_snr - value).abs() <= width).double().mean()) for band, value in crossings.items()}


def band_table(sets: Dict[str, Dict]) -> List[str]:
    """Markdown lines: each of ``compare``'s ``sets`` with its image count and ratio per band."""
    lines = [
        "| images | n | " + " | ".join(f"{b} ({lo:.3g}-{hi:.3g} cycles/px)" for b, (lo, hi) in BANDS.items()) + " |",
        "|---|---:|" + "---:|" * len(BANDS),
    ]
    return lines + [f"| {name} | {row['n']} | " + " | ".join(f"{row['bands'][b]:.2f}" for b in BANDS) + " |" for name, row in sets.items()]


def ratio_figure(results: Dict, resolution: int):
    """``compare``'s (or ``spectrum_section``'s) ratio per frequency of every set, the control dashed, as a PIL image."""
    return ratio_chart(
        f"green-channel power spectra at {resolution} px, as ratios to the real training photographs'",
        results["frequencies_cycles_per_px"],
        {name: row["ratio"] for name, row in results["sets"].items()},
        x_label="spatial frequency (cycles per px)",
        y_label="power / real training photographs' power",
        dashed=[CONTROL],
    )


def spectrum_section(real: torch.Tensor, holdout: torch.Tensor, synthetic: torch.Tensor) -> Dict:
    """The evaluation report's power-spectrum section: the held-out photographs' and the synthetic set's spectra as
    ratios to the real training set's, per frequency and band (not computed below ``MIN_RESOLUTION`` px, where the
    coarse band holds no frequency to speak of)."""
    size = real.shape[-1]
    if size < MIN_RESOLUTION:
        return {"computed": False, "reason": f"the coarse band needs images of {MIN_RESOLUTION} or more pixels a side (these: {size})"}
    return {"computed": True, "bands_cycles_per_px": BANDS, **compare(real, {CONTROL: holdout, "synthetic": synthetic})}


def edge_profile(arrays: torch.Tensor, disc_channel: int) -> Dict[str, float]:
    """``uint8 [N, C, S, S]`` -> per ``EDGE_BANDS`` band, the mean over the images with a disc of each image's mean
    high-pass power there (the RGB image in [0, 1] minus its 3 x 3 mean, squared, summed over channels), inside the
    fundus field."""
    rgb = arrays[:, :3].float() / 255
    power = ((rgb - F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), 3, 1)) ** 2).sum(1).numpy()
    field = (arrays[:, :3].amax(1) > FUNDUS_THRESHOLD).numpy()
    per_band = {band: [] for band in EDGE_BANDS}
    for image, disc, inside_field in zip(power, (arrays[:, disc_channel] > 127).numpy(), field):
        if not disc.any():
            continue
        distance = np.where(disc, 0.5 - distance_transform_edt(disc), distance_transform_edt(~disc) - 0.5)
        for band, (low, high) in EDGE_BANDS.items():
            where = (distance >= low) & (distance < high) & inside_field
            if where.any():
                per_band[band].append(float(image[where].mean()))
    return {band: float(np.mean(values)) if values else float("nan") for band, values in per_band.items()}


def edge_section(real: torch.Tensor, holdout: torch.Tensor, synthetic: torch.Tensor, disc_channel) -> Dict:
    """The report's section on where the finest detail differs (the module docstring): the held-out photographs'
    and the synthetic set's ``edge_profile`` as ratios to the real training set's (``disc_channel``: the disc
    mask's channel, None where the sets hold no disc)."""
    if disc_channel is None:
        return {"computed": False, "reason": "the sets hold no disc mask"}
    size = real.shape[-1]
    if size < MIN_RESOLUTION:
        return {"computed": False, "reason": f"the distance bands need images of {MIN_RESOLUTION} or more pixels a side (these: {size})"}
    reference = edge_profile(real, disc_channel)
    sets = {}
    for name, arrays in ((CONTROL, holdout), ("synthetic", synthetic)):
        profile = edge_profile(arrays, disc_channel)
        ratios = {band: profile[band] / reference[band] if reference[band] > 0 else float("nan") for band in EDGE_BANDS}
        sets[name] = {"n": len(arrays), "ratio": {band: None if np.isnan(r) else r for band, r in ratios.items()}}
    bands = {band: [None if np.isinf(x) else x for x in limits] for band, limits in EDGE_BANDS.items()}  # None: open
    return {"computed": True, "bands_px": bands, "sets": sets}


def edge_table(sets: Dict[str, Dict]) -> List[str]:
    """Markdown lines: each of ``edge_section``'s ``sets`` with its image count and ratio per distance band."""
    lines = ["| images | n | " + " | ".join(EDGE_BANDS) + " |", "|---|---:|" + "---:|" * len(EDGE_BANDS)]
    cell = lambda ratio: "n/a" if ratio is None else f"{ratio:.2f}"  # noqa: E731  (None: no pixel at that distance)
    return lines + [f"| {name} | {row['n']} | " + " | ".join(cell(row["ratio"][b]) for b in EDGE_BANDS) + " |" for name, row in sets.items()]
