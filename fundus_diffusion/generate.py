"""Synthetic datasets from a trained fundus pipeline, written in the same schema as the real data.

Sample ``i`` is drawn with its own ``torch.Generator("cpu").manual_seed(seed + i)``, so any sample can be made
again alone (``regenerate``), whatever the batch it first came in, up to rounding: a network call on a batch rounds
differently from one on a single sample (by ~1e-6), which can move a pixel by one 8-bit level (or a mask pixel across
its threshold). Stochastic samplers (DDPM, SDE-DPM-Solver++, Euler ancestral), and every sampler with
``masks_from``, draw their later noise on the sampling device from a generator that one seeds there: the same on one
device type, another on another (``draws_noise_on_device``). Rows stream to Arrow shards of ``shard_size`` samples
(written atomically), so an interrupted run resumes at the first missing shard, with the batch size, device type (for
those samplers) and every other setting that changes a sample as recorded (``check_resume``); at the end the shards
become one ``save_to_disk`` folder that ``load_fundus_dataset`` reads.

Unless told otherwise a diffusion model samples with DPM-Solver++ in 20 steps (``DEFAULT_SCHEDULER``,
``DEFAULT_INFERENCE_STEPS``), not with the scheduler it was saved with, which for a trained DDPM is the full
1,000-step chain (50 times the work for samples of the same kind); ``--scheduler own`` asks for that one. Saved models
record no sampler of their own to prefer. The choice needs to know whether the model is a diffusion model or a GAN,
so it is settled once the model is loaded (``prepare_pipeline``) and recorded, settled, in ``generation_config.json``.

With ``compile`` (a ``torch.compile`` mode) the network is compiled once for one batch shape: every batch, the last
one of a shard and ``regenerate``'s single sample too, is padded to ``batch_size`` with copies of its last sample's
seed and label and the copies are dropped, so nothing recompiles and ``reduce-overhead`` replays one CUDA graph.

Host memory stays flat whatever ``num_samples``: a batch is generated, then encoded to PNG bytes by a pool of threads
while the next batch is generated (``write_samples``: the sampler does not wait for the compression), and handed to
the shard's ``ArrowWriter``, which flushes every ``batch_size`` rows to disk, so at most two batches of images are held
at a time; finished shards, the assembled dataset and the Hub layout are read back memory-mapped.

Under ``accelerate launch`` (several processes, one per GPU) the missing shards are split between the processes
(``PartialState.split_between_processes``), each writes its own, and after a barrier the main process assembles the
one dataset, its card and extras. Shard ``k`` always holds samples ``[k * shard_size, (k + 1) * shard_size)`` and
sample ``i`` is seed ``seed + i`` whoever draws it, so the dataset is the same sample for sample whatever the number
of processes (on one device type), and a run resumes on any number of processes. Shards are the unit of work: use
at least as many shards (``num_samples / shard_size``) as processes.

With ``masks_from`` (``read_mask_sets``), sample ``i`` is drawn for the ``i``-th mask set of a folder
``<dir>/masks/<name>/<id>.png`` (in id order) and keeps its id: the given masks come out exactly as given, the image
and any mask its set lacks are generated (``FundusPipeline``'s ``masks=``).

With ``autoguidance_scale``, every step is guided away from a weaker model's prediction with that weight
(``FundusPipeline``'s ``autoguidance_unet``; autoguidance, Karras et al. 2024), at the cost of a second UNet pass per
step: ``autoguidance_model`` (a model of the same kind: an earlier snapshot of the same training), or without one the
guide saved with the model (``fundus-train-ddpm --guide_step``).

Output folder::

    data/train-*.parquet                          the dataset (schema columns + ``seed``) for ``load_dataset(folder)``
    arrow/                                        the same, ``save_to_disk``, which ``load_fundus_dataset`` reads
    README.md                                     dataset card: model, sampler, steps, guidance, post-processing, seed
    contact_sheet.png                             the first samples with their mask outlines
    generation_config.json                        the settings (and the device type sampled on), checked by
                                                  --resume (a run that finished no shard yet has nothing to lose:
                                                  any rerun starts it over)
    png/                                          with --png: images/<n>.png, masks/<name>/<n>.png, metadata.csv
                                                  (<n>: the sample's number, or its id with masks_from), both this
                                                  package's generic folder layout and an imagefolder
"""

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

try:
    import fcntl  # exclusive_writer's lock; POSIX only
except ImportError:
    fcntl = None

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset, DatasetInfo, Value, concatenate_datasets, load_from_disk
from datasets.arrow_writer import ArrowWriter
from datasets.data_files import NON_WORDS_CHARS, SPLIT_KEYWORDS
from huggingface_hub import DatasetCardData, HfApi
from PIL import Image
from tqdm.auto import tqdm

from . import export
from .data.build import read_mask
from .data.readers import images_by_stem, require_dir
from .data.schema import (
    LABEL_NAMES,
    ORIGIN_COLUMN,
    UNKNOWN_LABEL,
    annotation_column,
    fundus_features,
    label_to_id,
    mask_column,
)
from .data.transforms import GENERATED_SOURCE_PREFIX
from .model_cards import LICENSE, render_dataset_card, size_category
from .pipelines.loading import DTYPES, SCHEDULERS, draws_step_noise, load_fundus_pipeline, use_scheduler
from .pipelines.pipeline_fundus import export_command, split_mask_names
from .training.args import launched_without_gpu, output_dir_problem
from .visualization import contact_sheet

logger = logging.getLogger(__name__)

POSTPROCESSING = ("binarize", "largest_disc", "cup_in_disc", "fill_holes")
CONFIG_FILE = "generation_config.json"
SHARDS_DIR = "shards"
# Settings a resumed run may change: another device of the recorded type, and how the network runs (compiled, its
# memory format, cuDNN's algorithm search), which rounds within one 8-bit level of the eager one. The batch size is
# compared: a sample's pixels can move by one level with the batch it is drawn in (batched calls round differently).
RESUMABLE_DIFFERENCES = ("device", "compile", "channels_last", "cudnn_benchmark")
# A diffusion model's sampler unless told otherwise (see the module docstring); RePaint resampling (resample_steps)
# needs a step without solver state: DDPM, over the full chain unless num_inference_steps says otherwise.
DEFAULT_SCHEDULER, DEFAULT_INFERENCE_STEPS, DEFAULT_RESAMPLING_SCHEDULER = "dpmsolver++", 20, "ddpm"
OWN_SCHEDULER = "own"  # the scheduler the model was saved with
# Left unset (None) until prepare_pipeline settles them from the loaded pipeline.
SETTLED_FIELDS = ("scheduler", "num_inference_steps", "dtype", "device_type")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")  # torch.compile's
# diffusers' timestep_spacing: where a sampler's steps fall on the training chain. "trailing" (the ours preset's) starts
# at the last training step and ends T / steps - 1 above 0; "linspace" runs from the last step to 0; "leading" ends at 0.
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
MASK_SETS_LAYOUT = """--masks_from layout (the generic folder layout without images/):
  <dir>/masks/<name>/<id>.png   one folder per mask name of the model; 255 = structure (or 1, in a mask of only 0 and
                                1, as fundus-build-dataset reads masks); the model's resolution, square, framed as
                                training framed its photographs (cropped square around the fundus field)
An id with files in only some of the folders gets its other masks generated with the image."""


@dataclass
class MaskSets:
    """The mask sets of a ``--masks_from`` folder: ``files[id] = {mask name: path}``, ids in sorted order."""

    root: str
    files: Dict[str, Dict[str, str]]
    ids: List[str] = field(init=False)

    def __post_init__(self):
        self.ids = sorted(self.files)

    @property
    def name(self) -> str:
        """The folder's name: what the generation config records (a local path means nothing elsewhere and may
        name people)."""
        return os.path.basename(os.path.normpath(self.root))

    def load(self, index: int) -> Dict[str, Image.Image]:
        """The masks of the ``index``-th id as binary ``L`` images (0 / 255; ``read_given_mask``)."""
        return {name: read_given_mask(path) for name, path in self.files[self.ids[index]].items()}

    def check(self, mask_names: Sequence[str], resolution: int) -> None:
        """Every mask folder names one of the model's masks, and every file is ``resolution`` px square and reads as
        a mask (``read_given_mask``)."""
        unknown = sorted({name for files in self.files.values() for name in files} - set(mask_names))
        if unknown:
            raise ValueError(
                f"--masks_from {self.root}: masks/{unknown[0]}/ names no mask of the model (its masks: "
                f"{', '.join(mask_names) or 'none'}). Fix: rename or remove masks/{'/, masks/'.join(unknown)}/."
            )
        for files in self.files.values():
            for name, path in files.items():
                with Image.open(path) as mask:
                    if mask.size != (resolution, resolution):
                        raise ValueError(mask_size_error(path, name, mask.size, resolution))
                read_given_mask(path)


def read_given_mask(path: str) -> Image.Image:
    """A ``--masks_from`` mask as a binary ``L`` image (0 / 255), read as the dataset builder reads a folder's masks
    (``data.build.read_mask``): 255 = structure, thresholded at 128, except in a mask of only 0 and 1, whose 1 is
    structure. A mask with pixels above 0 but none at 128 or more would read as empty, and is refused."""
    with Image.open(path) as mask:
        size = mask.size  # its own: MaskSets.check compares it with the model's
    structure, thresholded = read_mask(path, path, size, zero_is_structure=False)
    if thresholded and not structure.any():
        raise ValueError(
            f"--masks_from: {path} has pixels above 0 but none at 128 or more, so it reads as an empty mask (255 = "
            "structure, or 1 in a mask of only 0 and 1). Fix: save it with 255 (or 1, with 0 elsewhere) where the "
            "structure is."
        )
    return Image.fromarray(structure.astype(np.uint8) * 255, mode="L")


def mask_size_error(path: str, name: str, size: Tuple[int, int], resolution: int) -> str:
    """Why the ``--masks_from`` mask ``name`` of ``size`` (width, height) at ``path`` does not fit a model of
    ``resolution`` px, and the fix. Training framed every photograph and its masks alike (``pair_to_array``): cropped
    to a square around the fundus field (padded with black), then resized; a resize alone stretches any other mask."""
    width, height = size
    fit = f"{resolution}x{resolution}"
    framing = "training cropped each photograph and its masks to a square around the fundus field (padded with black)"
    export = (
        f"build a dataset of the photographs with their masks (fundus-build-dataset), then {export_command(resolution)} "
        "frames both as training did, and --masks_from <that folder> takes the result"
    )
    if width != height:
        return (
            f"--masks_from: {path} is {width}x{height} px; the model generates {fit} px. A resize cannot make it fit: "
            f"{framing} before resizing them, and resizing a {width}x{height} mask to {fit} stretches it. Fix: {export}."
        )
    return (
        f"--masks_from: {path} is {width}x{height} px; the model generates {fit} px. Fix: if the masks are cropped as "
        f"{framing}, resize them to {fit} with nearest-neighbour interpolation; if not, {export}."
    )


def read_mask_sets(root: str) -> MaskSets:
    """The mask sets under ``root/masks/<name>/<id>.<ext>`` (checked against a model by ``MaskSets.check``)."""
    require_dir(root, "--masks_from", MASK_SETS_LAYOUT)
    masks_root = require_dir(os.path.join(root, "masks"), "Mask folder", MASK_SETS_LAYOUT)
    files: Dict[str, Dict[str, str]] = {}
    for entry in sorted(os.scandir(masks_root), key=lambda e: e.name):
        if entry.is_dir():
            for sample_id, path in images_by_stem(entry.path).items():
                files.setdefault(sample_id, {})[entry.name] = path
    if not files:
        raise ValueError(f"--masks_from {root}: no mask images found.\n{MASK_SETS_LAYOUT}")
    return MaskSets(root, files)


def parse_label_counts(spec: Optional[str]) -> Dict[str, int]:
    """``"PM=600,non-PM=400"`` -> ``{"PM": 600, "non-PM": 400}`` (names checked against the schema's labels)."""
    if not spec:
        return {}
    counts = {}
    for part in spec.split(","):
        name, sep, count = part.partition("=")
        name = name.strip()
        if not sep or not count.strip().isdigit():
            raise ValueError(f"--labels takes NAME=COUNT pairs such as 'PM=600,non-PM=400'; got {part!r}.")
        if name not in LABEL_NAMES:  # names only: the counts are recorded and written per name
            raise ValueError(f"--labels {spec}: unknown class {name!r}; the classes are {', '.join(LABEL_NAMES)} (e.g. PM=600,non-PM=400).")
        if name in counts:
            raise ValueError(f"--labels {spec}: {name} given twice; give each class once (a typo for another class?).")
        counts[name] = int(count)
    return counts


def interleave_labels(counts: Dict[str, int]) -> List[str]:
    """Labels in a deterministic, evenly mixed order (any prefix of the dataset has about the requested shares)."""
    keyed = [((k + 0.5) / n, i, name) for i, (name, n) in enumerate(counts.items()) for k in range(n)]
    return [name for _, _, name in sorted(keyed)]


def postprocess_masks(masks: Dict[str, Image.Image], steps: Sequence[str]) -> Dict[str, Image.Image]:
    """Apply ``binarize`` (>= 128 -> 255), ``largest_disc`` (keep the disc's largest 8-connected component),
    ``cup_in_disc`` (drop cup pixels outside the disc: the optic cup lies inside the disc, and a stray generated cup
    speck elsewhere would stretch the vertical cup-to-disc ratio) and ``fill_holes`` (every mask), in the order given."""
    if not steps:
        return masks
    from scipy import ndimage  # deferred on purpose: scipy is an optional extra, needed only for post-processing

    arrays = {name: np.asarray(m.convert("L")) >= 128 for name, m in masks.items()}  # binarize is implied here
    for step in steps:
        if step == "largest_disc" and "disc" in arrays and arrays["disc"].any():
            labelled, n = ndimage.label(arrays["disc"], structure=np.ones((3, 3)))
            arrays["disc"] = labelled == 1 + int(np.argmax(ndimage.sum(arrays["disc"], labelled, range(1, n + 1))))
        elif step == "cup_in_disc" and "cup" in arrays and "disc" in arrays:
            arrays["cup"] = arrays["cup"] & arrays["disc"]
        elif step == "fill_holes":
            arrays = {name: ndimage.binary_fill_holes(a) for name, a in arrays.items()}
        elif step not in POSTPROCESSING:
            raise ValueError(f"--postprocess {step}: unknown post-processing step; choose from {', '.join(POSTPROCESSING)}.")
    return {name: Image.fromarray(a.astype(np.uint8) * 255, mode="L") for name, a in arrays.items()}


@dataclass
class GenerationConfig:
    model: str
    num_samples: int
    labels: Dict[str, int] = field(default_factory=dict)  # empty: unconditional (label -1)
    origin: Optional[str] = None  # every sample drawn as this origin (an origin-conditioned model); None: each drawn
    # in the training images' proportions (FundusPipeline's origins)
    scheduler: Optional[str] = None  # a SCHEDULERS name or OWN_SCHEDULER; None: the default (prepare_pipeline; a GAN: none)
    num_inference_steps: Optional[int] = None  # None: DEFAULT_INFERENCE_STEPS with the default, else the full chain
    guidance_scale: float = 1.0
    seed: int = 0
    postprocess: List[str] = field(default_factory=list)
    shard_size: int = 256
    png: bool = False
    batch_size: int = 64
    device: Optional[str] = None
    masks_from: Optional[str] = None  # the name of the --masks_from folder (MaskSets.name), not its path
    resample_steps: int = 0  # RePaint resampling with masks_from (FundusPipeline's resample_steps)
    compile: Optional[str] = None  # a torch.compile mode (COMPILE_MODES) for the network; None: eager
    channels_last: bool = False  # the network's weights in channels-last (NHWC) memory format
    cudnn_benchmark: Optional[bool] = None  # torch.backends.cudnn.benchmark for this run; None: left as it is
    dtype: Optional[str] = None  # the network's precision (a DTYPES name), recorded from the loaded pipeline
    device_type: Optional[str] = None  # the sampling device's type (cpu, cuda, ...), recorded from the loaded pipeline
    timestep_spacing: Optional[str] = None  # a TIMESTEP_SPACINGS name; None: as the model's scheduler was saved
    autoguidance_model: Optional[str] = None  # a weaker model to guide with (folder or Hub id; load_autoguidance);
    # None with autoguidance_scale: the guide saved with the model
    autoguidance_scale: Optional[float] = None  # the weight w in weak + w * (main - weak); None: no autoguidance

    def __post_init__(self):
        if self.labels and sum(self.labels.values()) != self.num_samples:
            raise ValueError(
                f"--labels {self.labels} add up to {sum(self.labels.values())}, not --num_samples {self.num_samples}. "
                "Fix: leave --num_samples out (the counts give it), or make them add up to it."
            )
        sizes = ("--num_samples (or the sum of --labels)", self.num_samples), ("--batch_size", self.batch_size)
        for flag, value in (*sizes, ("--shard_size", self.shard_size)):
            if value < 1:
                raise ValueError(f"{flag} is {value}. Fix: give a whole number of 1 or more.")
        unknown = set(self.postprocess) - set(POSTPROCESSING)
        if unknown:
            raise ValueError(
                f"--postprocess {','.join(sorted(unknown))}: unknown post-processing step(s); choose from "
                f"{', '.join(POSTPROCESSING)}."
            )
        if self.scheduler not in (None, OWN_SCHEDULER, *SCHEDULERS):
            raise ValueError(f"Unknown scheduler {self.scheduler!r}: choose from {', '.join([*SCHEDULERS, OWN_SCHEDULER])}.")
        if self.timestep_spacing not in (None, *TIMESTEP_SPACINGS):
            raise ValueError(f"Unknown timestep spacing {self.timestep_spacing!r}: choose from {', '.join(TIMESTEP_SPACINGS)}.")
        if self.compile not in (None, *COMPILE_MODES):
            raise ValueError(f"Unknown torch.compile mode {self.compile!r}: choose from {', '.join(COMPILE_MODES)}.")
        if (self.autoguidance_model is not None and self.autoguidance_scale is None) or self.autoguidance_scale == 1:
            raise ValueError(
                "Autoguidance needs --autoguidance_scale, a weight other than 1 (1 is the main model alone; e.g. 1.5), "
                "with --autoguidance_model or the guide saved with the model; got --autoguidance_model "
                f"{self.autoguidance_model!r} and --autoguidance_scale {self.autoguidance_scale!r}."
            )
        if self.autoguidance_scale is not None and self.guidance_scale > 1:
            raise ValueError("Use --guidance_scale (classifier-free guidance) or autoguidance, not both at once.")

    @property
    def model_name(self) -> str:
        return local_name(self.model)

    @property
    def autoguidance_name(self) -> Optional[str]:
        return local_name(self.autoguidance_model) if self.autoguidance_model else None

    def sample_labels(self) -> List[Optional[str]]:
        return interleave_labels(self.labels) if self.labels else [None] * self.num_samples


def is_local_path(model: str) -> bool:
    """Whether ``model`` names a local folder rather than a Hub id: an existing folder, or a path no Hub id can be
    (absolute, ``~``, ``.``-relative), whether or not it still exists where the name is read."""
    return os.path.isdir(os.path.expanduser(model)) or model.startswith(("/", "~", ".")) or os.path.isabs(model)


def local_name(model: str) -> str:
    """A model's name for records and cards: a local folder's name only (its path means nothing elsewhere and may
    name people), a Hub id as it is."""
    return os.path.basename(os.path.normpath(os.path.expanduser(model))) if is_local_path(model) else model


def prepare_network(network, config: GenerationConfig) -> None:
    """Lay out ``network``'s weights as ``config.channels_last`` says and compile it in place for fixed shapes
    (``generate_samples`` pads every batch to ``batch_size``), once: a network compiled before is left as it is;
    ``config.compile`` None leaves it eager."""
    if config.channels_last:
        network.to(memory_format=torch.channels_last)
    if config.compile and getattr(network, "_compiled_call_impl", None) is None:  # what nn.Module.compile sets
        network.compile(mode=config.compile, dynamic=False, fullgraph=True)


def load_autoguidance(pipe, config: GenerationConfig):
    """The guiding UNet, laid out and compiled as ``config`` says (``prepare_network``): None without
    ``autoguidance_scale``; the pipeline's own ``guide_unet`` without ``autoguidance_model`` (refused where the model was saved without one); else the UNet of
    ``config.autoguidance_model``, on ``pipe``'s device in its precision. That one is refused unless it is a model of
    the same kind as ``pipe``'s: the same masks, classes, rotation, flip and origin conditioning, channels and size
    (``FundusPipeline.check_autoguidance``), noise schedule and prediction type (otherwise its predictions are not
    comparable with the main model's, and guiding away from them is meaningless)."""
    if config.autoguidance_scale is None:
        return None
    if config.autoguidance_model is None:
        own = getattr(pipe, "guide_unet", None)
        if own is None:
            raise ValueError(
                f"--autoguidance_scale {config.autoguidance_scale} without --autoguidance_model guides with the guide "
                f"saved with the model, and {config.model_name} has none (it was trained without --guide_step). Fix: "
                "name a weaker model of the same training with --autoguidance_model (e.g. one of its snapshots)."
            )
        prepare_network(own, config)
        return own
    source = config.autoguidance_model
    weak = load_fundus_pipeline(source, device=str(pipe.device), dtype=config.dtype)
    if not hasattr(weak, "scheduler"):
        raise ValueError(f"--autoguidance_model {source} is a GAN; guide with a diffusion model.")
    fix = "guide with an earlier snapshot of the same training."
    kind = ("mask_names", "id2label", "rotation_conditioning", "flip_conditioning")
    different = {k: (pipe.config.get(k), weak.config.get(k)) for k in kind if pipe.config.get(k) != weak.config.get(k)}
    if pipe.origin_names != weak.origin_names:  # the same origins; their counts may differ (another subset)
        different["origin_names"] = (pipe.origin_names, weak.origin_names)
    if different:
        raise ValueError(f"--autoguidance_model {source} differs from {config.model_name} in {different} (model, guide): {fix}")
    ours, theirs = pipe.scheduler, weak.scheduler
    schedule = (ours.config.prediction_type, len(ours.alphas_cumprod)), (theirs.config.prediction_type, len(theirs.alphas_cumprod))
    if schedule[0] != schedule[1] or not torch.allclose(ours.alphas_cumprod.double(), theirs.alphas_cumprod.double()):
        raise ValueError(
            f"--autoguidance_model {source} was trained with another noise schedule or prediction type than "
            f"{config.model_name} (prediction type and training steps: {schedule[0]} against {schedule[1]}, or "
            f"other betas): {fix}"
        )
    pipe.check_autoguidance(weak.unet, config.autoguidance_scale, config.guidance_scale)  # channels, classes, size
    prepare_network(weak.unet, config)
    return weak.unet


def generate_samples(
    pipe,
    seeds: Sequence[int],
    labels: Sequence[Optional[str]],
    config: GenerationConfig,
    given: Optional[Sequence[Dict[str, Image.Image]]] = None,
    guide=None,
):
    """Images, post-processed masks and origins (each sample's origin name for an origin-conditioned model, else
    None) for one batch; sample ``k`` depends only on ``seeds[k]``, ``labels[k]`` and its given masks ``given[k]``
    (kept as given: post-processing applies to the generated masks only), guided by the weaker UNet ``guide``
    (``load_autoguidance``) when given."""
    n = len(seeds)
    padding = max(0, config.batch_size - n) if config.compile else 0  # one batch shape for the compiled network
    seeds, labels = [*seeds, *[seeds[-1]] * padding], [*labels, *[labels[-1]] * padding]
    conditioning = {"masks": [*given, *[given[-1]] * padding], "resample_steps": config.resample_steps} if given is not None else {}
    if guide is not None:
        conditioning.update(autoguidance_unet=guide, autoguidance_scale=config.autoguidance_scale)
    if config.origin is not None:
        conditioning["origins"] = config.origin
    out = pipe(
        batch_size=len(seeds),
        class_labels=None if all(label is None for label in labels) else list(labels),
        generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        output_type="pt",  # on the device: NaN checked, then 8-bit as the pipelines' "pil" makes it, then to the host
        **conditioning,
    )
    seeds, out_images, out_masks = seeds[:n], out.images[:n], out.masks[:n]  # the padding's copies dropped
    origins = (out.origins or [None] * n)[:n]
    check_finite_samples(out_images, seeds, config)
    images = [Image.fromarray(im.transpose(1, 2, 0), mode="RGB") for im in _to_8bit(out_images)]
    names = list(out_masks[0]) if out_masks else []
    mask_bytes = {name: _to_8bit(torch.stack([ms[name] for ms in out_masks])) for name in names}
    masks = [{name: Image.fromarray(mask_bytes[name][i], mode="L") for name in names} for i in range(n)]
    kept = given or [{}] * len(masks)
    generated = [postprocess_masks({n: m for n, m in ms.items() if n not in k}, config.postprocess) for ms, k in zip(masks, kept)]
    return images, [{n: k[n] if n in k else g[n] for n in ms} for ms, k, g in zip(masks, kept, generated)], origins


def _to_8bit(values: torch.Tensor) -> np.ndarray:
    """Values in [0, 1] as uint8 on the host, rounded as the pipelines' ``pil`` output rounds them; made on the
    values' device, so that a GPU batch crosses to the host in one copy per tensor, at a quarter of its float32
    size, and the host, which the GPU waits for between batches, does no float work on it."""
    return (values.float() * 255).round().to(torch.uint8).cpu().numpy()


def check_finite_samples(images: torch.Tensor, seeds: Sequence[int], config: GenerationConfig) -> None:
    """Refuse a batch holding NaN / inf samples (``images``: ``[B, 3, H, W]``): they would be stored as black
    images with empty masks."""
    finite = torch.isfinite(images).flatten(1).all(1).tolist()
    bad = [int(s) for s, ok in zip(seeds, finite) if not ok]
    if bad:
        raise FloatingPointError(
            f"{len(bad)} of {len(seeds)} samples of this batch (seeds {bad[:5]}{' ...' if len(bad) > 5 else ''}) hold "
            f"NaN or inf values: {config.model_name} did not produce images, and nothing of this batch was written. "
            "Fix: sample with --dtype fp32 (fp16 can overflow, the more so with a large --autoguidance_scale), or use "
            "another checkpoint of the model."
        )


def regenerate(
    pipe, config: GenerationConfig, index: int, mask_sets: Optional[MaskSets] = None
) -> Tuple[Image.Image, Dict[str, Image.Image]]:
    """Sample ``index`` of the dataset ``config`` describes (with ``masks_from``: drawn for ``mask_sets``), made
    again alone (``pipe`` prepared as ``generate_dataset`` prepares it: ``prepare_pipeline``; the guide of
    ``autoguidance_model`` loaded, and compiled with ``compile``, at every call).

    The same sample up to rounding, not bit for bit: the dataset drew it in a batch of ``batch_size``, and a batched
    network call rounds differently from one on this single sample (by ~1e-6), which can move a pixel by one 8-bit
    level or a mask pixel across its threshold (with ``compile`` the sample is padded to ``batch_size`` as the
    dataset's batches were). With a sampler that draws noise on the device (``draws_noise_on_device``), a
    ``config`` that records its ``device_type`` is refused on another device type, whose noise would be another.
    """
    recorded = config.device_type
    config = prepare_pipeline(pipe, config)
    if recorded not in (None, config.device_type) and draws_noise_on_device(pipe, config):
        raise ValueError(
            f"regenerate: the dataset was drawn on {recorded} with a sampler that draws noise there at every step "
            f"({noise_source(config)}), and this pipeline samples on {config.device_type}, whose noise differs. Fix: "
            f"move the pipeline to a {recorded} device (pipe.to({recorded!r}))."
        )
    given = [mask_sets.load(index)] if mask_sets is not None else None
    guide = load_autoguidance(pipe, config)
    label = config.sample_labels()[index]
    images, masks, _ = generate_samples(pipe, [config.seed + index], [label], config, given, guide)
    return images[0], masks[0]


def _sample_name(index: int, mask_sets: Optional[MaskSets]) -> str:
    """A sample's name in its id and PNG files: its mask set's id with ``masks_from``, else its zero-padded number."""
    return mask_sets.ids[index] if mask_sets is not None else f"{index:06d}"


# A split keyword of load_dataset's file-name patterns ("**/test[-._ 0-9]*", "**/*[-._ 0-9]test[-._ 0-9]*"): a word
# between separators (or the name's ends; the extension's dot follows the name). Longest first: "training" before "train".
_SPLIT_WORD = re.compile(
    rf"(?:^|(?<=[{NON_WORDS_CHARS}]))({'|'.join(sorted((k for ks in SPLIT_KEYWORDS.values() for k in ks), key=len, reverse=True))})"
    rf"(?=[{NON_WORDS_CHARS}]|$)"
)


def png_name(sample_name: str) -> str:
    """The ``--png`` file stem of a sample: its name, with "~" after every split keyword that stands as a word.

    ``load_dataset("imagefolder", data_dir=...)`` guesses splits from file names: one file named ``test_01.png``
    would make a "test" split of it and drop every file that names no split. ``test~_01`` matches none of those
    patterns and still reads as the id (which ``metadata.csv`` keeps whole, in ``source_id``); names without such a
    word (every numbered sample) are unchanged.
    """
    return _SPLIT_WORD.sub(r"\1~", sample_name)


def _row(config: GenerationConfig, sample_name: str, index: int, label, image, masks, mask_names, origin=None) -> dict:
    row = {
        "id": f"{GENERATED_SOURCE_PREFIX}{config.model_name}/{sample_name}",
        "source": f"{GENERATED_SOURCE_PREFIX}{config.model_name}",
        "split": "train",
        "image": image,
        "label": UNKNOWN_LABEL if label is None else label_to_id(label),
        "seed": config.seed + index,
    }
    for name in mask_names:  # every mask of the model is drawn for every sample: annotated everywhere
        row[mask_column(name)], row[annotation_column(name)] = masks[name], True
    if origin is not None:
        row[ORIGIN_COLUMN] = origin
    return row


def synthetic_features(mask_names, origins: bool = False):
    """The schema's features for the model's ``mask_names`` plus each sample's ``seed`` and, for an origin-conditioned
    model (``origins``), the origin it was drawn as (``ORIGIN_COLUMN``)."""
    features = fundus_features(mask_names)
    features["seed"] = Value("int64")
    if origins:
        features[ORIGIN_COLUMN] = Value("string")
    return features


def _write_png(png_dir: str, sample_name: str, image, masks):
    stem = png_name(sample_name)
    os.makedirs(os.path.join(png_dir, "images"), exist_ok=True)
    image.save(os.path.join(png_dir, "images", f"{stem}.png"))
    for name, mask in masks.items():
        os.makedirs(os.path.join(png_dir, "masks", name), exist_ok=True)
        mask.save(os.path.join(png_dir, "masks", name, f"{stem}.png"))


def write_samples(
    batches, config: GenerationConfig, shards, mask_names, threads: int, png_dir="", mask_sets=None, progress=None,
    origins: bool = False,
):  # fmt: skip
    """Encode the samples of ``batches`` (``(indices, images, masks)``, in sample order, and the origins with
    ``origins``) into the ``(index, path)`` shards (each written to ``path.tmp``, then renamed: a shard on disk is
    whole), and with ``config.png`` into ``png_dir``; ``origins``: the model is origin-conditioned, and each row
    records its sample's origin.

    The encoding (PNG compression, single-threaded inside ``datasets`` and PIL) runs on ``threads`` threads while the
    next batch is drawn from ``batches``, so a GPU sampler does not wait for it; rows reach the shards in sample order,
    and the output is the same whatever ``threads``. At most one batch waits in the pool, so host memory stays flat;
    a run stopped while drawing a batch loses the batch being encoded too. A failure in a thread is raised here, with
    the sample it was writing.
    """
    features = synthetic_features(mask_names, origins)
    labels = config.sample_labels()

    def encode(index, image, masks, origin=None):
        name = _sample_name(index, mask_sets)
        try:
            if config.png:
                _write_png(png_dir, name, image, masks)
            return features.encode_example(_row(config, name, index, labels[index], image, masks, mask_names, origin))
        except Exception as err:  # raised in the main thread by future.result(), with the sample named
            raise RuntimeError(
                f"Writing sample {index} ({name}, seed {config.seed + index}) failed: {type(err).__name__}: {err}. "
                "Its shard was not committed: fix the cause and continue with --resume."
            ) from err

    with closing(_encoded_in_order(batches, encode, threads)) as rows:
        for shard, path in shards:
            tmp = f"{path}.tmp"
            with ArrowWriter(features=features, path=tmp, writer_batch_size=config.batch_size) as writer:
                for _ in range(*_shard_range(config, shard)):
                    writer.write(next(rows))
                    if progress is not None:
                        progress.update()
                writer.finalize()
            os.replace(tmp, path)


def _encoded_in_order(batches, encode, threads: int):
    """``encode(*sample)`` of every sample of ``batches`` (its index, image, masks and origin), in order: a batch's
    samples are encoded in a pool of ``threads`` while the next batch is drawn; not-yet-started work is cancelled when
    closed early."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="encode")
    try:
        encoding = []
        for batch in batches:
            drawn = [pool.submit(encode, *sample) for sample in zip(*batch)]
            yield from (future.result() for future in encoding)
            encoding = drawn
        yield from (future.result() for future in encoding)
    finally:
        pool.shutdown(cancel_futures=True)


def encoding_threads(num_processes: int = 1) -> int:
    """Threads that encode samples in each process: the machine's cores shared between its processes, at most 8
    (more than a sampler on one GPU keeps busy)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # this process's
    return max(1, min(8, cores // num_processes))


def _shard_range(config: GenerationConfig, shard: int) -> Tuple[int, int]:
    """Shard ``shard``'s samples: ``[shard * shard_size, (shard + 1) * shard_size)``, the last one cut at ``num_samples``."""
    return shard * config.shard_size, min((shard + 1) * config.shard_size, config.num_samples)


def read_generation_config(output_dir: str) -> dict:
    """The settings ``generate_dataset`` recorded in ``output_dir`` (empty when it recorded none)."""
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def generating_model(output_dir: str) -> str:
    """The local model folder that generated the synthetic set in ``output_dir``."""
    model = read_generation_config(output_dir).get("model")
    if not model or not os.path.isfile(os.path.join(model, "model_index.json")):
        raise ValueError(
            f"{os.path.join(output_dir, CONFIG_FILE)} names no local model folder ({model!r}). Give the folder "
            "(fundus-evaluate: --update_model_card path/to/model)."
        )
    return model


def sampler_description(output_dir: str) -> Optional[str]:
    """How a synthetic set was sampled, e.g. "dpmsolver++, 20 steps" or "dpmsolver++, 20 steps, classifier-free
    guidance 2"; "ddpm, its whole chain" without a step count; None for a GAN's plain samples, or when not recorded.
    It names the model card's metric rows, so whatever changes what the rows measure is in it, a GAN's too: images
    drawn for given masks ("for the masks of <folder>, resampled 2 times"), whose mask statistics are the given
    masks', and post-processed masks ("masks post-processed: largest_disc")."""
    config = read_generation_config(output_dir)
    steps, scheduler, spacing = config.get("num_inference_steps"), config.get("scheduler"), config.get("timestep_spacing")
    parts = []
    if steps or scheduler:  # neither: a GAN, which has no sampler
        parts.append(f"{'own scheduler' if scheduler in (None, OWN_SCHEDULER) else scheduler}, {f'{steps} steps' if steps else 'its whole chain'}")
        parts += [f"{spacing} spacing"] if spacing else []
        guide, scale = config.get("autoguidance_model"), config.get("autoguidance_scale")
        parts += [f"autoguidance by {local_name(guide) if guide else 'its own guide'} at {scale}"] if scale is not None else []
        class_guidance = config.get("guidance_scale") or 1
        parts += [f"classifier-free guidance {class_guidance:g}"] if class_guidance != 1 else []
    if config.get("masks_from"):
        resampled = config.get("resample_steps") or 0
        parts.append(f"for the masks of {config['masks_from']}" + (f", resampled {resampled} times" if resampled else ""))
    if config.get("postprocess"):
        parts.append(f"masks post-processed: {'+'.join(config['postprocess'])}")
    return ", ".join(parts) or None


def check_resume(
    output_dir: str, config: GenerationConfig, resume: bool, model_loaded: bool = True, noise_on_device: bool = True
) -> bool:
    """Refuse to overwrite, and refuse to resume with settings that would change the samples (cheap: the script
    calls it before loading the model, too, with ``model_loaded=False``: sampler settings left to their defaults are
    then not compared, since what they stand for depends on the model, nor are the precision it is loaded in and the
    device type it samples on; ``generate_dataset`` compares them settled). The device type is compared only when
    the sampling draws noise on the device (``noise_on_device``: ``draws_noise_on_device``), and only with a run
    that recorded it (releases before this one did not).

    A run that finished no shard yet (``nothing_finished``: stopped at its first batch, or refused there by an earlier
    release) has nothing to lose: a plain rerun, or one with other settings, starts it over instead of being refused.
    Returns whether the run in ``output_dir`` is to be started over (``generate_dataset`` then clears it)."""
    problem = output_dir_problem(output_dir)
    if problem:  # a file in its place, or a folder no file can be written in
        raise ValueError(f"--output_dir {output_dir}: {problem}")
    saved = read_generation_config(output_dir)
    if not saved:
        if os.path.isdir(output_dir) and os.listdir(output_dir):
            raise FileExistsError(f"{output_dir} exists and is not a generation output; choose an empty --output_dir.")
        return False
    unsettled = () if model_loaded else tuple(k for k in SETTLED_FIELDS if getattr(config, k) is None)
    ignored = (*RESUMABLE_DIFFERENCES, *unsettled)
    if not noise_on_device or "device_type" not in saved:
        ignored += ("device_type",)
    changed = changed_settings(saved, config, ignored)
    if nothing_finished(output_dir):
        return not resume or bool(changed)
    if not resume:
        laid_out = export.arrow_folder(output_dir) == os.path.join(output_dir, export.ARROW_DIR)  # the last step's
        if laid_out and os.path.isdir(os.path.join(output_dir, export.PARQUET_DIR)):  # output: a killed one resumes
            raise FileExistsError(f"{output_dir} already holds a finished synthetic set. Fix: choose another --output_dir.")
        raise FileExistsError(f"{output_dir} already holds a generation run; pass --resume to continue it, or choose another --output_dir.")
    if changed:
        raise ValueError(resume_refusal(output_dir, changed, config))
    return False


def resume_refusal(output_dir: str, changed: Dict[str, Tuple], config: GenerationConfig) -> str:
    """Why ``--resume`` refuses the ``changed`` settings (``{name: (saved, now)}``), with the fix for those whose fix
    is not to give the recorded value back: another order of the same ``--labels``, the batch size, the device type."""
    differences = "; ".join(f"{name} {shown(saved)} (now {shown(now)})" for name, (saved, now) in changed.items())
    message = f"--resume with other settings than the run in {output_dir}: {differences}."
    saved_labels, labels = changed.get("labels", (None, None))
    if isinstance(saved_labels, dict) and saved_labels == labels:  # the same counts in another order
        message += (
            f" --labels {label_spec(labels)} lists the classes in another order than the run's --labels "
            f"{label_spec(saved_labels)}: interleave_labels breaks ties between classes by that order, so the samples "
            f"still to draw would get other labels. Fix: --labels {label_spec(saved_labels)}."
        )
    if "batch_size" in changed:
        message += (
            " A sample's pixels can move by one 8-bit level with the size of the batch it is drawn in (batched "
            f"network calls round differently). Fix: --batch_size {changed['batch_size'][0]}."
        )
    if "device_type" in changed:
        saved_type, device_type = changed["device_type"]
        message += (
            f" The run sampled on {saved_type} with a sampler that draws noise at every step from generators seeded "
            f"on the sampling device ({noise_source(config)}): on {device_type} the samples still to draw would come "
            f"from another noise stream. Fix: resume on a {saved_type} device (--device {saved_type}), or start a new "
            "--output_dir."
        )
    flags = " ".join(filter(None, (as_flag(name, saved) for name, (saved, _) in changed.items() if name != "device_type")))
    if flags:
        message += (
            f" Fix for every difference at once: --resume {flags} (the run's settings, from {CONFIG_FILE} in "
            f"{output_dir}; a flag left out takes its default), or a new --output_dir."
        )
    return message


def shown(value) -> str:
    """A recorded setting as a refusal shows it: label counts as ``--labels`` takes them, a list comma-separated,
    None as "not set"."""
    if isinstance(value, dict):
        return label_spec(value) if value else "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return "not set" if value is None else str(value)


def as_flag(name: str, value) -> str:
    """A recorded setting as the flag that gives it back (``""`` where leaving the flag out does)."""
    if value is None or value is False or (isinstance(value, (dict, list, tuple)) and not value):
        return ""
    return f"--{name}" if value is True else f"--{name} {shown(value)}"


def label_spec(labels: Dict[str, int]) -> str:
    """``{"PM": 3, "non-PM": 2}`` -> ``"PM=3,non-PM=2"``, as ``--labels`` takes it (``parse_label_counts``)."""
    return ",".join(f"{name}={count}" for name, count in labels.items())


def draws_noise_on_device(pipe, config: GenerationConfig) -> bool:
    """Whether sampling draws noise after the starting noise, which ``FundusPipeline`` draws from generators it seeds
    on the sampling device (``step_noise_generators``): a stochastic sampler's at every step (``draws_step_noise``),
    and with ``masks_from`` every sampler's, for the given masks. Such samples depend on the device type; samples of
    a deterministic sampler or a GAN (whose only noise comes from CPU generators) differ between device types by
    arithmetic rounding only."""
    return hasattr(pipe, "scheduler") and (config.masks_from is not None or draws_step_noise(pipe.scheduler))


def noise_source(config: GenerationConfig) -> str:
    """The settings that make sampling draw noise on the device, for messages (see ``draws_noise_on_device``)."""
    sampler = f"--scheduler {config.scheduler}"
    return f"{sampler}, --masks_from {config.masks_from}" if config.masks_from else sampler


def nothing_finished(output_dir: str) -> bool:
    """Whether the generation run in ``output_dir`` holds nothing a restart would lose: its settings, unfinished
    shards (``*.tmp``) and the ``--png`` files of those (written again with their shard), nothing else."""
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name == SHARDS_DIR and os.path.isdir(path):
            if any(not shard.endswith(".tmp") for shard in os.listdir(path)):
                return False
        elif name == "png":
            if os.path.exists(os.path.join(path, "metadata.csv")):  # written once the run's PNGs are all there
                return False
        elif name != CONFIG_FILE:
            return False
    return True


@contextmanager
def exclusive_writer(output_dir: str):
    """Held by the process that writes ``output_dir``'s settings and assembles its dataset, for the whole run: a lock
    on the folder itself (``flock``, released when the run ends or dies), so that a second command started on the
    same folder is refused instead of starting it over or resuming it under the first. Where ``fcntl`` is missing
    (Windows), nothing is locked."""
    if fcntl is None:
        yield
        return
    fd = os.open(output_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"{output_dir}: another command is generating into it now. Fix: wait for it to end (--resume then "
                "continues it if it stopped early), or choose another --output_dir."
            ) from None
        yield
    finally:
        os.close(fd)


def changed_settings(saved: dict, config: GenerationConfig, ignored: Sequence[str] = ()) -> Dict[str, Tuple]:
    """``{name: (saved, now)}`` for the settings, but ``ignored``, in which ``config`` differs from a run's ``saved``
    ones (``generation_config.json``). ``labels`` differ in their order too: ``interleave_labels`` breaks ties between
    classes by it, so ``PM=3,non-PM=3`` and ``non-PM=3,PM=3`` label the samples differently."""

    def comparable(key, value):
        return list(value.items()) if key == "labels" and isinstance(value, dict) else value

    return {
        k: (saved.get(k), v)
        for k, v in asdict(config).items()
        if k not in ignored and comparable(k, saved.get(k)) != comparable(k, v)
    }


def prepare_pipeline(pipe, config: GenerationConfig) -> GenerationConfig:
    """Make ``pipe`` sample as ``config`` says and return ``config`` with its sampler, precision and device type
    settled.

    A diffusion pipeline gets the scheduler ``config`` names (``use_scheduler``, from its saved noise schedule; kept
    with ``own``), by default DPM-Solver++ in 20 steps (DDPM with RePaint's ``resample_steps``), its steps spaced as
    ``timestep_spacing`` says (default: as saved); a GAN takes no sampler settings. With ``compile``, the network (UNet or GAN generator) is compiled in place, once (a pipeline
    prepared before keeps its compiled network), for fixed shapes: ``generate_samples`` pads every batch to
    ``batch_size``. Eager is the default: compiling costs tens of seconds (minutes with the max-autotune modes)
    before the first batch, which only a long run earns back. ``channels_last`` stores the network's (and an
    autoguidance guide's) weights NHWC, cuDNN's preferred layout for half-precision convolutions; ``cudnn_benchmark``
    sets the process-wide ``torch.backends.cudnn.benchmark`` (cuDNN times its convolution algorithms once per shape,
    which fixed batch shapes could repay). Both off by default: together they sampled slower in their one measurement
    (README, "Speed").
    """
    if not hasattr(pipe, "scheduler"):  # a GAN draws its samples in one pass
        if config.scheduler is not None or config.num_inference_steps is not None or config.timestep_spacing or config.autoguidance_scale is not None:
            raise ValueError(
                f"--scheduler / --num_inference_steps / --timestep_spacing / autoguidance apply to diffusion models; "
                f"{type(pipe).__name__} (a GAN) has no sampler: leave them out."
            )
    elif config.scheduler is None:
        resampling = config.resample_steps > 0
        steps = config.num_inference_steps
        if steps is None and not resampling:  # no more steps than the training chain has (tiny test models)
            steps = min(DEFAULT_INFERENCE_STEPS, pipe.scheduler.config.num_train_timesteps)
        config = replace(config, scheduler=DEFAULT_RESAMPLING_SCHEDULER if resampling else DEFAULT_SCHEDULER, num_inference_steps=steps)
    if hasattr(pipe, "scheduler"):  # OWN_SCHEDULER keeps the saved kind
        use_scheduler(pipe, None if config.scheduler == OWN_SCHEDULER else config.scheduler, config.timestep_spacing)
    network = pipe.unet if hasattr(pipe, "unet") else pipe.gan_generator
    if config.cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    prepare_network(network, config)
    dtype = next(name for name, dtype in DTYPES.items() if dtype == network.dtype)
    return replace(config, dtype=dtype, device_type=pipe._execution_device.type)


def process_state() -> PartialState:
    """This process's place among those ``accelerate launch`` started (one process alone: a single-process state).
    Without a GPU the processes must be told ``cpu=True`` (``launched_without_gpu``), or every one would write the
    whole dataset."""
    return PartialState(cpu=launched_without_gpu())


def generate_dataset(
    pipe,
    config: GenerationConfig,
    output_dir: str,
    resume: bool = False,
    mask_sets: Optional[MaskSets] = None,
    threads: Optional[int] = None,
) -> Optional[Dataset]:
    """Generate ``config.num_samples`` samples into ``output_dir`` (see the module docstring); return the dataset.
``pipe`` is first prepared as ``config`` says (``prepare_pipeline``: its scheduler set, its network compiled), and
the settled config is what ``generation_config.json`` records and ``--resume`` compares.

    ``mask_sets`` (``read_mask_sets``): one sample per mask set, drawn for its masks; ``config.masks_from`` must name
    it and ``config.num_samples`` count its ids.

    ``threads`` encode the samples while the next batch is drawn (``write_samples``; default ``encoding_threads``):
    the dataset is the same whatever their number.

    Run by every process of an ``accelerate launch`` (each with ``pipe`` on its own device): each writes its share
    of the shards, the main process assembles the dataset and returns it; the other processes return None once every
    shard is on disk (waiting for the assembly too could outlast the collective backend's timeout)."""
    state = process_state()
    config = prepare_pipeline(pipe, config)
    start_over = check_resume(output_dir, config, resume, noise_on_device=draws_noise_on_device(pipe, config))
    check_mask_sets(pipe, config, mask_sets)
    check_sampling(pipe, config, mask_sets)
    guide = load_autoguidance(pipe, config)  # refused before anything is written
    with ExitStack() as stack:  # the main process holds exclusive_writer from its first write to the end
        shards_dir = os.path.join(output_dir, SHARDS_DIR)
        dataset = saved_dataset(output_dir)  # a resumed run may find the samples all there already
        if dataset is None:
            paths = shard_paths(config, shards_dir)
            missing = [k for k, path in enumerate(paths) if not os.path.exists(path)]
            state.wait_for_everyone()  # every process has checked and listed the folder before anything is written
            if state.is_main_process:
                os.makedirs(output_dir, exist_ok=True)
                stack.enter_context(exclusive_writer(output_dir))  # before anything in it is removed or written
                if start_over:  # its unfinished shards and their PNGs were drawn with the old settings
                    changed = changed_settings(read_generation_config(output_dir), config)
                    changes = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()) or "none"
                    logger.info(
                        f"{output_dir} holds a generation run that finished no shard yet (nothing to lose): starting it "
                        f"over with the settings given now (changed: {changes})."
                    )
                    for name in (SHARDS_DIR, "png"):
                        shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
                _remove_partial_save(output_dir)  # a run killed inside save_to_disk: its shards are still there
                os.makedirs(shards_dir, exist_ok=True)
                with open(os.path.join(output_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
                    json.dump(asdict(config), f, indent=2)
            state.wait_for_everyone()
            with state.split_between_processes(missing) as own:
                shards = [(k, paths[k]) for k in own]
                threads = threads or encoding_threads(state.num_processes)
                _write_shards(pipe, config, shards, os.path.join(output_dir, "png"), mask_sets, state, threads, guide)
            state.wait_for_everyone()  # every shard is on disk
        if not state.is_main_process:
            return None
        if dataset is None:
            drawn_for = f", drawn for the mask sets of {config.masks_from}" if config.masks_from else ""
            info = DatasetInfo(
                features=synthetic_features(pipe.config.mask_names, bool(pipe.origin_names)),
                description=f"Synthetic fundus samples from {config.model_name}{drawn_for}",
            )
            concatenate_datasets([Dataset.from_file(p, info=info) for p in paths]).save_to_disk(output_dir)
            dataset = load_from_disk(output_dir)
        shutil.rmtree(shards_dir, ignore_errors=True)  # only once the saved dataset reads back
        write_extras(dataset, pipe, config, output_dir, mask_sets)
        return dataset


def check_sampling(pipe, config: GenerationConfig, mask_sets: Optional[MaskSets] = None) -> None:
    """Refuse before anything is written what the pipeline would refuse at the first batch, naming the flag and its
    fix. The rules are the pipeline's own checks (``check_guidance``, ``check_resampling``), run on the settings of
    ``config`` with the scheduler ``prepare_pipeline`` set; their messages give the Python fix, these the flags."""
    if config.labels and not pipe.class_conditional:
        raise ValueError(
            "--labels needs a class-conditional model; this one is unconditional (trained without classes), so it "
            "cannot follow labels. Fix: leave --labels out (and give --num_samples)."
        )
    origin_names = pipe.origin_names  # [] for a model without origin conditioning (every GAN)
    if config.origin is not None and config.origin not in origin_names:
        raise ValueError(
            f"--origin {config.origin}: "
            + (f"this model was trained on the origins {', '.join(origin_names)}. Fix: name one of them."
               if origin_names else "this model was trained without origin conditioning (fundus-train-ddpm "
               "--origin_conditioning), so it draws no chosen camera or collection. Fix: leave --origin out.")
        )  # fmt: skip
    if config.postprocess and importlib.util.find_spec("scipy") is None:
        raise ValueError(
            f"--postprocess {','.join(config.postprocess)} needs scipy, which is not installed. Fix: pip install "
            '"fundus-diffusion[eval]" (or pip install scipy), or leave --postprocess out.'
        )
    needs = {"largest_disc": ("disc",), "cup_in_disc": ("cup", "disc")}
    masks = set(split_mask_names(pipe.config.mask_names))
    if config.postprocess and not masks:
        raise ValueError(
            f"--postprocess {','.join(config.postprocess)} works on masks, and this model draws images only. Fix: leave "
            "--postprocess out."
        )
    for step in config.postprocess:
        if not set(needs.get(step, ())) <= masks:
            raise ValueError(
                f"--postprocess {step} works on the {' and '.join(needs[step])} masks, and this model draws "
                f"{', '.join(sorted(masks)) or 'no masks'}. Fix: leave {step} out of --postprocess."
            )
    if not hasattr(pipe, "scheduler"):  # a GAN: no guidance nor given masks (check_mask_sets refuses --masks_from)
        if config.guidance_scale != 1:
            raise ValueError(
                f"--guidance_scale {config.guidance_scale:g}: a GAN draws each sample in one pass, with no guidance. "
                "Fix: leave --guidance_scale out."
            )
        return
    try:
        pipe.check_guidance(config.guidance_scale, config.sample_labels() if config.labels else None)
    except ValueError as err:
        scale = f"--guidance_scale {config.guidance_scale:g}"
        if not pipe.class_conditional:
            raise ValueError(
                f"{scale}: this model is unconditional (no classes), so there is nothing to guide towards. "
                "Fix: leave --guidance_scale out (--autoguidance_model guides a model without classes)."
            ) from err
        classes = list(pipe.config.id2label.values())
        raise ValueError(
            f"{scale} guides each sample towards its class, and no --labels were given (the samples are "
            f"unconditional). Fix: add --labels with a count per class of the model ({', '.join(classes)}), e.g. "
            f"--labels {','.join(f'{name}=10' for name in classes)}, or leave --guidance_scale out."
        ) from err
    try:
        pipe.check_resampling(config.resample_steps, mask_sets is not None)
    except ValueError as err:
        steps = f"--resample_steps {config.resample_steps}"
        if config.resample_steps < 0:
            raise ValueError(f"{steps}: give 0 (replacement only) or more (e.g. 4).") from err
        sampler = f"--scheduler {config.scheduler} ({type(pipe.scheduler).__name__})"
        if not hasattr(pipe.scheduler, "add_noise"):
            raise ValueError(
                f"--masks_from needs a scheduler that noises the given masks to each step's level; {sampler} has no "
                "add_noise. Fix: add --scheduler ddpm (or ddim)."
            ) from err
        raise ValueError(
            f"{steps} needs a scheduler without solver state: each step is done again, and {sampler} keeps some (its "
            "step index, earlier model outputs). Fix: add --scheduler ddpm (or ddim), or leave --scheduler out (ddpm "
            f"is the default with --resample_steps); or leave --resample_steps out (replacement only, which works "
            f"with --scheduler {config.scheduler})."
        ) from err


def check_mask_sets(pipe, config: GenerationConfig, mask_sets: Optional[MaskSets]) -> None:
    """``config.masks_from`` names ``mask_sets``, one sample per set, whose masks the model has at its resolution."""
    if (config.masks_from is None) != (mask_sets is None) or (mask_sets and config.masks_from != mask_sets.name):
        raise ValueError(
            f"The generation config names masks_from={config.masks_from!r}, but the mask sets given are "
            f"{mask_sets.name if mask_sets else None!r}: pass read_mask_sets(dir) with masks_from=its name."
        )
    if config.resample_steps and mask_sets is None:
        raise ValueError("--resample_steps applies to --masks_from (sampling for given masks).")
    if mask_sets is None:
        return
    if not hasattr(pipe, "scheduler"):
        raise ValueError("--masks_from needs a diffusion model (a FundusPipeline); a GAN cannot be conditioned on masks.")
    if config.num_samples != len(mask_sets.ids):
        raise ValueError(
            f"--masks_from {mask_sets.root} holds {len(mask_sets.ids)} mask sets, one sample each; --num_samples is "
            f"{config.num_samples}. Fix: leave --num_samples out."
        )
    mask_sets.check(list(pipe.config.mask_names), pipe.native_resolution)


SAVED_FILES = ("state.json", "dataset_info.json")  # save_to_disk writes them last, in this order


def saved_dataset(output_dir: str):
    """The finished dataset in ``output_dir``, or None when there is none or its save was cut short."""
    output_dir = export.arrow_folder(output_dir) or output_dir  # in arrow/ once write_extras has run
    if not all(os.path.isfile(os.path.join(output_dir, name)) for name in SAVED_FILES):
        return None
    try:
        return load_from_disk(output_dir)
    except (OSError, ValueError, KeyError, TypeError):  # truncated JSON, a missing data file
        return None


def _remove_partial_save(output_dir: str) -> None:
    """The files of an interrupted ``save_to_disk`` (made again from the shards)."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        if name in SAVED_FILES or (name.startswith("data-") and name.endswith(".arrow")):
            os.remove(os.path.join(output_dir, name))


def shard_paths(config: GenerationConfig, shards_dir: str) -> List[str]:
    """The path of every shard, in sample order (shard ``k``: samples ``[k * shard_size, (k + 1) * shard_size)``)."""
    return [os.path.join(shards_dir, f"shard-{k:05d}.arrow") for k in range(-(-config.num_samples // config.shard_size))]


def _write_shards(
    pipe, config: GenerationConfig, shards, png_dir: str, mask_sets, state: PartialState, threads: int, guide=None
) -> None:
    """The ``(index, path)`` shards given to this process, sampled batch by batch (a batch never spans two shards,
    guided by ``guide`` when given) and written by ``write_samples``, with a progress bar over its samples and one
    over the denoising steps of the batch being drawn (main process: a batch can take minutes on a CPU)."""
    labels = config.sample_labels()

    def batches():
        for shard, _ in shards:
            start, stop = _shard_range(config, shard)
            for first in range(start, stop, config.batch_size):
                indices = range(first, min(first + config.batch_size, stop))
                given = [mask_sets.load(i) for i in indices] if mask_sets is not None else None
                seeds = [config.seed + i for i in indices]
                yield (indices, *generate_samples(pipe, seeds, [labels[i] for i in indices], config, given, guide))

    total = sum(stop - start for start, stop in (_shard_range(config, k) for k, _ in shards))
    where = f" (process 0 of {state.num_processes})" if state.num_processes > 1 else " (one process)"
    # the samples' bar moves as a batch is written; the denoising steps of the batch being drawn show beneath it on a
    # terminal, and on the same line in a redirected log (a second line costs cursor-up escape codes there)
    pipe.set_progress_bar_config(
        disable=not state.is_main_process, leave=False, position=1 if sys.stderr.isatty() else 0, desc="denoising the batch"
    )
    with tqdm(
        total=total, unit="sample", desc=f"Generating{where}", smoothing=0.1, disable=not state.is_main_process
    ) as progress:
        write_samples(
            batches(), config, shards, list(pipe.config.mask_names), threads, png_dir, mask_sets, progress,
            origins=bool(pipe.origin_names),
        )  # fmt: skip


def write_extras(
    dataset,
    pipe,
    config: GenerationConfig,
    output_dir: str,
    mask_sets: Optional[MaskSets] = None,
    sheet_samples: int = 64,
):
    """The contact sheet, the dataset card (which says what ``mask_sets`` gave) and, with ``png``,
    ``png/metadata.csv``."""
    first = dataset.select(range(min(sheet_samples, len(dataset))))
    mask_names = list(pipe.config.mask_names)
    label_name = dataset.features["label"].int2str
    captions = [label_name(label) if label >= 0 else "uncond." for label in list(first["label"])]
    if ORIGIN_COLUMN in dataset.column_names:
        captions = [f"{caption} {origin}" for caption, origin in zip(captions, first[ORIGIN_COLUMN])]
    masks = [{name: row[mask_column(name)] for name in mask_names} for row in first]
    contact_sheet(list(first["image"]), masks, captions=captions).save(os.path.join(output_dir, "contact_sheet.png"))
    if config.png:
        _write_png_metadata(dataset, mask_names, os.path.join(output_dir, "png"))
    dataset_card(pipe, config, dataset, mask_sets).save(os.path.join(output_dir, "README.md"))
    export.write_hub_layout(output_dir)  # data/*.parquet for load_dataset(output_dir); the Arrow files into arrow/


def _write_png_metadata(dataset, mask_names: Sequence[str], png_dir: str) -> None:
    """``png/metadata.csv``: ``id`` (the file stem) and ``label`` for the generic folder reader, ``file_name`` and
    ``<name>_mask_file_name`` for ``load_dataset("imagefolder", data_dir=png_dir)``, the row's id in ``source_id``,
    and each sample's ``origin`` where the model is origin-conditioned."""
    label_name = dataset.features["label"].int2str
    mask_files = {m: f"{mask_column(m)}_file_name" for m in mask_names}
    extra = [ORIGIN_COLUMN] if ORIGIN_COLUMN in dataset.column_names else []

    def rows():
        for row in dataset.select_columns(["id", "label", "source", "seed", *extra]):
            stem = png_name(row["id"].rsplit("/", 1)[-1])
            yield {
                "file_name": f"images/{stem}.png",
                **{column: f"masks/{m}/{stem}.png" for m, column in mask_files.items()},
                "id": stem,
                "source_id": row["id"],
                "label": label_name(row["label"]) if row["label"] >= 0 else UNKNOWN_LABEL,
                "split": "train",
                "source": row["source"],
                "seed": row["seed"],
                **{column: row[column] for column in extra},
            }

    columns = ["file_name", *mask_files.values(), "id", "source_id", "label", "split", "source", "seed", *extra]
    export.write_imagefolder_metadata(png_dir, columns, rows())


def dataset_card(pipe, config: GenerationConfig, dataset, mask_sets: Optional[MaskSets] = None):
    """The dataset card (``model_cards/synthetic.md``): model, sampler, steps, guidance (autoguidance included),
    post-processing, seeds, the device type sampled on and a snippet that makes one sample again (up to rounding:
    ``regenerate``).

    A set drawn for ``mask_sets`` (``config.masks_from``) also gets the folder's name and ``resample_steps``, and how
    many samples each mask was given for (kept as given) or drawn for: every mask column is filled, so its
    ``has_<name>_annotation`` alone cannot tell.
    """
    is_gan = not hasattr(pipe, "scheduler")
    scheduler = None if config.scheduler == OWN_SCHEDULER else config.scheduler  # load_fundus_pipeline's spelling
    counts = np.bincount(np.asarray(list(dataset["label"])) + 1, minlength=len(LABEL_NAMES) + 1)
    order = [*(config.labels or {}), *(name for name in LABEL_NAMES if name not in (config.labels or {}))]
    label_counts = {name: int(counts[LABEL_NAMES.index(name) + 1]) for name in order if counts[LABEL_NAMES.index(name) + 1]}
    if counts[0]:
        label_counts["unconditional (label -1)"] = int(counts[0])
    drawn_as = Counter(dataset[ORIGIN_COLUMN]) if ORIGIN_COLUMN in dataset.column_names else Counter()
    origin_counts = {name: drawn_as[name] for name in pipe.origin_names if drawn_as[name]}
    model = config.model_name  # a local folder's name only: its path means nothing elsewhere and may name people
    mask_names = list(pipe.config.mask_names)
    given = {name: sum(name in files for files in mask_sets.files.values()) for name in mask_names} if mask_sets else {}
    data = DatasetCardData(
        **LICENSE,
        pretty_name=f"Synthetic fundus images{' with masks' if mask_names else ''} from {model}",
        task_categories=(["image-segmentation"] if mask_names else []) + ["image-classification"],
        tags=["medical", "ophthalmology", "fundus", "retina", "synthetic", "fundus-diffusion"],
        size_categories=[size_category(len(dataset))],
    )
    return render_dataset_card(
        "synthetic",
        data,
        model=model,
        model_is_local=is_local_path(config.model),
        pipeline_class=type(pipe).__name__,
        num_samples=len(dataset),
        resolution=dataset[0]["image"].size[0],
        mask_names=mask_names,
        masks_from=config.masks_from,  # the folder's name (MaskSets.name, checked by check_mask_sets), not its path
        resample_steps=config.resample_steps,
        given_masks=given,
        is_gan=is_gan,
        sampler=None if is_gan else f"{type(pipe.scheduler).__name__} ({scheduler or 'as saved'}, "
        f"{pipe.scheduler.config.timestep_spacing} spacing)",
        timestep_spacing=config.timestep_spacing,
        autoguidance_model=config.autoguidance_name,
        autoguidance_is_local=bool(config.autoguidance_model) and is_local_path(config.autoguidance_model),
        autoguidance_scale=config.autoguidance_scale,
        steps=config.num_inference_steps or (None if is_gan else pipe.scheduler.config.num_train_timesteps),
        guidance_scale=config.guidance_scale,
        label_counts=label_counts,  # in --labels order, which decides each sample's label (a resume keeps it)
        origin_counts=origin_counts,  # an origin-conditioned model's samples per origin (column ORIGIN_COLUMN)
        origin=config.origin,
        training_origin_counts=pipe.config.get("origin_counts") or {},
        labels_flag=label_spec(config.labels) if config.labels else None,
        label_names=list(LABEL_NAMES),
        labels=config.labels,  # the snippet's interleave_labels(labels)[i] is sample i's label, as sample_labels()
        postprocess=list(config.postprocess),
        seed=config.seed,
        scheduler=scheduler,
        num_inference_steps=config.num_inference_steps,
        dtype=config.dtype,
        device_type=config.device_type,
        noise_on_device=draws_noise_on_device(pipe, config),
        # the network's batch: --batch_size, or fewer where the set or a shard is smaller (a compiled network pads)
        batch_size=config.batch_size if config.compile else min(config.batch_size, config.num_samples, config.shard_size),
    )


def push_dataset(output_dir: str, repo_id: str, token: Optional[str] = None, private: bool = False) -> str:
    """Upload the card and contact sheet, then the dataset (``push_to_hub`` adds its schema to the card's YAML)."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private).repo_id
    for name in ("README.md", "contact_sheet.png"):
        api.upload_file(path_or_fileobj=os.path.join(output_dir, name), path_in_repo=name, repo_id=repo_id, repo_type="dataset")
    load_from_disk(export.arrow_folder(output_dir) or output_dir).push_to_hub(repo_id, token=token)
    return f"https://huggingface.co/datasets/{repo_id}"
