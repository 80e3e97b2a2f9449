"""build_dataset.py end to end, and every kind of bad input: each fails with a message naming the file and the fix."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from phantom_layouts import write_adam_tree, write_folder_tree
from PIL import Image, ImageFilter

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.data.build import build_dataset, scan_sources
from fundus_diffusion.data.readers import BadFileError, FundusDataError, MissingLayoutError, read_label_table
from fundus_diffusion.pipelines.loading import read_model_index

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def folder(tmp_path):
    """A fresh, writable generic folder of three 48 px phantoms."""
    return write_folder_tree(str(tmp_path / "mine"), num_samples=3, size=48)


def build(tmp_path, **kwargs):
    return build_dataset(str(tmp_path / "out"), progress=False, **kwargs)


def test_script_builds_dataset_card_and_report(phantom_trees, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import build_dataset as script

    out = tmp_path / "pm"
    argv = ["--palm_dir", str(phantom_trees["palm2024"]), "--adam_dir", str(phantom_trees["adam"])]
    script.main(script.parse_args(argv + ["--folder_dir", str(phantom_trees["folder"]), "--output_dir", str(out)]))
    printed = capsys.readouterr().out
    assert "Build report" in printed and "AMD image" in printed and "kept: 16 images" in printed
    dataset = load_fundus_dataset(str(out))
    assert len(dataset) == 16 and dataset.features["label"].names == ["non-PM", "PM"]
    assert {s: dataset["source"].count(s) for s in set(dataset["source"])} == {"PALM": 9, "ADAM": 3, "folder:folder": 4}
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "other" and "image-segmentation" in meta["task_categories"]
    assert meta["fundus_diffusion"]["source_counts"] == {"ADAM": 3, "PALM": 9, "folder:folder": 4}
    assert meta["fundus_diffusion"]["label_counts"] == {"PM": 8, "non-PM": 8}
    assert "10.1038/s41597-024-02911-2" in card and "IEEE Transactions on Medical Imaging" in card
    assert "not for clinical use" in card and str(tmp_path) not in card  # no local paths in a shareable card
    with pytest.raises(FileExistsError, match="--overwrite"):
        script.main(script.parse_args(argv + ["--output_dir", str(out)]))
    script.main(script.parse_args(argv + ["--output_dir", str(out), "--overwrite", "--include_amd"]))
    assert len(load_fundus_dataset(str(out))) == 14
    assert sorted(os.listdir(tmp_path)) == ["pm"]  # no temporary folder left behind


def test_truncated_image_fails_without_writing_anything_or_is_skipped(folder, tmp_path):
    path = os.path.join(folder, "images", "phantom_002.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(BadFileError, match="phantom_002.jpg.*cannot read.*--skip_bad"):
        build(tmp_path, folder_dirs=[folder])
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # neither out/ nor a temporary folder
    report = build(tmp_path, folder_dirs=[folder], skip_bad=True)
    assert len(report.kept) == 2 and [os.path.basename(p) for p, _ in report.skipped] == ["phantom_002.jpg"]
    assert "phantom_002.jpg" in report.summary() and len(load_fundus_dataset(str(tmp_path / "out"))) == 2


def test_unreadable_image(folder, tmp_path):
    open(os.path.join(folder, "images", "phantom_001.jpg"), "wb").write(b"not an image")
    with pytest.raises(BadFileError, match="phantom_001.jpg: cannot read this image"):
        build(tmp_path, folder_dirs=[folder])


def test_mask_size_differs_from_image(folder, tmp_path):
    mask = os.path.join(folder, "masks", "disc", "phantom_001.png")
    Image.open(mask).resize((40, 40), Image.NEAREST).save(mask)
    with pytest.raises(BadFileError, match=r"phantom_001.png: the mask is 40x40 px but its image .*phantom_001.jpg is 48x48"):
        build(tmp_path, folder_dirs=[folder])


def test_a_photograph_with_an_exif_orientation_tag_keeps_its_pixels_beside_its_masks(tmp_path):
    # datasets turns an image by its EXIF tag when decoding; the masks have no tag and match the stored pixels (their
    # size is checked against them), so the builder stores the pixels as they are, without the tag.
    root = tmp_path / "tagged"
    for name in ("images", "masks/disc"):
        (root / name).mkdir(parents=True)
    photograph = np.zeros((40, 60, 3), np.uint8)
    photograph[5:15, 40:55] = (220, 60, 30)  # the disc, top right as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees to display"
    Image.fromarray(photograph).save(root / "images" / "a.jpg", quality=95, exif=exif.tobytes())
    disc = np.zeros((40, 60), np.uint8)
    disc[5:15, 40:55] = 255
    Image.fromarray(disc).save(root / "masks" / "disc" / "a.png")
    build(tmp_path, folder_dirs=[str(root)])
    row = load_fundus_dataset(str(tmp_path / "out"))[0]
    assert row["image"].size == row["disc_mask"].size == (60, 40)
    red = np.asarray(row["image"])[..., 0] > 128
    assert (red == (np.asarray(row["disc_mask"]) > 0)).mean() > 0.99  # the disc still under its mask


def test_non_binary_mask_is_thresholded_and_counted(folder, tmp_path):
    mask = os.path.join(folder, "masks", "disc", "phantom_003.png")
    blurred = Image.open(mask).filter(ImageFilter.GaussianBlur(2))
    blurred.save(mask)
    report = build(tmp_path, folder_dirs=[folder])
    assert [os.path.basename(p) for p in report.thresholded] == ["phantom_003.png"]
    row = load_fundus_dataset(str(tmp_path / "out"))[2]
    assert set(np.unique(np.asarray(row["disc_mask"]))) == {0, 255}
    assert np.array_equal(np.asarray(row["disc_mask"]) > 0, np.asarray(blurred) >= 128)


def test_inverted_disc_mask_is_an_error_with_the_hint(folder, tmp_path):
    mask = os.path.join(folder, "masks", "disc", "phantom_001.png")
    Image.fromarray(255 - np.asarray(Image.open(mask))).save(mask)
    with pytest.raises(BadFileError, match=r"phantom_001.png: the disc mask covers 9\d% .*inverted.*invert the masks"):
        build(tmp_path, folder_dirs=[folder])
    # A generated set exported as a folder (metadata.csv names a synthetic source) is read as it is: its large disc is
    # the model's, for the evaluation's plausibility checks, not a flipped annotation.
    ids = sorted(os.path.splitext(name)[0] for name in os.listdir(os.path.join(folder, "images")))
    with open(os.path.join(folder, "metadata.csv"), "w") as f:
        f.write("id,source\n" + "".join(f"{i},synthetic:step-0000004\n" for i in ids))
    build(tmp_path / "synthetic", folder_dirs=[folder])
    rows = load_fundus_dataset(str(tmp_path / "synthetic" / "out"))
    assert max(np.asarray(row["disc_mask"]).mean() for row in rows) > 0.5 * 255


def test_palm_masks_given_as_a_generic_folder_are_caught(tmp_path):
    """0 = disc BMPs read with the generic polarity look like a disc covering the whole image."""
    root = write_adam_tree(str(tmp_path / "adam"), num_amd=0, num_non_amd=1, size=48)
    os.makedirs(tmp_path / "wrong" / "masks")
    shutil.copytree(os.path.join(root, "Training400", "Non-AMD"), tmp_path / "wrong" / "images")
    shutil.copytree(os.path.join(root, "Training400", "Disc_Masks"), tmp_path / "wrong" / "masks" / "disc")
    with pytest.raises(BadFileError, match="inverted.*--palm_dir / --adam_dir"):
        build(tmp_path, folder_dirs=[str(tmp_path / "wrong")])


def test_duplicate_ids(folder, tmp_path):
    with pytest.raises(FundusDataError, match="Duplicate id 'folder:mine/phantom_001'.*pass each dataset once"):
        scan_sources(folder_dirs=[folder, folder])
    shutil.copy(os.path.join(folder, "images", "phantom_002.jpg"), os.path.join(folder, "images", "phantom_002.png"))
    with pytest.raises(FundusDataError, match="phantom_002.jpg and .*phantom_002.png"):
        scan_sources(folder_dirs=[folder])


def test_nothing_left_says_why_each_image_was_dropped(tmp_path):
    root = write_adam_tree(str(tmp_path / "adam"), num_amd=2, num_non_amd=0, size=48)
    with pytest.raises(FundusDataError, match=r"(?s)No image is left.*AMD image.*: 2 \(A0001.jpg, A0002.jpg\).*--include_amd"):
        build(tmp_path, adam_dirs=[root])
    assert not (tmp_path / "out").exists()


def test_missing_root_and_sub_folders_name_the_expected_layout(folder, tmp_path):
    with pytest.raises(MissingLayoutError, match="--palm_dir .*nope does not exist.*PALM 2019 challenge layout"):
        scan_sources(palm_dirs=[str(tmp_path / "nope")])
    with pytest.raises(MissingLayoutError, match="(?s)holds neither PALM layout.*PALM-Training400"):
        scan_sources(palm_dirs=[folder])
    with pytest.raises(MissingLayoutError, match="(?s)no Training400/Non-AMD/.*ADAM 2020 layout"):
        scan_sources(adam_dirs=[folder])
    shutil.rmtree(os.path.join(folder, "masks"))
    with pytest.raises(MissingLayoutError, match="(?s)Disc-mask folder .*masks/disc does not exist.*generic folder layout"):
        scan_sources(folder_dirs=[folder])
    shutil.rmtree(os.path.join(folder, "images"))
    with pytest.raises(MissingLayoutError, match="Image folder .*images does not exist"):
        scan_sources(folder_dirs=[folder])
    with pytest.raises(FundusDataError, match="No input given"):
        scan_sources()


def test_bad_label_cells_name_the_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("imgName,Label\nP0001.jpg,1\nP0002.jpg,maybe\n")
    with pytest.raises(FundusDataError, match=r"labels.csv, row 3: unknown label 'maybe'"):
        read_label_table(str(path))


def test_load_fundus_dataset_errors(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MissingLayoutError, match="(?s)neither a dataset saved by fundus-build-dataset.*generic folder layout"):
        load_fundus_dataset(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such local folder. Fix"):
        load_fundus_dataset(str(tmp_path / "missing" / "dataset"))
    with pytest.raises(FileNotFoundError, match="notes.txt is not a folder"):
        load_fundus_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="give phantom:N with N a positive number"):
        load_fundus_dataset("phantom:abc")
    (tmp_path / "runs" / "ddpm-32").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for load in (load_fundus_dataset, read_model_index):  # a typo beside its folder: the Hub is asked (an id could
        # be namespace/name with a folder of the namespace's name here; offline in tests), then its folder named
        with pytest.raises(FileNotFoundError, match=r"^runs/ddpm-322: no such local folder \(runs/ holds ddpm-32\), and no"):
            load("runs/ddpm-322")
        with pytest.raises(FileNotFoundError, match=r"^runs/x/ddpm-322: no such local folder. Fix"):
            load("runs/x/ddpm-322")  # two slashes: no Hub id, so no Hub request


def test_raw_folder_is_cached_until_a_file_changes(folder, tmp_path, monkeypatch):
    import fundus_diffusion.data.build as build_module

    calls = []
    real = build_module.write_rows
    monkeypatch.setattr(build_module, "write_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load_fundus_dataset(folder, cache_dir=str(tmp_path / "cache"))
    again = load_fundus_dataset(folder, cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 1 and first._fingerprint == again._fingerprint
    mask = os.path.join(folder, "masks", "disc", "phantom_001.png")
    Image.new("L", (48, 48), 0).save(mask)
    changed = load_fundus_dataset(folder, cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 2 and changed._fingerprint != first._fingerprint
    assert not np.asarray(changed[0]["disc_mask"]).any()


def test_push_to_hub_only_when_asked_and_keeps_the_hub_configs(folder, tmp_path, monkeypatch):
    """No network: the Hub calls are replaced, and the card pushed must be ours plus the Hub's ``configs``."""
    import datasets
    from huggingface_hub import DatasetCard

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import build_dataset as script

    pushed, load = {}, DatasetCard.load.__func__
    hub_card = DatasetCard("---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\nauto\n")
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo, **k: pushed.update(data=(repo, len(self))))
    monkeypatch.setattr(DatasetCard, "load", classmethod(lambda cls, p, **k: load(cls, p) if os.path.exists(p) else hub_card))
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo, **k: pushed.update(card=(repo, self.content)))
    script.main(script.parse_args(["--folder_dir", folder, "--output_dir", str(tmp_path / "a")]))
    assert pushed == {}
    script.main(script.parse_args(["--folder_dir", folder, "--output_dir", str(tmp_path / "b"), "--push_to_hub", "me/fundus"]))
    assert pushed["data"] == ("me/fundus", 3) and pushed["card"][0] == "me/fundus"
    card = yaml.safe_load(pushed["card"][1].split("---")[1])
    assert card["configs"][0]["config_name"] == "default" and card["fundus_diffusion"]["num_samples"] == 3


def test_cli_reports_errors_without_a_traceback(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, str(SCRIPTS / "build_dataset.py"), "--adam_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SCRIPTS.parent)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "build_dataset.py: error: --adam_dir" in result.stderr and "ADAM 2020 layout" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_one_level_too_deep_or_a_checkpoint_names_the_folder_to_give(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    with pytest.raises(MissingLayoutError, match=r"is the images/ folder of a generic layout. Fix: give its parent, .*data,"):
        build_dataset(str(tmp_path / "out"), folder_dirs=[str(tmp_path / "data" / "images")], progress=False)
    (tmp_path / "run" / "checkpoint-30").mkdir(parents=True)
    (tmp_path / "run" / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"It is a training checkpoint; the model its run saved is .*run\.$"):
        read_model_index(str(tmp_path / "run" / "checkpoint-30"))
