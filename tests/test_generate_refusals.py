"""fundus-generate refuses before it writes: every setting the pipeline would refuse at the first batch is refused
before the output folder exists, in one line naming the flag and its fix; a folder whose run finished no shard yet
(nothing to lose) is started over by a rerun, one with a finished shard is still refused; a missing extra is
one line, not a traceback."""

import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from fundus_diffusion import FundusPipeline
from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.generate import (
    GenerationConfig,
    check_resume,
    draws_noise_on_device,
    exclusive_writer,
    generate_dataset,
    interleave_labels,
    prepare_pipeline,
    read_mask_sets,
    regenerate,
)
from fundus_diffusion.pipelines.loading import SCHEDULERS, load_fundus_pipeline

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_generate import Interrupted, InterruptingPipeline, models  # noqa: E402, F401


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
    """A tiny DDPM (disc + atrophy) trained without classes, saved."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=5, out_channels=5, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("unconditional") / "uncond"
    FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=["disc", "atrophy"]).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def mask_sets_dir(tmp_path_factory):
    """Two 8 px disc masks in the --masks_from layout."""
    root = tmp_path_factory.mktemp("given")
    (root / "masks" / "disc").mkdir(parents=True)
    disc = np.zeros((8, 8), np.uint8)
    disc[2:6, 3:7] = 255
    for name in ("a", "b"):
        Image.fromarray(disc).save(root / "masks" / "disc" / f"{name}.png")
    return str(root)


def run_script(monkeypatch, *argv):
    """scripts/generate.py as the command runs it; returns its exit code (0: finished) and stderr's last line."""
    monkeypatch.setattr(sys, "argv", ["generate.py", *argv, "--device", "cpu", "--num_inference_steps", "2"])
    try:
        runpy.run_path(str(REPO / "scripts" / "generate.py"), run_name="__main__")
    except SystemExit as exit_info:
        return exit_info.code
    return 0


REFUSALS = {  # model, flags, what the one line must say
    "guidance, unconditional model": (
        "uncond", ["--num_samples", "2", "--guidance_scale", "2"],
        ["--guidance_scale 2: this model is unconditional (no classes), so there is nothing to guide towards",
         "Fix: leave --guidance_scale out"],
    ),
    "guidance without labels": (
        "ddpm", ["--num_samples", "2", "--guidance_scale", "2"],
        ["--guidance_scale 2 guides each sample towards its class, and no --labels were given",
         "Fix: add --labels", "--labels non-PM=10,PM=10"],
    ),
    "labels, unconditional model": (
        "uncond", ["--labels", "PM=2"], ["--labels needs a class-conditional model", "Fix: leave --labels out"],
    ),
    "resampling with a multistep solver": (
        "ddpm", ["--masks_from", "GIVEN", "--scheduler", "dpmsolver++", "--resample_steps", "2"],
        ["--resample_steps 2 needs a scheduler without solver state",
         "--scheduler dpmsolver++ (DPMSolverMultistepScheduler) keeps some", "Fix: add --scheduler ddpm"],
    ),
    "cup post-processing for a model without a cup": (
        "ddpm", ["--num_samples", "2", "--postprocess", "cup_in_disc"],
        ["--postprocess cup_in_disc works on the cup and disc masks, and this model draws", "Fix: leave cup_in_disc out"],
    ),
    "negative resampling": ("uncond", ["--masks_from", "GIVEN", "--resample_steps", "-1"], ["--resample_steps -1: give 0"]),
    "labels that miss the count": (
        "ddpm", ["--num_samples", "8", "--labels", "PM=3,non-PM=4"], ["add up to 7, not --num_samples 8", "Fix: leave --num_samples out"],
    ),
    "no samples": ("ddpm", ["--num_samples", "0"], ["--num_samples (or the sum of --labels) is 0", "Fix: give a whole number"]),
    "batches of none": ("ddpm", ["--num_samples", "2", "--batch_size", "0"], ["--batch_size is 0", "Fix: give a whole number"]),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_before_anything_is_written_naming_the_flag_and_the_fix(
    case, models, unconditional, mask_sets_dir, tmp_path, monkeypatch, capsys  # noqa: F811
):
    model, flags, expected = REFUSALS[case]
    model = unconditional if model == "uncond" else models[model]
    flags = [mask_sets_dir if flag == "GIVEN" else flag for flag in flags]
    out = tmp_path / "out"
    assert run_script(monkeypatch, "--model", model, "--output_dir", str(out), *flags) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("generate.py: error: "))
    for part in expected:
        assert part in line
    assert "pipe.scheduler" not in line and "class_labels" not in line  # the flags' fix, not the pipeline's Python
    assert not out.exists()  # nothing written: the corrected command runs in the same folder
    if case == "resampling with a multistep solver":  # the fix works there
        assert run_script(monkeypatch, "--model", model, "--output_dir", str(out), "--masks_from", mask_sets_dir,
                          "--scheduler", "ddpm", "--resample_steps", "2") == 0  # fmt: skip
        assert len(load_fundus_dataset(str(out))) == 2


def test_postprocessing_without_scipy_is_refused_before_anything_is_written(models, tmp_path, monkeypatch):  # noqa: F811
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else find_spec(name, *a))
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=2, num_inference_steps=2, postprocess=["fill_holes"], device="cpu")
    with pytest.raises(ValueError, match=r"--postprocess fill_holes needs scipy.*fundus-diffusion\[eval\]"):
        generate_dataset(pipe, config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def leftover_of_a_first_batch_failure(pipe, config: GenerationConfig, folder: Path) -> None:
    """What a run stopped at its first batch leaves (as an earlier release's refusal there did): its settings, an
    unfinished shard and, with --png, no finished shard's files."""
    with pytest.raises(Interrupted):
        generate_dataset(InterruptingPipeline(pipe, calls=0), config, str(folder))
    (folder / "png" / "images").mkdir(parents=True)
    (folder / "png" / "images" / "000000.png").write_bytes(b"a sample of the old settings")
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["shard-00000.arrow.tmp"]


def test_a_rerun_with_other_settings_starts_a_run_that_finished_no_shard_over(models, tmp_path, caplog):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=3, num_inference_steps=2, shard_size=2, batch_size=2, device="cpu")
    out = tmp_path / "run"
    leftover_of_a_first_batch_failure(pipe, replace(config, seed=7, png=True), out)

    with caplog.at_level(logging.INFO, logger="fundus_diffusion.generate"):
        dataset = generate_dataset(pipe, config, str(out))  # a plain rerun, other settings, no --resume
    assert "finished no shard yet (nothing to lose): starting it over" in caplog.text and "seed 7 -> 0" in caplog.text
    fresh = generate_dataset(pipe, config, str(tmp_path / "fresh"))
    assert dataset["seed"] == fresh["seed"] == [0, 1, 2]
    assert [np.asarray(im).tobytes() for im in dataset["image"]] == [np.asarray(im).tobytes() for im in fresh["image"]]
    assert json.loads((out / "generation_config.json").read_text())["seed"] == 0
    assert not (out / "png").exists()  # the old run's PNGs went with it

    again = tmp_path / "resumed"  # --resume with other settings: nothing to keep either
    leftover_of_a_first_batch_failure(pipe, replace(config, seed=7), again)
    assert generate_dataset(pipe, config, str(again), resume=True)["seed"] == [0, 1, 2]


def test_a_command_running_in_the_folder_is_not_started_over_under_it(models, tmp_path):  # noqa: F811
    # A first command holds the folder (exclusive_writer) while its first shard is being drawn: a second one with
    # other settings would start that run over and delete its files; it is refused and changes nothing.
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=3, num_inference_steps=2, shard_size=2, batch_size=2, device="cpu")
    out = tmp_path / "run"
    leftover_of_a_first_batch_failure(pipe, replace(config, seed=7, png=True), out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    with exclusive_writer(str(out)):  # the first command, still running
        for resume in (False, True):
            with pytest.raises(FileExistsError, match="another command is generating into it now"):
                generate_dataset(pipe, config, str(out), resume=resume)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert json.loads((out / "generation_config.json").read_text())["seed"] == 7
    assert generate_dataset(pipe, config, str(out))["seed"] == [0, 1, 2]  # once it has ended, the rerun proceeds


def test_a_run_whose_pngs_are_all_written_is_not_started_over(models, tmp_path):  # noqa: F811
    # A finished --png run kept as its PNG folder only (the arrow dataset removed): png/metadata.csv says it is whole.
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=2, num_inference_steps=2, png=True, device="cpu")
    out = tmp_path / "run"
    generate_dataset(pipe, config, str(out))
    with pytest.raises(FileExistsError, match="already holds a finished synthetic set. Fix: choose another --output_dir"):
        generate_dataset(pipe, config, str(out))  # no --resume advice for a set that is complete
    for name in os.listdir(out):
        if name not in ("png", "generation_config.json"):
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    image = (out / "png" / "images" / "000000.png").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a generation run"):
        generate_dataset(pipe, replace(config, seed=7), str(out))
    assert (out / "png" / "images" / "000000.png").read_bytes() == image


def test_the_script_reruns_in_the_folder_a_first_batch_failure_left(models, tmp_path, monkeypatch, caplog):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    out = tmp_path / "run"
    leftover_of_a_first_batch_failure(pipe, GenerationConfig(model=models["ddpm"], num_samples=2, seed=7), out)
    with caplog.at_level(logging.INFO, logger="fundus_diffusion.generate"):
        assert run_script(monkeypatch, "--model", models["ddpm"], "--num_samples", "2", "--output_dir", str(out)) == 0
    assert len(load_fundus_dataset(str(out))) == 2 and "starting it over" in caplog.text


def test_a_folder_with_a_finished_shard_is_still_refused(models, tmp_path):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=5, num_inference_steps=2, shard_size=2, batch_size=2, device="cpu")
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        generate_dataset(InterruptingPipeline(pipe, calls=2), config, str(out))  # shard 0 finished, 1 not
    assert (out / "shards" / "shard-00000.arrow").exists()
    other = replace(config, seed=7)
    with pytest.raises(FileExistsError, match="already holds a generation run; pass --resume"):
        generate_dataset(pipe, other, str(out))
    with pytest.raises(ValueError, match=r"--resume with other settings.*seed 0 \(now 7\)"):
        generate_dataset(pipe, other, str(out), resume=True)
    assert (out / "shards" / "shard-00000.arrow").exists()  # kept
    assert generate_dataset(pipe, config, str(out), resume=True)["seed"] == [0, 1, 2, 3, 4]


def test_a_resume_with_the_labels_in_another_order_is_refused_naming_both(models, tmp_path):  # noqa: F811
    """interleave_labels breaks ties between classes by their order: PM=3,non-PM=3 and non-PM=3,PM=3 label the
    samples differently, so a resume with the other order would change the labels mid-dataset."""
    assert interleave_labels({"PM": 3, "non-PM": 3}) != interleave_labels({"non-PM": 3, "PM": 3})
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(
        model=models["ddpm"], num_samples=6, labels={"PM": 3, "non-PM": 3}, num_inference_steps=2, shard_size=2,
        batch_size=2, device="cpu",
    )  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        generate_dataset(InterruptingPipeline(pipe, calls=2), config, str(out))  # shard 0 finished
    reordered = replace(config, labels={"non-PM": 3, "PM": 3})
    refusal = (
        r"--labels non-PM=3,PM=3 lists the classes in another order than the run's --labels PM=3,non-PM=3: "
        r"interleave_labels breaks ties .* Fix: --labels PM=3,non-PM=3\."
    )
    with pytest.raises(ValueError, match=refusal):
        check_resume(str(out), reordered, resume=True, model_loaded=False)  # the script's check, before loading
    with pytest.raises(ValueError, match=refusal):
        generate_dataset(pipe, reordered, str(out), resume=True)
    # Several differences: one fix gives all of the run's settings back.
    with pytest.raises(ValueError, match=r"Fix for every difference at once: --resume --labels PM=3,non-PM=3 --batch_size 2 "):
        check_resume(str(out), replace(reordered, batch_size=3), resume=True, model_loaded=False)
    assert generate_dataset(pipe, config, str(out), resume=True)["label"] == [1, 0, 1, 0, 1, 0]


def test_samplers_that_draw_noise_on_the_device_resume_only_on_its_type(models, tmp_path):  # noqa: F811
    """Stochastic samplers (and every sampler with --masks_from) draw their later noise from generators seeded on
    the sampling device: a run resumed on another device type would mix two noise streams. On the CPU, the recorded
    device type is faked."""
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(
        model=models["ddpm"], num_samples=5, scheduler="ddpm", num_inference_steps=2, shard_size=2, batch_size=2,
        device="cpu",
    )  # fmt: skip
    noisy = {name for name in SCHEDULERS if draws_noise_on_device(pipe, prepare_pipeline(pipe, replace(config, scheduler=name)))}
    assert noisy == {"ddpm", "sde-dpmsolver++", "euler_ancestral"}
    assert draws_noise_on_device(pipe, prepare_pipeline(pipe, replace(config, scheduler="ddim", masks_from="given")))

    def interrupted_run_recorded_on(device_type, config, folder):
        with pytest.raises(Interrupted):
            generate_dataset(InterruptingPipeline(pipe, calls=2), config, str(folder))  # shard 0 finished
        recorded = json.loads((folder / "generation_config.json").read_text())
        assert recorded["device_type"] == "cpu"  # the type the pipeline sampled on
        if device_type is None:  # as recorded by a release before this one
            del recorded["device_type"]
        else:
            recorded["device_type"] = device_type
        (folder / "generation_config.json").write_text(json.dumps(recorded))
        return recorded

    recorded = interrupted_run_recorded_on("cuda", config, tmp_path / "ddpm")
    refusal = (
        r"device_type cuda \(now cpu\)\. The run sampled on cuda with a sampler that draws noise at every step from "
        r"generators seeded on the sampling device \(--scheduler ddpm\): on cpu the samples still to draw would come "
        r"from another noise stream\. Fix: resume on a cuda device \(--device cuda\)"
    )
    with pytest.raises(ValueError, match=refusal):
        generate_dataset(pipe, config, str(tmp_path / "ddpm"), resume=True)
    with pytest.raises(ValueError, match=r"drawn on cuda .* samples on cpu.*Fix: move the pipeline to a cuda device"):
        regenerate(pipe, GenerationConfig(**recorded), 0)

    deterministic = replace(config, scheduler="ddim")  # its samples differ between device types by rounding only
    interrupted_run_recorded_on("cuda", deterministic, tmp_path / "ddim")
    assert len(generate_dataset(pipe, deterministic, str(tmp_path / "ddim"), resume=True)) == 5
    assert "| device type | cpu |" in (tmp_path / "ddim" / "README.md").read_text()

    interrupted_run_recorded_on(None, config, tmp_path / "before")  # nothing recorded to compare with
    assert len(generate_dataset(pipe, config, str(tmp_path / "before"), resume=True)) == 5
    card = (tmp_path / "before" / "README.md").read_text()
    assert "| device type | cpu (sampling drew noise at every step from generators seeded on this device: the samples are reproducible on this device type only) |" in card
    assert 'device="cpu"' in card.split("## Regenerate one sample")[1]


@pytest.mark.parametrize(
    "size, says, not_says",
    [
        ((16, 8), ["is 16x8 px; the model generates 8x8 px", "A resize cannot make it fit", "stretches it",
                   "fundus-export-dataset --dataset <it> --format imagefolder --resolution 8"], "Fix: resize"),
        ((16, 16), ["is 16x16 px; the model generates 8x8 px", "Fix: if the masks are cropped as training cropped",
                    "resize them to 8x8 with nearest-neighbour", "--resolution 8 --masks <the model's masks>"], "A resize cannot"),
    ],
)  # fmt: skip
def test_masks_of_another_size_are_told_how_training_framed_them(models, tmp_path, size, says, not_says):  # noqa: F811
    (tmp_path / "masks" / "disc").mkdir(parents=True)
    Image.new("L", size).save(tmp_path / "masks" / "disc" / "a.png")
    with pytest.raises(ValueError) as err:
        read_mask_sets(str(tmp_path)).check(["disc", "atrophy"], 8)
    message = str(err.value)
    assert all(part in message for part in says) and not_says not in message


@pytest.mark.parametrize(
    "command, package, extra",
    [("generate", "accelerate", "train"), ("generate", "datasets", "train"), ("evaluate", "accelerate", "train"),
     ("evaluate", "torchmetrics", "eval"), ("train_ddpm", "ema_pytorch", "train"), ("build_dataset", "accelerate", "train")],
)  # fmt: skip
def test_a_command_without_its_extra_says_what_to_install(command, package, extra):
    """A fresh interpreter in which ``package`` cannot be imported (as on an install without that extra), the command
    run as its console script runs it, with --help."""
    name = "fundus-" + command.replace("_", "-")
    code = (
        f"import sys; sys.modules[{package!r}] = None; sys.argv = [{name!r}, '--help']; "
        f"from fundus_diffusion.scripts import {command}_command; {command}_command()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"{name}: error: this command needs the package {package!r} (the {extra} extra), which is not installed. "
        'Fix: pip install "fundus-diffusion[train,eval]" (from a checkout: pip install ".[train,eval]").'
    )


def test_a_gan_refuses_guidance_instead_of_ignoring_it(models, tmp_path):  # noqa: F811
    gan = load_fundus_pipeline(models["gan"], device="cpu")
    with pytest.raises(ValueError, match=r"--guidance_scale 3: a GAN draws each sample in one pass, with no guidance"):
        generate_dataset(gan, GenerationConfig(model=models["gan"], num_samples=2, guidance_scale=3.0, device="cpu"), str(tmp_path / "g"))
    assert not (tmp_path / "g").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_a_cuda_device_without_cuda_is_one_clear_error(models):  # noqa: F811
    with pytest.raises(ValueError, match=r"device 'cuda': this torch sees no CUDA device.*Fix: --device cpu"):
        load_fundus_pipeline(models["ddpm"], device="cuda")


def test_recorded_settings_become_the_flags_that_give_them_back():
    from fundus_diffusion.generate import as_flag

    assert as_flag("labels", {"PM": 2, "non-PM": 1}) == "--labels PM=2,non-PM=1" and as_flag("labels", {}) == ""
    assert as_flag("postprocess", ["binarize", "largest_disc"]) == "--postprocess binarize,largest_disc"
    assert as_flag("png", True) == "--png" and as_flag("png", False) == "" and as_flag("masks_from", None) == ""
    assert as_flag("batch_size", 4) == "--batch_size 4"


def test_a_run_killed_while_laying_out_its_files_is_resumable_not_finished(models, tmp_path, monkeypatch):  # noqa: F811
    """The card is written before the Hub layout's parquet files: a run stopped between them is not finished."""
    from fundus_diffusion import export

    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = GenerationConfig(model=models["ddpm"], num_samples=2, num_inference_steps=2, device="cpu")
    out = tmp_path / "run"

    def killed(folder, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(export, "write_hub_layout", killed)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(pipe, config, str(out))
    assert (out / "README.md").exists()
    with pytest.raises(FileExistsError, match="already holds a generation run; pass --resume"):
        generate_dataset(pipe, config, str(out))
    generate_dataset(pipe, config, str(out), resume=True)
    assert len(load_fundus_dataset(str(out))) == 2 and (out / "data").is_dir()


def test_post_processing_for_a_model_without_masks_is_refused(tmp_path):
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=[]).save_pretrained(tmp_path / "images")
    pipe = load_fundus_pipeline(str(tmp_path / "images"), device="cpu")
    config = GenerationConfig(model=str(tmp_path / "images"), num_samples=2, postprocess=["fill_holes"], device="cpu")
    with pytest.raises(ValueError, match="--postprocess fill_holes works on masks, and this model draws images only"):
        generate_dataset(pipe, config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
