"""benchmarks/realism_judge_calibration.py on a tiny phantom set with a tiny recipe: every perturbation gets a row,
the halves are disjoint, and each perturbation changes B mildly (the control not at all)."""

import json
import runpy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "realism_judge_calibration.py"


def test_tiny_run_has_every_perturbation_row(tmp_path, monkeypatch, capsys):
    output = tmp_path / "calibration.json"
    argv = [str(SCRIPT), "--data", "phantom:12", "--resolution", "32", "--steps", "2", "--folds", "2"]
    monkeypatch.setattr(sys, "argv", argv + ["--output_json", str(output)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    result = json.loads(output.read_text())

    script = runpy.run_path(str(SCRIPT))
    names = list(script["perturbations"](32))
    assert list(result["rows"]) == names and len(names) == 7
    for name in names:
        assert f"| {name} |" in printed
        assert len(result["rows"][name]["auc_per_fold"]) == 2
        assert 0.0 <= result["rows"][name]["auc"]["mean"] <= 1.0
    assert "REDUCED RECIPE" in printed  # a non-default recipe is stated in the table header
    assert result["n_per_side"] == 6 and not set(result["ids_a"]) & set(result["ids_b"])
    changes = {name: row["mean_abs_change_0_255"] for name, row in result["rows"].items()}
    assert changes[script["CONTROL"]] == 0.0
    assert all(0.0 < change < 10.0 for name, change in changes.items() if name != script["CONTROL"])


def test_perturbations_keep_shape_and_dtype():
    script = runpy.run_path(str(SCRIPT))
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    for name, change in script["perturbations"](16).items():
        out = change(images, torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out.dtype == torch.uint8, name
    shifted = script["red_shift"](3)(images, None)
    assert torch.equal(shifted[:, 1:], images[:, 1:]) and (shifted[:, 0].int() - images[:, 0].int()).max() == 3
