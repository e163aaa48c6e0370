"""Charts of a queue at work: depth, throughput, durations, attempts, backoff.

Each function draws on the matplotlib ``ax`` it is given (or on a new
figure's) and returns that ``ax``, so charts compose into subplots and can be
restyled afterwards. Only this module needs matplotlib (``pip install
'jobkit[charts]'``); ``import jobkit`` never loads it.

The inputs are jobkit's own records: :class:`~jobkit.DepthSample` lists from a
:class:`~jobkit.DepthSampler` or :class:`~jobkit.DepthPoint` lists from
:func:`~jobkit.depth_points`, events from ``queue.events()``,
:class:`~jobkit.AttemptSpan` records, a :class:`~jobkit.MetricsSnapshot`
from ``queue.metrics()``, jobs from ``queue.list()``, and
:class:`~jobkit.Backoff` or :class:`~jobkit.RetryPolicy` policies. The
simulator's traces are made of the same spans and depth points, and
:mod:`jobkit.sim.charts` draws them with :func:`attempt_timeline` and
:func:`queue_depth`.

Example::

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import jobkit, jobkit.charts
    >>> ax = jobkit.charts.backoff_delays(jobkit.Backoff.exponential(1, 30))
    >>> ax.get_ylabel()
    'delay (s)'
"""

from __future__ import annotations

import collections
import itertools
import math
import random
from typing import TYPE_CHECKING

# Modules, not names: this module is public, and the names it would import
# are documented where they are defined.
from .core import job as _job
from .core import retry as _retry
from .observe import depth as _depth
from .observe import metrics as _metrics
from .observe import spans as _spans

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from matplotlib.axes import Axes

    from .core.job import Event, Job
    from .core.retry import Backoff, RetryPolicy
    from .observe.depth import DepthPoint, DepthSample
    from .observe.metrics import Histogram
    from .observe.spans import AttemptSpan


__all__ = [
    "attempt_timeline",
    "attempts_per_job",
    "backoff_delays",
    "concurrency",
    "counter_rates",
    "durations",
    "job_timeline",
    "lost_work",
    "queue_depth",
    "restarts",
    "slot_runs",
    "throughput",
    "tick_lateness",
    "tick_runs",
]

# One colour per meaning, the same in every chart.
COLORS = {
    _job.JobState.QUEUED: "tab:blue",
    _job.JobState.RUNNING: "tab:orange",
    _job.JobState.SUCCEEDED: "tab:green",
    _job.JobState.DEAD: "tab:red",
    _job.JobState.CANCELLED: "tab:gray",
    "failed": "tab:red",
    "succeeded": "tab:green",
    "ready": "tab:blue",
    "waiting": "0.7",
}

OUTCOMES: dict[_job.EventKind | None, tuple[str, str]] = {
    _job.EventKind.SUCCEEDED: ("tab:green", "attempt succeeded"),
    _job.EventKind.RETRIED: ("tab:orange", "attempt failed, retried later"),
    _job.EventKind.DEAD: ("tab:red", "attempt failed, job dead"),
    _job.EventKind.EXPIRED: ("tab:purple", "worker died, lease expired"),
    _job.EventKind.RELEASED: ("tab:gray", "released at shutdown"),
    None: ("tab:blue", "still running"),
}
"""The colour and legend label of an attempt's bar, by the event that ended it."""

# After these the job is queued again: its row's waiting line goes on.
_BACK_IN_QUEUE = frozenset(
    {_job.EventKind.RETRIED, _job.EventKind.EXPIRED, _job.EventKind.RELEASED, None}
)

_FAILED = frozenset(
    {_job.EventKind.RETRIED, _job.EventKind.EXPIRED, _job.EventKind.DEAD}
)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=(7, 3.5), layout="constrained")
    return new


def queue_depth(
    data: Sequence[DepthSample]
    | _depth.DepthSampler
    | Sequence[DepthPoint]
    | Iterable[Event | tuple[int, Event]],
    ax: Axes | None = None,
    *,
    queue: str | None = None,
    states: Iterable[_job.JobState] = (
        _job.JobState.QUEUED,
        _job.JobState.RUNNING,
        _job.JobState.DEAD,
    ),
    start: float | None = None,
    until: float | None = None,
) -> Axes:
    """Plot how many jobs were in each state over time.

    From depth samples (a :class:`~jobkit.DepthSampler` or its samples): one
    step line per state in ``states``, summed over queues unless ``queue``
    names one. From depth points (:func:`~jobkit.depth_points`, or a
    simulated run's ``trace.queue_depth()``) or from the events they are
    replayed from: the jobs running, ready, and waiting out a backoff,
    stacked. Times are shown as seconds since ``start`` (default: the first
    point); ``until`` holds the last level up to that time.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import queue_depth
        >>> from jobkit import DepthSample, JobState, QueueCounts
        >>> samples = [DepthSample(t, QueueCounts({("q", JobState.QUEUED): n}))
        ...            for t, n in [(0, 5), (10, 3), (20, 0)]]
        >>> ax = queue_depth(samples)
        >>> [int(y) for y in ax.get_lines()[0].get_ydata()]
        [5, 3, 0]
    """
    items: list[object] = list(
        data.samples if isinstance(data, _depth.DepthSampler) else data
    )
    if items and isinstance(items[0], _job.JobEvent | tuple):
        items = list(_depth.depth_points(items))  # type: ignore[arg-type]
    samples = [p for p in items if isinstance(p, _depth.DepthSample)]
    phases = [p for p in items if isinstance(p, _depth.DepthPoint)]
    times = [p.at for p in samples] + [p.time for p in phases]
    layers: list[tuple[str, list[int], str | None]]
    if phases:
        layers = [
            ("running", [p.running for p in phases], COLORS[_job.JobState.RUNNING]),
            ("ready", [p.ready for p in phases], COLORS["ready"]),
            ("waiting out a backoff", [p.waiting for p in phases], COLORS["waiting"]),
        ]
    else:
        layers = [
            (
                state.value,
                [
                    p.counts.total(state)
                    if queue is None
                    else p.counts.get(queue, state)
                    for p in samples
                ],
                COLORS.get(state),
            )
            for state in states
        ]
    ax = _axes(ax)
    t0 = start if start is not None else (times[0] if times else 0.0)
    if times and until is not None and until > times[-1]:
        times.append(until)
        layers = [(label, [*ys, ys[-1]], color) for label, ys, color in layers]
    xs = [t - t0 for t in times]
    if phases:
        ax.stackplot(
            xs,
            *[ys for _, ys, _ in layers],
            labels=[label for label, _, _ in layers],
            colors=[color or "black" for _, _, color in layers],
            step="post",
        )
    else:
        for label, ys, color in layers:
            ax.step(xs, ys, where="post", label=label, color=color)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("jobs")
    ax.set_title("Queue depth" + (f" of {queue!r}" if queue else ""))
    ax.set_ylim(bottom=0)
    if times:
        ax.legend(loc="upper right", fontsize="small")
    return ax


def _nice_bucket(span: float, target: int = 30) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * magnitude >= raw:
            return float(step * magnitude)
    return float(10 * magnitude)


def throughput(
    events: Iterable[Event | tuple[int, Event]],
    ax: Axes | None = None,
    *,
    bucket: float | None = None,
    start: float | None = None,
) -> Axes:
    """Plot finished attempts per second over time, and their success rate.

    Bars count attempts that succeeded (green) and failed (red: retried,
    lost with a worker, or dead) in windows of ``bucket`` seconds (default:
    about 30 windows over the span), divided by the window length. The
    success rate, succeeded over finished, is the black line on a second
    axis (0 to 1), reachable as ``ax.right_ax``; windows with nothing
    finished have no rate.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import throughput
        >>> from jobkit import JobEvent, EventKind
        >>> events = [JobEvent(1, EventKind.SUCCEEDED, 0.5, 1),
        ...           JobEvent(2, EventKind.RETRIED, 1.5, 1, "boom"),
        ...           JobEvent(2, EventKind.SUCCEEDED, 1.7, 2)]
        >>> ax = throughput(events, bucket=1.0, start=0.0)
        >>> [float(bar.get_height()) for bar in ax.containers[0]]
        [1.0, 1.0]
        >>> [float(y) for y in ax.right_ax.get_lines()[0].get_ydata()]
        [1.0, 0.5]
    """
    if bucket is not None and not (math.isfinite(bucket) and bucket > 0):
        raise ValueError(f"bucket must be a positive number of seconds, got {bucket!r}")
    finished = [
        e
        for e in (item[1] if isinstance(item, tuple) else item for item in events)
        if e.kind is _job.EventKind.SUCCEEDED or e.kind in _FAILED
    ]
    ax = _axes(ax)
    t0 = start if start is not None else min((e.at for e in finished), default=0.0)
    end = max((e.at for e in finished), default=t0)
    width = bucket if bucket is not None else _nice_bucket(end - t0)
    windows = max(1, math.floor((end - t0) / width) + 1)
    ok = [0] * windows
    bad = [0] * windows
    for e in finished:
        i = min(windows - 1, max(0, math.floor((e.at - t0) / width)))
        if e.kind is _job.EventKind.SUCCEEDED:
            ok[i] += 1
        else:
            bad[i] += 1
    lefts = [i * width for i in range(windows)]
    ax.bar(
        lefts,
        [n / width for n in ok],
        width=width,
        align="edge",
        color=COLORS["succeeded"],
        label="succeeded",
    )
    ax.bar(
        lefts,
        [n / width for n in bad],
        width=width,
        align="edge",
        bottom=[n / width for n in ok],
        color=COLORS["failed"],
        label="failed",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("attempts finished / s")
    ax.set_title("Throughput and success rate")
    right = ax.twinx()
    centers = [left + width / 2 for left in lefts]
    rates = [g / (g + b) if g + b else math.nan for g, b in zip(ok, bad, strict=True)]
    right.plot(centers, rates, color="black", marker=".", label="success rate")
    # Headroom above the data keeps the legend clear of bars and line alike.
    right.set_ylim(0, 1.4)
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    right.set_ylabel("success rate")
    tallest = max((g + b) / width for g, b in zip(ok, bad, strict=True))
    ax.set_ylim(0, (tallest or 1.0) * 1.4)
    ax.right_ax = right  # type: ignore[attr-defined]
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    if finished:
        ax.legend(handles + more, labels + more_labels, loc="upper left", ncols=3)
    return ax


def _bucket_edges(bounds: Sequence[float]) -> list[float]:
    # The first bucket starts at 0, which a log axis cannot show: give it the
    # same ratio as its neighbour. The +Inf bucket gets a finite right edge.
    first = bounds[0] / (bounds[1] / bounds[0]) if len(bounds) > 1 else bounds[0] / 2
    last = bounds[-1] * (bounds[-1] / bounds[-2]) if len(bounds) > 1 else bounds[0] * 2
    return [first, *bounds, last]


def durations(
    data: _metrics.MetricsSnapshot | Iterable[float],
    ax: Axes | None = None,
    *,
    task: str | None = None,
    bins: int = 30,
) -> Axes:
    """Plot the distribution of attempt durations.

    From a :class:`MetricsSnapshot`, the bars are its histogram buckets on a
    log axis, succeeded and failed attempts stacked (one ``task``, or all).
    From plain numbers (seconds), an ordinary histogram with ``bins`` bins.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import durations
        >>> ax = durations([0.1, 0.2, 0.2, 1.5], bins=4)
        >>> float(sum(bar.get_height() for bar in ax.patches))
        4.0
    """
    ax = _axes(ax)
    ax.set_xlabel("attempt duration (s)")
    ax.set_ylabel("attempts")
    ax.set_title("Attempt durations" + (f" of {task!r}" if task else ""))
    if not isinstance(data, _metrics.MetricsSnapshot):
        values = [float(v) for v in data]
        ax.hist(values, bins=bins, color=COLORS["succeeded"])
        return ax
    edges = _bucket_edges(data.duration_bounds)
    lefts = edges[:-1]
    widths = [b - a for a, b in itertools.pairwise(edges)]
    bottom = [0] * len(lefts)
    for outcome in ("succeeded", "failed"):
        hist = data.duration(task, outcome)
        ax.bar(
            lefts,
            hist.counts,
            width=widths,
            align="edge",
            bottom=bottom,
            color=COLORS[outcome],
            edgecolor="white",
            label=outcome,
        )
        bottom = [a + b for a, b in zip(bottom, hist.counts, strict=True)]
    ax.set_xscale("log")
    used = [i for i, n in enumerate(bottom) if n]
    if used:
        low, high = edges[used[0]], edges[used[-1] + 1]
        ax.set_xlim(low, high)
        # Tick the bucket bounds themselves, in plain numbers: they are the
        # only resolution a histogram has.
        ticks = [b for b in data.duration_bounds if low <= b <= high]
        ax.set_xticks(ticks, [f"{b:g}" for b in ticks])
        ax.minorticks_off()
        ax.legend(loc="best")
    return ax


def _attempt_labels(hist: Histogram) -> list[str]:
    labels = []
    low = 1
    for bound in hist.bounds:
        high = int(bound)
        labels.append(str(high) if high == low else f"{low}-{high}")
        low = high + 1
    labels.append(f">{int(hist.bounds[-1])}")
    return labels


def attempts_per_job(
    data: _metrics.MetricsSnapshot | Iterable[Job],
    ax: Axes | None = None,
    *,
    task: str | None = None,
) -> Axes:
    """Plot how many attempts jobs needed before they finished.

    From jobs (``await queue.list(limit=None)``): jobs that SUCCEEDED or are
    DEAD, one bar per number of attempts, split by outcome. From a
    :class:`MetricsSnapshot`: its attempts histogram (every finish counted,
    including those of jobs later requeued). ``task`` keeps only one task.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import attempts_per_job
        >>> from jobkit import Job, JobState
        >>> def job(i, state, attempts):
        ...     return Job(id=i, task="t", queue="q", payload={}, state=state,
        ...                attempts=attempts, max_attempts=3, priority=0,
        ...                run_at=0.0, created_at=0.0, updated_at=0.0)
        >>> ax = attempts_per_job([job(1, JobState.SUCCEEDED, 1),
        ...                        job(2, JobState.SUCCEEDED, 2),
        ...                        job(3, JobState.DEAD, 3)])
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['1', '2', '3']
    """
    ax = _axes(ax)
    ax.set_xlabel("attempts")
    ax.set_ylabel("jobs")
    ax.set_title("Attempts per job" + (f" of {task!r}" if task else ""))
    if isinstance(data, _metrics.MetricsSnapshot):
        hist = data.attempts_of(task)
        labels = _attempt_labels(hist)
        keep = [i for i, n in enumerate(hist.counts) if n] or [0]
        shown = range(keep[-1] + 1)
        ax.bar(
            [labels[i] for i in shown],
            [hist.counts[i] for i in shown],
            color="tab:purple",
        )
        return ax
    finished: collections.Counter[tuple[int, _job.JobState]] = collections.Counter()
    for job in data:
        if job.state in (_job.JobState.SUCCEEDED, _job.JobState.DEAD) and (
            task is None or job.task == task
        ):
            finished[(job.attempts, job.state)] += 1
    most = max((n for n, _ in finished), default=1)
    xs = list(range(1, most + 1))
    ok = [finished[(n, _job.JobState.SUCCEEDED)] for n in xs]
    dead = [finished[(n, _job.JobState.DEAD)] for n in xs]
    ax.bar(xs, ok, color=COLORS[_job.JobState.SUCCEEDED], label="succeeded")
    ax.bar(xs, dead, bottom=ok, color=COLORS[_job.JobState.DEAD], label="dead")
    ax.set_xticks(xs, [str(n) for n in xs])
    if finished:
        ax.legend(loc="upper right")
    return ax


def backoff_delays(
    policy: Backoff | RetryPolicy,
    ax: Axes | None = None,
    *,
    attempts: int | None = None,
    runs: int = 20,
    seed: int = 0,
) -> Axes:
    """Plot the delays a policy waits after each failed attempt.

    The black line is the un-jittered value; with jitter, the shaded band is
    the interval each delay is drawn from (for decorrelated jitter, whose
    interval depends on the previous wait, every value a wait can reach by
    that attempt: ``base`` to ``min(cap, base * 3**n)``) and the dots are
    ``runs`` sampled
    sequences from seeded generators, each fed its previous delay as a job
    that keeps failing would be. ``attempts`` defaults to the retry policy's
    ``max_attempts - 1`` (the waits a job can see), or 10.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import backoff_delays
        >>> from jobkit import Backoff
        >>> ax = backoff_delays(Backoff.exponential(1, 8), attempts=5)
        >>> [float(y) for y in ax.get_lines()[0].get_ydata()]
        [1.0, 2.0, 4.0, 8.0, 8.0]
    """
    if isinstance(policy, _retry.RetryPolicy):
        backoff = policy.backoff
        count = attempts if attempts is not None else max(1, policy.max_attempts - 1)
    elif isinstance(policy, _retry.Backoff):
        backoff = policy
        count = attempts if attempts is not None else 10
    else:
        raise TypeError(f"policy must be a Backoff or RetryPolicy, got {policy!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"attempts must be a positive integer, got {count!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
        raise ValueError(f"runs must be an integer >= 0, got {runs!r}")
    ax = _axes(ax)
    xs = list(range(1, count + 1))
    ax.plot(
        xs,
        [backoff.nominal(n) for n in xs],
        color="black",
        marker="o",
        label="no jitter",
    )
    if backoff.jitter is not None:
        # For decorrelated jitter, every value a wait can have reached by
        # then, not one draw's interval (which depends on the previous wait).
        lows = [lo for lo, _ in backoff.envelope(count)]
        highs = [hi for _, hi in backoff.envelope(count)]
        ax.fill_between(
            xs,
            lows,
            highs,
            color="tab:blue",
            alpha=0.15,
            label=f"{backoff.jitter} range",
        )
        for run in range(runs):
            delays = backoff.delays(count, rng=random.Random(seed + run))
            ax.plot(
                xs,
                delays,
                linestyle="none",
                marker=".",
                color="tab:blue",
                alpha=0.5,
                label="sampled" if run == 0 else None,
            )
    ax.set_xlabel("failed attempt")
    ax.set_ylabel("delay (s)")
    jitter = "no jitter" if backoff.jitter is None else f"{backoff.jitter} jitter"
    ax.set_title(f"{backoff.kind.capitalize()} backoff, {jitter}")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    return ax


def attempt_timeline(
    spans: Iterable[AttemptSpan],
    ax: Axes | None = None,
    *,
    jobs: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
    enqueued: Mapping[int, float] | None = None,
    until: float | None = None,
) -> Axes:
    """Draw each job's attempts as bars on a row of its own, over a line while it waits.

    Bars are coloured by how the attempt ended (:data:`OUTCOMES`) and
    labelled with the attempt's number. A tick marks the enqueue time given
    in ``enqueued``. A job queued again after its last attempt, and an
    attempt still running, are drawn up to ``until`` (default: the last
    instant known). If the worker died during an attempt (``crashed_at``,
    which the simulator knows), a cross marks the crash and a dotted line
    the wait for the lease to run out. Rows follow ``jobs`` (default: every
    job, by id), named by ``names`` or ``job <id>``.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit import AttemptSpan, EventKind
        >>> from jobkit.charts import attempt_timeline
        >>> ax = attempt_timeline([
        ...     AttemptSpan(1, 1, 0.0, 2.0, EventKind.RETRIED),
        ...     AttemptSpan(1, 2, 5.0, 6.0, EventKind.SUCCEEDED),
        ...     AttemptSpan(2, 1, 1.0),
        ... ], until=8.0)
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['job 1', 'job 2']
    """
    by_job: dict[int, list[AttemptSpan]] = collections.defaultdict(list)
    for span in spans:
        by_job[span.job_id].append(span)
    created = dict(enqueued or {})
    ids = list(jobs) if jobs is not None else sorted(by_job.keys() | created.keys())
    known = [*created.values()]
    for mine in by_job.values():
        mine.sort(key=lambda s: s.start)
        known += [t for s in mine for t in (s.start, s.end) if t is not None]
    end = until if until is not None else max(known, default=0.0)
    ax = _axes(ax)
    seen: set[object] = set()

    def once(key: object, label: str) -> str | None:
        # One legend entry per meaning, however many rows show it.
        if key in seen:
            return None
        seen.add(key)
        return label

    for row, job_id in enumerate(ids):
        mine = by_job.get(job_id, [])
        first = created.get(job_id, mine[0].start if mine else end)
        last = mine[-1] if mine else None
        queued = last is None or last.outcome in _BACK_IN_QUEUE
        stop = end if queued or last is None or last.end is None else last.end
        ax.hlines(row, first, stop, color="gray", linewidth=1, zorder=0)
        if job_id in created:
            ax.plot(created[job_id], row, marker="|", color="black", markersize=12)
        for s in mine:
            color, label = OUTCOMES[s.outcome]
            ended = s.end if s.end is not None else end
            worked = s.crashed_at if s.crashed_at is not None else ended
            ax.barh(
                row,
                max(worked - s.start, 0.25),
                left=s.start,
                height=0.5,
                color=color,
                edgecolor="black",
                linewidth=0.5,
                label=once(s.outcome, label),
            )
            ax.text(s.start + 0.15, row - 0.32, f"#{s.attempt}", fontsize=7)
            if s.crashed_at is not None:
                ax.plot(
                    [s.crashed_at],
                    [row],
                    marker="x",
                    color="black",
                    markersize=8,
                    label=once("crash", "worker crashed"),
                )
                ax.plot(
                    [s.crashed_at, ended],
                    [row, row],
                    linestyle=":",
                    color=OUTCOMES[_job.EventKind.EXPIRED][0],
                    linewidth=1.5,
                    label=once("lease", "lease running out"),
                )
    labels = names or {}
    ax.set_yticks(range(len(ids)), [labels.get(i, f"job {i}") for i in ids])
    ax.set_ylim(len(ids) - 0.5, -0.5)
    ax.set_xlabel("time (s)")
    if seen:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax


def job_timeline(
    events: Iterable[Event | tuple[int, Event]],
    ax: Axes | None = None,
    *,
    jobs: Sequence[Job] | None = None,
    until: float | None = None,
) -> Axes:
    """Draw each job's life as a row: a thin line while it waits, a bar per attempt.

    This is :func:`attempt_timeline` of the events' :func:`~jobkit.attempt_spans`,
    with a tick at each enqueue. ``jobs`` (from ``queue.list()``) picks the
    rows and names them by task; without it every job enqueued is a row,
    named by id. An attempt still running is drawn up to ``until``
    (default: the last event).

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit import JobEvent, EventKind
        >>> from jobkit.charts import job_timeline
        >>> ax = job_timeline([
        ...     JobEvent(1, EventKind.ENQUEUED, 0.0, 0),
        ...     JobEvent(1, EventKind.STARTED, 0.0, 1),
        ...     JobEvent(1, EventKind.RETRIED, 2.0, 1, "boom"),
        ...     JobEvent(1, EventKind.STARTED, 5.0, 2),
        ...     JobEvent(1, EventKind.SUCCEEDED, 6.0, 2),
        ... ])
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['job 1']
    """
    log = [e if isinstance(e, _job.JobEvent) else e[1] for e in events]
    created = {e.job_id: e.at for e in log if e.kind is _job.EventKind.ENQUEUED}
    return attempt_timeline(
        _spans.attempt_spans(log),
        ax,
        jobs=[j.id for j in jobs] if jobs is not None else sorted(created),
        names={j.id: f"job {j.id}: {j.task}" for j in jobs or ()},
        enqueued=created,
        until=until if until is not None else max((e.at for e in log), default=0.0),
    )


def concurrency(
    spans: Iterable[tuple[float, float]],
    ax: Axes | None = None,
    *,
    label: str | None = None,
    color: str | None = None,
) -> Axes:
    """Plot how many of the ``(start, end)`` intervals are open at each moment.

    An interval that ends exactly when another starts leaves the count
    unchanged at that instant, so back-to-back work reads as one level.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import concurrency
        >>> ax = concurrency([(0, 2), (1, 3), (2, 4)])
        >>> [int(y) for y in ax.get_lines()[0].get_ydata()]
        [0, 1, 2, 2, 1, 0]
    """
    change: dict[float, int] = collections.defaultdict(int)
    for start, end in spans:
        change[start] += 1
        change[end] -= 1
    times, counts, running = [0.0], [0], 0
    for t in sorted(change):
        running += change[t]
        times.append(t)
        counts.append(running)
    ax = _axes(ax)
    ax.step(times, counts, where="post", label=label, color=color)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("running at once")
    ax.set_ylim(bottom=0)
    return ax


def counter_rates(
    snapshots: Sequence[tuple[float, _metrics.MetricsSnapshot]],
    ax: Axes | None = None,
    *,
    bars: Sequence[str] = ("enqueued", "succeeded"),
    lines: Sequence[str] = ("retried",),
) -> Axes:
    """Plot counter increases between consecutive ``(time, snapshot)`` pairs.

    That is what Prometheus's ``rate()`` does with a counter: the rate is
    the difference between two readings, here drawn at the middle of the
    interval it covers, as side-by-side bars for ``bars`` and lines with
    dots for ``lines``. The y axis reads "per interval", so snapshots taken
    a minute apart give increases per minute.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit import MetricsSnapshot
        >>> from jobkit.charts import counter_rates
        >>> empty = MetricsSnapshot.empty()
        >>> ax = counter_rates([(0.0, empty), (60.0, empty)])
        >>> [float(y) for y in ax.get_lines()[0].get_ydata()]
        [0.0]
    """
    pairs = list(itertools.pairwise(snapshots))
    middles = [(t0 + t1) / 2 for (t0, _), (t1, _) in pairs]
    step = min((t1 - t0 for (t0, _), (t1, _) in pairs), default=1.0)
    width = 0.8 * step / max(1, len(bars))
    ax = _axes(ax)
    palette = {"enqueued": "tab:blue", "succeeded": "tab:green", "retried": "tab:red"}
    for i, name in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        increases = [s1.total(name) - s0.total(name) for (_, s0), (_, s1) in pairs]
        ax.bar(
            [m + offset for m in middles],
            increases,
            width=width,
            color=palette.get(name),
            label=f"{name} per interval",
        )
    for name in lines:
        increases = [s1.total(name) - s0.total(name) for (_, s0), (_, s1) in pairs]
        ax.plot(
            middles,
            increases,
            "o-",
            color=palette.get(name, "black"),
            label=f"{name} per interval",
        )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("increase between snapshots")
    ax.legend(loc="upper right")
    return ax


def slot_runs(
    rows: Mapping[str, Sequence[tuple[float, float]]],
    ax: Axes | None = None,
) -> Axes:
    """Plot, per schedule, each slot (open circle) and when its job ran (dot).

    ``rows`` maps a row label (a schedule, a policy) to ``(slot, ran)``
    pairs; a line joins a slot to a run that came late, and the count of
    runs that share one instant is written next to it when there are
    several, as after an outage.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import slot_runs
        >>> ax = slot_runs({"SKIP": [(0, 0), (10, 25), (30, 30)]})
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['SKIP']
    """
    ax = _axes(ax)
    for row, pairs in enumerate(rows.values()):
        for slot, ran in pairs:
            if ran > slot:
                ax.plot([slot, ran], [row, row], color="tab:blue", lw=1, alpha=0.6)
        ax.scatter(
            [s for s, _ in pairs],
            [row] * len(pairs),
            s=45,
            facecolors="none",
            edgecolors="tab:blue",
            zorder=3,
            label="slot" if row == 0 else None,
        )
        ax.scatter(
            [r for _, r in pairs],
            [row] * len(pairs),
            s=14,
            color="tab:orange",
            zorder=4,
            label="its job ran" if row == 0 else None,
        )
        for ran, count in collections.Counter(r for _, r in pairs).items():
            if count > 1:
                ax.annotate(
                    f"{count} jobs",
                    (ran, row),
                    xytext=(6, 7),
                    textcoords="offset points",
                    fontsize=8,
                )
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("time (s)")
    return ax


def restarts(
    runs: Sequence[tuple[float, float]],
    crashes: Sequence[float],
    ax: Axes | None = None,
    *,
    beats: Sequence[float] = (),
) -> Axes:
    """Draw a supervised task's runs, the pauses between them and its crashes.

    ``runs`` holds ``(start, end)`` per run; each pause before a restart is
    dotted and labelled with its length. The last crash is marked as the one
    the supervisor gave up on. ``beats``, the instants a sibling task kept
    working, are drawn on a row of their own.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import restarts
        >>> ax = restarts([(0, 3), (5, 9)], [3, 9], beats=[5])
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['heartbeat', 'task']
    """
    ax = _axes(ax)
    for start, end in runs:
        ax.broken_barh([(start, end - start)], (1.7, 0.6), color="tab:blue")
    for (_, end), (next_start, _) in itertools.pairwise(runs):
        ax.plot([end, next_start], [2, 2], ls=":", color="tab:gray")
        middle = ((end + next_start) / 2, 2.35)
        ax.annotate(f"{next_start - end:.0f}s", middle, ha="center", fontsize=8)
    restarted, gave_up = crashes[:-1], crashes[-1:]
    ax.scatter(
        restarted,
        [2] * len(restarted),
        marker="x",
        color="tab:orange",
        zorder=3,
        label="crash, restarted",
    )
    ax.scatter(
        gave_up,
        [2] * len(gave_up),
        marker="X",
        s=90,
        color="tab:red",
        zorder=3,
        label="crash, gave up",
    )
    ax.scatter(
        beats, [1] * len(beats), marker="|", s=200, color="tab:green", label="heartbeat"
    )
    ax.set(yticks=[1, 2], yticklabels=["heartbeat", "task"], ylim=(0.4, 2.8))
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, frameon=False)
    return ax


def lost_work(
    intervals: Mapping[str, tuple[float, float, float]],
    at: float,
    ax: Axes | None = None,
) -> Axes:
    """Draw tasks cut off at instant ``at``: green if finished, red and dashed if not.

    ``intervals`` maps a task's label to ``(start, end, needed)``: when it
    started, when it stopped and how long its work takes; the dashed box is
    the part of the work that never happened. Rows are sorted by label.

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import lost_work
        >>> ax = lost_work({"a": (0, 2, 2), "b": (0, 4, 6)}, at=4)
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['a', 'b']
    """
    ax = _axes(ax)
    labels = sorted(intervals)
    for row, label in enumerate(labels):
        start, end, needed = intervals[label]
        finished = end - start >= needed
        color = "tab:green" if finished else "tab:red"
        ax.broken_barh([(start, end - start)], (row - 0.35, 0.7), color=color)
        if not finished:
            missing = [(end, start + needed - end)]
            ax.broken_barh(
                missing,
                (row - 0.35, 0.7),
                facecolor="none",
                edgecolor="tab:red",
                linestyle="--",
            )
    ax.axvline(at, color="black", lw=1)
    ax.annotate(
        "process restarts",
        (at, -0.9),
        xytext=(5, 0),
        textcoords="offset points",
        fontsize=9,
    )
    ax.set(ylim=(-1.1, len(labels) - 0.4), yticks=range(len(labels)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("time (s)")
    return ax


# Rows of the tick charts, in order; the same in both so they read together.
_TICK_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple")
_TICK_MARKERS = (("o", 9), ("s", 7), ("^", 5), ("D", 4))


def tick_runs(
    rows: Mapping[str, Sequence[tuple[float, float, float]]],
    period: float,
    ax: Axes | None = None,
    *,
    unit: float = 1.0,
) -> Axes:
    """Draw, per row, each run of a periodic job as a bar under its scheduled slot.

    ``rows`` maps a label (a missed-tick behaviour) to ``(slot, started,
    ended)`` triples in seconds; a slanted line joins the slot (▼) to a run
    that started late, a run longer than ``period`` is drawn faded, and grey
    lines mark every period. Times are divided by ``unit`` (60 for minutes).

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import tick_runs
        >>> ax = tick_runs({"SKIP": [(0, 0, 1), (5, 7, 8)]}, period=5)
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['SKIP']
    """
    ax = _axes(ax)
    last = 0.0
    for row, (runs, color) in enumerate(zip(rows.values(), _TICK_COLORS, strict=False)):
        y = len(rows) - 1 - row
        for slot, started, ended in runs:
            alpha = 0.35 if ended - started > period else 0.9
            bar = [(started / unit, (ended - started) / unit)]
            ax.broken_barh(bar, (y - 0.3, 0.6), color=color, alpha=alpha)
            late = [slot / unit, started / unit]
            ax.plot(late, [y + 0.45, y + 0.3], color="0.35", lw=0.8)
            ax.plot([slot / unit], [y + 0.45], marker="v", color="0.2", markersize=5)
            last = max(last, slot, ended)
    for k in range(int(last // period) + 1):
        ax.axvline(k * period / unit, color="0.85", lw=0.8, zorder=0)
    ax.set(yticks=range(len(rows)), yticklabels=list(reversed(list(rows))))
    ax.set_ylim(-0.6, len(rows) - 0.35)
    ax.set_xlabel("time (s)" if unit == 1 else f"time (units of {unit:g} s)")
    return ax


def tick_lateness(
    rows: Mapping[str, Sequence[tuple[float, float, float]]],
    ax: Axes | None = None,
    *,
    unit: float = 1.0,
) -> Axes:
    """Plot each scheduled slot against the time its run started; late ones sit low.

    ``rows`` is as for :func:`tick_runs`; the dashed diagonal is "on time",
    and a point below it is a slot that started late. Times are divided by
    ``unit`` (60 for minutes).

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.charts import tick_lateness
        >>> ax = tick_lateness({"BURST": [(0, 0, 1), (5, 9, 10)]})
        >>> ax.get_legend_handles_labels()[1]
        ['on time', 'BURST']
    """
    ax = _axes(ax)
    limit = max((s for runs in rows.values() for _, s, _ in runs), default=1.0) / unit
    ax.plot([0, limit], [0, limit], ls="--", color="0.6", lw=1, label="on time")
    styles = zip(rows.items(), _TICK_COLORS, _TICK_MARKERS, strict=False)
    for (label, runs), color, (marker, size) in styles:
        started = [s / unit for _, s, _ in runs]
        slots = [slot / unit for slot, _, _ in runs]
        ax.plot(
            started,
            slots,
            ls="none",
            marker=marker,
            markersize=size,
            fillstyle="none",
            color=color,
            label=label,
        )
    ax.set_xlabel("time the run started")
    ax.set_ylabel("its scheduled slot")
    ax.grid(axis="y", color="0.9")
    ax.legend(loc="upper left")
    return ax
