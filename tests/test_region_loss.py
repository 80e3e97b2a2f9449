"""--region_loss_weight: the denoising error within a mask's region (and a margin around it) weighs more, the loss keeps
its scale, and a run with it trains, saves and states it in its card."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from test_train_ddpm import tiny_args

from fundus_diffusion.training import ddpm


def disc_channel(batch: int, size: int, centre: int, radius: int) -> torch.Tensor:
    """A mask channel in [-1, 1]: a square 'disc' of side 2 * radius + 1 around (centre, centre) in every sample."""
    channel = -torch.ones(batch, size, size)
    channel[:, centre - radius : centre + radius + 1, centre - radius : centre + radius + 1] = 1.0
    return channel


def test_region_weights_cover_the_mask_and_its_margin_and_keep_the_mean():
    channel = disc_channel(2, 32, centre=16, radius=2)
    channel[1] = -1.0  # the second sample shows no disc (or is not annotated for it)
    weights = ddpm.region_loss_weights(channel, weight=4.0, margin=3)
    assert weights.shape == (2, 1, 32, 32)
    assert torch.allclose(weights.mean(dim=(1, 2, 3)), torch.ones(2))
    inside, outside = weights[0, 0, 16, 16], weights[0, 0, 0, 0]
    assert inside / outside == pytest.approx(5.0)
    region = weights[0, 0] > outside
    assert region.sum() == (5 + 2 * 3) ** 2  # the 5 px square grown by 3 px on each side
    assert torch.equal(weights[1], torch.ones_like(weights[1]))  # no structure: every pixel alike
    unmargined = ddpm.region_loss_weights(channel, weight=4.0, margin=0)[0, 0]
    assert torch.equal(unmargined > unmargined[0, 0], channel[0] > 0)  # no margin: the mask itself


def test_the_weighted_loss_moves_the_error_inside_the_region():
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    x[:, 3] = disc_channel(2, 16, centre=8, radius=2)
    region = x[:, 3:4] > 0

    def loss(unet, pixel_weights):
        torch.manual_seed(0)
        return ddpm.diffusion_loss(unet, scheduler, x, pixel_weights=pixel_weights)

    def unet_wrong(where):
        """A UNet that predicts the target exactly except at ``where``, where it is off by 1."""

        def forward(noisy, t, class_labels=None):
            torch.manual_seed(0)
            noise = torch.randn_like(x)
            target = scheduler.get_velocity(x, noise, torch.randint(0, 50, (2,)))
            return SimpleNamespace(sample=target + where.float())

        return forward

    weights = ddpm.region_loss_weights(x[:, 3], weight=4.0, margin=1)
    inside, outside = unet_wrong(region), unet_wrong(~region)
    assert loss(inside, None) < loss(outside, None)  # the region is small: unweighted, its errors count little
    assert loss(inside, weights) > loss(inside, None) and loss(outside, weights) < loss(outside, None)
    uniform = torch.ones_like(weights)  # weights of 1 everywhere: the plain MSE
    assert torch.equal(loss(inside, uniform), loss(inside, None))


@pytest.mark.parametrize("crops", [False, True])
def test_a_run_weighs_the_turned_and_cropped_disc_and_says_so(tmp_path, monkeypatch, crops):
    """What a training step gives the loss: weights that follow the disc of the (turned, cropped) images it trains
    on, with the margin, and computed on the whole image (a crop inside the region keeps the region's weight)."""
    seen, real_loss = [], ddpm.diffusion_loss

    def spy(unet, scheduler, pixel_values, *rest):
        seen.append((pixel_values.detach().clone(), rest[-1]))
        return real_loss(unet, scheduler, pixel_values, *rest)

    monkeypatch.setattr(ddpm, "diffusion_loss", spy)
    out = tmp_path / "run"
    args = tiny_args(out, tmp_path / "cache", "--resolution", "32", "--max_train_steps", "6", "--logger", "none",
                     "--region_loss_weight", "4", "--rotation_conditioning_prob", "0.5")  # fmt: skip
    ddpm.train(ddpm.parse_args(args + (["--patch_diffusion", "--patch_full_share", "0"] if crops else [])))
    assert len(seen) == 6
    margin_seen = False
    for pixel_values, weights in seen:
        assert weights is not None and weights.shape == (len(pixel_values), 1, *pixel_values.shape[2:])
        disc = pixel_values[:, 3:4] > 0
        assert (weights[disc] > 1).all()  # the disc of the images the step trains on: above the image's mean weight
        assert (~disc[weights < 1]).all()  # below the mean only outside the disc
        margin_seen |= bool((weights[~disc] > 1).any())  # the margin around it weighs too
        if not crops:
            assert torch.allclose(weights.mean(dim=(1, 2, 3)), torch.ones(len(weights)))
        else:  # a crop's weights are its part of its image's: never all 1, which weights of its own would be off the disc
            assert not any(torch.all(crop == 1) for crop in weights)
    assert margin_seen
    assert "5 times the weight within 2 px of the disc mask" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--region_loss_weight", "-1"], "give a weight of at least 0"),
        (["--region_loss_weight", "2", "--masks", "atrophy"], "--masks atrophy has no such channel"),
        (["--region_loss_weight", "2", "--region_loss_mask", "cup"], "weights the cup mask's region"),
    ],
)
def test_region_weights_that_cannot_work_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "32"] + flags)
    assert message in capsys.readouterr().err
