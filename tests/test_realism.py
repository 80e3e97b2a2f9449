"""The robust judge of the classifier two-sample test (issue 18): blind to a global colour cast, still sees structure,
its nuisance planned per seed and applied alike to both sets; the plain judge (``invariance="none"``) kept as it was."""

import pytest
import torch
from torch.nn import functional as F

from fundus_diffusion.evaluation import realism
from fundus_diffusion.evaluation.augment import apply_nuisance, gaussian_blur, jpeg_copies, resize_round_trip
from fundus_diffusion.evaluation.metrics import format_mean_std
from fundus_diffusion.evaluation.realism import (
    INVARIANCES,
    RealismRecipe,
    colour_statistics,
    disc_crops,
    field_of_view,
    keep_coarser_than,
    quarter_resolution_test,
    realism_test,
    region_test,
    roc_auc,
    standardise_colour,
    two_sample_auc,
    without_disc,
)
from fundus_diffusion.evaluation.recipe import plan_nuisance
from fundus_diffusion.evaluation.report import realism_lines

TINY = dict(steps=100, batch_size=16, width=8, learning_rate=3e-3, folds=3)


def round_fundus(n: int, generator: torch.Generator, size: int = 32, speckle: float = 0.0) -> torch.Tensor:
    """``uint8 [n, 3, size, size]``: smooth random colour fields inside a centred disc, black around it (a fundus
    photograph's layout); ``speckle`` adds pixel noise of that amplitude inside."""
    x = F.interpolate(torch.rand(n, 3, 4, 4, generator=generator), size=size, mode="bilinear") * 150 + 60
    x = x + speckle * (torch.rand(n, 3, size, size, generator=generator) - 0.5)
    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    inside = (yy**2 + xx**2 <= (0.45 * size) ** 2).float()
    return (x.clamp(0, 255) * inside).to(torch.uint8)


def test_robust_judge_cannot_tell_identical_distributions_apart():
    generator = torch.Generator().manual_seed(0)
    result = two_sample_auc(round_fundus(60, generator), round_fundus(60, generator), RealismRecipe(**TINY))
    assert abs(result["auc"]["mean"] - 0.5) < 0.2, result


def test_robust_judge_tells_an_obviously_different_set_apart():
    generator = torch.Generator().manual_seed(0)
    different = round_fundus(60, generator, speckle=160)
    result = two_sample_auc(round_fundus(60, generator), different, RealismRecipe(**TINY))
    assert result["auc"]["mean"] > 0.95, result


def test_a_colour_cast_fails_the_plain_judge_and_passes_the_robust_one():
    generator = torch.Generator().manual_seed(0)
    first, second = round_fundus(60, generator), round_fundus(60, generator)
    cast = second.clone()
    cast[:, 0] = torch.where(second[:, 0] > 0, (second[:, 0].int() + 25).clamp(max=255), 0).to(torch.uint8)
    plain = two_sample_auc(first, cast, RealismRecipe(**TINY, invariance="none"))
    robust = two_sample_auc(first, cast, RealismRecipe(**TINY))
    assert plain["auc"]["mean"] > 0.9, plain
    assert abs(robust["auc"]["mean"] - 0.5) < 0.2, robust


def test_an_unknown_judge_is_refused_and_the_resize_scales_follow_the_recipe():
    with pytest.raises(ValueError, match="'none'"):
        RealismRecipe(invariance="flips")
    assert RealismRecipe().resize_scales() == (0.5, 0.625, 0.75, 0.875, 1.0)
    assert RealismRecipe(resize_max=0.5).resize_scales() == (0.5,)  # a fixed round trip


def test_colour_standardisation_ignores_the_black_surround_and_a_colour_cast():
    images = round_fundus(4, torch.Generator().manual_seed(1)).float() / 255
    fov = field_of_view(images)
    assert not fov[:, :, 0, 0].any() and fov[:, :, 16, 16].all()
    out = standardise_colour(images, fov)
    assert (out[~fov.expand_as(out)] == 0).all()
    inside = out.permute(1, 0, 2, 3)[fov.permute(1, 0, 2, 3).expand(3, -1, -1, -1)].reshape(3, -1)
    assert inside.mean(dim=1).abs().max() < 1e-4
    cast = images * torch.tensor([0.8, 1.1, 1.0])[:, None, None] + torch.tensor([0.05, 0.0, -0.02])[:, None, None]
    assert torch.allclose(standardise_colour(cast, fov), out, atol=1e-3)
    stats = colour_statistics((images * 255).round().to(torch.uint8))
    assert all(v > 50 for v in stats["mean"])  # the black surround does not pull the mean down


def nuisance_plan(seed: int):
    return plan_nuisance(torch.Generator().manual_seed(seed), 3, 4, 1.25, 1.0, 3.0, (0.5, 0.75, 1.0), 2, 5)


def test_nuisance_plan_and_jpeg_copies_are_deterministic_per_seed():
    first, again, other = nuisance_plan(0), nuisance_plan(0), nuisance_plan(1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["blur"], other["blur"])
    assert first["gamma"].shape == (3, 4, 3, 1, 1) and (first["gamma"] - 1).abs().max() <= 0.25
    assert first["blur"].max() <= 1 and first["noise"].max() <= 3 / 255 and first["resize"].max() < 3
    images = round_fundus(2, torch.Generator().manual_seed(0))
    copies = [jpeg_copies(images, torch.Generator().manual_seed(0), 2, 60) for _ in range(2)]
    assert copies[0].shape == (2, 2, 3, 32, 32) and torch.equal(*copies)
    assert (copies[0].float() - images[:, None].float()).abs().mean() < 10


def test_nuisance_ops_leave_images_alone_at_zero_strength():
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(gaussian_blur(images, torch.zeros(2), 3), images, atol=1e-6)
    assert torch.equal(resize_round_trip(images, torch.tensor([1, 1]), (0.5, 1.0)), images)
    plan = {"gamma": torch.ones(1, 2, 3, 1, 1), "blur": torch.zeros(1, 2), "noise": torch.zeros(1, 2)}
    plan.update(noise_field=torch.zeros(1, 2, dtype=torch.long), resize=torch.ones(1, 2, dtype=torch.long))
    assert torch.allclose(apply_nuisance(images, plan, 0, torch.randn(1, 3, 16, 16), (0.5, 1.0), 3), images, atol=1e-5)


def test_nuisance_is_applied_to_both_sets_in_training_and_at_scoring(monkeypatch):
    """Every training batch and every held-out fold goes through the nuisance whole, whichever set its images are
    from: the dark first set and the bright second set are counted in each call."""
    calls = []

    def counting(images, *args):
        bright = images.mean(dim=(1, 2, 3)) > 0.5
        calls.append((len(images), int((~bright).sum()), int(bright.sum())))
        return images

    monkeypatch.setattr(realism, "apply_nuisance", counting)
    dark, bright = torch.full((9, 3, 16, 16), 40, dtype=torch.uint8), torch.full((9, 3, 16, 16), 220, dtype=torch.uint8)
    recipe = RealismRecipe(steps=4, batch_size=8, width=4, folds=3, copies=2)
    two_sample_auc(dark, bright, recipe)
    training, scoring = calls[:4] + calls[6:10] + calls[12:16], calls[4:6] + calls[10:12] + calls[16:18]
    assert len(calls) == 3 * (4 + 2) and all(n == 8 for n, _, _ in training)
    assert sum(d for _, d, _ in training) > 0 and sum(b for _, _, b in training) > 0
    assert all(n == 6 and d == 3 and b == 3 for n, d, b in scoring)  # each held-out fold: 3 + 3 images, 2 draws


def test_the_plain_judge_is_the_old_flips_only_judge(monkeypatch):
    monkeypatch.setattr(realism, "apply_nuisance", lambda *args: pytest.fail("the plain judge ran the nuisance"))
    monkeypatch.setattr(realism, "standardise_colour", lambda *args: pytest.fail("the plain judge standardised"))
    generator = torch.Generator().manual_seed(0)
    recipe = RealismRecipe(steps=2, batch_size=4, width=4, folds=2, invariance="none")
    result = two_sample_auc(round_fundus(6, generator), round_fundus(6, generator), recipe)
    assert len(result["auc_per_fold"]) == 2


def test_report_names_the_judge_and_shows_the_colour_table():
    generator = torch.Generator().manual_seed(0)
    result = realism_test(
        round_fundus(12, generator), round_fundus(6, generator), RealismRecipe(steps=2, width=4, folds=2)
    )
    assert result["judge"] == INVARIANCES["robust"] and set(result["colour_statistics"]) == {
        "real",
        "real_b",
        "synthetic",
    }
    markdown = "\n".join(realism_lines(result, "32 px"))
    assert "**Judge: robust judge" in markdown and "--realism_invariance robust" in markdown
    assert "JPEG re-encode at quality 60-100" in markdown and "| red | mean |" in markdown
    old = {**result, "recipe": {k: v for k, v in result["recipe"].items() if k != "invariance"}}
    old.pop("colour_statistics")
    assert "**Judge: plain judge" in "\n".join(realism_lines(old, "32 px"))  # a report from before the robust judge


def test_disc_crops_are_centred_on_each_disc_and_leave_out_images_without_one():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).reshape(2, 3, 32, 32).remainder(251).to(torch.uint8)
    images = torch.cat([images, images[:1]])
    discs = torch.zeros(3, 32, 32, dtype=torch.bool)
    discs[0, 10:14, 20:24] = True  # centroid (11.5, 21.5) -> row 12, column 22 (rounded half to even: 12, 22)
    discs[1, 0:3, 0:3] = True  # at the corner: the square runs past the border, black there
    crops = disc_crops(images, discs, 8)
    assert crops.shape == (2, 3, 8, 8)  # the third image has no disc
    assert torch.equal(crops[0], images[0, :3, 8:16, 18:26])
    assert crops[1, :, :3].eq(0).all() and torch.equal(crops[1, :, 3:, 3:], images[1, :3, 0:5, 0:5])


def test_without_disc_blacks_out_the_square_disc_crops_cuts():
    images = torch.full((3, 3, 32, 32), 200, dtype=torch.uint8)
    discs = torch.zeros(3, 32, 32, dtype=torch.bool)
    discs[0, 10:14, 20:24] = True  # centroid row 12, column 22: the square rows 8-15, columns 18-25
    discs[1, 0:3, 0:3] = True  # at the corner: what lies inside the image of the square past the border
    kept = without_disc(images, discs, 8)
    assert kept.shape == (2, 3, 32, 32)  # the third image has no disc
    assert kept[0, :, 8:16, 18:26].eq(0).all() and kept[0].eq(0).sum() == 3 * 64
    assert kept[1, :, 0:5, 0:5].eq(0).all() and kept[1].eq(0).sum() == 3 * 25
    assert images.eq(200).all()  # the caller's images untouched


def speckled(images: torch.Tensor, where: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``images`` with strong pixel noise where ``where`` (``bool [N, H, W]``) holds."""
    noise = (torch.rand(images.shape, generator=generator) - 0.5) * 200
    return torch.where(where[:, None], (images.float() + noise).clamp(0, 255), images.float()).to(torch.uint8)


def test_disc_region_test_sees_a_fault_confined_to_the_disc():
    """A speckled disc in otherwise identical photographs: the crops show it at a quarter of their area."""
    generator = torch.Generator().manual_seed(0)
    real, synthetic = round_fundus(60, generator, size=64), round_fundus(60, generator, size=64)
    discs = torch.zeros(60, 64, 64, dtype=torch.bool)
    discs[:, 26:38, 36:48] = True
    synthetic = speckled(synthetic, discs, generator)
    region = region_test("disc_region", real, discs, synthetic, discs, RealismRecipe(**TINY))
    assert region["computed"] and region["resolution"] == 16 and "16 px square" in region["region"]
    assert region["real_vs_synthetic"]["auc"]["mean"] > 0.9, region["real_vs_synthetic"]
    assert abs(region["real_vs_real"]["auc"]["mean"] - 0.5) < 0.25, region["real_vs_real"]
    markdown = "\n".join(realism_lines({**realism_test(real, synthetic, RealismRecipe(steps=2, width=4, folds=2)), "disc_region": region}, "64 px"))
    assert "**Disc region** (optic disc: a 16 px square" in markdown and "| compared on 16 px disc crops |" in markdown


def test_outside_disc_test_sees_what_lies_outside_the_disc_and_not_the_disc():
    """A white disc, which the whole-image judge sees, is gone without the disc's square; speckle everywhere else is
    seen."""
    generator = torch.Generator().manual_seed(1)
    real, synthetic = round_fundus(60, generator, size=64), round_fundus(60, generator, size=64)
    discs = torch.zeros(60, 64, 64, dtype=torch.bool)
    discs[:, 26:38, 36:48] = True  # centroid row 32, column 42: the 16 px square rows 24-39, columns 34-49
    white_disc = torch.where(discs[:, None], torch.full_like(synthetic, 255), synthetic)
    whole = two_sample_auc(real, white_disc, RealismRecipe(**TINY))
    assert whole["auc"]["mean"] > 0.9, whole  # what the outside test must then not see
    hidden = region_test("outside_disc", real, discs, white_disc, discs, RealismRecipe(**TINY))
    assert hidden["computed"] and hidden["resolution"] == 64 and "blacked out" in hidden["region"]
    assert abs(hidden["real_vs_synthetic"]["auc"]["mean"] - 0.5) < 0.25, hidden["real_vs_synthetic"]
    outside_square = torch.ones_like(discs)
    outside_square[:, 24:40, 34:50] = False
    seen = region_test("outside_disc", real, discs, speckled(synthetic, outside_square, generator), discs, RealismRecipe(**TINY))
    assert seen["real_vs_synthetic"]["auc"]["mean"] > 0.9, seen["real_vs_synthetic"]
    markdown = "\n".join(realism_lines({**realism_test(real, white_disc, RealismRecipe(steps=2, width=4, folds=2)), "outside_disc": hidden}, "64 px"))
    assert "**Outside the disc** (everything but the optic disc" in markdown
    assert "| compared on 64 px images without the disc |" in markdown


def test_keep_coarser_than_drops_pixel_detail_and_keeps_smooth_shading():
    checkerboard = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 200 + 20).to(torch.uint8)
    ramp = torch.linspace(20, 220, 64)[None].expand(64, 64).round().to(torch.uint8)
    images = torch.stack([checkerboard.expand(3, 64, 64), ramp.expand(3, 64, 64)])
    coarse = keep_coarser_than(torch.cat([images, images[:, :1]], dim=1), 16)  # a mask channel beside: RGB back
    assert coarse.shape == (2, 3, 64, 64) and coarse.dtype == torch.uint8
    assert torch.equal(keep_coarser_than(images, 16, batch_size=1), coarse)  # batches change nothing
    assert coarse[0].float().std() < 3 < images[0].float().std()  # the 1 px pattern is gone
    inner = (slice(None), slice(4, -4), slice(4, -4))  # away from the border, where bilinear resizing clamps
    assert (coarse[1][inner].float() - images[1][inner].float()).abs().max() <= 2  # the slow ramp stays


def test_quarter_resolution_test_sees_a_coarse_difference_and_not_a_fine_pattern():
    """A fine pattern inside the field, which the whole-image judge sees, is gone at a quarter of the resolution; a dark
    half of the field is not."""
    generator = torch.Generator().manual_seed(2)
    real, synthetic = round_fundus(60, generator, size=64), round_fundus(60, generator, size=64)
    pattern = ((torch.arange(64)[:, None] // 2 + torch.arange(64)[None] // 2) % 2 * 2 - 1) * 50.0  # 2 px squares
    speckle = torch.where(synthetic > 0, (synthetic.float() + pattern).clamp(0, 255), 0.0).to(torch.uint8)
    whole = two_sample_auc(real, speckle, RealismRecipe(**TINY))
    assert whole["auc"]["mean"] > 0.9, whole  # what the quarter-resolution test must then not see
    hidden = quarter_resolution_test(real, speckle, RealismRecipe(**TINY))
    assert hidden["computed"] and hidden["resolution"] == 64 and "brought down to 16 px and back up to 64 px" in hidden["region"]
    assert "colour_statistics" not in hidden  # the whole image's colour, which its own table gives
    assert abs(hidden["real_vs_synthetic"]["auc"]["mean"] - 0.5) < 0.25, hidden["real_vs_synthetic"]
    dark_half = synthetic.clone()
    dark_half[:, :, :32] //= 3
    seen = quarter_resolution_test(real, dark_half, RealismRecipe(**TINY))
    assert seen["real_vs_synthetic"]["auc"]["mean"] > 0.9, seen["real_vs_synthetic"]
    markdown = "\n".join(realism_lines({**realism_test(real, speckle, RealismRecipe(steps=2, width=4, folds=2)), "quarter_resolution": hidden}, "64 px"))
    assert "**At a quarter of the resolution** (both sets brought down to 16 px" in markdown
    assert "| compared on 64 px images at a quarter of the resolution |" in markdown


def test_repeats_pool_other_draws_and_keep_the_single_test_as_the_first():
    generator = torch.Generator().manual_seed(0)
    real, synthetic = round_fundus(16, generator), round_fundus(12, generator, speckle=160)
    recipe = dict(steps=3, width=4, folds=2)
    once = realism_test(real, synthetic, RealismRecipe(**recipe))
    twice = realism_test(real, synthetic, RealismRecipe(**recipe, repeats=2))
    for test in ("real_vs_synthetic", "real_vs_real"):
        assert twice[test]["auc_per_fold"][:2] == once[test]["auc_per_fold"]  # the first repeat is the single test
        assert len(twice[test]["auc_per_fold"]) == 4 and twice[test]["repeats"] == 2 and twice[test]["auc"]["n"] == 4
        assert twice[test]["auc_per_fold"][2:] != once[test]["auc_per_fold"]  # other draws, folds and judges
    assert "mean ± std over the 4 held-out folds of 2 repeats" in "\n".join(realism_lines(twice, "32 px"))
    markdown = "\n".join(realism_lines(twice, "32 px"))
    assert "| compared at 32 px | ROC AUC | per fold, by repeat (the repeat's mean) |" in markdown
    for test, row in (("real_vs_synthetic", "real vs synthetic"), ("real_vs_real", "real vs real (control: two halves of the real images)")):
        aucs = twice[test]["auc_per_fold"]
        each_repeat = "; ".join(f"{a:.3f}, {b:.3f} (mean {(a + b) / 2:.3f})" for a, b in (aucs[:2], aucs[2:]))
        assert f"| {row} | {format_mean_std(twice[test]['auc'])} | {each_repeat} |" in markdown, test
    assert "mean ± std over folds," in "\n".join(realism_lines(once, "32 px"))
    with pytest.raises(ValueError, match="repeats=0"):
        RealismRecipe(repeats=0)


def test_the_auc_of_confident_logits_is_not_squashed_into_ties(monkeypatch):
    """A confident judge's logits lie far outside [0, 1]; torchmetrics squashed those above about 17 into ties at 1.0
    (a perfect judge scoring the held-out fold 20, -1 for real and 30, 25 for synthetic read 0.75). The two-sample
    test's fold AUC keeps their order (audit, session 25)."""
    monkeypatch.setattr(realism, "train_realism_classifier", lambda *args, **kwargs: None)

    def confident(model, images, *args):  # real images are all 0 here, synthetic all 255: far apart logits
        brightness = images[:, 0].float().mean(dim=(1, 2))
        return torch.where(brightness > 127, 25.0 + torch.arange(len(images)), 20.0 - torch.arange(len(images)))

    monkeypatch.setattr(realism, "realism_scores", confident)
    first, second = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.full((4, 3, 8, 8), 255, dtype=torch.uint8)
    found = realism.two_sample_auc(first, second, RealismRecipe(folds=2, invariance="none"))
    assert found["auc_per_fold"] == [1.0, 1.0]
    assert roc_auc(torch.tensor([30.0, 25.0]), torch.tensor([20.0, -1.0])) == 0.0
    assert roc_auc(torch.tensor([2.0, 2.0]), torch.tensor([2.0])) == 0.5
