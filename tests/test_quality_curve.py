"""benchmarks/quality_curve.py: quality against training minutes from a realism ablation's folders (constructed)."""

import importlib.util
import json
import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # quality_curve imports its sibling utility_figure, as when run
spec = importlib.util.spec_from_file_location("quality_curve", REPO_ROOT / "benchmarks" / "quality_curve.py")
quality_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality_curve)


def write_run(work, variant, rows):
    logs = work / "runs" / variant / "logs"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("step,loss,wall_s\n" + "".join(f"{step},0.1,{seconds}\n" for step, seconds in rows))


def write_report(
    work, name, synthetic, auc, real=0.96, refused=None, power=None, coherence=None, views=(), global_look=None, edge=None
):
    """``views``: (view, AUC) pairs of the realism section's other views (disc_region, outside_disc, quarter_resolution)."""
    dice = lambda value: {"disc": {"dice": {"mean": value, "std": 0.0, "n": 1}}}  # noqa: E731
    report = {
        "downstream": {"results": {"real": dice(real), "synthetic": dice(synthetic), "real+synthetic": dice(real)}},
        "refused": refused,
        "realism": {
            "computed": True,
            "recipe": {"invariance": "robust"},
            "real_vs_synthetic": {"auc": {"mean": auc}},
            "real_vs_real": {"auc": {"mean": 0.5}},
        },
    }
    for view, view_auc in views:
        report["realism"][view] = {"computed": True, "real_vs_synthetic": {"auc": {"mean": view_auc}}}
    if global_look is not None:  # the combined AUC of evaluate.py's global-look section
        report["global_look"] = {"computed": True, "combined": {"mean": global_look}}
    if power is not None:  # (middle, fine) band ratios of evaluate.py's power-spectrum section
        bands = {"coarse": 1.0, "middle": power[0], "fine": power[1], "pixel": 2.5}
        report["power_spectrum"] = {"computed": True, "sets": {"synthetic": {"bands": bands}}}
    if edge is not None:  # evaluate.py's edge-detail section: the ratio within 3 px of the disc's edge
        report["edge_detail"] = {"computed": True, "sets": {"synthetic": {"ratio": {"the edge, within 3 px": edge}}}}
    if coherence is not None:  # evaluate.py's disc-appearance section
        statistics = {"orientation_coherence": {"mean": coherence}}
        styles = {"synthetic / like drions": {"share": 0.43}, "synthetic / like drishti": {"share": 0.57}}
        report["disc_appearance"] = {"computed": True, "sets": {"synthetic": {"statistics": statistics}, **styles}}
    (work / "eval" / name).mkdir(parents=True)
    (work / "eval" / name / "report.json").write_text(json.dumps(report))


def test_points_minutes_and_time_to_quality(tmp_path, capsys):
    write_run(tmp_path, "ours", [(10, 120), (2500, 300), (4990, 480), (5000, 482), (7500, 660)])
    write_report(tmp_path, "ours-2500", synthetic=0.70, auc=1.0)
    write_report(tmp_path, "ours-5000", synthetic=0.93, auc=0.85)  # Dice met, AUC not
    write_report(
        tmp_path, "ours-7500", synthetic=0.92, auc=0.78, power=(0.71, 0.37), coherence=0.61,
        views=(("disc_region", 0.9), ("outside_disc", 0.74), ("quarter_resolution", 0.77)), global_look=0.69, edge=4.6,
    )  # both met
    write_report(tmp_path, "ours-7500-ddpm100", synthetic=0.80, auc=0.70)  # another sampler: not in the default curve
    write_run(tmp_path, "other", [(10, 100), (2000, 400)])
    write_report(tmp_path, "other-2500", synthetic=0.95, auc=0.6)  # snapshot after the last logged step
    write_report(tmp_path, "other-2000", synthetic=0.95, auc=0.6, refused="REFUSED: 9 of 56 ...")  # copies
    curves = quality_curve.main([str(tmp_path), "--figure", str(tmp_path / "curve.png"), "--json", str(tmp_path / "c.json")])
    assert [p["step"] for p in curves["ours"]] == [2500, 5000, 7500]
    assert [p["minutes"] for p in curves["ours"]] == [5.0, 482 / 60, 11.0]
    assert curves["other"][1]["minutes"] == 400 / 60  # the last logged step before the snapshot
    assert quality_curve.time_to_quality(curves["other"])["step"] == 2500  # 2,000 meets the numbers but copies
    assert curves["other"][0]["refused"] and not curves["other"][1]["refused"]
    assert quality_curve.time_to_quality(curves["ours"])["step"] == 7500
    printed = capsys.readouterr().out
    assert "| 0.600 (robust) | 0.500 |  |  |  |  |  |  |  |  | refused: copies |" in printed and "other: time to quality step 2,500" in printed
    assert "ours: time to quality step 7,500, 11.0 min." in printed
    assert "| 0.780 (robust) | 0.500 | 0.900 | 0.740 | 0.770 | 0.690 | 0.71 / 0.37 / 2.50 | 4.60 | 0.610 | drions 43%, drishti 57% | met |" in printed
    assert "| ours | 5,000 | 8.0 | 0.930 | 96.9% | 0.960 | 0.850 (robust) | 0.500 |  |  |  |  |  |  |  |  | no |" in printed  # neither
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "c.json").read_text())["curves"]["ours"][2]["auc"] == 0.78
    images_only = tmp_path / "eval" / "ours-9000"
    images_only.mkdir()
    (images_only / "report.json").write_text(json.dumps({"downstream": {"results": {}}, "realism": {"computed": False}}))
    assert [p["step"] for p in quality_curve.collect(str(tmp_path))["ours"]] == [2500, 5000, 7500]  # left out, no crash
    ddpm = quality_curve.collect(str(tmp_path), ["-ddpm100"])
    assert list(ddpm) == ["ours-ddpm100"] and [p["step"] for p in ddpm["ours-ddpm100"]] == [7500]
    assert quality_curve.time_to_quality(ddpm["ours-ddpm100"]) is None  # 0.80 / 0.96 = 83% of real: the Dice bar is missed
    both = quality_curve.main([str(tmp_path), "--sampler_suffix=,-ddpm100"])  # each sampler its own curve
    assert list(both) == ["other", "ours", "ours-ddpm100"] and both["ours-ddpm100"][0]["minutes"] == 11.0


def test_committed_results_folders_draw_together(tmp_path):
    """docs/results/<folder> layout (<variant>_metrics.csv, <set>.report.json), several folders at once; a variant
    named alike in two folders is named by its folder."""
    for folder, dice in (("session-a", 0.90), ("session-b", 0.95)):
        work = tmp_path / "work" / folder
        write_run(work, "ours", [(10, 60), (2500, 300)])
        write_report(work, "ours-2500", synthetic=dice, auc=0.9)
        docs = tmp_path / folder
        docs.mkdir()
        (docs / "ours_metrics.csv").write_text((work / "runs" / "ours" / "logs" / "metrics.csv").read_text())
        (docs / "ours-2500.report.json").write_text((work / "eval" / "ours-2500" / "report.json").read_text())
    (tmp_path / "session-b" / "lone_metrics.csv").write_text("step,loss,wall_s\n10,0.1,60\n")
    assert quality_curve.collect(str(tmp_path / "session-a")) == quality_curve.collect(str(tmp_path / "work" / "session-a"))
    curves = quality_curve.main([str(tmp_path / "session-a"), str(tmp_path / "session-b")])
    assert list(curves) == ["session-a/ours", "session-b/ours"]
    assert [c[0]["dice_synthetic"] for c in curves.values()] == [0.90, 0.95] and curves["session-b/ours"][0]["minutes"] == 5.0
    alike = quality_curve.collect_all([str(tmp_path / "work" / "session-a"), str(tmp_path / "session-a")])  # one name
    assert list(alike) == [f"{tmp_path / 'work' / 'session-a'}/ours", f"{tmp_path / 'session-a'}/ours"]
