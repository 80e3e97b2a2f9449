"""Readers on phantom trees laid out as the official releases, and on the real data beside the repository."""

import os
import shutil
from collections import Counter

import numpy as np
import pytest

from fundus_diffusion.data import annotation_flags, dataset_mask_names, draw_phantom, load_fundus_dataset
from fundus_diffusion.data.build import build_dataset, detect_layout, scan_sources
from fundus_diffusion.data.readers import MissingLayoutError, read_label_table


def rows_by_id(dataset):
    return {row["id"]: row for row in dataset}


def binary(mask):
    return np.asarray(mask) > 0


def test_layouts_are_detected(phantom_trees, tmp_path):
    assert {name: detect_layout(str(path)) for name, path in phantom_trees.items()} == {
        "palm2019": "palm", "palm2024": "palm", "adam": "adam", "folder": "folder",
    }  # fmt: skip
    assert detect_layout(str(tmp_path)) is None


def test_palm2019_labels_from_names_and_sheet_masks_inverted(phantom_trees, tmp_path):
    candidates, report = scan_sources(palm_dirs=[str(phantom_trees["palm2019"])])
    assert [(os.path.basename(p), r) for p, r in report.excluded] == [("N0002.jpg", "no disc mask")]
    rows = rows_by_id(load_fundus_dataset(str(phantom_trees["palm2019"]), cache_dir=str(tmp_path)))
    assert sorted(rows) == [f"palm/Training/{n}" for n in ("H0001", "N0001", "P0001", "P0002", "P0003")] + [
        "palm/Validation/V0001", "palm/Validation/V0002",
    ]  # fmt: skip
    labels = {k: r["label"] for k, r in rows.items()}
    assert labels["palm/Training/P0001"] == 1 and labels["palm/Training/H0001"] == 0 and labels["palm/Training/N0001"] == 0
    assert labels["palm/Validation/V0001"] == 0 and labels["palm/Validation/V0002"] == 1  # from the xlsx
    assert {r["split"] for r in rows.values()} == {"train", "validation"} and {r["source"] for r in rows.values()} == {"PALM"}
    # P0001 is phantom 0 (PM): BMP masks with 0 = structure come back as 255 = structure, exactly.
    truth, row = draw_phantom(0, size=64, label=1), rows["palm/Training/P0001"]
    assert np.array_equal(binary(row["disc_mask"]), binary(truth.disc_mask))
    assert np.array_equal(binary(row["atrophy_mask"]), binary(truth.atrophy_mask)) and binary(truth.atrophy_mask).any()
    # No atrophy file means no atrophy, still annotated.
    normal = rows["palm/Training/N0001"]
    assert not binary(normal["atrophy_mask"]).any() and normal["has_atrophy_annotation"]
    assert row["image"].mode == "RGB" and row["disc_mask"].mode == "L" and row["image"].size == (64, 64)


def test_palm2019_nested_as_unzipped(phantom_trees, tmp_path):
    """The official zip unpacks to PALM-Training400/PALM-Training400/; the reader finds the images there."""
    root = tmp_path / "palm"
    shutil.copytree(phantom_trees["palm2019"], root)
    shutil.move(str(root / "PALM-Training400"), str(tmp_path / "inner"))
    os.makedirs(root / "PALM-Training400")
    shutil.move(str(tmp_path / "inner"), str(root / "PALM-Training400" / "PALM-Training400"))
    candidates, _ = scan_sources(palm_dirs=[str(root)])
    assert sum(c.split == "train" for c in candidates) == 5


def test_palm2024_splits_and_spreadsheet_labels(phantom_trees, tmp_path):
    candidates, report = scan_sources(palm_dirs=[str(phantom_trees["palm2024"])])
    assert report.roots[0][0] == "palm-2024" and not report.excluded
    by_id = {c.id: c for c in candidates}
    assert Counter(c.split for c in candidates) == {"train": 3, "validation": 3, "test": 3}
    assert by_id["palm/Training/P0001"].label == 1 and by_id["palm/Training/N0001"].label == 0
    assert by_id["palm/Testing/T0001"].label == 1 and by_id["palm/Testing/T0002"].label == 0
    assert all(c.zero_is_structure and {"disc", "atrophy", "detachment"} <= set(c.masks) for c in candidates)
    # The detachment folders exist but hold no file: every image is annotated, without detachment.
    assert report.mask_names == ["disc", "atrophy", "detachment"] and all(c.masks["detachment"] is None for c in candidates)
    dataset = load_fundus_dataset(str(phantom_trees["palm2024"]), cache_dir=str(tmp_path))
    assert dataset_mask_names(dataset) == ("disc", "atrophy", "detachment") and all(dataset["has_detachment_annotation"])
    assert not any(np.asarray(m).any() for m in dataset["detachment_mask"])


def test_palm2024_detachment_masks_and_a_split_without_lesion_folders(phantom_trees, tmp_path):
    """A detachment BMP (0 = structure) is read as any mask; a split without a lesion folder is not annotated for it."""
    from PIL import Image

    root = tmp_path / "palm"
    shutil.copytree(phantom_trees["palm2024"], root)
    base = root / "PALM" if (root / "PALM").is_dir() else root
    detachment = np.full((64, 64), 255, dtype=np.uint8)
    detachment[10:20, 30:40] = 0
    Image.fromarray(detachment).save(base / "Training" / "Lesion Masks" / "Detachment" / "P0001.bmp")
    shutil.rmtree(base / "Testing" / "Lesion Masks")
    candidates, report = scan_sources(palm_dirs=[str(root)])
    assert any("Testing: no detachment folder" in n for n in report.notes)
    rows = rows_by_id(load_fundus_dataset(str(root), cache_dir=str(tmp_path / "cache")))
    assert binary(rows["palm/Training/P0001"]["detachment_mask"]).sum() == 100
    testing = rows["palm/Testing/T0001"]
    assert testing["detachment_mask"] is None and not testing["has_detachment_annotation"]
    assert testing["atrophy_mask"] is None and not testing["has_atrophy_annotation"] and testing["has_disc_annotation"]


def test_labels_file_overrides_by_id_name_or_stem(phantom_trees, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,comment\nV0001.jpg,PM,x\npalm/Training/P0001,non-PM,\nV0002,-1,\n")
    candidates, report = scan_sources(palm_dirs=[str(phantom_trees["palm2019"])], labels=str(labels))
    by_id = {c.id: c.label for c in candidates}
    assert by_id["palm/Validation/V0001"] == 1 and by_id["palm/Training/P0001"] == 0 and by_id["palm/Validation/V0002"] == -1
    assert by_id["palm/Training/P0002"] == 1  # untouched
    headerless = tmp_path / "plain.csv"
    headerless.write_text("P0001.jpg,1\nN0001.jpg,0\n")
    assert read_label_table(str(headerless)) == {"P0001.jpg": 1, "N0001.jpg": 0}


def test_adam_keeps_non_amd_by_default(phantom_trees, tmp_path):
    candidates, report = scan_sources(adam_dirs=[str(phantom_trees["adam"])])
    assert [c.id for c in candidates] == [f"adam/Training400/N000{i}" for i in (1, 2, 3)]
    assert all(c.label == 0 and set(c.masks) == {"disc"} and c.source == "ADAM" for c in candidates)
    assert report.mask_names == ["disc"]  # ADAM annotates the disc only: no atrophy column at all
    assert len(report.excluded) == 2 and "include_amd" in report.excluded[0][1]
    with_amd, _ = scan_sources(adam_dirs=[str(phantom_trees["adam"])], include_amd=True)
    assert {c.id: c.label for c in with_amd}["adam/Training400/A0001"] == -1


def test_adam_disc_masks_beside_training400(tmp_path):
    from phantom_layouts import write_adam_tree

    root = write_adam_tree(str(tmp_path / "adam"), num_amd=0, num_non_amd=2, size=48, disc_dir="Disc_Masks")
    rows = load_fundus_dataset(root, cache_dir=str(tmp_path / "cache"))
    assert len(rows) == 2 and all(binary(m).mean() < 0.2 and binary(m).any() for m in rows["disc_mask"])
    assert dataset_mask_names(rows) == ("disc",)


def test_palm_and_adam_together_adam_is_not_annotated_for_atrophy(phantom_trees, tmp_path):
    from fundus_diffusion.data import build_dataset

    build_dataset(str(tmp_path / "out"), palm_dirs=[str(phantom_trees["palm2019"])], adam_dirs=[str(phantom_trees["adam"])], progress=False)
    dataset = load_fundus_dataset(str(tmp_path / "out"))
    assert dataset_mask_names(dataset) == ("disc", "atrophy")
    adam = np.array([s == "ADAM" for s in dataset["source"]])
    assert adam.sum() == 3 and (annotation_flags(dataset, "atrophy") == ~adam).all()
    assert all(dataset[int(i)]["atrophy_mask"] is None for i in np.flatnonzero(adam))


def test_generic_folder_metadata(phantom_trees, tmp_path):
    rows = rows_by_id(load_fundus_dataset(str(phantom_trees["folder"]), cache_dir=str(tmp_path)))
    assert sorted(rows) == [f"folder:folder/phantom_00{i}" for i in (1, 2, 3, 4)]
    assert [rows[k]["label"] for k in sorted(rows)] == [0, 1, 0, 1]
    assert rows["folder:folder/phantom_004"]["split"] == "test" and rows["folder:folder/phantom_001"]["split"] == "train"
    assert all(r["has_atrophy_annotation"] and r["has_disc_annotation"] and r["source"] == "folder:folder" for r in rows.values())
    truth = draw_phantom(1, size=64, label=1)
    assert np.array_equal(binary(rows["folder:folder/phantom_002"]["atrophy_mask"]), binary(truth.atrophy_mask))


def test_generic_folder_without_labels_or_metadata(tmp_path):
    from phantom_layouts import write_folder_tree

    root = write_folder_tree(str(tmp_path / "mine"), num_samples=2, size=48, labels=False)
    candidates, _ = scan_sources(folder_dirs=[root])
    assert [c.label for c in candidates] == [-1, -1] and set(candidates[0].masks) == {"disc"}
    os.remove(os.path.join(root, "metadata.csv"))
    candidates, _ = scan_sources(folder_dirs=[root])
    assert [(c.label, c.split, c.origin) for c in candidates] == [(-1, "train", "folder:mine")] * 2


def test_mask_files_named_unlike_their_images_are_reported_with_the_fix(tmp_path):
    from phantom_layouts import write_folder_tree

    root = write_folder_tree(str(tmp_path / "mine"), num_samples=3, size=48)
    masks = os.path.join(root, "masks", "disc")
    for name in ("phantom_001", "phantom_002"):
        os.rename(os.path.join(masks, f"{name}.png"), os.path.join(masks, f"{name}_mask.png"))
    candidates, report = scan_sources(folder_dirs=[root])
    assert len(candidates) == 1 and len(report.excluded) == 2
    assert f"{masks}: 2 files name no image (e.g. 'phantom_001_mask.png'). Fix: name each mask as its image" in report.summary()
    assert "files name no image" not in scan_sources(folder_dirs=[write_folder_tree(str(tmp_path / "ok"), 2, 48)])[1].summary()


def test_real_fundus_od(fundus_od_dir, tmp_path):
    dataset = load_fundus_dataset(str(fundus_od_dir), cache_dir=str(tmp_path))
    assert len(dataset) == 167
    assert set(dataset["label"]) == {-1} and dataset_mask_names(dataset) == ("disc", "cup")
    # Partially annotated: the cup on the 77 DRISHTI-GS1 images only, the disc everywhere.
    cup = annotation_flags(dataset, "cup")
    drishti = np.array(["drishti" in i for i in dataset["id"]])
    assert cup.sum() == 77 and (cup == drishti).all() and all(dataset["has_disc_annotation"])
    assert set(dataset["source"]) == {"folder:fundus-od"} and set(dataset["split"]) == {"train", "test"}
    assert all(i.startswith("folder:fundus-od/") for i in dataset["id"])
    for row in dataset.select(range(0, 167, 40)):
        disc = np.asarray(row["disc_mask"])
        assert set(np.unique(disc)) == {0, 255} and 0.005 < (disc > 0).mean() < 0.2
        assert row["disc_mask"].size == row["image"].size and row["image"].mode == "RGB"
    _, report = scan_sources(folder_dirs=[str(fundus_od_dir)])
    assert report.excluded == []


def test_real_palm224_is_images_only(palm224_dir, tmp_path):
    """The 224 px copy has the 2019 names but no annotation folders: an error by default, image-only on request."""
    with pytest.raises(MissingLayoutError, match="(?s)no disc-mask folder.*--images_only where the command has it.*give the trainer that dataset"):
        scan_sources(palm_dirs=[str(palm224_dir)])
    candidates, report = scan_sources(palm_dirs=[str(palm224_dir)], require_masks=False)
    assert len(candidates) == 400 and Counter(c.label for c in candidates) == {1: 213, 0: 187}
    assert all(c.masks == {} for c in candidates)
    assert report.images_only == 400 and "without a disc mask" in report.summary()
    dataset = load_fundus_dataset(str(palm224_dir), require_masks=False, cache_dir=str(tmp_path))
    row = dataset[0]
    assert row["id"] == "palm/Training/H0001" and row["image"].size == (224, 224)
    assert row["disc_mask"] is None and not row["has_disc_annotation"] and not row["has_atrophy_annotation"]
    build_dataset(str(tmp_path / "built"), palm_dirs=[str(palm224_dir)], require_masks=False, progress=False)
    card = (tmp_path / "built" / "README.md").read_text()
    assert "400 images." in card and "without masks" in card and "mask pairs" not in card  # claims no masks
    assert "Fundus photographs with no masks" in card and "with disc" not in card  # nor does its title


def test_generic_folder_reads_every_mask_folder_a_missing_file_is_not_annotated(tmp_path):
    from phantom_layouts import write_folder_tree
    from PIL import Image

    from fundus_diffusion.data.readers import FundusDataError

    root = write_folder_tree(str(tmp_path / "od"), num_samples=3, size=48)
    os.makedirs(os.path.join(root, "masks", "cup"))
    Image.new("L", (48, 48), 0).save(os.path.join(root, "masks", "cup", "phantom_001.png"))  # annotated, no cup
    cup = np.zeros((48, 48), dtype=np.uint8)
    cup[20:24, 20:24] = 255
    Image.fromarray(cup).save(os.path.join(root, "masks", "cup", "phantom_002.png"))
    candidates, report = scan_sources(folder_dirs=[root])
    assert report.mask_names == ["disc", "cup"] and [sorted(c.masks) for c in candidates] == [["cup", "disc"]] * 2 + [["disc"]]
    rows = rows_by_id(load_fundus_dataset(root, cache_dir=str(tmp_path / "cache")))
    first, second, third = (rows[f"folder:od/phantom_00{i}"] for i in (1, 2, 3))
    assert first["has_cup_annotation"] and not binary(first["cup_mask"]).any()  # absent: an empty mask
    assert second["has_cup_annotation"] and binary(second["cup_mask"]).sum() == 16
    assert not third["has_cup_annotation"] and third["cup_mask"] is None  # not annotated: no mask at all
    os.makedirs(os.path.join(root, "masks", "Optic Cup"))
    with pytest.raises(FundusDataError, match="(?s)masks/Optic Cup.*not a valid mask name.*Rename the folder"):
        scan_sources(folder_dirs=[root])
