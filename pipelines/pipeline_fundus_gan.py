"""FundusGANPipeline: fundus photographs and their masks from a DCGAN generator, in one forward pass."""

from typing import List, Optional, Sequence, Union

import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from ..data.schema import IMAGE_CHANNELS, MASK_NAMES
from ..data.transforms import tensor_to_outputs
from ..models.dcgan import DCGANGenerator  # imported here so that from_pretrained finds the class in sys.modules
from .pipeline_fundus import FundusPipeline, FundusPipelineOutput, Label, check_fundus_config


class FundusGANPipeline(DiffusionPipeline):
    r"""
    Generates fundus photographs together with their segmentation masks from a DCGAN generator in one forward pass;
    the same call and outputs as [`FundusPipeline`], so that downstream code treats both alike.

    Parameters:
        gan_generator ([`DCGANGenerator`]): ``out_channels = image_channels + len(mask_names)``; class-conditional
            generators have ``num_class_embeds = len(id2label) + 1`` (the last class is the null class). Not called
            ``generator``, which is the RNG argument of ``__call__`` as everywhere in diffusers.
        image_channels (`int`): colour channels before the masks (3).
        mask_names (`List[str]`, *optional*): ``["disc"]``, ``["disc", "atrophy"]`` or ``[]``; default: as many of
            these as the generator has channels after RGB.
        id2label (`Dict[int, str]`): class ids and names.
        training_info (`Dict`, *optional*): how the weights were trained, rendered into the model card.
    """

    model_cpu_offload_seq = "gan_generator"
    null_class_id = FundusPipeline.null_class_id
    class_ids = FundusPipeline.class_ids  # one label vocabulary for both pipelines
    save_with_model_card = FundusPipeline.save_with_model_card

    def __init__(
        self,
        gan_generator: DCGANGenerator,
        image_channels: int = IMAGE_CHANNELS,
        mask_names: Optional[List[str]] = None,
        id2label: Optional[dict] = None,
        training_info: Optional[dict] = None,
    ):
        super().__init__()
        channels = gan_generator.config.out_channels
        if mask_names is None:
            mask_names = MASK_NAMES[: max(channels - image_channels, 0)]
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
            output_type: "pil", "np" or "pt" (see ``fundus_diffusion.data.transforms.tensor_to_outputs``).

        Returns:
            ``FundusPipelineOutput(images, masks)``: per sample an RGB image and ``{mask name: binary mask}``;
            a tuple ``(images, masks)`` when ``return_dict`` is False.
        """
        model = self.gan_generator
        nz = model.config.nz
        shape = (batch_size, nz, 1, 1)
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

    def save_pretrained(self, save_directory, metrics: Optional[Sequence[dict]] = None, **kwargs):
        """``DiffusionPipeline.save_pretrained`` (safetensors) plus a ``README.md`` model card.

        ``metrics``: measured values only, as ``[{"name": ..., "value": ..., "notes": ...}]``. ``push_to_hub=True``
        uploads the folder with its card (``repo_id``, ``token`` as in diffusers); ``repo_id`` alone only names the
        model in the card. ``card_only=True`` rewrites only the card and its ``metrics.json``.
        """
        self.save_with_model_card(
            save_directory, "dcgan", self.gan_generator, metrics, kwargs, nz=self.gan_generator.config.nz
        )
