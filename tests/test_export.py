"""Exports in the formats other tools load: the Hub layout (``load_dataset(folder)``), imagefolder, nnU-Net v2."""

import csv
import json
import shutil

import numpy as np
import pytest
from datasets import Dataset, load_dataset
from PIL import Image

from fundus_diffusion.data import fundus_features, load_fundus_dataset, load_phantom_dataset
from fundus_diffusion.export import (
    ARROW_DIR,
    arrow_folder,
    export_imagefolder,
    export_nnunet,
    export_uid,
    write_hub_layout,
)

SIZE = 16


def disc_cup_atrophy_dataset(num: int = 3) -> Dataset:
    """Rows whose cup lies inside the disc and whose atrophy overlaps the disc's edge; the last row is annotated for
    the disc only (cup and atrophy unknown), the first has an unknown label."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rows = []
    for i in range(num):
        cx = 6 + i
        disc = (yy - 8) ** 2 + (xx - cx) ** 2 <= 16
        cup = (yy - 8) ** 2 + (xx - cx) ** 2 <= 4
        atrophy = (np.abs(yy - 8) <= 1) & (xx >= cx + 3) & (xx <= cx + 6)
        annotated = i < num - 1
        row = {"id": f"toy/train/{i:03d}", "source": "toy", "split": "train", "label": -1 if i == 0 else i % 2}
        row["image"] = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        for name, mask, flag in (("disc", disc, True), ("cup", cup, annotated), ("atrophy", atrophy, annotated)):
            row[f"{name}_mask"] = Image.fromarray(mask.astype(np.uint8) * 255) if flag else None
            row[f"has_{name}_annotation"] = flag
        rows.append(row)
    return Dataset.from_list(rows, features=fundus_features(("disc", "cup", "atrophy")))


def pixels(image) -> np.ndarray:
    return np.asarray(image)


def test_hub_layout_loads_with_load_dataset_and_load_fundus_dataset(tmp_path):
    dataset = disc_cup_atrophy_dataset()
    folder = tmp_path / "built"
    dataset.save_to_disk(str(folder))
    assert arrow_folder(str(folder)) == str(folder)  # a folder from before the Hub layout
    shards = write_hub_layout(str(folder))
    assert [p.split("/")[-1] for p in shards] == ["train-00000-of-00001.parquet"]
    assert not (folder / "state.json").exists() and arrow_folder(str(folder)) == str(folder / ARROW_DIR)

    loaded = load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.features == dataset.features  # Image columns, the ClassLabel, the annotation flags
    assert list(loaded["id"]) == list(dataset["id"]) and list(loaded["label"]) == [-1, 1, 0]
    assert loaded[2]["cup_mask"] is None and loaded[2]["has_cup_annotation"] is False
    assert all((pixels(a) == pixels(b)).all() for a, b in zip(loaded["image"], dataset["image"]))
    ours = load_fundus_dataset(str(folder))  # memory-maps arrow/, no conversion cache
    assert list(ours["id"]) == list(dataset["id"]) and ours.features == dataset.features

    snapshot = tmp_path / "downloaded"  # what a Hub download of the pushed folder holds: no arrow/
    shutil.copytree(folder, snapshot, ignore=shutil.ignore_patterns(ARROW_DIR))
    from_hub = load_fundus_dataset(str(snapshot), cache_dir=str(tmp_path / "hf"))
    assert list(from_hub["id"]) == list(dataset["id"]) and from_hub.features == dataset.features

    write_hub_layout(str(folder))  # again (a regenerated dataset): same files, nothing stale
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert not list(folder.glob(".*"))


def test_hub_layout_refuses_a_folder_without_a_saved_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved dataset .* Fix: pass a folder written by"):
        write_hub_layout(str(tmp_path))


def test_imagefolder_export_loads_and_two_exports_combine(tmp_path):
    folder = tmp_path / "png"
    first, second = load_phantom_dataset(3, size=32), load_phantom_dataset(3, size=48)
    assert list(first["id"]) == list(second["id"])  # the same ids, other samples (two runs of one model, say)
    assert export_imagefolder(first, str(folder)) == 3
    assert export_imagefolder(second, str(folder)) == 6
    assert export_imagefolder(first, str(folder)) == 6  # the same samples again: the same names, no new rows

    loaded = load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == 6 and sorted(loaded["source_id"]) == sorted(list(first["id"]) * 2)
    assert {"image", "disc_mask", "atrophy_mask", "label", "split"} <= set(loaded.column_names)
    by_id = {row["source_id"] + str(pixels(row["image"]).sum()): row for row in loaded}
    for row in first:
        back = by_id[row["id"] + str(pixels(row["image"]).sum())]
        assert (pixels(back["disc_mask"]) == pixels(row["disc_mask"])).all()
        assert back["label"] == ("PM" if row["label"] == 1 else "non-PM")


def test_a_synthetic_export_then_a_real_one_keep_one_column_each(tmp_path):
    """An earlier export's columns the new rows lack (a synthetic set's seed and drawn origin, then real photographs)
    are listed once, and each synthetic row keeps its own seed and origin."""
    folder = tmp_path / "png"
    synthetic = load_phantom_dataset(3, size=32).map(
        lambda row, i: {"id": f"syn_{i}", "seed": i, "origin": ["drions", "drishti", "drions"][i]}, with_indices=True
    )
    export_imagefolder(synthetic, str(folder))
    assert export_imagefolder(load_phantom_dataset(3, size=32, seed=9), str(folder)) == 6
    header = (folder / "metadata.csv").read_text().splitlines()[0].split(",")
    assert header.count("seed") == 1 and header.count("origin") == 1 and len(header) == len(set(header))
    with open(folder / "metadata.csv", newline="") as f:
        drawn = {row["source_id"]: (row["seed"], row["origin"]) for row in csv.DictReader(f) if row["seed"]}
    assert drawn == {"syn_0": ("0", "drions"), "syn_1": ("1", "drishti"), "syn_2": ("2", "drions")}


def test_a_synthetic_sets_drawn_origins_read_back_from_its_generic_folder(tmp_path):
    """The generic folder reader gives an exported synthetic set its ``origin`` column back (fundus-evaluate judges a
    set per origin from it); a folder where some rows have no origin (real photographs added) gets none."""
    folder = tmp_path / "png"
    drawn = {"syn_0": "drions", "syn_1": "drishti", "syn_2": "drions"}
    synthetic = load_phantom_dataset(3, size=32).map(
        lambda row, i: {"id": f"syn_{i}", "seed": i, "origin": drawn[f"syn_{i}"]}, with_indices=True
    )
    export_imagefolder(synthetic, str(folder))
    loaded = load_fundus_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    with open(folder / "metadata.csv", newline="") as f:
        source_of = {row["id"]: row["source_id"] for row in csv.DictReader(f)}
    assert {drawn[source_of[row_id.rsplit("/", 1)[-1]]] for row_id in loaded["id"]} == {"drions", "drishti"}
    assert [drawn[source_of[row_id.rsplit("/", 1)[-1]]] for row_id in loaded["id"]] == loaded["origin"]
    export_imagefolder(load_phantom_dataset(2, size=32, seed=9), str(folder))
    assert "origin" not in load_fundus_dataset(str(folder), cache_dir=str(tmp_path / "cache")).column_names


def test_imagefolder_export_leaves_unannotated_masks_out_and_reads_back_as_a_generic_folder(tmp_path):
    dataset = disc_cup_atrophy_dataset()
    folder = tmp_path / "png"
    export_imagefolder(dataset, str(folder))
    loaded = load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    unannotated = loaded.filter(lambda row: row["source_id"] == "toy/train/002")[0]
    assert unannotated["cup_mask"] is None and unannotated["disc_mask"] is not None
    assert sorted(loaded["label"]) == ["PM", "non-PM", "unknown"]

    generic = load_fundus_dataset(str(folder), cache_dir=str(tmp_path / "cache"))  # --folder_dir reads it too
    by_uid = {row["id"].rsplit("/", 1)[-1]: row for row in generic}
    assert len(generic) == 3
    for row in dataset:
        back = by_uid[export_uid(row["id"], _bytes(dataset, row["id"]))]
        assert back["label"] == row["label"] and back["has_cup_annotation"] == row["has_cup_annotation"]
        assert (pixels(back["disc_mask"]) == pixels(row["disc_mask"])).all()


def test_nnunet_export_round_trip(tmp_path):
    dataset = disc_cup_atrophy_dataset()
    folder = tmp_path / "Dataset501_Fundus"
    info = export_nnunet(dataset, str(folder))
    assert info["labels"] == {"background": 0, "disc": 1, "cup": 2, "atrophy": 3}
    assert info["channel_names"] == {"0": "R", "1": "G", "2": "B"} and info["file_ending"] == ".png"
    assert info["numTraining"] == 2 and "1 rows not annotated" in info["description"]  # the disc-only row
    assert json.loads((folder / "dataset.json").read_text()) == info

    names = ("disc", "cup", "atrophy")
    for row in dataset.select(range(2)):
        case = export_uid(row["id"], _bytes(dataset, row["id"]))
        image = Image.open(folder / "imagesTr" / f"{case}_0000.png")
        labels = pixels(Image.open(folder / "labelsTr" / f"{case}.png"))
        assert image.mode == "RGB" and (pixels(image) == pixels(row["image"])).all()
        masks = {n: pixels(row[f"{n}_mask"]) > 0 for n in names}
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        for k, name in enumerate(names, start=1):  # a pixel in several masks holds the later one's value
            later = np.zeros_like(masks[name])
            for other in names[k:]:
                later |= masks[other]
            assert ((labels == k) == (masks[name] & ~later)).all()
        assert ((labels == 2) == masks["cup"]).all()  # the nested cup survives whole
        assert (np.isin(labels, [1, 2, 3]) == (masks["disc"] | masks["atrophy"])).all()

    with pytest.raises(ValueError, match="has the labels .* Fix: export into another folder"):
        export_nnunet(dataset, str(folder), mask_names=("disc",))
    more = export_nnunet(dataset, str(tmp_path / "Dataset502_Disc"), mask_names=("disc",))
    assert more["numTraining"] == 3 and more["labels"] == {"background": 0, "disc": 1}


def _bytes(dataset: Dataset, row_id: str) -> bytes:
    undecoded = dataset.with_format("arrow")
    return undecoded["image"].to_pylist()[undecoded["id"].to_pylist().index(row_id)]["bytes"]


def test_a_built_dataset_loads_with_load_dataset(tmp_path):
    from phantom_layouts import write_folder_tree

    from fundus_diffusion.data import build_dataset

    out = tmp_path / "built"
    build_dataset(str(out), folder_dirs=[write_folder_tree(str(tmp_path / "raw"), atrophy=True)], progress=False)
    hub = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    ours = load_fundus_dataset(str(out))
    assert len(hub) == len(ours) > 0 and hub.features == ours.features and list(hub["id"]) == list(ours["id"])
    assert "configs" in (out / "README.md").read_text() and (out / ARROW_DIR / "state.json").exists()


def test_a_generated_sample_exported_at_its_resolution_comes_back_as_drawn(tmp_path):
    """A generated sample is framed already (``transforms.is_generated``): exported at a resolution it is resized,
    not re-centred on its own field as a photograph is (an off-centre field moved by up to 22 px, session 34)."""
    drawn = Image.new("RGB", (32, 32))
    drawn.paste((200, 110, 40), (0, 2, 32, 22))  # a DRIONS-like frame: black bands, the field above the centre
    disc = Image.new("L", (32, 32))
    disc.paste(255, (10, 8, 16, 14))
    rows = [
        {"id": f"{source}/0", "source": source, "split": "train", "image": drawn, "disc_mask": disc,
         "has_disc_annotation": True, "label": 0}
        for source in ("synthetic:run", "photographs")
    ]  # fmt: skip
    dataset = Dataset.from_list(rows, features=fundus_features(["disc"]))
    assert export_imagefolder(dataset, str(tmp_path / "out"), resolution=32) == 2
    with open(tmp_path / "out" / "metadata.csv", newline="") as f:
        files = {row["source"]: row for row in csv.DictReader(f)}
    generated, photograph = (pixels(Image.open(tmp_path / "out" / files[s]["file_name"])) for s in ("synthetic:run", "photographs"))
    assert (generated == pixels(drawn)).all() and not (photograph == pixels(drawn)).all()  # the photograph re-centred
    assert (pixels(Image.open(tmp_path / "out" / files["synthetic:run"]["disc_mask_file_name"])) == pixels(disc)).all()
    from fundus_diffusion.evaluation.arrays import dataset_arrays  # read back as a folder, it is still known as drawn

    reloaded = load_fundus_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert sorted(reloaded["source"]) == ["folder:out", "synthetic:run"]
    generated_row = reloaded.filter(lambda row: row["source"] == "synthetic:run")
    assert (dataset_arrays(generated_row, 32, ["disc"], "set")[0, :3].permute(1, 2, 0).numpy() == pixels(drawn)).all()


def test_imagefolder_export_at_a_resolution_frames_photographs_and_masks_as_training_does(tmp_path):
    """Non-square photographs with their masks, exported at a model's resolution: every file is what the training
    view makes of the row (fundus field cropped square, resized), so generate.py --masks_from takes the masks."""
    from fundus_diffusion.evaluation.arrays import dataset_arrays
    from fundus_diffusion.generate import read_mask_sets

    raw = tmp_path / "raw"
    for name in ("images", "masks/disc", "masks/cup"):
        (raw / name).mkdir(parents=True)
    for i in range(3):
        photograph = Image.new("RGB", (60, 40))
        photograph.paste((200, 90 + 20 * i, 40), (12 + i, 2, 48 + i, 38))  # the fundus field, off-centre
        photograph.save(raw / "images" / f"case{i}.png")
        disc = Image.new("L", (60, 40))
        disc.paste(255, (20 + i, 10, 30 + i, 20))
        disc.save(raw / "masks" / "disc" / f"case{i}.png")
        if i < 2:  # case2 has no cup annotation
            cup = Image.new("L", (60, 40))
            cup.paste(255, (23 + i, 13, 27 + i, 17))
            cup.save(raw / "masks" / "cup" / f"case{i}.png")
    dataset = load_fundus_dataset(str(raw), cache_dir=str(tmp_path / "cache"))
    folder = tmp_path / "framed"
    assert export_imagefolder(dataset, str(folder), resolution=8) == 3
    expected = dataset_arrays(dataset, 8, ["disc", "cup"], "raw").numpy()
    metadata = {row["source_id"]: row for row in load_dataset(
        "csv", data_files=str(folder / "metadata.csv"), split="train", cache_dir=str(tmp_path / "hf"))}  # fmt: skip
    for k, row_id in enumerate(dataset["id"]):
        entry = metadata[row_id]
        assert (pixels(Image.open(folder / entry["file_name"])) == expected[k, :3].transpose(1, 2, 0)).all()
        assert (pixels(Image.open(folder / entry["disc_mask_file_name"])) == expected[k, 3]).all()
        assert bool(entry["cup_mask_file_name"]) == (k < 2)
    read_mask_sets(str(folder)).check(["disc", "cup"], 8)  # the sizes a model of 8 px takes: no refusal
    unframed = export_uid(dataset[0]["id"], _bytes(dataset, dataset[0]["id"]))
    assert not (folder / "images" / f"{unframed}.png").exists()  # framed files have names of their own
