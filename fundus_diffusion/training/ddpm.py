"""The DDPM kind of the training loop: a C-channel ``UNet2DModel`` on fundus image + mask tensors with EMA, label
dropout for classifier-free guidance and fixed-seed validation grids. ``scripts/train_ddpm.py`` is its CLI.

Presets set the defaults (explicit flags win); ``demo`` trains the tiny UNet on phantoms on a CPU in minutes.

- ``paper`` reproduces Table 2 of Makinde & Saeed: 64 px, batch 8, T = 300 linear betas 1e-4..0.02, epsilon
  prediction, EMA 0.995, AdamW 3e-4. With those betas alpha-bar at the last step is 0.048: a signal of amplitude
  0.22 is left, so the model never sees the pure noise that sampling starts from.
- ``ours`` (the default): T = 1000 ``squaredcos_cap_v2`` betas (alpha-bar at the last step 2.4e-9, i.e. pure
  noise), v-prediction (well conditioned at both ends of a schedule that reaches pure noise), "trailing" timestep
  spacing so that few-step samplers start at the last step, EMA up to 0.9999 with ema-pytorch's warm-up, AdamW 1e-4
  with 500 warm-up steps, gradient clipping at 1. README's "Training" section has what each choice measured.
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr

from ..data.schema import LABEL_NAMES, NULL_CLASS_ID, NUM_CLASS_EMBEDS, mask_channel, num_channels, parse_mask_names
from ..model_cards import portable_name
from ..models.unet import UNET_PRESETS, build_unet, preset_size_multiple, preset_space_to_depth
from ..pipelines.loading import load_fundus_pipeline
from ..pipelines.pipeline_fundus import (
    ROTATIONS,
    FundusPipeline,
    embedding_ids,
    nearest_sizes,
    split_mask_names,
    unet_output,
)
from ..visualization import contact_sheet
from . import loop, patches, post_hoc_ema
from .args import parse_training_args
from .augment import random_quarter_turns

logger = get_logger(__name__)

OURS_PRESET = dict(
    resolution=256,
    train_batch_size=16,
    num_epochs=1250,  # 10,000 steps of 16 on RESULTS.md's 134 training photographs, the measured recipe
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    timestep_spacing="trailing",
    learning_rate=1e-4,
    lr_scheduler="constant_with_warmup",
    lr_warmup_steps=500,
    adam_weight_decay=0.0,
    ema_max_decay=0.9999,
    schedule_base_resolution=64,  # with min-SNR-5: the better 256 px recipe of RESULTS.md's session 5
    snr_gamma=5.0,
    rotation_conditioning_prob=0.5,  # no copies at 10,000 steps where the recipe without it copies: session 11
)


def ours_preset(first_parse) -> dict:
    """The ours preset, its log-SNR shift interpolated to none at the cleanest timestep of the resolution trained
    (``--schedule_detail_resolution`` = ``--resolution``; RESULTS.md session 15: at 256 px the same Dice and
    whole-image two-sample AUC in half the steps as the constant shift, and small vessels the constant shift left out). At or below 64 px it is the
    constant shift, as before; so it is with a ``--schedule_base_resolution`` given alone, which its help describes as
    the constant shift by that base (earlier sessions' commands give it so)."""
    if first_parse.schedule_base_resolution is not None:
        return OURS_PRESET
    resolution = first_parse.resolution or OURS_PRESET["resolution"]
    return dict(OURS_PRESET, schedule_detail_resolution=max(resolution, OURS_PRESET["schedule_base_resolution"]))


PRESETS = {
    "ours": ours_preset,
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
        ema_max_decay=0.995,
        schedule_base_resolution=None,
        snr_gamma=None,
    ),
}
# The CPU demo: our diffusion settings on 64 phantoms at 32 px with the tiny UNet (README: its time and samples).
PRESETS["demo"] = dict(
    OURS_PRESET,
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
    schedule_base_resolution=None,  # the demo's recorded settings, from before the 256 px recipe changed
    snr_gamma=None,
    rotation_conditioning_prob=0.0,
)


def shifted_betas(betas: torch.Tensor, shift: float, detail_shift: Optional[float] = None) -> torch.Tensor:
    """The betas whose alpha-bars have log-SNR ``log SNR(t) + 2 ln(shift)``; computed in float64.

    ``shift = base / resolution`` < 1 adds noise at every timestep, as the schedule designed at ``base`` px would
    destroy the image at ``resolution`` px (Hoogeboom et al. 2023). That also moves the low-noise timesteps, where
    small detail forms, to noisier levels, so training and sampling spend few steps there. ``detail_shift`` (e.g. 1:
    the resolution's own schedule) interpolates the shift in t, as the same paper's interpolated schedule does: the
    log-shift is ``(t / T) ln(shift) + (1 - t / T) ln(detail_shift)``, ``shift`` at the noisiest timestep and
    ``detail_shift`` at the cleanest. The last beta stays capped at 0.999 as diffusers caps its cosine betas.
    """
    alpha_bar = torch.cumprod(1.0 - betas.double(), dim=0)
    log_shift = torch.full_like(alpha_bar, math.log(shift))
    if detail_shift is not None:
        # alpha_bar[i] belongs to t = (i + 1) / T: diffusers' cosine betas are 1 - alpha_bar((i + 1) / T) / alpha_bar(i / T)
        weight = torch.arange(1, len(alpha_bar) + 1, dtype=torch.float64) / len(alpha_bar)
        log_shift = weight * math.log(shift) + (1.0 - weight) * math.log(detail_shift)
    shifted = torch.sigmoid(torch.logit(alpha_bar) + 2.0 * log_shift)
    previous = torch.cat([shifted.new_ones(1), shifted[:-1]])
    return (1.0 - shifted / previous).clamp(max=0.999)


def make_noise_scheduler(args) -> DDPMScheduler:
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
    detail = args.schedule_detail_resolution
    betas = shifted_betas(
        scheduler.betas,
        args.schedule_base_resolution / args.resolution,
        None if detail is None else detail / args.resolution,
    )
    return DDPMScheduler.from_config(scheduler.config, trained_betas=betas.float().tolist())


def schedule_shift_description(args) -> str:
    """How the noise schedule's log-SNR was shifted, for the model card ('' when it was not)."""
    base, detail = args.schedule_base_resolution, args.schedule_detail_resolution
    if base is None or (base == args.resolution and detail in (None, base)):  # a ratio of 1 shifts nothing
        return ""
    if detail is None:
        return f", log-SNR shifted for {base} px"
    return f", log-SNR shifted for {base} px at the noisiest timestep to {detail} px at the cleanest (interpolated)"


def final_alpha_bar(noise_scheduler) -> float:
    """alpha-bar at the last training step: how much signal is left where sampling starts from pure noise."""
    return float(noise_scheduler.alphas_cumprod[-1])


# How far around the weighted mask (--region_loss_weight) its extra weight reaches, as a share of the image side: the
# disc rim and the first stretch of the vessel trunks leaving the disc (16 px at 256 px, where the fundus-od discs,
# framed for training, are 39-53 px high: with the margin, 7-10% of the image).
REGION_MARGIN = 1 / 16


def region_loss_weights(noisy_mask: torch.Tensor, weight: float, margin: int) -> torch.Tensor:
    """Per-pixel loss weights ``[B, 1, H, W]`` from the *noisy* mask channel the UNet sees (``[B, H, W]``): ``1 +
    weight`` where its local mean (a square of ``2 * (margin // 8) + 1`` px: 5 at 256 px) is above 0, the midpoint of a
    mask's -1 and 1, or within ``margin`` px of such a pixel; 1 elsewhere; each sample's weights divided by their mean,
    so that the loss keeps its scale and only its share moves to the region.

    Why the noisy channel and not the clean mask: a weight that is a function of the UNet's input leaves the best
    prediction at every pixel what it was (``E[w v | x_t] / E[w | x_t] = E[v | x_t]``); one computed from the clean
    mask, which the UNet does not see, pulls the prediction towards "a disc here" wherever the noisy image leaves it
    open (a per-pixel fit at near-pure noise with weight 4 doubled the disc probability it learnt). So the weighting
    moves capacity, not the target: at high noise the thresholded channel is speckle whose dilation covers the image
    (uniform weights: the plain loss), and once the mask shows through the noise (the local mean's noise std is
    ``1 / (side x sqrt(SNR))``, so at 256 px from a log-SNR of about 0, where no pixel of the 65,536 lies 5 stds
    off) it is the structure and its margin: the stages that draw the rim, the cup and the vessels, not the layout."""
    smoothing = 2 * (margin // 8) + 1
    region = F.avg_pool2d(noisy_mask[:, None].float(), smoothing, stride=1, padding=smoothing // 2, count_include_pad=False)
    region = (region > 0).float()
    if margin > 0:  # a square dilation, as a row and a column maximum (2k comparisons per pixel, not k squared)
        region = F.max_pool2d(region, kernel_size=(1, 2 * margin + 1), stride=1, padding=(0, margin))
        region = F.max_pool2d(region, kernel_size=(2 * margin + 1, 1), stride=1, padding=(margin, 0))
    weights = 1.0 + weight * region
    return weights / weights.mean(dim=(2, 3), keepdim=True)


@dataclass(frozen=True)
class RegionWeighting:
    """``--region_loss_weight``: the mask channel whose region weighs ``1 + weight`` times, and the margin in px."""

    channel: int
    weight: float
    margin: int

    def __call__(self, noisy: torch.Tensor) -> torch.Tensor:
        return region_loss_weights(noisy[:, self.channel], self.weight, self.margin)


def diffusion_loss(
    unet,
    noise_scheduler,
    pixel_values,
    class_labels=None,
    class_dropout_prob=0.0,
    snr_gamma=None,
    mask_annotated=None,
    orientation_ids=None,
    coordinates=None,
    region_weighting=None,
    origin_ids=None,
    num_origins=0,
    space_to_depth=1,
):
    """The denoising MSE at random timesteps; dropped labels become the null class (classifier-free guidance).

    ``region_weighting`` (a ``RegionWeighting``, None: every pixel alike) weighs each pixel's error in every channel
    by ``region_loss_weights`` of the noisy input: where the model's capacity goes, not what it learns to predict.

    ``coordinates`` (``[B, 2, H, W]``, None: none): where each pixel of a crop lies in its whole image, given to a UNet
    trained with Patch Diffusion beside the noisy channels (``patches.random_patches``).

    ``orientation_ids`` (``[B]`` long, None: no rotation or flip conditioning): each sample's quarter turns, plus
    ``ROTATIONS`` where it was mirrored with flip conditioning, given to the UNet with its class
    (``pipeline_fundus.embedding_ids``). ``origin_ids`` (``[B]`` long in ``[0, num_origins)``, None: no origin
    conditioning): each sample's origin (camera or collection), given the same way; never dropped with the class.

    ``mask_annotated`` (``bool [B, M]``, None: all annotated) marks the mask channels (3, 4, ...) each sample is
    annotated for. An unannotated channel holds no information (the training view stores it as -1, not as "absent"):
    it enters the UNet as pure noise, as at the last timestep, so the model never learns from a made-up empty mask,
    and its error is left out of the loss, which averages over the image channels and the annotated masks only. The
    image and the annotated masks of the same sample still train.

    ``space_to_depth``: the UNet's block size (``pipeline_fundus.unet_output``); the error is taken per pixel either way.

    With ``snr_gamma`` each sample's error is weighted by min-SNR-gamma (Hang et al. 2023), in the form for the
    prediction target: ``min(SNR, gamma) / SNR`` for epsilon, ``min(SNR, gamma) / (SNR + 1)`` for v.
    """
    noise = torch.randn_like(pixel_values)
    bsz, channels = pixel_values.shape[:2]
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=pixel_values.device)
    noisy = noise_scheduler.add_noise(pixel_values, noise, timesteps)
    weights = torch.ones(bsz, channels, device=pixel_values.device)
    if mask_annotated is not None:
        weights[:, channels - mask_annotated.shape[1] :] = mask_annotated.to(weights.dtype)
        noisy = torch.where(weights[:, :, None, None] > 0, noisy, noise)
    if class_labels is not None and class_dropout_prob > 0:
        dropped = torch.rand(bsz, device=pixel_values.device) < class_dropout_prob
        class_labels = torch.where(dropped, torch.full_like(class_labels, NULL_CLASS_ID), class_labels)
    class_labels = embedding_ids(
        class_labels, orientation_ids, NUM_CLASS_EMBEDS if class_labels is not None else 1, origin_ids, num_origins
    )
    unet_input = noisy if coordinates is None else torch.cat([noisy, coordinates.to(noisy.dtype)], dim=1)
    prediction = unet_output(unet, unet_input, timesteps, class_labels, space_to_depth)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(pixel_values, noise, timesteps)
    else:
        target = noise
    error = F.mse_loss(prediction.float(), target.float(), reduction="none")
    per_channel = (error if region_weighting is None else error * region_weighting(noisy)).mean(dim=(2, 3))
    per_sample = (per_channel * weights).sum(dim=1) / weights.sum(dim=1)  # the image channels always count
    if snr_gamma is None:
        return per_sample.mean()
    snr = compute_snr(noise_scheduler, timesteps)
    weight = snr.clamp(max=snr_gamma) / (snr + 1 if noise_scheduler.config.prediction_type == "v_prediction" else snr)
    return (per_sample * weight).mean()


def validation_labels(n: int, conditional: bool):
    """Alternating class names for a grid (unconditional models: all None)."""
    return [LABEL_NAMES[i % len(LABEL_NAMES)] if conditional else None for i in range(n)]


def load_initial_weights(unet, source: str, args, origin_names: Sequence[str] = ()) -> None:
    """Copy the UNet weights of the saved model ``source`` into ``unet`` (``--init_from``), after checking that
    both are the same network for the same channels: the UNet configs may differ in ``sample_size`` alone, the mask
    names must match in order (equal channel counts with other names would train, on the wrong masks), and so must
    what the class embeddings stand for: rotations and flips as ``args`` ask, the origins ``origin_names`` (several
    set-ups have as many embeddings: class + flips and class + two origins, say)."""
    mask_names = args.mask_names
    pipe = load_fundus_pipeline(source, device="cpu", dtype="fp32")  # model_index checked, safetensors only, finite
    if not isinstance(pipe, FundusPipeline):
        raise ValueError(f"--init_from {source}: that is a {type(pipe).__name__}, not a diffusion model (FundusPipeline).")
    theirs_masks = split_mask_names(pipe.config.mask_names)
    if theirs_masks != list(mask_names):
        raise ValueError(
            f"--init_from {source}: that model's masks are {theirs_masks}, this run's {list(mask_names)}. Fix: "
            f"train with --masks {','.join(theirs_masks) or 'none'}, or start from a model of these masks."
        )
    theirs_block, ours_block = pipe.config.space_to_depth, preset_space_to_depth(args.model_config)
    if theirs_block != ours_block:
        raise ValueError(
            f"--init_from {source}: that model's UNet works on {theirs_block} x {theirs_block} pixel blocks "
            f"(space_to_depth), this run's --model_config {args.model_config} on {ours_block} x {ours_block}. Fix: "
            "train with the --model_config that model was trained with (its training_args.json says which)."
        )
    ours, theirs = (json.loads(json.dumps(dict(model.config))) for model in (unet, pipe.unet))  # tuples -> lists
    differ = sorted(k for k in ours.keys() | theirs.keys() if not k.startswith("_") and k not in ("sample_size", "dropout") and ours.get(k) != theirs.get(k))
    if differ:
        raise ValueError(
            f"--init_from {source}: its UNet differs from this run's in "
            + "; ".join(f"{k} ({theirs.get(k)} there, {ours.get(k)} here)" for k in differ)
            + ". Fix: train with the --model_config, class conditioning, --rotation_conditioning_prob, "
            "--flip_conditioning, --origin_conditioning (on data of as many origins) and --patch_diffusion that "
            "model was trained with (its training_args.json says which; 0 / off for models trained before those "
            "flags)."
        )
    conditioning = ("rotation_conditioning", "flip_conditioning", "origins")
    theirs_conditioning = (
        bool(pipe.config.get("rotation_conditioning")), bool(pipe.config.get("flip_conditioning")), pipe.origin_names
    )
    ours_conditioning = (args.rotation_conditioning_prob > 0, args.flip_conditioning, sorted(origin_names))
    pairs = zip(conditioning, theirs_conditioning, ours_conditioning)
    differ = [f"{k} ({a} there, {b} here)" for k, a, b in pairs if a != b]
    if differ:
        raise ValueError(
            f"--init_from {source}: its class embeddings stand for other conditions than this run's: "
            + "; ".join(differ)
            + ". Fix: train with the --rotation_conditioning_prob (above 0 or 0), --flip_conditioning and "
            "--origin_conditioning (on data of the same origins) that model was trained with."
        )
    unet.load_state_dict(pipe.unet.state_dict())


def make_pipeline(unet, noise_scheduler, args, origin_counts: Optional[dict] = None) -> FundusPipeline:
    """The pipeline of a trained (or training) UNet; ``origin_counts``: ``{origin: training images}`` of an
    origin-conditioned one (``FundusTrainingView.origin_counts``)."""
    return FundusPipeline(
        unet=unet,
        scheduler=noise_scheduler,
        mask_names=list(args.mask_names),
        rotation_conditioning=args.rotation_conditioning_prob > 0,
        flip_conditioning=args.flip_conditioning,
        origin_counts=origin_counts,
        space_to_depth=preset_space_to_depth(args.model_config),
    )


class DDPMKind(loop.ModelKind):
    """The DDPM in the training loop: UNet, EMA, AdamW (fused on CUDA) and LR schedule; one denoising step per
    micro-batch; validation grids sampled from the EMA weights with DPM-Solver++."""

    NAME = "train_ddpm"
    DESCRIPTION = "Train a DDPM on fundus images and their masks: accelerate launch scripts/train_ddpm.py --help"
    PRESETS, DEFAULT_PRESET = PRESETS, "ours"
    PRESET_HELP = "ours (default; 256 px), paper (Makinde & Saeed, Table 2; 64 px) or demo (phantoms on a CPU)."
    # class_conditional None: conditional when the data has a labelled example (a model of unknown labels only would
    # offer PM / non-PM classes it never saw).
    DEFAULTS = dict(class_conditional=None, use_ema=True, logging_steps=10, num_validation_images=16)
    MODEL_FLAGS = (
        "preset", "resolution", "model_config", "masks", "class_conditional", "dropout", "rotation_conditioning_prob",
        "flip_conditioning", "origin_conditioning", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
        "prediction_type", "schedule_base_resolution", "schedule_detail_resolution", "patch_diffusion",
        "patch_full_share",
    )  # fmt: skip
    OPTIMIZER_FLAGS = loop.ModelKind.OPTIMIZER_FLAGS + ("adam_weight_decay", "lr_scheduler", "lr_warmup_steps")
    LOSS_FLAGS = ("snr_gamma", "region_loss_weight", "region_loss_mask")
    LOSSES = ("loss",)
    PEAK_METRICS = {"grad_norm": "gradient norm"}  # the interval's largest, before clipping: spikes precede NaNs

    @staticmethod
    def add_args(parser):
        model = parser.add_argument_group("model and diffusion")
        model.add_argument(
            "--model_config",
            choices=sorted(UNET_PRESETS),
            default=None,
            help="UNet preset (fundus_diffusion.models.UNET_PRESETS); default base64 up to 64 px, else small256 (the "
            "measured 256 px recipe's).",
        )
        model.add_argument(
            "--init_from",
            default=None,
            help="Start from the UNet weights of a saved model (its folder, a snapshot, or a Hub id) of the same "
            "--model_config, --masks and conditioning; only the resolution may differ, since the UNet is "
            "convolutional. For training at a lower resolution first, where a step costs a quarter of the compute "
            "per halving, then at the full one. A --resume_from_checkpoint still wins: its weights replace these "
            "(the model named here is still read, so it must still exist).",
        )
        model.add_argument(
            "--dropout",
            type=float,
            default=None,
            help="Dropout in the UNet's residual blocks (default: the --model_config preset's, 0.1 for the 256 px "
            "ones). More of it is a regulariser against reproducing training images of a small set.",
        )
        model.add_argument(
            "--rotation_conditioning_prob",
            type=float,
            default=0.0,
            help="Rotate each training image (with its masks) by 90, 180 or 270 degrees with this probability and "
            "tell the UNet by how much (EDM's non-leaking augmentation, Karras et al. 2022, with quarter turns): four "
            "times the views of a small set, while samples stay upright (sampling asks for no rotation). The ours preset "
            "uses 0.5; 0: off.",
        )
        model.add_argument(
            "--flip_conditioning",
            action="store_true",
            help="Tell the UNet which training images are mirrored left-right (the random flips, as rotations are "
            "told): the model keeps the mirrored views but learns what a mirrored photograph shows that none does "
            "(a camera's number stamp, text), and sampling asks for unmirrored photographs. Doubles the class "
            "embeddings; needs the random flips (not --no-random_flip).",
        )
        model.add_argument(
            "--origin_conditioning",
            action="store_true",
            help="Tell the UNet each training image's origin, its camera or collection (the prefix before '_' that "
            "at least 5 file names share, as drions_001, else the source column: the grouping of evaluate.py's "
            "per-source Dice), through its class embedding: one model then draws each camera's look instead of a "
            "blend, and sampling draws each sample as one origin, in the training images' proportions unless "
            "generation names one. Multiplies the class embeddings by the number of origins; needs two or more.",
        )
        model.add_argument(
            "--patch_diffusion",
            action="store_true",
            help="Patch Diffusion (Wang et al. 2023): train part of the steps on random crops of a half or a quarter "
            "of the side, with two coordinate channels that say where each crop lies (the UNet reads them; sampling "
            "gives the whole grid), as many crops per image as keep the pixels per step; see --patch_full_share.",
        )
        model.add_argument(
            "--patch_full_share",
            type=float,
            default=0.5,
            help="With --patch_diffusion: the share of steps on whole images (the paper's default 0.5); the others "
            "take quarter-side crops with probability (1 - share) * 2 / 5, half-side ones with (1 - share) * 3 / 5.",
        )
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
            "diffusion'): at 256 px a noise level hides less of the image than at 64 px, so without the shift "
            "training spends few steps where the large structures form. The ours preset uses 64; the resolution itself "
            "(e.g. 256 at 256 px) means no shift.",
        )
        model.add_argument(
            "--schedule_detail_resolution",
            type=int,
            default=None,
            help="With --schedule_base_resolution: interpolate the shift in t (Hoogeboom et al. 2023's interpolated "
            "schedule): BASE's schedule at the noisiest timestep, this resolution's at the cleanest, the log-shift "
            "linear in t between. The constant shift also moves the low-noise timesteps, where small vessels form, to "
            "noisier levels, so training and sampling spend few steps on them; the resolution itself (e.g. 256 at 256 "
            "px) keeps that end unshifted, and a larger one (e.g. 1024 at 256 px) raises that end's log-SNR, giving "
            "the finest detail more of the training timesteps (RESULTS.md session 19: not yet trained). The ours "
            "preset uses the resolution above 64 px (RESULTS.md session 15), "
            "unless --schedule_base_resolution is given alone; BASE itself gives the constant shift (the preset's "
            "before session 15).",
        )
        model.add_argument(
            "--snr_gamma",
            type=float,
            default=None,
            help="Min-SNR loss weighting (Hang et al. 2023; recommended 5.0): caps the weight of low-noise timesteps "
            "so they do not dominate the gradient. The ours preset uses 5; the paper and demo presets the plain MSE; "
            "0 turns the weighting off (plain MSE) under any preset.",
        )
        model.add_argument(
            "--region_loss_weight",
            type=float,
            default=None,
            help="Weight the denoising error within the --region_loss_mask structure and a margin of 1/16 of the side "
            "around it (16 px at 256 px: the disc rim and the vessels leaving the disc) 1 + W times as much as "
            "elsewhere, the weights scaled to mean 1 per image: the disc covers a few percent of a photograph, and "
            "its texture is what a judge tells synthetic discs by (RESULTS.md). The region is read from the noisy "
            "mask channel the UNet sees, so the model still learns the same denoiser (capacity, not target; at high "
            "noise every pixel weighs alike). Default: off (0 too).",
        )
        model.add_argument(
            "--region_loss_mask", default=None, help="The mask whose region --region_loss_weight weights (default disc)."
        )
        opt = parser.add_argument_group("DDPM optimisation")
        opt.add_argument("--lr_scheduler", default=None, help="A diffusers.optimization scheduler name.")
        opt.add_argument("--lr_warmup_steps", type=int)
        opt.add_argument("--adam_weight_decay", type=float)
        opt.add_argument("--max_grad_norm", type=float, default=1.0, help="0 disables gradient clipping.")
        opt.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations: less memory.")
        phema = parser.add_argument_group("post-hoc EMA (Karras et al. 2024): choose the EMA length after training")
        phema.add_argument(
            "--post_hoc_ema",
            action="store_true",
            help="Also keep power-function EMA profiles of the UNet and save their snapshots in "
            "OUTPUT_DIR/post_hoc_ema/ (safetensors), so that fundus-post-hoc-ema can synthesise an EMA of any "
            "length afterwards. The saved model stays the ordinary EMA.",
        )
        phema.add_argument(
            "--post_hoc_ema_sigma_rels",
            default=None,
            help="The profiles' relative lengths, comma-separated (at least two; default "
            f"{','.join(map(str, post_hoc_ema.DEFAULT_SIGMA_RELS))}, as in ema-pytorch's README; EDM2 used 0.05,0.10). "
            "Lengths between the shortest and the longest synthesise well.",
        )
        phema.add_argument(
            "--post_hoc_ema_every",
            type=int,
            default=None,
            help=f"Save the profiles every N optimizer steps and at the last step (default {post_hoc_ema.DEFAULT_EVERY}, "
            "ema-pytorch's). More snapshots fit other lengths more closely; each is the UNet in float32 per profile.",
        )
        guide = parser.add_argument_group("autoguidance (Karras et al. 2024): a guide shipped with the model")
        guide.add_argument(
            "--guide_step",
            type=int,
            default=None,
            help="Ship the EMA model of this step with the final model as its autoguidance guide (the pipeline's "
            "guide_unet, one more UNet in the folder), so that fundus-generate --autoguidance_scale W and "
            "pipe(autoguidance_scale=W) guide the model away from its own earlier self (RESULTS.md session 21: "
            "the ours preset, 5,000 steps, guided by step 2,500 at 1.5). Saved as the snapshot of that step, which "
            "the end of the run (a resumed one too) reads back.",
        )
        val = parser.add_argument_group("DDPM validation")
        val.add_argument("--validation_inference_steps", type=int, default=25, help="DPM-Solver++ steps per grid.")

    @staticmethod
    def comparable_flags(flags: dict) -> dict:
        """The masks as their names, no --dropout as the UNet preset's own, the betas' endpoints except for the
        cosine schedule (which ignores them), and the crop schedule with Patch Diffusion only: what a resume compares
        (the card states the crop schedule for the whole run)."""
        flags = dict(flags)
        if isinstance(flags.get("masks"), str):
            flags["masks"] = ",".join(parse_mask_names(flags["masks"])) or "none"
        if flags.get("dropout") is None and flags.get("model_config") in UNET_PRESETS:
            flags["dropout"] = UNET_PRESETS[flags["model_config"]]["dropout"]
        if flags.get("beta_schedule") == "squaredcos_cap_v2":
            flags.pop("beta_start", None)
            flags.pop("beta_end", None)
        if not flags.get("patch_diffusion"):
            flags.pop("patch_full_share", None)
        if flags.get("schedule_detail_resolution") is None and flags.get("schedule_base_resolution") is not None:
            # the constant shift, as --schedule_detail_resolution BASE gives it (a resume of a run from before the
            # ours preset interpolated its shift names the flag that resumes it)
            flags["schedule_detail_resolution"] = flags["schedule_base_resolution"]
        return flags

    @staticmethod
    def check_args(parser, args):
        if args.model_config is None:
            args.model_config = "base64" if args.resolution <= 64 else "small256"
        factor = preset_size_multiple(args.model_config) if args.model_config in UNET_PRESETS else 1
        if args.resolution % factor:
            parser.error(
                f"--resolution {args.resolution}: the {args.model_config} UNet takes multiples of {factor} px. Fix: "
                f"use {nearest_sizes(args.resolution, factor)}."
            )
        if not args.use_ema:
            parser.error("The DDPM always keeps an EMA of its weights (it is the saved model): drop --no-use_ema.")
        if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
            parser.error(f"--dropout {args.dropout}: give a probability in [0, 1).")
        if not 0.0 <= args.rotation_conditioning_prob < 1.0:
            parser.error(
                f"--rotation_conditioning_prob {args.rotation_conditioning_prob}: give a probability in [0, 1) (at 1 "
                "no image trains upright, and sampling asks for upright ones)."
            )
        if args.flip_conditioning and not args.random_flip:
            parser.error(
                "--flip_conditioning tells the UNet which images are flipped, and --no-random_flip flips none: drop one."
            )
        if not args.patch_diffusion and args.patch_full_share != parser.get_default("patch_full_share"):
            parser.error("--patch_full_share sets Patch Diffusion's crop schedule: add --patch_diffusion, or leave it out.")
        if args.patch_diffusion:
            if preset_space_to_depth(args.model_config) > 1:
                parser.error(
                    f"--patch_diffusion gives the UNet each pixel's coordinates, and the {args.model_config} UNet works on "
                    "blocks of pixels (space-to-depth): choose another --model_config, or leave --patch_diffusion out."
                )
            if not 0.0 <= args.patch_full_share <= 1.0:
                parser.error(f"--patch_full_share {args.patch_full_share}: give a share of the steps in [0, 1].")
            if args.resolution % (4 * factor):
                parser.error(
                    f"--patch_diffusion crops a quarter of the side, and the {args.model_config} UNet takes multiples "
                    f"of {factor} px: --resolution {args.resolution} is not a multiple of {4 * factor}."
                )
        for name in ("schedule_base_resolution", "schedule_detail_resolution"):
            value = getattr(args, name)
            if value is not None and value < 1:
                parser.error(f"--{name} {value}: give a resolution in pixels, e.g. 64 or {args.resolution}.")
        if args.schedule_detail_resolution is not None and args.schedule_base_resolution is None:
            parser.error(
                "--schedule_detail_resolution interpolates the shift of --schedule_base_resolution: give both (e.g. "
                f"--schedule_base_resolution 64 --schedule_detail_resolution {max(64, args.schedule_detail_resolution)})."
            )
        if args.schedule_detail_resolution is not None and args.schedule_detail_resolution == args.schedule_base_resolution:
            args.schedule_detail_resolution = None  # the constant shift: one spelling in training_args.json and the card
        if (args.schedule_detail_resolution or 0) and args.schedule_detail_resolution < args.schedule_base_resolution:
            parser.error(
                f"--schedule_detail_resolution {args.schedule_detail_resolution} is below --schedule_base_resolution "
                f"{args.schedule_base_resolution}: the cleanest timesteps would get more noise than the noisiest, and "
                "the noise would shrink with t. Fix: give a detail resolution of at least the base one (e.g. "
                f"{max(args.resolution, args.schedule_base_resolution)}; the base itself: the constant shift)."
            )
        if args.region_loss_weight is not None and args.region_loss_weight < 0:
            parser.error(f"--region_loss_weight {args.region_loss_weight}: give a weight of at least 0 (0: off).")
        if args.region_loss_mask is not None and not args.region_loss_weight:
            parser.error("--region_loss_mask names the region --region_loss_weight weights: add a weight, or leave it out.")
        if args.region_loss_weight:
            args.region_loss_mask = args.region_loss_mask or "disc"
        else:
            args.region_loss_weight = None  # off: one spelling in training_args.json, the card and a resume
        if args.region_loss_weight and args.region_loss_mask not in args.mask_names:
            parser.error(
                f"--region_loss_weight weights the {args.region_loss_mask} mask's region, and --masks "
                f"{','.join(args.mask_names) or 'none'} has no such channel. Fix: add it to --masks, or name one of "
                "these with --region_loss_mask."
            )
        if args.snr_gamma is not None and args.snr_gamma < 0:
            parser.error(f"--snr_gamma {args.snr_gamma}: give a positive gamma, or 0 for the plain MSE.")
        if args.snr_gamma == 0:
            args.snr_gamma = None  # the plain MSE: how a preset's min-SNR weighting is taken out of an ablation
        DDPMKind._check_post_hoc_ema(parser, args)
        if args.guide_step is not None and not 0 < args.guide_step < (args.max_train_steps or math.inf):
            last = f" ({args.max_train_steps})" if args.max_train_steps else ""
            parser.error(
                f"--guide_step {args.guide_step}: the guide is the model of a step before the run's last{last}; give "
                "one from 1 on, e.g. half of --max_train_steps."
            )

    @staticmethod
    def _check_post_hoc_ema(parser, args):
        """Fill in the post-hoc EMA defaults, or refuse its settings without ``--post_hoc_ema``."""
        settings = ("post_hoc_ema_sigma_rels", "post_hoc_ema_every")
        given = [f"--{name}" for name in settings if getattr(args, name) is not None]
        if not args.post_hoc_ema:
            if given:
                parser.error(f"{' and '.join(given)} set(s) the post-hoc EMA profiles: add --post_hoc_ema.")
            return
        sigma_rels = post_hoc_ema.DEFAULT_SIGMA_RELS
        if args.post_hoc_ema_sigma_rels is not None:
            try:
                sigma_rels = post_hoc_ema.parse_sigma_rels(args.post_hoc_ema_sigma_rels)
            except ValueError as err:
                parser.error(f"--post_hoc_ema_sigma_rels: {err}")
        if len(set(sigma_rels)) < 2:
            parser.error("--post_hoc_ema_sigma_rels: give at least two different lengths (e.g. 0.05,0.28); one "
                         "profile cannot be combined into others.")  # fmt: skip
        args.post_hoc_ema_sigma_rels = sigma_rels
        if args.post_hoc_ema_every is None:
            args.post_hoc_ema_every = post_hoc_ema.DEFAULT_EVERY
        if args.post_hoc_ema_every < 1:
            parser.error("--post_hoc_ema_every must be at least 1 (steps between snapshots).")

    def __init__(self, args, accelerator, view, plan):
        super().__init__(args, accelerator, view, plan)
        if args.guide_step is not None and args.guide_step >= plan.max_train_steps:  # --num_epochs: known only now
            raise ValueError(
                f"--guide_step {args.guide_step}: this run ends at step {plan.max_train_steps}, and the guide is the "
                "model of an earlier step. Fix: give a step before it, e.g. half of it."
            )
        if args.class_conditional is None:
            args.class_conditional = view.labelled
            if not args.class_conditional:
                logger.info("No image of the dataset has a PM / non-PM label: training an unconditional model.")
        self.origin_counts = view.origin_counts() if args.origin_conditioning else None
        if self.origin_counts is not None and len(self.origin_counts) < 2:
            raise ValueError(
                f"--origin_conditioning: every image of --dataset {args.dataset} has one origin "
                f"({view.origin_names[0]}), so there is nothing to tell the UNet. Fix: leave --origin_conditioning "
                "out, or train on images of several cameras or collections named by a file-name prefix shared by at "
                "least 5 images (drions_001, drishti_002, ...) or by the source column."
            )
        unet = build_unet(
            args.model_config,
            args.resolution,
            num_channels(args.mask_names),
            class_conditional=args.class_conditional,
            dropout=args.dropout,
            rotation_conditioning=args.rotation_conditioning_prob > 0,
            coordinate_channels=args.patch_diffusion,
            flip_conditioning=args.flip_conditioning,
            num_origins=len(self.origin_counts or {}),
        )
        self.space_to_depth = preset_space_to_depth(args.model_config)
        if args.init_from:
            load_initial_weights(unet, args.init_from, args, list(self.origin_counts or {}))
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if args.channels_last:
            unet.to(memory_format=torch.channels_last)
        self.ema = loop.make_ema(unet, args, accelerator)
        self.region_weighting = None
        if args.region_loss_weight:
            channel = mask_channel(args.mask_names, args.region_loss_mask)
            self.region_weighting = RegionWeighting(channel, args.region_loss_weight, round(args.resolution * REGION_MARGIN))
        self.post_hoc_ema = None
        if args.post_hoc_ema:
            self.post_hoc_ema = post_hoc_ema.make_post_hoc_ema(
                unet, args.post_hoc_ema_sigma_rels, args.output_dir, accelerator.device
            )
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            fused=accelerator.device.type == "cuda",
        )
        # Stepped once per optimizer step by us, not by accelerate (which steps it once per process): the schedule
        # and its checkpointed position then mean the same on any number of processes, also across a resume.
        self.lr_scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer,
            num_warmup_steps=args.lr_warmup_steps,
            num_training_steps=plan.max_train_steps,
        )
        self.unet, self.optimizer = accelerator.prepare(unet, optimizer)  # the scheduler: loop.checkpoint_objects
        if args.compile:
            # In place: state-dict keys, hence checkpoints, stay eager ones. Static shapes: Patch Diffusion's three crop
            # sizes are three graphs, not a shape-agnostic recompile.
            self.unet.compile(mode=args.compile_mode, dynamic=False if args.patch_diffusion else None)
        self.noise_scheduler = make_noise_scheduler(args)

    def data_settings(self) -> dict:
        """With ``--origin_conditioning``, the origins the embeddings stand for (``origin_names`` order), which the
        dataset decides: a resume on data of other origins would give the ids other meanings."""
        return {"origin_conditioning": f"on the origins {','.join(self.origin_counts)}"} if self.origin_counts else {}

    def describe(self) -> str:
        alpha_bar = final_alpha_bar(self.noise_scheduler)
        args = self.args
        return (
            f"{sum(p.numel() for p in self.unet.parameters()) / 1e6:.1f}M-parameter UNet ({args.model_config}); "
            f"{args.beta_schedule} betas over T = {args.num_train_timesteps}, alpha-bar at t = T: {alpha_bar:.3g}"
            + (" (the model never sees pure noise)" if alpha_bar > 1e-3 else "")
        )

    def train_mode(self):
        self.unet.train()

    def step(self, batch) -> Dict[str, torch.Tensor]:
        """One forward/backward (an optimizer step once gradients are accumulated) and the EMA update; the gradient
        norm (before clipping) on optimizer steps."""
        args, accelerator = self.args, self.accelerator
        pixel_values, orientation_ids, coordinates = batch["pixel_values"], None, None
        class_labels = batch["class_labels"] if args.class_conditional else None
        origin_ids = batch["origin_ids"] if self.origin_counts else None
        mask_annotated = batch["mask_annotated"]
        if args.rotation_conditioning_prob > 0:  # before cropping: a crop's coordinates are in the turned image
            pixel_values, orientation_ids = random_quarter_turns(pixel_values, args.rotation_conditioning_prob)
        if args.flip_conditioning:  # the batch's flips, told as rotations are (pipeline_fundus.embedding_ids)
            mirrored = batch["flipped"].long()
            orientation_ids = mirrored if orientation_ids is None else orientation_ids + ROTATIONS * mirrored
        if args.patch_diffusion:
            size = patches.draw_patch_size(args.resolution, args.patch_full_share)
            pixel_values, coordinates, source = patches.random_patches(pixel_values, size)
            class_labels, mask_annotated, orientation_ids, origin_ids = (
                None if value is None else value[source]
                for value in (class_labels, mask_annotated, orientation_ids, origin_ids)
            )
        if args.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        metrics = {}
        with accelerator.accumulate(self.unet):
            loss = diffusion_loss(
                self.unet, self.noise_scheduler, pixel_values, class_labels, args.class_dropout_prob, args.snr_gamma,
                mask_annotated, orientation_ids, coordinates, self.region_weighting, origin_ids,
                len(self.origin_counts or {}), self.space_to_depth,
            )  # fmt: skip
            accelerator.backward(loss)
            if accelerator.sync_gradients:  # an infinite bound measures the norm without clipping
                bound = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
                metrics["grad_norm"] = accelerator.clip_grad_norm_(self.unet.parameters(), bound)
            self.optimizer.step()
            # An fp16 step whose gradients overflowed is skipped by the loss scaler: the schedule and the averages
            # then wait too (as accelerate's own scheduler wrapper would), so that warm-up counts real updates.
            updated = accelerator.sync_gradients and not self.optimizer.step_was_skipped
            if updated:
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if updated:
            self.ema.update()
            if self.post_hoc_ema is not None:
                self.post_hoc_ema.update()
        metrics["loss"] = loss.detach()
        return metrics

    def schedule_logs(self) -> Dict[str, float]:
        return {"lr": self.lr_scheduler.get_last_lr()[0], "ema_decay": self.ema.get_current_decay()}

    def validate(self, step: int):
        """A fixed-seed grid from the EMA weights with DPM-Solver++."""
        args = self.args
        scheduler = DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config)
        pipeline = make_pipeline(self.ema.ema_model, scheduler, args, self.origin_counts)
        pipeline.set_progress_bar_config(disable=True)
        labels = validation_labels(args.num_validation_images, args.class_conditional)
        generator = torch.Generator(self.accelerator.device).manual_seed(args.seed or 0)
        with self.accelerator.autocast():
            out = pipeline(
                batch_size=len(labels),
                class_labels=labels if args.class_conditional else None,
                generator=generator,
                num_inference_steps=args.validation_inference_steps,
            )
        captions = [" ".join(filter(None, parts)) for parts in zip(labels, out.origins or [None] * len(labels))]
        return contact_sheet(out.images, out.masks, captions=captions), {}

    def pipeline(self) -> FundusPipeline:
        return make_pipeline(self.ema.ema_model, self.noise_scheduler, self.args, self.origin_counts)

    def final_pipeline(self) -> FundusPipeline:
        """``pipeline`` with, under ``--guide_step``, the guide: the UNet of that step's snapshot."""
        pipe = self.pipeline()
        if self.args.guide_step is not None:
            folder = self.saved_guide("the end of the run")
            pipe.register_modules(guide_unet=UNet2DModel.from_pretrained(folder, subfolder="unet", use_safetensors=True))
        return pipe

    def check_resumed(self, step: int) -> None:
        if self.args.guide_step is not None and step >= self.args.guide_step:
            self.saved_guide(f"a resume at step {step}")

    def saved_guide(self, when: str) -> str:
        """The folder of the ``--guide_step`` snapshot, complete on disk (its ``model_index.json`` is written last),
        or a ``FileNotFoundError`` that says how to go on."""
        folder = loop.snapshot_folder(self.args.output_dir, self.args.guide_step)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(
                f"--guide_step {self.args.guide_step}: the guide, the snapshot of that step, is not in {folder}, and "
                f"{when} comes after that step (the snapshot was removed, or --guide_step was not given before). "
                "Fix: resume from a checkpoint before that step (--resume_from_checkpoint checkpoint-K), or leave "
                "--guide_step out (the model is then saved without a guide)."
            )
        return folder

    def snapshot_due(self, step: int) -> bool:
        return super().snapshot_due(step) or step == self.args.guide_step

    def training_info(self, final: bool = False) -> dict:
        args = self.args
        info = {
            "model_config": args.model_config,
            "noise schedule": f"{args.beta_schedule}, T = {args.num_train_timesteps}, {args.prediction_type}"
            + schedule_shift_description(args),
            "loss": (f"min-SNR-{args.snr_gamma:g} weighted MSE" if args.snr_gamma else "MSE") + (
                f", {1 + args.region_loss_weight:g} times the weight within {round(args.resolution * REGION_MARGIN)} "
                f"px of the {args.region_loss_mask} mask as the noisy input shows it" if args.region_loss_weight else ""
            ),
            "lr_scheduler": args.lr_scheduler,
        }
        if args.dropout is not None:
            info["dropout"] = args.dropout
        if args.patch_diffusion:
            quarter, half, _ = patches.patch_size_probabilities(args.patch_full_share)
            info["patch diffusion"] = (
                f"{args.patch_full_share:g} of the steps on whole images, {quarter:g} on {args.resolution // 4} px and "
                f"{half:g} on {args.resolution // 2} px crops with coordinate channels (Wang et al. 2023)"
            )
        if args.rotation_conditioning_prob:
            info["rotation conditioning"] = f"{args.rotation_conditioning_prob:g} of the images turned by quarter turns"
        if args.flip_conditioning:
            info["flip conditioning"] = "the UNet told which images were mirrored left-right; samples drawn unmirrored"
        if self.origin_counts:
            info["origin conditioning"] = (
                "the UNet told each image's origin ("
                + ", ".join(f"{name}: {count} images" for name, count in self.origin_counts.items())
                + "); samples drawn as one origin each, in these proportions unless one is asked for"
            )
        if args.init_from:
            info["initialised from"] = portable_name(args.init_from)
        if args.post_hoc_ema:
            info["post_hoc_ema"] = post_hoc_ema.describe_profiles(args.post_hoc_ema_sigma_rels, args.post_hoc_ema_every)
        if args.guide_step is not None and final:
            info["autoguidance guide"] = (
                f"the EMA model of step {args.guide_step} ships with the final model as its guide_unet: sample with "
                "autoguidance_scale (e.g. 1.5)"
            )
        return info


def parse_args(argv=None):
    """The DDPM trainer's flags (see ``args.add_common_args`` and ``DDPMKind.add_args``)."""
    return parse_training_args(DDPMKind, argv)


def train(args) -> str:
    """Train a DDPM as ``args`` say and return the folder holding the saved EMA pipeline."""
    return loop.train(args, DDPMKind)
