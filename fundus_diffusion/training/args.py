"""Command-line flags shared by the DDPM and DCGAN trainers (names follow diffusers' example scripts)."""

import argparse
import json
import math
import os


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="phantom",
        help="A folder saved by scripts/build_dataset.py, a Hub dataset id, 'phantom' or 'phantom:N' (N built-in phantoms).",
    )
    data.add_argument("--resolution", type=int, default=None, help="Square training resolution in pixels.")
    data.add_argument(
        "--masks", default="disc", help="Mask channels after RGB: 'disc' (4 channels) or 'disc,atrophy' (5)."
    )
    data.add_argument(
        "--data_on_device",
        choices=["auto", "yes", "no"],
        default="auto",
        help="Keep the whole uint8 training array on the GPU and batch there ('auto': on CUDA when it takes under a "
        "quarter of free memory); 'no': a DataLoader over the memory-mapped cache.",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader workers (--data_on_device no).")
    data.add_argument(
        "--cache_dir",
        default=None,
        help="Where the preprocessed per-resolution training arrays are cached (default $FUNDUS_CACHE or ~/.cache/fundus_diffusion).",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", required=True, help="Checkpoints, validation grids, logs and the final model.")
    run.add_argument(
        "--seed", type=int, default=None, help="Seeds the initial weights, and the rest unless --data_seed."
    )
    run.add_argument(
        "--data_seed",
        type=int,
        default=None,
        help="Seeds the data order, noise, timesteps and latents (default: --seed): same weights, other randomness.",
    )
    run.add_argument("--train_batch_size", type=int, default=None, help="Per-device batch size.")
    run.add_argument("--num_epochs", type=int, default=None)
    run.add_argument(
        "--max_train_steps", type=int, default=None, help="Optimizer steps in total; overrides --num_epochs."
    )
    run.add_argument("--gradient_accumulation_steps", type=int, default=1)
    run.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="Default: the value chosen with `accelerate config` (bf16 needs an Ampere or newer GPU).",
    )

    ckpt = parser.add_argument_group("checkpoints and logging")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps.")
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep only the newest N checkpoints.")
    ckpt.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest', a checkpoint folder, or a checkpoint-N name in --output_dir.",
    )
    ckpt.add_argument("--validation_steps", type=int, default=500, help="Write a fixed-seed sample grid every N steps.")
    ckpt.add_argument("--logger", choices=["tensorboard", "none"], default="tensorboard")
    ckpt.add_argument("--logging_dir", default="logs", help="TensorBoard folder, relative to --output_dir.")

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the final model (not the checkpoints).")
    hub.add_argument("--hub_model_id", default=None, help="Repository id; default: the name of --output_dir.")
    hub.add_argument("--hub_token", default=None, help="Default: the token saved by `hf auth login`.")
    return parser


def make_accelerator(args, **kwargs):
    """The ``Accelerator`` the common flags describe (TensorBoard under ``output_dir/logging_dir``)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution algorithms once
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Without cpu=True, accelerate on a machine with no GPU runs each launched process as a lone process.
        kwargs.setdefault("cpu", True)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        **kwargs,
    )


def public_args(args, scalars_only: bool = False) -> dict:
    """The run's arguments without the Hub token, for trackers (``scalars_only``) and ``training_args.json``."""
    return {
        k: v
        for k, v in vars(args).items()
        if k != "hub_token" and (not scalars_only or isinstance(v, (int, float, str, bool)))
    }


def model_flags(args, names) -> dict:
    """The run's values of the flags ``names`` that it has (the ones that shape a trainer's networks)."""
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def write_training_args(args, folder: str) -> None:
    """``training_args.json`` beside a saved model: how it was trained (without the Hub token)."""
    with open(os.path.join(folder, "training_args.json"), "w") as f:
        json.dump(public_args(args), f, indent=2, default=str)


def data_seed(args) -> int:
    """The seed of everything random after the models are built (``--data_seed``, else ``--seed``, else 0)."""
    return next((s for s in (args.data_seed, args.seed) if s is not None), 0)


def seeded_build(seed, build, stream_seed=None):
    """``build()`` the models from ``seed`` alone, then seed each process's own random stream from ``stream_seed``
    (default ``seed``) and its rank.

    The initial weights then do not depend on the number of processes (accelerate's data-loader preparation draws
    from the global generator only when there are several), while the noise, timesteps and latents of the processes
    differ: with one shared stream every GPU would draw the same ones and the effective batch would shrink.
    """
    from accelerate.utils import set_seed

    if seed is not None:
        set_seed(seed)
    built = build()
    stream_seed = seed if stream_seed is None else stream_seed
    if stream_seed is not None:
        set_seed(stream_seed, device_specific=True)
    return built


def check_finite(loss, step: int, detail: str = "") -> None:
    """Raise ``NonFiniteLossError`` if ``loss`` (a tensor or a number) is NaN or infinite; ``detail`` joins the
    message (e.g. the recent gradient norms)."""
    value = float(loss.detach().float().sum()) if hasattr(loss, "detach") else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"The training loss became {value} at or before step {step}{f' ({detail})' if detail else ''}. Stopping "
            "without saving, so the last checkpoint stays good. Try a lower learning rate, bf16 instead of fp16, or "
            "gradient clipping, then --resume_from_checkpoint latest."
        )
