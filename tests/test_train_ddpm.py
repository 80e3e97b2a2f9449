import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from safetensors.torch import load_file

from fundus_diffusion import FundusPipeline
from fundus_diffusion.training import NonFiniteLossError, ddpm, list_checkpoints

REPO = Path(__file__).resolve().parents[1]


def tiny_args(output_dir, cache_dir, *extra):
    return [
        "--model_config", "tiny", "--dataset", "phantom:8", "--resolution", "16", "--train_batch_size", "4",
        "--output_dir", str(output_dir), "--training_cache_dir", str(cache_dir), "--seed", "0", "--logging_steps", "1",
        "--num_validation_images", "2", "--validation_inference_steps", "2", "--lr_warmup_steps", "0",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fundus-cache")


def run_subprocess(argv, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return result


def steps(output_dir):
    return [s for s, _ in list_checkpoints(str(output_dir))]


def logged(output_dir, column):
    with open(Path(output_dir) / "logs" / "metrics.csv", newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_an_unseeded_run_says_so_on_its_card(tmp_path, cache_dir):
    argv = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "1")
    del argv[argv.index("--seed") : argv.index("--seed") + 2]
    ddpm.train(ddpm.parse_args(argv + ["--logger", "none", "--validation_steps", "100", "--checkpointing_steps", "100"]))
    assert json.loads((tmp_path / "run" / "model_index.json").read_text())["training_info"]["seed"] == "not set (not reproducible)"
    assert "not set (not reproducible)" in (tmp_path / "run" / "README.md").read_text()


def test_no_random_flip_is_recorded_on_the_card(tmp_path, cache_dir):
    argv = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "1", "--no-random_flip")
    ddpm.train(ddpm.parse_args(argv + ["--logger", "none", "--validation_steps", "100", "--checkpointing_steps", "100"]))
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["random_flip"] is False
    assert "--no-random_flip" in json.loads((tmp_path / "run" / "model_index.json").read_text())["training_info"]["left-right flips"]
    assert "--no-random_flip" in (tmp_path / "run" / "README.md").read_text()
    assert ddpm.parse_args(["--output_dir", "x"]).random_flip is True  # flips stay the default
    # the checkpoint records it: a resume that changes what the model trains on is refused
    run = tiny_args(tmp_path / "flipped", cache_dir, "--max_train_steps", "1", "--checkpointing_steps", "1", "--logger", "none")
    ddpm.train(ddpm.parse_args(run + ["--validation_steps", "100"]))
    resume = run[: run.index("--max_train_steps")] + ["--max_train_steps", "2", "--logger", "none", "--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match=r"without --random_flip \(checkpoint: with it\)"):
        ddpm.train(ddpm.parse_args(resume + ["--no-random_flip"]))


def test_antialiased_masks_train_grey_edges_and_are_kept_on_resume(tmp_path, cache_dir):
    """--antialiased_masks frames the masks with grey edges (a view of its own in the cache), the card says so, and
    a resume without it is refused like any change of what the model trains on."""
    from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset

    phantoms = load_phantom_dataset(4, size=64, seed=1)
    plain = FundusTrainingView(phantoms, 16, ("disc",), cache_dir=str(cache_dir))
    grey = FundusTrainingView(phantoms, 16, ("disc",), cache_dir=str(cache_dir), antialiased_masks=True)
    assert plain.cache_path != grey.cache_path
    plain_disc, grey_disc = plain[0]["pixel_values"][3], grey[0]["pixel_values"][3]
    assert set(plain_disc.unique().tolist()) == {-1.0, 1.0} and len(grey_disc.unique()) > 2  # grey levels on the rim
    assert ((grey_disc > 0) != (plain_disc > 0)).float().mean() < 0.05  # read back as channel > 0: the same disc
    run = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "1", "--checkpointing_steps", "1", "--antialiased_masks")
    ddpm.train(ddpm.parse_args(run + ["--logger", "none", "--validation_steps", "100"]))
    assert "--antialiased_masks" in (tmp_path / "run" / "README.md").read_text()
    resume = [a for a in run if a != "--antialiased_masks"]
    resume[resume.index("--max_train_steps") + 1] = "2"
    with pytest.raises(ValueError, match=r"antialiased_masks"):
        ddpm.train(ddpm.parse_args(resume + ["--logger", "none", "--validation_steps", "100", "--resume_from_checkpoint", "latest"]))
    # a checkpoint from before the flag existed trained without it: resumed with it, refused too
    from fundus_diffusion.training.checkpointing import MANIFEST_FILE, STATE_FILE

    old = [a if a != str(tmp_path / "run") else str(tmp_path / "old") for a in resume]
    old[old.index("--max_train_steps") + 1] = "1"
    ddpm.train(ddpm.parse_args(old + ["--logger", "none", "--validation_steps", "100"]))
    (state_file,) = (tmp_path / "old").glob(f"checkpoint-*/{STATE_FILE}")
    state = json.loads(state_file.read_text())
    del state["settings"]["antialiased_masks"]
    state_file.write_text(json.dumps(state))
    (state_file.parent / MANIFEST_FILE).unlink()  # an older checkpoint's form: verified by structure, not checksums
    old[old.index("--max_train_steps") + 1] = "2"
    with pytest.raises(ValueError, match=r"antialiased_masks"):
        ddpm.train(ddpm.parse_args(old + ["--antialiased_masks", "--logger", "none", "--validation_steps", "100", "--resume_from_checkpoint", "latest"]))


def test_presets_and_schedule_facts():
    paper = ddpm.parse_args(["--preset", "paper", "--output_dir", "x"])
    assert (paper.resolution, paper.train_batch_size, paper.num_train_timesteps) == (64, 8, 300)
    assert (paper.beta_start, paper.beta_end, paper.ema_max_decay, paper.learning_rate) == (1e-4, 0.02, 0.995, 3e-4)
    assert paper.model_config == "paper" and paper.prediction_type == "epsilon"
    assert ddpm.final_alpha_bar(ddpm.make_noise_scheduler(paper)) == pytest.approx(0.048, abs=1e-3)
    ours = ddpm.parse_args(["--output_dir", "x", "--resolution", "64", "--learning_rate", "2e-4"])
    assert ours.learning_rate == 2e-4 and ours.model_config == "base64" and ours.prediction_type == "v_prediction"
    assert ddpm.final_alpha_bar(ddpm.make_noise_scheduler(ours)) < 1e-8
    assert (ours.schedule_base_resolution, ours.snr_gamma) == (64, 5.0)  # the 256 px recipe of RESULTS.md, session 5
    at_256 = ddpm.parse_args(["--output_dir", "x"])  # the measured recipe: small256, 10,000 steps of 16 on 134 images
    assert (at_256.resolution, at_256.model_config, at_256.train_batch_size, at_256.num_epochs) == (256, "small256", 16, 1250)
    demo = ddpm.parse_args(["--preset", "demo", "--output_dir", "x"])
    assert (demo.schedule_base_resolution, demo.snr_gamma) == (None, None)
    assert ddpm.parse_args(["--output_dir", "x", "--snr_gamma", "0"]).snr_gamma is None  # ours without min-SNR
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--snr_gamma", "-1"])
    assert (demo.model_config, demo.resolution, demo.dataset, demo.max_train_steps) == ("tiny", 32, "phantom:64", 500)
    assert demo.mask_names == ("disc", "atrophy") and demo.beta_schedule == ours.beta_schedule


def test_the_training_cache_flag_is_not_diffusers_cache_dir_and_the_old_spelling_still_works(capsys):
    # diffusers' --cache_dir is the Hub download cache; ours caches the preprocessed training arrays, so it has its own
    # name, and the previous release's --cache_dir sets it for one release with a warning.
    assert ddpm.parse_args(["--output_dir", "x", "--training_cache_dir", "c"]).training_cache_dir == "c"
    assert "deprecated" not in capsys.readouterr().err
    assert ddpm.parse_args(["--output_dir", "x", "--cache_dir", "c"]).training_cache_dir == "c"
    # once, though the ours preset reads the flags first (a function of them)
    assert capsys.readouterr().err.count("--cache_dir is deprecated; use --training_cache_dir") == 1


def test_cuda_graphs_refuse_gradient_accumulation(capsys):
    graphs = ["--output_dir", "x", "--compile", "--compile_mode", "reduce-overhead"]
    assert ddpm.parse_args(graphs).compile_mode == "reduce-overhead"
    with pytest.raises(SystemExit):
        ddpm.parse_args(graphs + ["--gradient_accumulation_steps", "2"])
    assert "cannot accumulate gradients" in capsys.readouterr().err


@pytest.mark.parametrize(
    "masks, message",
    [("Disc", "'Disc' is not a valid mask name"), ("disc,disc", "disc given more than once"), ("", "--masks is empty")],
)
def test_mask_names_that_cannot_work_are_one_line_usage_errors(masks, message, capsys):
    from fundus_diffusion.training import dcgan

    for parse, preset in ((ddpm.parse_args, []), (dcgan.parse_args, []), (dcgan.parse_args, ["--preset", "paper"])):
        with pytest.raises(SystemExit) as exit_info:  # both trainers share the parse; the paper preset reads the masks
            parse(["--output_dir", "x", "--masks", masks, *preset])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_help_shows_the_defaults_a_preset_computes_from_the_flags(capsys):
    from fundus_diffusion.training import dcgan

    with pytest.raises(SystemExit):
        dcgan.parse_args(["--preset", "paper", "--masks", "disc,atrophy", "--help"])  # 130 epochs for two masks
    assert "--num_epochs NUM_EPOCHS (default: 130)" in " ".join(capsys.readouterr().out.split())


def test_accelerate_launch_rotates_checkpoints_then_resume_continues(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    result = run_subprocess(
        launch
        + ["scripts/train_ddpm.py"]
        + tiny_args(out, cache_dir, "--max_train_steps", "4", "--checkpointing_steps", "1")
        + ["--checkpoints_total_limit", "2", "--validation_steps", "4", "--masks", "disc,atrophy"]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert steps(out) == [3, 4]
    assert (out / "validation" / "step-0000004.png").exists()
    assert any(name.startswith("events.out.tfevents") for _, _, names in os.walk(out / "logs") for name in names)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists() and (out / "README.md").exists()
    assert json.loads((out / "model_index.json").read_text())["training_info"]["steps"] == 4

    # Resume in-process: the step count, optimizer, LR schedule and EMA continue from checkpoint-4.
    pushed = []
    monkeypatch.setattr("fundus_diffusion.hub.push_folder", lambda *args, **kwargs: pushed.append((args, kwargs)))
    resume = ["--resume_from_checkpoint", "latest", "--push_to_hub", "--hub_model_id", "me/tiny-fundus"]
    more = ["--checkpointing_steps", "1", "--checkpoints_total_limit", "2", "--validation_steps", "100"]
    ddpm.train(
        ddpm.parse_args(
            tiny_args(out, cache_dir, "--max_train_steps", "6", *more, "--logger", "none", "--masks", "disc,atrophy")
            + resume
        )
    )
    assert pushed == [((str(out), "me/tiny-fundus"), {"token": None, "private": False})]
    assert steps(out) == [5, 6]
    assert logged(out, "step") == [1, 2, 3, 4, 5, 6]  # one CSV row per step across the resume, none twice
    ema_state = load_file(out / "checkpoint-6" / "ema.safetensors")  # safetensors, not a pickle
    assert int(ema_state["step"]) == 6  # the EMA saw every step, none twice
    pipe = FundusPipeline.from_pretrained(out)
    assert pipe.config.mask_names == ["disc", "atrophy"] and pipe.config.training_info["steps"] == 6

    # Resuming with other model or optimiser flags names them before anything is loaded, whether or not the weights would fit
    # (other masks would not; another dropout or noise schedule would, and silently train another model); nothing is lost.
    for changed, named in [
        (["--masks", "disc"], r"--masks disc \(checkpoint: disc,atrophy\)"),
        (["--dropout", "0.3"], r"--dropout 0.3 \(checkpoint: 0.0\)"),  # the tiny UNet's own dropout
        (["--prediction_type", "epsilon"], r"--prediction_type epsilon \(checkpoint: v_prediction\)"),
        (["--schedule_detail_resolution", "128"], r"--schedule_detail_resolution 128 \(checkpoint: 64\)"),  # the constant shift
        (["--learning_rate", "1e-5"], r"--learning_rate 1e-05 \(checkpoint: [0-9.e-]+\)"),  # the optimiser's state wins
        (["--snr_gamma", "0"], r"--snr_gamma not set \(checkpoint: 5\.0\)"),  # the card states the loss for the run
    ]:  # fmt: skip
        other = tiny_args(out, cache_dir, "--max_train_steps", "8", *more, "--logger", "none", "--masks", "disc,atrophy")
        with pytest.raises(ValueError, match=rf"checkpoint-6 was trained with other model, optimiser or loss flags than these: {named}\.") as refused:
            ddpm.train(ddpm.parse_args(other + changed + ["--resume_from_checkpoint", "latest"]))
        assert "mask_names" not in str(refused.value) and "training_cache_dir" not in str(refused.value)  # model flags only
    assert steps(out) == [5, 6] and logged(out, "step") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("data_on_device", ["no", "yes"])  # a DataLoader, or the whole set as one device tensor
def test_resume_reproduces_an_uninterrupted_run(tmp_path, cache_dir, data_on_device):
    common = ["--checkpointing_steps", "2", "--validation_steps", "100", "--logger", "none"]
    common += ["--data_on_device", data_on_device]
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "straight", cache_dir, "--max_train_steps", "4", *common)))
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "split", cache_dir, "--max_train_steps", "2", *common)))
    ddpm.train(
        ddpm.parse_args(
            tiny_args(
                tmp_path / "split", cache_dir, "--max_train_steps", "4", "--resume_from_checkpoint", "latest", *common
            )
        )
    )
    assert logged(tmp_path / "split", "step") == [1, 2, 3, 4]
    torch.testing.assert_close(logged(tmp_path / "split", "loss"), logged(tmp_path / "straight", "loss"))
    torch.testing.assert_close(logged(tmp_path / "split", "grad_norm"), logged(tmp_path / "straight", "grad_norm"))
    assert all(norm > 0 for norm in logged(tmp_path / "straight", "grad_norm"))
    straight = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    split = load_file(tmp_path / "split" / "unet" / "diffusion_pytorch_model.safetensors")
    assert straight.keys() == split.keys()
    for key in straight:
        torch.testing.assert_close(split[key], straight[key], rtol=0, atol=1e-6)


def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path, cache_dir):
    out = tmp_path / "run"
    # Kill the process with SIGKILL after accelerate has written the second checkpoint, before it is renamed.
    script = (
        "import os, signal, sys\n"
        "from accelerate import Accelerator\n"
        "from fundus_diffusion.training import ddpm\n"
        "save_state = Accelerator.save_state\n"
        "def save_then_die(self, output_dir=None, **kwargs):\n"
        "    save_state(self, output_dir, **kwargs)\n"
        "    if output_dir.endswith('checkpoint-2'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "Accelerator.save_state = save_then_die\n"
        "ddpm.train(ddpm.parse_args(sys.argv[1:]))\n"
    )
    common = ["--checkpointing_steps", "1", "--validation_steps", "100", "--logger", "none"]
    result = run_subprocess(
        [sys.executable, "-c", script] + tiny_args(out, cache_dir, "--max_train_steps", "3", *common)
    )
    assert result.returncode == -9, result.stderr[-4000:]
    assert steps(out) == [1] and (out / ".tmp-checkpoint-2" / "model.safetensors").exists()
    assert not (out / "model_index.json").exists()

    with pytest.raises(FileExistsError, match="resume_from_checkpoint latest"):
        ddpm.train(ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "3", *common)))
    ddpm.train(
        ddpm.parse_args(
            tiny_args(out, cache_dir, "--max_train_steps", "3", "--resume_from_checkpoint", "latest", *common)
        )
    )
    assert steps(out) == [1, 2, 3] and not (out / ".tmp-checkpoint-2").exists()
    assert json.loads((out / "model_index.json").read_text())["training_info"]["steps"] == 3


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    calls = []
    real_loss = ddpm.diffusion_loss

    def loss_going_nan(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(ddpm, "diffusion_loss", loss_going_nan)
    out = tmp_path / "run"
    args = ddpm.parse_args(
        tiny_args(out, cache_dir, "--max_train_steps", "6", "--checkpointing_steps", "2", "--validation_steps", "100")
        + ["--logger", "none", "--logging_steps", "5"]
    )
    with pytest.raises(
        NonFiniteLossError, match=r"at or before step 4 \(largest gradient norm since the last log: nan\)"
    ):
        ddpm.train(args)
    assert steps(out) == [2] and not (out / "model_index.json").exists()


def test_logged_gradient_norm_is_measured_before_clipping_and_without_it(tmp_path, cache_dir):
    first_norms = []
    for clip in ("1e-6", "0"):  # a bound far below the norm, and no clipping at all
        argv = tiny_args(tmp_path / clip, cache_dir, "--max_train_steps", "1", "--max_grad_norm", clip)
        ddpm.train(ddpm.parse_args(argv + ["--checkpointing_steps", "100", "--validation_steps", "100"]))
        first_norms += logged(tmp_path / clip, "grad_norm")
    assert first_norms[0] == pytest.approx(first_norms[1]) and first_norms[0] > 1e-3


@pytest.mark.parametrize("data_on_device", ["no", "yes"])
def test_gradient_accumulation_reaches_max_train_steps(tmp_path, cache_dir, data_on_device):
    # 8 batches of 1 per epoch, 3 per optimizer step: each epoch makes 2 whole steps and drops its last 2 batches.
    argv = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "5", "--gradient_accumulation_steps", "3")
    argv += ["--train_batch_size", "1", "--checkpointing_steps", "100", "--validation_steps", "100", "--logger", "none"]
    ddpm.train(ddpm.parse_args(argv + ["--data_on_device", data_on_device]))
    assert steps(tmp_path / "run") == [5]
    assert logged(tmp_path / "run", "step") == [1, 2, 3, 4, 5]


def test_shifted_schedule_moves_log_snr_by_the_resolution_ratio():
    unshifted = ["--output_dir", "x", "--resolution", "256", "--schedule_base_resolution", "256"]  # a ratio of 1
    plain = ddpm.make_noise_scheduler(ddpm.parse_args(unshifted))
    constant = ["--schedule_base_resolution", "64", "--schedule_detail_resolution", "64"]  # not the preset's interpolation
    args = ddpm.parse_args(["--output_dir", "x", "--resolution", "256", *constant])
    shifted = ddpm.make_noise_scheduler(args)
    log_snr = lambda a: torch.log(a / (1 - a))  # noqa: E731
    t = torch.tensor([1, 250, 500, 750, 998])
    difference = log_snr(shifted.alphas_cumprod[t].double()) - log_snr(plain.alphas_cumprod[t].double())
    assert torch.allclose(difference, torch.full_like(difference, 2 * math.log(64 / 256)), atol=1e-3)
    assert ddpm.final_alpha_bar(shifted) < ddpm.final_alpha_bar(plain)  # still pure noise at t = T
    # The shift travels with the saved scheduler: a sampler built from its config uses the same alpha-bars.
    solver = DPMSolverMultistepScheduler.from_config(shifted.config)
    assert torch.allclose(solver.alphas_cumprod, shifted.alphas_cumprod)


def test_interpolated_shift_moves_log_snr_linearly_in_t():
    base = ["--output_dir", "x", "--resolution", "256", "--schedule_base_resolution"]
    plain = ddpm.make_noise_scheduler(ddpm.parse_args(base + ["256"]))
    args = ddpm.parse_args(base + ["64", "--schedule_detail_resolution", "256"])
    interpolated = ddpm.make_noise_scheduler(args)
    log_snr = lambda a: torch.log(a / (1 - a))  # noqa: E731
    t = torch.tensor([0, 250, 500, 750, 998])
    difference = log_snr(interpolated.alphas_cumprod[t].double()) - log_snr(plain.alphas_cumprod[t].double())
    expected = 2 * math.log(64 / 256) * (t.double() + 1) / 1000  # none at the cleanest timestep, all at the noisiest
    assert torch.allclose(difference, expected, atol=1e-3)
    constant = ddpm.make_noise_scheduler(ddpm.parse_args(base + ["64", "--schedule_detail_resolution", "64"]))
    assert (interpolated.alphas_cumprod[:999] > constant.alphas_cumprod[:999]).all()  # less noise wherever t < T
    assert ddpm.final_alpha_bar(interpolated) < ddpm.final_alpha_bar(plain)  # still pure noise at t = T
    assert "64 px at the noisiest timestep to 256 px at the cleanest" in ddpm.schedule_shift_description(args)


def test_a_detail_resolution_above_the_training_one_raises_the_clean_end():
    """--schedule_detail_resolution 1024 at 256 px: log-SNR up by 2 ln 4 at the cleanest timestep, the base's shift
    at the noisiest, linear in t between (the lever RESULTS.md session 19 names for the missing fine detail)."""
    base = ["--output_dir", "x", "--resolution", "256", "--schedule_base_resolution"]
    plain = ddpm.make_noise_scheduler(ddpm.parse_args(base + ["256"]))
    raised = ddpm.make_noise_scheduler(ddpm.parse_args(base + ["64", "--schedule_detail_resolution", "1024"]))
    log_snr = lambda a: torch.log(a / (1 - a))  # noqa: E731
    t = torch.tensor([100, 250, 500, 750, 998])  # t = 0 is within float32's rounding of 1 there
    difference = log_snr(raised.alphas_cumprod[t].double()) - log_snr(plain.alphas_cumprod[t].double())
    weight = (t.double() + 1) / 1000
    expected = 2 * math.log(64 / 256) * weight + 2 * math.log(1024 / 256) * (1 - weight)
    assert torch.allclose(difference, expected, atol=1e-3)
    assert raised.alphas_cumprod[0] > plain.alphas_cumprod[0]  # less noise at the cleanest timestep
    assert ddpm.final_alpha_bar(raised) < ddpm.final_alpha_bar(plain)  # still pure noise at t = T


def test_the_ours_preset_interpolates_its_shift_to_the_resolution_trained():
    at = lambda *flags: ddpm.parse_args(["--output_dir", "x", *flags])  # noqa: E731
    assert at().schedule_detail_resolution == 256 and at("--resolution", "128").schedule_detail_resolution == 128
    assert at("--resolution", "32").schedule_detail_resolution is None  # at or below the base: the constant shift
    constant = at("--schedule_detail_resolution", "64")  # the preset before session 15, spelt once
    assert constant.schedule_detail_resolution is None and "interpolated" not in ddpm.schedule_shift_description(constant)
    assert "to 256 px at the cleanest (interpolated)" in ddpm.schedule_shift_description(at())
    assert at("--schedule_base_resolution", "64").schedule_detail_resolution is None  # a base given alone: constant
    # A run of the earlier preset (its checkpoint records no detail resolution, or none at all) is compared as the
    # constant shift: refused with the preset's interpolation, resumed with --schedule_detail_resolution 64.
    comparable = ddpm.DDPMKind.comparable_flags
    for recorded in ({"schedule_base_resolution": 64, "schedule_detail_resolution": None}, {"schedule_base_resolution": 64}):
        assert comparable(recorded)["schedule_detail_resolution"] == 64
        assert comparable({"schedule_base_resolution": 64, "schedule_detail_resolution": 256}) != comparable(recorded)
    assert comparable({"schedule_base_resolution": None, "schedule_detail_resolution": None})["schedule_detail_resolution"] is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--schedule_detail_resolution", "256"], "give both"),
        (["--schedule_base_resolution", "64", "--schedule_detail_resolution", "0"], "give a resolution in pixels"),
        (["--schedule_base_resolution", "64", "--schedule_detail_resolution", "32"], "is below --schedule_base_resolution"),
    ],
)
def test_interpolated_shift_refuses_what_cannot_work(flags, message, capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--resolution", "256", "--preset", "paper"] + flags)
    assert message in capsys.readouterr().err


def test_a_resume_compares_the_model_the_flags_build_not_their_spelling():
    recorded = {"model_config": "tiny", "masks": "disc,atrophy", "dropout": None, "beta_schedule": "squaredcos_cap_v2",
                "beta_start": 1e-4, "beta_end": 0.02}  # fmt: skip
    same = {**recorded, "masks": "disc, atrophy", "dropout": 0.0, "beta_start": 0.5}  # tiny's dropout is 0; cosine ignores betas
    assert ddpm.DDPMKind.comparable_flags(same) == ddpm.DDPMKind.comparable_flags(recorded)
    for other in ({"dropout": 0.1}, {"masks": "atrophy,disc"}, {"beta_schedule": "linear"}):
        assert ddpm.DDPMKind.comparable_flags({**recorded, **other}) != ddpm.DDPMKind.comparable_flags(recorded)
    for schedule in ("linear", "scaled_linear"):  # these use the endpoints
        other = {**recorded, "beta_schedule": schedule}
        assert ddpm.DDPMKind.comparable_flags({**other, "beta_end": 0.01}) != ddpm.DDPMKind.comparable_flags(other)


def test_min_snr_weighting_caps_low_noise_timesteps():
    torch.manual_seed(0)
    scheduler = ddpm.make_noise_scheduler(ddpm.parse_args(["--output_dir", "x", "--resolution", "16"]))
    unet = lambda x, t, class_labels=None: SimpleNamespace(sample=torch.zeros_like(x))  # noqa: E731
    x = torch.rand(64, 4, 8, 8) * 2 - 1
    torch.manual_seed(1)
    plain = ddpm.diffusion_loss(unet, scheduler, x)
    torch.manual_seed(1)
    weighted = ddpm.diffusion_loss(unet, scheduler, x, snr_gamma=5.0)
    # With a zero prediction the v-target's squared norm is about 1 at every t; min(SNR, 5) / (SNR + 1) < 1 then.
    assert 0 < weighted < plain


def test_snapshots_save_the_ema_pipeline_every_n_steps(tmp_path, cache_dir):
    out = tmp_path / "run"
    args = ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "4", "--snapshot_steps", "2", "--logger", "none"))
    ddpm.train(args)
    snapshots = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snapshots == ["step-0000002", "step-0000004"]
    pipe = FundusPipeline.from_pretrained(out / "snapshots" / "step-0000002")
    assert pipe.unet.config.sample_size == 16


def test_guide_step_ships_that_steps_ema_model_as_the_final_models_guide(tmp_path, cache_dir):
    out = tmp_path / "run"
    args = ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "4", "--guide_step", "3", "--logger", "none"))
    ddpm.train(args)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-0000003"]  # the guide, without --snapshot_steps
    pipe, guide = FundusPipeline.from_pretrained(out), FundusPipeline.from_pretrained(out / "snapshots" / "step-0000003")
    assert guide.guide_unet is None  # the snapshot is the guide itself
    ours, theirs = pipe.guide_unet.state_dict(), guide.unet.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(not torch.equal(pipe.unet.state_dict()[k], ours[k]) for k in ours)  # step 4's weights differ from 3's
    assert "step 3 ships with the final model" in pipe.config.training_info["autoguidance guide"]
    assert "holds a guide (`guide_unet`" in (out / "README.md").read_text()
    snapshot_card = (out / "snapshots" / "step-0000003" / "README.md").read_text()
    assert "holds a guide" not in snapshot_card and "autoguidance guide" not in snapshot_card  # the final model's alone


def test_guide_step_refusals_come_before_training(tmp_path, cache_dir, capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(tiny_args(tmp_path / "late", cache_dir, "--max_train_steps", "4", "--guide_step", "4"))
    assert "--guide_step 4: the guide is the model of a step before the run's last (4)" in capsys.readouterr().err
    # A resume past the guide's step whose snapshot is missing (removed here; or --guide_step added on resume) is
    # refused before it trains, not when it saves the model at the end.
    out, common = tmp_path / "run", ["--checkpointing_steps", "2", "--guide_step", "2", "--logger", "none"]
    ddpm.train(ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "3", *common)))
    shutil.rmtree(out / "snapshots" / "step-0000002")
    resume = ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "4", *common, "--resume_from_checkpoint", "latest"))
    with pytest.raises(FileNotFoundError, match="a resume at step 3 comes after that step"):
        ddpm.train(resume)
    assert not (out / "checkpoint-4").exists()


def test_a_dataset_without_labels_trains_an_unconditional_model(tmp_path, cache_dir):
    from fundus_diffusion.data import load_phantom_dataset

    unlabelled = tmp_path / "unlabelled"
    load_phantom_dataset(8, size=32).map(lambda row: {"label": -1}).save_to_disk(str(unlabelled))
    args = ddpm.parse_args(
        tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "1", "--logger", "none")
        + ["--dataset", str(unlabelled)]
    )
    ddpm.train(args)
    assert not FundusPipeline.from_pretrained(tmp_path / "run").class_conditional
    card = (tmp_path / "run" / "README.md").read_text()
    data = card.split("## Training data")[1].split("## Training\n")[0]  # a section of its own, also for local data
    assert "A local dataset, `unlabelled`" in data
    for name in ("README.md", "model_index.json", "training_args.json", "metrics.json"):  # the uploaded files
        assert str(tmp_path) not in (tmp_path / "run" / name).read_text(), name
    assert "| sources | phantom 8 |" in data and "| annotated | disc 8 of 8 |" in data
    assert "| labels | non-PM 0, PM 0, unknown 8 |" in data and "class_labels" not in card  # the Use snippet too
    forced = tiny_args(tmp_path / "forced", cache_dir, "--max_train_steps", "1", "--logger", "none", "--class_conditional")
    with pytest.raises(ValueError, match="--class_conditional: no image of .* has a PM / non-PM label"):
        ddpm.train(ddpm.parse_args(forced + ["--dataset", str(unlabelled)]))
    labelled = ddpm.parse_args(tiny_args(tmp_path / "labelled", cache_dir, "--max_train_steps", "1", "--logger", "none"))
    ddpm.train(labelled)  # phantoms carry PM / non-PM labels: conditional, as before
    assert FundusPipeline.from_pretrained(tmp_path / "labelled").class_conditional


def test_post_hoc_ema_flags_default_to_the_library_and_refuse_what_cannot_work(capsys):
    args = ddpm.parse_args(["--output_dir", "x", "--post_hoc_ema"])
    assert (args.post_hoc_ema_sigma_rels, args.post_hoc_ema_every) == ((0.05, 0.28), 1000)
    assert not ddpm.parse_args(["--output_dir", "x"]).post_hoc_ema  # the ordinary EMA stays the default
    for flags, message in [
        (["--post_hoc_ema_every", "5"], "--post_hoc_ema_every set(s) the post-hoc EMA profiles: add --post_hoc_ema"),
        (["--post_hoc_ema", "--post_hoc_ema_sigma_rels", "0.1"], "give at least two different lengths"),
        (["--post_hoc_ema", "--post_hoc_ema_sigma_rels", "0.1,0.1"], "sigma_rel 0.1 is given twice"),
        (["--post_hoc_ema", "--post_hoc_ema_sigma_rels", "0.1,0.35"], "sigma_rel 0.35 is outside (0, 0.3002]"),
    ]:
        with pytest.raises(SystemExit):
            ddpm.parse_args(["--output_dir", "x", *flags])
        assert message in capsys.readouterr().err


def test_post_hoc_ema_snapshots_are_safetensors_and_survive_a_resume(tmp_path, cache_dir):
    common = ["--checkpointing_steps", "2", "--validation_steps", "100", "--logger", "none"]
    common += ["--post_hoc_ema", "--post_hoc_ema_every", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    ddpm.train(ddpm.parse_args(tiny_args(straight, cache_dir, "--max_train_steps", "3", *common)))
    # The split run is killed after its step-4 snapshot, before checkpoint-4 is complete: it resumes from
    # checkpoint-2, drops the snapshots of the abandoned steps 3-4 and continues the profiles' state.
    ddpm.train(ddpm.parse_args(tiny_args(split, cache_dir, "--max_train_steps", "4", *common)))
    shutil.rmtree(split / "checkpoint-4")
    resume = ["--resume_from_checkpoint", "latest"]
    ddpm.train(ddpm.parse_args(tiny_args(split, cache_dir, "--max_train_steps", "3", *common, *resume)))

    names = [f"profile-{i}-step-{s:07d}.safetensors" for i in (0, 1) for s in (2, 3)]  # every 2 steps and the last
    for run in (straight, split):
        assert sorted(p.name for p in (run / "post_hoc_ema").iterdir()) == names  # no pickle, no stale step 4
        assert {"post_hoc_ema.safetensors", "post_hoc_ema.json"} <= {p.name for p in (run / "checkpoint-3").iterdir()}
        assert not list(run.glob("checkpoint-*/custom_checkpoint_*.pkl"))
        card = json.loads((run / "model_index.json").read_text())["training_info"]
        assert card["post_hoc_ema"].startswith("sigma_rel 0.05, 0.28, snapshots every 2 steps")
    assert int(load_file(split / "checkpoint-3" / "post_hoc_ema.safetensors")["ema_models.1.step"]) == 3
    for name in names:  # the resumed profiles are those of the uninterrupted run
        ours, theirs = load_file(split / "post_hoc_ema" / name), load_file(straight / "post_hoc_ema" / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6)


def test_a_resume_refuses_post_hoc_ema_profiles_the_run_did_not_keep(tmp_path, cache_dir):
    common = ["--checkpointing_steps", "2", "--validation_steps", "100", "--logger", "none"]
    resume = ["--resume_from_checkpoint", "latest", "--max_train_steps", "4"]
    profiles = ["--post_hoc_ema", "--post_hoc_ema_every", "2"]
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    ddpm.train(ddpm.parse_args(tiny_args(plain, cache_dir, "--max_train_steps", "2", *common)))
    with pytest.raises(ValueError, match=r"holds no state for post_hoc_ema .*without --post_hoc_ema\)\. Fix: resume"):
        ddpm.train(ddpm.parse_args(tiny_args(plain, cache_dir, *common, *profiles, *resume)))
    ddpm.train(ddpm.parse_args(tiny_args(tracked, cache_dir, "--max_train_steps", "2", *common, *profiles)))
    other = ["--post_hoc_ema_sigma_rels", "0.05,0.1"]
    with pytest.raises(ValueError, match=r"profile-1-step-0000002.safetensors is a snapshot of a profile of sigma_rel "
                       r"0.28, but this run's --post_hoc_ema_sigma_rels are 0.05,0.1\. Fix: resume with"):  # fmt: skip
        ddpm.train(ddpm.parse_args(tiny_args(tracked, cache_dir, *common, *profiles, *other, *resume)))


def test_init_from_starts_from_a_lower_resolution_model_and_refuses_another_network(tmp_path, cache_dir):
    low = tmp_path / "low"
    ddpm.train(ddpm.parse_args(tiny_args(low, cache_dir, "--max_train_steps", "2", "--logger", "none")))
    start = FundusPipeline.from_pretrained(low).unet.state_dict()
    # At twice the resolution with a learning rate of 0 (and no weight decay) the weights stay what --init_from gave.
    high = tmp_path / "high"
    args = ddpm.parse_args(
        tiny_args(high, cache_dir, "--max_train_steps", "1", "--logger", "none", "--learning_rate", "0")
        + ["--resolution", "32", "--init_from", str(low)]
    )
    ddpm.train(args)
    loaded = FundusPipeline.from_pretrained(high).unet
    assert loaded.config.sample_size == 32
    assert all(torch.equal(start[k], v) for k, v in loaded.state_dict().items())
    assert json.loads((high / "training_args.json").read_text())["init_from"] == "low"  # no local path uploaded
    assert "| initialised from | low |" in (high / "README.md").read_text()
    # A run from scratch differs, so the check above could fail.
    scratch = tmp_path / "scratch"
    ddpm.train(ddpm.parse_args(
        tiny_args(scratch, cache_dir, "--max_train_steps", "1", "--logger", "none", "--learning_rate", "0")
        + ["--resolution", "32", "--seed", "1"]
    ))  # fmt: skip
    assert not all(torch.equal(start[k], v) for k, v in FundusPipeline.from_pretrained(scratch).unet.state_dict().items())
    other_masks = tiny_args(tmp_path / "x", cache_dir, "--max_train_steps", "1", "--logger", "none", "--masks", "atrophy")
    with pytest.raises(ValueError, match=r"--init_from .*masks are \['disc'\], this run's \['atrophy'\]. Fix: train with --masks disc"):
        ddpm.train(ddpm.parse_args(other_masks + ["--init_from", str(low)]))
    with pytest.raises(FileNotFoundError, match="has no model_index.json: it is not a saved fundus pipeline"):
        ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "z", cache_dir, "--max_train_steps", "1") + ["--init_from", str(tmp_path)]))
    other_net = tiny_args(tmp_path / "y", cache_dir, "--max_train_steps", "1", "--logger", "none", "--no-class_conditional")
    with pytest.raises(ValueError, match=r"its UNet differs from this run's in num_class_embeds"):
        ddpm.train(ddpm.parse_args(other_net + ["--init_from", str(low)]))


def test_a_skipped_optimizer_step_holds_the_schedule_and_the_ema(tmp_path, cache_dir, monkeypatch):
    """fp16's loss scaler skips a step whose gradients overflowed: the learning-rate schedule and the EMA wait for
    the next real update (they advanced, so warm-up was cut short by every skipped step). Every step is made to look
    skipped here; the step counters stay at 0 while the run's own count reaches 3."""
    import json

    from accelerate.optimizer import AcceleratedOptimizer
    from safetensors.torch import load_file

    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(lambda self: True))
    out = tmp_path / "run"
    ddpm.train(ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "3", "--logger", "none")))
    checkpoint = out / "checkpoint-3"
    assert json.loads((checkpoint / "lr_scheduler.json").read_text())["state"]["last_epoch"] == 0
    assert int(load_file(checkpoint / "ema.safetensors")["step"]) == 0


def test_the_presets_interpolation_gives_way_to_a_given_base_and_fixes_name_values_that_work(capsys):
    at = lambda *flags: ddpm.parse_args(["--output_dir", "x", *flags])  # noqa: E731
    assert at("--resolution", "128", "--schedule_base_resolution", "256").schedule_detail_resolution is None  # constant
    assert ddpm.schedule_shift_description(at("--resolution", "128", "--schedule_base_resolution", "128")) == ""
    for flags, fix in [
        (["--resolution", "32", "--schedule_detail_resolution", "32"], "(e.g. 64; the base itself"),
        (["--preset", "paper", "--resolution", "32", "--schedule_detail_resolution", "32"], "--schedule_detail_resolution 64)"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit):
            at(*flags)
        assert fix in capsys.readouterr().err


def test_a_compiled_run_loads_the_compile_cache_first_and_writes_it_after_its_first_step_and_at_the_end(
    tmp_path, cache_dir, monkeypatch, capsys
):
    """The loop's part of --compile_cache (compiling itself skipped: test_compile_cache.py tests the artifacts);
    training_args.json names the file, not its local path; refused without --compile and inside --output_dir."""
    from fundus_diffusion.training import loop

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **kwargs: None)
    monkeypatch.setattr(loop, "load_compile_cache", lambda path: calls.append(("load", path)))
    monkeypatch.setattr(loop, "save_compile_cache", lambda path: calls.append(("save", path)))
    real_step = ddpm.DDPMKind.step
    monkeypatch.setattr(ddpm.DDPMKind, "step", lambda kind, batch: calls.append("step") or real_step(kind, batch))
    cache = str(tmp_path / "compile" / "cache.bin")
    flags = ("--max_train_steps", "2", "--logger", "none", "--compile", "--compile_cache", cache)
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "run", cache_dir, *flags)))
    assert calls == [("load", cache), "step", ("save", cache), "step", ("save", cache)]
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["compile_cache"] == "cache.bin"
    with pytest.raises(SystemExit):
        ddpm.parse_args(tiny_args(tmp_path / "x", cache_dir, "--max_train_steps", "1", "--compile_cache", cache))
    assert "--compile_cache keeps what torch.compile compiled: add --compile" in capsys.readouterr().err
    inside = str(tmp_path / "x" / "compile_cache.bin")
    with pytest.raises(SystemExit):
        ddpm.parse_args(tiny_args(tmp_path / "x", cache_dir, "--max_train_steps", "1", "--compile", "--compile_cache", inside))
    assert "is inside --output_dir, which --push_to_hub uploads whole" in capsys.readouterr().err


def test_the_card_counts_an_unfinished_epoch_as_the_share_done(tmp_path, cache_dir):
    """8 phantoms in batches of 4 are 2 steps an epoch: 3 steps are 1.5 passes, not "2 epochs" (the epochs begun)."""
    argv = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "3", "--logger", "none")
    ddpm.train(ddpm.parse_args(argv + ["--validation_steps", "100", "--checkpointing_steps", "100"]))
    assert json.loads((tmp_path / "run" / "model_index.json").read_text())["training_info"]["epochs"] == 1.5
    assert "| epochs | 1.5 |" in (tmp_path / "run" / "README.md").read_text()


def test_a_resume_with_another_batch_counts_each_step_at_its_batch(tmp_path, cache_dir, caplog):
    """12 phantoms: 3 steps of 4 are one pass (3 steps an epoch), then 1 step of 8 (one step an epoch: the loader
    drops the last 4) is another: 2 passes. Not 4 (steps over the new epoch), nor 2.5 (images over the new epoch's),
    nor a card saying the batch was 8 throughout (session 33's new-user pass and its review)."""
    common = ["--dataset", "phantom:12", "--validation_steps", "100", "--checkpointing_steps", "3", "--logger", "none"]
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "3", *common)))
    resumed = tiny_args(tmp_path / "run", cache_dir, "--max_train_steps", "4", "--train_batch_size", "8", *common)
    with caplog.at_level("WARNING"):
        ddpm.train(ddpm.parse_args(resumed + ["--resume_from_checkpoint", "latest"]))
    assert "The batch changes at this resume: 4 images a step to step 3, 8 from here" in caplog.text
    assert "the run ends at step 4 (--max_train_steps 4)" in caplog.text
    info = json.loads((tmp_path / "run" / "model_index.json").read_text())["training_info"]
    assert (info["epochs"], info["batch_size"]) == (2, "4 from step 0, then 8 from step 3")
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "training_state.json").read_text())
    assert state["batches"] == [  # what a later resume reads back
        {"from_step": 0, "images_per_step": 4, "steps_per_epoch": 3},
        {"from_step": 3, "images_per_step": 8, "steps_per_epoch": 1},
    ]


def test_a_run_never_starts_over_a_saved_model_and_a_finished_one_resumed_is_left_alone(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "run"
    common = ["--validation_steps", "100", "--checkpointing_steps", "2", "--logger", "none"]
    ddpm.train(ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "2", *common)))
    measured = [{"name": "disc Dice", "value": 0.9, "notes": "fundus-evaluate --update_model_card"}]
    (out / "metrics.json").write_text(json.dumps(measured))
    written = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    # A requeued job resumes the finished run: nothing to do, and nothing rewritten (it reset metrics.json).
    finished = tiny_args(out, cache_dir, "--max_train_steps", "2", "--resume_from_checkpoint", "latest", *common)
    assert ddpm.train(ddpm.parse_args(finished)) == str(out)
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == written
    pushed = []  # with --push_to_hub it uploads the saved folder (the first upload may have failed), still unchanged
    monkeypatch.setattr("fundus_diffusion.hub.push_folder", lambda *args, **kwargs: pushed.append(args) or "url")
    ddpm.train(ddpm.parse_args(finished + ["--push_to_hub", "--hub_model_id", "me/run"]))
    assert pushed == [(str(out), "me/run")]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == written
    assert json.loads((out / "metrics.json").read_text()) == measured
    # With its checkpoints deleted to save disk, a fresh run there, or a resume that finds no checkpoint, would
    # replace the saved model: refused before anything is built.
    shutil.rmtree(out / "checkpoint-2")
    for resume in ([], ["--resume_from_checkpoint", "latest"]):
        with pytest.raises(FileExistsError, match=r"already holds a saved model \(model_index.json\) and no checkpoint"):
            ddpm.train(ddpm.parse_args(tiny_args(out, cache_dir, "--max_train_steps", "2", *common) + resume))
    assert json.loads((out / "metrics.json").read_text()) == measured
