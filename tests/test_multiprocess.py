"""Two training processes on the CPU (gloo) through ``accelerate launch``: what must hold on several GPUs too.

Checkpoints are written once and are complete, logs come from the main process only, and a run started on two
processes resumes on one (a different process count) and continues the step count.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fundus_diffusion.training import ddpm

REPO = Path(__file__).resolve().parents[1]


def launch(num_processes: int, script: str, *args: str):
    # `--cpu` would start one process whatever --num_processes says; `--multi_gpu` on a machine without CUDA starts
    # them all on the CPU (gloo), which is what a test here needs.
    mode = ["--multi_gpu"] if num_processes > 1 else ["--cpu"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), *mode,
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "scripts" / script), *args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def checkpoint_steps(folder: Path):
    assert not list(folder.glob(".tmp-checkpoint-*")), "a temporary checkpoint was left behind"
    return sorted(json.loads((p / "training_state.json").read_text())["step"] for p in folder.glob("checkpoint-*"))


@pytest.mark.parametrize("script", ["train_ddpm.py", "train_dcgan.py"])
def test_two_processes_then_resume_on_one(tmp_path, script):
    common = ["--dataset", "phantom:16", "--resolution", "16", "--masks", "disc", "--checkpointing_steps", "2",
              "--seed", "0", "--output_dir", str(tmp_path / "run"), "--training_cache_dir", str(tmp_path / "cache")]  # fmt: skip
    if script == "train_ddpm.py":
        common += ["--preset", "demo", "--train_batch_size", "2", "--validation_steps", "100"]
    else:
        common += [
            "--ngf",
            "4",
            "--ndf",
            "4",
            "--train_batch_size",
            "2",
            "--validation_steps",
            "100",
            "--logger",
            "none",
        ]
    launch(2, script, *common, "--max_train_steps", "4")
    run = tmp_path / "run"
    assert checkpoint_steps(run) == [2, 4]
    info = json.loads((run / "model_index.json").read_text())["training_info"]
    assert info["batch_size"] == 4  # 2 per device x 2 processes: both processes took part

    launch(1, script, *common, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    assert checkpoint_steps(run) == [2, 4, 6]
    if script == "train_ddpm.py":  # the LR schedule continues where it was, whatever the process count
        with open(run / "logs" / "metrics.csv") as f:
            lr = {int(row["step"]): float(row["lr"]) for row in csv.DictReader(f)}
        warmup = ddpm.parse_args(["--preset", "demo", "--output_dir", "x"])
        assert {s: round(v / warmup.learning_rate * warmup.lr_warmup_steps, 6) for s, v in lr.items()} == {2: 2, 4: 4, 6: 6}
    if script == "train_dcgan.py":  # one row per step, written by the main process only
        with open(run / "logs" / "metrics.csv") as f:
            steps = [int(row["step"]) for row in csv.DictReader(f)]
        assert steps == list(range(1, 7))
