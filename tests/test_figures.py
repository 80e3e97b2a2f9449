"""The report figures (matplotlib, Agg): each draws what it is given, with no pixel-exact expectations, since
matplotlib's rendering changes between versions. Only synthetic arrays are drawn, never a photograph."""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from fundus_diffusion.evaluation.figures import COLOURS, bar_chart, histograms, line_chart, titled  # noqa: E402
from fundus_diffusion.evaluation.report import write_report  # noqa: E402
from fundus_diffusion.visualization import mask_colour  # noqa: E402


def _pixels_of(image: Image.Image, colour) -> np.ndarray:
    """(row, column) of every pixel exactly ``colour`` (line centres keep their colour under anti-aliasing)."""
    return np.argwhere((np.asarray(image) == colour).all(axis=2))


def test_line_chart_draws_each_curve_in_its_colour_where_its_values_are():
    low, high = ([0, 50, 100], [0.1, 0.1, 0.1]), ([0, 50, 100], [1.0, 1.0, np.nan])
    one = line_chart("loss", {"low": low})
    two = line_chart("loss", {"low": low, "high": high})
    assert one.mode == "RGB" and 600 <= two.width <= 1000 and 200 <= two.height <= 400
    assert len(_pixels_of(one, COLOURS[1])) == 0 and len(_pixels_of(two, COLOURS[1])) > 100
    assert not np.array_equal(np.asarray(one), np.asarray(two))
    # Image rows grow downwards: most of the low curve's pixels lie below the high one's (the legend is a few pixels).
    assert np.median(_pixels_of(two, COLOURS[0])[:, 0]) > np.median(_pixels_of(two, COLOURS[1])[:, 0]) + 50


def test_histograms_one_panel_per_title_and_one_outline_per_sample():
    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(0.3, 0.05, 40), np.r_[rng.normal(0.35, 0.05, 30), np.nan]
    one = histograms({"disc area fraction, 32 px": {"real": real}})
    two = histograms({"disc area fraction, 32 px": {"real": real, "synthetic": synthetic}})
    panels = histograms({f"disc {k}, 32 px": {"real": real, "synthetic": synthetic} for k in ("area", "x", "y")})
    assert one.size == two.size and 300 <= two.width <= 500 and 200 <= two.height <= 400
    assert 2.5 * two.width <= panels.width <= 3.5 * two.width and panels.height == two.height
    assert len(_pixels_of(one, COLOURS[1])) == 0 and len(_pixels_of(two, COLOURS[1])) > 50
    assert len(_pixels_of(histograms({"empty, 32 px": {"real": [np.nan]}}), (255, 255, 255))) > 0  # draws, no error


def test_bar_chart_leaves_out_nan_bars_and_grows_with_the_groups():
    groups = {"disc": {"real": (0.9, 0.02), "synthetic": (0.8, 0.05)}}
    without = bar_chart("Dice at 32 px", {"disc": {"real": (0.9, 0.02), "synthetic": (float("nan"), 0.0)}})
    with_both = bar_chart("Dice at 32 px", groups, x_label="mask", y_label="Dice", legend_title="trained on")
    assert 300 <= with_both.width <= 1000 and 200 <= with_both.height <= 450
    # The synthetic series keeps its legend swatch either way; only its bar adds many pixels of its colour.
    assert len(_pixels_of(with_both, COLOURS[1])) > 5 * max(len(_pixels_of(without, COLOURS[1])), 1)
    wide = bar_chart("Dice at 32 px", {**groups, **{f"m{i}": groups["disc"] for i in range(5)}})
    assert wide.width > with_both.width


def test_titled_keeps_the_sheet_and_shows_the_outline_colours():
    rng = np.random.default_rng(0)
    sheet = Image.fromarray(rng.integers(0, 255, (100, 384, 3), dtype=np.uint8))  # noise, not a photograph
    plain = titled(sheet, "8 synthetic samples at 32 px with their masks")
    legend = titled(sheet, "8 synthetic samples at 32 px with their masks", outlines=["disc", "atrophy"])
    for out in (plain, legend):
        assert out.width == sheet.width and np.array_equal(np.asarray(out)[-sheet.height :], np.asarray(sheet))
    header = legend.crop((0, 0, legend.width, legend.height - sheet.height))
    plain_header = plain.crop((0, 0, plain.width, plain.height - sheet.height))
    assert header.height > plain_header.height
    for name in ("disc", "atrophy"):
        assert len(_pixels_of(header, mask_colour(name))) > 10 and len(_pixels_of(plain_header, mask_colour(name))) == 0
    long = titled(sheet, "a title far longer than the sheet is wide, which must wrap onto a second line " * 2)
    assert long.height > plain.height
    narrow = sheet.crop((0, 0, 96, 32))  # three 32 px images (worst_holdout at 32 px: its title was cut off)
    out = titled(narrow, "worst held-out images for the synthetic-trained segmenter, disc Dice, 32 px")
    header = np.asarray(out)[: out.height - 32]
    left = (out.width - 96) // 2
    assert out.width > 200 and np.array_equal(np.asarray(out)[-32:, left : left + 96], np.asarray(narrow))
    assert (header[:, -4:] == header[0, -1]).all()  # the text ends before the strip's edge: nothing cut


def test_report_markdown_captions_each_known_figure(tmp_path):
    from fundus_diffusion.data import load_phantom_dataset
    from fundus_diffusion.evaluation import EvaluationConfig, evaluate

    dataset = load_phantom_dataset(6, size=32)
    report, figures = evaluate(dataset, dataset, config=EvaluationConfig(masks="none", resolution=16, device="cpu"))
    paths = write_report(report, figures, str(tmp_path))
    markdown = open(paths["markdown"]).read()
    assert "![sample_grid, 16 px](sample_grid.png)\n*The first synthetic samples" in markdown
    assert "![nearest_pairs, 16 px](nearest_pairs.png)\n*Each synthetic sample beside" in markdown


def test_a_ratio_chart_of_six_series_draws_six_colours():
    from fundus_diffusion.evaluation.figures import ratio_chart

    curves = {f"set {i}": [1.3 ** (i + 1)] * 3 for i in range(6)}  # a control and five sets, as session 15's spectra
    chart = ratio_chart("t", [0.01, 0.1, 0.5], curves, "x", "y")
    assert all(len(_pixels_of(chart, COLOURS[i])) > 50 for i in range(6)) and len(set(COLOURS)) == len(COLOURS)
