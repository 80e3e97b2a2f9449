"""benchmarks/train_ddpm_throughput.py on the CPU with the tiny UNet: its training rows run the trainer's real step
(which once broke silently when the step began to need ``mask_annotated``), and MFU is a share of the peak given. In
its own process, as it is run: it builds accelerators whose state must not meet the other tests'."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_training_rows_run_the_trainer_step_and_report_mfu_of_the_given_peak(tmp_path):
    saved = tmp_path / "rows.json"
    argv = ["--device", "cpu", "--tiny", "--sections", "train", "--variants", "baseline,eager", "--sizes", "64",
            "--warmup", "1", "--steps", "1", "--peak_tflops", "0.001", "--json", str(saved)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "benchmarks/train_ddpm_throughput.py", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(saved.read_text())
    assert result["peak_tflops"] == 0.001
    assert [(r["variant"], r["section"]) for r in result["rows"]] == [("baseline", "train"), ("eager", "train")]
    assert all(r["images_per_s"] > 0 and r["tflops_per_s"] > 0 for r in result["rows"])
    assert "/ 0.001 TFLOP/s bf16 peak" in run.stdout
    mfu = 100 * result["rows"][1]["tflops_per_s"] / 0.001
    assert f"| {mfu:.0f}% |" in run.stdout


def test_sampling_rows_build_the_model_the_trainer_would_and_time_each_scheduler(tmp_path):
    """The sampling section once built a UNet without the ours preset's rotation embeddings, which the pipeline made
    from the same flags refused: every sampling row failed."""
    saved = tmp_path / "rows.json"
    argv = ["--device", "cpu", "--tiny", "--sections", "sample", "--sizes", "256", "--json", str(saved)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "benchmarks/train_ddpm_throughput.py", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(saved.read_text())["rows"]
    assert [r["section"] for r in rows] == ["sample"] * 4 and all(r["images_per_s"] > 0 for r in rows)
    assert any(r["variant"].startswith("DPM-Solver++") for r in rows)
