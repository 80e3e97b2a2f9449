"""The arithmetic behind benchmarks/multi_gpu.py's table (fundus_diffusion.training.run_folder), on a constructed run
folder (no training), and the benchmark's own refusal of a too-small dataset."""

import csv
import json
import runpy
from pathlib import Path

import pytest
import torch

from fundus_diffusion.training.run_folder import checks, finished, mean_and_error, read_metrics, second_half, throughput

MULTI_GPU = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "multi_gpu.py"))


def write_run(folder: Path, rows, checkpoints):
    (folder / "logs").mkdir(parents=True)
    with open(folder / "logs" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "loss", "wall_s"])
        writer.writeheader()
        writer.writerows(rows)
    for step in checkpoints:
        (folder / f"checkpoint-{step}").mkdir()
    (folder / "README.md").write_text("card")


def test_throughput_loss_and_checks_from_a_run_folder(tmp_path):
    # 10 logged steps, one every 2 s after a slow first step (warm-up); losses alternate 1.0 / 3.0.
    rows = [{"step": s, "loss": 1.0 if s % 2 else 3.0, "wall_s": 30 + 2 * s} for s in range(1, 11)]
    write_run(tmp_path / "run", rows, [10])
    late = second_half(read_metrics(tmp_path / "run"))
    assert [int(r["step"]) for r in late] == [6, 7, 8, 9, 10]
    assert throughput(late, effective_batch=64) == pytest.approx(64 * 4 / 8)  # 4 steps in 8 s
    mean, error = mean_and_error([1.0, 3.0, 1.0, 3.0])
    assert mean == 2.0 and error == pytest.approx((4 / 3) ** 0.5 / 2)
    assert checks(tmp_path / "run", 10) == {"checkpoints": ["checkpoint-10"], "resumed": False, "ok": True}

    write_run(tmp_path / "resumed", rows, [10, 12])  # continued past its own steps later
    found = checks(tmp_path / "resumed", 10)
    assert found["resumed"] and not found["ok"]


def test_refuses_a_dataset_smaller_than_the_largest_effective_batch():
    args = MULTI_GPU["parse_args"](["--gpus", "1,4", "--dataset", "phantom:200"])
    with pytest.raises(SystemExit, match="phantom:200 has 200 samples.*ddpm row 4x64.*256"):
        MULTI_GPU["check_dataset_size"](args)
    MULTI_GPU["check_dataset_size"](MULTI_GPU["parse_args"](["--gpus", "1,2", "--dataset", "phantom:200"]))


def test_reuses_only_finished_runs_with_the_same_settings(tmp_path):
    run, expected = tmp_path / "1x64_seed_0", {"dataset": "phantom:512", "train_batch_size": 64, "max_train_steps": 10}
    write_run(run, [{"step": 10, "loss": 1.0, "wall_s": 1.0}], [10])
    assert not finished(run, expected)  # no saved model yet
    (run / "model_index.json").write_text("{}")
    (run / "training_args.json").write_text(json.dumps({**expected, "train_batch_size": 32}))
    with pytest.raises(ValueError, match="other settings.*train_batch_size"):
        finished(run, expected)
    (run / "training_args.json").write_text(json.dumps(expected))
    assert finished(run, expected)
    (run / "checkpoint-12").mkdir()  # continued by a resume row, which re-saved its own arguments
    (run / "training_args.json").write_text(json.dumps({**expected, "max_train_steps": 12}))
    assert finished(run, expected)


def load_sampling_throughput(monkeypatch):
    """benchmarks/sampling_throughput.py's namespace; it imports a sibling script, as when run from benchmarks/."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "sampling_throughput.py"))


def test_sampling_throughput_writer_rows_time_one_thread_and_the_pool(tmp_path, capsys, monkeypatch):
    """benchmarks/sampling_throughput.py --sections writer: ready-made pairs through generate.py's writer, no model;
    every thread count writes the same files."""
    benchmark = load_sampling_throughput(monkeypatch)
    argv = ["--quick", "--sections", "writer", "--writer_samples", "6", "--shard_size", "4", "--writer_threads", "1,2"]
    results = benchmark["main"](benchmark["parse_args"]([*argv, "--work_dir", str(tmp_path)]))
    rows = results["writer"]
    assert [(r["threads"], r["png"]) for r in rows] == [(1, False), (2, False), (1, True), (2, True)]
    assert all(r["same_as_first"] and r["pairs"] == 6 and r["pairs_per_s"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "| encoding threads | --png | s (best of 2) | pairs/s | files as with the first row |" in printed and "| 2 | yes |" in printed
    assert list(tmp_path.iterdir()) == []  # the rows' folders are removed


def test_sampling_throughput_phantom_stream_writes_phantoms_in_the_models_place(tmp_path, capsys, monkeypatch):
    """--stream_sampler phantom: the pipeline is never called; each call returns the phantoms of its generators' seeds
    in the pipeline's pt output format (what generate_samples asks for), and the stream row runs generate.py's writer
    on them, shard by shard."""
    import numpy as np
    import torch

    from fundus_diffusion.data import draw_phantom

    benchmark = load_sampling_throughput(monkeypatch)

    def refuse(**kwargs):
        raise AssertionError("the model was called")

    watched = benchmark["ShardMemory"](refuse, shard_size=4, phantom_size=32)
    out = watched(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (5, 9)], output_type="pt")
    assert out.images.shape == (2, 3, 32, 32) and out.images.dtype == torch.float32
    eight_bit = np.round(out.images[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(eight_bit, np.asarray(draw_phantom(9, size=32).image))
    assert set(out.masks[0]["disc"].unique().tolist()) == {0.0, 1.0} and out.masks[0]["disc"].dtype == torch.float32

    argv = ["--quick", "--sections", "stream", "--stream_sampler", "phantom", "--stream_samples", "8", "--shard_size", "4"]
    stream = benchmark["main"](benchmark["parse_args"]([*argv, "--work_dir", str(tmp_path)]))["stream"]
    assert stream["sampler"] == "phantom" and [r["samples"] for r in stream["memory_after_shard"]] == [4]
    assert "pairs drawn as phantoms in the model's place" in capsys.readouterr().out


def test_unet_level_costs_count_the_convolution_flops_torch_counts():
    """benchmarks/unet_level_costs.py's per-level convolution FLOPs add up to torch.utils.flop_counter's count of the
    same forward pass's convolutions, and every level of the tiny UNet at 32 px is there."""
    from torch.utils.flop_counter import FlopCounterMode

    from fundus_diffusion.models.unet import build_unet

    costs = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "unet_level_costs.py"))
    unet = build_unet("tiny", 32, in_channels=4).eval()
    flops, norm_bytes = costs["level_costs"](unet, 4, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(torch.randn(1, 4, 32, 32), torch.tensor([500]), class_labels=torch.zeros(1, dtype=torch.long))
    assert sum(flops.values()) == counter.get_flop_counts()["Global"][torch.ops.aten.convolution]
    assert set(flops) == {32 // 2**i for i in range(len(unet.config.block_out_channels))}
    assert set(norm_bytes) <= set(flops) and norm_bytes[32] > 0
    assert "| 32 px |" in costs["table"](flops, norm_bytes)
