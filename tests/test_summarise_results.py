"""scripts/summarise_results.py: each RESULTS.md row comes whole from one session's summary."""

import json
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARISE = runpy.run_path(str(REPO / "scripts" / "summarise_results.py"))


def rows(capsys, *paths):
    SUMMARISE["main"]([str(p) for p in paths])
    return {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines() if " | " in line}


def test_a_row_never_mixes_two_sessions(tmp_path, capsys):
    evaluated = REPO / "docs" / "results" / "summary_ddpm256_6000.json"  # session 3: trained, sampled, evaluated
    older = tmp_path / "older.json"  # session 2: the same run names, trained and sampled, no evaluation
    older.write_text(json.dumps({"device": "NVIDIA H100", "seconds": {"ddpm-256": 410, "gen-ddpm-256-dpm20": 41}}))
    for order in ([older, evaluated], [evaluated, older]):
        row = rows(capsys, *order)["4a. our DDPM"]
        assert "6,000 steps of 16, bf16, `--compile` |" in row and "| H200 | 768 |" in row
        assert (
            "| 43 (200) | 4.65 | 0.968 ± 0.001 | 0.948" in row and "| 0.966 ± 0.001 | — |" in row
        )  # no equal-passes row
    row = rows(capsys, older)["4a. our DDPM"]
    assert "2,000 steps of 16" in row and "| H100 | 410 |" in row and "not evaluated" in row


def test_equal_real_passes_column_and_compile_mode(capsys):
    session_4 = REPO / "docs" / "results" / "summary_ddpm256_cudagraphs.json"  # evaluated with --equal_real_passes
    table = rows(capsys, REPO / "docs" / "results" / "summary_ddpm256_6000.json", session_4)
    row = table["4b. our DDPM"]
    assert "| 448 (200) | 0.45 |" in row and "| 0.963 ± 0.002 | 0.969 ± 0.000 |" in row
    assert "`--compile` `--compile_mode reduce-overhead`" in table["4a. our DDPM"]


def test_equal_real_passes_cell_quotes_its_control(tmp_path, capsys):
    summary = json.loads((REPO / "docs" / "results" / "summary_ddpm256_cudagraphs.json").read_text())
    control = {"disc": {"dice": {"mean": 0.9661, "std": 0.0004, "n": 3}}}
    summary["ddpm-256-ddpm1000"]["downstream"]["results"]["real, as many steps as equal real passes"] = control
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    row = rows(capsys, tmp_path / "summary.json")["4b. our DDPM"]
    assert "| 0.969 ± 0.000 (real alone as long: 0.966 ± 0.000) |" in row


def test_two_sample_column_and_evaluated_resolution(tmp_path, capsys):
    summary = json.loads((REPO / "docs" / "results" / "summary_ddpm256_cudagraphs.json").read_text())
    row = rows(capsys, REPO / "docs" / "results" / "summary_ddpm256_cudagraphs.json")["4b. our DDPM"]
    assert row.endswith("| — | 128 |")  # predates the two-sample test; judged at 128 px
    report = summary["ddpm-256-ddpm1000"]
    report["config"]["resolution"] = 256
    report["realism"] = {
        "computed": True,
        "real_vs_synthetic": {"auc": {"mean": 0.9981, "std": 0.0021, "n": 5}, "n_per_class": 83},
        "real_vs_real": {"auc": {"mean": 0.52, "std": 0.05, "n": 5}, "n_per_class": 83},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    row = rows(capsys, tmp_path / "summary.json")["4b. our DDPM"]
    assert row.endswith("| 0.998 ± 0.002 (real vs real: 0.520 ± 0.050, 83 per side, plain judge) | 256 |")
    report["realism"]["recipe"] = {"invariance": "robust"}  # reports since the robust judge record it
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert rows(capsys, tmp_path / "summary.json")["4b. our DDPM"].endswith("83 per side, robust judge) | 256 |")
