"""benchmarks/utility_figure.py on constructed evaluate.py reports: the learning-curve table, its summary over subset
seeds, the per-source rows, refusal of copied sets, and the figure (where matplotlib is installed)."""

import importlib.util
import json

import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("utility_figure", REPO_ROOT / "benchmarks" / "utility_figure.py")
utility_figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(utility_figure)


def report(n_real, dice, flagged=0, per_source=None):
    """The parts of an evaluate.py report.json the figure reads."""
    scores = lambda d: {"disc": {"dice": {"mean": d, "std": 0.0, "n": 1}}}  # noqa: E731
    downstream = {"n_train": {"real": n_real}, "results": {name: scores(d) for name, d in dice.items()}}
    downstream["per_source"] = {
        name: {"disc": {source: {"dice": {"mean": d, "std": 0.0, "n": 1}} for source, d in by_source.items()}}
        for name, by_source in (per_source or {}).items()
    }
    return {"downstream": downstream, "memorisation": {"pixels": {"n_flagged": flagged}, "segmenter": {"n_flagged": 0}}}


@pytest.fixture
def reports_dir(tmp_path):
    jobs = {
        "n10-seed0": report(10, {"real": 0.6, "synthetic": 0.5, "real+synthetic": 0.7}),
        "n10-seed1": report(10, {"real": 0.8, "synthetic": 0.7, "real+synthetic": 0.9}),
        "n25-seed0": report(25, {"real": 0.85, "synthetic": 0.8, "real+synthetic": 0.88}, flagged=2),
        "n10-seed0-twostep": report(10, {"real": 0.6, "synthetic": 0.65, "real+synthetic": 0.75}),
        "all": report(134, {"real": 0.96, "synthetic": 0.94, "real+synthetic": 0.96}),
        "source-drions": report(
            72, {"real": 0.9, "synthetic": 0.8, "real+synthetic": 0.9},
            per_source={"real": {"drions": 0.95, "drishti": 0.7}, "synthetic": {"drions": 0.9, "drishti": 0.75}},
        ),  # fmt: skip
        "source-drions-twostep": report(
            72, {"real": 0.9, "synthetic": 0.8, "real+synthetic": 0.9},
            per_source={"real": {"drions": 0.95, "drishti": 0.7}, "synthetic": {"drions": 0.9, "drishti": 0.8}},
        ),  # fmt: skip
    }
    for job, content in jobs.items():
        (tmp_path / "eval" / job).mkdir(parents=True)
        (tmp_path / "eval" / job / "report.json").write_text(json.dumps(content))
    (tmp_path / "eval" / "not-a-job").mkdir()  # a folder without report.json is passed over
    return tmp_path / "eval"


def test_table_summarises_subset_seeds_and_refuses_copies(reports_dir):
    reports = utility_figure.load_reports(str(reports_dir))
    rows = utility_figure.curve_rows(reports)
    assert [(r["job"], r["n"], r["subset_seed"]) for r in rows] == [
        ("n10-seed0", 10, 0), ("n10-seed0-twostep", 10, 0), ("n10-seed1", 10, 1), ("n25-seed0", 25, 0), ("all", 134, None)
    ]  # fmt: skip
    assert rows[1]["dice"] == {"synthetic (two-step)": 0.65, "real+synthetic (two-step)": 0.75}
    assert rows[3]["flagged_copies"] == 2 and rows[3]["dice"] == {"real": 0.85, "synthetic": None, "real+synthetic": None}
    summary = utility_figure.curve_summary(rows)
    assert summary["real"][10] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert sorted(summary["synthetic"]) == [10, 134] and sorted(summary["real"]) == [10, 25, 134]
    assert summary["real+synthetic (two-step)"] == {10: {"mean": 0.75, "std": 0.0, "n": 1}}
    sources = utility_figure.source_rows(reports)
    assert [(r["trained_on"], r["training_set"], r["dice"]["drishti"]) for r in sources] == [
        ("drions", "real", 0.7), ("drions", "synthetic", 0.75), ("drions", "synthetic (two-step)", 0.8)
    ]  # fmt: skip
    text = utility_figure.format_tables(rows, summary, sources)
    assert "| 10 | 0.700 ± 0.100 (2) | 0.600 ± 0.100 (2) | 0.800 ± 0.100 (2) | 0.650 ± 0.000 (1) | 0.750 ± 0.000 (1) |" in text
    assert "| n25-seed0 | 25 | 0.850 | refused | refused | - | - | 2 |" in text
    assert "| drions | synthetic | 0.900 | 0.750 |" in text and "REFUSED for copies" in text


def test_script_writes_the_json_and_the_figure(reports_dir, tmp_path, capsys):
    figure, table = tmp_path / "curves.png", tmp_path / "table.json"
    utility_figure.main([str(reports_dir), "--figure", str(figure), "--json", str(table)])
    captured = capsys.readouterr()
    assert "| 134 | 0.960 ± 0.000 (1)" in captured.out and "REFUSED: n25-seed0" in captured.err
    written = json.loads(table.read_text())
    assert len(written["rows"]) == 5 and written["summary"]["real+synthetic"]["10"]["n"] == 2
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in captured.err and not figure.exists()
        pytest.skip("matplotlib is not installed: the figure is not drawn")
    from PIL import Image

    assert Image.open(figure).size[0] > 100


def test_an_empty_folder_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no <job>/report.json"):
        utility_figure.load_reports(str(tmp_path))
