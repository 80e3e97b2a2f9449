"""generate.py's fast paths: the default sampler (DPM-Solver++ in 20 steps, not the model's 1,000-step chain),
recorded settled and compared by --resume; the compiled network with one batch shape (the last batch padded); and
benchmarks/sampling_throughput.py --quick."""

import json
import runpy
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.generate import (
    DEFAULT_INFERENCE_STEPS,
    DEFAULT_SCHEDULER,
    GenerationConfig,
    check_resume,
    generate_dataset,
    generate_samples,
    prepare_pipeline,
    regenerate,
)
from fundus_diffusion.pipelines.loading import load_fundus_pipeline

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_generate import models  # noqa: E402, F401


@pytest.fixture(scope="module")
def ddpm_1000(models, tmp_path_factory):  # noqa: F811
    """The tiny DDPM with a 1,000-step training chain, as trained models have (the fixture's has 4 steps)."""
    folder = tmp_path_factory.mktemp("ddpm_1000") / "ddpm"
    shutil.copytree(models["ddpm"], folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "num_train_timesteps": 1000}))
    return str(folder)


def run_generate(*argv):
    script = runpy.run_path(str(REPO / "scripts" / "generate.py"))
    script["main"](script["parse_args"]([*argv, "--device", "cpu"]))


def saved_config(folder) -> dict:
    return json.loads((Path(folder) / "generation_config.json").read_text())


def test_the_default_sampler_is_dpm_solver_20_and_is_recorded(models, ddpm_1000, tmp_path):  # noqa: F811
    run_generate("--model", ddpm_1000, "--num_samples", "2", "--output_dir", str(tmp_path / "ddpm"))
    recorded = saved_config(tmp_path / "ddpm")
    assert (recorded["scheduler"], recorded["num_inference_steps"]) == (DEFAULT_SCHEDULER, DEFAULT_INFERENCE_STEPS) == ("dpmsolver++", 20)
    card = (tmp_path / "ddpm" / "README.md").read_text()
    assert "DPMSolverMultistepScheduler (dpmsolver++, " in card and "| inference steps | 20 |" in card
    assert "| batch size | 2 (samples per network call" in card  # the batch drawn, not --batch_size's 64 (session 31)

    # --scheduler own: the model's saved scheduler (here a 4-step DDPM) over its whole chain
    run_generate("--model", models["ddpm"], "--num_samples", "2", "--scheduler", "own", "--output_dir", str(tmp_path / "own"))
    assert (saved_config(tmp_path / "own")["scheduler"], saved_config(tmp_path / "own")["num_inference_steps"]) == ("own", None)
    assert "DDPMScheduler (as saved, " in (tmp_path / "own" / "README.md").read_text()

    # a GAN has no sampler: nothing is recorded for it, and asking for one is an error
    run_generate("--model", models["gan"], "--num_samples", "2", "--output_dir", str(tmp_path / "gan"))
    assert (saved_config(tmp_path / "gan")["scheduler"], saved_config(tmp_path / "gan")["num_inference_steps"]) == (None, None)
    gan = load_fundus_pipeline(models["gan"], device="cpu")
    with pytest.raises(ValueError, match=r"apply to diffusion models; FundusGANPipeline \(a GAN\) has no sampler"):
        prepare_pipeline(gan, GenerationConfig(model=models["gan"], num_samples=1, num_inference_steps=20))
    with pytest.raises(ValueError, match=r"--timestep_spacing / autoguidance apply to diffusion models"):
        prepare_pipeline(gan, GenerationConfig(model=models["gan"], num_samples=1, timestep_spacing="linspace"))


def test_resume_compares_the_settled_sampler_once_the_model_is_loaded(models, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    run_generate("--model", models["ddpm"], "--num_samples", "2", "--num_inference_steps", "2", "--output_dir", str(out))
    unsettled = GenerationConfig(model=models["ddpm"], num_samples=2, num_inference_steps=2, device="cpu")
    check_resume(str(out), unsettled, resume=True, model_loaded=False)  # the script's early check lets the default by
    with pytest.raises(ValueError, match=r"scheduler dpmsolver\+\+ \(now not set\)"):
        check_resume(str(out), unsettled, resume=True)  # unsettled is not what the run recorded
    run_generate("--model", models["ddpm"], "--num_samples", "2", "--num_inference_steps", "2", "--output_dir", str(out), "--resume")
    with pytest.raises(ValueError, match=r"--resume with other settings.*scheduler dpmsolver\+\+ \(now own\)"):
        run_generate(
            "--model", models["ddpm"], "--num_samples", "2", "--num_inference_steps", "2", "--scheduler", "own",
            "--output_dir", str(out), "--resume",
        )  # fmt: skip


def test_the_precision_is_recorded_and_compared_on_resume(models, tmp_path):  # noqa: F811
    out = tmp_path / "bf16"
    run_generate("--model", models["ddpm"], "--num_samples", "2", "--num_inference_steps", "2", "--dtype", "bf16", "--output_dir", str(out))
    assert saved_config(out)["dtype"] == "bf16"
    with pytest.raises(ValueError, match=r"--resume with other settings.*dtype bf16 \(now fp32\)"):
        run_generate("--model", models["ddpm"], "--num_samples", "2", "--num_inference_steps", "2", "--output_dir", str(out), "--resume")
    run_generate("--model", models["gan"], "--num_samples", "2", "--output_dir", str(tmp_path / "gan"))
    assert saved_config(tmp_path / "gan")["dtype"] == "fp32"  # auto on the CPU


def test_resampling_defaults_to_ddpm_which_keeps_no_solver_state(models):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    settled = prepare_pipeline(pipe, GenerationConfig(model=models["ddpm"], num_samples=1, resample_steps=2, masks_from="m"))
    assert (settled.scheduler, settled.num_inference_steps) == ("ddpm", None) and type(pipe.scheduler).__name__ == "DDPMScheduler"


class BatchRecorder:
    """Passes calls to a pipeline and records each call's batch size."""

    def __init__(self, pipe):
        self.pipe, self.batches = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.batches.append(kwargs["batch_size"])
        return self.pipe(**kwargs)


def test_compiled_network_samples_as_eager_with_one_batch_shape(models, tmp_path, inductor):  # noqa: F811
    """5 samples in batches of 2 (the last one padded to 2, its copy dropped), compiled once, never recompiled: the
    same images as eager within a grey level, the same masks nearly everywhere; regenerate pads its one sample too."""
    settings = dict(model=models["ddpm"], num_samples=5, seed=3, shard_size=4, batch_size=2, num_inference_steps=2, labels={"PM": 5})
    eager = generate_dataset(load_fundus_pipeline(models["ddpm"], device="cpu"), GenerationConfig(**settings), str(tmp_path / "eager"))

    compiled_config = GenerationConfig(**settings, compile="default")
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    torch._dynamo.reset()
    prepare_pipeline(pipe, compiled_config)  # before wrapping: the scheduler is set on the pipeline itself
    pipe = BatchRecorder(pipe)
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = generate_dataset(pipe, compiled_config, str(tmp_path / "compiled"))
        image, masks = regenerate(pipe, compiled_config, 4)
    assert pipe.batches == [2, 2, 2, 2] and len(compiled) == 5  # shards [0-3], [4]: the batch of sample 4 padded
    assert getattr(pipe.unet, "_compiled_call_impl", None) is not None
    assert compiled["seed"] == eager["seed"] == [3, 4, 5, 6, 7]
    for a, b in zip(compiled["image"], eager["image"]):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    for name in ("disc_mask", "atrophy_mask"):
        agree = np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in zip(compiled[name], eager[name])])
        assert agree > 0.99, name
    assert np.array_equal(np.asarray(image), np.asarray(compiled[4]["image"]))  # padded alike: bit for bit
    assert np.array_equal(np.asarray(masks["disc"]), np.asarray(compiled[4]["disc_mask"]))
    assert saved_config(tmp_path / "compiled")["compile"] == "default"
    # compile is a speed setting: a compiled run resumes an eager one
    check_resume(str(tmp_path / "eager"), GenerationConfig(**saved_config(tmp_path / "compiled")), resume=True)


def test_channels_last_and_cudnn_benchmark_sample_as_the_default(models, tmp_path):  # noqa: F811
    """The layout and cuDNN settings are speed settings: the network's weights become NHWC, the flag is set, the
    images stay within a grey level of the default run's, and such a run resumes a default one."""
    settings = dict(model=models["ddpm"], num_samples=3, seed=5, batch_size=3, num_inference_steps=2)
    default = generate_dataset(load_fundus_pipeline(models["ddpm"], device="cpu"), GenerationConfig(**settings), str(tmp_path / "default"))
    config = GenerationConfig(**settings, channels_last=True, cudnn_benchmark=True)
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    was = torch.backends.cudnn.benchmark
    try:
        prepare_pipeline(pipe, config)
        assert torch.backends.cudnn.benchmark is True
        weight = next(w for w in pipe.unet.parameters() if w.dim() == 4)
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        fast = generate_dataset(pipe, config, str(tmp_path / "fast"))
    finally:
        torch.backends.cudnn.benchmark = was
    for a, b in zip(fast["image"], default["image"]):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    check_resume(str(tmp_path / "default"), GenerationConfig(**saved_config(tmp_path / "fast")), resume=True)


def test_padding_drops_the_copies_and_keeps_each_sample(models):  # noqa: F811
    """Without compiling: a padded batch (compile set, network already prepared) gives the unpadded samples."""
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = prepare_pipeline(pipe, GenerationConfig(model=models["ddpm"], num_samples=3, batch_size=4, num_inference_steps=2))
    pipe = BatchRecorder(pipe)
    plain_images, plain_masks, _ = generate_samples(pipe, [7, 8, 9], [None] * 3, config)
    padded_images, padded_masks, _ = generate_samples(pipe, [7, 8, 9], [None] * 3, replace(config, compile="default"))
    assert pipe.batches == [3, 4] and len(padded_images) == len(padded_masks) == 3
    for a, b in zip(plain_images, padded_images):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_samples_are_the_pipelines_own_8_bit_output(models):  # noqa: F811
    """generate_samples makes its 8-bit images and masks on the device; they must equal, byte for byte, what the
    pipeline's own ``pil`` output makes on the host from the same seeds."""
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    config = prepare_pipeline(pipe, GenerationConfig(model=models["ddpm"], num_samples=3, batch_size=3, num_inference_steps=2))
    images, masks, _ = generate_samples(pipe, [7, 8, 9], [None] * 3, config)
    own = pipe(batch_size=3, generator=[torch.Generator("cpu").manual_seed(s) for s in (7, 8, 9)], num_inference_steps=2)
    assert [np.asarray(im).tobytes() for im in images] == [np.asarray(im).tobytes() for im in own.images]
    assert [{n: np.asarray(m).tobytes() for n, m in ms.items()} for ms in masks] == [
        {n: np.asarray(m).tobytes() for n, m in ms.items()} for ms in own.masks
    ]
    assert len({np.asarray(im).tobytes() for im in images}) == 3  # three different samples, not one repeated


def test_sampling_throughput_quick_prints_a_table(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports a sibling script, as when run from there
    benchmark = runpy.run_path(str(REPO / "benchmarks" / "sampling_throughput.py"))
    output = tmp_path / "throughput.json"
    argv = ["--quick", "--modes", "eager", "--memory_formats", "contiguous,channels_last", "--cudnn_benchmark", "on,off"]
    args = benchmark["parse_args"]([*argv, "--output_json", str(output), "--work_dir", str(tmp_path / "w")])
    was = torch.backends.cudnn.benchmark
    benchmark["main"](args)
    assert torch.backends.cudnn.benchmark == was  # the rows' setting does not outlive them
    printed = capsys.readouterr().out
    assert "| mode | dtype | memory format | cuDNN benchmark | batch | images/s |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| eager | fp32 |")]
    assert [line.split(" | ")[2:4] for line in rows] == [
        ["contiguous", "off"], ["contiguous", "on"], ["channels_last", "off"], ["channels_last", "on"]
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        benchmark["parse_args"](["--quick", "--cudnn_benchmark", "False"])
    assert "| samples drawn | host RSS MiB | anonymous MiB | s |" in printed and "pairs/s" in printed
    saved = json.loads(output.read_text())
    assert {row["mode"] for row in saved["throughput"]} == {"eager"} and all(r["images_per_s"] > 0 for r in saved["throughput"])
    stream = saved["stream"]
    assert [r["samples"] for r in stream["memory_after_shard"]] == [16, 32, 48]  # 64 pairs in shards of 16
    peak = stream["memory_peak"]
    assert peak["rss_mib"] >= max(r["rss_mib"] for r in stream["memory_after_shard"]) > 0
    assert peak["anonymous_mib"] >= max(r["anonymous_mib"] for r in stream["memory_after_shard"]) > 0  # Linux
    assert stream["pairs_per_s"] > 0 and [r["seconds"] for r in stream["memory_after_shard"]] == sorted(r["seconds"] for r in stream["memory_after_shard"])
    # --profile: one more batch of each row through the profiler, its costliest kernels printed (CPU here)
    benchmark["main"](benchmark["parse_args"](["--quick", "--modes", "eager", "--sections", "throughput", "--profile"]))
    printed = capsys.readouterr().out
    assert "profile: eager fp32 contiguous cuDNN benchmark off batch 4" in printed and "Self CPU time total" in printed


def test_timestep_spacing_moves_the_last_step_to_zero_and_is_recorded_and_regenerated(ddpm_1000, tmp_path):
    run_generate("--model", ddpm_1000, "--num_samples", "2", "--scheduler", "ddpm", "--num_inference_steps", "5",
                 "--timestep_spacing", "linspace", "--output_dir", str(tmp_path / "linspace"))  # fmt: skip
    recorded = GenerationConfig(**{**saved_config(tmp_path / "linspace"), "model": ddpm_1000})
    assert recorded.timestep_spacing == "linspace"
    card = (tmp_path / "linspace" / "README.md").read_text()
    assert "DDPMScheduler (ddpm, linspace spacing)" in card and 'timestep_spacing="linspace"' in card
    pipe = load_fundus_pipeline(ddpm_1000, device="cpu")
    last_steps = {}
    for spacing in ("trailing", "linspace"):  # trailing ends 1000 / 5 - 1 above 0; linspace at 0
        prepare_pipeline(pipe, replace(recorded, timestep_spacing=spacing))
        pipe.scheduler.set_timesteps(5)
        last_steps[spacing] = int(pipe.scheduler.timesteps[-1])
    assert last_steps == {"trailing": 199, "linspace": 0}
    image, _ = regenerate(pipe, recorded, 1)  # the spacing comes back from the recorded settings
    written = load_fundus_dataset(str(tmp_path / "linspace"))[1]["image"]
    assert np.array_equal(np.asarray(image), np.asarray(written))
    with pytest.raises(ValueError, match="Unknown timestep spacing 'middle'"):
        GenerationConfig(model=ddpm_1000, num_samples=1, timestep_spacing="middle")
