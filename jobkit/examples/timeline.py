"""Read the example web app's JSON log back into a timeline, and chart its shutdown.

The app (:mod:`jobkit.examples.webapp`) logs one JSON object per line. Two
kinds of lines matter here:

- lifecycle *steps* of the app, which carry a ``step`` field (``listening``,
  ``worker_started``, ``cleanup_tick``, ``shutdown``, ``server_closing``,
  ``server_stopped``, ``cleanup_stopped``, ``email_sent``,
  ``worker_stopped``, ``stopped``, ``exit``) and the exact time in ``at``;
- jobkit's job events, which carry ``job_id`` and ``event`` (``started``,
  ``succeeded``, ``released``, ...); they become steps named ``job_started``,
  ``job_succeeded``, and so on.

:func:`read_steps` turns the lines into :class:`Step` records,
:func:`since_shutdown` says how long after the shutdown request each step
came, and :func:`plot_shutdown` draws the sequence.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Step", "plot_shutdown", "read_steps", "since_shutdown"]


@attrs.frozen
class Step:
    """One moment in the app's life, read from a log line.

    ``at`` is wall-clock time in epoch seconds; ``fields`` holds the
    line's other structured fields (``job_id``, ``url``, ``grace``, ...).

    Example::

        >>> from jobkit.examples.timeline import Step
        >>> step = Step("shutdown", 100.0, "shutdown requested", {"grace": 2.0})
        >>> step.name, step.fields["grace"]
        ('shutdown', 2.0)
    """

    name: str
    at: float
    message: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)


def _when(record: Mapping[str, Any]) -> float | None:
    at = record.get("at")
    if isinstance(at, int | float) and not isinstance(at, bool):
        return float(at)
    text = record.get("time")
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_steps(lines: Iterable[str]) -> list[Step]:
    """Return the lifecycle steps and job events found in JSON log lines, in time order.

    Lines that are not JSON objects, or carry neither a ``step`` nor a job
    ``event``, are skipped, so a whole stderr capture can be passed as is.

    Example::

        >>> from jobkit.examples.timeline import read_steps
        >>> lines = [
        ...     '{"time": "2030-01-01T00:00:01.000Z", "message": "job 1 started",'
        ...     ' "job_id": 1, "event": "started"}',
        ...     'not json',
        ...     '{"message": "bye", "step": "shutdown", "at": 1893456002.5}',
        ... ]
        >>> [(s.name, s.at - 1893456000) for s in read_steps(lines)]
        [('job_started', 1.0), ('shutdown', 2.5)]
    """
    steps: list[Step] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("step"), str):
            name = record["step"]
        elif isinstance(record.get("event"), str) and "job_id" in record:
            name = "job_" + record["event"]
        else:
            continue
        at = _when(record)
        if at is None:
            continue
        fields = {
            key: value
            for key, value in record.items()
            if key not in ("step", "at", "time", "message")
        }
        steps.append(Step(name, at, str(record.get("message", "")), fields))
    steps.sort(key=lambda s: s.at)
    return steps


def _shutdown_at(steps: Sequence[Step]) -> float:
    for item in steps:
        if item.name == "shutdown":
            return item.at
    raise ValueError(
        "no 'shutdown' step in these steps: the app was not asked to shut down "
        "(or its log was cut short)"
    )


def since_shutdown(steps: Sequence[Step]) -> list[tuple[str, float]]:
    """Return ``(step name, seconds after the shutdown request)`` from it onwards.

    Raises ``ValueError`` if there is no ``shutdown`` step.

    Example::

        >>> from jobkit.examples.timeline import Step, since_shutdown
        >>> steps = [Step("listening", 1.0, ""), Step("shutdown", 10.0, ""),
        ...          Step("server_stopped", 10.25, ""), Step("exit", 11.5, "")]
        >>> since_shutdown(steps)
        [('shutdown', 0.0), ('server_stopped', 0.25), ('exit', 1.5)]
    """
    origin = _shutdown_at(steps)
    return [(s.name, s.at - origin) for s in steps if s.at >= origin]


_ACCEPTING = "#4c9f70"
_DRAINING = "#f2a541"
_SUCCEEDED = "#3a6ea5"
_RELEASED = "#c8553d"


def plot_shutdown(
    steps: Sequence[Step], *, before: float = 1.0, ax: Axes | None = None
) -> Axes:
    """Draw the app's shutdown as a timeline: one lane per part, t=0 at the request.

    Lanes show the HTTP server (accepting, then finishing requests in
    flight), the worker (running, then draining within the grace period,
    shaded), each job seen (from its start to success, or to being handed
    back), and the clean-up's ticks; vertical lines mark the shutdown
    request and the process exit. ``before`` is how many seconds before
    the request to show. Needs matplotlib.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.examples.timeline import Step, plot_shutdown
        >>> steps = [
        ...     Step("listening", 0.0, ""), Step("worker_started", 0.0, ""),
        ...     Step("job_started", 0.5, "", {"job_id": 1}),
        ...     Step("shutdown", 1.0, "", {"grace": 2.0}),
        ...     Step("server_closing", 1.0, ""), Step("server_stopped", 1.01, ""),
        ...     Step("cleanup_stopped", 1.0, ""),
        ...     Step("job_succeeded", 1.5, "", {"job_id": 1}),
        ...     Step("worker_stopped", 1.5, ""), Step("exit", 1.6, ""),
        ... ]
        >>> ax = plot_shutdown(steps)
        >>> [label.get_text() for label in ax.get_yticklabels()]
        ['HTTP server', 'worker', 'job 1', 'clean-up']
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    origin = _shutdown_at(steps)

    def t(item: Step) -> float:
        return item.at - origin

    def first(name: str) -> Step | None:
        return next((s for s in steps if s.name == name), None)

    def last(name: str) -> Step | None:
        return next((s for s in reversed(steps) if s.name == name), None)

    end = max(t(s) for s in steps)
    start = -before
    shutdown = first("shutdown")
    assert shutdown is not None
    grace = shutdown.fields.get("grace")

    lanes: list[str] = []

    def lane(name: str) -> int:
        lanes.append(name)
        return len(lanes) - 1

    def bar(y: int, left: float, right: float, color: str, label: str) -> None:
        left = max(left, start)
        if right <= left:
            right = left + 0.004  # an instant still shows
        ax.barh(y, right - left, left=left, height=0.5, color=color, label=label)

    y = lane("HTTP server")
    listening, closing, stopped = (
        first("listening"),
        first("server_closing"),
        first("server_stopped"),
    )
    if listening is not None and closing is not None:
        bar(y, t(listening), t(closing), _ACCEPTING, "accepting requests")
    if closing is not None and stopped is not None:
        bar(y, t(closing), t(stopped), _DRAINING, "finishing in-flight work")

    y = lane("worker")
    started, worker_stopped = last("worker_started"), first("worker_stopped")
    if started is not None:
        bar(y, t(started), 0.0, _ACCEPTING, "_")
    if worker_stopped is not None:
        bar(y, 0.0, t(worker_stopped), _DRAINING, "_")

    job_ids = sorted(
        {s.fields["job_id"] for s in steps if s.name.startswith("job_")},
        key=lambda j: (not isinstance(j, int), j),
    )
    for job_id in job_ids:
        events = [
            s
            for s in steps
            if s.name.startswith("job_") and s.fields.get("job_id") == job_id
        ]
        y = lane(f"job {job_id}")
        begun: Step | None = None
        for event in events:
            if event.name == "job_started":
                begun = event
            elif begun is not None and event.name != "job_enqueued":
                released = event.name == "job_released"
                bar(
                    y,
                    t(begun),
                    t(event),
                    _RELEASED if released else _SUCCEEDED,
                    "job handed back (QUEUED)" if released else "job ran",
                )
                ax.annotate(
                    event.name.removeprefix("job_"),
                    (t(event), y),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
                begun = None
        if begun is not None:
            bar(y, t(begun), end, _SUCCEEDED, "job ran")

    y = lane("clean-up")
    ticks = [t(s) for s in steps if s.name == "cleanup_tick" and t(s) >= start]
    if ticks:
        ax.plot(ticks, [y] * len(ticks), "o", color=_ACCEPTING, label="clean-up tick")
    cleanup_stopped = first("cleanup_stopped")
    if cleanup_stopped is not None:
        ax.plot([t(cleanup_stopped)], [y], "x", color="black", markersize=8)

    if isinstance(grace, int | float):
        ax.axvspan(0.0, float(grace), color="grey", alpha=0.12, label="grace period")
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.annotate(
        "shutdown\nrequested",
        (0.0, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -3),
        textcoords="offset points",
        va="top",
        fontsize=8,
    )
    exit_step = first("exit")
    if exit_step is not None:
        ax.axvline(t(exit_step), color="black", linewidth=1)
        ax.annotate(
            "exit",
            (t(exit_step), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
        )
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlim(start, end + max(0.1, 0.08 * (end - start)))
    ax.set_xlabel("seconds since the shutdown request")
    handles, labels = ax.get_legend_handles_labels()
    unique = {
        label: handle
        for handle, label in zip(handles, labels, strict=True)
        if not label.startswith("_")
    }
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    return ax
