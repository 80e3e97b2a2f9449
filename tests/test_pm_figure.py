"""benchmarks/pm_figure.py on constructed evaluate_pm.py reports: rows, the summary over subset seeds, refused sets
left out of the curves and named, and the two-panel figure (where matplotlib is installed)."""

import importlib.util
import json
import sys

import pytest
from conftest import REPO_ROOT

from fundus_diffusion.evaluation.pm_utility import SHUFFLED

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # pm_figure imports its sibling utility_figure, as when run
spec = importlib.util.spec_from_file_location("pm_figure", REPO_ROOT / "benchmarks" / "pm_figure.py")
pm_figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pm_figure)


def report(n_real, accuracy, refused=None):
    """The parts of an evaluate_pm.py report.json the figure reads (AUC = accuracy + 0.05 for a known answer)."""
    scores = lambda a: {"accuracy": {"mean": a, "std": 0.0, "n": 3}, "auc": {"mean": a + 0.05, "std": 0.0, "n": 3}}  # noqa: E731
    return {
        "counts": {"real": {"n": n_real}},
        "detection": {"results": {k: scores(a) for k, a in accuracy.items()}},
        "refused": refused,
    }


@pytest.fixture
def reports_dir(tmp_path):
    jobs = {
        "n20-seed0": report(20, {"real": 0.6, "synthetic": 0.5, "real+synthetic": 0.7, SHUFFLED: 0.4}),
        "n20-seed1": report(20, {"real": 0.8, "synthetic": 0.7, "real+synthetic": 0.9, SHUFFLED: 0.6}),
        "n50-seed0": report(50, {"real": 0.85, SHUFFLED: 0.5}, refused="REFUSED: 40 of 200 synthetic samples flagged"),
        "all": report(320, {"real": 0.95, "synthetic": 0.9, "real+synthetic": 0.96}),
    }
    for job, content in jobs.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "report.json").write_text(json.dumps(content))
    return tmp_path


def test_rows_summary_and_refusal(reports_dir):
    rows = pm_figure.curve_rows(pm_figure.load_reports(str(reports_dir)))
    assert [(r["job"], r["n"], r["subset_seed"]) for r in rows] == [
        ("n20-seed0", 20, 0), ("n20-seed1", 20, 1), ("n50-seed0", 50, 0), ("all", 320, None)
    ]  # fmt: skip
    assert rows[2]["accuracy"] == {"real": 0.85, SHUFFLED: 0.5} and rows[2]["refused"].startswith("REFUSED")
    summaries = {metric: pm_figure.curve_summary(rows, metric, pm_figure.SETS) for metric in pm_figure.METRICS}
    assert summaries["accuracy"]["real"][20] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert summaries["auc"]["real+synthetic"][20]["mean"] == pytest.approx(0.85)
    assert sorted(summaries["accuracy"]["synthetic"]) == [20, 320]  # the refused N = 50 left out
    text = pm_figure.format_tables(rows, summaries)
    assert summaries["accuracy"][SHUFFLED][20] == pytest.approx({"mean": 0.5, "std": 0.1, "n": 2})
    assert "| n50-seed0 | 50 | 0.850 | 0.900 | REFUSED | REFUSED | REFUSED | REFUSED | 0.500 | 0.550 |" in text
    assert "| all | 320 | 0.950 | 1.000 | 0.900 | 0.950 | 0.960 | 1.010 | - | - |" in text  # no control in it
    assert "| 20 | 0.700 ± 0.100 (2) | 0.750 ± 0.100 (2) |" in text and "REFUSED for copies" in text


def test_script_writes_the_json_and_the_figure(reports_dir, tmp_path, capsys):
    figure, table = tmp_path / "pm.png", tmp_path / "pm.json"
    pm_figure.main([str(reports_dir), "--figure", str(figure), "--json", str(table)])
    captured = capsys.readouterr()
    assert "n50-seed0: REFUSED" in captured.err
    assert json.loads(table.read_text())["summary"]["auc"]["real"]["320"]["mean"] == pytest.approx(1.0)
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: the figure is not drawn")
    from PIL import Image

    assert Image.open(figure).size[0] > 1000  # two panels side by side


def test_guidance_variants_add_their_synthetic_lines_only(reports_dir):
    variants = {
        "n20-seed0-w1": report(20, {"real": 0.2, "synthetic": 0.3, "real+synthetic": 0.4, SHUFFLED: 0.1}),
        "n20-seed1-w1": report(20, {"real": 0.2, "synthetic": 0.5, "real+synthetic": 0.6, SHUFFLED: 0.1}),
        "all-w1.5": report(320, {"real": 0.95, SHUFFLED: 0.5}, refused="REFUSED: 30 of 200 synthetic samples flagged"),
    }  # their real and control classifiers repeat their jobs' own: not counted again
    for job, content in variants.items():
        (reports_dir / job).mkdir()
        (reports_dir / job / "report.json").write_text(json.dumps(content))
    rows = pm_figure.curve_rows(pm_figure.load_reports(str(reports_dir)))
    row = next(r for r in rows if r["job"] == "n20-seed0-w1")
    assert (row["n"], row["subset_seed"], row["guidance"]) == (20, 0, "1")
    assert row["accuracy"] == {"synthetic (guidance 1)": 0.3, "real+synthetic (guidance 1)": 0.4}
    sets = pm_figure.table_sets(rows)
    assert sets == [*pm_figure.SETS, "synthetic (guidance 1)", "real+synthetic (guidance 1)",
                    "synthetic (guidance 1.5)", "real+synthetic (guidance 1.5)"]  # fmt: skip
    summaries = {metric: pm_figure.curve_summary(rows, metric, sets) for metric in pm_figure.METRICS}
    assert summaries["accuracy"]["real"][20] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert summaries["auc"]["synthetic (guidance 1)"] == {20: pytest.approx({"mean": 0.45, "std": 0.1, "n": 2})}
    assert "synthetic (guidance 1.5)" not in summaries["accuracy"]  # refused: no line
    text = pm_figure.format_tables(rows, summaries)
    dashes = " | ".join(["-"] * 8)
    assert f"| n20-seed0-w1 | 20 | {dashes} | 0.300 | 0.350 | 0.400 | 0.450 | - | - | - | - |" in text
    assert f"| all-w1.5 | 320 | {dashes} | - | - | - | - | REFUSED | REFUSED | REFUSED | REFUSED |" in text
    refused_base = "| n50-seed0 | 50 | 0.850 | 0.900 | REFUSED | REFUSED | REFUSED | REFUSED | 0.500 | 0.550 |"
    assert refused_base + " - | - | - | - | - | - | - | - |" in text  # not REFUSED under the variants' columns
    assert pm_figure.PM_JOB.match("n20-seed0-twostep") is None  # a segmentation job's suffix is not a PM job
    assert pm_figure.PM_JOB.match("n20-seed0-wx") is None
