"""benchmarks/pm_detection.sh's CPU smoke run on the real palm-224 images (skips without them): every stage, one tiny
job sampled at two guidance scales, and a pack that holds their reports, the table and figure, and no real photograph."""

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
    assert {"eval/n20-seed0/report.json", "eval/n20-seed0/report.md", "pm_table.json", "split/test_ids.txt"} <= names
    assert {"eval/n20-seed0-w1/report.json", "synthetic/n20-seed0-w1/generation_config.json"} <= names  # the 2nd scale
    with tarfile.open(tmp_path / "out" / "pm_reports.tgz") as packed:
        table = json.load(packed.extractfile("pm_table.json"))
    assert "synthetic (guidance 1)" in table["summary"]["accuracy"]
    assert not any(name.startswith(("palm-224", "split/train", "subsets/n20")) for name in names)
