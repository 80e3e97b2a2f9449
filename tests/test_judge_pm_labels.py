"""The PM label judge's realism guard: label agreement cannot fail on its own, the guard must."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation.pm_classifier import ClassifierRecipe, judge_class_conditional, realism_guard

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = ClassifierRecipe(steps=60, batch_size=16, width=8, learning_rate=3e-3)


def noise_like(dataset, seed: int = 0):
    """``dataset`` with every image replaced by uniform RGB noise (labels kept): what a barely trained model makes."""
    rng = np.random.default_rng(seed)
    return dataset.map(lambda row: {"image": Image.fromarray(rng.integers(0, 256, (*row["image"].size[::-1], 3), dtype=np.uint8))})


@pytest.fixture(scope="module")
def real():
    return load_phantom_dataset(60, size=48, seed=0)


def test_guard_flags_noise_and_passes_real_like_images(real):
    real_like = load_phantom_dataset(20, size=48, seed=500)  # other samples of the same distribution
    passed = judge_class_conditional(real, real_like, resolution=32, recipe=RECIPE)["realism_guard"]
    flagged = judge_class_conditional(real, noise_like(real_like), resolution=32, recipe=RECIPE)
    assert passed["fundus_like"] and passed["synthetic_ood_fraction"] <= 0.25, passed
    guard = flagged["realism_guard"]
    assert not guard["fundus_like"] and guard["synthetic_ood_fraction"] >= 0.9, guard
    assert guard["verdict"].startswith("NOT FUNDUS-LIKE")
    assert guard["median_distance"]["synthetic"] > guard["median_distance"]["real_held_out"]
    assert "n" in flagged["synthetic_label_agreement"]  # the agreement is still reported, beside the guard


def test_guard_known_answer():
    generator = torch.Generator().manual_seed(0)
    train = {"features": torch.randn(200, 8, generator=generator), "logits": torch.zeros(200, 2)}
    held_out = {"features": torch.randn(100, 8, generator=generator), "logits": torch.tensor([[4.0, 0.0]] * 100)}
    near = {"features": torch.randn(50, 8, generator=generator), "logits": torch.zeros(50, 2)}
    far = {"features": torch.randn(50, 8, generator=generator) + 10, "logits": torch.zeros(50, 2)}
    assert realism_guard(train, held_out, near)["fundus_like"]
    report = realism_guard(train, held_out, far)
    assert not report["fundus_like"] and report["synthetic_ood_fraction"] == 1.0
    assert report["mean_confidence"]["synthetic"] == pytest.approx(0.5)
    assert report["mean_confidence"]["real_held_out"] == pytest.approx(float(torch.tensor([4.0, 0.0]).softmax(0)[0]))


def test_script_says_loudly_when_samples_are_not_fundus_like(real, tmp_path, monkeypatch, capsys):
    real_dir, noise_dir = tmp_path / "real", tmp_path / "noise"
    real.save_to_disk(str(real_dir))
    noise_like(load_phantom_dataset(10, size=48, seed=500)).save_to_disk(str(noise_dir))
    argv = ["judge_pm_labels.py", "--real", str(real_dir), "--synthetic", str(noise_dir), "--output_dir", str(tmp_path / "out"),
            "--resolution", "32", "--steps", "60", "--device", "cpu", "--no-realism_test"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO_ROOT / "scripts" / "judge_pm_labels.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "NOT FUNDUS-LIKE" in out and "says nothing" in out
    report = json.loads((tmp_path / "out" / "pm_labels.json").read_text())
    assert report["realism_guard"]["fundus_like"] is False
    assert "do not report the label agreement" in (tmp_path / "out" / "report.md").read_text()  # the file says it too


def test_a_classifier_that_cannot_tell_the_classes_is_called_useless():
    from fundus_diffusion.evaluation.pm_classifier import label_summary

    guard = {"verdict": "fundus-like: 6% of samples ...", "fundus_like": True, "mean_confidence": {"real_held_out": 0.6, "synthetic": 0.6}}
    report = {"synthetic_label_agreement": {"overall": 0.56, "n": 16}, "realism_guard": guard}
    weak = label_summary({**report, "real_held_out_accuracy": {"overall": 0.475, "PM": 0.45, "non-PM": 0.5}})
    assert "only 48% of held-out real images" in weak and "neither its label agreement nor its realism guard" in weak
    assert "WARNING" not in label_summary({**report, "real_held_out_accuracy": {"overall": 0.938, "PM": 0.9, "non-PM": 0.95}})
    majority = label_summary({**report, "real_held_out_accuracy": {"overall": 0.8, "PM": 0.0, "non-PM": 1.0}})
    assert "only 50% of held-out real images (balanced accuracy" in majority  # always non-PM on an 80% non-PM split
