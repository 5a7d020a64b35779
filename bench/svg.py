"""A hand-written SVG line chart (no plotting dependency): latency against offered load."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    points: Sequence[tuple[float, float]]  # (x, y), y > 0 (log scale)


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def _num(v: float) -> str:
    return f"{v:g}" if v < 1000 else f"{v:,.0f}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    hline: tuple[float, str] | None = None,
    width: int = 760,
    height: int = 440,
) -> str:
    """Linear x axis from 0, logarithmic y axis; an optional dashed horizontal line."""
    left, right, top, bottom = 70, 170, 50, 60
    pw, ph = width - left - right, height - top - bottom
    xs = [x for s in series for x, _ in s.points] or [1.0]
    ys = [y for s in series for _, y in s.points if y > 0] or [1.0]
    if hline:
        ys.append(hline[0])
    x_max = max(xs) * 1.05 or 1.0
    y_lo = 10 ** math.floor(math.log10(min(ys)))
    y_hi = 10 ** math.ceil(math.log10(max(ys) * 1.01))
    if y_hi <= y_lo:
        y_hi = y_lo * 10

    def px(x: float) -> float:
        return left + pw * x / x_max

    def py(y: float) -> float:
        y = max(y, y_lo)
        return top + ph * (1 - (math.log10(y) - math.log10(y_lo))
                           / (math.log10(y_hi) - math.log10(y_lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="24" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    step = _nice_step(x_max)
    x = 0.0
    while x <= x_max + 1e-9:
        out.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + ph}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{px(x):.1f}" y="{top + ph + 18}" text-anchor="middle">'
                   f'{_num(x)}</text>')
        x += step
    for y in _log_ticks(y_lo, y_hi):
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + pw}" y2="{py(y):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">'
                   f'{_num(y)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
               'stroke="#444"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 16}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">{escape(y_label)}</text>')
    legend_y = top + 10
    if hline:
        y = py(hline[0])
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                   'stroke="#c0392b" stroke-dasharray="6 4"/>')
        out.append(f'<line x1="{left + pw + 12}" y1="{legend_y}" x2="{left + pw + 36}" '
                   f'y2="{legend_y}" stroke="#c0392b" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{left + pw + 42}" y="{legend_y + 4}">{escape(hline[1])}</text>')
        legend_y += 22
    for s in series:
        pts = sorted(s.points)
        poly = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{poly}" fill="none" stroke="{s.color}" '
                   'stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{s.color}"/>'
                for x, y in pts]
        out.append(f'<line x1="{left + pw + 12}" y1="{legend_y}" x2="{left + pw + 36}" '
                   f'y2="{legend_y}" stroke="{s.color}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 42}" y="{legend_y + 4}">{escape(s.label)}</text>')
        legend_y += 22
    out.append("</svg>")
    return "\n".join(out) + "\n"
