"""benchmarks/pm_detection.sh's CPU smoke run on the real palm-224 images (skips without them): every stage, one tiny
job sampled at two guidance scales, a pack that holds their reports, the table and figure and no real photograph,
and a resume at another guidance refused."""

import json
import os
import subprocess
import sys
import tarfile

from conftest import REPO_ROOT, SHARED_DATA

SMOKE = dict(
    SIZES="20", SUBSET_SEEDS="0", STEPS="2", N_SYN="8", SEEDS="1", CLS_STEPS="2", REALISM_STEPS="1", REALISM_FOLDS="2",
    RESOLUTION="32", RECIPE="--model_config tiny", PARALLEL="1", GUIDANCE="2 1",
    GEN_FLAGS="--scheduler ddpm --num_inference_steps 2 --batch_size 8",
)  # fmt: skip


def test_smoke_run_packs_a_report(palm224_dir, tmp_path):
    env = {
        **os.environ,
        **SMOKE,
        "DATA": str(SHARED_DATA),
        "WORK": str(tmp_path / "work"),
        "OUT": str(tmp_path / "out"),
    }
    env["PYTHON"] = sys.executable
    script = str(REPO_ROOT / "benchmarks" / "pm_detection.sh")
    for stage in ("train", "wait"):
        subprocess.run(["bash", script], env={**env, "STAGE": stage, "WAIT_S": "300"}, check=True, timeout=360)
    with tarfile.open(tmp_path / "out" / "pm_reports.tgz") as packed:
        names = set(packed.getnames())
        table = json.load(packed.extractfile("pm_table.json"))
        scales = {
            folder: json.load(packed.extractfile(f"synthetic/{folder}/generation_config.json"))["guidance_scale"]
            for folder in ("n20-seed0", "n20-seed0-w1")
        }
    assert {"eval/n20-seed0/report.json", "eval/n20-seed0/report.md", "pm_table.json", "split/test_ids.txt"} <= names
    assert "eval/n20-seed0-w1/report.json" in names and scales == {"n20-seed0": 2.0, "n20-seed0-w1": 1.0}
    assert "synthetic (guidance 1)" in table["summary"]["accuracy"]
    assert not any(name.startswith(("palm-224", "split/train", "subsets/n20")) for name in names)
    # A table script that fails (here a PYTHON that is no Python) packs the reports without a table, and says so.
    failed = subprocess.run(["bash", script], env={**env, "STAGE": "pack", "PYTHON": "false"}, capture_output=True)
    assert failed.returncode == 1 and b"pm_figure.py failed with false" in failed.stdout
    with tarfile.open(tmp_path / "out" / "pm_reports.tgz") as packed:
        assert "eval/n20-seed0/report.json" in packed.getnames() and "pm_table.json" not in packed.getnames()
    lost = subprocess.run(["bash", script], env={**env, "STAGE": "wait", "WORK": str(tmp_path / "elsewhere")})
    assert lost.returncode == 1  # a WORK where no queue was started
    # The same WORK resumed with another first scale would label the guidance-2 set as guidance 1: refused.
    resumed = subprocess.run(["bash", script], env={**env, "STAGE": "job", "JOB": "n20-seed0", "GUIDANCE": "1"})
    assert resumed.returncode == 1
    assert "sampled at another guidance than 1" in (tmp_path / "work" / "driver.log").read_text()
