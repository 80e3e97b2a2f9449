"""fundus_diffusion.evaluation.spectrum and benchmarks/power_spectrum.py: spectra ratios that can fail (a set against
itself is 1 everywhere, a blurred copy loses its fine and pixel bands and keeps its coarse one), the evaluation
report's section, and the benchmark's table, figure and JSON."""

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from diffusers import DDPMScheduler

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation import EvaluationConfig, evaluate, spectrum, write_report
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.report import edge_lines, spectrum_lines

spec = importlib.util.spec_from_file_location("power_spectrum", REPO_ROOT / "benchmarks" / "power_spectrum.py")
power_spectrum = importlib.util.module_from_spec(spec)
spec.loader.exec_module(power_spectrum)


def test_a_set_against_itself_is_one_and_a_blurred_copy_loses_the_fine_bands():
    real = dataset_arrays(load_phantom_dataset(8, size=64), 64, [], "phantoms")
    noisy = (real.float() + torch.randn(real.shape, generator=torch.Generator().manual_seed(0)) * 8).clamp(0, 255)
    blurred = F.interpolate(F.avg_pool2d(real.float(), 4), scale_factor=4, mode="bilinear").round().to(torch.uint8)
    red_changed = real.clone()
    red_changed[:, 0] = 255 - red_changed[:, 0]
    bands = {name: row["bands"] for name, row in spectrum.compare(
        real, {"same": real, "blurred": blurred, "noisy": noisy.round().to(torch.uint8), "red": red_changed}
    )["sets"].items()}  # fmt: skip
    for name in ("same", "red"):  # the green channel alone is compared
        assert all(abs(ratio - 1.0) < 1e-9 for ratio in bands[name].values()), name
    assert bands["blurred"]["pixel"] < bands["blurred"]["fine"] < 0.5 < 0.8 < bands["blurred"]["coarse"] < 1.25
    assert bands["noisy"]["pixel"] > 1.5 and 0.8 < bands["noisy"]["coarse"] < 1.25  # added noise: extra pixel energy


def test_a_green_stripe_pattern_shows_at_its_own_frequency_and_band():
    real = dataset_arrays(load_phantom_dataset(8, size=128), 128, [], "phantoms")
    stripes = real.clone()
    columns = torch.arange(128, dtype=torch.float64)
    wave = 40 * torch.cos(2 * torch.pi * 0.25 * columns)  # 0.25 cycles per px: a 4 px period
    stripes[:, 1] = (stripes[:, 1].double() + wave).clamp(0, 255).round().to(torch.uint8)
    results = spectrum.compare(real, {"stripes": stripes})
    frequencies, row = results["frequencies_cycles_per_px"], results["sets"]["stripes"]
    assert frequencies == [k / 128 for k in range(1, 64)]
    assert frequencies[int(torch.tensor(row["ratio"]).argmax())] == 0.25
    assert row["bands"]["fine"] > 1.5 and max(row["bands"][b] for b in ("coarse", "middle", "pixel")) < 1.2


def test_the_cli_prints_the_bands_and_writes_the_figure_and_json(tmp_path, capsys):
    phantoms = load_phantom_dataset(12, size=128)
    paths = {}
    for name, rows in {"train": range(8), "holdout": range(8, 12)}.items():
        paths[name] = str(tmp_path / name)
        phantoms.select(rows).save_to_disk(paths[name])
    power_spectrum.main([
        "--real", paths["train"], "--holdout", paths["holdout"], "--synthetic", f"copy={paths['train']}",
        "--resolution", "128", "--figure", str(tmp_path / "spectra.png"), "--output_json", str(tmp_path / "s.json"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "s.json").read_text())
    assert set(saved["sets"]) == {"held-out real (control)", "copy"} and len(saved["frequencies_cycles_per_px"]) == 63
    assert saved["sets"]["copy"]["bands"]["fine"] == 1.0 and (tmp_path / "spectra.png").stat().st_size > 0
    assert "| copy | 8 | 1.00 | 1.00 | 1.00 | 1.00 |" in capsys.readouterr().out
    for bad in (["--resolution", "64"], ["--synthetic", "no-name-given"], ["--synthetic", "a=x", "--synthetic", "a=y"],
                ["--samplers", "ddpm"], ["--samplers", "heun:20"]):
        with pytest.raises(SystemExit):  # refused before any set is read
            power_spectrum.main(["--real", str(tmp_path / "missing"), *bad])


def test_white_noise_crosses_the_noise_at_its_own_log_snr_in_every_band():
    noise = 128 + 12.75 * torch.randn(16, 3, 128, 128, generator=torch.Generator().manual_seed(0))  # std 0.1 in [-1, 1]
    crossings = spectrum.noise_crossings(noise.clamp(0, 255).round().to(torch.uint8))
    assert set(crossings) == set(spectrum.BANDS)
    assert all(abs(value - math.log(1 / 0.01)) < 0.1 for value in crossings.values())  # -log(variance) = 4.61


def test_last_steps_follow_the_spacing():
    schedule = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    steps = power_spectrum.last_steps(schedule, ["ddpm:100", "ddpm:100:linspace", "dpmsolver++:20"])
    assert {k: v["last_timestep"] for k, v in steps.items()} == {"ddpm:100": 9, "ddpm:100:linspace": 0, "dpmsolver++:20": 49}
    alpha_bar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    assert steps["ddpm:100"]["log_snr"] == pytest.approx(math.log(alpha_bar[9] / (1 - alpha_bar[9])))


def test_the_report_section_is_computed_from_128_px_and_shows_each_band():
    real = dataset_arrays(load_phantom_dataset(8, size=128), 128, [], "phantoms")
    blurred = F.interpolate(F.avg_pool2d(real.float(), 4), scale_factor=4, mode="bilinear").round().to(torch.uint8)
    section = spectrum.spectrum_section(real, real[:4], blurred)
    assert section["computed"] and set(section["sets"]) == {spectrum.CONTROL, "synthetic"}
    assert section["sets"][spectrum.CONTROL]["bands"]["fine"] == pytest.approx(1.0, abs=0.2)
    assert section["sets"]["synthetic"]["bands"]["fine"] < 0.5
    lines = spectrum_lines(section, "128 px")
    assert f"| synthetic | 8 | {section['sets']['synthetic']['bands']['coarse']:.2f} |" in "\n".join(lines)
    small = spectrum.spectrum_section(real[:, :, ::2, ::2], real[:4, :, ::2, ::2], blurred[:, :, ::2, ::2])
    assert not small["computed"] and "128 or more pixels a side (these: 64)" in small["reason"]
    assert "Not computed: the coarse band needs images of 128" in "\n".join(spectrum_lines(small, "64 px"))


def test_speckle_on_the_disc_edge_shows_on_the_edge_and_nowhere_else():
    """edge_section can fail: a set against itself is 1 at every distance; the same set with speckle added within 2 px
    of each disc's edge is far above 1 there and 1 on the retina; the report renders it, and without a disc says so."""
    real = dataset_arrays(load_phantom_dataset(6, size=128), 128, ["disc"], "phantoms")
    disc = real[:, 3:4].float() / 255
    near_edge = (F.max_pool2d(disc, 5, 1, 2) - (-F.max_pool2d(-disc, 5, 1, 2))) > 0  # within 2 px of the edge
    noise = torch.randn(real[:, :3].shape, generator=torch.Generator().manual_seed(0)) * 40
    speckled = real.clone()
    speckled[:, :3] = (real[:, :3].float() + noise * near_edge).clamp(0, 255).round().to(torch.uint8)
    same = spectrum.edge_section(real, real, real, 3)
    assert all(ratio == pytest.approx(1.0) for ratio in same["sets"]["synthetic"]["ratio"].values())
    ratios = spectrum.edge_section(real, real, speckled, 3)["sets"]["synthetic"]["ratio"]
    assert ratios["the edge, within 3 px"] > 3 and ratios["retina, over 20 px out"] == pytest.approx(1.0, abs=0.05)
    lines = "\n".join(edge_lines(spectrum.edge_section(real, real, speckled, 3), "128 px"))
    assert f"| synthetic | 6 | {ratios['disc, over 6 px inside']:.2f} |" in lines and "the edge, within 3 px" in lines
    assert "Not computed: the sets hold no disc mask" in "\n".join(edge_lines(spectrum.edge_section(real, real, real, None), "128 px"))
    small = spectrum.edge_section(real[:, :, ::2, ::2], real[:, :, ::2, ::2], real[:, :, ::2, ::2], 3)
    assert not small["computed"] and "128 or more pixels a side (these: 64)" in small["reason"]
    assert edge_lines(None, "128 px") == []  # a report from before the section
    json.dumps(spectrum.edge_section(real, real, speckled, 3), allow_nan=False)  # open ends and empty bands: JSON


def test_evaluate_reports_the_spectrum_with_its_figure_and_older_reports_render_without(tmp_path):
    real, holdout = load_phantom_dataset(12, size=128, seed=0), load_phantom_dataset(6, size=128, seed=1000, split="test")
    synthetic = load_phantom_dataset(8, size=128, seed=2000)
    config = EvaluationConfig(masks="none", resolution=128, device="cpu", realism_steps=1, realism_folds=2)
    report, figures = evaluate(real, synthetic, holdout, config)
    paths = write_report(report, figures, str(tmp_path))
    saved_report = json.loads(open(paths["json"]).read())
    assert saved_report["edge_detail"] == {"computed": False, "reason": "the sets hold no disc mask"}  # --masks none
    saved = saved_report["power_spectrum"]
    assert saved["computed"] and saved["sets"]["synthetic"]["n"] == 8 and saved["sets"][spectrum.CONTROL]["n"] == 6
    assert (tmp_path / "power_spectrum.png").stat().st_size > 0
    assert "| synthetic | 8 |" in open(paths["markdown"]).read()
    assert spectrum_lines(None, "128 px") == []  # a report from before the section
    write_report(report, {k: v for k, v in figures.items() if k != "power_spectrum"}, str(tmp_path))  # --overwrite
    assert not (tmp_path / "power_spectrum.png").exists() and (tmp_path / "report.json").exists()  # none outlives it


def test_training_share_counts_the_timesteps_near_each_crossing():
    alpha_bar = torch.sigmoid(torch.linspace(10, -10, 1000, dtype=torch.float64))  # log-SNR evenly from 10 to -10
    shares = spectrum.training_share_near_crossings(alpha_bar, {"a": 0.0, "b": 9.5, "c": 30.0})
    assert shares == {"a": pytest.approx(0.1, abs=0.002), "b": pytest.approx(0.075, abs=0.002), "c": 0.0}


def test_schedules_from_training_flags_with_their_shares_and_last_steps(tmp_path, capsys):
    phantoms = load_phantom_dataset(8, size=128)
    phantoms.save_to_disk(str(tmp_path / "real"))
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "model" / "scheduler")
    results = power_spectrum.main([
        "--real", str(tmp_path / "real"), "--resolution", "128", "--samplers", "ddpm:100", "--model", str(tmp_path / "model"),
        "--schedules", "shift32=--schedule_base_resolution 32 --schedule_detail_resolution 32; "
        "interpolated=--schedule_base_resolution 32 --schedule_detail_resolution 128",
    ])  # fmt: skip
    rows = results["schedules"]
    assert list(rows) == [str(tmp_path / "model"), "shift32", "interpolated"]
    near = {name: row["training_share_near_crossing"] for name, row in rows.items()}
    # the constant shift moves training towards the noise: the interpolated one gives the finest bands more of it
    assert near["interpolated"]["pixel"] > near["shift32"]["pixel"] and near["interpolated"]["fine"] > near["shift32"]["fine"]
    assert near["shift32"]["coarse"] >= near["interpolated"]["coarse"]
    last = {name: row["last_steps"]["ddpm:100"]["log_snr"] for name, row in rows.items()}
    assert last["shift32"] < last["interpolated"]
    assert "| shift32 |" in capsys.readouterr().out
    for bad in ("a=--preset paper --schedule_detail_resolution 128", "a=;a=", "=--snr_gamma 5"):
        with pytest.raises(SystemExit):  # refused before any set is read
            power_spectrum.main(["--real", str(tmp_path / "missing"), "--resolution", "128", "--schedules", bad])
