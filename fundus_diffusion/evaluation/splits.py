"""Deterministic splits by sample id: held-out splits, so that every model is judged on the same real images, nested
training subsets for learning curves, and per-source (per-camera) splits."""

import hashlib
import json
import os
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple, Union

from ..data.readers import read_table
from ..data.schema import file_name, origins


def _rank(sample_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def holdout_ids(
    ids: List[str],
    strata: Optional[List[str]] = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Optional[List[Optional[str]]] = None,
) -> List[str]:
    """The held-out ids: within each stratum, the ``fraction * n`` ids (rounded half up) ranked first by a seeded hash.

    Hash ranking makes the choice independent of row order and stable when rows are added: an id is held out or
    not by its own hash. Every stratum of two or more ids keeps at least one id on each side.

    ``groups`` (one name per id, or None for an id alone) keeps the images of one group (e.g. repeat photographs of
    one eye) on one side. A group ranks as its first id (in sort order) would alone, so it is held out as often as a
    single image; held-out units are taken in rank order until the stratum has its ``fraction * n`` images, so a
    group taken last can hold out more than that, and a group that would leave its stratum no training image is
    skipped. A grouped split therefore differs from the ungrouped one where the groups take or give up held-out
    places: the ungrouped ids next in rank order move in or out. A stratum that is one group stays whole in training.
    A group's images must share a stratum.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if len(set(ids)) != len(ids):
        raise ValueError("Sample ids must be unique to split by id.")
    units = defaultdict(list)  # (stratum, group) -> ids; an id outside every group is its own unit
    for i, sample_id in enumerate(ids):
        group = groups[i] if groups is not None else None
        unit = ("group", group) if group is not None else ("id", sample_id)
        units[(strata[i] if strata is not None else ""), unit].append(sample_id)
    _check_groups_within_strata(units)
    by_stratum = defaultdict(list)
    for (stratum, _), members in units.items():
        by_stratum[stratum].append(sorted(members))
    held_out = []
    for stratum_units in by_stratum.values():
        n_images = sum(len(unit) for unit in stratum_units)
        n_test = min(max(int(test_fraction * n_images + 0.5), 1), n_images - 1)
        taken = 0
        for unit in sorted(stratum_units, key=lambda unit: _rank(unit[0], seed)):
            if taken >= n_test:
                break
            if taken + len(unit) < n_images:  # else it would leave the stratum no training image
                held_out += unit
                taken += len(unit)
    return sorted(held_out)


def _check_groups_within_strata(units):
    members = defaultdict(dict)  # group -> {stratum: ids}
    for (stratum, (kind, name)), ids in units.items():
        if kind == "group":
            members[name][stratum] = ids
    for name, by_stratum in members.items():
        if len(by_stratum) > 1:
            examples = "; ".join(f"{stratum!r}: {', '.join(ids[:2])}" for stratum, ids in by_stratum.items())
            raise ValueError(
                f"Group {name!r} holds images of {len(by_stratum)} strata ({examples}); a group is held out whole, "
                "within one stratum. Fix: give those images separate groups, or split with another stratification."
            )


def read_groups_file(path: str, ids: List[str]) -> List[Optional[str]]:
    """The group of each of ``ids`` (None for an id the file does not name) from a CSV with the columns ``id`` and
    ``group``, e.g. one patient or eye per group; rows whose first cell starts with ``#`` are comments, a blank group
    cell means no group. An id is a dataset id (``folder:fundus-od/drions_002``), its last part (``drions_002``) or
    that with an extension (``drions_002.jpg``). Every named image must be in the dataset, once, and unambiguous: a
    mistyped id would otherwise split silently as ungrouped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist. Fix: pass a CSV with the columns id and group.")
    try:
        rows = [row for row in read_table(path) if not str(row[0]).lstrip().startswith("#")]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason}). Fix: save it as CSV UTF-8.") from None
    header = [str(cell).strip().lower() for cell in rows[0]] if rows else []
    if "id" not in header or "group" not in header:
        found = f"its first row is {rows[0]}" if rows else "it has no rows"
        raise ValueError(f"{path}: expected a CSV with the columns id and group; {found}. Fix: add that header row.")
    id_col, group_col = header.index("id"), header.index("group")
    known, by_name = set(ids), defaultdict(list)
    for sample_id in ids:
        by_name[file_name(sample_id)].append(sample_id)
    group_of, row_of, unknown = {}, {}, []
    for number, row in enumerate(rows[1:], start=2):
        cells = [str(cell).strip() if cell is not None else "" for cell in row] + ["", ""]
        name, group = cells[id_col], cells[group_col]
        sample_id = _dataset_id(name, known, by_name, path, number)
        if sample_id is None:
            unknown.append(name)
            continue
        if sample_id in group_of and group_of[sample_id] != (group or None):
            raise ValueError(
                f"{path}: {sample_id} is given group {group_of[sample_id]!r} on row {row_of[sample_id]} and "
                f"{group or 'none'!r} on row {number}. Fix: give each image one group."
            )
        group_of[sample_id], row_of[sample_id] = group or None, number
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} id(s) are not in the dataset, e.g. {unknown[:3]}; name images by the dataset's id "
            f"(e.g. {ids[0]!r}) or its file name. (Images without masks are not in it unless --images_only is given.)"
        )
    return [group_of.get(sample_id) for sample_id in ids]


def _dataset_id(name: str, known, by_name, path: str, number: int) -> Optional[str]:
    """The dataset id a groups file's ``name`` means (None: none), by id, last part or last part with an extension."""
    if name in known:
        return name
    candidates = by_name.get(name) or by_name.get(os.path.splitext(name)[0]) or []
    if len(candidates) > 1:
        raise ValueError(
            f"{path}, row {number}: {name!r} names {len(candidates)} images ({', '.join(candidates[:3])}). Fix: "
            "give the full id."
        )
    return candidates[0] if candidates else None


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


def write_split_file(path: str, test_ids: List[str], how: str = "fundus_diffusion.evaluation.split_by_id"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# held-out ids ({how}), one per line\n")
        f.write("".join(f"{i}\n" for i in test_ids))


def with_split(dataset, part: str):
    """``dataset`` with every row's ``split`` column set to ``part`` (``"train"`` / ``"test"``): the part of the split
    it was written to. The column otherwise keeps the split of the rows' source (a folder's ``metadata.csv``
    ``source_split``: fundus-od's DRIONS / DRISHTI train 117 / test 50), which a split by id ignores, so a written
    train/ would hold rows saying ``test``. The source's value is not kept in another column (the schema has none; it
    stays in ``--dataset``). Column order and features are unchanged; a dataset without the column is returned as is."""
    if "split" not in dataset.column_names:
        return dataset
    order = dataset.column_names
    return dataset.remove_columns("split").add_column("split", [part] * len(dataset)).select_columns(order)


# Named stratifications for ``split_to_disk`` (and ``scripts/split_dataset.py --stratify``). "origin" is the grouping
# evaluate.py's own split and per-source breakdown use (``origins``): a generic folder's file-name prefix shared by
# enough images (drions_001 -> drions), else the source column, which in a generic folder is one value for all.
ORIGIN = "origin"
STRATA = {
    ORIGIN: ORIGIN,
    "source": "source",
    "label": "label",
    # "folder:fundus-od/drions_001" -> "drions": the origin named in a generic folder's file names
    "id_prefix": lambda sample_id: file_name(sample_id).split("_")[0],
    "none": None,
}


def _strata_of(dataset, stratify: str) -> Optional[List[str]]:
    if stratify not in STRATA:
        raise ValueError(f"Unknown stratification {stratify!r}: choose from {', '.join(STRATA)}.")
    column = STRATA[stratify]
    ids = list(dataset["id"])
    if column == ORIGIN:
        return origins(ids, list(dataset["source"]))
    if callable(column):
        return [column(i) for i in ids]
    return list(dataset[column]) if column else None


def split_to_disk(
    dataset, output_dir: str, test_fraction: float = 0.2, seed: int = 0, stratify: str = "source", groups=None
):
    """Split once by id and write ``train/``, ``test/`` (``save_to_disk``; their ``split`` column says ``train`` /
    ``test``: ``with_split``) and ``test_ids.txt``; returns the parts. ``groups``: as ``holdout_ids``'s.

    Refuses an existing ``output_dir``: a split is written once, so every model is judged on the same images.
    """
    strata = _strata_of(dataset, stratify)
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists; choose a new output folder (a split is written once).")
    train, test = split_by_ids(dataset, holdout_ids(list(dataset["id"]), strata, test_fraction, seed, groups))
    train, test = with_split(train, "train"), with_split(test, "test")
    train.save_to_disk(os.path.join(output_dir, "train"))
    test.save_to_disk(os.path.join(output_dir, "test"))
    how = f"holdout_ids: test_fraction {test_fraction}, seed {seed}, stratified by {stratify}"
    how += ", grouped" if groups is not None and any(group is not None for group in groups) else ""
    write_split_file(os.path.join(output_dir, "test_ids.txt"), list(test["id"]), how)
    return train, test


def nested_subsets(
    ids: List[str], sizes: List[int], strata: Optional[List[str]] = None, seed: int = 0
) -> Dict[int, List[str]]:
    """``{n: ids}`` for every ``n`` in ``sizes``: nested (each subset holds every smaller one) and stratified (each
    keeps the strata's proportions as closely as ``n`` allows), chosen by a seeded hash of the id.

    For learning curves: one order is drawn and every subset is a prefix of it, so the curve adds images and never
    swaps them. Within a stratum the order is the seeded hash rank (independent of row order, as ``holdout_ids``); the
    strata are interleaved by Sainte-Laguë's divisor rule (the next place goes to the stratum of size ``m`` with ``c``
    places so far that has the largest ``m / (2c + 1)``), which gives every prefix the rounded proportional share of
    each stratum and, being a sequence, never takes a place back as ``n`` grows (a largest-remainder split can).
    """
    if len(set(ids)) != len(ids):
        raise ValueError("Sample ids must be unique to draw subsets by id.")
    too_large = [n for n in sizes if n > len(ids)]
    if too_large or any(n < 1 for n in sizes):
        raise ValueError(
            f"Subset sizes {sorted(sizes)} must lie between 1 and the {len(ids)} rows of the split; "
            f"drop or lower {sorted(too_large) or [n for n in sizes if n < 1]}."
        )
    groups = defaultdict(list)
    for i, sample_id in enumerate(ids):
        groups[strata[i] if strata is not None else ""].append(sample_id)
    queues = {name: sorted(members, key=lambda s: _rank(s, f"subset-{seed}")) for name, members in groups.items()}
    taken = {name: 0 for name in queues}
    order = []
    for _ in range(max(sizes, default=0)):
        open_strata = [name for name in sorted(queues) if taken[name] < len(queues[name])]
        name = max(open_strata, key=lambda s: len(queues[s]) / (2 * taken[s] + 1))  # ties: the first name
        order.append(queues[name][taken[name]])
        taken[name] += 1
    return {n: sorted(order[:n]) for n in sizes}


def source_split(ids: List[str], strata: List[str], source: str, test_ids=()) -> Tuple[List[str], List[str]]:
    """``(train, test)`` ids for training on one source (camera) and testing on the others: train holds the ids of
    ``source`` not in ``test_ids`` (a fixed held-out split, so its images of ``source`` stay unseen and measure the
    in-source Dice), test everything else (the fixed held-out ids and every id of the other sources)."""
    known = sorted(set(strata))
    if source not in known:
        raise ValueError(f"Unknown source {source!r}: the stratification names {', '.join(known)}.")
    held = set(test_ids)
    train = [i for i, s in zip(ids, strata) if s == source and i not in held]
    if not train:
        raise ValueError(f"Every id of source {source!r} is held out; nothing is left to train on.")
    chosen = set(train)
    return sorted(train), sorted(i for i in ids if i not in chosen)


def _counts(ids: List[str], strata_by_id: Dict[str, str]) -> Dict[str, int]:
    counts = defaultdict(int)
    for sample_id in ids:
        counts[str(strata_by_id[sample_id])] += 1  # JSON keys are strings
    return dict(sorted(counts.items()))


def _write_record(output_dir: str, name: str, record: Dict):
    with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def subsets_to_disk(dataset, output_dir: str, sizes: List[int], seeds: List[int], stratify: str = "source") -> Dict:
    """Write ``n<N>-seed<S>/`` (``save_to_disk``, ``split`` column ``train``) for every size and subset seed (``nested_subsets``) and
    ``subsets.json`` beside them (ids and per-stratum counts of each subset); returns that record.

    Refuses an existing ``output_dir``, as ``split_to_disk``: subsets are drawn once and every run reads the same.
    """
    strata = _strata_of(dataset, stratify)
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists; choose a new output folder (subsets are written once).")
    ids = list(dataset["id"])
    strata_by_id = dict(zip(ids, strata or [""] * len(ids)))
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    record = {"stratify": stratify, "n_rows": len(ids), "strata": _counts(ids, strata_by_id), "subsets": {}}
    drawn = {seed: nested_subsets(ids, sizes, strata, seed) for seed in seeds}  # every size checked before writing
    for seed, subsets in drawn.items():
        for n, chosen in subsets.items():
            name = f"n{n}-seed{seed}"
            subset = with_split(dataset.select(sorted(position[i] for i in chosen)), "train")  # training subsets
            subset.save_to_disk(os.path.join(output_dir, name))
            record["subsets"][name] = {"n": n, "seed": seed, "strata": _counts(chosen, strata_by_id), "ids": chosen}
    _write_record(output_dir, "subsets.json", record)
    return record


def sources_to_disk(dataset, output_dir: str, stratify: str = "id_prefix", test_ids=()) -> Dict:
    """For every source (stratum) write ``<source>/train`` and ``<source>/test`` (``source_split``; ``split`` column
    ``train`` / ``test``) and
    ``sources.json`` beside them (ids and per-stratum counts of each part); returns that record."""
    strata = _strata_of(dataset, stratify)
    if strata is None:
        raise ValueError("A per-source split needs a stratification naming the sources, e.g. id_prefix.")
    if os.path.exists(output_dir):
        raise FileExistsError(f"{output_dir} exists; choose a new output folder (a split is written once).")
    if len(set(strata)) < 2:
        raise ValueError(
            f"--stratify {stratify} finds {'one source only (' + str(strata[0]) + ')' if strata else 'no image'}, so no part would test on another camera. Fix: "
            "a stratification that names the cameras (--stratify id_prefix for file names such as drions_001)."
        )
    ids = list(dataset["id"])
    strata_by_id, position = dict(zip(ids, strata)), {sample_id: i for i, sample_id in enumerate(ids)}
    parts = {source: source_split(ids, strata, source, test_ids) for source in sorted(set(strata))}
    record = {"stratify": stratify, "n_rows": len(ids), "n_test_ids": len(set(test_ids)), "sources": {}}
    for source, (train, test) in parts.items():
        for part, chosen in (("train", train), ("test", test)):
            rows = with_split(dataset.select(sorted(position[i] for i in chosen)), part)
            rows.save_to_disk(os.path.join(output_dir, str(source), part))
        record["sources"][str(source)] = {
            part: {"strata": _counts(chosen, strata_by_id), "ids": chosen}
            for part, chosen in (("train", train), ("test", test))
        }
    _write_record(output_dir, "sources.json", record)
    return record
