"""Cards for models and datasets: Jinja templates in this folder rendered through huggingface_hub's ``ModelCard`` /
``DatasetCard`` and their card-data classes (installed as ``fundus_diffusion.model_cards``).

Every template starts with ``{{ card_data }}`` (the YAML metadata, written by the card-data class) and is rendered
strictly: a variable it uses that the caller did not pass is an error here, not a blank on the Hub. A model's card is
built from the files of its saved folder alone (``model_index.json``, the component configs, the safetensors headers
and ``metrics.json``), so rewriting it never loads the weights.
"""

import json
import math
import os
import re
from importlib import resources
from typing import Dict, List, Optional, Sequence

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import RepoCard
from jinja2 import meta
from safetensors import safe_open

from ..pipelines.pipeline_fundus import split_mask_names, takes_class_labels

# One licence for every card: weights and samples derive from datasets published for research use under their own
# terms (PALM, ADAM, ...), so no open licence can be granted for them; each card's body says so.
LICENSE = {"license": "other", "license_name": "terms-of-each-source"}
TAGS = ["fundus-diffusion", "medical-imaging", "ophthalmology", "retinal-fundus", "synthetic-data"]
METRICS_FILE = "metrics.json"  # the measured metrics a model card shows, kept beside it so that later ones add up
# The training-information keys a model card shows as its "Training data" section (training.loop.run_info writes them).
DATA_KEYS = ("dataset", "images", "sources", "labels", "masks", "annotated")
TEMPLATES = {"FundusPipeline": "ddpm", "FundusGANPipeline": "dcgan"}
# Table 1 of Makinde & Saeed (``--preset paper``, training/dcgan.py's PAPER_PRESET) as a DCGAN run records it in its
# training information (training.loop.run_info and DCGANKind.training_info); the epochs depend on the masks. A card
# claims the paper's settings only where the run recorded these: flags given explicitly win over the preset. Kept
# here because this module cannot import the trainer (it needs the train extra); tests/test_hub_fixes.py checks that
# the two agree.
PAPER_TABLE_1 = {
    "resolution": 360,
    "batch_size": 32,
    "learning_rate": 2e-4,
    "optimizer": "Adam, lr 0.0002, betas (0.5, 0.999)",
    "loss": "bce",
    "discriminator": "BatchNorm",
    "nz / ngf / ndf": "100 / 32 / 64",
    "weights": "last step",
    "class_conditional": False,
}
PAPER_EPOCHS = {1: 100, 2: 130}  # one mask (or none): 100 epochs; two or more: 130
# "0.7", "0.7 ± 0.1", "97%", "0.7 (n = 1)" (evaluation.metrics.format_mean_std of one value)
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*%?\s*(?:±\s*\d+(?:\.\d+)?\s*%?|\(n = \d+\))?\s*")


def render_card(card_class, template: str, card_data, **context) -> RepoCard:
    """``model_cards/<template>.md`` rendered by ``card_class.from_template`` with ``card_data`` and ``context``."""
    source = resources.files(__name__).joinpath(f"{template}.md").read_text(encoding="utf-8")
    used = meta.find_undeclared_variables(jinja2.Environment().parse(source))
    missing = used - set(context) - set(card_data.to_dict()) - {"card_data"}
    if missing:
        raise ValueError(f"model_cards/{template}.md uses undefined variables {sorted(missing)}: pass them to the card.")
    return card_class.from_template(card_data, template_str=source, **context)


def render_model_card(template: str, card_data: Optional[ModelCardData] = None, **context) -> str:
    """A model card's text (``template`` in this folder, e.g. ``"ddpm"``)."""
    return str(render_card(ModelCard, template, card_data or ModelCardData(**LICENSE), **context))


def render_dataset_card(template: str, card_data: DatasetCardData, **context) -> DatasetCard:
    """A dataset card (``template`` in this folder, e.g. ``"dataset"`` or ``"synthetic"``)."""
    return render_card(DatasetCard, template, card_data, **context)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    return "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"


def portable_name(value: str) -> str:
    """A local path reduced to its last component (folder names can carry patient or site names, and mean nothing
    on another machine); Hub ids and other strings unchanged."""
    if isinstance(value, str) and (os.path.isabs(value) or value.startswith(("~", "./", "../")) or os.path.exists(value)):
        return os.path.basename(os.path.normpath(os.path.expanduser(value)))
    return value


def eval_results(metrics: Sequence[Dict], dataset_name: str, dataset_type: str) -> List[EvalResult]:
    """The metrics with a numeric value (``12.5``; ``"0.7 ± 0.1"`` -> 0.7; ``"97.0%"`` -> 97.0) as model-index results;
    a value that is no number (``"3 of 100"``) stays in the card's table only."""
    results = []
    for m in metrics:
        value = m["value"]
        if isinstance(value, str):
            number = _NUMBER.fullmatch(value)
            value = float(number.group(1)) if number else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            results.append(EvalResult(
                task_type="unconditional-image-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                metric_type=re.sub(r"[^a-z0-9]+", "_", m["name"].lower()).strip("_"), metric_name=m["name"],
                metric_value=value,
            ))  # fmt: skip
    return results


def _read_json(*parts: str) -> dict:
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def _num_parameters(folder: str) -> int:
    """Parameters in a component folder, from the safetensors headers (no tensor is read)."""
    total = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), framework="pt") as f:
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def paper_differences(training: Dict, num_masks: int) -> Dict[str, tuple]:
    """``{setting: (as the run recorded it, as Table 1 has it)}`` for the settings of a DCGAN run's training
    information that differ from ``PAPER_TABLE_1`` (a setting the run did not record counts as different)."""
    paper = {**PAPER_TABLE_1, "epochs": PAPER_EPOCHS[min(max(num_masks, 1), 2)]}
    return {key: (training.get(key, "not recorded"), value) for key, value in paper.items() if training.get(key) != value}


def read_metrics(folder: str) -> List[Dict]:
    """The measured metrics recorded beside a model's card (none when there is no ``metrics.json``)."""
    path = os.path.join(folder, METRICS_FILE)
    return _read_json(path) if os.path.exists(path) else []


def model_card(folder: str) -> ModelCard:
    """The card of the saved pipeline in ``folder``, built from its files (see the module docstring)."""
    index = _read_json(folder, "model_index.json")
    class_name = index["_class_name"][-1] if isinstance(index["_class_name"], list) else index["_class_name"]
    if class_name not in TEMPLATES:
        raise ValueError(f"{folder}/model_index.json names {class_name!r}; cards exist for {', '.join(TEMPLATES)}.")
    component = "unet" if class_name == "FundusPipeline" else "gan_generator"
    model = _read_json(folder, component, "config.json")
    training = dict(index.get("training_info") or {})
    metrics = read_metrics(folder)
    id2label = {int(k): v for k, v in index["id2label"].items()}
    hub_dataset, repo_id = training.get("hub_dataset"), training.get("hub_model_id")
    context = dict(
        model_id=repo_id or "path/to/this/folder",
        resolution=model["sample_size"] * index.get("space_to_depth", 1),  # the pipeline's image size
        image_channels=index["image_channels"],
        mask_names=split_mask_names(index["mask_names"]),  # "disc,atrophy"; a list in folders saved before
        id2label=id2label,
        null_class_id=len(id2label),
        conditional=takes_class_labels(
            model.get("num_class_embeds"),
            bool(index.get("rotation_conditioning")),
            bool(index.get("flip_conditioning")),
            len(index.get("origin_counts") or {}),
        ),
        rotation_conditioning=bool(index.get("rotation_conditioning")),
        flip_conditioning=bool(index.get("flip_conditioning")),
        origin_counts=index.get("origin_counts") or {},
        has_guide=(index.get("guide_unet") or [None])[0] is not None,  # saved with --guide_step
        num_parameters=_num_parameters(os.path.join(folder, component)),
        data={k: training[k] for k in DATA_KEYS if k in training},
        hub_dataset=hub_dataset,
        training={k: v for k, v in training.items() if k not in DATA_KEYS + ("hub_model_id", "hub_dataset")},
        metrics=metrics,
    )
    if class_name == "FundusPipeline":
        scheduler = _read_json(folder, "scheduler", "scheduler_config.json")
        betas = scheduler.get("trained_betas")  # explicit betas (a shifted schedule) replace beta_schedule
        context.update(
            scheduler_class=scheduler["_class_name"],
            num_train_timesteps=scheduler["num_train_timesteps"],
            beta_schedule=scheduler.get("beta_schedule"),
            trained_betas=(betas[0], betas[-1]) if betas else None,
            prediction_type=scheduler.get("prediction_type"),
        )
    else:
        differences = paper_differences(training, len(context["mask_names"]))
        context.update(nz=model["nz"], paper_preset=training.get("preset") == "paper", paper_differences=differences)
    data = ModelCardData(
        **LICENSE,
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=TAGS + [TEMPLATES[class_name]] + [f"{name}-mask" for name in context["mask_names"]],
        datasets=[hub_dataset] if hub_dataset else None,
        model_name=repo_id or training.get("run") or os.path.basename(os.path.normpath(folder)),
        eval_results=eval_results(metrics, training.get("dataset", "unspecified"), hub_dataset or "local") or None,
    )
    return render_card(ModelCard, TEMPLATES[class_name], data, **context)
