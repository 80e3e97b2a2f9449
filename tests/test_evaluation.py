import importlib.util
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation import (
    EvaluationConfig,
    SegmenterRecipe,
    atrophy_near_disc,
    count_components,
    dice_per_image,
    disc_geometry,
    evaluate,
    fid_kid,
    holdout_ids,
    iou_per_image,
    mask_plausibility,
    memorisation_report,
    pixel_features,
    predict_masks,
    split_by_id,
    train_segmenter,
    write_report,
)
from fundus_diffusion.evaluation.metrics import wasserstein

REPO_ROOT = Path(__file__).resolve().parents[1]


def disc_at(cx, cy, r=3, size=16):
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def test_overlap_scores_known_answers():
    a = np.stack([disc_at(5, 5), disc_at(5, 5), np.zeros((16, 16), bool)])
    b = np.stack([disc_at(5, 5), disc_at(12, 12), np.zeros((16, 16), bool)])
    assert dice_per_image(a, b).tolist() == [1.0, 0.0, 1.0]  # identical, disjoint, both empty
    assert iou_per_image(a, b).tolist() == [1.0, 0.0, 1.0]
    left, right = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    left[:, :2], right[:, 1:3] = True, True  # 8 and 8 pixels, 4 shared
    assert dice_per_image(left, right)[0] == pytest.approx(0.5) and iou_per_image(left, right)[0] == pytest.approx(
        1 / 3
    )
    with pytest.raises(ValueError, match="shape"):
        dice_per_image(a, b[:2])


def test_empty_targets_are_scored_apart_from_dice():
    """Four eyes with atrophy, six without: a segmenter that never predicts atrophy must not outscore one that finds
    every lesion and adds one stray pixel on each healthy eye (with empty-vs-empty Dice = 1 it did: 0.6 vs 0.4)."""
    from fundus_diffusion.evaluation.protocol import _means, _per_image_scores

    truth = np.zeros((10, 1, 16, 16), bool)
    truth[:4, 0] = disc_at(6, 6, 3)
    stray = truth.copy()
    stray[4:, 0, 0, 0] = True
    never = np.zeros_like(truth)
    found, missed = (_means(_per_image_scores(torch.from_numpy(p), torch.from_numpy(truth), ["atrophy"]))["atrophy"] for p in (stray, never))
    assert found["dice"] == 1.0 and missed["dice"] == 0.0  # over the four eyes with atrophy
    assert found["empty_kept_empty"] == 0.0 and missed["empty_kept_empty"] == 1.0  # over the six without
    annotated = torch.ones(10, 1, dtype=torch.bool)
    annotated[0] = annotated[9] = False
    scores = _per_image_scores(torch.from_numpy(stray), torch.from_numpy(truth), ["atrophy"], annotated)["atrophy"]
    assert np.isnan(scores["dice"][[0, 4, 9]]).all() and np.isnan(scores["empty_kept_empty"][[0, 1, 9]]).all()
    # The mask-image agreement compares two masks: a generated mask left empty where the segmenter finds atrophy
    # is a disagreement (0), not an image left out.
    from fundus_diffusion.evaluation.protocol import _overlap_scores

    generated = np.zeros((4, 1, 16, 16), bool)
    generated[3, 0] = disc_at(6, 6, 3)
    found_everywhere = np.repeat(generated[3:], 4, axis=0)
    agreement = _overlap_scores(torch.from_numpy(found_everywhere), torch.from_numpy(generated), ["atrophy"])["atrophy"]
    assert agreement == {"dice": 0.25, "iou": 0.25}


def test_disc_components_geometry_and_atrophy():
    two = disc_at(4, 4, 2) | disc_at(11, 11, 2)
    assert (
        count_components(two) == 2 and count_components(disc_at(8, 8)) == 1 and count_components(np.zeros((4, 4))) == 0
    )
    geometry = disc_geometry(np.stack([disc_at(4, 8, 2), np.zeros((16, 16), bool)]))
    assert geometry["centroid_x"][0] == pytest.approx(4.5 / 16) and geometry["centroid_y"][0] == pytest.approx(8.5 / 16)
    assert np.isnan(geometry["centroid_x"][1]) and geometry["area_fraction"][1] == 0
    disc = disc_at(8, 8, 3)
    touching, far = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    touching[8, 12], far[0, 0] = True, True
    assert atrophy_near_disc(touching, disc) and not atrophy_near_disc(far, disc)


def test_plausibility_identical_sets_and_shifted_discs():
    real = {"disc": np.stack([disc_at(4 + i, 8) for i in range(6)]), "atrophy": np.zeros((6, 16, 16), bool)}
    same = mask_plausibility(real, real)
    assert same["wasserstein_disc_area_fraction"] == 0 and same["wasserstein_disc_centroid_x"] == 0
    assert same["one_disc_component_synthetic"] == 1.0 and same["n_with_atrophy_synthetic"] == 0
    shifted = {"disc": np.stack([disc_at(4 + i, 10) for i in range(5)] + [disc_at(3, 3, 2) | disc_at(12, 12, 2)])}
    report = mask_plausibility(shifted, real)
    assert report["one_disc_component_synthetic"] == pytest.approx(5 / 6)
    assert wasserstein([0.1, 0.2], [0.2, 0.3]) == pytest.approx(0.1) and np.isnan(wasserstein([np.nan], [0.1]))


def test_memorisation_catches_a_copied_training_image():
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    synthetic = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    synthetic[4] = real[7]
    report = memorisation_report(pixel_features(synthetic), pixel_features(real))
    assert report["n_flagged"] == 1 and report["distances"][4] == 0 and report["neighbours"][4] == 7
    assert report["n_real_train"] == 20 and report["share_flagged"] == pytest.approx(1 / 6)


def test_split_by_id_is_deterministic_stratified_and_order_free():
    ids = [f"s/{i:03d}" for i in range(50)]
    strata = ["A" if i < 20 else "B" for i in range(50)]
    held = holdout_ids(ids, strata, 0.2, seed=0)
    assert held == holdout_ids(ids[::-1], strata[::-1], 0.2, seed=0)  # row order does not matter
    assert sum(h < "s/020" for h in held) == 4 and len(held) == 10  # 20 % of each stratum
    assert held != holdout_ids(ids, strata, 0.2, seed=1)
    dataset = load_phantom_dataset(6, size=32)
    train, test = split_by_id(dataset, 0.5, stratify_column=lambda i: str(int(i[-1]) % 2))  # 1.5 -> 2 per parity
    assert (
        len(test) == 4
        and not set(train["id"]) & set(test["id"])
        and sorted(list(train["id"]) + list(test["id"])) == list(dataset["id"])
    )
    with pytest.raises(ValueError, match="unique"):
        holdout_ids(["a", "a", "b"])


def test_a_grouped_split_keeps_each_group_on_one_side_and_holds_groups_out_as_often_as_images():
    ids = [f"s/{i:03d}" for i in range(50)]
    strata = ["A" if i < 20 else "B" for i in range(50)]
    assert holdout_ids(ids, strata, 0.2, seed=0, groups=[None] * 50) == holdout_ids(ids, strata, 0.2, seed=0)
    groups = [f"pair{i // 2}" if i % 5 < 2 else None for i in range(50)]  # 10 pairs, 30 images alone, both strata
    held_share = {"pair": [], "alone": []}
    for seed in range(300):
        held = set(holdout_ids(ids, strata, 0.2, seed=seed, groups=groups))
        for group in set(filter(None, groups)):
            members = {i for i, g in zip(ids, groups) if g == group}
            assert members <= held or not members & held, (seed, group)
        assert 10 <= len(held) <= 12 and 4 <= sum(h < "s/020" for h in held) <= 5  # a pair taken last: one more
        for i, g in zip(ids, groups):
            held_share["pair" if g else "alone"].append(i in held)
    share = {kind: sum(v) / len(v) for kind, v in held_share.items()}
    assert 0.16 < share["pair"] < 0.24 and 0.16 < share["alone"] < 0.24, share  # ranked by its best image: 0.36
    assert holdout_ids(["a", "b", "c"], None, 0.5, 0, groups=["g", "g", "g"]) == []  # one group: all in training
    for seed in range(20):  # a group of 8 among 10 at 20 %: held out whole (8 of 10) or not at all, "b" or "a" trains
        big = set(holdout_ids(list("abcdefghij"), None, 0.2, seed, groups=[None, None] + ["g"] * 8))
        assert len(big) < 10 and (set("cdefghij") <= big or not set("cdefghij") & big)
    with pytest.raises(ValueError, match="Group 'eye' holds images of 2 strata .*s/000.*s/030"):
        holdout_ids(ids, strata, 0.2, groups=["eye" if i in (0, 30) else None for i in range(50)])


def test_groups_file_by_id_file_name_or_stem_and_its_errors(tmp_path):
    from fundus_diffusion.evaluation.splits import read_groups_file

    ids = ["folder:x/drions_002", "folder:x/drions_003", "folder:x/drions_004", "folder:x/drions_005"]
    path = tmp_path / "groups.csv"
    path.write_text(  # Excel's CSV UTF-8: a byte-order mark, a comment, padded header cells, a blank group
        "\ufeff# repeat photographs\nid, Group\ndrions_002,eye1\nfolder:x/drions_003, eye1\ndrions_004.jpg,\n",
        encoding="utf-8",
    )
    assert read_groups_file(str(path), ids) == ["eye1", "eye1", None, None]
    for text, message in [
        ("id,group\ndrions_009,eye1\n", "1 id\\(s\\) are not in the dataset, e.g. \\['drions_009'\\]"),
        ("name,eye\ndrions_002,eye1\n", "columns id and group; its first row is \\['name', 'eye'\\]"),
        ("id,group\ndrions_002,eye1\ndrions_002.png,eye2\n", "given group 'eye1' on row 2 and 'eye2' on row 3"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_groups_file(str(path), ids)
    path.write_text("id,group\n000001,a\n")
    with pytest.raises(ValueError, match="row 2: '000001' names 2 images"):
        read_groups_file(str(path), ["folder:a/000001", "folder:b/000001"])
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        read_groups_file(str(tmp_path / "missing.csv"), ids)


def test_segmenter_learns_bright_discs():
    generator = torch.Generator().manual_seed(0)
    arrays = torch.zeros(32, 4, 16, 16, dtype=torch.uint8)
    for i in range(32):
        cx, cy = torch.randint(4, 12, (2,), generator=generator).tolist()
        disc = torch.from_numpy(disc_at(cx, cy, 3))
        arrays[i, :3] = (60 + 150 * disc).to(torch.uint8)
        arrays[i, 3] = 255 * disc
    model = train_segmenter(arrays, 1, SegmenterRecipe(steps=60, width=4, learning_rate=3e-2))
    dice = dice_per_image(predict_masks(model, arrays)[:, 0].numpy(), arrays[:, 3].numpy() > 0)
    assert dice.mean() > 0.9


def test_fid_says_why_it_did_not_run(monkeypatch):
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    result = fid_kid(images, images, inception_weights="/nonexistent/pt_inception.pth")
    assert result["computed"] is False and (
        "torch-fidelity" in result["reason"] or "does not exist" in result["reason"]
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_fidelity" else True)
    assert "torch-fidelity is not installed" in fid_kid(images, images)["reason"]


def test_a_split_file_beside_a_given_holdout_is_refused(tmp_path):
    """Both say which images are held out; the split file was ignored while the report named it."""
    from fundus_diffusion.evaluation.protocol import EvaluationConfig, resolve_split

    real, holdout = load_phantom_dataset(6, size=32, seed=0), load_phantom_dataset(3, size=32, seed=50)
    with pytest.raises(ValueError, match="--holdout and --split_file .* both say which images are held out"):
        resolve_split(real, holdout, EvaluationConfig(split_file=str(tmp_path / "ids.txt")))
    assert resolve_split(real, holdout, EvaluationConfig())[2] == "given held-out dataset"


def test_evaluate_end_to_end_writes_the_report(tmp_path):
    real, synthetic = tmp_path / "real", tmp_path / "synthetic"
    load_phantom_dataset(15, size=48, seed=0).save_to_disk(str(real))
    load_phantom_dataset(8, size=48, seed=100).save_to_disk(str(synthetic))
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"))
    out, split_file = tmp_path / "report", tmp_path / "holdout.txt"
    argv = ["--real", str(real), "--synthetic", str(synthetic), "--output_dir", str(out), "--resolution", "16",
            "--masks", "disc,atrophy", "--seeds", "2", "--segmenter_steps", "2", "--split_file", str(split_file),
            "--device", "cpu", "--equal_real_passes"]  # fmt: skip
    script["main"](script["parse_args"](argv))

    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"real_train": 12, "holdout": 3, "synthetic": 8}
    assert len(split_file.read_text().split("\n")) == 3 + 2  # comment line, 3 ids, final newline
    assert "did not exist, so this split was written there" in json.dumps(report)  # a mistyped path shows
    assert f"device cpu ({report['config']['cpu_threads']} CPU threads)" in (out / "report.md").read_text()
    assert report["downstream"]["results"]["real+synthetic"]["disc"]["dice"]["n"] == 2
    scored, empty = report["downstream"]["per_source_scored"], report["downstream"]["n_holdout_empty"]
    assert scored == {"disc": {"phantom": 3}, "atrophy": {"phantom": 3 - empty["atrophy"]}}  # the images Dice counts
    equal, control = "real+synthetic, equal real passes", "real, as many steps as equal real passes"
    assert report["downstream"]["n_train"] == {"real": 12, "synthetic": 8, "real+synthetic": 20, equal: 20, control: 12}
    assert report["downstream"]["steps"] == {"real": 2, "synthetic": 2, "real+synthetic": 2, equal: 3, control: 3}
    assert set(report["agreement"]["results"]) == {"disc", "atrophy"}
    assert report["plausibility"]["one_disc_component_synthetic"] == 1.0
    assert len(report["memorisation"]) == 2 and report["fid_kid"]["computed"] is False
    assert report["refused"] is None and list(report).index("refused") < list(report).index("downstream")  # read first
    assert report["downstream"]["synthetic_with_holdout_masks"] == 0  # a generated set: no held-out image's own masks
    assert all(m["held_out_control"]["n_held_out"] == 3 and 0 <= m["p_above_control"] <= 1 for m in report["memorisation"].values())
    for figure in ("sample_grid", "nearest_pairs", "disc_histograms", "dice_bars"):
        assert (out / f"{figure}.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "Not computed:" in markdown and "out of git" in markdown and "| real+synthetic | 20 |" in markdown
    assert "held-out real images" in markdown and "Not refused: in no feature space" in markdown
    assert f"| {equal} (3 steps) | 20 |" in markdown and f"| {control} (3 steps) | 12 |" in markdown  # 2 x 20 / 12

    from fundus_diffusion.evaluation.model_card import model_card_metrics

    card = {m["name"]: m for m in model_card_metrics(report)}
    synthetic_dice = report["downstream"]["results"]["synthetic"]["atrophy"]["dice"]
    assert card["held-out atrophy Dice, segmenter trained on synthetic"]["value"].startswith(
        f"{synthetic_dice['mean']:.3f} ± "
    )
    assert card["generated discs in one piece"]["value"] == "100.0%" and "FID" not in card
    assert f"held-out disc Dice, segmenter trained on {equal}" in card
    assert f"held-out disc Dice, segmenter trained on {control}" in card
    copies = [m for name, m in card.items() if name.startswith("samples flagged as copies")]
    assert len(copies) == 2 and all(m["value"].endswith("of 8") for m in copies)  # pixels, segmenter features
    assert all("held-out real images flagged by the same threshold" in m["notes"] for m in copies)
    assert all(("REFUSED" in m["notes"]) == (report["refused"] is not None) for m in copies)
    assert not any(str(tmp_path) in m.get("notes", "") for m in card.values())  # cards are pushed: no local paths
    refused = model_card_metrics({**report, "refused": "REFUSED: 8 of 8 synthetic samples flagged as copies."})
    assert refused[0] == {"name": "synthetic set", "value": "REFUSED (copies)", "notes": "REFUSED: 8 of 8 synthetic samples flagged as copies."}
    assert not any("trained on synthetic" in m["name"] or "trained on real+synthetic" in m["name"] for m in refused)
    # images drawn for the held-out masks: segmenters trained on the test labels earn no card row (new-user pass,
    # session 31), and the warning says why
    leaked = model_card_metrics({**report, "downstream": {**report["downstream"], "synthetic_with_holdout_masks": 8}})
    assert not any("trained on synthetic" in m["name"] or "trained on real+synthetic" in m["name"] for m in leaked)
    assert any(m["name"] == "held-out disc Dice, segmenter trained on real" for m in leaked)
    assert "TEST LABELS IN TRAINING" in {m["name"]: m for m in leaked}["evaluation warnings"]["value"]
    assert report["holdout_split"].startswith("held out of --real") and "unseen by the generator only if" in report["holdout_split"]
    assert all(m["held_out_copies"]["n_held_out"] == 3 for m in report["memorisation"].values())
    # The report's top warnings go on the card as one entry ("none" too, so a later evaluation replaces it)
    from fundus_diffusion.evaluation.report import report_warnings

    verdicts = [w.partition(": ")[0] for w in report_warnings(report)]
    assert card["evaluation warnings"]["value"] == ("; ".join(verdicts) or "none")
    weak = json.loads(json.dumps(report))
    for row in weak["downstream"]["results"]["real"].values():
        row["dice"]["mean"] = 0.1
    warned = {m["name"]: m for m in model_card_metrics(weak)}["evaluation warnings"]
    assert warned["value"].startswith("WEAK YARDSTICK") and "Fix: train them longer" in warned["notes"]
    sampled = {m["name"] for m in model_card_metrics(report, sampler="ddpm, 100 steps")}  # no sampler made the real rows
    assert "held-out disc Dice, segmenter trained on real" in sampled
    assert "held-out disc Dice, segmenter trained on synthetic (ddpm, 100 steps)" in sampled


def test_image_only_evaluation_and_missing_annotations(tmp_path):
    dataset = load_phantom_dataset(6, size=32)
    report, figures = evaluate(dataset, dataset, config=EvaluationConfig(masks="none", resolution=16, device="cpu"))
    assert report["downstream"]["computed"] is False and set(figures) == {"sample_grid", "nearest_pairs"}
    assert [m["n_flagged"] for m in report["memorisation"].values()] == [5]  # 5 training images copied, 1 held out
    (pixels,) = report["memorisation"].values()
    # 5 of 6 flagged against 0 of 1 held-out image: too few images to tell copies from chance (p = 6/21)
    assert pixels["held_out_control"]["n_held_out"] == 1 and report["refused"] is None
    copied = {f["synthetic_id"] for f in pixels["flagged"]}
    assert len(copied) == 5 and all(f["real_id"] == f["synthetic_id"] and f["distance"] == 0 for f in pixels["flagged"])
    paths = write_report(report, figures, str(tmp_path))
    (held_out_copy,) = pixels["held_out_copies"]["flagged"]  # the set is --real itself: its held-out image too
    assert held_out_copy["synthetic_id"] == held_out_copy["held_out_id"] and held_out_copy["distance"] == 0
    assert set(open(paths["flagged"]).read().split()) == copied | {held_out_copy["synthetic_id"]}
    assert all(f"flagged `{i}`" in open(paths["markdown"]).read() for i in copied)
    unannotated = dataset.map(lambda row: {"has_atrophy_annotation": False})
    with pytest.raises(ValueError, match="(?s)synthetic set is not annotated everywhere for atrophy.*leave those masks out"):
        evaluate(dataset, unannotated, config=EvaluationConfig(masks="disc,atrophy", resolution=16))
    with pytest.raises(ValueError, match="(?s)The real set has no cup mask.*its masks: disc, atrophy.*masks/cup/<id>.png"):
        evaluate(dataset, dataset, config=EvaluationConfig(masks="disc,cup", resolution=16))
    # a generated set is generated again, not rebuilt; a typo is named (new-user pass, session 31)
    disc_only = dataset.remove_columns(["atrophy_mask", "has_atrophy_annotation"])
    config = EvaluationConfig(masks="disc,atrophy", resolution=16, inputs={"synthetic": "syn/disc-only"})
    with pytest.raises(ValueError, match=r"The synthetic set \(--synthetic syn/disc-only\) has no atrophy mask .*Fix: .* or generate it from a model trained"):
        evaluate(dataset, disc_only, config=config)
    with pytest.raises(ValueError, match=r"has no atrophys mask \(its masks: disc, atrophy; atrophys: did you mean atrophy\?\)"):
        evaluate(dataset, dataset, config=EvaluationConfig(masks="disc,atrophys", resolution=16))


def test_a_set_of_copies_is_refused_first_in_the_report(tmp_path):
    real, holdout = load_phantom_dataset(16, size=32, seed=0), load_phantom_dataset(10, size=32, seed=1000, split="test")
    copies = real.select(range(10)).map(lambda row: {"id": row["id"].replace("train", "copy")})
    config = EvaluationConfig(masks="none", resolution=16, device="cpu", realism_steps=1, realism_folds=2)
    report, figures = evaluate(real, copies, holdout, config)
    whole, quarter = report["realism"], report["realism"]["quarter_resolution"]  # images only: the one other view
    assert quarter["computed"] and quarter["real_vs_synthetic"]["n_per_class"] == whole["real_vs_synthetic"]["n_per_class"]
    assert (quarter["n_real_available"], quarter["n_synthetic_available"]) == (whole["n_real_available"], whole["n_synthetic_available"])
    pixels = report["memorisation"]["downsampled pixels (32x32 RGB in [0, 1], L2)"]
    control = pixels["held_out_control"]  # phantoms are alike: 2 of the 10 unseen ones are flagged by chance
    assert pixels["n_flagged"] == 10 and control["n_held_out"] == 10 and control["n_flagged"] < 5
    assert report["refused"].startswith("REFUSED: 10 of 10 synthetic samples flagged as copies of the generator's 16")
    assert f"against {control['n_flagged']} of 10 held-out real images" in report["refused"]
    paths = write_report(report, figures, str(tmp_path))
    assert json.loads(open(paths["json"]).read())["refused"] == report["refused"]
    markdown = open(paths["markdown"]).read()
    assert markdown.split("\n")[3] == f"> **{report['refused']}**"  # under the title, before any number
    assert markdown.count(report["refused"]) == 2  # and again as the verdict of the memorisation section
    assert "worst_holdout" not in markdown and "holds real photographs (`nearest_pairs.png`;" in markdown  # no masks
    look = report["global_look"]  # how light spreads over the field: real training + held-out pooled, as the judge
    assert look["computed"] and (look["n_real"], look["n_synthetic"]) == (26, 10)
    assert "**How light spreads over the field (16 px)**" in markdown and look["features"][0]["feature"] in markdown


def test_split_to_disk_writes_once_with_both_origins_in_each_part(tmp_path):
    from fundus_diffusion.data import load_fundus_dataset, load_phantom_dataset
    from fundus_diffusion.evaluation.splits import read_split_file, split_to_disk

    dataset = load_phantom_dataset(10, size=32, seed=0)
    train, test = split_to_disk(dataset, str(tmp_path / "split"), 0.2, stratify="label")
    assert len(train) == 8 and len(test) == 2 and sorted(test["label"]) == [0, 1]
    assert read_split_file(str(tmp_path / "split" / "test_ids.txt")) == sorted(test["id"])
    assert len(load_fundus_dataset(str(tmp_path / "split" / "train"))) == 8
    with pytest.raises(FileExistsError, match="written once"):
        split_to_disk(dataset, str(tmp_path / "split"))


def test_images_drawn_for_the_held_out_masks_are_said_to_train_on_the_test_labels():
    """The mask-to-image path draws images for given masks; judged against the held-out images whose masks they were
    drawn for, its synthetic and real + synthetic segmenters were trained on the test labels (audit, session 25)."""
    from fundus_diffusion.evaluation.protocol import held_out_masks_reused
    from fundus_diffusion.evaluation.report import report_warnings

    def pair(top, left, rgb_seed):
        x = torch.zeros(4, 32, 32, dtype=torch.uint8)
        x[:3] = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(rgb_seed), dtype=torch.uint8)
        x[3, top : top + 8, left : left + 8] = 255
        return x

    holdout = torch.stack([pair(4, 4, 0), pair(10, 12, 1), pair(20, 2, 2), torch.zeros(4, 32, 32, dtype=torch.uint8)])
    drawn_for_them = torch.stack([pair(4, 4, 10), pair(10, 12, 11)])  # the held-out masks, other images
    generated = torch.stack([pair(5, 4, 12), pair(16, 16, 13), torch.zeros(4, 32, 32, dtype=torch.uint8)])
    assert held_out_masks_reused(torch.cat([drawn_for_them, generated]), holdout) == 2
    assert held_out_masks_reused(generated, holdout) == 0  # a disc one row off (Dice 0.875) or none: not the same
    assert held_out_masks_reused(generated[:, :3], holdout) == 0  # an image-only set
    disc_only = holdout[:1].clone()  # a disc,cup model drawing for a disc-only held-out mask: the cup is its own
    two_masks = lambda x, cup: torch.cat([x, cup[None].expand(len(x), 1, 32, 32)], dim=1)  # noqa: E731
    cup = torch.zeros(32, 32, dtype=torch.uint8)
    cup[6:9, 6:9] = 255
    drawn_with_a_cup = two_masks(drawn_for_them[:1], cup)
    assert held_out_masks_reused(drawn_with_a_cup, two_masks(disc_only, torch.zeros_like(cup))) == 1
    assert held_out_masks_reused(drawn_with_a_cup, two_masks(disc_only, torch.flip(cup, (0,)))) == 0  # another cup
    # a training image whose disc equals a held-out image's (new-user pass, session 34: 21 pixels at 32 px): a sample
    # as near one as the other is not counted; one nearer the held-out image is
    training = torch.stack([pair(4, 4, 20), pair(28, 28, 21)])
    assert held_out_masks_reused(torch.cat([drawn_for_them, generated]), holdout, training) == 1  # (10, 12) only
    assert held_out_masks_reused(drawn_for_them, holdout, training[1:]) == 2
    # compared over the same masks: a training image with that disc but without the held-out image's cup does not
    # hide a sample drawn for the held-out disc and cup (review, session 34)
    disc_only_training = two_masks(training[:1], torch.zeros_like(cup))
    assert held_out_masks_reused(drawn_with_a_cup, two_masks(holdout[:1], cup), disc_only_training) == 1
    report = {"downstream": {"synthetic_with_holdout_masks": 2}, "counts": {"synthetic": 5}}
    assert report_warnings(report)[0].startswith("TEST LABELS IN TRAINING: 2 of the 5 synthetic samples")
