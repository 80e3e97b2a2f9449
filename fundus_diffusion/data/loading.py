"""``load_fundus_dataset``: one entry point for every place a dataset can come from."""

import os

PHANTOM_DEFAULT_SAMPLES = 256
PHANTOM_DEFAULT_SIZE = 256


def load_fundus_dataset(path_or_hub_id: str, split: str = "train"):
    """A schema ``datasets.Dataset`` from ``phantom[:N]``, a folder written by ``save_to_disk`` or a Hub id."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    from .phantom import load_phantom_dataset

    spec = str(path_or_hub_id)
    if spec == "phantom" or spec.startswith("phantom:"):
        num = int(spec.split(":", 1)[1]) if ":" in spec else PHANTOM_DEFAULT_SAMPLES
        return load_phantom_dataset(num, size=PHANTOM_DEFAULT_SIZE)
    if os.path.isdir(spec):
        if not any(os.path.exists(os.path.join(spec, f)) for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise FileNotFoundError(
                f"{spec} is a folder but not a dataset saved by scripts/build_dataset.py (no dataset_info.json or "
                "dataset_dict.json). Build one first: python scripts/build_dataset.py --folder_dir ... --output_dir ..."
            )
        dataset = load_from_disk(spec)
    else:
        dataset = load_dataset(spec, split=split)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{spec} has splits {list(dataset)}, not {split!r}.")
        dataset = dataset[split]
    return dataset
