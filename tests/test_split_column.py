"""The `split` column of what scripts/split_dataset.py writes says which part a row was written to (train / test),
not the source's own split (a folder's metadata.csv source_split), which a split by id does not follow."""

import runpy
from collections import Counter

from conftest import REPO_ROOT

from fundus_diffusion.data import fundus_features, load_fundus_dataset, load_phantom_dataset
from fundus_diffusion.evaluation.splits import sources_to_disk, split_to_disk, subsets_to_disk


def mixed_phantoms(n=12):
    """Phantoms whose source split alternates train / test, as fundus-od's metadata.csv mixes them."""
    dataset = load_phantom_dataset(n, size=32)
    order = dataset.column_names
    mixed = ["train" if i % 2 else "test" for i in range(n)]
    return dataset.remove_columns("split").add_column("split", mixed).select_columns(order)


def test_split_to_disk_writes_train_and_test_that_say_so(tmp_path):
    dataset = mixed_phantoms()
    assert Counter(dataset["split"]) == {"train": 6, "test": 6}
    train, test = split_to_disk(dataset, str(tmp_path / "split"), 0.25, stratify="label")
    assert set(train["split"]) == {"train"} and set(test["split"]) == {"test"}
    for part in ("train", "test"):
        written = load_fundus_dataset(str(tmp_path / "split" / part))  # the schema checks still pass
        assert set(written["split"]) == {part}
        assert written.features == fundus_features() and written.column_names == dataset.column_names
    assert sorted(list(train["id"]) + list(test["id"])) == sorted(dataset["id"])  # the rows are the split by id's, unchanged


def test_subsets_and_sources_say_which_part_they_are(tmp_path):
    dataset = mixed_phantoms()
    subsets_to_disk(dataset, str(tmp_path / "subsets"), [4, 8], [0], stratify="label")
    for name in ("n4-seed0", "n8-seed0"):
        assert set(load_fundus_dataset(str(tmp_path / "subsets" / name))["split"]) == {"train"}
    sources_to_disk(dataset, str(tmp_path / "sources"), "label", test_ids=[dataset["id"][1]])
    for source in ("0", "1"):
        for part in ("train", "test"):
            assert set(load_fundus_dataset(str(tmp_path / "sources" / source / part))["split"]) == {part}


def test_with_split_keeps_a_dataset_without_the_column():
    from fundus_diffusion.evaluation.splits import with_split

    dataset = load_phantom_dataset(3, size=32).remove_columns("split")
    assert with_split(dataset, "test") is dataset


def test_script_on_fundus_od_writes_no_test_rows_into_train(fundus_od_dir, tmp_path, capsys):
    # fundus-od's metadata.csv: train 117 / test 50 (source_split); the split by id mixes them into both parts.
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "split_dataset.py"))
    out = tmp_path / "split"
    script["main"](script["parse_args"](["--dataset", str(fundus_od_dir), "--stratify", "id_prefix", "--output_dir", str(out)]))
    assert "their split column says train / test" in capsys.readouterr().out
    train, test = load_fundus_dataset(str(out / "train")), load_fundus_dataset(str(out / "test"))
    assert Counter(train["split"]) == {"train": len(train)} and Counter(test["split"]) == {"test": len(test)}
    assert (len(train), len(test)) == (134, 33)


def test_the_split_by_eye_of_fundus_od_is_the_committed_one(fundus_od_dir, tmp_path, capsys):
    """docs/splits/fundus-od_test_ids_by_eye.txt (issue 20's held-out split) comes back from the command its header
    in benchmarks/utility_curves.sh runs, and no repeat photograph of an eye is on the other side of its twin."""
    from fundus_diffusion.evaluation.splits import read_split_file

    script = runpy.run_path(str(REPO_ROOT / "scripts" / "split_dataset.py"))
    groups_file = REPO_ROOT / "docs" / "splits" / "fundus-od_eye_groups.csv"
    out = tmp_path / "split"
    argv = ["--dataset", str(fundus_od_dir), "--stratify", "id_prefix", "--groups", str(groups_file), "--output_dir", str(out)]
    script["main"](script["parse_args"](argv))
    assert "5 groups kept whole" in capsys.readouterr().out
    held = read_split_file(str(out / "test_ids.txt"))
    assert held == read_split_file(str(REPO_ROOT / "docs" / "splits" / "fundus-od_test_ids_by_eye.txt"))
    for pair in (("002", "003"), ("010", "011"), ("020", "021"), ("022", "023"), ("108", "109")):
        assert len({f"folder:fundus-od/drions_{n}" in held for n in pair}) == 1, pair
