"""At which spatial frequencies synthetic photographs differ from real ones, for several sets at once: the
green-channel power spectra of ``fundus_diffusion.evaluation.spectrum`` (which ``evaluate.py`` reports for one set) as
ratios to the real training photographs', per frequency and band, with held-out real photographs as the control.

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
import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import add_named_set_args, dataset_arrays, named_sets
from fundus_diffusion.evaluation.spectrum import (
    BANDS,
    CONTROL,
    MIN_RESOLUTION,
    band_table,
    compare,
    noise_crossings,
    ratio_figure,
)
from fundus_diffusion.pipelines.loading import SCHEDULERS, make_sampler


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
    if args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution {args.resolution}: the coarse band (below 1/32 cycles per px) needs at least {MIN_RESOLUTION} px.")
    try:
        for sampler in samplers:
            parse_sampler(sampler)
        synthetic = {name: arrays for name, (arrays, _) in named_sets(args.synthetic, args.resolution).items()}
    except ValueError as err:
        parser.error(str(err))
    real = dataset_arrays(load_fundus_dataset(args.real), args.resolution, [], "real set")
    sets = {}
    if args.holdout:
        sets[CONTROL] = dataset_arrays(load_fundus_dataset(args.holdout), args.resolution, [], "held-out set")
    sets.update(synthetic)
    results = compare(real, sets)
    results["noise_crossing_log_snr"] = noise_crossings(real)
    print("\n".join(band_table(results["sets"])))
    print("\nlog-SNR at which the real photographs' band energy equals the noise's: " + ", ".join(
        f"{band} {value:.2f}" for band, value in results["noise_crossing_log_snr"].items()
    ))  # fmt: skip
    if args.model:
        results["last_steps"] = last_steps(args.model, samplers)
        for sampler, step in results["last_steps"].items():
            print(f"{sampler}: last step t = {step['last_timestep']}, log-SNR {step['log_snr']:.2f}")
    if args.figure:
        ratio_figure(results, args.resolution).save(args.figure)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"resolution": args.resolution, "bands": BANDS, **results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
