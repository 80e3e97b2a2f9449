"""Space-to-depth UNets (``small256_s2d``, issue 19): the UNet works on 2 x 2 pixel blocks at half the resolution,
trained and sampled through ``pipeline_fundus.unet_output``; the pipeline records the factor and draws full-size
pairs."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from fundus_diffusion import FundusPipeline
from fundus_diffusion.models import UNET_PRESETS, build_unet
from fundus_diffusion.models.unet import preset_size_multiple, preset_space_to_depth
from fundus_diffusion.pipelines.pipeline_fundus import unet_output
from fundus_diffusion.training import ddpm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_s2d(monkeypatch):
    """The CPU-sized ``tiny`` preset working on 2 x 2 blocks, as ``small256_s2d`` does ``small256``'s lower levels."""
    monkeypatch.setitem(UNET_PRESETS, "tiny_s2d", dict(UNET_PRESETS["tiny"], space_to_depth=2))
    return "tiny_s2d"


def test_the_unet_sees_each_2x2_block_as_channels_of_one_cell_and_its_output_goes_back_to_those_pixels():
    seen = {}

    def echo(sample, timestep, class_labels=None):
        seen["shape"] = tuple(sample.shape)
        return SimpleNamespace(sample=sample * 2)

    x = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    assert torch.equal(unet_output(echo, x, 0, space_to_depth=2), x * 2)
    assert seen["shape"] == (2, 16, 4, 4)
    unet_output(echo, x, 0)
    assert seen["shape"] == (2, 4, 8, 8)


def test_the_s2d_preset_is_small256_without_its_256_px_level():
    s2d, small = UNET_PRESETS["small256_s2d"], UNET_PRESETS["small256"]
    assert list(s2d["channels"]) == list(small["channels"][1:]) and preset_space_to_depth("small256_s2d") == 2
    assert [i + 1 for i in s2d["attention"]] == list(small["attention"])  # attention at the same 16 px maps
    assert preset_size_multiple("small256_s2d") == preset_size_multiple("small256") == 32
    unet = build_unet("small256_s2d", 256, 4)
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.out_channels) == (128, 16, 16)
    costs = runpy.run_path(str(REPO / "benchmarks" / "unet_level_costs.py"))
    flops, _ = costs["level_costs"](unet, 4, 256, space_to_depth=2)
    full, _ = costs["level_costs"](build_unet("small256", 256, 4), 4, 256)
    assert max(flops) == 128 and max(full) == 256 and sum(flops.values()) < 0.6 * sum(full.values())
    _, norm_bytes = costs["level_costs"](unet, 4, 256, space_to_depth=2)
    assert set(norm_bytes) <= set(flops)  # the 16 px attention's GroupNorm ([B, C, 256]) filed at 16 px, not 256


def test_a_pipeline_of_a_space_to_depth_unet_draws_full_size_pairs_and_keeps_its_factor(tmp_path, tiny_s2d):
    torch.manual_seed(0)
    unet = build_unet(tiny_s2d, 16, 4, class_conditional=False)
    pipe = FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=2)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.native_resolution == 16 and unet.config.sample_size == 8
    out = pipe(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 16, 16, 3) and out.masks[0]["disc"].shape == (16, 16)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["space_to_depth"] == 2
    loaded = FundusPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    again = loaded(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert loaded.native_resolution == 16 and (again.images == out.images).all()
    with pytest.raises(ValueError, match="multiples of 8 px; got resolution=20. Fix: 16 or 24"):  # two halvings after the blocks
        pipe(batch_size=1, num_inference_steps=1, resolution=20)
    for wrong in (1, 3):  # 1: the factor left out, as a folder saved without it would load
        with pytest.raises(ValueError, match=r"4 per pixel .* of 2 x 2 pixel blocks, but space_to_depth=.*Fix: space_to_depth=2"):
            FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=wrong)
    for wrong in (0, True):
        with pytest.raises(ValueError, match="whole number of at least 1"):
            FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=wrong)
    odd = UNet2DModel(
        sample_size=8, in_channels=17, out_channels=17, block_out_channels=(8, 8), norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"with 16 input and output channels \(4 per pixel of its 2 x 2 blocks\); this one has 17"):
        FundusPipeline(unet=odd, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=2)


def test_given_masks_are_kept_at_full_resolution_through_the_blocks(tiny_s2d):
    """Images from masks: the given disc comes out exactly as given, pixel for pixel, though the UNet sees blocks."""
    torch.manual_seed(0)
    pipe = FundusPipeline(
        unet=build_unet(tiny_s2d, 16, 4, class_conditional=False), scheduler=DDPMScheduler(num_train_timesteps=10),
        mask_names=["disc"], space_to_depth=2,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    disc = np.zeros((16, 16), dtype=np.uint8)
    disc[5:9, 6:11] = 1  # blocks cut through: rows 5 and 8, column 6 and 10 hold half-covered 2 x 2 blocks
    out = pipe(masks={"disc": disc}, num_inference_steps=3, resample_steps=1, output_type="np")
    assert out.images.shape == (1, 16, 16, 3) and np.array_equal(out.masks[0]["disc"], disc)


def test_fundus_train_ddpm_trains_and_saves_a_space_to_depth_model(tmp_path, tiny_s2d):
    argv = [
        "--model_config", tiny_s2d, "--dataset", "phantom:8", "--resolution", "16", "--train_batch_size", "4",
        "--output_dir", str(tmp_path / "run"), "--training_cache_dir", str(tmp_path / "cache"), "--seed", "0",
        "--max_train_steps", "2", "--num_validation_images", "2", "--validation_inference_steps", "2",
        "--lr_warmup_steps", "0", "--logger", "none", "--checkpointing_steps", "100",
    ]  # fmt: skip
    ddpm.train(ddpm.parse_args(argv))
    index = json.loads((tmp_path / "run" / "model_index.json").read_text())
    config = json.loads((tmp_path / "run" / "unet" / "config.json").read_text())
    assert index["space_to_depth"] == 2 and (config["sample_size"], config["in_channels"]) == (8, 16)
    assert "Resolution: 16 x 16 px" in (tmp_path / "run" / "README.md").read_text()  # the images', not the UNet's 8
    pipe = FundusPipeline.from_pretrained(tmp_path / "run")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 3)


def test_patch_diffusion_and_sizes_the_blocks_do_not_fit_are_refused(tiny_s2d, capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "64", "--model_config", tiny_s2d, "--patch_diffusion"])
    assert "blocks of pixels (space-to-depth)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "20", "--model_config", tiny_s2d])
    assert "takes multiples of 8 px. Fix: use 16 or 24" in capsys.readouterr().err  # two halvings after 2 x 2 blocks
    with pytest.raises(ValueError, match="Patch Diffusion"):
        build_unet(tiny_s2d, 32, 4, coordinate_channels=True)


def test_init_from_a_model_on_other_blocks_names_the_blocks(tmp_path, tiny_s2d):
    unet = build_unet(tiny_s2d, 16, 4, class_conditional=False)
    FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=2).save_pretrained(tmp_path)
    args = ddpm.parse_args(["--output_dir", "x", "--resolution", "16", "--model_config", "tiny", "--masks", "disc"])
    with pytest.raises(ValueError, match=r"2 x 2 pixel blocks \(space_to_depth\), this run's --model_config tiny on 1 x 1"):
        ddpm.load_initial_weights(build_unet("tiny", 16, 4, class_conditional=False), str(tmp_path), args)


def test_a_folder_whose_model_index_lost_the_factor_is_refused_by_name_with_the_factor_to_give(tmp_path, tiny_s2d):
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    unet = build_unet(tiny_s2d, 16, 4, class_conditional=False)
    FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=["disc"], space_to_depth=2).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    del index["space_to_depth"]  # as a package before space-to-depth, or a hand edit, would leave it
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"^{tmp_path}: The UNet's 16 output channels .* Fix: space_to_depth=2"):
        load_fundus_pipeline(str(tmp_path), device="cpu")


def test_the_training_benchmark_counts_a_space_to_depth_preset_through_its_blocks(tiny_s2d):
    """train_ddpm_throughput.py's FLOP count (its MFU's numerator) calls the UNet as training does: on 2 x 2 blocks
    a tiny UNet does about a quarter of the work per image (called on whole pixels it would fail on the channels)."""
    bench = runpy.run_path(str(REPO / "benchmarks" / "train_ddpm_throughput.py"))
    blocks, pixels = (bench["flops_per_image"](p, 32, torch.device("cpu")) for p in (tiny_s2d, "tiny"))
    assert 0.15 * pixels < blocks < 0.5 * pixels
