"""``load_fundus_dataset``: one entry point for every place a dataset can come from."""

import json
import logging
import os
from typing import Optional

from datasets import Dataset, DatasetDict, DatasetInfo, load_dataset, load_from_disk
from filelock import FileLock

from .. import export
from ..pipelines.loading import certainly_local, local_path_hint
from . import build
from .folder import FOLDER_LAYOUT, with_drawn_origins
from .phantom import load_phantom_dataset
from .readers import FundusDataError, MissingLayoutError
from .schema import fundus_features
from .training_view import default_cache_dir

logger = logging.getLogger(__name__)

PHANTOM_DEFAULT_SAMPLES = 256
PHANTOM_DEFAULT_SIZE = 256
SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def load_fundus_dataset(
    path_or_hub_id: str,
    split: str = "train",
    labels: Optional[str] = None,
    include_amd: bool = False,
    require_masks: bool = True,
    skip_bad: bool = False,
    cache_dir: Optional[str] = None,
):
    """A schema ``datasets.Dataset`` from any of:

    - ``phantom`` or ``phantom:N``: N deterministic phantoms (the embedded default);
    - a folder written by ``scripts/build_dataset.py`` or ``scripts/generate.py`` (its ``arrow/``, or the folder
      itself for folders from before the Hub layout: ``save_to_disk``);
    - a raw PALM (2019 or 2024), ADAM or generic folder, detected by its layout and built on first use (the rows
      are cached under ``cache_dir``, by default ``$FUNDUS_CACHE`` or ``~/.cache/fundus_diffusion``, keyed by the
      files' sizes and times); ``labels``, ``include_amd``, ``require_masks`` and ``skip_bad`` mean what they mean
      for ``build_dataset.py``;
    - a folder holding only the parquet shards and card of a Hub dataset repo (a downloaded snapshot);
    - a Hub dataset id.

    ``split`` picks a split of a ``DatasetDict`` or Hub dataset; rows keep their source's split in the ``split``
    column either way.
    """
    spec = os.path.expanduser(str(path_or_hub_id))
    if spec == "phantom" or spec.startswith("phantom:"):
        count = spec.split(":", 1)[1] if ":" in spec else str(PHANTOM_DEFAULT_SAMPLES)
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{spec}: give phantom:N with N a positive number of phantoms (e.g. phantom:64), or phantom.")
        num = int(count)
        return load_phantom_dataset(num, size=PHANTOM_DEFAULT_SIZE)
    if os.path.isdir(spec):
        spec = export.arrow_folder(spec) or spec  # a folder in the Hub layout keeps its Arrow files in arrow/
        if any(os.path.exists(os.path.join(spec, f)) for f in SAVED_MARKERS):
            check_not_empty(spec)
            dataset = load_from_disk(spec)
        elif is_parquet_folder(spec):  # a dataset repo downloaded from the Hub: parquet shards and the card only
            dataset = load_dataset(spec, split=split, cache_dir=cache_dir)
        else:
            options = dict(labels=labels, include_amd=include_amd, require_masks=require_masks, skip_bad=skip_bad)
            return load_raw_folder(spec, cache_dir=cache_dir, **options)
    elif os.path.exists(spec) or certainly_local(spec):
        problem = f"{spec} is not a folder" if os.path.exists(spec) else f"{spec}: no such local folder{local_path_hint(spec)}"
        raise FileNotFoundError(
            f"{problem}. Fix: pass a folder written by fundus-build-dataset, a raw PALM / ADAM / generic folder, "
            "'phantom[:N]' or a Hub dataset id (user/name)."
        )
    else:
        try:
            dataset = load_dataset(spec, split=split)
        except Exception as err:  # the Hub's errors do not say that a local folder was looked for first
            raise FileNotFoundError(
                f"{spec}: no such local folder{local_path_hint(spec)}, and no loadable Hub dataset of that id "
                f"({type(err).__name__}: {err}). Fix: check the path (build a dataset with fundus-build-dataset), or "
                "the Hub id and your connection."
            ) from err
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{spec} has splits {list(dataset)}, not {split!r}. Fix: pass split= one of them.")
        dataset = dataset[split]
    return dataset


def is_parquet_folder(folder: str) -> bool:
    """Whether ``folder`` is laid out as ``push_to_hub`` uploads a dataset: ``data/*.parquet`` (and its card)."""
    data = os.path.join(folder, "data")
    return os.path.isdir(data) and any(name.endswith(".parquet") for name in os.listdir(data))


def check_not_empty(folder: str) -> None:
    """Refuse a saved dataset without rows before ``datasets`` fails on it (an IndexError from inside it)."""
    path = os.path.join(folder, "state.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            data_files = json.load(f).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return  # load_from_disk says what is wrong with it
    if data_files == []:
        raise FundusDataError(
            f"{folder} is a saved dataset with no samples. Fix: rebuild it (fundus-build-dataset) or regenerate it "
            "(fundus-generate) with at least one sample."
        )


def load_raw_folder(
    path: str,
    labels: Optional[str] = None,
    include_amd: bool = False,
    require_masks: bool = True,
    skip_bad: bool = False,
    cache_dir: Optional[str] = None,
    progress: bool = True,
):
    """Read a raw PALM / ADAM / generic folder into a schema dataset, cached as one Arrow file per content.

    Several processes (``accelerate launch``) may call this at once: one builds under a file lock, the others
    wait and then memory-map the same file.
    """
    layout = build.detect_layout(path)
    if layout is None and os.path.isfile(os.path.join(path, "model_index.json")):
        raise MissingLayoutError(
            f"{path} is a saved model, not a dataset. Fix: sample a dataset from it first: fundus-generate --model "
            f"{path} --output_dir <new folder>, and give that folder."
        )
    if layout is None:
        raise MissingLayoutError(
            f"{path} is a folder but neither a dataset saved by fundus-build-dataset (no dataset_info.json) nor a "
            "raw PALM (PALM-Training400/ or PALM/<split>/Images/), ADAM (Training400/{AMD,Non-AMD}/) or generic "
            f"folder. Expected, for your own data, the {FOLDER_LAYOUT}\nFix: lay the folder out as above, or build "
            "it: fundus-build-dataset --palm_dir/--adam_dir/--folder_dir ... --output_dir ..."
        )
    roots = {f"{layout}_dirs": [path]}
    candidates, report = build.scan_sources(**roots, labels=labels, include_amd=include_amd, require_masks=require_masks)
    cache = os.path.join(cache_dir or default_cache_dir(), "raw")
    os.makedirs(cache, exist_ok=True)
    arrow = os.path.join(cache, f"{layout}-{build.scan_signature(candidates, skip_bad=skip_bad)}.arrow")
    with FileLock(f"{arrow}.lock"):
        if not os.path.exists(arrow):
            build.write_rows(candidates, arrow, report, skip_bad=skip_bad, progress=progress)
            if report.excluded or report.skipped or report.thresholded:
                logger.warning(report.summary())
    dataset = Dataset.from_file(arrow, info=DatasetInfo(features=fundus_features(report.mask_names)))
    return with_drawn_origins(dataset, path) if layout == "folder" else dataset
