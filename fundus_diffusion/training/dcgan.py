"""DCGAN training on C-channel fundus tensors with accelerate: the paper's recipe plus measured options.

One training step updates the discriminator once and the generator once (``DCGANStep``); ``train_dcgan`` runs the
steps with checkpoints, per-step logs (TensorBoard and CSV), fixed-noise grids and a mode-collapse monitor, then
saves a ``FundusGANPipeline`` with its model card.
"""

import argparse
import logging
import math
import os
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.schema import LABEL_NAMES, NULL_CLASS_ID, NUM_CLASS_EMBEDS, parse_mask_names
from ..models.dcgan import DCGANDiscriminator, DCGANGenerator
from .args import check_finite, make_accelerator, model_flags, public_args, seeded_build, write_training_args
from .augment import AUGMENTATIONS, DiffAugment
from .batches import DeviceBatches, EpochPlan, load_training_batches
from .checkpointing import (
    find_checkpoint,
    load_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
    save_folder_atomically,
)
from .csv_log import CSVLog

logger = logging.getLogger(__name__)

LOSSES = ("bce", "nonsaturating", "hinge")
METRICS = ("d_loss", "g_loss", "d_real", "d_fake", "d_real_sign")
DIVERSITY_SIZE = 32  # samples are compared at 32 x 32: structure and colour, not pixel noise

# Table 1 of the paper. Beyond-paper options are pinned off so that the preset stays the paper's run.
PAPER_PRESET = {
    "resolution": 360,
    "train_batch_size": 32,
    "nz": 100,
    "ngf": 32,
    "ndf": 64,
    "learning_rate": 2e-4,
    "adam_beta1": 0.5,
    "adam_beta2": 0.999,
    "loss": "bce",
    "label_smoothing": 0.0,
    "spectral_norm": False,
    "diffaugment": "",
    "ema_beta": None,
    "class_conditional": False,
    "num_fixed_samples": 64,
}
PAPER_EPOCHS = {1: 100, 2: 130}  # image + disc: 100 epochs; image + disc + atrophy: 130


# ---------------------------------------------------------------------------------------------------------- flags


# The flags that shape the networks' weights: a checkpoint records them, so that a resume with other ones is named.
MODEL_FLAGS = ("preset", "resolution", "masks", "nz", "ngf", "ndf", "max_mult", "spectral_norm", "class_conditional")


def add_dcgan_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """DCGAN flags; use with ``training.args.add_common_args`` and parse with ``parse_dcgan_args``."""
    parser.set_defaults(resolution=360, train_batch_size=32, num_epochs=100)
    group = parser.add_argument_group("DCGAN")
    group.add_argument(
        "--preset", choices=["paper"], default=None,
        help="'paper': Table 1 of Makinde & Saeed (360 px, batch 32, Adam 2e-4 / 0.5, BCE, 100 epochs for "
        "image + disc and 130 with atrophy, 64 fixed-noise samples). Flags given explicitly still win.",
    )  # fmt: skip
    group.add_argument("--nz", type=int, default=100, help="Latent dimension.")
    group.add_argument("--ngf", type=int, default=32, help="Generator width (its last hidden stage).")
    group.add_argument("--ndf", type=int, default=64, help="Discriminator width (its first stage).")
    group.add_argument("--max_mult", type=int, default=8, help="Widest stage = ngf/ndf times this.")
    group.add_argument("--learning_rate", type=float, default=2e-4)
    group.add_argument("--adam_beta1", type=float, default=0.5)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument(
        "--loss", choices=LOSSES, default="bce",
        help="'bce' is the paper's (its generator target 1 is the non-saturating loss, so 'nonsaturating' names the "
        "same objective); 'hinge' is the SN-GAN / BigGAN loss.",
    )  # fmt: skip
    group.add_argument(
        "--label_smoothing", type=float, default=0.0,
        help="One-sided: real targets become 1 - s in the discriminator's BCE (not with --loss hinge).",
    )  # fmt: skip
    group.add_argument(
        "--spectral_norm", action="store_true",
        help="Spectral normalisation on every discriminator convolution (replaces its BatchNorm).",
    )  # fmt: skip
    group.add_argument(
        "--diffaugment", default="",
        help=f"Differentiable augmentation for the discriminator, e.g. 'color,translation,cutout' (any of "
        f"{', '.join(AUGMENTATIONS)}); empty: none.",
    )  # fmt: skip
    group.add_argument(
        "--ema_beta", type=float, default=None,
        help="Keep an EMA of the generator (weights and BatchNorm statistics) with this decay, e.g. 0.999; the "
        "saved pipeline then uses the EMA generator.",
    )  # fmt: skip
    group.add_argument(
        "--class_conditional", action="store_true",
        help="Condition on PM / non-PM: label embedding concatenated to z, projection discriminator.",
    )  # fmt: skip
    group.add_argument(
        "--class_dropout_prob", type=float, default=0.1,
        help="With --class_conditional: train this fraction with the null class, so that sampling without labels works.",
    )  # fmt: skip
    group.add_argument("--num_fixed_samples", type=int, default=64, help="Fixed-noise samples in each grid.")
    group.add_argument(
        "--collapse_threshold", type=float, default=0.5,
        help="Warn of mode collapse when the fixed-noise batch's diversity falls below this fraction of the real data's.",
    )  # fmt: skip
    group.add_argument(
        "--channels_last", action="store_true", help="channels_last memory format (faster convs on GPU)."
    )
    group.add_argument(
        "--compile", "--torch_compile", dest="torch_compile", action="store_true", help="torch.compile both networks."
    )
    return parser


def parse_dcgan_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, apply ``--preset`` under the explicitly given flags, and validate."""
    args = parser.parse_args(argv)
    if args.preset == "paper":
        num_masks = max(1, len(parse_mask_names(args.masks)))
        parser.set_defaults(**PAPER_PRESET, num_epochs=PAPER_EPOCHS[min(num_masks, 2)])
        args = parser.parse_args(argv)
    if args.loss == "hinge" and args.label_smoothing:
        parser.error("--label_smoothing applies to the BCE losses, not to --loss hinge.")
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error("--label_smoothing must be in [0, 1).")
    try:
        DiffAugment(args.diffaugment)
    except ValueError as e:
        parser.error(str(e))
    return args


# ---------------------------------------------------------------------------------------------------------- losses


def discriminator_loss_real(kind: str, logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits.float()  # losses in fp32 under autocast
    if kind == "hinge":
        return F.relu(1.0 - logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 - label_smoothing))


def discriminator_loss_fake(kind: str, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if kind == "hinge":
        return F.relu(1.0 + logits).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def generator_loss(kind: str, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if kind == "hinge":
        return -logits.mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


# ---------------------------------------------------------------------------------------------------------- step


class DCGANStep:
    """One discriminator update then one generator update, as in the paper (and the PyTorch DCGAN example).

    Real and generated batches go through the discriminator separately, so BatchNorm never mixes them. During the
    generator update the discriminator's weights are frozen: no weight gradients are computed for it, and none
    leak into its next (possibly accumulated) update. Returns the detached ``METRICS`` as one float32 tensor, so
    the caller decides when to synchronise with the device.
    """

    def __init__(
        self,
        accelerator,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        loss: str = "bce",
        label_smoothing: float = 0.0,
        augment: Optional[DiffAugment] = None,
        class_conditional: bool = False,
        class_dropout_prob: float = 0.0,
        channels_last: bool = False,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
        self.accelerator = accelerator
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.loss, self.label_smoothing = loss, label_smoothing
        self.augment = augment or (lambda x: x)
        self.class_conditional, self.class_dropout_prob = class_conditional, class_dropout_prob
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.nz = accelerator.unwrap_model(generator).config.nz

    def __call__(self, real: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        acc, gen, disc = self.accelerator, self.generator, self.discriminator
        real = real.to(memory_format=self.memory_format)
        labels = None
        if self.class_conditional:
            drop = torch.rand(class_labels.shape, device=class_labels.device) < self.class_dropout_prob
            labels = torch.where(drop, torch.full_like(class_labels, NULL_CLASS_ID), class_labels)
        latents = torch.randn(real.shape[0], self.nz, 1, 1, device=real.device)

        with acc.accumulate(gen, disc):
            fake = gen(latents, labels)

            disc.requires_grad_(True)
            real_logits = disc(self.augment(real), labels)
            loss_real = discriminator_loss_real(self.loss, real_logits, self.label_smoothing)
            acc.backward(loss_real)
            fake_logits = disc(self.augment(fake.detach()), labels)
            loss_fake = discriminator_loss_fake(self.loss, fake_logits)
            acc.backward(loss_fake)
            self.optimizer_d.step()
            self.optimizer_d.zero_grad(set_to_none=True)

            disc.requires_grad_(False)
            with acc.no_sync(disc):  # nothing of the discriminator's to all-reduce in this pass
                gen_logits = disc(self.augment(fake), labels)
            loss_g = generator_loss(self.loss, gen_logits)
            acc.backward(loss_g)
            self.optimizer_g.step()
            self.optimizer_g.zero_grad(set_to_none=True)

        real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
        return torch.stack(
            [
                (loss_real + loss_fake).detach().float(),
                loss_g.detach().float(),
                torch.sigmoid(real_logits).mean(),
                torch.sigmoid(fake_logits).mean(),
                torch.sign(real_logits).mean(),  # ADA's overfitting heuristic r_t: -> 1 as D memorises the reals
            ]
        )


# ---------------------------------------------------------------------------------------------------------- monitoring


def sample_diversity(x: torch.Tensor, size: int = DIVERSITY_SIZE) -> float:
    """Mean pairwise RMS distance between samples after area-downsampling to ``size`` px (all channels)."""
    small = F.adaptive_avg_pool2d(x.float(), size).flatten(1)
    return float(torch.pdist(small).mean() / math.sqrt(small.shape[1]))


# ---------------------------------------------------------------------------------------------------------- training


def build_models(args, channels: int):
    num_class_embeds = NUM_CLASS_EMBEDS if args.class_conditional else None
    generator = DCGANGenerator(
        sample_size=args.resolution,
        out_channels=channels,
        nz=args.nz,
        ngf=args.ngf,
        max_mult=args.max_mult,
        num_class_embeds=num_class_embeds,
    )
    discriminator = DCGANDiscriminator(
        sample_size=args.resolution,
        in_channels=channels,
        ndf=args.ndf,
        max_mult=args.max_mult,
        num_class_embeds=num_class_embeds,
        spectral_norm=args.spectral_norm,
    )
    return generator, discriminator


def build_optimizers(args, generator, discriminator):
    def adam(model):
        fused = all(p.is_cuda for p in model.parameters())  # same update, one kernel
        betas = (args.adam_beta1, args.adam_beta2)
        return torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=betas, fused=fused or None)

    return adam(generator), adam(discriminator)


def train_dcgan(args) -> str:
    """Train, checkpoint and save a ``FundusGANPipeline`` to ``args.output_dir``; return that folder."""
    from accelerate.utils import set_seed

    from ..data.transforms import array_to_tensor, tensor_to_outputs
    from ..visualization import contact_sheet

    started = time.time()
    mask_names = parse_mask_names(args.masks)
    channels = 3 + len(mask_names)
    accelerator = make_accelerator(args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)  # seven lines per checkpoint otherwise
    seed = 0 if args.seed is None else args.seed
    if args.seed is not None:
        set_seed(args.seed)
    refuse_to_overwrite(args.output_dir, args.resume_from_checkpoint)
    if accelerator.is_main_process:
        os.makedirs(os.path.join(args.output_dir, "samples"), exist_ok=True)
        os.makedirs(os.path.join(args.output_dir, args.logging_dir), exist_ok=True)

    view, batches = load_training_batches(accelerator, args, mask_names)
    plan = EpochPlan.for_run(batches, args)
    max_train_steps = plan.max_train_steps

    # Models, optimizers, EMA. The EMA copies the raw generator before compile and prepare touch it.
    generator, discriminator = seeded_build(args.seed, lambda: build_models(args, channels), args.data_seed)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    generator.to(accelerator.device, memory_format=memory_format)
    discriminator.to(accelerator.device, memory_format=memory_format)
    ema = None
    if args.ema_beta is not None:
        from ema_pytorch import EMA

        ema = EMA(generator, beta=args.ema_beta, update_every=1, include_online_model=False).to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    optimizer_g, optimizer_d = build_optimizers(args, generator, discriminator)
    if args.torch_compile:
        generator.compile()
        discriminator.compile()
    generator, discriminator, optimizer_g, optimizer_d = accelerator.prepare(
        generator, discriminator, optimizer_g, optimizer_d
    )
    step_fn = DCGANStep(
        accelerator,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        loss=args.loss,
        label_smoothing=args.label_smoothing,
        augment=DiffAugment(args.diffaugment),
        class_conditional=args.class_conditional,
        class_dropout_prob=args.class_dropout_prob,
        channels_last=args.channels_last,
    )

    global_step = 0
    resume_path = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
    flags = model_flags(args, MODEL_FLAGS)  # recorded in every checkpoint, compared on resume
    if resume_path:
        global_step = load_checkpoint(accelerator, resume_path, flags)
        logger.info("Resumed from %s at step %d", resume_path, global_step)
    elif args.resume_from_checkpoint:
        logger.info("No checkpoint in %s yet; starting from scratch.", args.output_dir)

    # Fixed noise (and labels) for the grids and the collapse monitor; the real-data reference diversity.
    fixed_rng = torch.Generator().manual_seed(seed)
    fixed_latents = torch.randn(args.num_fixed_samples, args.nz, 1, 1, generator=fixed_rng).to(accelerator.device)
    fixed_labels = None
    if args.class_conditional:
        fixed_labels = (torch.arange(args.num_fixed_samples) % len(LABEL_NAMES)).to(accelerator.device)
    reference = torch.randperm(len(view), generator=fixed_rng)[: args.num_fixed_samples].sort().values.numpy()
    real_diversity = sample_diversity(array_to_tensor(np.load(view.cache_path, mmap_mode="r")[reference]))

    metrics_log = diversity_log = None
    if accelerator.is_main_process:
        accelerator.init_trackers("train_dcgan", config=public_args(args, scalars_only=True))
        log_dir = os.path.join(args.output_dir, args.logging_dir)
        resume_step = global_step if resume_path else None
        metrics_log = CSVLog(os.path.join(log_dir, "metrics.csv"), ("step", "epoch", *METRICS, "wall_s"), resume_step)
        diversity_log = CSVLog(
            os.path.join(log_dir, "diversity.csv"),
            ("step", "diversity", "real_diversity", "ratio", "collapse"),
            resume_step,
        )
        logger.info(
            "%d samples, %d steps per epoch, %d steps (%d epochs), batch %d per device x %d processes, data %s",
            len(view), plan.steps_per_epoch, max_train_steps, plan.num_epochs, args.train_batch_size,
            accelerator.num_processes, "on device" if isinstance(batches, DeviceBatches) else "via DataLoader",
        )  # fmt: skip

    def sampling_generator():
        return ema.ema_model if ema is not None else accelerator.unwrap_model(generator)

    last_validation: Dict[str, float] = {}

    def validate(step: int) -> Dict[str, float]:
        model = sampling_generator()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            samples = model(fixed_latents, fixed_labels).float()
        model.train(was_training)
        diversity = sample_diversity(samples)
        ratio = diversity / max(real_diversity, 1e-12)
        collapse = ratio < args.collapse_threshold
        if collapse:
            logger.warning(
                "Possible mode collapse at step %d: fixed-noise diversity %.4f is %.0f%% of the real data's %.4f "
                "(threshold %.0f%%). Look at the grid; consider --diffaugment, --spectral_norm or a lower learning rate.",
                step, diversity, 100 * ratio, real_diversity, 100 * args.collapse_threshold,
            )  # fmt: skip
        diversity_log.write(
            {
                "step": step,
                "diversity": diversity,
                "real_diversity": real_diversity,
                "ratio": ratio,
                "collapse": int(collapse),
            }
        )
        images, masks = tensor_to_outputs(samples, mask_names, "pil")
        captions = [LABEL_NAMES[i] for i in fixed_labels.tolist()] if fixed_labels is not None else None
        sheet = contact_sheet(images, masks or None, captions=captions, columns=8, tile=min(128, args.resolution))
        sheet.save(os.path.join(args.output_dir, "samples", f"step-{step:07d}.png"))
        if args.logger == "tensorboard":
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("fixed_noise", np.asarray(sheet), step, dataformats="HWC")
        last_validation.update(diversity=diversity, diversity_ratio=ratio)
        return last_validation

    pending = None  # (step, epoch, metrics): logged one step late, so the host never waits for the step it launched

    def flush():
        nonlocal pending
        if pending is None:
            return
        step, epoch, metrics = pending
        pending = None
        values = accelerator.reduce(metrics, reduction="mean").tolist()
        check_finite(values[0] + values[1], step)
        if accelerator.is_main_process:
            row = dict(zip(METRICS, values))
            metrics_log.write({"step": step, "epoch": epoch, **row, "wall_s": round(time.time() - started, 3)})
            accelerator.log(row, step=step)
            progress.set_postfix(d_loss=f"{row['d_loss']:.3f}", g_loss=f"{row['g_loss']:.3f}", refresh=False)

    progress = tqdm(
        total=max_train_steps, initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    generator.train()
    discriminator.train()
    for epoch, epoch_batches in plan.epochs(batches, global_step):
        if global_step >= max_train_steps:
            break
        for batch in epoch_batches:
            metrics = step_fn(batch["pixel_values"], batch["class_labels"])
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.update()
            global_step += 1
            progress.update(1)
            flush()
            pending = (global_step, epoch, metrics)
            checkpoint = global_step % args.checkpointing_steps == 0
            validation = global_step % args.validation_steps == 0 or global_step == max_train_steps
            if checkpoint or validation:
                flush()  # never checkpoint a step whose losses were not checked
            if checkpoint:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, flags)
            if validation and accelerator.is_main_process:
                accelerator.log(validate(global_step), step=global_step)
            if global_step >= max_train_steps:
                break
    flush()
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not last_validation:  # resumed at the end: nothing ran, but the card reports the final diversity
            validate(global_step)
        info = _training_info(args, view, accelerator, global_step, plan.num_epochs, time.time() - started)
        _save_final(args, sampling_generator(), mask_names, info, last_validation["diversity_ratio"])
    accelerator.end_training()
    return args.output_dir


def _training_info(args, view, accelerator, steps: int, epochs: int, seconds: float) -> dict:
    """What the model card reports about the run."""
    labels = view.class_labels.tolist()
    counts = {name: labels.count(i) for i, name in enumerate(LABEL_NAMES)}
    counts["unknown"] = labels.count(NULL_CLASS_ID)
    info = {
        "dataset": args.dataset,
        "images": f"{len(view)} ({', '.join(f'{k} {v}' for k, v in counts.items())})",
        "masks": ", ".join(view.mask_names) or "none",
        "resolution": args.resolution,
        "preset": args.preset,
        "steps": steps,
        "epochs": epochs,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "nz / ngf / ndf": f"{args.nz} / {args.ngf} / {args.ndf}",
        "optimizer": f"Adam, lr {args.learning_rate}, betas ({args.adam_beta1}, {args.adam_beta2})",
        "loss": args.loss + (f", one-sided label smoothing {args.label_smoothing}" if args.label_smoothing else ""),
        "discriminator": ("spectral norm" if args.spectral_norm else "BatchNorm")
        + (f", DiffAugment {args.diffaugment}" if args.diffaugment else ""),
        "generator weights": f"EMA, decay {args.ema_beta}" if args.ema_beta is not None else "last step",
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed,
        "device": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else accelerator.device.type,
        "session_time_s": round(seconds),
    }
    if args.class_conditional:
        info["class_dropout_prob"] = args.class_dropout_prob
    if not (args.dataset.startswith("phantom") or os.path.exists(args.dataset)):
        info["hub_dataset"] = args.dataset
    return info


def _save_final(args, generator, mask_names, training_info: dict, diversity_ratio: float) -> None:
    from ..hub import push_folder
    from ..pipelines.pipeline_fundus_gan import FundusGANPipeline

    generator = generator.to(memory_format=torch.contiguous_format).eval()  # safetensors stores contiguous tensors
    pipeline = FundusGANPipeline(gan_generator=generator, mask_names=list(mask_names), training_info=training_info)
    repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
    metrics = [
        {
            "name": "fixed-noise diversity ratio",
            "value": round(diversity_ratio, 3),
            "notes": f"mean pairwise distance of {args.num_fixed_samples} fixed-noise samples at {DIVERSITY_SIZE} px "
            "over that of as many real ones (at most the dataset); well below 1 suggests mode collapse",
        }
    ]

    def save(folder):
        pipeline.save_pretrained(folder, metrics=metrics, repo_id=repo_id if args.push_to_hub else None)
        write_training_args(args, folder)

    save_folder_atomically(save, args.output_dir)
    logger.info("Saved the pipeline and its model card to %s", args.output_dir)
    if args.push_to_hub:
        logger.info("Pushed to %s", push_folder(args.output_dir, repo_id, token=args.hub_token))
