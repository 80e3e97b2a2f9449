"""DDPM training: a C-channel ``UNet2DModel`` on fundus image + mask tensors, with accelerate, EMA, label dropout for
classifier-free guidance, atomic checkpoints and fixed-seed validation grids. ``scripts/train_ddpm.py`` is its CLI.

Presets set the defaults (explicit flags win); ``demo`` trains the tiny UNet on phantoms on a CPU in minutes.

- ``paper`` reproduces Table 2 of Makinde & Saeed: 64 px, batch 8, T = 300 linear betas 1e-4..0.02, epsilon
  prediction, EMA 0.995, AdamW 3e-4. With those betas alpha-bar at the last step is 0.048: a signal of amplitude
  0.22 is left, so the model never sees the pure noise that sampling starts from.
- ``ours`` (the default): T = 1000 ``squaredcos_cap_v2`` betas (alpha-bar at the last step 2.4e-9, i.e. pure
  noise), v-prediction (well conditioned at both ends of a schedule that reaches pure noise), "trailing" timestep
  spacing so that few-step samplers start at the last step, EMA up to 0.9999 with ema-pytorch's warm-up, AdamW 1e-4
  with 500 warm-up steps, gradient clipping at 1.

Measured at demo scale (tiny UNet, 64 phantoms at 32 px, 500 steps, everything else equal): the paper's schedule
with epsilon prediction, and the cosine schedule with epsilon prediction, both sample noise; cosine with
v-prediction samples recognisable phantoms. The mean squared error of the predicted clean image at t = 0.9 T is
0.19 and 0.70 for the two epsilon models and 0.034 for ours (at t = 0.1 T all three are near 0.003).
"""

import argparse
import math
import os
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from tqdm.auto import tqdm

from ..data.schema import LABEL_NAMES, NULL_CLASS_ID, num_channels, parse_mask_names
from ..models.unet import UNET_PRESETS
from .args import (
    add_common_args,
    check_finite,
    make_accelerator,
    model_flags,
    public_args,
    seeded_build,
    write_training_args,
)
from .batches import EpochPlan, load_training_batches
from .checkpointing import (
    find_checkpoint,
    load_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
    save_folder_atomically,
)
from .csv_log import CSVLog

PRESETS = {
    "ours": dict(
        resolution=256,
        train_batch_size=16,
        num_epochs=300,
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        learning_rate=1e-4,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=500,
        adam_weight_decay=0.0,
        ema_decay=0.9999,
    ),
    "paper": dict(
        resolution=64,
        model_config="paper",
        train_batch_size=8,
        num_epochs=100,
        num_train_timesteps=300,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="epsilon",
        timestep_spacing="leading",
        learning_rate=3e-4,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        adam_weight_decay=0.01,  # torch's AdamW default, as in the reference implementation
        ema_decay=0.995,
    ),
}
# The CPU demo: our diffusion settings on 64 phantoms at 32 px with the tiny UNet. Measured on a busy 2-core VM
# (one thread): 500 steps in about 170 s of CPU time; samples with guidance_scale=2 show a fundus, an optic disc
# under its mask and, for PM, atrophy beside it.
PRESETS["demo"] = dict(
    PRESETS["ours"],
    dataset="phantom:64",
    masks="disc,atrophy",
    resolution=32,
    model_config="tiny",
    train_batch_size=8,
    max_train_steps=500,
    learning_rate=1e-3,
    lr_warmup_steps=50,
    checkpointing_steps=500,
    validation_steps=500,
    logger="none",
    seed=0,
)


# The flags that shape the networks' weights: a checkpoint records them, so that a resume with other ones is named.
MODEL_FLAGS = ("preset", "model_config", "masks", "unconditional")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    preset_parser = argparse.ArgumentParser(add_help=False)
    preset_parser.add_argument("--preset", choices=sorted(PRESETS), default="ours")
    preset = preset_parser.parse_known_args(argv)[0].preset

    parser = argparse.ArgumentParser(
        description="Train a DDPM on fundus images and their masks.", parents=[preset_parser]
    )
    add_common_args(parser)
    model = parser.add_argument_group("model and diffusion")
    model.add_argument(
        "--model_config",
        choices=sorted(UNET_PRESETS),
        default=None,
        help="UNet preset (fundus_diffusion.models.UNET_PRESETS); default base64 up to 64 px, else base256.",
    )
    model.add_argument("--unconditional", action="store_true", help="No class embedding (ignore PM / non-PM labels).")
    model.add_argument("--label_dropout", type=float, default=0.1, help="Share of labels trained as the null class.")
    model.add_argument("--num_train_timesteps", type=int)
    model.add_argument("--beta_schedule", choices=["linear", "scaled_linear", "squaredcos_cap_v2"])
    model.add_argument("--beta_start", type=float, default=1e-4)
    model.add_argument("--beta_end", type=float, default=0.02)
    model.add_argument("--prediction_type", choices=["epsilon", "v_prediction"])
    model.add_argument("--timestep_spacing", choices=["leading", "trailing", "linspace"])
    model.add_argument(
        "--schedule_base_resolution",
        type=int,
        default=None,
        help="Shift the noise schedule's log-SNR by 2 ln(BASE / resolution) (Hoogeboom et al. 2023, 'simple "
        "diffusion'): at 256 px a noise level hides less of the image than at 64 px, so without the shift training "
        "spends few steps where the large structures form. E.g. 64; default: no shift.",
    )
    model.add_argument(
        "--snr_gamma",
        type=float,
        default=None,
        help="Min-SNR loss weighting (Hang et al. 2023; recommended 5.0): caps the weight of low-noise timesteps so "
        "they do not dominate the gradient. Default: the plain MSE.",
    )

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--learning_rate", type=float)
    opt.add_argument("--lr_scheduler", default=None, help="A diffusers.optimization scheduler name.")
    opt.add_argument("--lr_warmup_steps", type=int)
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float)
    opt.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables gradient clipping.")
    opt.add_argument("--ema_decay", type=float, help="Largest EMA decay, reached after the warm-up.")
    opt.add_argument("--ema_power", type=float, default=2 / 3, help="EMA warm-up: decay = 1 - (1 + step) ** -power.")
    opt.add_argument("--ema_update_after_step", type=int, default=0, help="Copy the weights until this step.")

    perf = parser.add_argument_group("performance")
    perf.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations: less memory.")
    perf.add_argument("--compile", action="store_true", help="torch.compile the UNet (a minute or two of warm-up).")
    perf.add_argument(
        "--compile_mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"],
        help="torch.compile mode with --compile: reduce-overhead replays CUDA graphs (for hosts whose CPU cannot keep "
        "up with the GPU; one GPU, no gradient accumulation; untried on several GPUs); the max-autotune modes search "
        "kernels for many minutes.",
    )
    perf.add_argument(
        "--channels_last",
        action="store_true",
        help="NHWC memory format. Slower in eager mode on CUDA (GroupNorm has no NHWC kernel); try it with --compile.",
    )

    val = parser.add_argument_group("validation and logging")
    val.add_argument("--num_validation_images", type=int, default=16)
    val.add_argument("--validation_inference_steps", type=int, default=25, help="DPM-Solver++ steps per grid.")
    val.add_argument("--logging_steps", type=int, default=10, help="Log (and check the loss is finite) every N steps.")
    val.add_argument(
        "--snapshot_steps",
        type=int,
        default=None,
        help="Also save the EMA pipeline as OUTPUT_DIR/snapshots/step-N every N steps (quality-against-time curves).",
    )

    parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    args.mask_names = parse_mask_names(args.masks)
    if args.model_config is None:
        args.model_config = "base64" if args.resolution <= 64 else "base256"
    if args.max_train_steps is None and args.num_epochs is None:
        parser.error("Give --max_train_steps or --num_epochs.")
    if args.compile and args.compile_mode == "reduce-overhead" and args.gradient_accumulation_steps > 1:
        # A replayed backward graph writes the gradients into its own buffers: accumulating over micro-batches would
        # overwrite them (pytorch/pytorch#169545).
        parser.error("--compile_mode reduce-overhead cannot accumulate gradients: use --gradient_accumulation_steps 1.")
    return args


def shifted_betas(betas: torch.Tensor, shift: float) -> torch.Tensor:
    """The betas whose alpha-bars have log-SNR ``log SNR(t) + 2 ln(shift)``; computed in float64.

    ``shift = base / resolution`` < 1 adds noise at every timestep, as the schedule designed at ``base`` px would
    destroy the image at ``resolution`` px (Hoogeboom et al. 2023). The last beta stays capped at 0.999 as diffusers
    caps its cosine betas.
    """
    alpha_bar = torch.cumprod(1.0 - betas.double(), dim=0)
    shifted = torch.sigmoid(torch.logit(alpha_bar) + 2.0 * math.log(shift))
    previous = torch.cat([shifted.new_ones(1), shifted[:-1]])
    return (1.0 - shifted / previous).clamp(max=0.999)


def make_noise_scheduler(args):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        prediction_type=args.prediction_type,
        timestep_spacing=args.timestep_spacing,
    )
    if args.schedule_base_resolution is None:
        return scheduler
    betas = shifted_betas(scheduler.betas, args.schedule_base_resolution / args.resolution)
    return DDPMScheduler.from_config(scheduler.config, trained_betas=betas.float().tolist())


def final_alpha_bar(noise_scheduler) -> float:
    """alpha-bar at the last training step: how much signal is left where sampling starts from pure noise."""
    return float(noise_scheduler.alphas_cumprod[-1])


def diffusion_loss(unet, noise_scheduler, pixel_values, class_labels=None, label_dropout=0.0, snr_gamma=None):
    """The denoising MSE at random timesteps; dropped labels become the null class (classifier-free guidance).

    With ``snr_gamma`` each sample's error is weighted by min-SNR-gamma (Hang et al. 2023), in the form for the
    prediction target: ``min(SNR, gamma) / SNR`` for epsilon, ``min(SNR, gamma) / (SNR + 1)`` for v.
    """
    noise = torch.randn_like(pixel_values)
    bsz = pixel_values.shape[0]
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=pixel_values.device)
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    if class_labels is not None and label_dropout > 0:
        dropped = torch.rand(bsz, device=pixel_values.device) < label_dropout
        class_labels = torch.where(dropped, torch.full_like(class_labels, NULL_CLASS_ID), class_labels)
    prediction = unet(noisy, timesteps, class_labels=class_labels).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(pixel_values, noise, timesteps)
    else:
        target = noise
    if snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps)
    weight = snr.clamp(max=snr_gamma) / (snr + 1 if noise_scheduler.config.prediction_type == "v_prediction" else snr)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


@dataclass
class DDPMTraining:
    """Everything one optimisation step touches, prepared by accelerate."""

    unet: torch.nn.Module
    ema: "object"
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    noise_scheduler: object


def build_training(args, accelerator, num_training_steps: int) -> DDPMTraining:
    """UNet, EMA, AdamW (fused on CUDA) and LR schedule, prepared; the EMA is registered for checkpointing."""
    from diffusers.optimization import get_scheduler
    from ema_pytorch import EMA

    from ..models.unet import build_unet

    unet = build_unet(
        args.model_config, args.resolution, num_channels(args.mask_names), class_conditional=not args.unconditional
    )
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
    # The EMA's step counters stay on the CPU (reading them would otherwise sync with the GPU every step); only the
    # averaged weights move to the device, where a foreach lerp updates them.
    ema = EMA(
        unet,
        beta=args.ema_decay,
        power=args.ema_power,
        update_after_step=args.ema_update_after_step,
        update_every=1,
        include_online_model=False,
        allow_different_devices=True,
        use_foreach=True,
    )
    ema.ema_model.to(accelerator.device).eval()
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        fused=accelerator.device.type == "cuda",
    )
    # Stepped once per optimizer step by us, not by accelerate (which steps it once per process): the schedule and
    # its checkpointed position then mean the same on any number of processes, also across a resume.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps,
        num_training_steps=num_training_steps,
    )
    unet, optimizer = accelerator.prepare(unet, optimizer)
    accelerator.register_for_checkpointing(ema)
    accelerator.register_for_checkpointing(lr_scheduler)
    if args.compile:
        unet.compile(mode=args.compile_mode)  # in place: state-dict keys, hence checkpoints, stay the eager ones
    return DDPMTraining(unet, ema, optimizer, lr_scheduler, make_noise_scheduler(args))


def training_step(accelerator, training: DDPMTraining, batch, args):
    """One forward/backward (an optimizer step once gradients are accumulated) and the EMA update.

    Returns the loss and, on optimizer steps, the gradient norm before clipping (else ``None``).
    """
    pixel_values = batch["pixel_values"]
    if args.channels_last:
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    class_labels = None if args.unconditional else batch["class_labels"]
    grad_norm = None
    with accelerator.accumulate(training.unet):
        loss = diffusion_loss(
            training.unet, training.noise_scheduler, pixel_values, class_labels, args.label_dropout, args.snr_gamma
        )
        accelerator.backward(loss)
        if accelerator.sync_gradients:  # an infinite bound measures the norm without clipping
            bound = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
            grad_norm = accelerator.clip_grad_norm_(training.unet.parameters(), bound)
        training.optimizer.step()
        if accelerator.sync_gradients:
            training.lr_scheduler.step()
        training.optimizer.zero_grad(set_to_none=True)
    if accelerator.sync_gradients:
        training.ema.update()
    return loss.detach(), grad_norm


def validation_labels(n: int, conditional: bool):
    """Alternating class names for a grid (unconditional models: all None)."""
    return [LABEL_NAMES[i % len(LABEL_NAMES)] if conditional else None for i in range(n)]


def make_pipeline(unet, noise_scheduler, args, training_info=None):
    from ..pipelines.pipeline_fundus import FundusPipeline

    return FundusPipeline(
        unet=unet, scheduler=noise_scheduler, mask_names=list(args.mask_names), training_info=training_info
    )


def log_validation(accelerator, training: DDPMTraining, args, step: int) -> str:
    """Sample a fixed-seed grid from the EMA weights with DPM-Solver++; save it as PNG and log it to TensorBoard."""
    import numpy as np
    from diffusers import DPMSolverMultistepScheduler

    from ..visualization import contact_sheet

    scheduler = DPMSolverMultistepScheduler.from_config(training.noise_scheduler.config)
    pipeline = make_pipeline(training.ema.ema_model, scheduler, args)
    pipeline.set_progress_bar_config(disable=True)
    labels = validation_labels(args.num_validation_images, not args.unconditional)
    generator = torch.Generator(accelerator.device).manual_seed(args.seed or 0)
    with accelerator.autocast():
        out = pipeline(
            batch_size=len(labels),
            class_labels=None if args.unconditional else labels,
            generator=generator,
            num_inference_steps=args.validation_inference_steps,
        )
    sheet = contact_sheet(out.images, out.masks, captions=[label or "" for label in labels])
    folder = os.path.join(args.output_dir, "validation")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step-{step:07d}.png")
    sheet.save(path)
    if args.logger == "tensorboard":
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        writer.add_image("validation", np.asarray(sheet), step, dataformats="HWC")
    return path


def _training_info(args, view, accelerator, global_step, num_epochs, seconds) -> dict:
    labels = view.class_labels.tolist()
    counts = {name: labels.count(i) for i, name in enumerate(LABEL_NAMES)}
    counts["unknown"] = labels.count(NULL_CLASS_ID)
    is_hub_id = not (args.dataset.startswith("phantom") or os.path.exists(args.dataset))
    info = {
        "dataset": args.dataset,
        "images": len(view),
        "labels": ", ".join(f"{k} {v}" for k, v in counts.items()),
        "masks": ", ".join(args.mask_names) or "none",
        "resolution": args.resolution,
        "preset": args.preset,
        "model_config": args.model_config,
        "steps": global_step,
        "epochs": num_epochs,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "lr_scheduler": args.lr_scheduler,
        "ema_decay": args.ema_decay,
        "label_dropout": 0.0 if args.unconditional else args.label_dropout,
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed,
        "device": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else accelerator.device.type,
        "session_time_s": round(seconds),
    }
    if is_hub_id:
        info["hub_dataset"] = args.dataset
    return info


def train(args) -> str:
    """Train as ``args`` say (see ``parse_args``) and return the folder holding the saved EMA pipeline."""
    from accelerate.utils import set_seed

    from ..hub import push_folder

    accelerator = make_accelerator(args)
    if args.seed is not None:
        set_seed(args.seed)
    refuse_to_overwrite(args.output_dir, args.resume_from_checkpoint)
    resume_path = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
    flags = model_flags(args, MODEL_FLAGS)  # recorded in every checkpoint, compared on resume

    view, batches = load_training_batches(accelerator, args, args.mask_names)
    plan = EpochPlan.for_run(batches, args)
    max_train_steps = plan.max_train_steps

    training = seeded_build(args.seed, lambda: build_training(args, accelerator, max_train_steps), args.data_seed)
    alpha_bar = final_alpha_bar(training.noise_scheduler)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        print(
            f"{len(view)} samples, {args.resolution} px, masks {','.join(args.mask_names) or 'none'}; "
            f"{sum(p.numel() for p in training.unet.parameters()) / 1e6:.1f}M-parameter UNet ({args.model_config}); "
            f"{max_train_steps} steps; {args.beta_schedule} betas over T = {args.num_train_timesteps}, "
            f"alpha-bar at t = T: {alpha_bar:.3g}" + (" (the model never sees pure noise)" if alpha_bar > 1e-3 else "")
        )
        accelerator.init_trackers("train_ddpm", config=public_args(args, scalars_only=True))

    global_step = 0
    if resume_path:
        global_step = load_checkpoint(accelerator, resume_path, flags)
        accelerator.print(f"Resumed from {resume_path} at step {global_step}")
    elif args.resume_from_checkpoint:
        accelerator.print(f"No checkpoint in {args.output_dir} yet; starting from scratch.")
    metrics_log = None
    if accelerator.is_main_process:
        metrics_log = CSVLog(
            os.path.join(args.output_dir, args.logging_dir, "metrics.csv"),
            ("step", "epoch", "loss", "grad_norm", "lr", "ema_decay", "wall_s"),
            global_step if resume_path else None,
        )

    progress = tqdm(
        total=max_train_steps, initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    running_loss, micro_batches, started = torch.zeros((), device=accelerator.device), 0, time.time()
    largest_grad_norm = torch.zeros((), device=accelerator.device)  # over the log interval: spikes precede NaNs
    for epoch, epoch_batches in plan.epochs(batches, global_step):
        training.unet.train()
        for batch in epoch_batches:
            if global_step >= max_train_steps:
                break
            loss, grad_norm = training_step(accelerator, training, batch, args)
            running_loss += loss
            micro_batches += 1
            if not accelerator.sync_gradients:
                continue
            largest_grad_norm = torch.maximum(largest_grad_norm, grad_norm.float())
            global_step += 1
            progress.update(1)
            save_now = global_step % args.checkpointing_steps == 0 or global_step == max_train_steps
            validate_now = global_step % args.validation_steps == 0 or global_step == max_train_steps
            if global_step % args.logging_steps == 0 or save_now or validate_now:
                # One device sync per log interval; a NaN anywhere in the interval survives the mean.
                loss = accelerator.reduce(running_loss / micro_batches, reduction="mean")
                grad_norm = largest_grad_norm.item()
                check_finite(loss, global_step, f"largest gradient norm since the last log: {grad_norm:.4g}")
                logs = {"loss": loss.item(), "grad_norm": grad_norm}
                logs["lr"] = training.lr_scheduler.get_last_lr()[0]
                logs["ema_decay"] = training.ema.get_current_decay()
                progress.set_postfix(loss=f"{logs['loss']:.4f}")
                accelerator.log(logs, step=global_step)
                if metrics_log is not None:
                    metrics_log.write(
                        {"step": global_step, "epoch": epoch, **logs, "wall_s": round(time.time() - started, 3)}
                    )
                running_loss.zero_()
                largest_grad_norm.zero_()
                micro_batches = 0
            if save_now:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, flags)
            if validate_now and accelerator.is_main_process:
                log_validation(accelerator, training, args, global_step)
            if args.snapshot_steps and global_step % args.snapshot_steps == 0 and accelerator.is_main_process:
                info = _training_info(args, view, accelerator, global_step, plan.num_epochs, time.time() - started)
                folder = os.path.join(args.output_dir, "snapshots", f"step-{global_step:07d}")
                make_pipeline(training.ema.ema_model, training.noise_scheduler, args, info).save_pretrained(folder)
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = _training_info(args, view, accelerator, global_step, plan.num_epochs, time.time() - started)
        pipeline = make_pipeline(training.ema.ema_model, training.noise_scheduler, args, info)

        def save(folder):
            pipeline.save_pretrained(folder)
            write_training_args(args, folder)

        save_folder_atomically(save, args.output_dir)
        if args.push_to_hub:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            print(f"Uploaded to {push_folder(args.output_dir, repo_id, token=args.hub_token)}")
    accelerator.end_training()
    return args.output_dir
