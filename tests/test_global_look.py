"""The global-look section: how light spreads over the field, measured on the robust judge's standardised view."""

import torch

from fundus_diffusion.evaluation.global_look import (
    MIN_PER_SET,
    clear_surround,
    field_features,
    folded_auc,
    global_look_section,
)
from fundus_diffusion.evaluation.report import global_look_lines

SIZE = 64


def fields(n: int, seed: int, centre_gain: float = 0.0) -> torch.Tensor:
    """``uint8 [n, 3, SIZE, SIZE]`` round fields on black: a colour, a random tilt of light and texture per image,
    and, with ``centre_gain``, a broad bright patch at the field's centre."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    centre = (SIZE - 1) / 2
    r = ((yy - centre) ** 2 + (xx - centre) ** 2).sqrt() / (SIZE * 0.45)
    colour = torch.tensor([0.6, 0.3, 0.15])[None, :, None, None] * (1 + 0.1 * torch.randn(n, 1, 1, 1, generator=g))
    tilt = 0.1 * torch.randn(n, 1, 1, 1, generator=g) * (xx - centre) / SIZE
    texture = 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    light = colour * (1 + tilt + texture + centre_gain * torch.exp(-(r**2) / 0.08))
    return (light.clamp(0, 1) * (r < 1) * 255).round().to(torch.uint8)


def test_clear_surround_removes_a_speck_in_the_black_and_keeps_the_whole_field():
    images = fields(2, seed=0)
    specked = images.clone()
    specked[:, :, 2, 2] = 60  # a one-pixel speck in the corner, well above the field-of-view threshold
    cleared = clear_surround(specked)
    assert int(cleared[:, :, :4, :4].max()) == 0
    assert torch.equal(cleared[:, :, 4:, 4:], images[:, :, 4:, 4:])  # the field, its dim rim included, untouched


def test_a_brighter_centre_is_found_and_named_where_alike_sets_are_not_told_apart():
    real = fields(4 * MIN_PER_SET, seed=1)
    alike, brighter = fields(2 * MIN_PER_SET, seed=2), fields(2 * MIN_PER_SET, seed=3, centre_gain=0.5)

    same = global_look_section(real, alike)
    assert same["computed"] and same["combined"]["n_features"] == len(same["features"])
    assert same["combined"]["mean"] < 0.75, same["combined"]
    assert max(row["auc"] for row in same["features"]) < 0.8

    different = global_look_section(real, brighter)
    assert different["combined"]["mean"] > 0.95, different["combined"]
    centre = {row["feature"]: row for row in different["features"]}["green mean at 0-0.3 of the radius"]
    assert centre["auc"] > 0.95 and centre["synthetic"] > centre["real"], centre
    assert different["features"][0]["auc"] >= centre["auc"]  # rows sorted by how well they separate the sets
    assert different["combined_real_vs_real"]["mean"] < 0.75  # the control is the same for both: real halves


def test_field_features_ignore_a_colour_offset_and_folded_auc_is_symmetric():
    images = fields(6, seed=4) // 2  # nothing saturated
    field = images.amax(dim=1, keepdim=True) > 0
    offset = torch.where(field, images + torch.tensor([20, 10, 5], dtype=torch.uint8)[None, :, None, None], images)
    for name, value in field_features(images).items():  # a colour cast over the field is standardised away
        assert torch.allclose(value, field_features(offset)[name], atol=1e-9), name
    low, high = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert folded_auc(low, high) == folded_auc(high, low) == 1.0
    assert folded_auc(low, low) == 0.5


def test_report_lines_show_the_table_and_say_why_when_too_few_images():
    section = global_look_section(fields(4 * MIN_PER_SET, seed=5), fields(2 * MIN_PER_SET, seed=6, centre_gain=0.5))
    text = "\n".join(global_look_lines(section, "64 px"))
    assert "How light spreads over the field (64 px)" in text and "real vs real (control)" in text
    assert section["features"][0]["feature"] in text

    too_few = global_look_section(fields(4, seed=7), fields(3, seed=8))
    assert not too_few["computed"]
    assert "Not computed: it needs" in "\n".join(global_look_lines(too_few, "64 px"))


def test_black_images_are_left_out_and_counted_and_the_control_matches_the_sizes():
    real, synthetic = fields(4 * MIN_PER_SET, seed=9), fields(MIN_PER_SET + 1, seed=10)
    real[0], synthetic[0] = 0, 3  # a black photograph, a sample too dark for a field of view anywhere
    section = global_look_section(real, synthetic)
    assert section["computed"] and (section["n_real_without_field"], section["n_synthetic_without_field"]) == (1, 1)
    assert (section["n_real"], section["n_synthetic"]) == (4 * MIN_PER_SET - 1, MIN_PER_SET)
    assert section["n_control"] == [3 * MIN_PER_SET - 1, MIN_PER_SET]  # as many real as synthetic, against the rest
    assert "Left out, without a field of view (black or too dark): 1 real, 1 synthetic." in "\n".join(
        global_look_lines(section, "64 px")
    )
    assert global_look_lines(None, "64 px") == []
