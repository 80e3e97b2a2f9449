"""Report figures drawn with PIL alone (matplotlib is not a dependency): overlaid histograms and bar charts."""

from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
PANEL = (320, 220)
MARGIN = 34


def _frame(
    draw: ImageDraw.ImageDraw,
    origin: Tuple[int, int],
    title: str,
    y_max: float,
    x_labels: Tuple[str, str],
    width: int = PANEL[0],
):
    """Axes box, title, y maximum and the two x-axis end labels of one panel; returns the plot rectangle."""
    x0, y0 = origin[0] + MARGIN, origin[1] + 20
    x1, y1 = origin[0] + width - 8, origin[1] + PANEL[1] - 24
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    draw.text((origin[0] + 4, origin[1] + 4), title, fill=(0, 0, 0))
    draw.text((origin[0] + 2, y0), f"{y_max:.2g}", fill=(0, 0, 0))
    draw.text((origin[0] + 2, y1 - 10), "0", fill=(0, 0, 0))
    draw.text((x0, y1 + 4), x_labels[0], fill=(0, 0, 0))
    draw.text((x1 - 6 * len(x_labels[1]), y1 + 4), x_labels[1], fill=(0, 0, 0))
    return x0, y0, x1, y1


def _legend(draw: ImageDraw.ImageDraw, names: Sequence[str], x: int, y: int):
    for i, name in enumerate(names):
        draw.rectangle([x, y + 12 * i + 2, x + 8, y + 12 * i + 10], fill=COLOURS[i % len(COLOURS)])
        draw.text((x + 12, y + 12 * i), name, fill=(0, 0, 0))


def histograms(panels: Dict[str, Dict[str, Sequence[float]]], bins: int = 20) -> Image.Image:
    """One panel per title; in each, the normalised histograms (step outlines) of every named sample."""
    figure = Image.new("RGB", (PANEL[0] * len(panels), PANEL[1]), "white")
    draw = ImageDraw.Draw(figure)
    for p, (title, samples) in enumerate(panels.items()):
        samples = {k: np.asarray(v, dtype=float)[~np.isnan(np.asarray(v, dtype=float))] for k, v in samples.items()}
        values = np.concatenate([v for v in samples.values()] + [np.zeros(0)])
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        densities = {k: np.histogram(v, edges)[0] / max(len(v), 1) for k, v in samples.items()}
        y_max = max([d.max() for d in densities.values()] + [1e-6])
        x0, y0, x1, y1 = _frame(draw, (p * PANEL[0], 0), title, y_max, (f"{lo:.3g}", f"{hi:.3g}"))
        width = (x1 - x0) / bins
        for i, density in enumerate(densities.values()):
            points = []
            for b, d in enumerate(density):
                y = y1 - (y1 - y0) * d / y_max
                points += [(x0 + b * width, y), (x0 + (b + 1) * width, y)]
            draw.line([(x0, y1)] + points + [(x1, y1)], fill=COLOURS[i % len(COLOURS)], width=2)
        _legend(draw, [f"{k} (n={len(v)})" for k, v in samples.items()], x0 + 6, y0 + 4)
    return figure


def bar_chart(title: str, groups: Dict[str, Dict[str, Tuple[float, float]]]) -> Image.Image:
    """Grouped bars in [0, 1] with +-std whiskers: ``{group: {series: (mean, std)}}`` (e.g. mask -> training set)."""
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    figure = Image.new("RGB", (max(PANEL[0], 60 * len(groups) * len(series) + 2 * MARGIN), PANEL[1] + 12 * len(series)), "white")
    draw = ImageDraw.Draw(figure)
    x0, y0, x1, y1 = _frame(draw, (0, 0), title, 1.0, ("", ""))
    group_w = (x1 - x0) / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for g, (group, values) in enumerate(groups.items()):
        draw.text((x0 + g * group_w + 4, y1 + 4), group, fill=(0, 0, 0))
        for s, name in enumerate(series):
            if name not in values or np.isnan(values[name][0]):
                continue
            mean, std = values[name]
            left = x0 + g * group_w + group_w * 0.1 + s * bar_w
            top = y1 - (y1 - y0) * float(np.clip(mean, 0, 1))
            draw.rectangle([left, top, left + bar_w - 2, y1], fill=COLOURS[s % len(COLOURS)])
            centre = left + bar_w / 2 - 1
            for y in (y1 - (y1 - y0) * np.clip(mean - std, 0, 1), y1 - (y1 - y0) * np.clip(mean + std, 0, 1)):
                draw.line([(centre - 3, y), (centre + 3, y)], fill=(0, 0, 0))
            draw.line([(centre, y1 - (y1 - y0) * np.clip(mean - std, 0, 1)), (centre, y1 - (y1 - y0) * np.clip(mean + std, 0, 1))], fill=(0, 0, 0))
            draw.text((left, top - 11), f"{mean:.2f}", fill=(0, 0, 0))
    _legend(draw, series, x0, y1 + 16)
    return figure


def line_chart(title: str, curves: Dict[str, Tuple[Sequence[float], Sequence[float]]]) -> Image.Image:
    """One panel of ``{name: (x values, y values)}`` polylines from y = 0 (e.g. training loss against step)."""
    figure = Image.new("RGB", (2 * PANEL[0], PANEL[1] + 12 * len(curves)), "white")
    draw = ImageDraw.Draw(figure)
    xs = np.concatenate([np.asarray(x, dtype=float) for x, _ in curves.values()] + [np.zeros(1)])
    y_max = max([float(np.nanmax(y)) for _, y in curves.values() if len(y)] + [1e-6])
    x_lo, x_hi = float(xs.min()), max(float(xs.max()), float(xs.min()) + 1e-6)
    x0, y0, x1, y1 = _frame(draw, (0, 0), title, y_max, (f"{x_lo:.4g}", f"{x_hi:.4g}"), width=figure.width)
    for i, (x, y) in enumerate(curves.values()):
        points = [
            (x0 + (x1 - x0) * (a - x_lo) / (x_hi - x_lo), y1 - (y1 - y0) * b / y_max)
            for a, b in zip(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
            if np.isfinite(b)
        ]
        if len(points) > 1:
            draw.line(points, fill=COLOURS[i % len(COLOURS)], width=2)
    _legend(draw, list(curves), x0, y1 + 16)
    return figure


def titled(figure: Image.Image, title: str) -> Image.Image:
    """``figure`` under a white strip carrying ``title`` (contact sheets have no title of their own)."""
    out = Image.new("RGB", (figure.width, figure.height + 16), "white")
    out.paste(figure, (0, 16))
    ImageDraw.Draw(out).text((4, 2), title, fill=(0, 0, 0))
    return out
