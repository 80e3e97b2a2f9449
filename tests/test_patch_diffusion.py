"""Patch Diffusion (fundus_diffusion.training.patches): crops with the coordinates of where they lie, the paper's
crop-size schedule, and a model trained on crops that samples whole images with the whole coordinate grid."""

import pytest
import torch
from test_train_ddpm import tiny_args

from fundus_diffusion import FundusPipeline
from fundus_diffusion.pipelines.pipeline_fundus import COORDINATE_CHANNELS, coordinate_channels
from fundus_diffusion.training import ddpm
from fundus_diffusion.training.patches import draw_patch_size, patch_size_probabilities, random_patches


def test_crops_are_the_image_where_their_coordinates_say():
    images = torch.randn(2, 5, 16, 16)
    grid = coordinate_channels(16, 1, "cpu", torch.float32)[0]
    assert grid[0, 3, 0] == -1 and grid[0, 3, 15] == 1 and grid[1, 0, 7] == -1 and grid[1, 15, 7] == 1  # x, y
    torch.manual_seed(0)
    crops, coordinates, source = random_patches(images, 8)
    assert crops.shape == (8, 5, 8, 8) and coordinates.shape == (8, COORDINATE_CHANNELS, 8, 8)
    assert source.tolist() == [0] * 4 + [1] * 4  # (16 / 8) ** 2 crops of each image: the pixels of one step kept
    corners = set()
    for crop, where, image in zip(crops, coordinates, source):
        left, top = (int(round((float(where[c, 0, 0]) + 1) / 2 * 15)) for c in (0, 1))
        corners.add((top, left))
        assert torch.equal(crop, images[image, :, top : top + 8, left : left + 8])  # every channel, masks too
        assert torch.equal(where, grid[:, top : top + 8, left : left + 8])
    assert len(corners) > 1  # drawn at random
    whole, whole_coordinates, whole_source = random_patches(images, 16)
    assert torch.equal(whole, images) and torch.equal(whole_coordinates[1], grid) and whole_source.tolist() == [0, 1]
    with pytest.raises(ValueError, match="does not tile"):
        random_patches(images, 6)


def test_crop_sizes_follow_the_papers_schedule():
    assert patch_size_probabilities(0.5) == pytest.approx((0.2, 0.3, 0.5))
    torch.manual_seed(0)
    drawn = [draw_patch_size(256, 0.5) for _ in range(4000)]
    shares = [drawn.count(size) / len(drawn) for size in (64, 128, 256)]
    assert shares == pytest.approx([0.2, 0.3, 0.5], abs=0.03)
    assert {draw_patch_size(256, 1.0) for _ in range(50)} == {256}
    assert 256 not in {draw_patch_size(256, 0.0) for _ in range(200)}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        patch_size_probabilities(1.5)


def test_a_model_trained_on_crops_samples_whole_images_with_the_whole_grid(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = tiny_args(out, cache, "--resolution", "32", "--max_train_steps", "3", "--logger", "none", "--patch_diffusion",
                     "--patch_full_share", "0", "--rotation_conditioning_prob", "0.5")  # fmt: skip
    ddpm.train(ddpm.parse_args(args))
    pipe = FundusPipeline.from_pretrained(out)
    channels = pipe.unet.config.out_channels
    assert pipe.unet.config.in_channels == channels + COORDINATE_CHANNELS
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    result = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert result.images[0].size == (32, 32) and len(seen) == 2
    assert all(torch.equal(x[:, channels:], coordinate_channels(32, 2, "cpu", x.dtype)) for x in seen)
    card = (out / "README.md").read_text()
    assert "0 of the steps on whole images, 0.4 on 8 px and 0.6 on 16 px crops with coordinate channels" in card

    # The coordinate channels are part of the model: a resume without the flag is refused before anything loads.
    more = tiny_args(out, cache, "--resolution", "32", "--max_train_steps", "4", "--logger", "none",
                     "--rotation_conditioning_prob", "0.5", "--resume_from_checkpoint", "latest")  # fmt: skip
    with pytest.raises(ValueError, match=r"without --patch_diffusion \(checkpoint: with it\)"):
        ddpm.train(ddpm.parse_args(more))
    with pytest.raises(ValueError, match=r"--patch_full_share 0.3 \(checkpoint: 0.0\)"):  # the card's schedule holds
        ddpm.train(ddpm.parse_args(more + ["--patch_diffusion", "--patch_full_share", "0.3"]))


def test_crops_that_the_unet_cannot_take_are_refused(capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "24", "--model_config", "tiny", "--patch_diffusion"])
    assert "--resolution 24 is not a multiple of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--patch_full_share", "0.3"])
    assert "--patch_full_share sets Patch Diffusion's crop schedule: add --patch_diffusion" in capsys.readouterr().err
