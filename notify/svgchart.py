"""Line charts drawn on the server as inline SVG markup: the admin's analytics page shows them
without any script or chart library (nothing loaded from elsewhere)."""

from __future__ import annotations

from typing import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

#: Line colours, one per series in order (colour-blind-safe palette).
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float]], *, width: int = 460, height: int = 170,
               chart_id: str = "") -> SafeString:
    """An SVG line chart: ``labels`` along x (e.g. days), one polyline per series.

    Args:
        labels: the x positions' names, in order (the first and last are written under the axis).
        series: series name → one value per label (the same length as ``labels``). Each
            polyline carries ``data-series`` (its name) and ``data-values`` (its values,
            comma-separated), each point a ``<title>`` for its tooltip.
        width, height: the drawing's size in CSS pixels.
        chart_id: written as the svg's ``data-chart``.
    Returns:
        Markup safe to put in a page: every name is escaped.
    Raises:
        ValueError: a series whose length differs from ``labels``.
    """
    pad_left, pad_right, pad_top, pad_bottom = 44, 8, 10, 22
    top = max((max(values, default=0) for values in series.values()), default=0) or 1
    steps = max(len(labels) - 1, 1)

    def x(index: int) -> float:
        return pad_left + index / steps * (width - pad_left - pad_right)

    def y(value: float) -> float:
        return height - pad_bottom - value / top * (height - pad_top - pad_bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" data-chart="{escape(chart_id)}">',
             f'<line x1="{pad_left}" y1="{y(0):.1f}" x2="{width - pad_right}" y2="{y(0):.1f}" stroke="#99a"/>',
             f'<line x1="{pad_left}" y1="{pad_top}" x2="{pad_left}" y2="{y(0):.1f}" stroke="#99a"/>',
             f'<text x="{pad_left - 4}" y="{pad_top + 8}" font-size="11" text-anchor="end" fill="#556">'
             f'{_number(top)}</text>',
             f'<text x="{pad_left - 4}" y="{y(0):.1f}" font-size="11" text-anchor="end" fill="#556">0</text>']
    if labels:
        parts.append(f'<text x="{pad_left}" y="{height - 6}" font-size="11" fill="#556">{escape(labels[0])}</text>')
        parts.append(f'<text x="{width - pad_right}" y="{height - 6}" font-size="11" text-anchor="end" fill="#556">'
                     f'{escape(labels[-1])}</text>')
    for index, (name, values) in enumerate(series.items()):
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
        color = COLORS[index % len(COLORS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}" '
                     f'data-series="{escape(name)}" data-values="{",".join(_number(v) for v in values)}"/>')
        for i, v in enumerate(values):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}">'
                         f'<title>{escape(name)} {escape(labels[i])}: {_number(v)}</title></circle>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def color(index: int) -> str:
    """The colour of the ``index``-th series (for a legend beside the chart)."""
    return COLORS[index % len(COLORS)]
