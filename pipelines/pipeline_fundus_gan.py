"""FundusGANPipeline: fundus photographs and their masks from a DCGAN generator, in one forward pass.

This file imports only torch, diffusers, numpy, PIL and the standard library and defines the generator too:
``save_pretrained`` copies it into the saved folder as ``pipeline.py`` and as ``gan_generator/pipeline_fundus_gan.py``,
so that the folder loads on a machine without fundus-diffusion::

    DiffusionPipeline.from_pretrained(folder_or_hub_id, trust_remote_code=True)

The generator is fully convolutional. It turns a ``[B, nz, 1, 1]`` latent into a ``seed x seed`` map with one
transposed convolution, then upsamples by 2 or 3 per stage. Every resolution of the form ``seed * 2^a * 3^b`` with
``seed <= 5`` is exact without interpolation: 64, 128 and 256 are ``4 * 2^k`` and the paper's 360 is
``5 * 3 * 3 * 2 * 2 * 2``. A stage with stride ``s`` uses kernel ``2s`` so that every output pixel receives the same
number of kernel taps (no checkerboard from uneven overlap): ``k4 s2 p1`` and ``k6 s3 p2`` (plus
``output_padding=1``).
"""

import json
import math
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch

# ModelMixin and ConfigMixin are imported by name on purpose: diffusers looks a component's base classes up in the
# module that defines it to find how to save and load it.
from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

# ----------------------------------------------------------------------------------------------------------------
# Shared by the fundus pipelines. Each pipeline file must load alone from a saved folder, so pipeline_fundus_gan.py
# holds a copy of this block (the diffusers "Copied from" convention); tests/test_pipeline_code.py keeps the copies
# identical. Edit it here and copy it there.
# ----------------------------------------------------------------------------------------------------------------
IMAGE_CHANNELS = 3
DEFAULT_MASK_NAMES = ("disc", "atrophy")  # channel 3, channel 4
DEFAULT_ID2LABEL = {0: "non-PM", 1: "PM"}  # the null class (unknown label, unconditional) is len(id2label)
UNKNOWN_LABEL = -1
PIPELINE_FILE = "pipeline.py"  # model_index.json's "_class_name": ["pipeline", "<class>"] names this copy
# model_index.json stores mask_names as "disc,atrophy": diffusers takes every list there for a component, and loading
# from the Hub then looks for the component "mask_names" (a list of names loads from a local folder only).
MASK_NAME_SEPARATOR = ","

Label = Union[str, int, None]


@dataclass
class FundusPipelineOutput(BaseOutput):
    """
    Args:
        images (`List[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            RGB images: PIL images, float32 ``[B, H, W, 3]`` in [0, 1] (``np``) or ``[B, 3, H, W]`` in [0, 1] (``pt``).
        masks (`List[Dict[str, ...]]`):
            Per sample, ``{mask name: binary mask}`` as an ``L`` image (0 / 255) or an ``[H, W]`` array in {0, 1}.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    masks: List[Dict[str, Union[PIL.Image.Image, np.ndarray, torch.Tensor]]]


def split_mask_names(mask_names: Union[str, Sequence[str]]) -> List[str]:
    """``"disc,atrophy"`` (as ``model_index.json`` stores them), ``"disc"``, ``""`` or a list -> a list of names."""
    if isinstance(mask_names, str):
        return mask_names.split(MASK_NAME_SEPARATOR) if mask_names else []
    return list(mask_names)


def check_fundus_config(model_name, channels, num_class_embeds, image_channels, mask_names, id2label):
    """Check a model's ``channels`` (``{"in": n, "out": n}``) and class embeddings against the pipeline's settings;
    returns the normalised ``(mask_names, id2label)``: ``mask_names`` a list, also when given as ``"disc,atrophy"``."""
    mask_names = split_mask_names(mask_names)
    if len(set(mask_names)) != len(mask_names) or not all(
        isinstance(m, str) and m and MASK_NAME_SEPARATOR not in m for m in mask_names
    ):
        raise ValueError(
            f"mask_names must be distinct non-empty names without {MASK_NAME_SEPARATOR!r}, e.g. ['disc', 'atrophy'] "
            f"or 'disc,atrophy'; got {mask_names!r}."
        )
    id2label = {int(k): v for k, v in (id2label or DEFAULT_ID2LABEL).items()}
    expected = image_channels + len(mask_names)
    if any(c != expected for c in channels.values()):
        raise ValueError(
            f"{image_channels} image channels and masks {mask_names} need a {model_name} with {expected} "
            f"{' and '.join(f'{k}put' for k in channels)} channels; this one has "
            f"{' and '.join(f'{v} {k}' for k, v in channels.items())}."
        )
    if num_class_embeds is not None and num_class_embeds != len(id2label) + 1:
        raise ValueError(
            f"The {model_name} has {num_class_embeds} class embeddings; labels {id2label} plus the null class need "
            f"{len(id2label) + 1}."
        )
    return mask_names, id2label


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


def save_pretrained_with_code(pipeline, save_directory, components: Dict[str, str], push_to_hub=False, **kwargs):
    """``DiffusionPipeline.save_pretrained`` (safetensors only), then this file as ``pipeline.py`` named in
    ``model_index.json`` and, for each custom component in ``components`` (``{name: module}``), as
    ``<name>/<module>.py``: diffusers alone then loads the folder with ``trust_remote_code=True``, from the Hub too
    (``mask_names`` written as one string: see ``MASK_NAME_SEPARATOR``)."""
    if not kwargs.pop("safe_serialization", True):
        raise ValueError("Fundus pipelines save weights as safetensors only: pickle files run code when loaded.")
    push_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "token", "private", "create_pr", "commit_message") if k in kwargs}
    DiffusionPipeline.save_pretrained(pipeline, save_directory, **kwargs)
    shutil.copyfile(__file__, os.path.join(save_directory, PIPELINE_FILE))
    path = os.path.join(save_directory, "model_index.json")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [PIPELINE_FILE[: -len(".py")], type(pipeline).__name__]
    index.pop("_name_or_path", None)  # where it was loaded from: a local path says nothing on another machine
    index["mask_names"] = MASK_NAME_SEPARATOR.join(index["mask_names"])
    for name, module in components.items():
        shutil.copyfile(__file__, os.path.join(save_directory, name, f"{module}.py"))
        index[name] = [module, index[name][1]]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    if push_to_hub:  # push_to_hub uploads a fresh save_pretrained: this file goes with it
        repo_id = push_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
        pipeline.push_to_hub(repo_id, **push_kwargs)


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


MAX_SEED_SIZE = 5


def upsampling_plan(resolution: int) -> Tuple[int, List[int]]:
    """``resolution`` -> ``(seed, factors)``, factors 2 or 3 from the smallest map up, largest factors of 2 last.

    >>> upsampling_plan(360)
    (5, [3, 3, 2, 2, 2])
    """
    plan = _factor(int(resolution))
    if plan is None:
        nearby = [r for r in range(max(resolution - 24, 2), resolution + 25) if _factor(r) is not None]
        closest = sorted(nearby, key=lambda r: (abs(r - resolution), r))[:2]
        raise ValueError(
            f"A DCGAN resolution must be seed * 2^a * 3^b with seed <= {MAX_SEED_SIZE} and at least one upsampling "
            f"stage (e.g. 64, 128, 256, 360); got {resolution}. Nearest: {' or '.join(map(str, sorted(closest)))}."
        )
    return plan


def _factor(resolution: int) -> Optional[Tuple[int, List[int]]]:
    size, factors = resolution, []
    while size > MAX_SEED_SIZE:
        factor = 2 if size % 2 == 0 else 3 if size % 3 == 0 else None
        if factor is None:
            return None
        size //= factor
        factors.append(factor)
    return (size, factors[::-1]) if factors else None


def _stage_padding(stride: int) -> Tuple[int, int]:
    """(padding, output_padding) making a ``kernel = 2 * stride`` (transposed) convolution scale exactly by ``stride``."""
    padding = math.ceil(stride / 2)
    return padding, 2 * padding - stride


def _channel_mults(num_stages: int, max_mult: int) -> List[int]:
    """Widths from the finest stage to the coarsest: 1, 2, 4, ... capped at ``max_mult``."""
    return [min(2**i, max_mult) for i in range(num_stages)]


def _xavier(conv: nn.Module) -> nn.Module:
    """The paper's initialisation (Xavier) for a convolution; BatchNorm keeps PyTorch's identity default."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class DCGANGenerator(ModelMixin, ConfigMixin):
    """Latent ``[B, nz]`` or ``[B, nz, 1, 1]`` (plus optional class ids) -> ``[B, out_channels, S, S]`` in [-1, 1].

    Args:
        sample_size: output resolution ``S`` (see ``upsampling_plan``).
        out_channels: ``C = 3 + number of masks`` (4: RGB + disc, 5: RGB + disc + atrophy).
        nz: latent dimension. ngf: width of the last hidden stage; coarser stages double it up to ``ngf * max_mult``.
        num_class_embeds: number of class ids (e.g. 3 = non-PM, PM, null) for a conditional generator; the class
            embedding (``class_embed_dim``) is concatenated to the latent. None: unconditional.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 360,
        out_channels: int = 4,
        nz: int = 100,
        ngf: int = 32,
        max_mult: int = 8,
        num_class_embeds: Optional[int] = None,
        class_embed_dim: int = 32,
    ):
        super().__init__()
        seed, factors = upsampling_plan(sample_size)
        widths = [ngf * m for m in _channel_mults(len(factors), max_mult)][::-1]  # coarse -> fine
        self.class_embedding = nn.Embedding(num_class_embeds, class_embed_dim) if num_class_embeds else None
        in_channels = nz + (class_embed_dim if num_class_embeds else 0)
        layers = [
            _xavier(nn.ConvTranspose2d(in_channels, widths[0], seed, 1, 0, bias=False)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for i, factor in enumerate(factors):
            padding, output_padding = _stage_padding(factor)
            last = i == len(factors) - 1
            out = out_channels if last else widths[i + 1]
            layers.append(
                _xavier(nn.ConvTranspose2d(widths[i], out, 2 * factor, factor, padding, output_padding, bias=last))
            )
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if latents.ndim == 2:
            latents = latents[:, :, None, None]
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("This generator is class-conditional: pass class_labels (a LongTensor [B]).")
            embedding = self.class_embedding(class_labels.to(latents.device)).to(latents.dtype)
            latents = torch.cat([latents, embedding[:, :, None, None]], dim=1)
        return self.net(latents)


GENERATOR_MODULE = "pipeline_fundus_gan"  # the generator's code in a saved folder: gan_generator/pipeline_fundus_gan.py
HUB_KWARGS = (
    "cache_dir", "dtype", "force_download", "local_files_only", "proxies", "revision", "token", "torch_dtype",
    "use_safetensors", "variant",
)  # fmt: skip


class FundusGANPipeline(DiffusionPipeline):
    r"""
    Generates fundus photographs together with their segmentation masks from a DCGAN generator in one forward pass;
    the same call and outputs as ``FundusPipeline``, so that downstream code treats both alike.

    Parameters:
        gan_generator ([`DCGANGenerator`]): ``out_channels = image_channels + len(mask_names)``; class-conditional
            generators have ``num_class_embeds = len(id2label) + 1`` (the last class is the null class). Not called
            ``generator``, which is the RNG argument of ``__call__`` as everywhere in diffusers.
        image_channels (`int`): colour channels before the masks (3).
        mask_names (`List[str]`, *optional*): e.g. ``["disc"]``, ``["disc", "atrophy"]`` or ``[]``, or one
            comma-separated string (``"disc,atrophy"``, as ``model_index.json`` stores it); default: as many of
            ``disc``, ``atrophy`` as the generator has channels after RGB. ``config.mask_names`` is a list.
        id2label (`Dict[int, str]`): class ids and names.
        training_info (`Dict`, *optional*): how the weights were trained (``fundus_diffusion.hub.save_model`` records
            it; the model card shows it). Not used for sampling.
    """

    model_cpu_offload_seq = "gan_generator"

    def __init__(
        self,
        gan_generator: ModelMixin,  # a DCGANGenerator; diffusers alone loads it from another copy of this file
        image_channels: int = IMAGE_CHANNELS,
        mask_names: Union[List[str], str, None] = None,
        id2label: Optional[dict] = None,
        training_info: Optional[dict] = None,
    ):
        super().__init__()
        channels = gan_generator.config.out_channels
        if mask_names is None:
            mask_names = DEFAULT_MASK_NAMES[: max(channels - image_channels, 0)]
        mask_names, id2label = check_fundus_config(
            "generator", {"out": channels}, gan_generator.config.num_class_embeds, image_channels, mask_names, id2label
        )
        self.register_modules(gan_generator=gan_generator)
        self.register_to_config(
            image_channels=image_channels, mask_names=mask_names, id2label=id2label, training_info=training_info
        )

    @property
    def null_class_id(self) -> int:
        return len(self.config.id2label)

    def class_ids(self, class_labels: Union[Label, Sequence[Label]], batch_size: int) -> torch.Tensor:
        """Names, ids, ``None`` or -1 (the null class) -> a ``[batch_size]`` tensor of class ids."""
        return class_ids(self.config.id2label, class_labels, batch_size, self._execution_device)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: Union[Label, Sequence[Label]] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate ``batch_size`` samples.

        Args:
            class_labels: for a class-conditional generator, "PM" / "non-PM" / an id / None (null class), one for
                all or one per sample; None: the null class for all.
            generator: a ``torch.Generator`` or one per sample (then sample ``i`` depends only on ``generator[i]``).
            latents: ``[batch_size, nz]`` or ``[batch_size, nz, 1, 1]`` to use instead of drawing them.
            num_inference_steps, guidance_scale: ignored; accepted so that callers treat every fundus pipeline alike.
            output_type: "pil", "np" or "pt" (see ``tensor_to_outputs``).

        Returns:
            ``FundusPipelineOutput(images, masks)``: per sample an RGB image and ``{mask name: binary mask}``;
            a tuple ``(images, masks)`` when ``return_dict`` is False.
        """
        model = self.gan_generator
        shape = (batch_size, model.config.nz, 1, 1)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for batch_size {batch_size}; pass one per sample.")
        conditional = model.config.num_class_embeds is not None
        if not conditional and class_labels is not None:
            raise ValueError("This generator is unconditional: leave class_labels as None.")
        labels = self.class_ids(class_labels, batch_size) if conditional else None
        device = self._execution_device
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=model.dtype)
        else:
            if latents.ndim == 2:
                latents = latents[:, :, None, None]
            if tuple(latents.shape) != shape:
                raise ValueError(f"Unexpected latents shape {tuple(latents.shape)}; expected {shape} or {shape[:2]}.")
            latents = latents.to(device=device, dtype=model.dtype)

        sample = model(latents, labels)
        images, masks = tensor_to_outputs(sample, self.config.mask_names, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, masks
        return FundusPipelineOutput(images=images, masks=masks)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """``DiffusionPipeline.save_pretrained`` plus this file as ``pipeline.py`` and as the generator's code (see
        ``save_pretrained_with_code``). Writes no model card: ``fundus_diffusion.hub.save_model`` does."""
        save_pretrained_with_code(self, save_directory, {"gan_generator": GENERATOR_MODULE}, push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """``DiffusionPipeline.from_pretrained`` with the generator built by this file's ``DCGANGenerator``: the copy
        saved in ``gan_generator/`` runs only when diffusers alone loads the folder (``trust_remote_code=True``)."""
        if "gan_generator" not in kwargs:
            hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
            kwargs["gan_generator"] = DCGANGenerator.from_pretrained(
                pretrained_model_name_or_path, subfolder="gan_generator", **hub_kwargs
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        # model_index.json names the folder's copies of this file, for diffusers alone; this class loads the
        # generator itself (from_pretrained) and runs no code from the folder.
        return config_for_this_class(super()._dict_from_json_file(json_file), components=("gan_generator",))
