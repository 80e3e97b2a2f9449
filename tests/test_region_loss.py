"""--region_loss_weight: the denoising error within a mask's region (and a margin around it) weighs more, the loss keeps
its scale, the region is read from the noisy input so the learnt denoiser is unbiased, and a run with it trains, saves,
states it in its card and resumes only with it."""

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


def test_pure_noise_weighs_every_pixel_alike_and_a_faint_disc_shows():
    noise = torch.randn(2, 256, 256, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ddpm.region_loss_weights(noise, weight=4.0, margin=16), torch.ones(2, 1, 256, 256))
    faint = disc_channel(2, 256, centre=128, radius=20) + noise  # SNR 1 (log-SNR 0): the 5 px mean shows the disc
    weights = ddpm.region_loss_weights(faint, weight=4.0, margin=16)[:, 0]
    assert (weights[:, 128, 128] > 1).all() and (weights[:, 10, 10] < 1).all()


NEARLY_PURE_NOISE = DDPMScheduler(num_train_timesteps=2, beta_start=0.9999, beta_end=0.9999, prediction_type="v_prediction")


def fitted_disc_probability(x: torch.Tensor, region_weighting) -> float:
    """Fit a "UNet" that ignores its input (one value per pixel and channel) to ``x`` at nearly pure noise, where
    the best fit is the data's mean if the loss is unbiased, and return the share of disc it implies (v ~ -x0)."""
    constant = torch.zeros(1, *x.shape[1:], requires_grad=True)
    optimiser = torch.optim.Adam([constant], lr=0.05)
    unet = lambda noisy, t, class_labels=None: SimpleNamespace(sample=constant.expand(len(noisy), -1, -1, -1))  # noqa: E731
    torch.manual_seed(0)
    for _ in range(150):
        optimiser.zero_grad()
        ddpm.diffusion_loss(unet, NEARLY_PURE_NOISE, x, region_weighting=region_weighting).backward()
        optimiser.step()
    return float((1 - constant.detach()[0, 3]).mean() / 2)


def test_weights_from_the_noisy_input_learn_the_data_and_weights_from_the_clean_mask_would_not():
    generator = torch.Generator().manual_seed(0)
    x = torch.full((128, 4, 32, 32), -1.0)
    x[:, :3] = torch.rand(128, 3, 32, 32, generator=generator) * 0.4 - 0.2
    for i in range(128):  # a 7 px disc, brighter, somewhere along a band (left and right eyes)
        row, col = (int(v) for v in torch.randint(8, 24, (2,), generator=generator))
        x[i, :, row - 3 : row + 4, col - 3 : col + 4] += torch.tensor([0.8, 0.8, 0.8, 2.0])[:, None, None]
    data = float((x[:, 3] > 0).float().mean())
    assert fitted_disc_probability(x, None) == pytest.approx(data, rel=0.1)  # the plain loss learns the data
    assert fitted_disc_probability(x, ddpm.RegionWeighting(3, 4.0, 2)) == pytest.approx(data, rel=0.1)
    clean = lambda noisy: ddpm.region_loss_weights(x[:, 3], 4.0, 2)  # noqa: E731 - the flaw this design avoids
    assert fitted_disc_probability(x, clean) > 1.5 * data


def test_the_weighted_loss_moves_the_error_inside_the_region():
    scheduler = DDPMScheduler(num_train_timesteps=50, beta_start=1e-6, beta_end=1e-5, prediction_type="v_prediction")
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    x[:, 3] = disc_channel(2, 16, centre=8, radius=2)
    region = x[:, 3:4] > 0

    def loss(unet, weighting):
        torch.manual_seed(0)
        return ddpm.diffusion_loss(unet, scheduler, x, region_weighting=weighting)

    def unet_wrong(where):
        """A UNet that predicts the target exactly except at ``where``, where it is off by 1."""

        def forward(noisy, t, class_labels=None):
            torch.manual_seed(0)
            noise = torch.randn_like(x)
            target = scheduler.get_velocity(x, noise, torch.randint(0, 50, (2,)))
            return SimpleNamespace(sample=target + where.float())

        return forward

    weighting = ddpm.RegionWeighting(channel=3, weight=4.0, margin=1)
    inside, outside = unet_wrong(region), unet_wrong(~region)
    assert loss(inside, None) < loss(outside, None)  # the region is small: unweighted, its errors count little
    assert loss(inside, weighting) > loss(inside, None) and loss(outside, weighting) < loss(outside, None)
    assert torch.equal(loss(inside, ddpm.RegionWeighting(3, 0.0, 1)), loss(inside, None))  # weight 0: the plain MSE


@pytest.mark.parametrize("crops", [False, True])
def test_a_run_weighs_the_turned_and_cropped_disc_says_so_and_resumes_only_with_it(tmp_path, monkeypatch, crops):
    """What a training step gives the loss: the region weighting of the disc channel with a margin of 1/16 of the
    side, applied to the (turned, cropped) images the step trains on."""
    seen, real_loss = [], ddpm.diffusion_loss

    def spy(unet, scheduler, pixel_values, *rest):
        seen.append((pixel_values.detach().clone(), rest[6]))  # after labels, dropout, gamma, masks, turns, crops
        return real_loss(unet, scheduler, pixel_values, *rest)

    monkeypatch.setattr(ddpm, "diffusion_loss", spy)
    out = tmp_path / "run"
    args = tiny_args(out, tmp_path / "cache", "--resolution", "32", "--max_train_steps", "6", "--logger", "none",
                     "--region_loss_weight", "4", "--rotation_conditioning_prob", "0.5", "--checkpointing_steps", "6")  # fmt: skip
    args += ["--patch_diffusion", "--patch_full_share", "0"] if crops else []
    ddpm.train(ddpm.parse_args(args))
    assert len(seen) == 6
    emphasised = False
    for pixel_values, weighting in seen:
        assert weighting == ddpm.RegionWeighting(channel=3, weight=4.0, margin=2)
        weights, disc = weighting(pixel_values), pixel_values[:, 3:4] > 0  # as at t = 0: the clean image or crop
        below = weights < 1 - 1e-6  # a crop wholly inside the region weighs its pixels alike (1), as any crop
        assert (weights[disc] > 1 - 1e-6).all() and not disc[below].any()
        emphasised |= bool((weights[disc] > 1).any())
    assert emphasised
    assert "5 times the weight within 2 px of the disc mask as the noisy input shows it" in (out / "README.md").read_text()
    if not crops:
        at = args.index("--region_loss_weight")
        without = args[:at] + args[at + 2 :] + ["--max_train_steps", "8"]  # the last --max_train_steps counts
        with pytest.raises(ValueError, match=r"--region_loss_weight not set \(checkpoint: 4\.0\)"):
            ddpm.train(ddpm.parse_args(without + ["--resume_from_checkpoint", "latest"]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--region_loss_weight", "-1"], "give a weight of at least 0"),
        (["--region_loss_weight", "2", "--masks", "atrophy"], "--masks atrophy has no such channel"),
        (["--region_loss_weight", "2", "--region_loss_mask", "cup"], "weights the cup mask's region"),
        (["--region_loss_mask", "disc"], "add a weight, or leave it out"),
    ],
)
def test_region_weights_that_cannot_work_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "32"] + flags)
    assert message in capsys.readouterr().err
