"""Deterministic held-out splits by sample id, so that every model is judged on the same real images."""

import hashlib
import os
from collections import defaultdict
from typing import Callable, List, Optional, Tuple, Union


def _rank(sample_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def holdout_ids(ids: List[str], strata: Optional[List[str]] = None, test_fraction: float = 0.2, seed: int = 0) -> List[str]:
    """The held-out ids: within each stratum, the ``fraction * n`` ids (rounded half up) ranked first by a seeded hash.

    Hash ranking makes the choice independent of row order and stable when rows are added: an id is held out or
    not by its own hash. Every stratum of two or more ids keeps at least one id on each side.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if len(set(ids)) != len(ids):
        raise ValueError("Sample ids must be unique to split by id.")
    groups = defaultdict(list)
    for i, sample_id in enumerate(ids):
        groups[strata[i] if strata is not None else ""].append(sample_id)
    held_out = []
    for members in groups.values():
        n_test = min(max(int(test_fraction * len(members) + 0.5), 1), len(members) - 1)
        held_out += sorted(members, key=lambda s: _rank(s, seed))[:n_test]
    return sorted(held_out)


def split_by_id(
    dataset, test_fraction: float = 0.2, seed: int = 0, stratify_column: Union[str, Callable[[str], str], None] = "source"
) -> Tuple:
    """Split a schema dataset into ``(train, test)`` deterministically by id, stratified by ``stratify_column``.

    ``stratify_column`` is a column name, a function of the id, or None. The same ids come out on every machine and
    every run. ``../shared/data/fundus-od`` has one ``source`` (``folder:fundus-od``) but two origins named in its
    ids; to keep DRISHTI-GS1 and DRIONS-DB 80 / 20 on both sides::

        train, test = split_by_id(dataset, stratify_column=lambda i: i.rsplit("/", 1)[-1].split("_")[0])
    """
    ids = list(dataset["id"])
    if callable(stratify_column):
        strata = [stratify_column(i) for i in ids]
    else:
        strata = list(dataset[stratify_column]) if stratify_column else None
    return split_by_ids(dataset, holdout_ids(ids, strata, test_fraction, seed))


def split_by_ids(dataset, test_ids) -> Tuple:
    """``(train, test)``: the rows whose id is in ``test_ids`` form the test part (every listed id must exist)."""
    test_ids = set(test_ids)
    ids = list(dataset["id"])
    missing = test_ids - set(ids)
    if missing:
        raise ValueError(f"{len(missing)} held-out id(s) are not in the dataset, e.g. {sorted(missing)[:3]}.")
    is_test = [sample_id in test_ids for sample_id in ids]
    return (
        dataset.select([i for i, t in enumerate(is_test) if not t]),
        dataset.select([i for i, t in enumerate(is_test) if t]),
    )


def read_split_file(path: str) -> List[str]:
    """Held-out ids, one per line (blank lines and ``#`` comments ignored)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def write_split_file(path: str, test_ids: List[str]):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# held-out ids (fundus_diffusion.evaluation.split_by_id), one per line\n")
        f.write("".join(f"{i}\n" for i in test_ids))


# Named stratifications for ``split_to_disk`` (and ``scripts/split_dataset.py --stratify``).
STRATA = {
    "source": "source",
    "label": "label",
    # "folder:fundus-od/drions_001" -> "drions": the origin named in a generic folder's file names
    "id_prefix": lambda sample_id: sample_id.rsplit("/", 1)[-1].split("_")[0],
    "none": None,
}


def split_to_disk(dataset, output_dir: str, test_fraction: float = 0.2, seed: int = 0, stratify: str = "source"):
    """Split once by id and write ``train/``, ``test/`` (``save_to_disk``) and ``test_ids.txt``; returns the parts.

    Refuses an existing ``output_dir``: a split is written once, so every model is judged on the same images.
    """
    if stratify not in STRATA:
        raise ValueError(f"Unknown stratification {stratify!r}: choose from {', '.join(STRATA)}.")
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists; choose a new output folder (a split is written once).")
    train, test = split_by_id(dataset, test_fraction, seed, STRATA[stratify])
    train.save_to_disk(os.path.join(output_dir, "train"))
    test.save_to_disk(os.path.join(output_dir, "test"))
    write_split_file(os.path.join(output_dir, "test_ids.txt"), list(test["id"]))
    return train, test


def source_of(sample_id: str, source: str) -> str:
    """The origin a per-source breakdown groups an image under: the prefix of its file name before ``_`` where there
    is one (``folder:fundus-od/drishti_012`` -> ``drishti``: a generic folder records its origins only there), else
    its ``source`` column (``phantom``, ``palm``, ...)."""
    name = sample_id.rsplit("/", 1)[-1]
    return name.split("_")[0] if "_" in name else source
