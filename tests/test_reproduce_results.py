"""scripts/reproduce_results.sh end to end with tiny settings (SMOKE=1) on the real data: split, eight trainings,
generation, evaluation, the summary, and the RESULTS.md table built from it. About 3.5 minutes on 2 CPU cores."""

import json
import os
import subprocess
import sys

from conftest import REPO_ROOT, SHARED_DATA


def test_the_results_chain_runs_and_summarises(tmp_path, fundus_od_dir, palm224_dir, capsys):
    results = tmp_path / "results"
    env = {**os.environ, "SMOKE": "1", "DATA": str(SHARED_DATA), "RESULTS": str(results), "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        ["bash", "scripts/reproduce_results.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished (failures: 0)" in done.stdout

    summary = json.loads((results / "summary.json").read_text())
    evaluated = {"dcgan-paper", "dcgan-diffaug", "dcgan-diffaug-sn-hinge", "ddpm-paper", "ddpm-256-dpm20"}
    evaluated |= {"ddpm-256-ddpm1000", "phantom-5ch", "palm-cond"}
    assert evaluated <= set(summary) and summary["training_args"]["ddpm-256"]["max_train_steps"] == 3
    assert all(summary["seconds"][run] >= 0 for run in ("ddpm-256", "gen-ddpm-256-dpm20", "eval-ddpm-256-dpm20"))

    from test_summarise_results import SUMMARISE

    SUMMARISE["main"]([str(results / "summary.json")])
    table = capsys.readouterr().out
    assert "| 4a. our DDPM | 256 | 4 | UNet `small256`, cosine, v-pred, 3 steps of 4, fp32 |" in table
    assert table.count("not evaluated") == 0 and "6. PALM class-conditional DDPM" in table
