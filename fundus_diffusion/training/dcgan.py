"""The DCGAN kind of the training loop: the paper's recipe on C-channel fundus tensors plus measured options.

One training step updates the discriminator once and the generator once (``DCGANStep``); validation draws the
fixed-noise grid and measures the samples' diversity against the real data's (a mode-collapse monitor, logged to
``logs/diversity.csv``); the saved model is a ``FundusGANPipeline`` (the EMA generator with ``--use_ema``).
"""

import copy
import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger

from ..data.schema import LABEL_NAMES, NULL_CLASS_ID, NUM_CLASS_EMBEDS, parse_mask_names
from ..data.transforms import array_to_tensor
from ..models.dcgan import DCGANDiscriminator, DCGANGenerator, upsampling_plan
from ..pipelines.pipeline_fundus import tensor_to_outputs
from ..pipelines.pipeline_fundus_gan import FundusGANPipeline
from ..visualization import contact_sheet
from . import loop
from .args import parse_training_args
from .augment import AUGMENTATIONS, DiffAugment

logger = get_logger(__name__)

LOSSES = ("bce", "nonsaturating", "hinge")
METRICS = ("d_loss", "g_loss", "d_real", "d_fake", "d_real_sign")
DIVERSITY_SIZE = 32  # samples are compared at 32 x 32: structure and colour, not pixel noise

# Table 1 of the paper. Beyond-paper options are pinned off so that the preset stays the paper's run; image + disc
# trains 100 epochs, image + disc + atrophy 130.
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
    "use_ema": False,
    "class_conditional": False,
    "num_validation_images": 64,
}
PAPER_EPOCHS = {1: 100, 2: 130}


def paper_preset(args) -> dict:
    """The paper's settings for the masks the first parse found (the epochs depend on them)."""
    num_masks = max(1, len(parse_mask_names(args.masks)))
    return {**PAPER_PRESET, "num_epochs": PAPER_EPOCHS[min(num_masks, 2)]}


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


DIVERGED_D_LOSS, DIVERGED_G_LOSS, EXPLODED_LOSS, EXPLODED_WEIGHT = 1e-3, 50.0, 1e3, 1e4


def divergence_warning(d_loss: Optional[float], g_loss: Optional[float], max_abs_weight: float, step: int):
    """A warning (or None) when the GAN has diverged: the discriminator wins outright (D loss ~0 with a huge G
    loss) or the generator's weights exploded; the losses can stay finite, so the NaN stop never fires."""
    problems = []
    if d_loss is not None and d_loss < DIVERGED_D_LOSS and g_loss > DIVERGED_G_LOSS:
        problems.append(f"D loss {d_loss:.3g} with G loss {g_loss:.3g}: the discriminator rejects every fake")
    elif d_loss is not None and max(abs(d_loss), abs(g_loss)) > EXPLODED_LOSS:
        problems.append(f"D loss {d_loss:.3g}, G loss {g_loss:.3g}: the losses exploded")
    if not math.isfinite(max_abs_weight) or max_abs_weight > EXPLODED_WEIGHT:
        problems.append(f"the generator's largest |weight| is {max_abs_weight:.3g}: its weights exploded")
    if not problems:
        return None
    return (
        f"The GAN diverged at or before step {step} ({'; '.join(problems)}); its samples are likely noise or flat. "
        "Lower --learning_rate (e.g. 2e-4), try --spectral_norm or --diffaugment, and resume from an earlier checkpoint."
    )


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


def refuse_partial_annotation(view, dataset: str) -> None:
    """The discriminator judges whole image + mask tensors: a real sample whose mask channel is not annotated would
    show it an empty mask as real, and no channel can be left out of its input for some samples only. A mask that some
    training images lack is therefore an error, naming the mask and the fix."""
    partial = view.partially_annotated()
    if partial:
        listed = ", ".join(f"{name} (annotated on {n} of {total} images)" for name, (n, total) in partial.items())
        keep = ",".join(name for name in view.mask_names if name not in partial) or "none"
        raise ValueError(
            f"--dataset {dataset}: the DCGAN cannot train on partially annotated masks: {listed}. Its discriminator "
            f"would learn that an unannotated image has no {next(iter(partial))}. Fix: train with --masks {keep} "
            "(leaving those masks out), annotate the missing images, or train the DDPM (fundus-train-ddpm), whose loss "
            "leaves unannotated channels out."
        )


def build_optimizers(args, generator, discriminator):
    def adam(model):
        fused = all(p.is_cuda for p in model.parameters())  # same update, one kernel
        betas = (args.adam_beta1, args.adam_beta2)
        return torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=betas, fused=fused or None)

    return adam(generator), adam(discriminator)


class DCGANKind(loop.ModelKind):
    """The DCGAN in the training loop: generator and discriminator with their Adam optimizers, an optional EMA of the
    generator, DiffAugment; validation on fixed noise with the mode-collapse monitor."""

    NAME = "train_dcgan"
    DESCRIPTION = (
        "Train a DCGAN on fundus images + masks and save a FundusGANPipeline.\n\n"
        "accelerate launch scripts/train_dcgan.py --dataset data/pm --masks disc --preset paper --output_dir runs/dcgan-360"
    )
    PRESETS = {"paper": paper_preset}
    PRESET_HELP = (
        "'paper': Table 1 of Makinde & Saeed (360 px, batch 32, Adam 2e-4 / 0.5, BCE, 100 epochs for image + disc "
        "and 130 with atrophy, 64 fixed-noise samples). Flags given explicitly still win."
    )
    DEFAULTS = dict(
        resolution=360,
        train_batch_size=32,
        num_epochs=100,
        learning_rate=2e-4,
        adam_beta1=0.5,
        class_conditional=None,  # unconditional (the paper's), with a warning where the data has labels
        use_ema=False,
        ema_max_decay=0.999,
        ema_update_after_step=100,  # ema-pytorch's default, which this trainer always used
        logging_steps=1,
        num_validation_images=64,
    )
    MODEL_FLAGS = (
        "preset",
        "resolution",
        "masks",
        "nz",
        "ngf",
        "ndf",
        "max_mult",
        "spectral_norm",
        "class_conditional",
    )
    LOSSES = ("d_loss", "g_loss")
    VALIDATION_LOG = "diversity.csv"

    @staticmethod
    def add_args(parser):
        group = parser.add_argument_group("DCGAN")
        group.add_argument("--nz", type=int, default=100, help="Latent dimension.")
        group.add_argument("--ngf", type=int, default=32, help="Generator width (its last hidden stage).")
        group.add_argument("--ndf", type=int, default=64, help="Discriminator width (its first stage).")
        group.add_argument("--max_mult", type=int, default=8, help="Widest stage = ngf/ndf times this.")
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
            "--collapse_threshold", type=float, default=0.5,
            help="Warn of mode collapse when the fixed-noise batch's diversity falls below this fraction of the real data's.",
        )  # fmt: skip

    @staticmethod
    def check_args(parser, args):
        if args.loss == "hinge" and args.label_smoothing:
            parser.error("--label_smoothing applies to the BCE losses, not to --loss hinge.")
        if not 0.0 <= args.label_smoothing < 1.0:
            parser.error("--label_smoothing must be in [0, 1).")
        try:
            DiffAugment(args.diffaugment)
            upsampling_plan(args.resolution)
        except ValueError as e:
            parser.error(f"{str(e).replace('A DCGAN resolution', '--resolution')}")
        if not args.use_ema:  # the EMA is off by default here; its settings alone would be ignored
            given = [f"--{n}" for n in ("ema_max_decay", "ema_power", "ema_update_after_step") if getattr(args, n) != parser.get_default(n)]
            if given:
                parser.error(f"{', '.join(given)} set(s) the generator's EMA, which is off: add --use_ema, or leave them out.")

    def __init__(self, args, accelerator, view, plan):
        super().__init__(args, accelerator, view, plan)
        refuse_partial_annotation(view, args.dataset)
        if args.class_conditional is None:
            args.class_conditional = False
            if view.labelled:
                logger.warning(
                    f"{args.dataset} has PM / non-PM labels, and the DCGAN trains without them (the paper's "
                    "unconditional GAN), so its samples cannot be drawn by label. Fix: add --class_conditional to use "
                    "them, or --no-class_conditional to say that this is meant."
                )
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        generator, discriminator = build_models(args, 3 + len(args.mask_names))
        generator.to(accelerator.device, memory_format=memory_format)
        discriminator.to(accelerator.device, memory_format=memory_format)
        self.ema = None
        if args.use_ema:  # copies the raw generator, before compile and prepare touch it
            self.ema = loop.make_ema(generator, args, accelerator)
        optimizer_g, optimizer_d = build_optimizers(args, generator, discriminator)
        if args.compile:
            generator.compile(mode=args.compile_mode)
            discriminator.compile(mode=args.compile_mode)
        self.generator, self.discriminator, optimizer_g, optimizer_d = accelerator.prepare(
            generator, discriminator, optimizer_g, optimizer_d
        )
        self.gan_step = DCGANStep(
            accelerator,
            self.generator,
            self.discriminator,
            optimizer_g,
            optimizer_d,
            loss=args.loss,
            label_smoothing=args.label_smoothing,
            augment=DiffAugment(args.diffaugment),
            class_conditional=args.class_conditional,
            class_dropout_prob=args.class_dropout_prob,
            channels_last=args.channels_last,
        )
        # Fixed noise (and labels) for the grids and the collapse monitor; the real data's reference diversity.
        fixed_rng = torch.Generator().manual_seed(0 if args.seed is None else args.seed)
        n = args.num_validation_images
        self.fixed_latents = torch.randn(n, args.nz, 1, 1, generator=fixed_rng).to(accelerator.device)
        self.fixed_labels = None
        if args.class_conditional:
            self.fixed_labels = (torch.arange(n) % len(LABEL_NAMES)).to(accelerator.device)
        reference = torch.randperm(len(view), generator=fixed_rng)[:n].sort().values.numpy()
        self.real_diversity = sample_diversity(array_to_tensor(np.load(view.cache_path, mmap_mode="r")[reference]))

    def sampling_generator(self):
        return self.ema.ema_model if self.ema is not None else self.accelerator.unwrap_model(self.generator)

    def train_mode(self):
        self.generator.train()
        self.discriminator.train()

    def step(self, batch) -> Dict[str, torch.Tensor]:
        metrics = self.gan_step(batch["pixel_values"], batch["class_labels"])
        self.last_metrics = metrics  # on the device; validate reads it (one sync per validation)
        if self.ema is not None and self.accelerator.sync_gradients:
            self.ema.update()
        return dict(zip(METRICS, metrics))

    def validate(self, step: int):
        """The fixed-noise grid and its diversity against the real data's (a warning below the threshold)."""
        args, model = self.args, self.sampling_generator()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            samples = model(self.fixed_latents, self.fixed_labels).float()
        model.train(was_training)
        last = getattr(self, "last_metrics", None)
        warning = divergence_warning(
            *(last[:2].tolist() if last is not None else (None, None)),
            max(float(p.detach().abs().max()) for p in model.parameters()),
            step,
        )
        if warning:
            logger.warning(warning)
        diversity = sample_diversity(samples)
        ratio = diversity / max(self.real_diversity, 1e-12)
        collapse = ratio < args.collapse_threshold
        if collapse:
            logger.warning(
                f"Possible mode collapse at step {step}: fixed-noise diversity {diversity:.4f} is {100 * ratio:.0f}% "
                f"of the real data's {self.real_diversity:.4f} (threshold {100 * args.collapse_threshold:.0f}%). Look "
                "at the grid; consider --diffaugment, --spectral_norm or a lower learning rate."
            )
        images, masks = tensor_to_outputs(samples, args.mask_names, "pil")
        captions = [LABEL_NAMES[i] for i in self.fixed_labels.tolist()] if self.fixed_labels is not None else None
        sheet = contact_sheet(images, masks or None, captions=captions, columns=8, tile=min(128, args.resolution))
        values = {"diversity": diversity, "real_diversity": self.real_diversity, "ratio": ratio}
        return sheet, {**values, "collapse": int(collapse)}

    def pipeline(self) -> FundusGANPipeline:
        # A copy: the training generator keeps its mode and memory format (safetensors stores contiguous tensors).
        generator = copy.deepcopy(self.sampling_generator()).to(memory_format=torch.contiguous_format).eval()
        return FundusGANPipeline(gan_generator=generator, mask_names=list(self.args.mask_names))

    def training_info(self, final: bool = False) -> dict:
        args = self.args
        return {
            "nz / ngf / ndf": f"{args.nz} / {args.ngf} / {args.ndf}",
            "optimizer": f"Adam, lr {args.learning_rate}, betas ({args.adam_beta1}, {args.adam_beta2})",
            "loss": args.loss + (f", one-sided label smoothing {args.label_smoothing}" if args.label_smoothing else ""),
            "discriminator": ("spectral norm" if args.spectral_norm else "BatchNorm")
            + (f", DiffAugment {args.diffaugment}" if args.diffaugment else ""),
        }

    def card_metrics(self, validation):
        if not validation:  # a snapshot taken before the first validation
            return None
        return [
            {
                "name": "fixed-noise diversity ratio",
                "value": round(validation["ratio"], 3),
                "notes": f"mean pairwise distance of {self.args.num_validation_images} fixed-noise samples at "
                f"{DIVERSITY_SIZE} px over that of as many real ones (at most the dataset); well below 1 suggests "
                "mode collapse",
            }
        ]


def parse_args(argv=None):
    """The DCGAN trainer's flags (see ``args.add_common_args`` and ``DCGANKind.add_args``)."""
    return parse_training_args(DCGANKind, argv)


def train(args) -> str:
    """Train, checkpoint and save a ``FundusGANPipeline`` to ``args.output_dir``; return that folder."""
    return loop.train(args, DCGANKind)
