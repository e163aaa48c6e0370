"""Charts drawn on the server as inline SVG: no script, nothing to download.

Colours come from the stylesheet through class names, so the charts follow
the page's theme and need no ``style`` attribute (which the page's content
security policy would refuse).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.job import Event, EventKind, Job, JobState
from ..observe.spans import attempt_spans
from ._html import Safe, age, join, render
from ._queries import Bucket

__all__ = ["activity_chart", "failure_chart", "timeline_chart"]

# Drawn about the size they are shown at, so the text keeps its size.
_W, _H = 560, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 12, 12, 24
_TIMELINE_W = 1100


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _frame(label: str, body: Safe, y_ticks: Sequence[tuple[float, str]]) -> Safe:
    plot_h = _H - _TOP - _BOTTOM
    grid = []
    for fraction, text in y_ticks:
        y = _TOP + plot_h * (1 - fraction)
        grid.append(
            render(
                '<line class="grid" x1="{}" x2="{}" y1="{y:.1f}" y2="{y:.1f}"/>'
                '<text class="tick" x="{}" y="{ty:.1f}" text-anchor="end">{}</text>',
                _LEFT,
                _W - _RIGHT,
                _LEFT - 6,
                text,
                y=y,
                ty=y + 4,
            )
        )
    return render(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        "<title>{}</title>{}{}</svg>",
        _W,
        _H,
        label,
        label,
        join(grid),
        body,
    )


def _time_axis(window: float) -> Safe:
    plot_w = _W - _LEFT - _RIGHT
    parts = []
    for minutes_ago in range(int(window // 60), -1, -5):
        x = _LEFT + plot_w * (1 - minutes_ago * 60 / window)
        text = "now" if minutes_ago == 0 else f"-{minutes_ago} min"
        anchor = "end" if minutes_ago == 0 else "middle"
        parts.append(
            render(
                '<text class="tick" x="{x:.1f}" y="{}" text-anchor="{}">{}</text>',
                _H - 6,
                anchor,
                text,
                x=x,
            )
        )
    return join(parts)


def activity_chart(buckets: Sequence[Bucket], bucket: float) -> Safe:
    """Stacked bars: attempts that succeeded and that failed, per bucket of time."""
    per_minute = 60.0 / bucket
    top = _nice_max(max((b.succeeded + b.failed for b in buckets), default=0))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    width = plot_w / max(1, len(buckets))
    bars = []
    for i, b in enumerate(buckets):
        x = _LEFT + i * width + 1
        base = float(_TOP + plot_h)
        for count, cls in ((b.succeeded, "ok"), (b.failed, "fail")):
            if not count:
                continue
            h = plot_h * count / top
            base -= h
            bars.append(
                render(
                    '<rect class="{}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                    'height="{h:.1f}"><title>{}</title></rect>',
                    cls,
                    f"{count} {'succeeded' if cls == 'ok' else 'failed'} "
                    f"({count * per_minute:g}/min)",
                    x=x,
                    y=base,
                    w=max(1.0, width - 2),
                    h=h,
                )
            )
    ticks = [(0.0, "0"), (0.5, f"{top / 2:g}"), (1.0, f"{top:g}")]
    window = len(buckets) * bucket
    label = f"Attempts ended per {bucket:g} s over the last {window / 60:g} min"
    return _frame(label, join([*bars, _time_axis(window)]), ticks)


def failure_chart(buckets: Sequence[Bucket], bucket: float) -> Safe:
    """The share of ended attempts that failed, per bucket of time, as a line."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    width = plot_w / max(1, len(buckets))
    points: list[list[str]] = [[]]
    dots = []
    for i, b in enumerate(buckets):
        rate = b.failure_rate
        if rate is None:
            if points[-1]:
                points.append([])
            continue
        x = _LEFT + (i + 0.5) * width
        y = _TOP + plot_h * (1 - rate)
        points[-1].append(f"{x:.1f},{y:.1f}")
        dots.append(
            render(
                '<circle class="rate" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                "<title>{}</title></circle>",
                f"{rate:.0%} of {b.succeeded + b.failed} attempts failed",
                x=x,
                y=y,
            )
        )
    lines = [
        render('<polyline class="rate" points="{}"/>', " ".join(run))
        for run in points
        if len(run) > 1
    ]
    ticks = [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")]
    window = len(buckets) * bucket
    label = f"Share of ended attempts that failed, last {window / 60:g} min"
    return _frame(label, join([*lines, *dots, _time_axis(window)]), ticks)


_OUTCOME_CLASS = {
    EventKind.SUCCEEDED: "ok",
    EventKind.RETRIED: "fail",
    EventKind.DEAD: "dead",
    EventKind.EXPIRED: "expired",
    EventKind.RELEASED: "released",
}

_WAITS_AFTER = frozenset(
    {
        EventKind.ENQUEUED,
        EventKind.RETRIED,
        EventKind.EXPIRED,
        EventKind.RELEASED,
        EventKind.REQUEUED,
    }
)


def timeline_chart(job: Job, events: Sequence[Event], now: float) -> Safe:
    """The job's life: a lane of waits, one lane per attempt, a mark per event."""
    if not events:
        return Safe("")
    spans = attempt_spans(events)
    active = job.state in (JobState.QUEUED, JobState.RUNNING)
    start = events[0].at
    end = max(events[-1].at, now if active else events[-1].at)
    span = max(end - start, 1e-3)
    lanes = 1 + len(spans)
    lane_h, left, right, top = 22, 84, 16, 8
    height = top + lanes * lane_h + 26
    plot_w = _TIMELINE_W - left - right

    def x_of(t: float) -> float:
        return left + plot_w * (t - start) / span

    parts = []
    labels = ["waiting", *(f"attempt {s.attempt}" for s in spans)]
    for i, text in enumerate(labels):
        y = top + i * lane_h
        parts.append(
            render(
                '<line class="grid" x1="{}" x2="{}" y1="{y:.1f}" y2="{y:.1f}"/>'
                '<text class="tick" x="{}" y="{ty:.1f}" text-anchor="end">{}</text>',
                left,
                _TIMELINE_W - right,
                left - 6,
                text,
                y=y + lane_h,
                ty=y + lane_h / 2 + 4,
            )
        )
    # Waits: from an event that puts the job in the queue to the next start.
    waiting_since: float | None = None
    for event in events:
        if event.kind in _WAITS_AFTER:
            waiting_since = event.at
        elif event.kind is EventKind.STARTED and waiting_since is not None:
            tip = f"waited {age(event.at - waiting_since)}"
            parts.append(_bar(x_of(waiting_since), x_of(event.at), top, tip))
            waiting_since = None
        elif event.kind in (EventKind.CANCELLED, EventKind.DISCARDED):
            waiting_since = None
    if waiting_since is not None and job.state is JobState.QUEUED:
        tip = f"waiting for {age(end - waiting_since)}"
        parts.append(_bar(x_of(waiting_since), x_of(end), top, tip))
    for i, s in enumerate(spans, start=1):
        cls = "run" if s.outcome is None else _OUTCOME_CLASS.get(s.outcome, "run")
        stop = s.end if s.end is not None else end
        tip = (
            f"attempt {s.attempt}: "
            + (s.outcome.value if s.outcome else "running")
            + f" after {age(stop - s.start)}"
        )
        parts.append(
            render(
                '<rect class="{}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                'height="{h}"><title>{}</title></rect>',
                cls,
                tip,
                h=lane_h - 8,
                x=x_of(s.start),
                y=top + i * lane_h + 4,
                w=max(2.0, x_of(stop) - x_of(s.start)),
            )
        )
    for event in events:
        parts.append(
            render(
                '<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{}" y2="{}">'
                "<title>{}</title></line>",
                top,
                top + lanes * lane_h,
                f"{event.kind.value} (attempt {event.attempt}) at "
                f"+{age(event.at - start)}",
                x=x_of(event.at),
            )
        )
    axis_y = top + lanes * lane_h + 18
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        anchor = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        parts.append(
            render(
                '<text class="tick" x="{x:.1f}" y="{}" text-anchor="{}">+{}</text>',
                axis_y,
                anchor,
                age(span * fraction) if fraction else "0 s",
                x=left + plot_w * fraction,
            )
        )
    label = f"Timeline of job {job.id}: waits and attempts"
    return render(
        '<svg class="chart timeline" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}"><title>{}</title>{}</svg>',
        _TIMELINE_W,
        height,
        label,
        label,
        join(parts),
    )


def _bar(x0: float, x1: float, top: float, tip: str) -> Safe:
    return render(
        '<rect class="wait" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="6">'
        "<title>{}</title></rect>",
        tip,
        x=x0,
        y=top + 8,
        w=max(1.0, x1 - x0),
    )
