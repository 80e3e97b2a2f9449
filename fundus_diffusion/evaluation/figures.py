"""Report figures drawn with matplotlib (the ``eval`` extra) on the Agg backend, so no display is needed: overlaid
histograms, grouped bar charts, line charts, spectrum-ratio charts, and a title strip with an outline-colour legend for contact sheets.

Every function returns a PIL RGB image, which ``report.write_report`` saves as ``<name>.png``."""

import io
import textwrap
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..visualization import mask_colour

COLOURS = [  # matplotlib's tab10: a figure of up to ten series draws each in its own colour
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip
PANEL = (4.0, 3.0)  # inches per panel; at DPI, 400 x 300 px
DPI = 100
STRIP = (20 / 255, 20 / 255, 20 / 255)  # the background of visualization.contact_sheet


def _pyplot():
    """matplotlib's pyplot on the Agg backend (imported here so that the package imports without the eval extra)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "fundus_diffusion.evaluation.figures needs matplotlib, which is not installed. Install the eval extra: "
            'pip install "fundus-diffusion[eval]" (or pip install matplotlib).'
        ) from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colour(i: int):
    """The ``i``-th series colour as matplotlib's 0-1 RGB tuple."""
    return tuple(c / 255 for c in COLOURS[i % len(COLOURS)])


def _to_image(figure, facecolor="white") -> Image.Image:
    """Render a matplotlib figure to a PIL RGB image and free it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor=facecolor)
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def histograms(
    panels: Dict[str, Dict[str, Sequence[float]]], bins: int = 20, y_label: str = "fraction of images"
) -> Image.Image:
    """One panel per title; in each, the histograms (step outlines, each summing to 1) of every named sample over
    shared bins, so that samples of different sizes compare. The title doubles as the x-axis label: it names the
    quantity and the resolution it was measured at. NaNs (e.g. no disc found) are left out of the counts."""
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, len(panels), figsize=(PANEL[0] * len(panels), PANEL[1]), squeeze=False, constrained_layout=True
    )
    for ax, (title, samples) in zip(axes[0], panels.items()):
        samples = {k: np.asarray(v, dtype=float) for k, v in samples.items()}
        samples = {k: v[~np.isnan(v)] for k, v in samples.items()}
        values = np.concatenate(list(samples.values()) + [np.zeros(0)])
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for i, (name, v) in enumerate(samples.items()):
            ax.hist(
                v, edges, weights=np.full(len(v), 1 / max(len(v), 1)), histtype="step", linewidth=2,
                color=_colour(i), label=f"{name} (n={len(v)})",
            )  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(title.split(",")[0])
        ax.set_ylabel(y_label)
        ax.legend(fontsize=8)
    return _to_image(figure)


def bar_chart(
    title: str,
    groups: Dict[str, Dict[str, Tuple[float, float]]],
    x_label: str = "",
    y_label: str = "",
    legend_title: Optional[str] = None,
) -> Image.Image:
    """Grouped bars in [0, 1] with +-std whiskers and the mean written on each bar: ``{group: {series: (mean,
    std)}}`` (e.g. mask -> training set). A NaN mean (not computed) leaves its bar out."""
    plt = _pyplot()
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = max(PANEL[0], 0.6 * len(groups) * len(series) + 1.5) + 1.5  # + the legend on the right
    figure, ax = plt.subplots(figsize=(width, PANEL[1] + 0.3), constrained_layout=True)
    bar_w = 0.8 / max(len(series), 1)
    for s, name in enumerate(series):
        at = [(g, *values[name]) for g, values in enumerate(groups.values()) if name in values]
        at = [(g, mean, std) for g, mean, std in at if not np.isnan(mean)]
        if not at:
            continue
        x = np.array([g for g, _, _ in at]) - 0.4 + bar_w * (s + 0.5)
        means, stds = np.array([m for _, m, _ in at]), np.nan_to_num(np.array([d for _, _, d in at]))
        bars = ax.bar(x, means, bar_w * 0.9, yerr=stds, capsize=3, color=_colour(s), label=name)
        ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylim(0, 1.1)
    ax.set_title("\n".join(textwrap.wrap(title, int((width - 1.5) * DPI / 7))), fontsize=10)  # over the bars, not the legend
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(title=legend_title, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _to_image(figure)


def line_chart(
    title: str,
    curves: Dict[str, Tuple[Sequence[float], Sequence[float]]],
    x_label: str = "step",
    y_label: str = "loss",
) -> Image.Image:
    """One panel of ``{name: (x values, y values)}`` lines from y = 0 (e.g. training loss against step); non-finite
    values are left out."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(2 * PANEL[0], PANEL[1]), constrained_layout=True)
    for i, (name, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        keep = np.isfinite(y)
        ax.plot(x[keep], y[keep], color=_colour(i), linewidth=2, label=name)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if curves:
        ax.legend(fontsize=8)
    return _to_image(figure)


def ratio_chart(
    title: str,
    x: Sequence[float],
    curves: Dict[str, Sequence[float]],
    x_label: str,
    y_label: str,
    dashed: Sequence[str] = (),
) -> Image.Image:
    """``{name: y values}`` over the shared ``x`` on log-log axes, with the line y = 1 (e.g. a power spectrum as a
    ratio to a reference's); the curves named in ``dashed`` (a control) are drawn dashed."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(2 * PANEL[0], 1.3 * PANEL[1]), constrained_layout=True)
    for i, (name, y) in enumerate(curves.items()):
        ax.plot(x, y, color=_colour(i), linewidth=2, label=name, linestyle="--" if name in dashed else "-")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel=x_label, ylabel=y_label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _to_image(figure)


MIN_TITLED_WIDTH = 240  # px: about 40 characters of a title line at 9 pt


def titled(figure: Image.Image, title: str, outlines: Sequence[str] = ()) -> Image.Image:
    """``figure`` (a contact sheet, pasted pixel for pixel) under a strip carrying ``title`` and, when given, a legend
    of the outline colours (``visualization.mask_colour``) of the masks named in ``outlines``. The strip is as dark as the sheet, on which the
    outline colours (chosen to show on a fundus, one of them white) are readable."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    if figure.width < MIN_TITLED_WIDTH:  # a sheet of a few 32 px images: centred on a strip wide enough to read
        wider = Image.new("RGB", (MIN_TITLED_WIDTH, figure.height), tuple(int(c * 255) for c in STRIP))
        wider.paste(figure, ((MIN_TITLED_WIDTH - figure.width) // 2, 0))
        figure = wider
    lines = textwrap.wrap(title, int(figure.width / 7.5)) or [""]  # about 6.7 px a character at 9 pt
    columns = max(1, min(len(outlines), figure.width // 120))
    legend_rows = -(-len(outlines) // columns)
    height = 0.16 * len(lines) + 0.1 + 0.2 * legend_rows
    strip = plt.figure(figsize=(figure.width / DPI, height), facecolor=STRIP)
    strip.text(0.01, 1 - 0.05 / height, "\n".join(lines), fontsize=9, va="top", ha="left", color="white")
    if outlines:
        colours = [tuple(c / 255 for c in mask_colour(name)) for name in outlines]
        handles = [Line2D([], [], color=colour, linewidth=3) for colour in colours]
        strip.legend(
            handles, [f"{name} outline" for name in outlines], loc="lower left", ncol=columns, fontsize=8,
            frameon=False, borderaxespad=0.1, handlelength=1.5, columnspacing=1.0, labelcolor="white",
        )  # fmt: skip
    header = _to_image(strip, facecolor=STRIP)
    out = Image.new("RGB", (figure.width, header.height + figure.height), tuple(int(c * 255) for c in STRIP))
    out.paste(header.crop((0, 0, min(header.width, figure.width), header.height)), (0, 0))
    out.paste(figure, (0, header.height))
    return out
