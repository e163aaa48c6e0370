"""Render a :class:`MetricsSnapshot` in the Prometheus text exposition format.

Format 0.0.4, as every Prometheus server and ``prometheus_client`` parse it:
one ``# HELP`` and one ``# TYPE`` line per family, then its samples; label
values escaped; histograms as cumulative ``_bucket`` series ending in
``le="+Inf"``, with ``_sum`` and ``_count``. No dependency is needed to write it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..core.job import JobState

if TYPE_CHECKING:
    from .metrics import Histogram, MetricsSnapshot

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")

_HELP = {
    "enqueued": "Jobs enqueued.",
    "started": "Attempts started by a worker.",
    "succeeded": "Attempts that succeeded.",
    "failed": "Attempts that failed (retried or dead).",
    "retried": "Failed attempts after which the job was queued again.",
    "dead": "Jobs that went dead: a permanent error or no attempts left.",
    "expired": "Attempts lost with their worker (the lease ran out).",
    "released": "Attempts handed back by a worker shutting down.",
    "requeued": "Dead jobs requeued by a person.",
    "cancelled": "Queued jobs cancelled.",
    "discarded": "Dead jobs discarded.",
}


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {_escape_help(help_text)}")
    lines.append(f"# TYPE {name} {kind}")


def _histogram(
    lines: list[str], name: str, labels: list[tuple[str, str]], hist: Histogram
) -> None:
    for bound, count in hist.cumulative():
        le = [*labels, ("le", _number(bound))]
        lines.append(f"{name}_bucket{_labels(le)} {count}")
    lines.append(f"{name}_sum{_labels(labels)} {_number(hist.sum)}")
    lines.append(f"{name}_count{_labels(labels)} {hist.count}")


def render(snapshot: MetricsSnapshot, *, prefix: str = "jobkit") -> str:
    """Return the snapshot as Prometheus text, ending with a newline."""
    if not _NAME.match(prefix):
        raise ValueError(
            f"prefix must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), "
            f"got {prefix!r}"
        )
    from .metrics import COUNTERS

    lines: list[str] = []
    for counter in COUNTERS:
        name = f"{prefix}_jobs_{counter}_total"
        _family(lines, name, "counter", _HELP[counter])
        for (task, queue), n in sorted(snapshot.counters.get(counter, {}).items()):
            lines.append(f"{name}{_labels([('task', task), ('queue', queue)])} {n}")

    name = f"{prefix}_job_duration_seconds"
    _family(
        lines,
        name,
        "histogram",
        "Duration of attempts a worker reported on, by task and outcome.",
    )
    for (task, outcome), hist in sorted(snapshot.durations.items()):
        _histogram(lines, name, [("task", task), ("outcome", outcome)], hist)

    name = f"{prefix}_job_attempts"
    _family(
        lines,
        name,
        "histogram",
        "Attempts used by each job that finished (succeeded or dead), by task.",
    )
    for task, hist in sorted(snapshot.attempts.items()):
        _histogram(lines, name, [("task", task)], hist)

    name = f"{prefix}_jobs"
    _family(lines, name, "gauge", "Jobs per queue and state when sampled.")
    for queue in snapshot.depth.queues:
        for state in JobState:
            n = snapshot.depth.get(queue, state)
            lines.append(
                f"{name}{_labels([('queue', queue), ('state', state.value)])} {n}"
            )
    return "\n".join(lines) + "\n"
