"""Read the example web app's life back from its log and its job store, and chart it.

The app (:mod:`jobkit.examples.webapp`) logs one JSON object per line. The
lines about its lifecycle carry a ``step`` field (``listening``,
``worker_started``, ``worker_crashed``, ``cleanup_tick``, ``shutdown``,
``server_closing``, ``server_stopped``, ``cleanup_stopped``, ``email_sent``,
``worker_stopped``, ``stopped``, ``exit``) and ``at``, the time in epoch
seconds at full precision. :func:`read_steps` turns them into :class:`Step`
records.

What happened to each job comes from the job store itself: every
transition is recorded there as an :class:`~jobkit.JobEvent`, whatever path
caused it, and :func:`job_steps` turns those into steps named
``job_started``, ``job_succeeded``, ``job_released``, and so on.
:func:`load_timeline` reads both and merges them; :func:`since_shutdown`
says how long after the shutdown request each step came, and
:func:`plot_timeline` draws the lot.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from jobkit import JobEvent

__all__ = [
    "Step",
    "job_steps",
    "load_timeline",
    "plot_timeline",
    "read_steps",
    "since_shutdown",
]


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


# Keys every log line has; the rest are the step's own fields.
_RECORD_KEYS = frozenset({"step", "at", "time", "message", "level", "logger", "pid"})


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
    """Return the app's lifecycle steps found in JSON log lines, in time order.

    Lines that are not JSON objects, or carry no ``step``, are skipped, so
    a whole stderr capture can be passed as is.

    Example::

        >>> from jobkit.examples.timeline import read_steps
        >>> lines = [
        ...     '{"message": "listening", "step": "listening", "at": 1.0}',
        ...     'not json',
        ...     '{"message": "job 1 started", "job_id": 1, "event": "started"}',
        ...     '{"time": "2030-01-01T00:00:02.500Z", "message": "bye",'
        ...     ' "step": "shutdown", "grace": 5.0}',
        ... ]
        >>> [(s.name, s.at, s.fields) for s in read_steps(lines)]
        [('listening', 1.0, {}), ('shutdown', 1893456002.5, {'grace': 5.0})]
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
        if not isinstance(record, dict) or not isinstance(record.get("step"), str):
            continue
        at = _when(record)
        if at is None:
            continue
        fields = {
            key: value for key, value in record.items() if key not in _RECORD_KEYS
        }
        steps.append(Step(record["step"], at, str(record.get("message", "")), fields))
    steps.sort(key=lambda s: s.at)
    return steps


def job_steps(events: Iterable[tuple[int, JobEvent]]) -> list[Step]:
    """Return a step per job event (``(sequence, event)`` pairs from a store).

    Example::

        >>> from jobkit import EventKind, JobEvent
        >>> from jobkit.examples.timeline import job_steps
        >>> [(s.name, s.at, s.fields["job_id"]) for s in job_steps(
        ...     [(1, JobEvent(7, EventKind.STARTED, 3.0, 1))])]
        [('job_started', 3.0, 7)]
    """
    return [
        Step(
            f"job_{event.kind.value}",
            event.at,
            f"job {event.job_id} {event.kind.value}",
            {"job_id": event.job_id, "attempt": event.attempt, "seq": seq},
        )
        for seq, event in events
    ]


def load_timeline(
    log: str | os.PathLike[str], db: str | os.PathLike[str]
) -> list[Step]:
    """Return the steps in the app's ``log`` file and the job events in ``db``.

    ``db`` is the app's job database (its ``--db``); it is opened, read and
    closed (a missing file means no job events). Call this from plain
    code, not from inside a trio run.

    Example::

        >>> import os, tempfile
        >>> from jobkit.examples.timeline import load_timeline
        >>> folder = tempfile.mkdtemp()
        >>> log = os.path.join(folder, "app.log")
        >>> with open(log, "w") as file:
        ...     _ = file.write('{"message": "up", "step": "listening", "at": 1.0}\\n')
        >>> [s.name for s in load_timeline(log, os.path.join(folder, "jobs.db"))]
        ['listening']
    """
    import trio

    from jobkit import SQLiteStore

    with open(log, encoding="utf-8") as file:
        steps = read_steps(file)

    async def events() -> list[tuple[int, JobEvent]]:
        async with SQLiteStore(db) as store:
            return await store.events()

    if os.path.exists(db):  # reading must not create an empty database
        steps += job_steps(trio.run(events))
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


def plot_timeline(
    steps: Sequence[Step],
    *,
    origin: str = "shutdown",
    before: float = 1.0,
    until: float | None = None,
    probes: Sequence[tuple[float, int]] = (),
    ax: Axes | None = None,
) -> Axes:
    """Draw the app's life as lanes over time, with t=0 at the ``origin`` step.

    Lanes show the HTTP server (accepting, then finishing what is in
    flight), the answers to health probes if ``probes`` are given (pairs of
    epoch time and HTTP status), the worker (each run from its start to its
    crash, or to the shutdown request and then draining), every job seen
    (from its start to success, or to being handed back), and the clean-up's
    ticks. Crosses mark parts that stopped, red ones a crash; the grace
    period after a shutdown request is shaded, and vertical lines mark the
    request (dashed) and the process exit. The window shown runs from
    ``before`` seconds before the origin to ``until`` seconds after it (by
    default, the last step). Needs matplotlib.

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jobkit.examples.timeline import Step, plot_timeline
        >>> steps = [
        ...     Step("listening", 0.0, ""), Step("worker_started", 0.0, ""),
        ...     Step("job_started", 0.5, "", {"job_id": 1}),
        ...     Step("shutdown", 1.0, "", {"grace": 2.0}),
        ...     Step("server_closing", 1.0, ""), Step("server_stopped", 1.01, ""),
        ...     Step("cleanup_stopped", 1.0, ""),
        ...     Step("job_succeeded", 1.5, "", {"job_id": 1}),
        ...     Step("worker_stopped", 1.5, ""), Step("exit", 1.6, ""),
        ... ]
        >>> ax = plot_timeline(steps, probes=[(0.2, 200), (0.4, 200)])
        >>> [label.get_text() for label in ax.get_yticklabels()]
        ['HTTP server', 'GET /health', 'worker', 'job 1', 'clean-up']
    """
    import matplotlib.pyplot as plt

    origin_step = next((s for s in steps if s.name == origin), None)
    if origin_step is None:
        raise ValueError(
            f"no {origin!r} step to put at t=0; steps seen: "
            f"{sorted({s.name for s in steps})}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4))
    zero = origin_step.at
    start = -before
    if until is not None:
        # What happens later is not drawn at all, so the legend only names
        # what is in the window.
        steps = [s for s in steps if s.at - zero <= until]
        probes = [p for p in probes if p[0] - zero <= until]
        end = until
    else:
        end = max([s.at - zero for s in steps] + [at - zero for at, _ in probes])

    def t(item: Step) -> float:
        return item.at - zero

    def first(name: str) -> Step | None:
        return next((s for s in steps if s.name == name), None)

    lanes: list[str] = []

    def lane(name: str) -> int:
        lanes.append(name)
        return len(lanes) - 1

    def bar(y: int, left: float, right: float, color: str, label: str) -> None:
        left = max(left, start)
        right = max(right, left + 0.004)  # an instant still shows
        ax.barh(y, right - left, left=left, height=0.5, color=color, label=label)

    def cross(y: int, at: float, color: str = "black", label: str = "stopped") -> None:
        ax.plot([at], [y], "x", color=color, markersize=8, mew=2, label=label)

    shutdown = first("shutdown")

    y = lane("HTTP server")
    listening, closing, stopped = (
        first("listening"),
        first("server_closing"),
        first("server_stopped"),
    )
    if listening is not None:
        bar(
            y,
            t(listening),
            end if closing is None else t(closing),
            _ACCEPTING,
            "running",
        )
    if closing is not None:
        bar(
            y,
            t(closing),
            end if stopped is None else t(stopped),
            _DRAINING,
            "finishing what is in hand",
        )
    if stopped is not None:
        cross(y, t(stopped))

    if probes:
        y = lane("GET /health")
        for ok in (True, False):
            xs = [at - zero for at, code in probes if (code == 200) is ok]
            if xs:
                ax.plot(
                    xs,
                    [y] * len(xs),
                    "o",
                    color=_ACCEPTING if ok else _RELEASED,
                    markersize=3,
                    label="health: 200" if ok else "health: not 200",
                )

    y = lane("worker")
    run_start: float | None = None
    for item in steps:
        if item.name == "worker_started":
            run_start = t(item)
        elif item.name == "worker_crashed" and run_start is not None:
            bar(y, run_start, t(item), _ACCEPTING, "running")
            cross(y, t(item), _RELEASED, "crashed")
            run_start = None
        elif item.name == "shutdown" and run_start is not None:
            bar(y, run_start, t(item), _ACCEPTING, "running")
            run_start = t(item)
        elif item.name == "worker_stopped":
            if run_start is not None:
                bar(y, run_start, t(item), _DRAINING, "finishing what is in hand")
            cross(y, t(item))
            run_start = None
    if run_start is not None:
        bar(y, run_start, end, _ACCEPTING, "running")

    # Jobs that did something in the window shown, each in its own lane.
    job_ids = sorted(
        {
            s.fields["job_id"]
            for s in steps
            if s.name.startswith("job_") and t(s) >= start
        }
    )
    for job_id in job_ids:
        y = lane(f"job {job_id}")
        begun: Step | None = None
        for item in steps:
            if not item.name.startswith("job_") or item.fields.get("job_id") != job_id:
                continue
            if item.name == "job_started":
                begun = item
            elif begun is not None and item.name != "job_enqueued":
                released = item.name == "job_released"
                bar(
                    y,
                    t(begun),
                    t(item),
                    _RELEASED if released else _SUCCEEDED,
                    "job handed back (QUEUED)" if released else "job ran",
                )
                ax.annotate(
                    item.name.removeprefix("job_"),
                    (t(item), y),
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
        cross(y, t(cleanup_stopped))

    if shutdown is not None:
        grace = shutdown.fields.get("grace")
        if isinstance(grace, int | float):
            ax.axvspan(
                t(shutdown),
                t(shutdown) + float(grace),
                color="grey",
                alpha=0.12,
                label="grace period",
            )
        ax.axvline(
            t(shutdown), color="black", linestyle="--", lw=1, label="shutdown requested"
        )
    exit_step = first("exit")
    if exit_step is not None:
        ax.axvline(t(exit_step), color="black", lw=1, label="process exit")
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(start, end if until is not None else end + 0.08 * (end - start))
    ax.set_xlabel(f"seconds since {origin.replace('_', ' ')}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    return ax
