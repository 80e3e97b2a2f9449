"""How scripts start (CPU threads for the free cores) and end under ``accelerate launch`` (one line)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from fundus_diffusion import cli


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_follow_the_free_cores_unless_omp_num_threads_is_set(monkeypatch, restore_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.4, 0.0, 0.0))  # three cores busy with other work
    assert cli.choose_cpu_threads() == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(4)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))  # more runnable processes than cores
    assert cli.free_cpu_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))  # idle: torch's own default stands
    assert cli.choose_cpu_threads() == 4 and torch.get_num_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice (torch read it at start-up) is left alone
    monkeypatch.setattr(os, "getloadavg", lambda: (3.4, 0.0, 0.0))
    assert cli.choose_cpu_threads() == 4 and torch.get_num_threads() == 4


def test_a_user_error_under_accelerate_launch_quiet_is_one_line(tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    command = [accelerate, "launch", "--quiet", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--cpu", "scripts/train_ddpm.py", "--dataset", str(tmp_path / "missing"),
               "--output_dir", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(f"train_ddpm.py: error: {tmp_path / 'missing'}: no such local folder ({tmp_path}/ holds"), result.stderr
    assert lines[1:] == [f"(FUNDUS_DEBUG=1 shows the traceback{cli.LAUNCHER_HINT})"], result.stderr


def test_dataset_scripts_take_the_trainers_push_flags_and_the_old_ones_with_a_warning(capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="build_dataset.py")
    parser.add_argument("--output_dir", default="data/pm")
    cli.add_dataset_push_args(parser)
    args = parser.parse_args([])
    assert args.push_to_hub is False and not args.hub_private_repo
    args = parser.parse_args(["--push_to_hub", "--hub_private_repo"])
    assert args.push_to_hub and args.hub_private_repo and cli.dataset_repo_id(args) == "pm"
    assert capsys.readouterr().err == ""
    args = parser.parse_args(["--push_to_hub", "me/pm", "--private"])  # the previous release's spelling
    assert args.push_to_hub and args.hub_private_repo and cli.dataset_repo_id(args) == "me/pm"
    err = capsys.readouterr().err
    assert "--push_to_hub REPO is deprecated; use --push_to_hub --hub_model_id REPO" in err
    assert "--private is deprecated; use --hub_private_repo" in err
