"""benchmarks/memorisation_calibration.py: the copy check's feature spaces against controls with known answers."""

import importlib.util
import json
import sys

from conftest import REPO_ROOT

from fundus_diffusion.data import load_phantom_dataset

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # it imports its sibling realism_judge_calibration, as when run
spec = importlib.util.spec_from_file_location(
    "memorisation_calibration", REPO_ROOT / "benchmarks" / "memorisation_calibration.py"
)
memorisation_calibration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memorisation_calibration)


def test_copies_are_flagged_in_every_space_and_mirrored_ones_only_against_mirror_images(tmp_path, capsys):
    phantoms = load_phantom_dataset(24, size=64)
    paths = {}
    for name, rows in {"train": range(16), "holdout": range(16, 20), "synthetic": range(16, 24)}.items():
        paths[name] = str(tmp_path / name)
        phantoms.select(rows).save_to_disk(paths[name])
    output = tmp_path / "calibration.json"
    memorisation_calibration.main([
        "--real", paths["train"], "--holdout", paths["holdout"], "--synthetic", f"unseen={paths['synthetic']}",
        "--resolution", "64", "--output_json", str(output),
    ])  # fmt: skip
    spaces = json.loads(output.read_text())["spaces"]
    assert set(spaces) == set(memorisation_calibration.SPACES)
    for space in spaces.values():
        rows = space["rows"]
        assert rows["JPEG-75 copies (should: all)"]["n_flagged"] == 16
        assert rows["flipped JPEG-75 copies (should: all)"]["n_flagged"] == 16
        assert len(rows["unseen"]["closest"]) == 8 and rows["unseen"]["n"] == 8
    unmirrored = "flipped JPEG-75 copies, against the training images alone (the check before session 10)"
    assert spaces[memorisation_calibration.VESSEL_SPACE]["rows"][unmirrored]["n_flagged"] < 16
    assert "| JPEG-75 copies (should: all) | 16 of 16 |" in capsys.readouterr().out
