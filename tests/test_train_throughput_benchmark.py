"""benchmarks/train_ddpm_throughput.py on the CPU with the tiny UNet: its training rows run the trainer's real step
(which once broke silently when the step began to need ``mask_annotated``), and MFU is a share of the peak given."""

import json
import runpy
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_ddpm_throughput.py"


def test_training_rows_run_the_trainer_step_and_report_mfu_of_the_given_peak(tmp_path, capsys):
    benchmark = runpy.run_path(str(BENCHMARK))
    saved = tmp_path / "rows.json"
    argv = ["--device", "cpu", "--tiny", "--sections", "train", "--variants", "baseline,eager", "--sizes", "64"]
    benchmark["main"](benchmark["parse_args"]([*argv, "--warmup", "1", "--steps", "1", "--peak_tflops", "0.001", "--json", str(saved)]))
    result = json.loads(saved.read_text())
    assert result["peak_tflops"] == 0.001
    assert [(r["variant"], r["section"]) for r in result["rows"]] == [("baseline", "train"), ("eager", "train")]
    assert all(r["images_per_s"] > 0 and r["tflops_per_s"] > 0 for r in result["rows"])
    printed = capsys.readouterr().out
    assert "/ 0.001 TFLOP/s bf16 peak" in printed
    mfu = 100 * result["rows"][1]["tflops_per_s"] / 0.001
    assert f"| {mfu:.0f}% |" in printed
