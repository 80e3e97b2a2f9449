"""Hostile and careless inputs (issue 14): every flag and input is checked before work starts, with one line naming
the flag and the fix; damaged model weights and diverged training are refused or reported, never silently used."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from phantom_layouts import write_folder_tree  # noqa: E402

# ---------------------------------------------------------------------------------------------- trainer flags


def parse(kind: str, tmp_path, *extra, output_dir=None):
    from fundus_diffusion.training import dcgan, ddpm

    module = ddpm if kind == "ddpm" else dcgan
    argv = ["--dataset", "phantom:4", "--output_dir", str(output_dir or tmp_path / "run"), "--max_train_steps", "2"]
    if kind == "ddpm":
        argv += ["--model_config", "tiny", "--resolution", "16"]
    else:
        argv += ["--resolution", "12", "--nz", "8", "--ngf", "2", "--ndf", "2"]
    return module.parse_args([*argv, *extra])


def parse_error(capsys, kind, tmp_path, *extra, **kwargs) -> str:
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        parse(kind, tmp_path, *extra, **kwargs)
    assert exit_info.value.code == 2 and time.perf_counter() - started < 1.0  # argparse's error, in the first second
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", ["ddpm", "dcgan"])
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--max_train_steps", "0"], "--max_train_steps must be a positive number; got 0"),
        (["--resolution", "0"], "--resolution must be a positive number; got 0"),
        (["--resolution", "-8"], "--resolution must be a positive number; got -8"),
        (["--resolution", "100000"], "--resolution 100000 is above the 2048 px"),
        (["--train_batch_size", "0"], "--train_batch_size must be a positive number; got 0"),
        (["--num_epochs", "0"], "--num_epochs must be a positive number"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be a positive number"),
        (["--checkpointing_steps", "-1"], "--checkpointing_steps must be a positive number"),
    ],
)
def test_bad_numbers_fail_at_parse_time_naming_the_flag(capsys, tmp_path, kind, flags, expected):
    assert expected in parse_error(capsys, kind, tmp_path, *flags)


def test_resolutions_the_networks_cannot_take_fail_at_parse_time(capsys, tmp_path):
    err = parse_error(capsys, "ddpm", tmp_path, "--resolution", "18")
    assert "--resolution 18: the tiny UNet takes multiples of 4 px" in err and "use 16 or 20" in err
    assert "use 16 or 20. All flags: " in err  # one full stop where the message ends in one
    err = parse_error(capsys, "dcgan", tmp_path, "--resolution", "97")
    assert "--resolution must be seed" in err and "Nearest" in err


def test_output_dir_that_is_a_file_fails_at_parse_time(capsys, tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    assert "is a file, not a folder" in parse_error(capsys, "ddpm", tmp_path, output_dir=path)
    assert "is a file, so no folder can be made under it" in parse_error(
        capsys, "dcgan", tmp_path, output_dir=path / "run"
    )


def test_read_only_output_folder_fails_at_parse_time(capsys, tmp_path, monkeypatch):
    from fundus_diffusion.training import args as args_module

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: stand in for the refusal a normal user or a read-only mount gets

            def refuse(path):
                raise PermissionError(13, "Permission denied", path)

            monkeypatch.setattr(args_module, "probe_writable", refuse)
        err = parse_error(capsys, "ddpm", tmp_path, output_dir=folder / "run")
        assert f"cannot write into {folder} (Permission denied)" in err and "choose a writable --output_dir" in err
    finally:
        folder.chmod(0o755)


def test_good_flags_still_parse(tmp_path):
    args = parse("ddpm", tmp_path)
    assert args.max_train_steps == 2 and args.resolution == 16
    assert parse("dcgan", tmp_path, "--resolution", "24").resolution == 24


def test_training_cache_that_cannot_fit_is_refused_before_caching(tmp_path):
    from fundus_diffusion.data.training_view import check_cache_fits

    check_cache_fits((8, 4, 16, 16), str(tmp_path), threads=2)  # fits
    with pytest.raises(ValueError, match="training cache needs .* free. Fix: a lower --resolution"):
        check_cache_fits((1000, 4, 100000, 100000), str(tmp_path), threads=2)


# ------------------------------------------------------------------------------------------ DCGAN divergence


def test_dcgan_warns_when_the_discriminator_wins_outright_or_the_weights_explode():
    from fundus_diffusion.training.dcgan import divergence_warning

    assert divergence_warning(0.6, 1.2, 3.0, 10) is None  # a healthy GAN
    assert divergence_warning(None, None, 3.0, 10) is None  # validated before any step (a resume at the end)
    message = divergence_warning(0.0, 1e14, 2e6, 10)
    assert "diverged at or before step 10" in message and "D loss 0 with G loss 1e+14" in message
    assert "largest |weight| is 2e+06" in message and "Lower --learning_rate" in message
    assert "weights exploded" in divergence_warning(0.5, 1.0, float("nan"), 3)
    assert "the losses exploded" in divergence_warning(4e11, 0.0, 3.0, 3)


def test_dcgan_at_an_absurd_learning_rate_warns_of_divergence(tmp_path, monkeypatch):
    from fundus_diffusion.data import load_phantom_dataset
    from fundus_diffusion.training import dcgan

    data = tmp_path / "phantoms"
    load_phantom_dataset(8, size=32).save_to_disk(str(data))
    seen = []
    real_warning = dcgan.divergence_warning
    monkeypatch.setattr(dcgan, "divergence_warning", lambda *a: seen.append(real_warning(*a)) or seen[-1])
    args = dcgan.parse_args(
        ["--dataset", str(data), "--output_dir", str(tmp_path / "run"), "--training_cache_dir", str(tmp_path / "cache"),
         "--resolution", "12", "--train_batch_size", "4", "--nz", "8", "--ngf", "2", "--ndf", "2", "--seed", "0",
         "--max_train_steps", "3", "--validation_steps", "3", "--num_validation_images", "4", "--learning_rate", "1e6",
         "--logger", "none"]
    )  # fmt: skip
    dcgan.train(args)  # finite losses: the NaN stop does not fire, the warning must
    assert seen and seen[-1] and "The GAN diverged at or before step 3" in seen[-1]


# ------------------------------------------------------------------------------------- pipelines and generate


@pytest.fixture
def gan_folder(tmp_path):
    from fundus_diffusion import FundusGANPipeline
    from fundus_diffusion.models.dcgan import DCGANGenerator

    torch.manual_seed(0)
    folder = tmp_path / "gan"
    FundusGANPipeline(gan_generator=DCGANGenerator(sample_size=8, out_channels=4, nz=8, ngf=4)).save_pretrained(folder)
    return folder


def poison_weights(folder: Path, value: float):
    """Overwrite one weight tensor of a saved folder with ``value`` (bytes damaged, or a diverged run's save)."""
    from safetensors.torch import load_file, save_file

    path = next(folder.glob("*/*.safetensors"))
    tensors = load_file(path)
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name][0] = value
    save_file(tensors, path, metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_loading_weights_that_hold_nan_or_inf_is_an_error_naming_the_folder(gan_folder, value):
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    name = poison_weights(gan_folder, value)
    with pytest.raises(ValueError) as err:
        load_fundus_pipeline(str(gan_folder), device="cpu")
    message = str(err.value)
    assert str(gan_folder) in message and "gan_generator weights hold NaN or inf" in message and name in message


def test_generate_refuses_a_batch_of_non_finite_samples(gan_folder, tmp_path):
    from fundus_diffusion.generate import GenerationConfig, generate_dataset
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    pipe = load_fundus_pipeline(str(gan_folder), device="cpu")
    with torch.no_grad():
        next(pipe.gan_generator.parameters()).fill_(float("nan"))  # weights wrecked after the load-time check
    config = GenerationConfig(model=str(gan_folder), num_samples=3, batch_size=2, shard_size=2, device="cpu")
    with pytest.raises(FloatingPointError, match=r"2 of 2 samples of this batch \(seeds \[0, 1\]\) hold NaN or inf"):
        generate_dataset(pipe, config, str(tmp_path / "syn"))
    assert not list((tmp_path / "syn" / "shards").glob("*.arrow"))  # nothing of it was kept


def test_generate_script_reports_nan_weights_in_one_line(gan_folder, tmp_path, capsys, monkeypatch):
    import runpy

    poison_weights(gan_folder, float("nan"))
    argv = ["generate.py", "--model", str(gan_folder), "--output_dir", str(tmp_path / "syn"), "--num_samples", "2",
            "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "generate.py"), run_name="__main__")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "generate.py: error:" in err and "NaN or inf" in err and "Traceback" not in err
    assert not (tmp_path / "syn").exists()


def test_generate_script_refuses_an_output_dir_that_is_a_file_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import runpy

    from fundus_diffusion.pipelines import loading

    target = tmp_path / "a-file"
    target.write_text("x")
    monkeypatch.setattr(loading, "load_fundus_pipeline", lambda *a, **k: pytest.fail("the model was loaded first"))
    argv = ["generate.py", "--model", "any/model", "--output_dir", str(target), "--num_samples", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "generate.py"), run_name="__main__")
    assert exit_info.value.code == 1
    assert f"generate.py: error: --output_dir {target}: is a file, not a folder" in capsys.readouterr().err


def test_generate_script_compares_a_resumed_runs_settings_before_loading_the_model(tmp_path, capsys, monkeypatch):
    """A Hub id is not fetched to learn that --resume was given other settings than the partial run's; the default
    sampler, which depends on the model, is left to generate_dataset (compared once the model is loaded)."""
    import runpy
    from dataclasses import asdict

    from fundus_diffusion.generate import GenerationConfig
    from fundus_diffusion.pipelines import loading

    out = tmp_path / "partial"
    out.mkdir()
    saved = GenerationConfig(model="any/model", num_samples=2, scheduler="dpmsolver++", num_inference_steps=20, seed=0)
    (out / "generation_config.json").write_text(json.dumps(asdict(saved)))
    (out / "shards").mkdir()
    (out / "shards" / "shard-00000.arrow").write_bytes(b"")  # a finished shard: a run with something to lose
    monkeypatch.setattr(loading, "load_fundus_pipeline", lambda *a, **k: pytest.fail("the model was loaded first"))
    argv = ["generate.py", "--model", "any/model", "--output_dir", str(out), "--num_samples", "2", "--seed", "1", "--resume"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "generate.py"), run_name="__main__")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "--resume with other settings" in err and "the run in " in err and "seed 0 (now 1)." in err


@pytest.mark.parametrize("cut", ["after_state", "truncated_info", "shards_gone"])
def test_generate_resume_after_a_kill_inside_the_final_save(gan_folder, tmp_path, monkeypatch, cut):
    """Killed between save_to_disk's state.json and dataset_info.json (or while writing the latter): --resume
    makes the dataset again from the shards (or, with the shards gone, from the seeds), the same samples."""
    from datasets import Dataset

    from fundus_diffusion.generate import GenerationConfig, generate_dataset
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    pipe = load_fundus_pipeline(str(gan_folder), device="cpu")
    config = GenerationConfig(model=str(gan_folder), num_samples=3, batch_size=2, shard_size=2, device="cpu")
    reference = generate_dataset(pipe, config, str(tmp_path / "ref"))

    out = tmp_path / "syn"
    real_save = Dataset.save_to_disk

    def killed_save(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        info = Path(path) / "dataset_info.json"
        if cut == "truncated_info":
            info.write_text(info.read_text()[:40])
        else:
            info.unlink()
        if cut == "shards_gone":  # the shape an earlier release left: shards deleted before the save was checked
            for shard in (Path(path) / "shards").glob("*.arrow"):
                shard.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "save_to_disk", killed_save)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(pipe, config, str(out))
    assert (out / "state.json").exists()
    monkeypatch.setattr(Dataset, "save_to_disk", real_save)
    dataset = generate_dataset(pipe, config, str(out), resume=True)
    assert len(dataset) == 3 and dataset["seed"] == reference["seed"]
    assert [np.asarray(im).tobytes() for im in dataset["image"]] == [np.asarray(im).tobytes() for im in reference["image"]]
    assert not (out / "shards").exists() and (out / "README.md").exists()


# ------------------------------------------------------------------------------------------------ evaluation


def test_evaluate_refuses_an_empty_synthetic_set(tmp_path):
    from fundus_diffusion.data import load_phantom_dataset
    from fundus_diffusion.evaluation import EvaluationConfig, evaluate

    real = load_phantom_dataset(4, size=32)
    empty = real.select([])
    config = EvaluationConfig(inputs={"real": "phantom:4", "synthetic": "data/syn"})
    with pytest.raises(ValueError, match=r"--synthetic data/syn holds no samples: nothing to evaluate. Fix: regenerate"):
        evaluate(real, empty, None, config)


def test_evaluate_script_refuses_an_empty_saved_synthetic_set_in_one_line(tmp_path, capsys, monkeypatch):
    import runpy

    from fundus_diffusion.data import load_phantom_dataset

    empty = tmp_path / "empty"
    load_phantom_dataset(2, size=32).select([]).save_to_disk(str(empty))
    argv = ["evaluate.py", "--real", "phantom:4", "--synthetic", str(empty), "--output_dir", str(tmp_path / "report")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"evaluate.py: error: --synthetic: {empty} is a saved dataset with no samples" in err
    assert "Traceback" not in err and not (tmp_path / "report").exists()


# --------------------------------------------------------------------------------------------- dataset build


@pytest.fixture
def folder_tree(tmp_path):
    return write_folder_tree(str(tmp_path / "raw" / "mini"), num_samples=2, size=32, labels=False)


def test_labels_file_that_matches_no_image_is_an_error(folder_tree, tmp_path):
    from fundus_diffusion.data.build import build_dataset
    from fundus_diffusion.data.readers import FundusDataError

    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\nP0001.jpg,PM\nP0002.jpg,non-PM\n")
    with pytest.raises(FundusDataError) as err:
        build_dataset(str(tmp_path / "out"), folder_dirs=[folder_tree], labels=str(labels), progress=False)
    message = str(err.value)
    assert "none of its 2 names matches an image" in message and "'P0001.jpg'" in message
    assert "'phantom_001.jpg'" in message and not (tmp_path / "out").exists()


def test_sixteen_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    from fundus_diffusion.data.build import read_image

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    stored, size, converted = read_image(str(path))
    rgb = np.asarray(Image.open(__import__("io").BytesIO(stored["bytes"])))
    assert converted and size == (64, 64) and rgb.shape == (64, 64, 3)
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb == 255).mean() < 0.01  # was 99.9% white


def test_bad_file_errors_carry_no_object_reprs(tmp_path):
    from fundus_diffusion.data.build import read_image
    from fundus_diffusion.data.readers import BadFileError

    path = tmp_path / "not-an-image.png"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(BadFileError) as err:
        read_image(str(path))
    assert "object at 0x" not in str(err.value) and "cannot identify image file" in str(err.value)
    assert str(path) in str(err.value)


def test_stale_hidden_build_folders_are_cleaned(folder_tree, tmp_path):
    from fundus_diffusion.data.build import BUILDER_FILE, build_dataset

    out = tmp_path / "out"
    dead = tmp_path / ".out.building-dead"  # a killed build on this host: its process is gone
    dead.mkdir()
    (dead / "rows.arrow").write_bytes(b"x" * 100)
    (dead / BUILDER_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    old = tmp_path / ".out.building-old"  # from before builds named their process: stale once a day old
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    alive = tmp_path / ".out.building-alive"  # a build running now (this process)
    alive.mkdir()
    (alive / BUILDER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    other = tmp_path / ".other.building-x"  # another output's
    other.mkdir()
    build_dataset(str(out), folder_dirs=[folder_tree], progress=False)
    assert sorted(p.name for p in tmp_path.glob(".*.building-*")) == [".other.building-x", ".out.building-alive"]
    assert (out / "arrow" / "dataset_info.json").exists()


def test_build_into_an_unwritable_place_fails_before_reading(folder_tree, tmp_path):
    from fundus_diffusion.data.build import build_dataset
    from fundus_diffusion.data.readers import FundusDataError

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(FundusDataError, match=r"--output_dir .*a-file/out: cannot write into .*a-file \("):
        build_dataset(str(blocker / "out"), folder_dirs=[folder_tree], progress=False)


def test_evaluate_script_refuses_what_it_could_not_write_before_it_evaluates(tmp_path, capsys, monkeypatch):
    """An --output_dir that is a file, and an --update_model_card that is no saved model, are refused in one line
    before the evaluation's minutes, not after them."""
    import runpy

    a_file = tmp_path / "report.md"
    a_file.write_text("")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")
    common = ["evaluate.py", "--real", "phantom:4", "--synthetic", "phantom:4"]
    for extra, status, message in [
        (["--output_dir", str(a_file)], 2, f"--output_dir {a_file}: is a file, not a folder"),
        (["--output_dir", str(tmp_path / "done")], 2, "holds a report already (report.json). Fix: choose a new folder, or add --overwrite"),
        (["--output_dir", str(tmp_path / "r"), "--update_model_card", str(tmp_path / "nope")], 1,
         f"--update_model_card {tmp_path / 'nope'}: not a saved model folder (no model_index.json)"),
        (["--output_dir", str(tmp_path / "r"), "--update_model_card", "--resolution", "64"], 1,
         "--update_model_card with --resolution 64: the card states the native-resolution figures"),
    ]:  # fmt: skip
        monkeypatch.setattr(sys, "argv", common + extra)
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"), run_name="__main__")
        err = capsys.readouterr().err
        assert exit_info.value.code == status and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing was evaluated
    parse = runpy.run_path(str(REPO_ROOT / "scripts" / "evaluate.py"))["parse_args"]
    assert parse(common[1:] + ["--output_dir", str(tmp_path / "done"), "--overwrite"]).overwrite  # replaced on request


def test_split_script_errors_are_one_line_with_the_commands_prefix(tmp_path, capsys, monkeypatch):
    import runpy

    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "something").write_text("")
    (tmp_path / "g.csv").write_text("id,group\nnot_a_phantom,eye\n")
    for argv, status, message in [
        (["--output_dir", str(tmp_path / "split")], 1, "split_dataset.py: error: "),  # an output folder in use
        (["--output_dir", str(tmp_path / "s2"), "--test_ids", "ids.txt"], 2, "--test_ids applies to --by_source only"),
        (["--output_dir", str(tmp_path / "s3"), "--subsets", "4", "--groups", "g.csv"], 2, "--groups applies to a held-out split only"),
        (["--output_dir", str(tmp_path / "s4"), "--groups", str(tmp_path / "g.csv")], 1, "g.csv: 1 id(s) are not in the dataset"),
    ]:
        monkeypatch.setattr(sys, "argv", ["split_dataset.py", "--dataset", "phantom:8", *argv])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO_ROOT / "scripts" / "split_dataset.py"), run_name="__main__")
        err = capsys.readouterr().err
        assert exit_info.value.code == status and message in err and "Traceback" not in err


def test_a_card_is_updated_only_for_the_model_that_generated_the_set(tmp_path):
    """--update_model_card DIR on a set whose generation_config.json names another local model is refused: its
    metrics would land on the wrong card."""
    from fundus_diffusion.evaluation.model_card import card_model_dir
    from fundus_diffusion.generate import CONFIG_FILE

    for name in ("model-a", "model-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text("{}")
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / CONFIG_FILE).write_text(json.dumps({"model": str(tmp_path / "model-a")}))
    assert card_model_dir(str(synthetic)) == str(tmp_path / "model-a")
    assert card_model_dir(str(synthetic), str(tmp_path / "model-a") + "/") == str(tmp_path / "model-a") + "/"
    with pytest.raises(ValueError, match=r"was generated by another model, .*model-a .*Fix: give --update_model_card"):
        card_model_dir(str(synthetic), str(tmp_path / "model-b"))
    (synthetic / CONFIG_FILE).write_text(json.dumps({"model": "/elsewhere/model-b"}))  # generated on another machine
    assert card_model_dir(str(synthetic), str(tmp_path / "model-b")) == str(tmp_path / "model-b")
    (synthetic / CONFIG_FILE).write_text(json.dumps({"model": "model-a"}))  # relative to where it was generated
    with pytest.raises(ValueError, match=r"another model, model-a .*if .*model-b is that model renamed"):
        card_model_dir(str(synthetic), str(tmp_path / "model-b"))
    (synthetic / CONFIG_FILE).write_text(json.dumps({"model": "runs/model-b/"}))  # typed elsewhere, several parts
    assert card_model_dir(str(synthetic), str(tmp_path / "model-b")) == str(tmp_path / "model-b")


def test_generate_without_a_sample_count_says_which_flag_gives_it(tmp_path, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", ["generate.py", "--model", str(tmp_path / "model"), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / "scripts" / "generate.py"), run_name="__main__")
    assert exit_info.value.code == 1 and "How many samples? Give --num_samples N" in capsys.readouterr().err


@pytest.mark.parametrize("script, report_file", [("evaluate_pm.py", "report.json"), ("judge_pm_labels.py", "pm_labels.json")])
def test_pm_scripts_refuse_a_folder_with_a_report_unless_told_to_overwrite(script, report_file, tmp_path, capsys):
    import runpy

    (tmp_path / report_file).write_text("{}")
    parse = runpy.run_path(str(REPO_ROOT / "scripts" / script))["parse_args"]
    flags = ["--real", "r", "--synthetic", "s", "--output_dir", str(tmp_path)] + (["--holdout", "h"] if script == "evaluate_pm.py" else [])
    with pytest.raises(SystemExit):
        parse(flags)
    assert f"holds a report already ({report_file}). Fix: choose a new folder, or add --overwrite" in capsys.readouterr().err
    assert parse(flags + ["--overwrite"]).overwrite


def test_a_model_and_a_dataset_given_for_each_other_are_told_apart(tmp_path):
    """A saved model given as a dataset and a dataset given as a model (new-user pass, session 25): each named for what
    it is, with the fix."""
    from fundus_diffusion.data import load_fundus_dataset
    from fundus_diffusion.pipelines.loading import read_model_index

    model = tmp_path / "runs" / "ddpm-tiny"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a saved model, not a dataset. Fix: sample a dataset from it first"):
        load_fundus_dataset(str(model))
    dataset = tmp_path / "data"
    (dataset / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"It holds a dataset .* Fix: give a saved model"):
        read_model_index(str(dataset))
    with pytest.raises(FileNotFoundError, match=r"Fix: give the --output_dir of fundus-train-ddpm"):
        read_model_index(str(tmp_path / "runs"))


def test_an_unknown_flag_is_one_line_with_the_closest_known_ones(capsys):
    """argparse printed the usage text of every flag (about 60 lines for the trainer) before the error, and no
    suggestion (new-user pass, session 25)."""
    from fundus_diffusion.training import ddpm

    with pytest.raises(SystemExit) as exit_:
        ddpm.parse_args(["--dataset", "phantom:4", "--output_dir", "out", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage:" not in err and len(err.strip().splitlines()) == 1
    assert "unrecognized arguments: --epochs 1 (--epochs: did you mean --num_epochs?)" in err and "--help" in err


def test_a_flag_prefix_is_refused_not_read_as_the_flag(capsys):
    """argparse took ``--num_sample`` for ``--num_samples`` without a word: a flag added later could change what an
    abbreviation meant (new-user pass, session 30)."""
    from fundus_diffusion.training import ddpm

    with pytest.raises(SystemExit):
        ddpm.parse_args(["--dataset", "phantom:4", "--output_dir", "out", "--num_epoch", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --num_epoch 1 (--num_epoch: did you mean --num_epochs?)" in err
