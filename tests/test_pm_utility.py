"""The PM-detection utility evaluation (issue 20): classifiers on real / synthetic / both, scored on held-out real
images, with the realism test and the copy check that refuses a set of copies."""

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation import pm_utility
from fundus_diffusion.evaluation.pm_classifier import train_pm_classifier
from fundus_diffusion.evaluation.pm_utility import (
    SHUFFLED,
    PMUtilityConfig,
    auc_null_std,
    detection_scores,
    evaluate_pm_utility,
    render_markdown,
    write_pm_report,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = PMUtilityConfig(resolution=32, seeds=2, classifier_steps=3, realism_steps=2, realism_folds=2, device="cpu")


@pytest.fixture(scope="module")
def phantoms():
    """A generator's 16 training images, 12 held-out real ones and 12 other samples of the same distribution."""
    return {
        "real": load_phantom_dataset(16, size=48, seed=0),
        "holdout": load_phantom_dataset(12, size=48, seed=1000, split="test"),
        "synthetic": load_phantom_dataset(12, size=48, seed=500, split="synthetic"),
    }


def test_detection_scores_known_answer():
    labels = torch.tensor([0, 0, 1, 1])
    scores = detection_scores(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), labels)
    assert scores["accuracy"] == pytest.approx(0.5)
    # P(PM) 0.12, 0.73 (non-PM) and 0.95, 0.27 (PM): 3 of the 4 (PM, non-PM) pairs are ranked right
    assert scores["auc"] == pytest.approx(0.75)
    assert detection_scores(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([1, 1]))["accuracy"] == 1.0
    assert math.isnan(detection_scores(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([1, 1]))["auc"])


def test_report_holds_every_training_set_realism_and_copy_check(phantoms, tmp_path):
    report = evaluate_pm_utility(phantoms["real"], phantoms["holdout"], phantoms["synthetic"], TINY)
    assert report["refused"] is None, report["memorisation"]
    results = report["detection"]["results"]
    assert set(results) == {"real", "synthetic", "real+synthetic", SHUFFLED}
    assert all(results[name][metric]["n"] == 2 for name in results for metric in ("accuracy", "auc"))
    assert report["detection"]["n_train"] == {"real": 16, "synthetic": 12, "real+synthetic": 28, SHUFFLED: 16}
    assert report["counts"]["holdout"] == {"n": 12, "non-PM": 6, "PM": 6}
    assert report["realism"]["computed"] and report["realism"]["real_vs_synthetic"]["n_per_class"] == 12
    assert len(report["memorisation"]) == 2 and all(m["n_real_train"] == 16 for m in report["memorisation"].values())
    assert report["synthetic_by_real_classifier"]["label_agreement"]["n"] == 12
    paths = write_pm_report(report, str(tmp_path))
    assert json.loads(Path(paths["json"]).read_text())["detection"]["results"]["synthetic"]["auc"]["n"] == 2
    markdown = Path(paths["markdown"]).read_text()
    assert "| real+synthetic | 28 |" in markdown and "REFUSED" not in markdown and "Not refused:" in markdown
    assert all(m["held_out_control"]["n_held_out"] == 12 for m in report["memorisation"].values())


def test_a_set_of_copies_is_refused_loudly(phantoms, tmp_path):
    copies = phantoms["real"].select(range(8)).map(lambda row: {"id": row["id"].replace("train", "copy")})
    report = evaluate_pm_utility(phantoms["real"], phantoms["holdout"], copies, TINY)
    assert report["refused"].startswith("REFUSED: 8 of 8 synthetic samples flagged")
    assert set(report["detection"]["results"]) == {"real", SHUFFLED}  # no classifier trained on the copies
    flagged = report["memorisation"]["downsampled pixels (32x32 RGB in [0, 1], L2)"]["flagged"]
    assert {f["real_id"] for f in flagged} == set(phantoms["real"].select(range(8))["id"])
    markdown = Path(write_pm_report(report, str(tmp_path))["markdown"]).read_text()
    assert markdown.index("**REFUSED") < markdown.index("## 1.")  # before any number
    assert "| synthetic | 8 | REFUSED (copies) | REFUSED (copies) |" in markdown


def test_the_chance_control_trains_the_same_recipe_on_shuffled_labels(phantoms, monkeypatch):
    """Each seed's control is trained like the real row (same images, steps and seed) on a permutation of the real
    labels that differs per seed; the report states the AUC's null spread for the held-out counts."""
    calls = []

    def recording(images, labels, recipe, *args, **kwargs):
        calls.append({"images": images, "labels": labels.clone(), "recipe": recipe})
        return train_pm_classifier(images, labels, recipe, *args, **kwargs)

    monkeypatch.setattr(pm_utility, "train_pm_classifier", recording)
    report = pm_utility.evaluate_pm_utility(phantoms["real"], phantoms["holdout"], phantoms["synthetic"], TINY)
    real = [c for c in calls if len(c["labels"]) == 16]
    trained, shuffled = real[: TINY.seeds], real[TINY.seeds :]
    assert len(shuffled) == TINY.seeds and len(report["detection"]["per_seed"][SHUFFLED]) == TINY.seeds
    for seed, (plain, control) in enumerate(zip(trained, shuffled)):
        assert control["recipe"] == plain["recipe"] and plain["recipe"].seed == seed and plain["recipe"].steps == 3
        assert torch.equal(control["images"], plain["images"])
        assert sorted(control["labels"].tolist()) == sorted(plain["labels"].tolist())
        assert not torch.equal(control["labels"], plain["labels"])
    assert not torch.equal(shuffled[0]["labels"], shuffled[1]["labels"])
    assert report["detection"]["chance"]["auc_null_std"] == pytest.approx(math.sqrt(13 / (12 * 36)))  # 6 PM, 6 not
    markdown = render_markdown(report)
    assert f"| {SHUFFLED} | 16 |" in markdown and "0.5 ± 0.173" in markdown


def test_auc_null_std_matches_the_spread_of_random_scores():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 30)
    aucs = [detection_scores(torch.randn(40, 2, generator=generator), labels)["auc"] for _ in range(2000)]
    assert float(torch.tensor(aucs).std()) == pytest.approx(auc_null_std(labels), rel=0.1)
    assert math.isnan(auc_null_std(torch.tensor([1, 1])))


def test_unlabelled_synthetic_and_overlapping_split_are_refused(phantoms):
    unlabelled = phantoms["synthetic"].map(lambda row: {"label": -1})
    with pytest.raises(ValueError, match="--labels PM=N"):
        evaluate_pm_utility(phantoms["real"], phantoms["holdout"], unlabelled, TINY)
    with pytest.raises(ValueError, match="also in the real training set"):
        evaluate_pm_utility(phantoms["real"], phantoms["real"].select(range(4)), phantoms["synthetic"], TINY)


def test_script_writes_both_reports(phantoms, tmp_path, monkeypatch, capsys):
    for name, dataset in phantoms.items():
        dataset.save_to_disk(str(tmp_path / name))
    sampling = {"scheduler": "dpmsolver++", "num_inference_steps": 20, "guidance_scale": 2.0}  # as generate.py records
    (tmp_path / "synthetic" / "generation_config.json").write_text(json.dumps(sampling))
    argv = ["evaluate_pm.py", *(f"--{name}={tmp_path / name}" for name in phantoms), f"--output_dir={tmp_path / 'out'}",
            "--resolution=32", "--seeds=1", "--steps=2", "--realism_steps=1", "--realism_folds=2", "--device=cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate_pm.py"), run_name="__main__")
    assert "# PM detection utility" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["inputs"]["synthetic"] == str(tmp_path / "synthetic")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "(`synthetic`, dpmsolver++, 20 steps, classifier-free guidance 2);" in markdown  # which set, sampled how


def test_palm_subsets_keep_the_label_proportions(palm224_dir, tmp_path):
    from fundus_diffusion.data import load_fundus_dataset
    from fundus_diffusion.evaluation.splits import split_to_disk, subsets_to_disk

    train, _ = split_to_disk(
        load_fundus_dataset(str(palm224_dir / "PALM-Training400"), require_masks=False),
        str(tmp_path / "split"),
        stratify="label",
    )
    record = subsets_to_disk(train, str(tmp_path / "subsets"), [20, 50, 100], [0], stratify="label")
    shares = {name: subset["strata"]["1"] / subset["n"] for name, subset in record["subsets"].items()}
    whole = record["strata"]["1"] / record["n_rows"]  # PM share of the training split (about 0.53)
    assert all(abs(share - whole) <= 1 / 20 for share in shares.values()), shares
    assert set(record["subsets"]["n20-seed0"]["ids"]) <= set(record["subsets"]["n50-seed0"]["ids"])


def test_what_makes_the_rows_mean_little_is_said_first():
    from fundus_diffusion.evaluation.pm_utility import pm_warnings

    def report(real_accuracy, synthetic_counts, fundus_like, judge_auc=0.6):
        guard = {"fundus_like": fundus_like, "verdict": "fundus-like" if fundus_like else "NOT FUNDUS-LIKE: 100% of samples ..."}
        realism = {"computed": True, "real_vs_synthetic": {"auc": {"mean": judge_auc}}, "real_vs_real": {"auc": {"mean": 0.5}}}
        return {
            "detection": {"results": {"real": {"accuracy": {"mean": real_accuracy}}}},
            "counts": {"synthetic": synthetic_counts},
            "synthetic_by_real_classifier": {"realism_guard": guard},
            "realism": realism,
        }

    assert pm_warnings(report(0.95, {"n": 4, "non-PM": 2, "PM": 2}, True)) == []
    found = pm_warnings(report(0.475, {"n": 4, "non-PM": 0, "PM": 4}, False, judge_auc=0.998))
    assert len(found) == 4 and "only 48% accuracy" in found[0] and "holds no non-PM image" in found[1]
    assert found[2].startswith("NOT FUNDUS-LIKE") and "say nothing about PM detection" in found[2]
    assert found[3].startswith("NOT PHOTOGRAPH-LIKE") and "ROC AUC 0.998 (real vs real: 0.500; the bar is 0.80)" in found[3]
    # The guard passes, the labels agree, the judge still tells the sets apart (session 24's PALM sets): said first.
    assert [w[:19] for w in pm_warnings(report(0.95, {"n": 4, "non-PM": 2, "PM": 2}, True, 0.81))] == ["NOT PHOTOGRAPH-LIKE"]


def test_the_warnings_open_the_markdown(phantoms):
    from fundus_diffusion.evaluation.pm_utility import render_markdown

    one_class = phantoms["synthetic"].filter(lambda label: label == 1, input_columns="label")
    report = evaluate_pm_utility(phantoms["real"], phantoms["holdout"], one_class, TINY)
    assert any("holds no non-PM image" in warning for warning in report["warnings"])
    lines = render_markdown(report).splitlines()
    assert lines[2].startswith("> **WARNING: ") and "holds no non-PM image" in "\n".join(lines[:8])
