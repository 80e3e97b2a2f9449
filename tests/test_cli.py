"""Scripts end a user's mistake with one line naming it and the fix (exit 1), not a traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from fundus_diffusion.cli import run_script
from fundus_diffusion.pipelines.loading import read_model_index


def script(*argv, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_script_turns_user_errors_into_one_line(monkeypatch, capsys, tmp_path):
    missing = str(tmp_path / "nope")
    monkeypatch.setattr(sys, "argv", ["generate.py"])
    with pytest.raises(SystemExit) as stop:
        run_script(read_model_index, lambda: missing)  # raised by the package: a user error
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith(f"generate.py: error: {missing}: no such local folder")
    monkeypatch.setenv("RANK", "1")  # other processes of a multi-GPU launch exit quietly
    with pytest.raises(SystemExit):
        run_script(read_model_index, lambda: missing)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("FUNDUS_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_script(read_model_index, lambda: missing)


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ValueError, match="reshape"):  # a ValueError from inside numpy is not a user error
        run_script(lambda shape: np.arange(4).reshape(shape), lambda: (3,))
    with pytest.raises(KeyError):
        run_script(lambda key: {}[key], lambda: "x")


def test_scripts_report_bad_input_in_one_line(tmp_path):
    missing = script(
        "scripts/generate.py",
        "--model",
        str(tmp_path / "no-model"),
        "--num_samples",
        "4",
        "--output_dir",
        str(tmp_path / "o"),
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"generate.py: error: {tmp_path / 'no-model'}: no such local folder" in missing.stderr
    relative = script(REPO_ROOT / "scripts" / "generate.py", "--model", "runs/nope", "--num_samples", "4",
                      "--output_dir", "o", cwd=tmp_path)  # fmt: skip
    assert relative.returncode == 1 and "generate.py: error: runs/nope: no such local folder" in relative.stderr

    resolution = script("scripts/evaluate.py", "--real", "phantom:8", "--synthetic", "phantom:8", "--output_dir",
                        str(tmp_path / "r"), "--resolution", "36")  # fmt: skip
    assert resolution.returncode == 2 and "--resolution 36: the segmenter takes multiples of 8, e.g. 32 or 40" in (
        resolution.stderr
    )

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"downstream": {}}))
    summary = script("scripts/summarise_results.py", str(report))
    assert summary.returncode == 1 and "is not a summary.json of scripts/reproduce_results.sh" in summary.stderr


def test_evaluate_warns_when_it_scales_images_up(capsys):
    from fundus_diffusion.data import load_phantom_dataset
    from fundus_diffusion.evaluation.checks import warn_if_upscaled

    small = load_phantom_dataset(2, size=32)
    capsys.readouterr()  # the dataset build's progress output
    warn_if_upscaled(small, 32, "the synthetic")
    assert capsys.readouterr().err == ""
    warn_if_upscaled(small, 128, "the real")
    assert "2 of 2 of the real images are smaller than the evaluation's 128 px (the smallest 32x32)" in capsys.readouterr().err
