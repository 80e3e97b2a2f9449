"""``UNet2DModel`` presets for C-channel fundus tensors (stock diffusers model, configured, never subclassed)."""

from typing import Dict, Optional

from diffusers import UNet2DModel

from ..data.schema import NUM_CLASS_EMBEDS
from ..pipelines.pipeline_fundus import COORDINATE_CHANNELS, conditions, nearest_sizes, size_multiple

# Each preset: channels per resolution level, resnets per level, which levels get self-attention (by index, 0 = the
# first level: the image's resolution, or 1 / space_to_depth of it where a preset sets that), head width, dropout and
# norm groups. Attention sits where feature maps are 8-32 px at the preset's intended resolution; 64-wide heads suit
# the fused attention kernels.
UNET_PRESETS: Dict[str, dict] = {
    # CPU tests and the demo: about 1.1M parameters and no attention (on a CPU it costs more than it gives here).
    "tiny": dict(channels=(32, 64, 64), layers=1, attention=(), head_dim=32, dropout=0.0, groups=8),
    # The paper's 64 px DDPM (after dome272 / Rampas' UNet: 64-128-256 with attention at 32, 16 and 8 px).
    "paper": dict(channels=(64, 128, 256, 256), layers=2, attention=(1, 2, 3), head_dim=64, dropout=0.0, groups=32),
    # Our 64 px model: the widths of Ho et al.'s CIFAR-10 DDPM (128-256-256-256), attention at 16 px, dropout 0.1.
    "base64": dict(channels=(128, 256, 256, 256), layers=2, attention=(2,), head_dim=64, dropout=0.1, groups=32),
    # Our 256 px model: the widths of diffusers' unconditional example (about 114M parameters), attention at 16 px.
    "base256": dict(
        channels=(128, 128, 256, 256, 512, 512), layers=2, attention=(4,), head_dim=64, dropout=0.1, groups=32
    ),
    # A lighter 256 px model (about 39M parameters, half the width at full resolution: a quarter of the FLOPs there)
    # for small datasets and short GPU budgets: more epochs in the same minutes.
    "small256": dict(
        channels=(64, 128, 128, 256, 256, 256), layers=2, attention=(4,), head_dim=64, dropout=0.1, groups=32
    ),
    # small256 with self-attention also at 32 px, where a 256 px image's optic disc (30-40 px across) is a few feature
    # cells: the realism ablation's test of whether the mottled generated discs lack long-range coherence there.
    "small256_attn32": dict(
        channels=(64, 128, 128, 256, 256, 256), layers=2, attention=(3, 4), head_dim=64, dropout=0.1, groups=32
    ),
    # small256 without its 256 px level: the image's 2 x 2 pixel blocks become channels of a 128 px UNet
    # (space_to_depth, pipeline_fundus.unet_output) whose levels are small256's from 128 px down. The 256 px level
    # held 44 % of small256's convolution work and 63 % of its GroupNorm traffic (RESULTS.md, session 30): the
    # candidate for sampling and training faster at 256 px (issue 19).
    "small256_s2d": dict(
        channels=(128, 128, 256, 256, 256), layers=2, attention=(3,), head_dim=64, dropout=0.1, groups=32,
        space_to_depth=2,
    ),
}


def preset_space_to_depth(preset: str) -> int:
    """The preset's ``space_to_depth`` factor (the pipeline's; 1: the UNet works at the image's resolution)."""
    return UNET_PRESETS[preset].get("space_to_depth", 1)


def preset_size_multiple(preset: str) -> int:
    """What the preset's image sizes must be multiples of (``pipeline_fundus.size_multiple``)."""
    return size_multiple(len(UNET_PRESETS[preset]["channels"]), preset_space_to_depth(preset))


def build_unet(
    preset: str,
    resolution: int,
    in_channels: int,
    class_conditional: bool = True,
    dropout: Optional[float] = None,
    rotation_conditioning: bool = False,
    coordinate_channels: bool = False,
    flip_conditioning: bool = False,
    num_origins: int = 0,
) -> UNet2DModel:
    """A ``UNet2DModel`` mapping ``in_channels`` to ``in_channels`` for ``resolution`` px images; with
    ``coordinate_channels`` it also reads the ``COORDINATE_CHANNELS`` of Patch Diffusion
    (``pipeline_fundus.coordinate_channels``). A preset with ``space_to_depth`` f (``preset_space_to_depth``) gets a
    UNet of ``resolution / f`` px and f * f times the channels, which the pipeline calls through
    ``pipeline_fundus.unet_output``.

    Class-conditional models get ``NUM_CLASS_EMBEDS`` class embeddings: non-PM, PM and the null class that unknown
    labels and classifier-free guidance use. ``rotation_conditioning`` multiplies them by ``ROTATIONS`` (one per
    quarter turn of each class), ``flip_conditioning`` by ``FLIPS`` (mirrored or not) and ``num_origins`` (origin
    conditioning; 0: none) by that; an unconditional model gets one per condition: see
    ``pipeline_fundus.embedding_ids``.
    ``dropout`` replaces the preset's.
    """
    if preset not in UNET_PRESETS:
        raise ValueError(f"Unknown UNet preset {preset!r}; choose from {', '.join(UNET_PRESETS)}.")
    p = UNET_PRESETS[preset]
    levels = range(len(p["channels"]))
    block, multiple = preset_space_to_depth(preset), preset_size_multiple(preset)
    if resolution < multiple or resolution % multiple:
        raise ValueError(
            f"The {preset} UNet takes square sizes that are multiples of {multiple} px; got {resolution}. Fix: "
            f"{nearest_sizes(resolution, multiple)}."
        )
    if coordinate_channels and block > 1:
        raise ValueError(
            f"The {preset} UNet works on {block} x {block} pixel blocks and Patch Diffusion's coordinate channels on "
            "pixels: choose a preset without space_to_depth for Patch Diffusion."
        )
    num_class_embeds = NUM_CLASS_EMBEDS if class_conditional else None
    if rotation_conditioning or flip_conditioning or num_origins:
        num_class_embeds = (num_class_embeds or 1) * conditions(rotation_conditioning, flip_conditioning, num_origins)
    unet = UNet2DModel(
        sample_size=resolution // block,
        in_channels=(in_channels + (COORDINATE_CHANNELS if coordinate_channels else 0)) * block**2,
        out_channels=in_channels * block**2,
        block_out_channels=p["channels"],
        layers_per_block=p["layers"],
        down_block_types=tuple("AttnDownBlock2D" if i in p["attention"] else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in p["attention"] else "UpBlock2D" for i in reversed(levels)),
        attention_head_dim=p["head_dim"],
        dropout=p["dropout"] if dropout is None else dropout,
        norm_num_groups=p["groups"],
        resnet_time_scale_shift="scale_shift",
        num_class_embeds=num_class_embeds,
    )
    return unet
