"""Plain and HTML renderings shared by jobkit's records in a notebook.

Jupyter shows an object by calling its ``_repr_html_``; these helpers keep
those tables small, escaped and alike. Times are seconds on a queue's clock:
epoch seconds for a real queue, shown as UTC dates, and small virtual
seconds in a simulation or a test, shown as ``t=12s``.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence

# Virtual clocks start at 0; any clock reading past 1973 is epoch seconds.
_EPOCH_FLOOR = 1e8


def when(t: float | None) -> str:
    """Return a clock reading as a UTC date (epoch seconds) or ``t=…s`` (virtual)."""
    if t is None:
        return "-"
    if abs(t) >= _EPOCH_FLOOR:
        moment = _dt.datetime.fromtimestamp(t, _dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"
    return f"t={t:g}s"


def first_line(text: str | None, limit: int = 80) -> str:
    """Return the first line of ``text``, cut to ``limit`` characters."""
    line = (text or "").splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table(
    rows: Iterable[Sequence[object]],
    *,
    head: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """Return an HTML table of ``rows`` (escaped), with an optional header and title."""
    parts = ["<div>"]
    if title:
        parts.append(f"<strong>{html.escape(title)}</strong>")
    parts.append("<table>")
    if head:
        cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
        parts.append(f"<thead><tr>{cells}</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def fields(pairs: Iterable[tuple[str, object]], *, title: str) -> str:
    """Return a two-column HTML table: one row per (name, value)."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in pairs
    )
    return f"<div><strong>{html.escape(title)}</strong><table>{rows}</table></div>"


def envelope_svg(
    lows: Sequence[float],
    highs: Sequence[float],
    nominal: Sequence[float],
    *,
    width: int = 320,
    height: int = 120,
) -> str:
    """Return an inline SVG: a shaded band from ``lows`` to ``highs`` and a line.

    Point ``i`` is attempt ``i + 1``; the y axis runs from 0 to the largest
    value, which is labelled.
    """
    count = len(nominal)
    top = max([*highs, *nominal, 1e-9])
    pad = 22

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / max(1, count - 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v / top)

    band = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(highs)]
    band += [f"{x(i):.1f},{y(v):.1f}" for i, v in reversed(list(enumerate(lows)))]
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(nominal))
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"
        f"<polygon points='{' '.join(band)}' fill='#1f77b4' fill-opacity='0.2'/>"
        f"<polyline points='{line}' fill='none' stroke='black' stroke-width='1.5'/>"
        f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}'"
        " stroke='#888'/>"
        f"<text x='2' y='{pad - 6}' font-size='10'>{top:g} s</text>"
        f"<text x='{pad}' y='{height - 6}' font-size='10'>attempt 1</text>"
        f"<text x='{width - pad}' y='{height - 6}' font-size='10' text-anchor='end'>"
        f"{count}</text></svg>"
    )
