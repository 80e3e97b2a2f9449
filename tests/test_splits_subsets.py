"""Nested stratified training subsets and per-source splits (issue 20's learning curves and cross-camera rows)."""

import json
import runpy
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from fundus_diffusion.data import load_fundus_dataset, load_phantom_dataset
from fundus_diffusion.evaluation.splits import STRATA, nested_subsets, source_split, sources_to_disk, subsets_to_disk


def two_source_ids(n_a=18, n_b=12):
    ids = [f"folder:x/drions_{i:03d}" for i in range(n_a)] + [f"folder:x/drishti_{i:03d}" for i in range(n_b)]
    return ids, [STRATA["id_prefix"](i) for i in ids]


def test_subsets_are_nested_stratified_and_deterministic():
    ids, strata = two_source_ids()
    subsets = nested_subsets(ids, [5, 10, 20], strata, seed=0)
    assert [len(subsets[n]) for n in (5, 10, 20)] == [5, 10, 20]
    assert set(subsets[5]) <= set(subsets[10]) <= set(subsets[20])
    share = {n: sum("drions" in i for i in subsets[n]) for n in subsets}
    assert share == {5: 3, 10: 6, 20: 12}  # 18:12 = 60 % of each subset
    assert subsets == nested_subsets(ids[::-1], [20, 5, 10], strata[::-1], seed=0)  # order of rows and sizes is moot
    assert nested_subsets(ids, [10], strata, seed=1)[10] != subsets[10]
    for n in range(1, len(ids) + 1):  # every prefix within one image of its proportional share
        assert abs(sum("drions" in i for i in nested_subsets(ids, [n], strata)[n]) - 0.6 * n) <= 1


def test_subset_and_source_errors_say_what_to_change():
    ids, strata = two_source_ids()
    with pytest.raises(ValueError, match="between 1 and the 30 rows.*drop or lower \\[31\\]"):
        nested_subsets(ids, [10, 31], strata)
    with pytest.raises(ValueError, match="between 1 and"):
        nested_subsets(ids, [0], strata)
    with pytest.raises(ValueError, match="Unknown source 'adam'.*drions, drishti"):
        source_split(ids, strata, "adam")
    with pytest.raises(ValueError, match="nothing is left to train on"):
        source_split(ids, strata, "drishti", test_ids=[i for i in ids if "drishti" in i])


def test_source_split_keeps_held_out_ids_out_of_training():
    ids, strata = two_source_ids()
    held = ["folder:x/drions_000", "folder:x/drishti_000"]
    train, test = source_split(ids, strata, "drions", test_ids=held)
    assert len(train) == 17 and all("drions" in i for i in train) and "folder:x/drions_000" not in train
    assert sorted(train + test) == sorted(ids) and sum("drions" in i for i in test) == 1


def test_subsets_and_sources_on_disk_with_records(tmp_path):
    dataset = load_phantom_dataset(12, size=32)
    subsets = subsets_to_disk(dataset, str(tmp_path / "subsets"), [3, 6], [0, 1], stratify="label")
    on_disk = json.loads((tmp_path / "subsets" / "subsets.json").read_text())
    assert on_disk == subsets and sorted(on_disk["subsets"]) == ["n3-seed0", "n3-seed1", "n6-seed0", "n6-seed1"]
    assert on_disk["subsets"]["n6-seed1"]["strata"] == {"0": 3, "1": 3}
    six = load_fundus_dataset(str(tmp_path / "subsets" / "n6-seed0"))
    assert sorted(six["id"]) == subsets["subsets"]["n6-seed0"]["ids"]
    with pytest.raises(FileExistsError, match="written once"):
        subsets_to_disk(dataset, str(tmp_path / "subsets"), [3], [0], stratify="label")
    with pytest.raises(ValueError, match="drop or lower \\[13\\]"):
        subsets_to_disk(dataset, str(tmp_path / "too-many"), [13], [0], stratify="label")
    assert not (tmp_path / "too-many").exists()  # checked before anything is written
    record = sources_to_disk(dataset, str(tmp_path / "sources"), "label", test_ids=[dataset["id"][0]])
    assert record["sources"]["0"]["train"]["strata"] == {"0": 5}  # six label-0 phantoms, one held out
    assert len(load_fundus_dataset(str(tmp_path / "sources" / "0" / "test"))) == 7
    with pytest.raises(ValueError, match="finds one source only \\(phantom\\), so no part would test on another camera"):
        sources_to_disk(dataset, str(tmp_path / "one-source"), "source")
    assert not (tmp_path / "one-source").exists()


def test_script_writes_subsets_and_refuses_a_size_too_large(tmp_path):
    dataset = load_phantom_dataset(8, size=32)
    dataset.save_to_disk(str(tmp_path / "train"))
    command = [sys.executable, str(REPO_ROOT / "scripts" / "split_dataset.py"), "--dataset", str(tmp_path / "train")]
    done = subprocess.run(
        command + ["--stratify", "label", "--subsets", "2,4", "--subset_seeds", "0,1", "--output_dir", str(tmp_path / "s")],
        capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "n4-seed1: {'0': 2, '1': 2}" in done.stdout
    failed = subprocess.run(
        command + ["--subsets", "9", "--output_dir", str(tmp_path / "t")], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert failed.returncode != 0 and "drop or lower [9]" in failed.stderr and str(tmp_path / "train") in failed.stderr


def test_fundus_od_subsets_keep_both_origins(fundus_od_dir, tmp_path):
    from fundus_diffusion.evaluation.splits import split_by_id

    train, _ = split_by_id(load_fundus_dataset(str(fundus_od_dir)), stratify_column=STRATA["id_prefix"])
    ids = list(train["id"])
    strata = [STRATA["id_prefix"](i) for i in ids]
    subsets = nested_subsets(ids, [10, 25, 50], strata, seed=0)
    assert set(subsets[10]) <= set(subsets[25]) <= set(subsets[50])
    drions = strata.count("drions") / len(ids)
    for n, chosen in subsets.items():
        assert sorted({STRATA["id_prefix"](i) for i in chosen}) == ["drions", "drishti"]
        assert abs(sum(STRATA["id_prefix"](i) == "drions" for i in chosen) - drions * n) <= 1
    train_ids, test_ids = source_split(ids, strata, "drions")
    assert len(train_ids) == strata.count("drions") and len(test_ids) == strata.count("drishti")


def test_the_default_split_is_stratified_by_origin_in_a_generic_folder(tmp_path):
    """A generic folder's source column is one value for every image (``folder:x``): the default split ("origin")
    stratifies by the file-name prefix instead, as evaluate.py's own split does, so both cameras are held out in
    proportion; by source it is one stratum."""
    from fundus_diffusion.evaluation.splits import split_to_disk

    dataset = load_phantom_dataset(30, size=32, seed=0).map(
        lambda row, i: {"id": f"folder:x/{'drions' if i < 18 else 'drishti'}_{i:03d}", "source": "folder:x"},
        with_indices=True,
    )
    _, test = split_to_disk(dataset, str(tmp_path / "by-origin"), test_fraction=0.2, stratify="origin")
    assert sorted(i.split("/")[1].split("_")[0] for i in test["id"]) == ["drions"] * 4 + ["drishti"] * 2  # 18:12
    parse_args = runpy.run_path(str(REPO_ROOT / "scripts" / "split_dataset.py"))["parse_args"]
    assert parse_args(["--dataset", "phantom:8", "--output_dir", str(tmp_path / "o")]).stratify == "origin"
