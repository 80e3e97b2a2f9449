"""The one copy-check refusal rule (``memorisation.refusal``): a synthetic set is refused only when its samples are
flagged as copies more often than held-out real images checked the same way (one-sided Fisher exact, p < 0.01)."""

import pytest
import torch

from fundus_diffusion.evaluation.memorisation import (
    REFUSE_P,
    controlled_copy_check,
    copy_excess_p,
    memorisation_report,
    nearest_training_neighbours,
    pixel_features,
    refusal,
)


def space(flagged: int, n: int, control_flagged: int, control_n: int = 80) -> dict:
    """The counts of one feature space of the copy check, as ``controlled_copy_check`` records them."""
    control = {"n_held_out": control_n, "n_flagged": control_flagged, "share_flagged": control_flagged / control_n}
    return {"n_flagged": flagged, "n_synthetic": n, "n_real_train": 20, "held_out_control": control}


def test_equal_rates_are_not_refused():
    # A faultless generator at N = 20 on palm-224: about 1 in 12 flagged by chance, samples and control alike.
    assert copy_excess_p(space(16, 200, 7)) == pytest.approx(0.68, abs=0.01)
    assert refusal({"pixels": space(16, 200, 7)}) is None
    assert copy_excess_p(space(0, 200, 7)) == 1.0 and refusal({"pixels": space(0, 200, 0)}) is None


def test_many_more_flags_than_the_control_are_refused_naming_the_space_and_counts():
    refused = refusal({"pixels": space(2, 200, 0), "features": space(40, 200, 3)})
    assert refused.startswith("REFUSED: 40 of 200 synthetic samples flagged as copies of the generator's 20 training")
    assert "in features, against 3 of 80 held-out real images (one-sided Fisher p = " in refused
    assert "pixels" not in refused  # 2 of 200 against 0 of 80 is chance (p about 0.5)
    # Just past the line: 20 of 200 against 1 of 80 (p = 0.0064) is refused, 4 of 8 against 0 of 8 (p = 0.038) not.
    assert copy_excess_p(space(20, 200, 1)) < REFUSE_P and refusal({"s": space(20, 200, 1)}) is not None


def test_small_counts_are_not_evidence():
    # 5 of 6 samples copied, against 0 of 1 held-out image: p = 6/21, too few images to tell copying from chance.
    assert copy_excess_p(space(5, 6, 0, control_n=1)) == pytest.approx(6 / 21)
    assert refusal({"pixels": space(5, 6, 0, control_n=1)}) is None
    assert copy_excess_p(space(4, 8, 0, control_n=8)) == pytest.approx(1 / 26) and refusal({"s": space(4, 8, 0, 8)}) is None


def test_controlled_copy_check_flags_copies_and_counts_the_control():
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    held_out = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=generator)
    synthetic = real[:12].clone()  # twelve copies of training images
    real_ids, synthetic_ids = [f"real/{i}" for i in range(20)], [f"syn/{i}" for i in range(12)]
    section = controlled_copy_check(
        *(pixel_features(a) for a in (synthetic, real, held_out)), synthetic_ids, real_ids
    )
    assert section["n_flagged"] == 12 and section["held_out_control"] == {
        "n_held_out": 10, "n_flagged": 0, "share_flagged": 0.0
    }  # fmt: skip
    assert [f["real_id"] for f in section["flagged"]] == real_ids[:12] and section["flagged"][0]["distance"] == 0
    assert section["p_above_control"] == pytest.approx(copy_excess_p(section)) and section["p_above_control"] < 1e-4
    assert "distances" not in section and "neighbours" not in section  # JSON-able: no per-sample arrays
    assert refusal({"pixels": section}).startswith("REFUSED: 12 of 12")


def test_a_mirrored_copy_is_caught_only_against_the_mirror_images():
    """The generators train on left-right flips: a mirrored copy of a training image is a copy, which the check finds
    only when it is given the training images' mirror features; a real image's own mirror is not its neighbour."""
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    real[5, ..., 16:] = real[5, ..., :16].flip(-1)  # symmetric: its own mirror is itself, at distance 0
    held_out = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=generator)
    far = torch.stack([torch.full((3, 32, 32), value, dtype=torch.uint8) for value in (0, 255)])  # farther than any pair
    synthetic = torch.cat([real[:3].flip(-1), far])
    blind = memorisation_report(pixel_features(synthetic), pixel_features(real))
    assert (blind["distances"][:3] > 0).all() and not blind["mirrored"].any() and not blind["mirrored_too"]
    ids = ([f"syn/{i}" for i in range(5)], [f"real/{i}" for i in range(20)])
    features = [pixel_features(a) for a in (synthetic, real, held_out)]
    seen = controlled_copy_check(*features, *ids, real_train_mirrored=pixel_features(real.flip(-1)))
    assert seen["mirrored_too"] and seen["n_flagged"] == 3 and seen["held_out_control"]["n_flagged"] == 0
    assert [(f["synthetic_id"], f["real_id"], f["mirrored"], f["distance"]) for f in seen["flagged"]] == [
        (f"syn/{i}", f"real/{i}", True, 0.0) for i in range(3)
    ]
    real_features, mirrored_features = pixel_features(real), pixel_features(real.flip(-1))
    real_to_real, _, _ = nearest_training_neighbours(real_features, real_features, mirrored_features, exclude_self=True)
    assert real_to_real[5] > 0  # image 5's own mirror (itself, distance 0) is not its nearest other image


def test_copies_of_held_out_images_are_refused_and_training_look_alikes_are_the_control():
    """A generator trained on all of --real and judged on a part of it (evaluate.py's own split) can copy the
    held-out images: the samples are checked against them, the training images are the control."""
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=generator)
    held_out = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=generator)
    fresh = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator)
    held_out_ids = [f"held/{i}" for i in range(10)]

    def check(synthetic):
        return controlled_copy_check(
            *(pixel_features(a) for a in (synthetic, real, held_out)), [f"syn/{i}" for i in range(len(synthetic))],
            [f"real/{i}" for i in range(30)], held_out_ids=held_out_ids,
            held_out_mirrored=pixel_features(held_out.flip(-1)),
        )  # fmt: skip

    copied = check(torch.cat([held_out[:6].flip(-1), fresh[:14]]))  # six mirrored copies of held-out images
    assert copied["n_flagged"] == 0  # not near a training image: the training check alone passes this set
    found = copied["held_out_copies"]
    assert found["n_flagged"] == 6 and found["training_control"] == {"n_real_train": 30, "n_flagged": 0}
    assert sorted(f["held_out_id"] for f in found["flagged"]) == held_out_ids[:6]
    assert all(f["mirrored"] and f["distance"] == 0 and "real_id" not in f for f in found["flagged"])
    refused = refusal({"pixels": copied})
    assert "6 of 20 synthetic samples flagged as copies of the 10 held-out real images" in refused
    assert "--holdout" in refused
    assert refusal({"pixels": check(fresh)}) is None and check(fresh)["held_out_copies"]["n_flagged"] == 0


def test_a_duplicate_training_photograph_does_not_blind_the_check():
    """One photograph stored twice would make the 1st percentile of real-to-real distances 0, so that nothing could
    be flagged; the duplicates are counted and left out of the yardstick."""
    generator = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (80, 3, 32, 32), dtype=torch.uint8, generator=generator)
    real[1] = real[0]
    found = memorisation_report(pixel_features(real[:10].clone()), pixel_features(real))
    assert found["n_real_train_duplicates"] == 2 and found["threshold"] > 0
    assert found["n_flagged"] == 10
    # Exactly 0, also in many dimensions and across many rows, where distances through matrix products are not.
    features = torch.randn(150, 256, generator=generator, dtype=torch.float64) * 25
    features[100:] = features[:50]
    assert memorisation_report(features[:5], features)["n_real_train_duplicates"] == 100
