"""Escaped HTML from small string templates.

Every value that goes into a page passes through :func:`render`, which
escapes it unless it is already :class:`Safe` (the output of another
``render``). Job data (payloads, errors, task and queue names) is never
trusted: a payload holding ``<script>`` shows as text.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["Safe", "age", "join", "pretty_json", "render", "when"]


class Safe(str):
    """Markup that is already escaped, and so goes into a template as it is."""

    __slots__ = ()


def _escape(value: object) -> object:
    if isinstance(value, Safe):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value  # numbers need no escaping, and keep their format specs
    return Safe(html.escape("" if value is None else str(value), quote=True))


def render(template: str, /, *args: object, **values: object) -> Safe:
    """Fill ``template`` (``str.format`` syntax) with escaped values."""
    return Safe(
        template.format(
            *(_escape(a) for a in args), **{k: _escape(v) for k, v in values.items()}
        )
    )


def join(parts: Iterable[object], separator: str = "") -> Safe:
    """Join escaped parts; a plain string among them is escaped too."""
    return Safe(separator.join(str(_escape(p)) for p in parts))


def pretty_json(value: Any) -> str:
    """Indented JSON for a ``<pre>`` block (escaped by whoever renders it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def when(t: float | None) -> str:
    """A time from the queue's clock: UTC date for epoch seconds, else seconds."""
    if t is None:
        return "-"
    if t < 10**9:
        # Not a wall-clock time: a simulation's virtual seconds.
        return f"{t:g}s"
    moment = _dt.datetime.fromtimestamp(t, _dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable: ``42 s``, ``3 min``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"
