"""Server-rendered SVG charts for the reports page (no plotting library, no script): bars
per day, and paired bars (median, 90th percentile) per time figure. Each chart is an image
with a title and a description; the same numbers are in a table beside it."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 48
MARGIN_BOTTOM = 40
MARGIN_TOP = 16


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = float(10 ** (len(str(int(value))) - 1))
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * step:
            return m * step
    return value


def daily_bars(chart_id: str, title: str, days: Sequence[str],
               series: Sequence[tuple[str, str, Sequence[float]]]) -> Markup:
    """Grouped bars per day: series are (label, css class, values)."""
    top = _nice_max(max((v for _, _, values in series for v in values), default=0))
    plot_w = WIDTH - MARGIN_LEFT - 8
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.8 / max(1, len(series)))
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart_id}-t">{escape(title)}</title>',
             f'<desc id="{chart_id}-d">{escape(_describe(days, series))}</desc>']
    base = MARGIN_TOP + plot_h
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" y1="{base}" x2="{WIDTH - 8}" '
                 f'y2="{base}"/>')
    for frac in (0, 0.5, 1):
        y = base - plot_h * frac
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{top * frac:g}</text>')
    label_every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        x0 = MARGIN_LEFT + i * slot + slot * 0.1
        for j, (_, css, values) in enumerate(series):
            h = plot_h * (values[i] / top) if top else 0
            parts.append(f'<rect class="{css}" x="{x0 + j * bar:.1f}" y="{base - h:.1f}" '
                         f'width="{bar:.1f}" height="{h:.1f}"/>')
        if i % label_every == 0:
            parts.append(f'<text x="{x0:.1f}" y="{base + 14}">{escape(day[5:])}</text>')
    legend_x = MARGIN_LEFT
    for label, css, _ in series:
        parts.append(f'<rect class="{css}" x="{legend_x}" y="{HEIGHT - 14}" width="10" '
                     f'height="10"/><text x="{legend_x + 14}" y="{HEIGHT - 5}">'
                     f'{escape(label)}</text>')
        legend_x += 14 + 8 * len(label) + 16
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(days: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]]
              ) -> str:
    return "; ".join(f"{label}: {sum(values):g} over {len(days)} days"
                     for label, _, values in series)


def duration_text(seconds: float | int | None) -> str:
    """A short human duration: 45 s, 12 min, 3 h 05, 2 d 4 h."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d}"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def time_bars(chart_id: str, title: str, rows: Sequence[tuple[str, float | None, float | None]],
              labels: tuple[str, str]) -> Markup:
    """Horizontal paired bars (median, 90th percentile) in hours, one row per figure."""
    values = [v for _, a, b in rows for v in (a, b) if v is not None]
    top = _nice_max(max(values, default=0) / 3600)
    row_h = 34
    height = MARGIN_TOP + row_h * len(rows) + 30
    left = 170
    plot_w = WIDTH - left - 60
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-labelledby="{chart_id}-t" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart_id}-t">{escape(title)}</title>']
    for i, (label, median, p90) in enumerate(rows):
        y = MARGIN_TOP + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">'
                     f'{escape(label)}</text>')
        for j, (value, css) in enumerate(((median, "bar-a"), (p90, "bar-b"))):
            hours = (value or 0) / 3600
            w = plot_w * hours / top
            parts.append(f'<rect class="{css}" x="{left}" y="{y + j * 13}" width="{w:.1f}" '
                         f'height="12"/><text x="{left + w + 4:.1f}" y="{y + j * 13 + 10}">'
                         f'{duration_text(value)}</text>')
    legend_y = height - 12
    parts.append(f'<rect class="bar-a" x="{left}" y="{legend_y - 9}" width="10" height="10"/>'
                 f'<text x="{left + 14}" y="{legend_y}">{escape(labels[0])}</text>'
                 f'<rect class="bar-b" x="{left + 120}" y="{legend_y - 9}" width="10" '
                 f'height="10"/><text x="{left + 134}" y="{legend_y}">{escape(labels[1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
