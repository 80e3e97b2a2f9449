"""Loading saved fundus pipelines with this package: which class a folder or Hub model holds, and a checked load.

Not one of the self-contained pipeline files: those load with diffusers alone; this module is the package's own
loader (``scripts/generate.py``, the evaluation, the demo). It runs no code from the folder: the class comes from this
package, and a ``model_index.json`` that names anything else is refused before any weights are read.
"""

import difflib
import json
import os
from typing import Optional

import diffusers
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from .pipeline_fundus import FundusPipeline
from .pipeline_fundus_gan import GENERATOR_MODULE, FundusGANPipeline

PIPELINE_CLASSES = {"FundusPipeline": FundusPipeline, "FundusGANPipeline": FundusGANPipeline}
COMPONENTS = {"FundusPipeline": ("unet", "scheduler"), "FundusGANPipeline": ("gan_generator",)}
OPTIONAL_COMPONENTS = {"FundusPipeline": ("guide_unet",), "FundusGANPipeline": ()}  # absent, or null in model_index.json
# Where model_index.json may say a generator's code lives: the saved copy of its module (dcgan_generator), or in older
# folders the saved copy of the whole GAN pipeline file (pipeline_fundus_gan) or this package's modules.
GENERATOR_MODULES = (
    GENERATOR_MODULE, "pipeline_fundus_gan", "fundus_diffusion.models.dcgan", "fundus_diffusion.pipelines.pipeline_fundus_gan"
)  # fmt: skip
SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    # Stochastic solvers (fresh noise every step, as DDPM's): DDPM with 100 steps gave the least distinguishable set
    # of RESULTS.md session 8, so the few-step stochastic ones are worth a row of their own.
    "sde-dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
}
# The SCHEDULERS that draw fresh noise at every step; the others (and DDIM, whose eta is 0 here) draw none.
STOCHASTIC_SCHEDULERS = ("ddpm", "sde-dpmsolver++", "euler_ancestral")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def certainly_local(spec: str) -> bool:
    """Whether ``spec`` can only be a local path, never a Hub id (``namespace/name``): it starts with '.', '~' or '/',
    or has more than one '/'. Such a path that does not exist is refused without a Hub request (minutes of retries
    without a connection)."""
    return spec.startswith((".", "~", os.sep)) or spec.count("/") > 1


def local_path_hint(spec: str) -> str:
    """For a ``spec`` that does not exist: its parent folder's closest entries when the parent exists here
    (``runs/ddpm-322`` beside ``runs/ddpm-32``), for the error message; "" otherwise."""
    parent = os.path.dirname(spec.rstrip("/"))
    if not parent or not os.path.isdir(parent):
        return ""
    entries = sorted(os.listdir(parent))
    closest = difflib.get_close_matches(os.path.basename(spec.rstrip("/")), entries, n=3, cutoff=0.5)
    more = "" if closest or len(entries) <= 5 else ", ..."
    return f" ({parent}/ holds {', '.join(closest or entries[:5]) or 'nothing'}{more})"


def read_model_index(path_or_hub_id: str) -> dict:
    """``model_index.json`` of a local folder or a Hub repository (only that file is read)."""
    if os.path.isdir(path_or_hub_id):
        path = os.path.join(path_or_hub_id, "model_index.json")
        if not os.path.isfile(path):
            parent = os.path.dirname(os.path.normpath(path_or_hub_id))
            run = os.path.basename(os.path.normpath(path_or_hub_id)).startswith("checkpoint-") and os.path.isfile(
                os.path.join(parent, "model_index.json")
            )
            dataset = any(os.path.exists(os.path.join(path_or_hub_id, name)) for name in ("dataset_info.json", "images"))
            if run:
                hint = f" It is a training checkpoint; the model its run saved is {parent}."
            elif dataset:
                hint = " It holds a dataset (images for --dataset or --masks_from, not a --model). Fix: give a saved model."
            else:
                hint = " Fix: give the --output_dir of fundus-train-ddpm or fundus-train-dcgan (it holds model_index.json)."
            raise FileNotFoundError(f"{path_or_hub_id} has no model_index.json: it is not a saved fundus pipeline.{hint}")
    else:
        fix = "Fix: give a saved pipeline folder (the --output_dir of a training run) or a Hub model id such as 'namespace/name'."
        missing = f"{path_or_hub_id}: no such local folder{local_path_hint(path_or_hub_id)}"
        if certainly_local(path_or_hub_id) and not os.path.exists(path_or_hub_id):
            raise FileNotFoundError(f"{missing}. {fix}")
        try:
            path = hf_hub_download(path_or_hub_id, "model_index.json")
        except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError) as err:
            raise FileNotFoundError(
                f"{missing}, and no Hub model of that id could be read ({type(err).__name__}). {fix}"
            ) from err
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pipeline_class_name(index: dict) -> Optional[str]:
    """The pipeline class a ``model_index.json`` names: ``"FundusPipeline"`` (folders saved before the pipelines were
    self-contained) or ``["pipeline", "FundusPipeline"]`` (the folder's ``pipeline.py``)."""
    name = index.get("_class_name")
    return name[-1] if isinstance(name, (list, tuple)) and name else name


def component_names(class_name: str) -> tuple:
    """The components a pipeline of ``class_name`` may hold, the optional ones last."""
    return (*COMPONENTS[class_name], *OPTIONAL_COMPONENTS[class_name])


def _allowed_component(name: str, library: str, class_name: str) -> bool:
    if name in ("unet", "guide_unet"):
        return (library, class_name) == ("diffusers", "UNet2DModel")
    if name == "scheduler":
        return library == "diffusers" and class_name.endswith("Scheduler") and hasattr(diffusers, class_name)
    return name == "gan_generator" and library in GENERATOR_MODULES and class_name == "DCGANGenerator"


def check_model_index(index: dict, source: str) -> str:
    """Refuse a ``model_index.json`` that names another pipeline or components from other modules than a fundus
    pipeline saves; return the pipeline's class name."""
    class_name = pipeline_class_name(index)
    if class_name not in PIPELINE_CLASSES:
        raise ValueError(
            f"{source} holds a {class_name!r} pipeline; fundus-diffusion loads {' or '.join(PIPELINE_CLASSES)}. "
            "Give a folder saved by this package's training (or load other pipelines with diffusers)."
        )
    for name in component_names(class_name):
        entry = index.get(name)
        if name in OPTIONAL_COMPONENTS[class_name] and entry in (None, [None, None]):
            continue
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and _allowed_component(name, *map(str, entry))):
            raise ValueError(
                f"{source}/model_index.json names {entry!r} for the {class_name}'s {name!r}, which is not what this "
                "package saves: refusing to load it (its code could run). Re-save the model with fundus-diffusion."
            )
    return class_name


def load_fundus_pipeline(
    path_or_hub_id: str, scheduler: Optional[str] = None, device: Optional[str] = None, dtype: str = "auto"
):
    """A ``FundusPipeline`` or ``FundusGANPipeline``, chosen by ``model_index.json`` (checked first), weights from
    safetensors only.

    ``scheduler`` (one of ``SCHEDULERS``) replaces a diffusion pipeline's scheduler, built from its config.
    ``dtype`` ``auto`` samples in fp16 on a GPU (about twice the speed of fp32) and in fp32 on the CPU.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r}: this torch sees no CUDA device (torch.cuda.is_available() is False). Fix: --device "
            "cpu, or leave --device out (a GPU is used when there is one)."
        )
    path_or_hub_id = os.path.expanduser(path_or_hub_id)
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: choose auto, {', '.join(DTYPES)}.")
    check_scheduler(scheduler)  # before anything is read
    class_name = check_model_index(read_model_index(path_or_hub_id), path_or_hub_id)
    if scheduler is not None and "scheduler" not in COMPONENTS[class_name]:
        raise no_scheduler_error(scheduler, class_name)
    try:
        pipe = PIPELINE_CLASSES[class_name].from_pretrained(path_or_hub_id, dtype=DTYPES[dtype], use_safetensors=True)
    except ValueError as err:  # the pipeline's own checks (channels, masks, conditioning): name the model they refuse
        raise ValueError(f"{path_or_hub_id}: {err}") from err
    check_finite_weights(pipe, class_name, path_or_hub_id, dtype)
    if scheduler is not None:
        use_scheduler(pipe, scheduler)
    return pipe.to(device)


def check_scheduler(scheduler: Optional[str]) -> None:
    """``scheduler`` is None (keep the saved one) or one of ``SCHEDULERS``."""
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}: choose from {', '.join(SCHEDULERS)}.")


def no_scheduler_error(scheduler: str, class_name: str) -> ValueError:
    return ValueError(f"--scheduler {scheduler} applies to diffusion models; {class_name} has no scheduler.")


def sampler_settings(scheduler: Optional[str], timestep_spacing: Optional[str] = None, current=None):
    """The diffusers class name and config overrides of ``scheduler`` (one of ``SCHEDULERS``; None: ``current``'s
    class), its steps spaced as ``timestep_spacing`` says (None: as the noise schedule's config)."""
    check_scheduler(scheduler)
    scheduler_class, overrides = SCHEDULERS[scheduler] if scheduler else (type(current).__name__, {})
    return scheduler_class, {**overrides, **({"timestep_spacing": timestep_spacing} if timestep_spacing else {})}


def draws_step_noise(scheduler) -> bool:
    """Whether the diffusers ``scheduler`` draws fresh noise at every step: it is one of ``STOCHASTIC_SCHEDULERS``,
    or of a kind none of ``SCHEDULERS`` builds (a model saved with another scheduler), which is assumed to."""
    for name, (class_name, overrides) in SCHEDULERS.items():
        if type(scheduler).__name__ == class_name and all(scheduler.config.get(k) == v for k, v in overrides.items()):
            return name in STOCHASTIC_SCHEDULERS
    return True


def make_sampler(schedule_config, scheduler: str, timestep_spacing: Optional[str] = None):
    """The sampler ``scheduler`` (one of ``SCHEDULERS``) built from a training noise schedule's config."""
    scheduler_class, overrides = sampler_settings(scheduler, timestep_spacing)
    return getattr(diffusers, scheduler_class).from_config(schedule_config, **overrides)


def use_scheduler(pipe, scheduler: Optional[str], timestep_spacing: Optional[str] = None) -> None:
    """Give a diffusion pipeline the scheduler ``scheduler`` (one of ``SCHEDULERS``; None: keep its kind), built from
    its own scheduler's config (the training noise schedule), its steps spaced as ``timestep_spacing`` says (None: as
    saved); a scheduler of that kind and spacing already in place is kept as it is."""
    if not hasattr(pipe, "scheduler"):
        raise no_scheduler_error(scheduler, type(pipe).__name__)
    current = pipe.scheduler
    scheduler_class, overrides = sampler_settings(scheduler, timestep_spacing, current)
    if type(current).__name__ == scheduler_class and all(current.config.get(k) == v for k, v in overrides.items()):
        return
    pipe.scheduler = getattr(diffusers, scheduler_class).from_config(current.config, **overrides)


def check_finite_weights(pipe, class_name: str, source: str, dtype: str = "fp32") -> None:
    """Refuse a pipeline whose network weights hold NaN or inf (a damaged file, or a run that diverged): it would
    sample black images with empty masks."""
    for name in component_names(class_name):
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        bad = [key for key, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            overflow = (
                f" (loaded as {dtype}: weights beyond its range become inf; try --dtype fp32)" if dtype != "fp32" else ""
            )
            raise ValueError(
                f"{source}: the {name} weights hold NaN or inf in {len(bad)} tensor(s), e.g. {bad[0]}{overflow}. "
                "The model cannot sample (the file is damaged, or training diverged). Fix: use an earlier checkpoint "
                "or snapshot of the run, or re-save / retrain the model."
            )

