"""The README's main job on the embedded default: train a tiny DDPM on phantoms, generate pairs, draw them.

Runs on a laptop CPU in a few minutes; nothing is downloaded. The phantoms are the package's own deterministic
fundus-like drawings (``fundus_diffusion.data.phantom``), so the result shows the whole chain, not real anatomy.
"""

import os
import shutil

import torch

from .generate import GenerationConfig, generate_dataset
from .pipelines.loading import load_fundus_pipeline
from .training import ddpm

DEMO_PARTS = ("model", "synthetic", "contact_sheet.png")


def run_demo(output_dir: str = "outputs/demo", num_samples: int = 16, seed: int = 0) -> str:
    """Train (``--preset demo``), sample ``num_samples`` PM / non-PM pairs, and return the contact sheet's path."""
    # The tiny UNet's ops are too small to share across threads: on 2 busy cores one thread runs 3-5x faster.
    torch.set_num_threads(1)
    for part in DEMO_PARTS:  # only what an earlier demo wrote here
        path = os.path.join(output_dir, part)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    model_dir = ddpm.train(ddpm.parse_args(["--preset", "demo", "--output_dir", os.path.join(output_dir, "model")]))
    pipe = load_fundus_pipeline(model_dir, scheduler="dpmsolver++", device="cpu")
    half = num_samples // 2
    config = GenerationConfig(
        model=model_dir,
        num_samples=num_samples,
        labels={"PM": num_samples - half, "non-PM": half},
        scheduler="dpmsolver++",
        num_inference_steps=20,
        guidance_scale=2.0,
        seed=seed,
        png=True,
        batch_size=num_samples,
        device="cpu",
    )
    synthetic_dir = os.path.join(output_dir, "synthetic")
    generate_dataset(pipe, config, synthetic_dir)
    sheet = os.path.join(output_dir, "contact_sheet.png")
    shutil.copyfile(os.path.join(synthetic_dir, "contact_sheet.png"), sheet)
    return sheet
