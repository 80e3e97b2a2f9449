"""Images from masks and masks from images with one trained joint model (issue 15), on a held-out real split.

    python benchmarks/conditional_sampling.py --model runs/ddpm-256 --real data/split/train \\
        --holdout data/split/test --scheduler ddpm --num_inference_steps 250 --resample_steps 4 \\
        --output_dir reports/conditional-ddpm-256
    python scripts/evaluate.py --real data/split/train --holdout data/split/test \\
        --synthetic reports/conditional-ddpm-256/mask_to_image --output_dir reports/conditional-ddpm-256/evaluation

(a) mask -> image: each held-out image's expert masks, cropped and resized as for training, are written as a
``--masks_from`` folder (``given_masks/masks/<name>/<id>.png``; a mask the image is not annotated for is left out, so
the model draws it) and an image is drawn for each set
(``fundus_diffusion.generate``, so ``mask_to_image/`` is a synthetic set in the schema: the ``evaluate.py`` run above
gives its two-sample realism test). A segmenter trained on the real training split with ``evaluate.py``'s recipe finds
the masks in those images: Dice against the given masks, next to the same segmenter's Dice on the real held-out
photographs (what a faithful image could reach).
(b) image -> mask: the held-out photographs are given and their masks drawn: Dice against the experts', next to the
real-trained segmenter's.
Every Dice is the mean over the held-out images annotated for the mask (DRISHTI-GS1's for the cup of fundus-od).
Both report the sampling steps, the UNet passes per image and the seconds per image (mask -> image includes writing
the dataset). Prints a table and writes ``conditional_sampling.json`` to --output_dir.
"""

import argparse
import json
import os
import re
import time

import numpy as np
import torch
from PIL import Image

from fundus_diffusion.cli import run_script
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.data.schema import annotation_matrix, parse_mask_names
from fundus_diffusion.evaluation.arrays import dataset_arrays, default_device
from fundus_diffusion.evaluation.metrics import dice_per_image
from fundus_diffusion.evaluation.protocol import EvaluationConfig, resolve_split, segmenter_scores
from fundus_diffusion.evaluation.segmenter import predict_masks
from fundus_diffusion.generate import (
    OWN_SCHEDULER,
    TIMESTEP_SPACINGS,
    GenerationConfig,
    generate_dataset,
    read_mask_sets,
)
from fundus_diffusion.pipelines.loading import SCHEDULERS, load_fundus_pipeline

RESULTS_FILE = "conditional_sampling.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A saved FundusPipeline folder or Hub id.")
    parser.add_argument("--real", required=True, help="The real training split (anything load_fundus_dataset accepts).")
    parser.add_argument("--holdout", default=None, help="The held-out real split. Default: a part of --real, by id.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--masks", default=None, help="Masks to give and score, e.g. disc. Default: the model's.")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), default=None, help="Default: the model's own.")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Default: the full training chain.")
    parser.add_argument(
        "--timestep_spacing", choices=TIMESTEP_SPACINGS, default=None,
        help="Where the steps fall on the training chain (generate.py's flag). Default: as the model's scheduler was saved.",
    )  # fmt: skip
    parser.add_argument("--resample_steps", type=int, default=0, help="RePaint resampling (ddpm or ddim only).")
    parser.add_argument("--max_images", type=int, default=None, help="Use the first N held-out images only.")
    parser.add_argument(
        "--segmenter_steps", type=int, default=EvaluationConfig.segmenter_steps,
        help="Training steps of the real-trained segmenter.",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (image i uses seed + i) and segmenter seed.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    return parser.parse_args(argv)


def write_given_masks(arrays: torch.Tensor, annotated: torch.Tensor, ids, mask_names, folder: str) -> None:
    """Held-out masks (channels 3.. of ``uint8 [N, 3 + M, R, R]`` arrays) as a ``--masks_from`` folder, each where
    its image is annotated for it (``annotated``: ``bool [N, M]``)."""
    for m, name in enumerate(mask_names):
        os.makedirs(os.path.join(folder, "masks", name), exist_ok=True)
        for array, sample_id in zip(arrays[annotated[:, m]], [i for i, a in zip(ids, annotated[:, m]) if a]):
            Image.fromarray(array[3 + m].numpy(), mode="L").save(os.path.join(folder, "masks", name, f"{sample_id}.png"))


def mean_dice(predicted: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, mask_names) -> dict:
    """``{mask: mean per-image Dice}`` of ``bool [N, M, H, W]`` predictions against targets over the images
    ``annotated`` (``bool [N, M]``) marks for the mask; None for a mask no image is annotated for."""
    scores = {}
    for m, name in enumerate(mask_names):
        scored = annotated[:, m].cpu()
        dice = dice_per_image(predicted[scored, m].cpu().numpy(), target[scored, m].cpu().numpy())
        scores[name] = float(dice.mean()) if len(dice) else None
    return scores


def masks_from_images(pipe, holdout: torch.Tensor, mask_names, args) -> torch.Tensor:
    """``bool [N, M, R, R]``: the model's masks for each held-out photograph (image ``i`` drawn with seed + i)."""
    inferred = []
    for first in range(0, len(holdout), args.batch_size):
        images = list(holdout[first : first + args.batch_size, :3])
        out = pipe(
            batch_size=len(images),
            image=images,
            generator=[torch.Generator("cpu").manual_seed(args.seed + first + k) for k in range(len(images))],
            num_inference_steps=args.num_inference_steps,
            resample_steps=args.resample_steps,
            output_type="pt",
        )
        inferred += [torch.stack([masks[name] > 0.5 for name in mask_names]) for masks in out.masks]
    return torch.stack(inferred)


def main(args):
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        raise FileExistsError(f"--output_dir {args.output_dir} is not empty; choose a new folder.")
    device = args.device or default_device()
    pipe = load_fundus_pipeline(args.model, scheduler=args.scheduler, device=device, dtype=args.dtype)
    if not hasattr(pipe, "scheduler"):
        raise ValueError(f"{args.model} is a GAN: sampling from given channels needs a diffusion model (FundusPipeline).")
    pipe.set_progress_bar_config(disable=True)
    model_masks = list(pipe.config.mask_names)
    mask_names = list(parse_mask_names(args.masks)) if args.masks else model_masks
    unknown = [name for name in mask_names if name not in model_masks]
    if unknown or not mask_names:
        raise ValueError(f"--masks {args.masks}: choose among the model's masks {model_masks}.")
    resolution = pipe.native_resolution
    holdout = load_fundus_dataset(args.holdout) if args.holdout else None
    real, holdout, split_how = resolve_split(load_fundus_dataset(args.real), holdout, EvaluationConfig(masks=mask_names))
    if args.max_images:
        holdout = holdout.select(range(min(args.max_images, len(holdout))))
    # Folder-safe ids for the --masks_from layout, kept by the generated set, which comes in id order: so does holdout.
    ids = [re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id) for sample_id in holdout["id"]]
    if len(set(ids)) != len(ids):
        raise ValueError("Held-out ids collide once made folder-safe; give a held-out split with distinct ids.")
    holdout, ids = holdout.select(np.argsort(ids, kind="stable")), sorted(ids)
    arrays = {
        "real": dataset_arrays(real, resolution, mask_names, "real training set"),
        "holdout": dataset_arrays(holdout, resolution, mask_names, "held-out set"),
    }
    annotated = {
        "real": torch.from_numpy(annotation_matrix(real, mask_names, "The real training set")),
        "holdout": torch.from_numpy(annotation_matrix(holdout, mask_names, "The held-out set")),
    }
    os.makedirs(args.output_dir, exist_ok=True)

    # the real-trained segmenter, scored on the real held-out photographs: the reference for both directions
    scores, segmenter, _ = segmenter_scores(
        arrays["real"].to(device), arrays["holdout"].to(device), mask_names, args.segmenter_steps, args.seed, device,
        desc="real training split", train_annotated=annotated["real"], holdout_annotated=annotated["holdout"],
    )  # fmt: skip
    on_real = {name: scores[name]["dice"] if np.isfinite(scores[name]["dice"]) else None for name in mask_names}

    # (a) mask -> image, through generate.py's --masks_from code
    given_dir = os.path.join(args.output_dir, "given_masks")
    write_given_masks(arrays["holdout"], annotated["holdout"], ids, mask_names, given_dir)
    mask_sets = read_mask_sets(given_dir)
    config = GenerationConfig(
        model=args.model, num_samples=len(mask_sets.ids), scheduler=args.scheduler or OWN_SCHEDULER,
        num_inference_steps=args.num_inference_steps, seed=args.seed, batch_size=args.batch_size, device=device,
        timestep_spacing=args.timestep_spacing, masks_from=mask_sets.name, resample_steps=args.resample_steps,
    )  # fmt: skip
    start = time.perf_counter()
    generated = generate_dataset(pipe, config, os.path.join(args.output_dir, "mask_to_image"), mask_sets=mask_sets)
    mask_to_image_seconds = (time.perf_counter() - start) / len(generated)
    generated = dataset_arrays(generated, resolution, mask_names, "generated set")
    found = predict_masks(segmenter, generated.to(device))
    mask_to_image = mean_dice(found, generated[:, 3:] > 127, annotated["holdout"], mask_names)

    # (b) image -> mask, with the sampler generate_dataset set up for (a)
    start = time.perf_counter()
    inferred = masks_from_images(pipe, arrays["holdout"], mask_names, args)
    image_to_mask_seconds = (time.perf_counter() - start) / len(inferred)
    image_to_mask = mean_dice(inferred, arrays["holdout"][:, 3:] > 127, annotated["holdout"], mask_names)

    steps = len(pipe.scheduler.timesteps)
    results = {
        "model": config.model_name,
        "scheduler": type(pipe.scheduler).__name__,
        "num_inference_steps": steps,
        "timestep_spacing": pipe.scheduler.config.timestep_spacing,
        "resample_steps": args.resample_steps,
        "unet_passes_per_image": steps + args.resample_steps * (steps - 1),
        "resolution": resolution,
        "masks": mask_names,
        "n_train": len(real),
        "n_holdout": len(holdout),
        "n_holdout_annotated": dict(zip(mask_names, annotated["holdout"].sum(dim=0).tolist())),
        "holdout_split": split_how,
        "segmenter": {"steps": args.segmenter_steps, "seed": args.seed, "dice_on_real_holdout": on_real},
        "mask_to_image": {
            "dice_segmenter_on_generated_vs_given": mask_to_image,
            "seconds_per_image": mask_to_image_seconds,
            "synthetic_set": "mask_to_image",
        },
        "image_to_mask": {"dice_vs_experts": image_to_mask, "seconds_per_image": image_to_mask_seconds},
        "device": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else str(device),
    }
    with open(os.path.join(args.output_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print_table(results)
    return results


def print_table(results: dict) -> None:
    print(
        f"{results['model']}: {results['scheduler']}, {results['num_inference_steps']} steps "
        f"({results['timestep_spacing']} spacing), resample_steps "
        f"{results['resample_steps']} ({results['unet_passes_per_image']} UNet passes per image), "
        f"{results['resolution']} px, {results['n_holdout']} held-out / {results['n_train']} training images, "
        f"{results['device']}"
    )
    print("| direction | mask | Dice | real-trained segmenter on the real held-out images | s / image |")
    print("|---|---|---:|---:|---:|")
    rows = (
        ("mask → image (segmenter on the image vs the given mask)", results["mask_to_image"], "dice_segmenter_on_generated_vs_given"),
        ("image → mask (drawn mask vs the experts')", results["image_to_mask"], "dice_vs_experts"),
    )  # fmt: skip
    for direction, section, key in rows:
        for name in results["masks"]:
            reference = results["segmenter"]["dice_on_real_holdout"][name]
            dice = "n/a" if section[key][name] is None else f"{section[key][name]:.4f}"
            reference = "n/a" if reference is None else f"{reference:.4f}"
            print(f"| {direction} | {name} | {dice} | {reference} | {section['seconds_per_image']:.3f} |")


if __name__ == "__main__":
    run_script(main, parse_args)
