"""The evaluation networks' shared training loop: batches and augmentation planned in advance from one seed."""

import torch

from fundus_diffusion.evaluation.augment import apply_augmentation
from fundus_diffusion.evaluation.recipe import plan_batches


def test_a_plan_is_reproducible_and_has_one_row_per_step():
    plans = [plan_batches(torch.Generator().manual_seed(3), 5, 4, 10, vertical_flips=True) for _ in range(2)]
    assert all(torch.equal(plans[0][k], plans[1][k]) for k in plans[0])
    assert plans[0]["index"].shape == (5, 4) and plans[0]["gain"].shape == (5, 4, 1, 1, 1)
    assert int(plans[0]["index"].max()) < 10
    other = plan_batches(torch.Generator().manual_seed(4), 5, 4, 10, vertical_flips=True)
    assert not torch.equal(plans[0]["index"], other["index"])
    weighted = plan_batches(torch.Generator().manual_seed(3), 20, 8, 4, weights=torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert (weighted["index"] == 1).all() and "gain" in weighted


def test_masks_flip_with_their_images():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(64, 1, 8, 8, generator=generator) > 0.5
    images = torch.where(masks, 1.0, -1.0).expand(64, 3, 8, 8)  # bright exactly where the mask is
    plan = plan_batches(generator, 1, 64, 64, vertical_flips=True)
    assert plan["hflip"][0].any() and plan["vflip"][0].any() and not plan["hflip"][0].all()
    out, out_masks = apply_augmentation(images, plan, 0, masks)
    assert torch.equal(out[:, :1] > 0, out_masks)  # jitter keeps the sign; flips move both alike
    assert not torch.equal(out_masks, masks)  # something was flipped
