"""FundusPipeline: a class-conditional ``UNet2DModel`` and any diffusers scheduler -> fundus images and their masks;
given some channels (an image, some masks), the rest of them (images from masks, masks from images).

This file imports only torch, diffusers, numpy, PIL and the standard library: ``save_pretrained`` copies it into the
saved folder as ``pipeline.py``, so that the folder loads on a machine without fundus-diffusion::

    DiffusionPipeline.from_pretrained(folder_or_hub_id, trust_remote_code=True)

Only ``push_to_hub`` needs fundus-diffusion (its model card), and imports it when called (``push_with_model_card``).
"""

import importlib
import inspect
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, SchedulerMixin, UNet2DModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

# ----------------------------------------------------------------------------------------------------------------
# Shared by the fundus pipelines: pipeline_fundus_gan.py imports these relatively (``from .pipeline_fundus import``),
# and a saved GAN folder carries this file beside its pipeline.py, where diffusers finds it (locally and on the Hub).
# ----------------------------------------------------------------------------------------------------------------
IMAGE_CHANNELS = 3
DEFAULT_MASK_NAMES = ("disc", "atrophy")  # channel 3, channel 4
ROTATIONS = 4  # quarter turns a rotation-conditioned UNet is told about: 0, 90, 180 and 270 degrees
FLIPS = 2  # a flip-conditioned UNet is told whether the image was mirrored left-right
COORDINATE_CHANNELS = 2  # x and y of each pixel, read by a UNet trained with Patch Diffusion (coordinate_channels)
DEFAULT_ID2LABEL = {0: "non-PM", 1: "PM"}  # the null class (unknown label, unconditional) is len(id2label)
UNKNOWN_LABEL = -1
PIPELINE_FILE = "pipeline.py"  # model_index.json's "_class_name": ["pipeline", "<class>"] names this copy
# model_index.json stores mask_names as "disc,atrophy": diffusers takes every list there for a component, and loading
# from the Hub then looks for the component "mask_names" (a list of names loads from a local folder only).
MASK_NAME_SEPARATOR = ","
# Where diffusers loaded a pipeline or component from: it writes this key into model_index.json and every component's
# config when a loaded pipeline is saved again; for a local folder that is its path, which means nothing on another
# machine and can name people (a clinic's folder). A save drops it from these files.
LOADED_FROM_KEY = "_name_or_path"
SAVED_CONFIGS = ("model_index.json", "config.json", "scheduler_config.json")
# The module that renders a saved folder's model card (research-only notice, channels, metrics): push_to_hub uploads
# through it, and so needs fundus-diffusion installed (loading and sampling a folder never do).
CARD_MODULE = "fundus_diffusion.hub"

Label = Union[str, int, None]


@dataclass
class FundusPipelineOutput(BaseOutput):
    """
    Args:
        images (`List[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            RGB images: PIL images, float32 ``[B, H, W, 3]`` in [0, 1] (``np``) or ``[B, 3, H, W]`` in [0, 1] (``pt``).
        masks (`List[Dict[str, ...]]`):
            Per sample, ``{mask name: binary mask}`` as an ``L`` image (0 / 255) or an ``[H, W]`` array in {0, 1}.
        origins (`List[str]`, *optional*):
            Per sample, the origin (camera or collection) it was drawn as, for a model trained with origin
            conditioning; None otherwise.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    masks: List[Dict[str, Union[PIL.Image.Image, np.ndarray, torch.Tensor]]]
    origins: Optional[List[str]] = None  # per sample, the origin it was drawn as (an origin-conditioned model only)


def coordinate_channels(resolution: int, batch_size: int, device, dtype) -> torch.Tensor:
    """``[batch_size, 2, resolution, resolution]``: each pixel's column (channel 0) and row (channel 1) scaled to
    [-1, 1] across the whole image. A UNet trained with Patch Diffusion (Wang et al. 2023; ``fundus_diffusion.training
    .patches``) saw crops of its training images with these values where the crops lay; sampling gives it the whole
    grid beside the noisy channels, so it denoises whole images."""
    positions = torch.linspace(-1, 1, resolution, device=device, dtype=dtype)
    grid = torch.stack([positions.expand(resolution, -1), positions[:, None].expand(-1, resolution)])
    return grid.expand(batch_size, -1, -1, -1)


def reads_coordinates(unet_config) -> bool:
    """Whether a UNet takes the ``COORDINATE_CHANNELS`` beside its noisy channels (trained with Patch Diffusion)."""
    return unet_config.in_channels == unet_config.out_channels + COORDINATE_CHANNELS


def unet_output(unet, sample: torch.Tensor, timestep, class_labels=None, space_to_depth: int = 1) -> torch.Tensor:
    """``unet``'s prediction for ``sample`` (``[B, C, H, W]``), at the sample's resolution. With ``space_to_depth``
    f > 1 the UNet works at 1 / f of it on f * f times the channels: each f x f block of pixels becomes the channels
    of one cell (``pixel_unshuffle``, the invertible downsampling of Hoogeboom et al.'s simple diffusion, 2023) and
    the prediction is put back the same way, so that no level of the network runs at the full resolution, where a
    256 px UNet spends most of its time. Training and sampling both call the UNet through this."""
    if space_to_depth == 1:
        return unet(sample, timestep, class_labels=class_labels).sample
    prediction = unet(F.pixel_unshuffle(sample, space_to_depth), timestep, class_labels=class_labels).sample
    return F.pixel_shuffle(prediction, space_to_depth)


def size_multiple(num_levels: int, space_to_depth: int = 1) -> int:
    """What a UNet's image sizes must be multiples of: its ``space_to_depth`` blocks, then a halving per level after
    the first."""
    return 2 ** (num_levels - 1) * space_to_depth


def nearest_sizes(resolution: int, multiple: int) -> str:
    """The valid sizes either side of ``resolution`` for an error's fix: ``"16 or 24"``."""
    lower = max(multiple, resolution // multiple * multiple)
    return f"{lower} or {lower + multiple}"


def block_size(unet_channels: int, channels_per_pixel: int) -> Optional[int]:
    """The f of f x f pixel blocks whose channels a UNet of ``unet_channels`` reads, ``channels_per_pixel`` each
    (1: single pixels); None when no whole square block fits."""
    cells = unet_channels // channels_per_pixel
    if unet_channels % channels_per_pixel or math.isqrt(cells) ** 2 != cells:
        return None
    return math.isqrt(cells)


def split_mask_names(mask_names: Union[str, Sequence[str]]) -> List[str]:
    """``"disc,atrophy"`` (as ``model_index.json`` stores them), ``"disc"``, ``""`` or a list -> a list of names."""
    if isinstance(mask_names, str):
        return mask_names.split(MASK_NAME_SEPARATOR) if mask_names else []
    return list(mask_names)


def check_fundus_config(
    model_name, channels, num_class_embeds, image_channels, mask_names, id2label, rotation_conditioning=False,
    flip_conditioning=False, origin_counts=None, space_to_depth=1,
):  # fmt: skip
    """Check a model's ``channels`` (``{"in": n, "out": n}``; a UNet on ``space_to_depth`` x ``space_to_depth``
    pixel blocks has that square times a pixel's), class embeddings and ``origin_counts`` against the pipeline's
    settings; returns the normalised ``(mask_names, id2label)``: ``mask_names`` a list, also when given as
    ``"disc,atrophy"``. A rotation-, flip- or origin-conditioned model has ``conditions(...)`` embeddings per class
    (see ``embedding_ids``)."""
    mask_names = split_mask_names(mask_names)
    if len(set(mask_names)) != len(mask_names) or not all(
        isinstance(m, str) and m and MASK_NAME_SEPARATOR not in m for m in mask_names
    ):
        raise ValueError(
            f"mask_names must be distinct non-empty names without {MASK_NAME_SEPARATOR!r}, e.g. ['disc', 'atrophy'] "
            f"or 'disc,atrophy'; got {mask_names!r}."
        )
    id2label = {int(k): v for k, v in (id2label or DEFAULT_ID2LABEL).items()}
    expected = (image_channels + len(mask_names)) * space_to_depth**2
    if any(c != expected for c in channels.values()):
        blocks = f" ({image_channels + len(mask_names)} per pixel of its {space_to_depth} x {space_to_depth} blocks)"
        raise ValueError(
            f"{image_channels} image channels and masks {mask_names} need a {model_name} with {expected} "
            f"{' and '.join(f'{k}put' for k in channels)} channels{blocks if space_to_depth > 1 else ''}; this one has "
            f"{' and '.join(f'{v} {k}' for k, v in channels.items())}."
        )
    if origin_counts is not None and (
        len(origin_counts) < 2
        or not all(isinstance(name, str) and name for name in origin_counts)
        or not all(isinstance(count, int) and count > 0 for count in origin_counts.values())
    ):
        raise ValueError(
            "origin_counts names the origins an origin-conditioned model was trained on and how many training images "
            f"each had: at least two names with positive counts, e.g. {{'drions': 72, 'drishti': 62}}; got "
            f"{origin_counts!r}."
        )
    num_origins = len(origin_counts or {})
    views = conditions(rotation_conditioning, flip_conditioning, num_origins)
    if views > 1 and (not num_class_embeds or num_class_embeds % views):
        kinds = [k for k, on in (("rotations", rotation_conditioning), ("flips", flip_conditioning),
                                 (f"{num_origins} origins", num_origins)) if on]  # fmt: skip
        raise ValueError(
            f"A {model_name} conditioned on {' and '.join(kinds)} has {views} class embeddings per class (one per "
            f"orientation and origin); this one has {num_class_embeds}. Fix: load it with the rotation_conditioning, "
            "flip_conditioning and origin_counts it was trained with (its model_index.json says which)."
        )
    classes = class_embeddings(num_class_embeds, rotation_conditioning, flip_conditioning, num_origins)
    if classes is not None and classes != len(id2label) + 1:
        raise ValueError(
            f"The {model_name} has {classes} class embeddings{' per orientation and origin' if views > 1 else ''}"
            f"; labels {id2label} plus the null class need {len(id2label) + 1}."
        )
    return mask_names, id2label


def orientations(rotation_conditioning: bool = False, flip_conditioning: bool = False) -> int:
    """How many orientations a conditioned UNet tells apart: ``ROTATIONS`` quarter turns, each also mirrored with
    flip conditioning (``FLIPS``); 1 without either."""
    return (ROTATIONS if rotation_conditioning else 1) * (FLIPS if flip_conditioning else 1)


def conditions(rotation_conditioning: bool = False, flip_conditioning: bool = False, num_origins: int = 0) -> int:
    """How many conditions a UNet's class embeddings hold per class: each orientation (``orientations``) of each
    origin for an origin-conditioned UNet (``num_origins``; 0: none)."""
    return orientations(rotation_conditioning, flip_conditioning) * max(num_origins, 1)


def class_embeddings(
    num_class_embeds: Optional[int], rotation_conditioning: bool = False, flip_conditioning: bool = False,
    num_origins: int = 0,
) -> Optional[int]:  # fmt: skip
    """How many classes a model's class embeddings stand for (per condition, for a rotation-, flip- or origin-
    conditioned UNet); None when it takes no class labels (no embeddings, or embeddings for conditions alone)."""
    classes = (num_class_embeds or 0) // conditions(rotation_conditioning, flip_conditioning, num_origins)
    return classes if classes > 1 else None


def takes_class_labels(
    num_class_embeds: Optional[int], rotation_conditioning: bool = False, flip_conditioning: bool = False,
    num_origins: int = 0,
) -> bool:  # fmt: skip
    """Whether a model with these class embeddings follows class labels."""
    return class_embeddings(num_class_embeds, rotation_conditioning, flip_conditioning, num_origins) is not None


def embedding_ids(
    class_ids: Optional[torch.Tensor],
    orientation_ids: Optional[torch.Tensor],
    num_classes: int,
    origin_ids: Optional[torch.Tensor] = None,
    num_origins: int = 0,
) -> Optional[torch.Tensor]:
    """The UNet's class-embedding index of each sample: ``condition * num_classes + class id``, where the condition
    is the orientation, or ``orientation * num_origins + origin`` for an origin-conditioned UNet.

    Rotation conditioning (EDM's non-leaking augmentation, Karras et al. 2022, with quarter turns): training rotates
    some images by ``k`` quarter turns and tells the UNet ``k`` through its class embedding, so the model learns from
    more views of a small set without learning to draw rotated photographs; sampling asks for ``k = 0``. Flip
    conditioning tells it the same of left-right mirroring (a camera's number stamp, text: what a mirrored photograph
    shows that no photograph does): the orientation is ``k + ROTATIONS * mirrored`` with both, ``mirrored`` alone
    without rotations, and 0 (upright, as photographed) at sampling. Origin conditioning tells it each training
    image's origin (camera or collection, ``origin_ids`` in ``[0, num_origins)``), so that one model draws each
    camera's look instead of a blend of them; sampling asks for one origin per sample. An unconditional model has one
    class (id 0). ``orientation_ids`` and ``origin_ids`` None: no such conditioning, the class ids as given.
    """
    if orientation_ids is None and origin_ids is None:
        return class_ids
    condition = orientation_ids if orientation_ids is not None else torch.zeros_like(origin_ids)
    if origin_ids is not None:
        condition = condition * num_origins + origin_ids
    if class_ids is None:
        class_ids = torch.zeros_like(condition)
    return condition * num_classes + class_ids


def class_ids(id2label: dict, class_labels: Union[Label, Sequence[Label]], batch_size: int, device) -> torch.Tensor:
    """Names, ids, ``None`` or -1 (the null class ``len(id2label)``) -> a ``[batch_size]`` tensor of class ids."""
    if isinstance(class_labels, (str, int)) or class_labels is None:
        class_labels = [class_labels] * batch_size
    if len(class_labels) != batch_size:
        raise ValueError(f"Got {len(class_labels)} class labels for a batch of {batch_size}.")
    id2label = {int(k): v for k, v in id2label.items()}
    label2id = {v: k for k, v in id2label.items()}
    ids = []
    for label in class_labels:
        if label is None or (not isinstance(label, str) and int(label) == UNKNOWN_LABEL):
            ids.append(len(id2label))
        elif isinstance(label, str) and label in label2id:
            ids.append(label2id[label])
        elif not isinstance(label, str) and int(label) in id2label:
            ids.append(int(label))
        else:
            raise ValueError(
                f"Unknown class label {label!r}: use one of {list(label2id)}, an id in {list(id2label)}, "
                "or None / -1 for unconditional samples."
            )
    return torch.tensor(ids, dtype=torch.long, device=device)


def tensor_to_outputs(x: torch.Tensor, mask_names: Sequence[str], output_type: str = "pil"):
    """Model output ``[B, 3 + len(mask_names), H, W]`` in [-1, 1] -> ``(images, masks)``.

    ``pil``: RGB images and ``{name: L image (0 / 255)}`` per sample; ``np``: float32 ``[B, H, W, 3]`` in [0, 1] and
    ``{name: float32 [H, W] in {0, 1}}``; ``pt``: ``[B, 3, H, W]`` in [0, 1] and ``{name: [H, W] in {0, 1}}``. A mask
    pixel is set where its channel is > 0.
    """
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}.")
    if x.ndim != 4 or x.shape[1] != IMAGE_CHANNELS + len(mask_names):
        raise ValueError(f"Expected [B, {IMAGE_CHANNELS + len(mask_names)}, H, W] for masks {list(mask_names)}, got {list(x.shape)}.")
    images = (x[:, :IMAGE_CHANNELS].float() / 2 + 0.5).clamp(0, 1)
    masks = [{name: (x[i, IMAGE_CHANNELS + c].float() > 0).float() for c, name in enumerate(mask_names)} for i in range(len(x))]
    if output_type == "pt":
        return images, masks
    images = images.permute(0, 2, 3, 1).cpu().numpy()
    masks = [{name: m.cpu().numpy() for name, m in sample.items()} for sample in masks]
    if output_type == "np":
        return images, masks
    pil_images = [PIL.Image.fromarray((im * 255).round().astype(np.uint8), mode="RGB") for im in images]
    pil_masks = [{name: PIL.Image.fromarray((m * 255).astype(np.uint8), mode="L") for name, m in s.items()} for s in masks]
    return pil_images, pil_masks


def save_pretrained_with_code(
    pipeline, save_directory, pipeline_file: str, components: Optional[Dict[str, type]] = None, push_to_hub=False,
    **kwargs,
):
    """``DiffusionPipeline.save_pretrained`` (safetensors only), then the code that diffusers alone needs to load the
    folder with ``trust_remote_code=True``, locally and from the Hub (``mask_names`` written as one string: see
    ``MASK_NAME_SEPARATOR``):

    - ``pipeline_file`` (the pipeline class's file) as ``pipeline.py``, named in ``model_index.json``;
    - beside it, the modules it imports relatively: this file (unless it is ``pipeline_file``) and the module of each
      custom component. From the Hub, diffusers downloads them as ``pipeline.py``'s relative imports;
    - for each custom component in ``components`` (``{name: its class}``), the class's module as
      ``<name>/<module>.py``, named in ``model_index.json``. From the Hub, diffusers downloads only that file of the
      component's folder: the module must import nothing relatively.

    The configs keep no local path: ``drop_local_paths`` removes where a loaded pipeline came from.
    """
    if not kwargs.pop("safe_serialization", True):
        raise ValueError("Fundus pipelines save weights as safetensors only: pickle files run code when loaded.")
    push_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "token", "private", "create_pr", "commit_message") if k in kwargs}
    DiffusionPipeline.save_pretrained(pipeline, save_directory, **kwargs)
    drop_local_paths(save_directory)
    code = {PIPELINE_FILE: pipeline_file}
    if os.path.abspath(pipeline_file) != os.path.abspath(__file__):
        code[os.path.basename(__file__)] = __file__
    modules = {name: inspect.getfile(component) for name, component in (components or {}).items()}
    for name, module_file in modules.items():
        code[os.path.basename(module_file)] = code[f"{name}/{os.path.basename(module_file)}"] = module_file
    for target, source in code.items():
        shutil.copyfile(source, os.path.join(save_directory, target))
    path = os.path.join(save_directory, "model_index.json")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [PIPELINE_FILE[: -len(".py")], type(pipeline).__name__]
    index["mask_names"] = MASK_NAME_SEPARATOR.join(index["mask_names"])
    for name, module_file in modules.items():
        index[name] = [os.path.basename(module_file)[: -len(".py")], index[name][1]]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    if push_to_hub:  # push_to_hub uploads a fresh save with its model card (push_with_model_card)
        repo_id = push_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
        pipeline.push_to_hub(repo_id, **push_kwargs)


def drop_local_paths(folder: str) -> None:
    """Remove ``LOADED_FROM_KEY`` (where a loaded pipeline and its components came from) from the saved configs of
    ``folder``: ``model_index.json`` and each component's ``config.json`` / ``scheduler_config.json``."""
    paths = [os.path.join(folder, SAVED_CONFIGS[0])]
    paths += [os.path.join(folder, entry, name) for entry in sorted(os.listdir(folder)) for name in SAVED_CONFIGS[1:]]
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if config.pop(LOADED_FROM_KEY, None) is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def push_with_model_card(pipeline, repo_id: str, **kwargs) -> str:
    """``push_to_hub`` of the fundus pipelines: ``fundus_diffusion.hub.push_pipeline``, which uploads what
    ``fundus_diffusion.hub.save_model`` writes (weights, configs without local paths, code, ``metrics.json`` and the
    model card with its research-only notice and channel definitions) instead of diffusers' generic card. The card's
    templates are fundus-diffusion's, so the package is imported here, when a push is asked for, and never to load or
    sample a folder."""
    try:
        hub = importlib.import_module(CARD_MODULE)
    except ImportError as err:
        raise ImportError(
            f"push_to_hub uploads a fundus pipeline with its model card (research-only notice, channels, metrics), "
            f"which fundus-diffusion renders, and {CARD_MODULE} cannot be imported here ({err}). Fix: pip install "
            "fundus-diffusion, then push_to_hub again; or upload a folder that fundus_diffusion.hub.save_model wrote "
            "(its README.md is the card) with huggingface_hub.upload_folder."
        ) from err
    return hub.push_pipeline(pipeline, repo_id, **kwargs)


def config_for_this_class(config: dict, components: Sequence[str] = ()) -> dict:
    """``model_index.json`` as read by a fundus pipeline class itself: the class is the caller (not the folder's copy
    of this file, which diffusers would run with ``trust_remote_code=True``), and ``components`` are dropped because
    the class loads them with its own code (see ``FundusGANPipeline.from_pretrained``). ``mask_names`` saved as a
    list (before ``MASK_NAME_SEPARATOR``) becomes one string, which loads from the Hub too."""
    if isinstance(config.get("_class_name"), (list, tuple)):
        config["_class_name"] = config["_class_name"][-1]
    if isinstance(config.get("mask_names"), list):
        config["mask_names"] = MASK_NAME_SEPARATOR.join(config["mask_names"])
    for name in components:
        config.pop(name, None)
    return config


# ------------------------------------------------------------------------------------ end of the shared block

# Schedulers whose step depends only on (model output, timestep, sample) and whose marginals are alphas_cumprod's:
# a step can be done again after noising the sample back (RePaint resampling). Multistep solvers (DPM-Solver++, UniPC)
# and Euler keep a step index and earlier model outputs that a repeated step would corrupt.
RESAMPLING_SCHEDULERS = (DDPMScheduler, DDIMScheduler)


def per_sample(value, batch_size: int, what: str) -> list:
    """One value for the whole batch, or a list (or a batched ``[B, ...]`` array / tensor) of one per sample -> a
    list of ``batch_size`` values."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4:
        value = list(value)
    if not isinstance(value, (list, tuple)):
        return [value] * batch_size
    if len(value) != batch_size:
        raise ValueError(
            f"Got {len(value)} {what} for a batch of {batch_size}: give one per sample (batch_size={len(value)}), or "
            "one for the whole batch."
        )
    return list(value)


def export_command(resolution: int) -> str:
    """The command that frames a built dataset's photographs and masks as training did, at ``resolution`` px."""
    return (
        f"fundus-export-dataset --dataset <it> --format imagefolder --resolution {resolution} --masks <the model's "
        "masks> --output_dir <a new folder>"
    )


def size_error(where: str, width: int, height: int, resolution: int, kind: str) -> str:
    """Why a ``kind`` ("photograph" or "mask") of ``width`` x ``height`` px does not fit, and the fix: training
    cropped each photograph and its masks to a square around the fundus field before resizing, so a plain resize of
    anything else stretches it against what the model learnt."""
    fit = f"{resolution}x{resolution}"
    frame = (
        f"frame the photograph and its masks together as training did (a mask by its own photograph's fundus field): "
        f"fundus_diffusion.frame_pair(photograph, masks, resolution={resolution}) (the fundus-diffusion package), or "
        f"for a folder fundus-build-dataset, then {export_command(resolution)}"
    )
    problem = f"{where} is {width}x{height} px; this pipeline generates {fit} px (resolution={resolution})"
    if width != height:
        return f"{problem}, and a resize would stretch it. Fix: {frame}."
    how = " with nearest-neighbour interpolation" if kind == "mask" else ""
    return f"{problem}. Fix: if it is framed as training framed it (the fundus field cropped to a square), resize it to {fit}{how}; if not, {frame}."


def image_to_channels(image, resolution: int, where: str) -> torch.Tensor:
    """An RGB image (PIL; ``[H, W, 3]`` array or ``[3, H, W]`` tensor, float in [0, 1] or uint8) -> ``[3, H, W]`` in
    [-1, 1], the model's image channels. The formats are ``__call__``'s outputs, so an output can be fed back."""
    if isinstance(image, PIL.Image.Image):
        x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == IMAGE_CHANNELS:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == IMAGE_CHANNELS:
        x = image.detach().cpu()
    else:
        raise ValueError(
            f"{where}: give an RGB PIL image, an [H, W, 3] array or a [3, H, W] tensor; got "
            f"{type(image).__name__}{list(getattr(image, 'shape', []))}."
        )
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.shape[-2:] != (resolution, resolution):
        raise ValueError(size_error(where, x.shape[-1], x.shape[-2], resolution, "photograph"))
    if not (x.min() >= 0 and x.max() <= 1):  # also catches NaN
        raise ValueError(f"{where} has values outside [0, 1]: give float images in [0, 1] or uint8 images.")
    return x * 2 - 1


def mask_to_channel(mask, resolution: int, where: str) -> torch.Tensor:
    """A binary mask (``L`` PIL image, 255 = structure; ``[H, W]`` array or tensor, bool or in [0, 1]) -> ``[H, W]``
    in {-1, +1}, the model's mask channel. A PIL pixel is set at >= 128, an array's at > 0.5. An image with pixels
    above 0 but none at 128 or more (a mask saved as 0 / 1) is refused: it would condition on an empty mask."""
    if isinstance(mask, PIL.Image.Image):
        values = np.asarray(mask.convert("L"))
        x = torch.from_numpy(values >= 128)
        if values.any() and not x.any():
            raise ValueError(
                f"{where} has pixels above 0 (at most {values.max()}) but none at 128 or more, so as an L image (255 = "
                "structure) it is an empty mask; a mask saved as 0 / 1 looks so. Fix: give it as 0 / 255 "
                "(mask.point(lambda v: 255 if v else 0)) or as an [H, W] array in {0, 1}."
            )
    elif isinstance(mask, (np.ndarray, torch.Tensor)) and mask.ndim == 2:
        x = torch.as_tensor(mask).detach().cpu().float()
        if not (x.min() >= 0 and x.max() <= 1):
            raise ValueError(
                f"{where} has values outside [0, 1]: give arrays as bool or in [0, 1], or an L image (255 = structure)."
            )
        x = x > 0.5
    else:
        raise ValueError(
            f"{where}: give an L PIL image or an [H, W] array / tensor; got "
            f"{type(mask).__name__}{list(getattr(mask, 'shape', []))}."
        )
    if x.shape != (resolution, resolution):
        raise ValueError(size_error(where, x.shape[1], x.shape[0], resolution, "mask"))
    return x.float() * 2 - 1


def known_channels(image, masks, mask_names: Sequence[str], batch_size: int, resolution: int):
    """The channels given for each sample: ``(x0, known)``, ``x0`` ``[B, C, R, R]`` in [-1, 1] (zero where not
    given) and ``known`` a ``[B, C, 1, 1]`` bool, or ``(None, None)`` when nothing is given.

    ``image``: one RGB image for the batch or one per sample. ``masks``: ``{mask name: mask}`` for the batch or one
    such dict per sample; a sample may give only some of the model's masks (a ``None`` value counts as not given),
    and the rest are generated.
    """
    if image is None and masks is None:
        return None, None
    if not mask_names:
        raise ValueError(
            "This model generates images only (its mask_names is empty): there are no mask channels to generate from "
            "an image or to condition on; sample it without image= and masks=."
        )
    x0 = torch.zeros(batch_size, IMAGE_CHANNELS + len(mask_names), resolution, resolution)
    known = torch.zeros(batch_size, IMAGE_CHANNELS + len(mask_names), 1, 1, dtype=torch.bool)
    if image is not None:
        for i, sample_image in enumerate(per_sample(image, batch_size, "images")):
            x0[i, :IMAGE_CHANNELS] = image_to_channels(sample_image, resolution, f"The image of sample {i}")
            known[i, :IMAGE_CHANNELS] = True
    for i, given in enumerate(per_sample(masks, batch_size, "mask sets") if masks is not None else []):
        if not isinstance(given, dict):
            raise ValueError(f"masks: give {{mask name: mask}} per sample, e.g. {{'disc': disc_image}}; got {type(given).__name__}.")
        unknown = [name for name in given if name not in mask_names]
        if unknown:
            raise ValueError(f"Unknown mask name(s) {unknown} in masks=: this model's masks are {list(mask_names)}.")
        for name, mask in given.items():
            if mask is not None:
                channel = IMAGE_CHANNELS + list(mask_names).index(name)
                x0[i, channel] = mask_to_channel(mask, resolution, f"Mask {name!r} of sample {i}")
                known[i, channel] = True
    return x0, known


def starting_noise(shape, generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``randn_tensor(shape, generator, device, dtype)``, the same numbers, but with one CPU generator per sample the
    samples' noise is drawn in parallel threads (as many as torch's intra-op threads: ``OMP_NUM_THREADS`` and
    ``torch.set_num_threads`` bound it): torch draws each call's normal numbers on one core, and a GPU waits for the
    whole batch's before its first step. A generator listed twice draws in turn, as there its order matters."""
    generators = generator if isinstance(generator, list) else []
    workers = min(len(generators), torch.get_num_threads())
    distinct_cpu = len({id(g) for g in generators}) == len(generators) and all(
        g is not None and g.device.type == "cpu" for g in generators
    )
    if workers < 2 or not distinct_cpu:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    with ThreadPoolExecutor(workers) as pool:
        drawn = pool.map(lambda g: torch.randn((1, *shape[1:]), generator=g, dtype=dtype), generators)
        return torch.cat(list(drawn)).to(device)


def step_noise_generators(generator, device: torch.device):
    """Generators for the noise a stochastic scheduler (DDPM, DDIM with eta > 0) draws at every step.

    CPU generators make the starting noise the same on any machine, but drawing every step's noise on the CPU made
    sampling host-bound on a GPU. On another device, each CPU generator seeds one generator there from its state
    after the starting noise, without advancing it: samples still depend only on their own generator, and what the
    caller's generators give next is unchanged.
    """
    generators = generator if isinstance(generator, list) else [generator]
    if device.type == "cpu" or any(g is None or g.device.type != "cpu" for g in generators):
        return generator
    derived = [torch.Generator(device).manual_seed(_peek_seed(g)) for g in generators]
    return derived if isinstance(generator, list) else derived[0]


def _peek_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator`` whose state is then put back."""
    state = generator.get_state()
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    generator.set_state(state)
    return seed


def draw_origins(weights: Sequence[int], generator, batch_size: int, device) -> torch.Tensor:
    """Each sample's origin id (``[batch_size]`` long), drawn in proportion to ``weights`` (training images per
    origin) from a seed peeked from the sample's generator (one per sample in a list), which is left as it was: a
    seed gives the same starting noise whether its origin is drawn or given. Without a generator, torch's global
    one draws."""
    cumulative = torch.tensor(weights, dtype=torch.float64).cumsum(0)
    if generator is None:
        uniform = torch.rand(batch_size, dtype=torch.float64)
    else:
        generators = generator if isinstance(generator, list) else [generator]
        per_generator = 1 if isinstance(generator, list) else batch_size
        uniform = torch.cat([
            torch.rand(per_generator, dtype=torch.float64, generator=torch.Generator().manual_seed(_peek_seed(g)))
            for g in generators
        ])  # fmt: skip
    ids = torch.searchsorted(cumulative, uniform * cumulative[-1], right=True).clamp(max=len(weights) - 1)
    return ids.to(device)


class FundusPipelineMixin:
    """What both fundus pipelines share: their classes (``config.id2label``; the null class comes after them) and how
    a sampled C-channel tensor becomes their output. A mixin, not a ``DiffusionPipeline``: diffusers finds a custom
    pipeline file's class as its one pipeline subclass."""

    @property
    def null_class_id(self) -> int:
        return len(self.config.id2label)

    @property
    def class_conditional(self) -> bool:
        """Whether the model takes class labels."""
        model = self.unet if hasattr(self, "unet") else self.gan_generator
        return takes_class_labels(
            model.config.num_class_embeds,
            bool(self.config.get("rotation_conditioning")),
            bool(self.config.get("flip_conditioning")),
            len(self.origin_names),
        )

    @property
    def origin_names(self) -> List[str]:
        """The origins an origin-conditioned model tells apart, in the order of their ids (sorted); [] otherwise."""
        return sorted(self.config.get("origin_counts") or {})

    def class_ids(self, class_labels: Union[Label, Sequence[Label]], batch_size: int) -> torch.Tensor:
        """Names, ids, ``None`` or -1 (the null class: unconditional) -> a ``[batch_size]`` tensor of class ids."""
        return class_ids(self.config.id2label, class_labels, batch_size, self._execution_device)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
        metrics: Optional[List[dict]] = None,
    ) -> str:
        """Upload this pipeline to the Hub repository ``repo_id`` (created if needed) as
        ``fundus_diffusion.hub.save_model`` saves it, model card and ``metrics.json`` included, not with diffusers'
        generic card (``push_with_model_card``; needs fundus-diffusion). Returns the repository's URL (with
        ``create_pr``, the pull request's).

        ``metrics``: measured values (``save_model``'s); default: those recorded beside the local folder this
        pipeline was loaded from (``metrics.json``), none for a pipeline built in memory or loaded from the Hub.
        """
        return push_with_model_card(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            metrics=metrics,
        )  # fmt: skip

    def outputs(self, sample: torch.Tensor, output_type: str, return_dict: bool, origins: Optional[List[str]] = None):
        """Images and per-sample mask dicts (and ``origins``, each sample's origin name, in the output) from a sampled
        ``[N, C, H, W]`` tensor in [-1, 1], as ``__call__`` returns them; the model hooks are released first."""
        images, masks = tensor_to_outputs(sample, self.config.mask_names, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, masks
        return FundusPipelineOutput(images=images, masks=masks, origins=origins)


class FundusPipeline(FundusPipelineMixin, DiffusionPipeline):
    r"""
    Generates fundus photographs together with their segmentation masks from one C-channel diffusion model
    (channels 0-2 RGB, then one channel per mask in ``mask_names`` order, all in [-1, 1]).

    Parameters:
        unet ([`UNet2DModel`]): denoiser with ``in_channels = out_channels = image_channels + len(mask_names)`` (or
            ``COORDINATE_CHANNELS`` more in, for a UNet trained with Patch Diffusion: ``coordinate_channels``; times
            ``space_to_depth ** 2`` for a UNet on pixel blocks) and
            ``num_class_embeds = len(id2label) + 1`` (the last class is the null class), or no class embedding.
        scheduler ([`SchedulerMixin`]): any diffusers scheduler; swap with ``Scheduler.from_config(pipe.scheduler.config)``.
        image_channels (`int`): colour channels before the masks (3).
        mask_names (`List[str]`, defaults to ``["disc"]``): e.g. ``["disc"]``, ``["disc", "atrophy"]`` or ``[]``, or
            one comma-separated string (``"disc,atrophy"``, as ``model_index.json`` stores it); ``config.mask_names``
            is a list.
        id2label (`Dict[int, str]`): class ids and names; unknown labels use the null class ``len(id2label)``.
        training_info (`Dict`, *optional*): how the weights were trained (``fundus_diffusion.hub.save_model`` records
            it; the model card shows it). Not used for sampling.
        rotation_conditioning (`bool`): the UNet was trained with rotation conditioning (``embedding_ids``): it has
            ``ROTATIONS`` class embeddings per class, and sampling asks for upright photographs.
        flip_conditioning (`bool`): the UNet was told which training images were mirrored left-right: it has twice
            the class embeddings, and sampling asks for unmirrored photographs.
        origin_counts (`Dict[str, int]`, *optional*): the UNet was told each training image's origin (camera or
            collection; ``fundus-train-ddpm --origin_conditioning``): these names (ids in sorted order) and how many
            training images each had. It has that many times the class embeddings, and each sample is drawn as one
            origin: the one asked for (``origins``), else one drawn in these proportions.
        guide_unet ([`UNet2DModel`], *optional*): the weaker model this one is sampled with under autoguidance
            (``autoguidance_scale``), shipped with it: an earlier snapshot of the same training
            (``fundus-train-ddpm --guide_step``).
        space_to_depth (`int`): the UNet works at 1 / ``space_to_depth`` of the image's resolution on that factor
            squared times the channels (``unet_output``; a preset such as ``small256_s2d``); 1: at the full resolution.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["guide_unet"]

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        image_channels: int = IMAGE_CHANNELS,
        mask_names: Union[List[str], str, None] = None,
        id2label: Optional[dict] = None,
        training_info: Optional[dict] = None,
        rotation_conditioning: bool = False,
        guide_unet: Optional[UNet2DModel] = None,
        flip_conditioning: bool = False,
        origin_counts: Optional[Dict[str, int]] = None,
        space_to_depth: int = 1,
    ):
        super().__init__()
        channels = {"in": unet.config.in_channels - COORDINATE_CHANNELS * reads_coordinates(unet.config),
                    "out": unet.config.out_channels}  # fmt: skip
        if isinstance(space_to_depth, bool) or not (isinstance(space_to_depth, int) and space_to_depth >= 1):
            raise ValueError(
                f"space_to_depth must be a whole number of at least 1 (1: the UNet works on single pixels); got "
                f"{space_to_depth!r}."
            )
        names = split_mask_names(DEFAULT_MASK_NAMES[:1] if mask_names is None else mask_names)
        block = block_size(channels["out"], image_channels + len(names))
        if block is not None and block != space_to_depth:
            raise ValueError(
                f"The UNet's {channels['out']} output channels are {image_channels + len(names)} per pixel "
                f"({image_channels} image channels and masks {names}) of {block} x {block} pixel blocks, but "
                f"space_to_depth={space_to_depth}. Fix: space_to_depth={block}, as it was trained (a saved model's "
                "model_index.json records it; one saved without it works on single pixels)."
            )
        mask_names, id2label = check_fundus_config(
            "UNet" if space_to_depth == 1 else f"UNet on {space_to_depth} x {space_to_depth} pixel blocks", channels,
            unet.config.num_class_embeds, image_channels, names, id2label, rotation_conditioning, flip_conditioning,
            origin_counts, space_to_depth,
        )  # fmt: skip
        self.register_modules(unet=unet, scheduler=scheduler, guide_unet=guide_unet)
        self.register_to_config(
            image_channels=image_channels, mask_names=mask_names, id2label=id2label, training_info=training_info,
            rotation_conditioning=rotation_conditioning, flip_conditioning=flip_conditioning,
            origin_counts=origin_counts, space_to_depth=space_to_depth,
        )  # fmt: skip

    @property
    def native_resolution(self) -> int:
        """The square size the model was trained at, which it draws by default (the UNet's ``sample_size`` times
        ``space_to_depth``)."""
        return self.unet.config.sample_size * self.config.space_to_depth

    def prepare_extra_step_kwargs(self, generator, eta):
        # Not all schedulers take the same step arguments: eta is DDIM's, generator belongs to the stochastic ones.
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        extra = {}
        if "eta" in parameters:
            extra["eta"] = eta
        if "generator" in parameters:
            extra["generator"] = step_noise_generators(generator, self._execution_device)
        return extra

    def check_resolution(self, resolution: int) -> None:
        """Sizes must be multiples of ``size_multiple`` of the UNet's levels and ``space_to_depth``."""
        multiple = size_multiple(len(self.unet.config.block_out_channels), self.config.space_to_depth)
        if resolution < multiple or resolution % multiple:
            raise ValueError(
                f"This model draws square sizes that are multiples of {multiple} px; got resolution={resolution}. Fix: "
                f"{nearest_sizes(resolution, multiple)} (the default, {self.native_resolution}, is the size it was "
                "trained at)."
            )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: Union[Label, Sequence[Label]] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        resolution: Optional[int] = None,
        eta: float = 0.0,
        image=None,
        masks=None,
        resample_steps: int = 0,
        autoguidance_unet: Optional[UNet2DModel] = None,
        autoguidance_scale: float = 1.0,
        origins: Union[str, Sequence[str], None] = None,
    ):
        r"""
        Args:
            batch_size (`int`): how many image + mask pairs to generate.
            class_labels: one label for the whole batch or one per sample: ``"PM"``, ``"non-PM"``, an id, or
                ``None`` / -1 for unconditional samples (the null class). Default: unconditional.
            generator (`torch.Generator` or a list of one per sample): makes generation deterministic; with a
                list, sample ``i`` depends only on ``generator[i]``.
            num_inference_steps (`int`, *optional*): denoising steps; default the scheduler's training steps
                (the full DDPM chain). Fast schedulers (DPM-Solver++, UniPC) need 20-25.
            guidance_scale (`float`): classifier-free guidance weight ``w`` in ``uncond + w * (cond - uncond)``;
                1 disables guidance, values above 1 strengthen the class (a second UNet pass per step).
            output_type (`str`): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`): return a [`FundusPipelineOutput`] instead of an ``(images, masks)`` tuple.
            resolution (`int`, *optional*): square output size; default ``native_resolution``, the size the model was
                trained at.
            eta (`float`): DDIM's eta (ignored by other schedulers).
            image (PIL image, ``[H, W, 3]`` array or ``[3, H, W]`` tensor in [0, 1], or a list of one per sample,
                *optional*): a given photograph; its masks are generated (masks from an image).
            masks (`Dict[str, ...]` or a list of one per sample, *optional*): given masks by name (``L`` images,
                255 = structure, or ``[H, W]`` arrays in {0, 1}), any subset of ``mask_names``; an image and the
                other masks are generated to fit them (images from masks). Given channels must be ``resolution``
                px square and come out exactly as given.
            resample_steps (`int`): with ``image`` / ``masks``, how many times each step is done again after noising
                the sample back by one step (RePaint resampling, Lugmayr et al. 2022), so the generated channels
                agree better with the given ones; each costs one more UNet pass per step. Needs a ``DDPMScheduler``
                or ``DDIMScheduler``; 0 (replacement only) works with any scheduler that has ``add_noise``.
            autoguidance_unet ([`UNet2DModel`], *optional*): a weaker version of this model (an earlier snapshot of
                the same training, or a smaller model trained on the same data and noise schedule) to guide with:
                ``weak + w * (main - weak)`` (autoguidance, Karras et al. 2024). Unlike classifier-free guidance it
                needs no classes: it pushes the sample away from what the weaker model gets wrong. Each UNet pass
                (resampling passes included) costs a pass of the weak UNet too. Default: the pipeline's own
                ``guide_unet``, where it was saved with one.
            autoguidance_scale (`float`): the weight ``w``; 1 is the main model alone, 0 the weak one alone.
            origins (`str` or a list of one per sample, *optional*): for a model trained with origin conditioning
                (``origin_names``), the origin (camera or collection) to draw each sample as, e.g. ``"drions"``.
                Default: each sample's origin drawn in the training images' proportions (``origin_counts``) from a
                seed peeked from its generator, which leaves the starting noise as it would be with the origin given
                (without a generator, torch's global one draws both).
                The output's ``origins`` says which each sample was drawn as.

        Given channels condition the model at sampling time (no retraining): before every UNet pass, they are
        replaced by the given values noised to the step's level with the scheduler's ``add_noise``.

        Examples:

        ```py
        >>> import torch
        >>> from diffusers import DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler

        >>> pipe = DiffusionPipeline.from_pretrained("runs/ddpm-256", trust_remote_code=True)
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        >>> out = pipe(batch_size=4, class_labels="PM", num_inference_steps=20, guidance_scale=2.0)
        >>> out.images[0].save("fundus.png"); out.masks[0]["disc"].save("disc.png")

        >>> pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # for resample_steps > 0
        >>> drawn = pipe(masks={"disc": out.masks[0]["disc"]}, num_inference_steps=250, resample_steps=4)
        >>> inferred = pipe(image=out.images[0], num_inference_steps=250, resample_steps=4).masks[0]
        ```
        """
        conditional = self.class_conditional
        self.check_guidance(guidance_scale, class_labels)
        if autoguidance_unet is None and autoguidance_scale != 1:
            autoguidance_unet = self.guide_unet
        self.check_autoguidance(autoguidance_unet, autoguidance_scale, guidance_scale)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}.")
        resolution = resolution or self.native_resolution
        self.check_resolution(resolution)
        x0, known = known_channels(image, masks, self.config.mask_names, batch_size, resolution)
        self.check_resampling(resample_steps, x0 is not None)

        device = self._execution_device
        origin_ids = self.origin_ids(origins, batch_size, generator)
        labels = self.class_ids(class_labels, batch_size) if conditional else None
        do_guidance = guidance_scale > 1
        if do_guidance:
            labels = torch.cat([torch.full_like(labels, self.null_class_id), labels])
        if self.config.rotation_conditioning or self.config.get("flip_conditioning") or origin_ids is not None:
            # upright and unmirrored (orientation 0), as each sample's origin; guidance's two halves share it
            upright = torch.zeros(len(labels) if labels is not None else batch_size, dtype=torch.long, device=device)
            labels = embedding_ids(
                labels, upright, self.null_class_id + 1 if conditional else 1,
                None if origin_ids is None else origin_ids.repeat(2 if do_guidance else 1), len(self.origin_names),
            )  # fmt: skip

        shape = (batch_size, self.unet.config.out_channels // self.config.space_to_depth**2, resolution, resolution)
        sample = starting_noise(shape, generator, device, self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps or self.scheduler.config.num_train_timesteps, device=device)
        sample = sample * self.scheduler.init_noise_sigma
        noise_generator = step_noise_generators(generator, device)  # derived once: steps and given channels share it
        extra_step_kwargs = self.prepare_extra_step_kwargs(noise_generator, eta)
        if x0 is not None:
            x0, known = x0.to(device=device, dtype=sample.dtype), known.to(device)

        timesteps = self.scheduler.timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            # RePaint: redo the step `resample_steps` times, except the last one (it ends at the given values)
            jumps = resample_steps if i < len(timesteps) - 1 else 0
            for jump in range(jumps + 1):
                if x0 is not None:
                    noise = randn_tensor(x0.shape, generator=noise_generator, device=device, dtype=x0.dtype)
                    sample = torch.where(known, self.scheduler.add_noise(x0, noise, t.expand(len(x0))), sample)
                model_input = torch.cat([sample] * 2) if do_guidance else sample
                model_input = self.scheduler.scale_model_input(model_input, t)
                if reads_coordinates(self.unet.config):
                    grid = coordinate_channels(resolution, len(model_input), device, model_input.dtype)
                    model_input = torch.cat([model_input, grid], dim=1)
                model_output = unet_output(self.unet, model_input, t, labels, self.config.space_to_depth)
                if do_guidance:
                    uncond, cond = model_output.chunk(2)
                    model_output = uncond + guidance_scale * (cond - uncond)
                if autoguidance_unet is not None:
                    weak = unet_output(autoguidance_unet, model_input, t, labels, self.config.space_to_depth)
                    model_output = weak + autoguidance_scale * (model_output - weak)
                sample = self.scheduler.step(model_output, t, sample, **extra_step_kwargs, return_dict=False)[0]
                if jump < jumps:
                    sample = self.noise_back(sample, t, noise_generator)

        if x0 is not None:
            sample = torch.where(known, x0, sample)
        drawn_as = None if origin_ids is None else [self.origin_names[i] for i in origin_ids.tolist()]
        return self.outputs(sample, output_type, return_dict, drawn_as)

    def origin_ids(
        self, origins: Union[str, Sequence[str], None], batch_size: int, generator
    ) -> Optional[torch.Tensor]:
        """Each sample's origin id for an origin-conditioned model (``origins`` as ``__call__`` takes it: given by
        name, or drawn by ``draw_origins``); None for other models, which refuse ``origins``."""
        names = self.origin_names
        if not names:
            if origins is not None:
                raise ValueError(
                    "This model was trained without origin conditioning (its model_index.json has no origin_counts), "
                    f"so it cannot draw a given origin; leave origins as None (got {origins!r})."
                )
            return None
        if origins is None:
            counts = self.config.origin_counts
            return draw_origins([counts[name] for name in names], generator, batch_size, self._execution_device)
        ids = []
        for origin in per_sample(origins, batch_size, "origins"):
            if origin not in names:
                raise ValueError(f"Unknown origin {origin!r}: this model was trained on {', '.join(names)}.")
            ids.append(names.index(origin))
        return torch.tensor(ids, dtype=torch.long, device=self._execution_device)

    def check_guidance(self, guidance_scale: float, class_labels: Union[Label, Sequence[Label]]) -> None:
        """Classifier-free guidance (``guidance_scale > 1``) needs a class-conditional UNet and ``class_labels`` to
        guide towards; an unconditional UNet takes no ``class_labels``."""
        conditional = self.class_conditional
        if not conditional and class_labels is not None:
            raise ValueError(
                "This model is unconditional: it was trained without class labels (its UNet has no class embeddings, "
                "or embeddings for orientations only), so it cannot follow class_labels or guidance towards them; "
                "leave class_labels as None and guidance_scale at 1."
            )
        if guidance_scale > 1 and (not conditional or class_labels is None):
            raise ValueError(
                "guidance_scale > 1 needs class_labels to guide towards"
                + ("." if conditional else ", and this model is unconditional: leave guidance_scale at 1.")
            )

    def check_autoguidance(self, weak: Optional[UNet2DModel], scale: float, guidance_scale: float) -> None:
        """A guiding UNet must read and predict the same channels, classes and size as this pipeline's, on its device
        and dtype; a weight without one, or with classifier-free guidance as well, is refused."""
        if weak is None:
            if scale != 1:
                raise ValueError(
                    f"autoguidance_scale={scale} needs a weaker model to guide with: pass autoguidance_unet, or load a "
                    "model saved with its guide (fundus-train-ddpm --guide_step); this one has none."
                )
            return
        if guidance_scale > 1:
            raise ValueError("Use guidance_scale (classifier-free guidance) or autoguidance_unet, not both at once.")
        keys = ("in_channels", "out_channels", "num_class_embeds", "sample_size")
        different = {k: (self.unet.config[k], weak.config[k]) for k in keys if self.unet.config[k] != weak.config[k]}
        if different:
            raise ValueError(
                f"autoguidance_unet differs from this pipeline's UNet in {different} (this, guide): guide with an "
                "earlier snapshot of the same training, or a model trained on the same channels, classes and size."
            )
        if (weak.device, weak.dtype) != (self.unet.device, self.unet.dtype):
            raise ValueError(
                f"autoguidance_unet is on {weak.device} in {weak.dtype}, this pipeline's UNet on {self.unet.device} "
                f"in {self.unet.dtype}: move it with autoguidance_unet.to(pipe.device, pipe.unet.dtype)."
            )

    def check_resampling(self, resample_steps: int, conditioned: bool) -> None:
        """Resampling needs given channels and a scheduler whose step can be done again (``RESAMPLING_SCHEDULERS``);
        replacement needs the scheduler's ``add_noise``."""
        if resample_steps < 0:
            raise ValueError(f"resample_steps must be 0 or more; got {resample_steps}.")
        if resample_steps and not conditioned:
            raise ValueError("resample_steps applies to sampling from given channels: pass image= or masks= too.")
        name = type(self.scheduler).__name__
        if conditioned and not hasattr(self.scheduler, "add_noise"):
            raise ValueError(f"{name} has no add_noise, which noises the given channels: use DDPMScheduler or DDIMScheduler.")
        if resample_steps and not isinstance(self.scheduler, RESAMPLING_SCHEDULERS):
            raise ValueError(
                f"resample_steps={resample_steps} does each step again after noising the sample back, which needs a "
                f"scheduler without per-step state; {name} keeps some (its step index, earlier model outputs). Use "
                "pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config) (or DDIMScheduler), or "
                "resample_steps=0 (replacement only, which works with this scheduler)."
            )

    def noise_back(self, sample: torch.Tensor, t, generator) -> torch.Tensor:
        """A sample one step below ``t`` noised back to ``t`` with the forward process ``q(x_t | x_prev)``:
        ``sqrt(a) x_prev + sqrt(1 - a) noise``, ``a = alphas_cumprod[t] / alphas_cumprod[prev]``."""
        scheduler = self.scheduler
        if isinstance(scheduler, DDPMScheduler):
            prev = int(scheduler.previous_timestep(t))
        else:  # DDIMScheduler.step's own rule
            prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        ratio = scheduler.alphas_cumprod[int(t)] / scheduler.alphas_cumprod[prev]  # never the last step: prev >= 0
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        return (ratio.sqrt() * sample + (1 - ratio).sqrt() * noise).to(sample.dtype)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """``DiffusionPipeline.save_pretrained`` plus this file as ``pipeline.py`` (see ``save_pretrained_with_code``).
        Writes no model card: ``fundus_diffusion.hub.save_model`` saves a pipeline together with its card."""
        save_pretrained_with_code(self, save_directory, __file__, None, push_to_hub, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        # model_index.json names the folder's copy of this file, for diffusers alone; FundusPipeline.from_pretrained
        # loads into this class and runs no code from the folder.
        return config_for_this_class(super()._dict_from_json_file(json_file))
