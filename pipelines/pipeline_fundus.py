"""FundusPipeline: a class-conditional ``UNet2DModel`` and any diffusers scheduler -> fundus images and their masks."""

import inspect
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, SchedulerMixin, UNet2DModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from fundus_diffusion.data.schema import IMAGE_CHANNELS, LABEL_NAMES, UNKNOWN_LABEL, parse_mask_names
from fundus_diffusion.data.transforms import tensor_to_outputs
from fundus_diffusion.hub import METRICS_FILE, push_folder, save_model_card
from fundus_diffusion.models.unet import check_resolution

Label = Union[str, int, None]


def check_fundus_config(model_name, channels, num_class_embeds, image_channels, mask_names, id2label):
    """Check a model's ``channels`` (``{"in": n, "out": n}``) and class embeddings against the pipeline's settings; returns the
    normalised ``(mask_names, id2label)``. Shared by every fundus pipeline."""
    mask_names = list(parse_mask_names(mask_names))
    id2label = {int(k): v for k, v in (id2label or dict(enumerate(LABEL_NAMES))).items()}
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


def step_noise_generators(generator, device: torch.device):
    """Generators for the noise a stochastic scheduler (DDPM, DDIM with eta > 0) draws at every step.

    CPU generators make the starting noise the same on any machine, but drawing every step's noise on the CPU made
    DDPM-1000 sampling host-bound on a GPU (about 0.3 s of CPU per step for 100 samples at 256 px). On another device,
    each CPU generator seeds one generator there from its state after the starting noise, without advancing it:
    samples still depend only on their own generator, and what the caller's generators give next is unchanged.
    """
    generators = generator if isinstance(generator, list) else [generator]
    if device.type == "cpu" or any(g is None or g.device.type != "cpu" for g in generators):
        return generator
    derived = [torch.Generator(device).manual_seed(_peek_seed(g)) for g in generators]
    return derived if isinstance(generator, list) else derived[0]


def _peek_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator`` whose state is then put back."""
    state = generator.get_state()
    seed = int(torch.randint(2**62, (1,), generator=generator))
    generator.set_state(state)
    return seed


class FundusPipeline(DiffusionPipeline):
    r"""
    Generates fundus photographs together with their segmentation masks from one C-channel diffusion model
    (channels 0-2 RGB, then one channel per mask in ``mask_names`` order, all in [-1, 1]).

    Parameters:
        unet ([`UNet2DModel`]): denoiser with ``in_channels = out_channels = image_channels + len(mask_names)`` and
            ``num_class_embeds = len(id2label) + 1`` (the last class is the null class), or no class embedding.
        scheduler ([`SchedulerMixin`]): any diffusers scheduler; swap with ``Scheduler.from_config(pipe.scheduler.config)``.
        image_channels (`int`): colour channels before the masks (3).
        mask_names (`List[str]`, defaults to ``["disc"]``): ``["disc"]``, ``["disc", "atrophy"]`` or ``[]`` (image only).
        id2label (`Dict[int, str]`): class ids and names; unknown labels use the null class ``len(id2label)``.
        training_info (`Dict`, *optional*): how the weights were trained, rendered into the model card.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        image_channels: int = IMAGE_CHANNELS,
        mask_names: Optional[List[str]] = None,
        id2label: Optional[dict] = None,
        training_info: Optional[dict] = None,
    ):
        super().__init__()
        mask_names, id2label = check_fundus_config(
            "UNet", {"in": unet.config.in_channels, "out": unet.config.out_channels}, unet.config.num_class_embeds,
            image_channels, ["disc"] if mask_names is None else mask_names, id2label,
        )  # fmt: skip
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            image_channels=image_channels, mask_names=mask_names, id2label=id2label, training_info=training_info
        )

    @property
    def null_class_id(self) -> int:
        return len(self.config.id2label)

    def class_ids(self, class_labels: Union[Label, Sequence[Label]], batch_size: int) -> torch.Tensor:
        """Names, ids, ``None`` or -1 (unconditional) -> a ``[batch_size]`` tensor of class ids."""
        if isinstance(class_labels, (str, int)) or class_labels is None:
            class_labels = [class_labels] * batch_size
        if len(class_labels) != batch_size:
            raise ValueError(f"Got {len(class_labels)} class labels for a batch of {batch_size}.")
        id2label = {int(k): v for k, v in self.config.id2label.items()}
        label2id = {v: k for k, v in id2label.items()}
        ids = []
        for label in class_labels:
            if label is None or (not isinstance(label, str) and int(label) == UNKNOWN_LABEL):
                ids.append(self.null_class_id)
            elif isinstance(label, str) and label in label2id:
                ids.append(label2id[label])
            elif not isinstance(label, str) and int(label) in id2label:
                ids.append(int(label))
            else:
                raise ValueError(
                    f"Unknown class label {label!r}: use one of {list(label2id)}, an id in {list(id2label)}, "
                    "or None / -1 for unconditional samples."
                )
        return torch.tensor(ids, dtype=torch.long, device=self._execution_device)

    def prepare_extra_step_kwargs(self, generator, eta):
        # Not all schedulers take the same step arguments: eta is DDIM's, generator belongs to the stochastic ones.
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        extra = {}
        if "eta" in parameters:
            extra["eta"] = eta
        if "generator" in parameters:
            extra["generator"] = step_noise_generators(generator, self._execution_device)
        return extra

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
            resolution (`int`, *optional*): square output size; default the UNet's training size.
            eta (`float`): DDIM's eta (ignored by other schedulers).

        Examples:

        ```py
        >>> from diffusers import DPMSolverMultistepScheduler
        >>> from fundus_diffusion import FundusPipeline

        >>> pipe = FundusPipeline.from_pretrained("runs/ddpm-256")
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        >>> out = pipe(batch_size=4, class_labels="PM", num_inference_steps=20, guidance_scale=2.0)
        >>> out.images[0].save("fundus.png"); out.masks[0]["disc"].save("disc.png")
        ```
        """
        conditional = self.unet.config.num_class_embeds is not None
        if guidance_scale > 1 and (not conditional or class_labels is None):
            raise ValueError("guidance_scale > 1 needs a class-conditional UNet and class_labels to guide towards.")
        if not conditional and class_labels is not None:
            raise ValueError("This UNet is unconditional: leave class_labels as None.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch_size}.")
        resolution = resolution or self.unet.config.sample_size
        check_resolution(self.unet.config, resolution)

        device = self._execution_device
        labels = self.class_ids(class_labels, batch_size) if conditional else None
        do_guidance = guidance_scale > 1
        if do_guidance:
            labels = torch.cat([torch.full_like(labels, self.null_class_id), labels])

        shape = (batch_size, self.unet.config.in_channels, resolution, resolution)
        sample = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps or self.scheduler.config.num_train_timesteps, device=device)
        sample = sample * self.scheduler.init_noise_sigma
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([sample] * 2) if do_guidance else sample
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_output = self.unet(model_input, t, class_labels=labels).sample
            if do_guidance:
                uncond, cond = model_output.chunk(2)
                model_output = uncond + guidance_scale * (cond - uncond)
            sample = self.scheduler.step(model_output, t, sample, **extra_step_kwargs, return_dict=False)[0]

        images, masks = tensor_to_outputs(sample, self.config.mask_names, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, masks
        return FundusPipelineOutput(images=images, masks=masks)

    def save_pretrained(self, save_directory, metrics: Optional[Sequence[dict]] = None, **kwargs):
        """``DiffusionPipeline.save_pretrained`` (safetensors) plus a ``README.md`` model card.

        ``metrics``: measured values only, as ``[{"name": "FID", "value": 41.2, "notes": "1000 samples vs PALM"}]``.
        ``push_to_hub=True`` uploads the folder with its card (``repo_id``, ``token`` as in diffusers).
        ``card_only=True`` rewrites only the card and its ``metrics.json`` (``hub.add_model_card_metrics``).
        """
        scheduler = self.scheduler.config
        self.save_with_model_card(
            save_directory,
            "ddpm",
            self.unet,
            metrics,
            kwargs,
            scheduler_class=type(self.scheduler).__name__,
            num_train_timesteps=scheduler.num_train_timesteps,
            beta_schedule=scheduler.get("beta_schedule"),
            prediction_type=scheduler.get("prediction_type"),
        )

    def save_with_model_card(self, save_directory, template: str, model, metrics, kwargs, **card):
        """Save (safetensors), render ``model_cards/<template>.md`` with the fields every fundus card shares plus
        ``card``, and upload when ``push_to_hub=True`` (``repo_id`` also names the model in the card)."""
        push_to_hub = kwargs.pop("push_to_hub", False)
        repo_id = kwargs.pop("repo_id", None)
        if push_to_hub and repo_id is None:
            repo_id = str(save_directory).rstrip("/").split("/")[-1]
        token = kwargs.pop("token", None)
        if not kwargs.pop("card_only", False):
            DiffusionPipeline.save_pretrained(self, save_directory, **kwargs)
        with open(os.path.join(save_directory, METRICS_FILE), "w") as f:
            json.dump(list(metrics or []), f, indent=2)
        save_model_card(
            save_directory,
            template,
            repo_id=repo_id,
            resolution=model.config.sample_size,
            image_channels=self.config.image_channels,
            mask_names=list(self.config.mask_names),
            id2label={int(k): v for k, v in self.config.id2label.items()},
            null_class_id=self.null_class_id,
            conditional=model.config.num_class_embeds is not None,
            num_parameters=sum(p.numel() for p in model.parameters()),
            training=dict(self.config.training_info or {}),
            metrics=list(metrics or []),
            **card,
        )
        if push_to_hub:
            push_folder(save_directory, repo_id, token=token)
