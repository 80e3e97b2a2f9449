"""benchmarks/utility_figure.py on constructed evaluate.py reports: the learning-curve table, its summary over subset
seeds, the per-source rows, refusal by the reports' verdict (and by the old any-flag rule for reports without one), and
the figure (where matplotlib is installed)."""

import importlib.util
import json

import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("utility_figure", REPO_ROOT / "benchmarks" / "utility_figure.py")
utility_figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(utility_figure)


OLD = object()  # a report written before evaluate.py gave a verdict: no "refused" key
COPIES = "REFUSED: 40 of 200 synthetic samples flagged as copies of the generator's 25 training images in pixels"


def report(n_real, dice, flagged=0, per_source=None, refused=None, auc=None):
    """The parts of an evaluate.py report.json the figure reads (``refused``: the verdict, ``OLD`` for none; ``auc``:
    the two-sample test's real-vs-synthetic and real-vs-real AUCs, None: not computed)."""
    scores = lambda d: {"disc": {"dice": {"mean": d, "std": 0.0, "n": 1}}}  # noqa: E731
    downstream = {"n_train": {"real": n_real}, "results": {name: scores(d) for name, d in dice.items()}}
    downstream["per_source"] = {
        name: {"disc": {source: {"dice": {"mean": d, "std": 0.0, "n": 1}} for source, d in by_source.items()}}
        for name, by_source in (per_source or {}).items()
    }
    content = {"downstream": downstream, "memorisation": {"pixels": {"n_flagged": flagged}, "segmenter": {"n_flagged": 0}}}
    if auc is not None:
        sides = {side: {"auc": {"mean": value, "std": 0.0, "n": 5}} for side, value in zip(("real_vs_synthetic", "real_vs_real"), auc)}
        content["realism"] = {"computed": True, **sides}
    return content if refused is OLD else {**content, "refused": refused}


@pytest.fixture
def reports_dir(tmp_path):
    jobs = {
        # chance flags, at the held-out control's rate: not refused by the verdict
        "n10-seed0": report(10, {"real": 0.6, "synthetic": 0.5, "real+synthetic": 0.7}, flagged=3),
        "n10-seed1": report(10, {"real": 0.8, "synthetic": 0.7, "real+synthetic": 0.9}),
        "n25-seed0": report(25, {"real": 0.85, "synthetic": 0.8, "real+synthetic": 0.88}, flagged=40, refused=COPIES),
        "n25-seed1": report(25, {"real": 0.75, "synthetic": 0.7, "real+synthetic": 0.8}, flagged=1, refused=OLD),
        "n10-seed0-twostep": report(10, {"real": 0.6, "synthetic": 0.65, "real+synthetic": 0.75}, refused=OLD),
        "all": report(134, {"real": 0.96, "synthetic": 0.94, "real+synthetic": 0.96}),
        "source-drions": report(
            72, {"real": 0.9, "synthetic": 0.8, "real+synthetic": 0.9},
            per_source={"real": {"drions": 0.95, "drishti": 0.7}, "synthetic": {"drions": 0.9, "drishti": 0.75}},
            auc=(0.81, 0.52),
        ),  # fmt: skip
        "source-drions-twostep": report(
            72, {"real": 0.9, "synthetic": 0.8, "real+synthetic": 0.9},
            per_source={"real": {"drions": 0.95, "drishti": 0.7}, "synthetic": {"drions": 0.9, "drishti": 0.8}},
            flagged=40, refused=COPIES,
        ),  # fmt: skip
    }
    for job, content in jobs.items():
        (tmp_path / "eval" / job).mkdir(parents=True)
        (tmp_path / "eval" / job / "report.json").write_text(json.dumps(content))
    (tmp_path / "eval" / "not-a-job").mkdir()  # a folder without report.json is passed over
    return tmp_path / "eval"


def test_table_summarises_subset_seeds_and_refuses_by_the_verdict(reports_dir):
    reports = utility_figure.load_reports(str(reports_dir))
    rows = utility_figure.curve_rows(reports)
    assert [(r["job"], r["n"], r["subset_seed"]) for r in rows] == [
        ("n10-seed0", 10, 0), ("n10-seed0-twostep", 10, 0), ("n10-seed1", 10, 1), ("n25-seed0", 25, 0),
        ("n25-seed1", 25, 1), ("all", 134, None),
    ]  # fmt: skip
    assert rows[0]["flagged_copies"] == 3 and rows[0]["refused"] is None and rows[0]["dice"]["synthetic"] == 0.5
    assert rows[1]["dice"] == {"synthetic (two-step)": 0.65, "real+synthetic (two-step)": 0.75}
    assert rows[1]["refused"] is None and rows[1]["rule"] == utility_figure.ANY_FLAG_RULE  # no flag: passes either way
    assert rows[3]["refused"] == COPIES and rows[3]["dice"] == {"real": 0.85, "synthetic": None, "real+synthetic": None}
    # a report without the verdict: the old rule, one flagged sample refuses it
    assert rows[4]["refused"].startswith("REFUSED by the old any-flag rule: 1 synthetic samples")
    assert rows[4]["dice"] == {"real": 0.75, "synthetic": None, "real+synthetic": None}
    summary = utility_figure.curve_summary(rows)
    assert summary["real"][10] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert sorted(summary["synthetic"]) == [10, 134] and summary["real"][25]["n"] == 2
    assert summary["real+synthetic (two-step)"] == {10: {"mean": 0.75, "std": 0.0, "n": 1}}
    sources = utility_figure.source_rows(reports)  # the refused two-step set left out
    assert [(r["trained_on"], r["training_set"], r["dice"]["drishti"]) for r in sources] == [
        ("drions", "real", 0.7), ("drions", "synthetic", 0.75)
    ]  # fmt: skip
    judged = utility_figure.judged_jobs(reports)
    assert {j["job"] for j in judged} == set(reports) and not any(j["refused"] for j in judged if j["job"] == "all")
    text = utility_figure.format_tables(rows, summary, sources, judged)
    assert "| 10 | 0.700 ± 0.100 (2) | 0.600 ± 0.100 (2) | 0.800 ± 0.100 (2) | 0.650 ± 0.000 (1) | 0.750 ± 0.000 (1) |" in text
    assert "| n10-seed0 | 10 | 0.600 | 0.500 | 0.700 | - | - | 3 | passed |" in text
    assert "| n25-seed0 | 25 | 0.850 | refused | refused | - | - | 40 | REFUSED |" in text
    assert "| n25-seed1 | 25 | 0.750 | refused | refused | - | - | 1 | REFUSED (any-flag rule) |" in text
    assert "| drions | synthetic | 0.900 | 0.750 |" in text
    assert "REFUSED for copies of training images (synthetic rows left out): n25-seed0, n25-seed1, source-drions-twostep" in text
    assert "Judged by the old any-flag rule" in text and text.endswith(": n10-seed0-twostep, n25-seed1")


def test_script_writes_the_json_and_the_figure(reports_dir, tmp_path, capsys):
    figure, table = tmp_path / "curves.png", tmp_path / "table.json"
    utility_figure.main([str(reports_dir), "--figure", str(figure), "--json", str(table)])
    captured = capsys.readouterr()
    assert "| 134 | 0.960 ± 0.000 (1)" in captured.out and "REFUSED for copies" in captured.out
    assert f"n25-seed0: {COPIES}" in captured.err and "n25-seed1: REFUSED by the old any-flag rule" in captured.err
    assert "n10-seed0:" not in captured.err  # chance flags are not named as refused
    written = json.loads(table.read_text())
    assert len(written["rows"]) == 6 and written["summary"]["real+synthetic"]["10"]["n"] == 2
    assert {j["job"]: j["refused"] for j in written["copy_check"]}["source-drions-twostep"] == COPIES
    per_source_jobs = {row["job"]: (row["auc"], row["control"]) for row in written["per_source_jobs"]}
    assert per_source_jobs == {"source-drions": (0.81, 0.52), "source-drions-twostep": (None, None)}
    job_table = captured.out[captured.out.index("| per-source job |") :]
    assert "| source-drions | 0.810 (0.520) | - |" in job_table and "| n10-seed0 |" not in job_table
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in captured.err and not figure.exists()
        pytest.skip("matplotlib is not installed: the figure is not drawn")
    from PIL import Image

    assert Image.open(figure).size[0] > 100


def test_an_empty_folder_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no <job>/report.json"):
        utility_figure.load_reports(str(tmp_path))


def test_per_source_jobs_alone_get_their_tables_and_no_empty_curve(reports_dir, tmp_path, capsys):
    for job in [p.name for p in reports_dir.iterdir() if not p.name.startswith("source-")]:
        for f in (reports_dir / job).iterdir():
            f.unlink()
        (reports_dir / job).rmdir()
    figure = tmp_path / "curves.png"
    utility_figure.main([str(reports_dir), "--figure", str(figure)])
    captured = capsys.readouterr()
    assert "| job | N |" not in captured.out and "| N |" not in captured.out  # no learning-curve table
    assert "| drions | real | 0.950 | 0.700 |" in captured.out
    assert "| source-drions | 0.810 (0.520) | - | 0 | passed |" in captured.out
    assert "| source-drions-twostep | - | - | 40 | REFUSED |" in captured.out
    assert "no learning-curve job among the reports" in captured.err and not figure.exists()
    # the own-camera reports beside eval/ (utility_curves.sh's eval-own-camera/) fill their column
    own = reports_dir.parent / "eval-own-camera" / "source-drions"
    own.mkdir(parents=True)
    (own / "report.json").write_text(json.dumps(report(72, {}, auc=(0.74, 0.49))))
    utility_figure.main([str(reports_dir)])
    assert "| source-drions | 0.810 (0.520) | 0.740 (0.490) | 0 | passed |" in capsys.readouterr().out
