"""FundusGANPipeline: fundus photographs and their masks from a DCGAN generator, in one forward pass.

This file imports only torch, diffusers and the standard library, and relatively the two self-contained modules beside
it: ``pipeline_fundus.py`` (what both fundus pipelines share) and ``dcgan_generator.py`` (the generator).
``save_pretrained`` copies it into the saved folder as ``pipeline.py`` with those two beside it, and the generator's
module as ``gan_generator/dcgan_generator.py``, so that the folder loads on a machine without fundus-diffusion::

    DiffusionPipeline.from_pretrained(folder_or_hub_id, trust_remote_code=True)

From the Hub, diffusers downloads ``pipeline.py`` with its relative imports, but of the generator's folder only the
module ``model_index.json`` names: that is why the generator is a module of its own, with no relative imports.
"""

from typing import List, Optional, Sequence, Union

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.utils.torch_utils import randn_tensor

from .dcgan_generator import DCGANGenerator
from .pipeline_fundus import (
    DEFAULT_MASK_NAMES,
    IMAGE_CHANNELS,
    FundusPipelineMixin,
    Label,
    check_fundus_config,
    config_for_this_class,
    save_pretrained_with_code,
)

GENERATOR_MODULE = DCGANGenerator.__module__.rsplit(".", 1)[-1]  # "dcgan_generator": gan_generator/dcgan_generator.py
HUB_KWARGS = (
    "cache_dir", "dtype", "force_download", "local_files_only", "proxies", "revision", "token", "torch_dtype",
    "use_safetensors", "variant",
)  # fmt: skip


class FundusGANPipeline(FundusPipelineMixin, DiffusionPipeline):
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
        gan_generator: ModelMixin,  # a DCGANGenerator; diffusers alone loads it from gan_generator/dcgan_generator.py
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
        conditional = self.class_conditional
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
        return self.outputs(sample, output_type, return_dict)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """``DiffusionPipeline.save_pretrained`` plus this file as ``pipeline.py``, the modules it imports beside it and
        the generator's module in ``gan_generator/`` (see ``save_pretrained_with_code``). Writes no model card:
        ``fundus_diffusion.hub.save_model`` does."""
        save_pretrained_with_code(self, save_directory, __file__, {"gan_generator": DCGANGenerator}, push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """``DiffusionPipeline.from_pretrained`` with the generator built by this package's ``DCGANGenerator``: the
        copy saved in ``gan_generator/`` runs only when diffusers alone loads the folder (``trust_remote_code=True``)."""
        if "gan_generator" not in kwargs:
            hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
            kwargs["gan_generator"] = DCGANGenerator.from_pretrained(
                pretrained_model_name_or_path, subfolder="gan_generator", **hub_kwargs
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file):
        # model_index.json names the folder's copies of the code, for diffusers alone; this class loads the
        # generator itself (from_pretrained) and runs no code from the folder.
        return config_for_this_class(super()._dict_from_json_file(json_file), components=("gan_generator",))
