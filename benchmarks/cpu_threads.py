"""Sampling time on the CPU against torch's intra-op thread count: the measurement behind cli.py's default.

    python benchmarks/cpu_threads.py --preset tiny --resolution 32 --num_samples 8 --steps 20 --threads 1,2

Each row runs a fresh subprocess with OMP_NUM_THREADS set (torch reads it at start-up), samples a randomly
initialised FundusPipeline of the UNet preset with DPM-Solver++ and prints seconds, best of --repeats.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from fundus_diffusion.cli import run_script


def sample_once(preset: str, resolution: int, num_samples: int, steps: int, repeats: int) -> float:
    """Seconds to sample ``num_samples`` with ``steps`` DPM-Solver++ steps (best of ``repeats``), in this process."""
    from diffusers import DPMSolverMultistepScheduler  # deferred on purpose: only the child processes sample

    from fundus_diffusion import FundusPipeline
    from fundus_diffusion.models import build_unet, preset_space_to_depth

    torch.manual_seed(0)
    unet = build_unet(preset, resolution, in_channels=4, class_conditional=False)
    space_to_depth = preset_space_to_depth(preset)
    pipe = FundusPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(), mask_names=["disc"], space_to_depth=space_to_depth)
    pipe.set_progress_bar_config(disable=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        pipe(batch_size=num_samples, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - start)
    return best


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="Comma list of OMP_NUM_THREADS values.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(args):
    settings = [args.preset, args.resolution, args.num_samples, args.steps, args.repeats]
    if args.child:
        print(json.dumps({"threads": torch.get_num_threads(), "seconds": sample_once(*settings)}))
        return
    print(f"| threads | seconds ({args.num_samples} samples, {args.steps} steps, {args.preset} at {args.resolution} px) |")
    print("|---|---|")
    for threads in args.threads.split(","):
        env = {**os.environ, "OMP_NUM_THREADS": threads.strip()}
        command = [sys.executable, __file__, "--child", *sum(([f"--{k}", str(v)] for k, v in zip(
            ("preset", "resolution", "num_samples", "steps", "repeats"), settings)), [])]  # fmt: skip
        result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"| {result['threads']} | {result['seconds']:.2f} |")


if __name__ == "__main__":
    run_script(main, parse_args)
