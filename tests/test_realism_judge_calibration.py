"""benchmarks/realism_judge_calibration.py on a tiny phantom set with a tiny recipe: every perturbation gets a row and
a column per judge, the halves are disjoint, each change to pass is mild (the control none at all), and the positive
controls change the disc (and, for the second disc, its pasted copy) and nothing else."""

import json
import runpy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "realism_judge_calibration.py"
CALIBRATION = runpy.run_path(str(SCRIPT))


def test_tiny_run_has_every_row_for_every_judge(tmp_path, monkeypatch, capsys):
    output = tmp_path / "calibration.json"
    argv = [str(SCRIPT), "--data", "phantom:12", "--resolution", "32", "--steps", "2", "--folds", "2"]
    monkeypatch.setattr(sys, "argv", argv + ["--device", "cpu", "--judge", "robust,none", "--output_json", str(output)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    result = json.loads(output.read_text())

    names = list(CALIBRATION["perturbations"](32))
    assert list(result["rows"]) == names and len(names) == 13 and list(result["judges"]) == ["robust", "none"]
    assert "| robust judge AUC | none judge AUC |" in printed
    for name in names:
        assert f"| {name} | {result['rows'][name]['should']} |" in printed
        for judge in ("robust", "none"):
            row = result["rows"][name]["judges"][judge]
            assert len(row["auc_per_fold"]) == 2 and 0.0 <= row["auc"]["mean"] <= 1.0
    assert "REDUCED RECIPE" in printed  # a non-default recipe is stated in the table header
    assert result["n_per_side"] == 6 and not set(result["ids_a"]) & set(result["ids_b"])
    rows = result["rows"]
    assert rows[CALIBRATION["CONTROL"]]["mean_abs_change_0_255"] == 0.0
    to_pass = [name for name in names[1:] if rows[name]["should"] == CALIBRATION["PASS"]]
    assert len(to_pass) == 5 and all(0.0 < rows[name]["mean_abs_change_0_255"] < 10.0 for name in to_pass)
    assert all(rows[name]["mean_abs_change_0_255"] > 0 for name in names[7:])  # the phantoms have discs to change
    assert all(rows[name]["changed_pixels_outside_disc"] == 0 for name in names[7:9])  # the mottled discs


def test_unknown_judge_or_recipe_field_is_refused_and_a_field_can_be_set(capsys):
    parse = CALIBRATION["parse_args"]
    for argv in (["--judge", "robust,flips"], ["--set", "resize=0.5"]):
        try:
            parse(["--data", "phantom:4", *argv])
        except SystemExit:
            pass
    err = capsys.readouterr().err
    assert "['flips'] not a judge" in err and "--set resize=0.5: not FIELD=VALUE" in err
    rows = parse(["--data", "phantom:4", "--rows", "none;mottled disc, strong"]).rows  # names hold commas
    assert rows == ["none", "mottled disc, strong"]
    assert parse(["--data", "phantom:4", "--set", "resize_max=0.5", "--set", "copies=2"]).overrides == {
        "resize_max": 0.5,
        "copies": 2,
    }


def fundus_with_disc(n: int = 3, size: int = 64):
    """``uint8 [n, 3, size, size]`` photographs (a textured round field on black) and their ``bool`` disc masks (a
    bright disc of radius ``size / 10`` left of centre)."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre = (size - 1) / 2
    inside = (yy - centre) ** 2 + (xx - centre) ** 2 <= (0.45 * size) ** 2
    disc = (yy - centre) ** 2 + (xx - 0.3 * size) ** 2 <= (size / 10) ** 2
    field = torch.tensor([150.0, 70.0, 40.0])[:, None, None] + 20 * torch.rand(n, 3, size, size, generator=generator)
    field = torch.where(disc, field + 80, field) * inside
    return field.clamp(0, 255).to(torch.uint8), disc.expand(n, -1, -1).clone()


def test_perturbations_keep_shape_and_dtype():
    images, discs = fundus_with_disc(size=16)
    for name, (_, change) in CALIBRATION["perturbations"](16).items():
        out = change(images, discs, torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out.dtype == torch.uint8, name
    shifted = CALIBRATION["red_shift"](3)(images, discs, None)
    assert torch.equal(shifted[:, 1:], images[:, 1:]) and (shifted[:, 0].int() - images[:, 0].int()).max() == 3


def test_positive_controls_change_the_disc_and_nothing_else():
    images, discs = fundus_with_disc()
    margin, generator = 2, torch.Generator().manual_seed(0)
    near_disc = CALIBRATION["_dilate"](discs, margin + 3)  # the grown, soft-edged disc reaches 1.5 margins further
    changed = lambda out: (out.int() - images.int()).abs().amax(dim=1) > 0  # noqa: E731

    mottled = CALIBRATION["mottled_disc"](0.15, 1.5)(images, discs, generator)
    assert not changed(mottled)[~discs].any() and changed(mottled)[discs].float().mean() > 0.5

    removed = CALIBRATION["disc_removed"](margin)(images, discs, generator)
    assert not changed(removed)[~near_disc].any()
    disc_red, ring = removed[:, 0][discs].float().mean(), images[:, 0][near_disc & ~discs].float().mean()
    assert abs(disc_red - ring) < 15 < images[:, 0][discs].float().mean() - ring  # the bright disc is gone

    orange = CALIBRATION["orange_disc"](0.8, margin)(images, discs, generator)
    assert not changed(orange)[~near_disc].any() and torch.equal(orange[:, 0], images[:, 0])

    second = CALIBRATION["second_disc"](margin)(images, discs, generator)
    mirrored = near_disc.flip(-1).flip(-2)  # the disc's point reflection through the centre
    assert not changed(second)[~mirrored].any() and not (near_disc & mirrored).any()
    assert second[:, 0][discs.flip(-1).flip(-2)].float().mean() > images[:, 0][discs].float().mean() - 10


def test_disc_region_rows_judge_the_squares_around_the_discs(tmp_path, monkeypatch, capsys):
    output = tmp_path / "calibration.json"
    argv = [str(SCRIPT), "--data", "phantom:12", "--resolution", "64", "--steps", "2", "--folds", "2", "--device", "cpu"]
    argv += ["--judge", "robust", "--region", "disc", "--rows", "none;mottled disc, strong", "--output_json", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads(output.read_text())
    assert result["region"] == "disc: 16 px squares around each expert disc's centroid"
    assert len(result["rows"]) == 2 and "judged on disc: 16 px squares" in capsys.readouterr().out
    assert all(len(row["judges"]["robust"]["auc_per_fold"]) == 2 for row in result["rows"].values())
