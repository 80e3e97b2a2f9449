"""At which spatial frequencies synthetic photographs differ from real ones: radially averaged power spectra.

The two-sample judge (``evaluate.py``) says *whether* synthetic photographs can be told from real ones; this says where
their energy differs. For each image: the green channel (where the vessels have their contrast) at ``--resolution``
px, zero mean, times a Hann window (so the square's edges add no false high frequencies), its 2-D power spectrum
averaged over rings of equal frequency; per set, the geometric mean over its images. The result is each set's ratio
to the real training set's spectrum per frequency: 1 = the same energy, below 1 = missing detail. Held-out real
photographs are the control (how far from 1 a set of real photographs lies by chance). Bands: coarse (below 1/32
cycles per px: illumination and the field of view), middle (1/32 to 1/8: the disc and large vessels), fine (1/8 to
1/3: small vessels and texture, 3-8 px), pixel (above 1/3: speckle and noise at 2-3 px).

Why a band may be missing: a diffusion sampler's last step predicts the clean image from its last noisy one, and a
band whose energy is below the noise there comes out as an average, not a sample. So the benchmark also prints, per
band, the log-SNR at which the real photographs' band carries as much energy as the noise (model space, [-1, 1]), and
with ``--model`` (a saved diffusion model: only its scheduler config is read) the last timestep and its log-SNR for
each of ``--samplers`` (scheduler:steps[:timestep spacing], as ``generate.py`` takes them).

    python benchmarks/power_spectrum.py --real <split>/train --holdout <split>/test \\
        --synthetic rot50-10000-ddpm100=<set> --synthetic rot50-10000=<set> --figure spectra.png --output_json spectra.json
"""

import argparse
import json
from typing import Dict, Optional, Sequence, Tuple

import diffusers
import matplotlib
import numpy as np
import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import add_named_set_args, dataset_arrays, named_sets
from fundus_diffusion.pipelines.loading import SCHEDULERS, make_sampler

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# cycles per px; a band's ratio is the geometric mean of the ratios at its frequencies
BANDS = {"coarse": (0.0, 1 / 32), "middle": (1 / 32, 1 / 8), "fine": (1 / 8, 1 / 3), "pixel": (1 / 3, 0.5)}


def green_power(arrays: torch.Tensor, windowed: bool) -> torch.Tensor:
    """``uint8 [N, >=3, S, S]`` -> ``[N, S, S]``: the 2-D power spectrum (unshifted) of each image's green channel in
    model space ([-1, 1]), its mean removed and, ``windowed``, times a Hann window."""
    green = arrays[:, 1].double() / 127.5 - 1.0
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


def parse_sampler(spec: str) -> Tuple[str, int, Optional[str]]:
    """``scheduler:steps[:timestep spacing]`` (as ``generate.py`` takes them) -> ``(scheduler, steps, spacing)``."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 3 or parts[0] not in SCHEDULERS or not parts[1].isdigit():
        raise ValueError(f"--samplers {spec!r}: give scheduler:steps[:spacing], schedulers {', '.join(SCHEDULERS)}.")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else None


def last_steps(model: str, samplers: Sequence[str]) -> Dict[str, Dict]:
    """For each ``scheduler:steps[:spacing]``: the sampler's last timestep on ``model``'s training chain and its
    log-SNR."""
    schedule = diffusers.DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    alpha_bar = schedule.alphas_cumprod.double()
    results = {}
    for sampler in samplers:
        name, steps, spacing = parse_sampler(sampler)
        scheduler = make_sampler(schedule.config, name, spacing)
        scheduler.set_timesteps(steps)
        t = int(round(float(scheduler.timesteps[-1])))
        results[sampler] = {"last_timestep": t, "log_snr": float(torch.log(alpha_bar[t] / (1 - alpha_bar[t])))}
    return results


def table(results: Dict) -> str:
    lines = [
        "| images | n | " + " | ".join(f"{b} ({lo:.3g}-{hi:.3g} cycles/px)" for b, (lo, hi) in BANDS.items()) + " |",
        "|---|---:|" + "---:|" * len(BANDS),
    ]
    for name, row in results["sets"].items():
        lines.append(f"| {name} | {row['n']} | " + " | ".join(f"{row['bands'][b]:.2f}" for b in BANDS) + " |")
    return "\n".join(lines)


def figure(results: Dict, path: str, resolution: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in results["sets"].items():
        ax.plot(results["frequencies_cycles_per_px"], row["ratio"], label=name, ls="--" if "held-out" in name else "-")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="spatial frequency (cycles per px)",
           ylabel="power / real training photographs' power",
           title=f"green-channel power spectra at {resolution} px, against the real training set")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_named_set_args(
        parser, "The real photographs to compare with (a saved dataset).",
        "Other real photographs: the control (a saved dataset).", holdout_required=False,
    )  # fmt: skip
    parser.add_argument("--figure", default=None, help="Where to save the ratio-against-frequency plot (PNG).")
    parser.add_argument("--model", default=None, help="A saved diffusion model whose samplers' last steps to print.")
    parser.add_argument(
        "--samplers", default="dpmsolver++:20,ddpm:100,ddpm:100:linspace",
        help="With --model: comma-separated scheduler:steps[:timestep spacing].",
    )  # fmt: skip
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    samplers = [s for s in args.samplers.split(",") if s]
    if args.resolution < 128:
        parser.error(f"--resolution {args.resolution}: the coarse band (below 1/32 cycles per px) needs at least 128 px.")
    try:
        for sampler in samplers:
            parse_sampler(sampler)
        synthetic = {name: arrays for name, (arrays, _) in named_sets(args.synthetic, args.resolution).items()}
    except ValueError as err:
        parser.error(str(err))
    real = dataset_arrays(load_fundus_dataset(args.real), args.resolution, [], "real set")
    sets = {}
    if args.holdout:
        sets["held-out real (control)"] = dataset_arrays(load_fundus_dataset(args.holdout), args.resolution, [], "held-out set")
    sets.update(synthetic)
    results = compare(real, sets)
    results["noise_crossing_log_snr"] = noise_crossings(real)
    print(table(results))
    print("\nlog-SNR at which the real photographs' band energy equals the noise's: " + ", ".join(
        f"{band} {value:.2f}" for band, value in results["noise_crossing_log_snr"].items()
    ))  # fmt: skip
    if args.model:
        results["last_steps"] = last_steps(args.model, samplers)
        for sampler, step in results["last_steps"].items():
            print(f"{sampler}: last step t = {step['last_timestep']}, log-SNR {step['log_snr']:.2f}")
    if args.figure:
        figure(results, args.figure, args.resolution)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"resolution": args.resolution, "bands": BANDS, **results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
