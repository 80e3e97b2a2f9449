"""At which spatial frequencies synthetic photographs differ from real ones, for several sets at once: the
green-channel power spectra of ``fundus_diffusion.evaluation.spectrum`` (which ``evaluate.py`` reports for one set) as
ratios to the real training photographs', per frequency and band, with held-out real photographs as the control.

Why a band may be missing: a diffusion sampler's last step predicts the clean image from its last noisy one, and a
band whose energy is below the noise there comes out as an average, not a sample; and a model draws a band well only
if training visits the noise levels where that band emerges. So the benchmark also prints, per band, the log-SNR at
which the real photographs' band carries as much energy as the noise (model space, [-1, 1]), and for each noise
schedule — a saved model's (``--model``: only its scheduler config is read) and those that ``train_ddpm.py`` flags
build at ``--resolution`` (``--schedules name=flags;...``) — the share of its training timesteps within 1 of each
crossing, and the last timestep and log-SNR of each of ``--samplers`` (scheduler:steps[:timestep spacing], as
``generate.py`` takes them).

    python benchmarks/power_spectrum.py --real <split>/train --holdout <split>/test \\
        --synthetic rot50-10000-ddpm100=<set> --synthetic rot50-10000=<set> --figure spectra.png --output_json spectra.json
    python benchmarks/power_spectrum.py --real <split>/train --schedules "shift64=--schedule_detail_resolution 64; \\
        interpolated=--schedule_detail_resolution 256; unshifted=--schedule_base_resolution 256"
"""

import argparse
import json
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

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
    training_share_near_crossings,
)
from fundus_diffusion.pipelines.loading import SCHEDULERS, make_sampler
from fundus_diffusion.training import ddpm


def parse_sampler(spec: str) -> Tuple[str, int, Optional[str]]:
    """``scheduler:steps[:timestep spacing]`` (as ``generate.py`` takes them) -> ``(scheduler, steps, spacing)``."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 3 or parts[0] not in SCHEDULERS or not parts[1].isdigit():
        raise ValueError(f"--samplers {spec!r}: give scheduler:steps[:spacing], schedulers {', '.join(SCHEDULERS)}.")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else None


def last_steps(schedule: diffusers.DDPMScheduler, samplers: Sequence[str]) -> Dict[str, Dict]:
    """For each ``scheduler:steps[:spacing]``: the sampler's last timestep on ``schedule``'s training chain and its
    log-SNR."""
    alpha_bar = schedule.alphas_cumprod.double()
    results = {}
    for sampler in samplers:
        name, steps, spacing = parse_sampler(sampler)
        scheduler = make_sampler(schedule.config, name, spacing)
        scheduler.set_timesteps(steps)
        t = int(round(float(scheduler.timesteps[-1])))
        results[sampler] = {"last_timestep": t, "log_snr": float(torch.log(alpha_bar[t] / (1 - alpha_bar[t])))}
    return results


def training_schedules(specs: str, resolution: int) -> Dict[str, diffusers.DDPMScheduler]:
    """``name=train_ddpm flags;...`` -> the noise schedule each builds at ``resolution`` px (``ValueError`` naming
    the item that ``train_ddpm.py`` would refuse)."""
    schedules = {}
    for item in (part.strip() for part in specs.split(";") if part.strip()):
        name, _, flags = item.partition("=")
        if not name or name in schedules:
            raise ValueError(f"--schedules {item!r}: give each schedule its own name=flags (flags may be empty).")
        argv = ["--output_dir", "unused", "--resolution", str(resolution), *shlex.split(flags)]
        try:
            schedules[name] = ddpm.make_noise_scheduler(ddpm.parse_args(argv))
        except SystemExit:
            raise ValueError(f"--schedules {item!r}: train_ddpm.py refuses these flags (above).") from None
    return schedules


def schedule_table(schedules: Dict[str, Dict]) -> List[str]:
    """Markdown lines: per schedule, the share of training timesteps near each band's crossing and each sampler's
    last log-SNR."""
    samplers = sorted({s for row in schedules.values() for s in row["last_steps"]})
    lines = [
        "| schedule | " + " | ".join(f"training near {b}" for b in BANDS) + " | "
        + " | ".join(f"{s}: last t, log-SNR" for s in samplers) + " |",
        "|---|" + "---:|" * (len(BANDS) + len(samplers)),
    ]  # fmt: skip
    for name, row in schedules.items():
        shares = " | ".join(f"{row['training_share_near_crossing'][b]:.1%}" for b in BANDS)
        steps = " | ".join(f"{row['last_steps'][s]['last_timestep']}, {row['last_steps'][s]['log_snr']:.2f}" for s in samplers)
        lines.append(f"| {name} | {shares} | {steps} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_named_set_args(parser)
    parser.add_argument("--figure", default=None, help="Where to save the ratio-against-frequency plot (PNG).")
    parser.add_argument("--model", default=None, help="A saved diffusion model whose noise schedule to print.")
    parser.add_argument(
        "--schedules", default="",
        help="Noise schedules to print, as train_ddpm.py's flags build them at --resolution: "
        "'name=flags;name=flags', e.g. 'shift64=--schedule_detail_resolution 64' (the ours preset's constant shift before session 15; 'default=' is the ours preset's).",
    )
    parser.add_argument(
        "--samplers", default="dpmsolver++:20,ddpm:100,ddpm:100:linspace",
        help="Comma-separated scheduler:steps[:timestep spacing] whose last steps to print on each schedule.",
    )  # fmt: skip
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    samplers = [s for s in args.samplers.split(",") if s]
    if args.resolution < MIN_RESOLUTION:
        parser.error(f"--resolution {args.resolution}: the coarse band (below 1/32 cycles per px) needs at least {MIN_RESOLUTION} px.")
    try:
        for sampler in samplers:
            parse_sampler(sampler)
        schedules = training_schedules(args.schedules, args.resolution)
        if args.model:
            schedules = {args.model: diffusers.DDPMScheduler.from_pretrained(args.model, subfolder="scheduler"), **schedules}
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
    results["schedules"] = {
        name: {
            "training_share_near_crossing": training_share_near_crossings(
                schedule.alphas_cumprod, results["noise_crossing_log_snr"]
            ),
            "last_steps": last_steps(schedule, samplers),
        }
        for name, schedule in schedules.items()
    }
    if schedules:
        print("\nShare of each schedule's training timesteps within 1 of a band's log-SNR crossing, and where samplers stop:")
        print("\n".join(schedule_table(results["schedules"])))
    if args.figure:
        ratio_figure(results, args.resolution).save(args.figure)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"resolution": args.resolution, "bands": BANDS, **results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
