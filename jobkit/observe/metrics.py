"""Metrics derived from the durable event log: counters, histograms and depth.

Every transition of every job is an event in the store, so the metrics need no
hooks in the worker: :class:`Metrics` follows ``store.events(after=seq)`` and
folds each event into counters and histograms. Because the log is the store's,
this works across processes: ``jobkit metrics`` on the command line reads the
same numbers as the workers that wrote them.

The folding itself (:meth:`Metrics.observe`) is pure, so tests and the
simulator can feed it events directly.

Definitions (per task and queue):

- ``enqueued``: ENQUEUED events; ``started``: STARTED events (attempts begun);
- ``succeeded``: attempts that succeeded;
- ``retried``: failed attempts after which the job was queued again
  (RETRIED, and EXPIRED: a worker died and the lease ran out);
- ``dead``: jobs that went DEAD (a permanent error or no attempts left);
- ``failed``: every failed attempt, ``retried + dead``;
- ``expired``: attempts lost with their worker, whether the job was retried
  or went dead (a subset of ``failed``);
- ``released``, ``requeued``, ``cancelled``, ``discarded``: the other events.

So at any moment ``started == succeeded + failed + released + (running)``.

Durations are those of attempts a worker reported on, from STARTED to
SUCCEEDED, RETRIED or DEAD of the same job and attempt, labelled with the
outcome (``succeeded`` or ``failed``). Attempts lost with a crashed worker or
released at shutdown have no meaningful duration and are not observed.
Attempts per job are observed when a job finishes (SUCCEEDED or DEAD).

Purging jobs does not take anything back: the store folds the purged events
into its :meth:`~jobkit.Store.purge_totals` (see :func:`tally_events`), and
:class:`Metrics` starts from those. Counters, histogram counts and sums, and
the attempts histogram stay exact. Purged durations are kept in the buckets
of :data:`DURATION_BUCKETS`; with other bounds a purged duration counts in
the lowest bucket it could belong to, so cumulative bucket counts never drop
but may lean low.

Every exporter reads the whole database, so the numbers of several workers
on one file are the same numbers: scrape one exporter, do not sum them.
"""

from __future__ import annotations

import bisect
import contextlib
import html
import itertools
import math
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..core.job import EXPIRED_ERROR, Event, EventKind, JobState
from ..store.protocol import JobNotFound, PurgeTotals, QueueCounts, Store
from ..store.tallies import ATTEMPTS_SERIES as _ATTEMPTS_SERIES
from ..store.tallies import DURATION_BUCKETS, tally_events
from ..store.tallies import DURATION_SERIES as _DURATION_SERIES
from ..store.tallies import ENDS_ATTEMPT as _ENDS_ATTEMPT

__all__ = [
    "ATTEMPT_BUCKETS",
    "COUNTERS",
    "DURATION_BUCKETS",
    "Histogram",
    "Metrics",
    "MetricsSnapshot",
    "collect_metrics",
    "percentile",
    "tally_events",
]

ATTEMPT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100)
"""Upper bounds of the attempts-per-finished-job histogram."""

COUNTERS: tuple[str, ...] = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "dead",
    "expired",
    "released",
    "requeued",
    "cancelled",
    "discarded",
)
"""The names of the counters a :class:`MetricsSnapshot` holds, in display order."""

# Which counters each event kind increments.
_COUNTS: dict[EventKind, tuple[str, ...]] = {
    EventKind.ENQUEUED: ("enqueued",),
    EventKind.STARTED: ("started",),
    EventKind.SUCCEEDED: ("succeeded",),
    EventKind.RETRIED: ("retried", "failed"),
    EventKind.EXPIRED: ("retried", "failed", "expired"),
    EventKind.DEAD: ("dead", "failed"),
    EventKind.RELEASED: ("released",),
    EventKind.REQUEUED: ("requeued",),
    EventKind.CANCELLED: ("cancelled",),
    EventKind.DISCARDED: ("discarded",),
}

# After these a job sees no more events unless a person acts on it, so its
# labels can be forgotten (and looked up again if it ever comes back).
_FORGET = frozenset(
    {
        EventKind.SUCCEEDED,
        EventKind.DEAD,
        EventKind.CANCELLED,
        EventKind.DISCARDED,
    }
)

UNKNOWN = "unknown"
"""The task and queue label of an event whose job the store no longer has."""


def _check_buckets(buckets: Sequence[float], what: str) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds:
        raise ValueError(f"{what} must not be empty")
    if any(not math.isfinite(b) for b in bounds):
        raise ValueError(f"{what} must be finite (+Inf is implied), got {buckets!r}")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"{what} must be strictly increasing, got {buckets!r}")
    return bounds


@attrs.frozen
class Histogram:
    """Observations counted into fixed buckets, as Prometheus histograms do.

    ``counts[i]`` is the number of observations ``<= bounds[i]`` and greater
    than the previous bound; ``counts[-1]`` (one more than there are bounds)
    counts those above the last bound.

    Example::

        >>> from jobkit import Histogram
        >>> h = Histogram.of([0.2, 0.7, 3.0], bounds=(0.5, 1.0))
        >>> h.counts, h.count, h.sum
        ((1, 1, 1), 3, 3.9)
        >>> h.cumulative()
        [(0.5, 1), (1.0, 2), (inf, 3)]
        >>> round(h.mean, 2)
        1.3
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float = 0.0

    def __attrs_post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(
                f"a histogram with {len(self.bounds)} bounds needs "
                f"{len(self.bounds) + 1} counts, got {len(self.counts)}"
            )

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> Histogram:
        """Return a histogram with the given bucket bounds and no observations.

        Example::

            >>> from jobkit import Histogram
            >>> Histogram.empty((1.0, 2.0)).count
            0
        """
        checked = _check_buckets(bounds, "bounds")
        return cls(checked, (0,) * (len(checked) + 1))

    @classmethod
    def of(cls, values: Iterable[float], *, bounds: Sequence[float]) -> Histogram:
        """Return the histogram of ``values`` over the given bucket bounds.

        Example::

            >>> from jobkit import Histogram
            >>> Histogram.of([1, 1, 5], bounds=(1, 2)).counts
            (2, 0, 1)
        """
        checked = _check_buckets(bounds, "bounds")
        counts = [0] * (len(checked) + 1)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(checked, value)] += 1
            total += value
        return cls(checked, tuple(counts), total)

    @property
    def count(self) -> int:
        """The number of observations."""
        return sum(self.counts)

    @property
    def mean(self) -> float:
        """The mean observation, or NaN when there is none."""
        return self.sum / self.count if self.count else math.nan

    def cumulative(self) -> list[tuple[float, int]]:
        """Return ``(upper bound, observations <= bound)`` pairs, ending with +Inf."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """Estimate the ``q`` quantile by linear interpolation inside its bucket.

        This is what Prometheus's ``histogram_quantile`` does; a quantile
        that falls in the +Inf bucket is reported as the last finite bound.

        Example::

            >>> from jobkit import Histogram
            >>> Histogram.of([0.1] * 9 + [4.0], bounds=(0.5, 1.0, 5.0)).quantile(0.5)
            0.2777777777777778
        """
        _check_q(q)
        total = self.count
        if total == 0:
            return math.nan
        rank = q * total
        lower = 0.0
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            if n and running + n >= rank:
                return lower + (bound - lower) * (rank - running) / n
            running += n
            lower = bound
        return self.bounds[-1]

    def __add__(self, other: Histogram) -> Histogram:
        if not isinstance(other, Histogram):
            return NotImplemented
        if other.bounds != self.bounds:
            raise ValueError("cannot add histograms with different bucket bounds")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Histogram(self.bounds, counts, self.sum + other.sum)


def _check_q(q: float) -> None:
    if not 0 <= q <= 1:
        raise ValueError(f"q must be between 0 and 1, got {q!r}")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Return the ``q`` quantile of ascending ``sorted_values`` by nearest rank.

    The answer is one of the values, never an interpolation, and None when
    there is none: exact figures where :meth:`Histogram.quantile` estimates
    from buckets as Prometheus does. The lab's summaries quote these.

    Example::

        >>> from jobkit.observe.metrics import percentile
        >>> percentile([1.0, 2.0, 3.0, 10.0], 0.5), percentile([], 0.95)
        (2.0, None)
    """
    _check_q(q)
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class _HistogramBuilder:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def freeze(self) -> Histogram:
        return Histogram(self.bounds, tuple(self.counts), self.sum)


def _fmt_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}min"


@attrs.frozen(repr=False)
class MetricsSnapshot:
    """The queue's metrics at one moment: counters, histograms and depth.

    Get one with ``await queue.metrics()`` or :func:`collect_metrics`. It is
    immutable; :meth:`to_prometheus` renders it in the Prometheus text
    format, and in a notebook it shows as a table.

    - ``counters[name][(task, queue)]``: the counters named in
      :data:`COUNTERS`;
    - ``durations[(task, outcome)]``: attempt durations in seconds, outcome
      ``"succeeded"`` or ``"failed"``;
    - ``attempts[task]``: attempts each finished job used;
    - ``depth``: jobs per queue and state when the snapshot was taken;
    - ``seq``: the last event sequence folded in.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
        >>> @queue.task()
        ... async def email(to: str) -> None:
        ...     await trio.sleep(0.5)
        >>> async def main():
        ...     await email.enqueue(to="ada")
        ...     await email.options(delay=60).enqueue(to="bob")
        ...     token = jobkit.CancellationToken()
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(jobkit.Worker(queue, shutdown=token).run)
        ...         await trio.sleep(5)
        ...         token.cancel()
        ...     return await queue.metrics()
        >>> snap = jobkit.testing.run_virtual(main)
        >>> snap.total("enqueued"), snap.total("succeeded")
        (2, 1)
        >>> snap.duration("email").sum
        0.5
        >>> snap
        <MetricsSnapshot enqueued=2 ... dead=0; depth queued=1 running=0 dead=0>
    """

    counters: Mapping[str, Mapping[tuple[str, str], int]]
    durations: Mapping[tuple[str, str], Histogram]
    attempts: Mapping[str, Histogram]
    depth: QueueCounts
    seq: int = 0
    duration_bounds: tuple[float, ...] = DURATION_BUCKETS
    attempt_bounds: tuple[float, ...] = ATTEMPT_BUCKETS

    def total(
        self, name: str, *, task: str | None = None, queue: str | None = None
    ) -> int:
        """Return counter ``name`` summed over tasks and queues (or for one of each).

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> MetricsSnapshot.empty().total("dead")
            0
        """
        if name not in COUNTERS:
            raise ValueError(f"unknown counter {name!r}; the counters are {COUNTERS}")
        return sum(
            n
            for (t, q), n in self.counters.get(name, {}).items()
            if (task is None or t == task) and (queue is None or q == queue)
        )

    @property
    def tasks(self) -> list[str]:
        """The task names seen, sorted."""
        names = {t for per in self.counters.values() for t, _ in per}
        names.update(t for t, _ in self.durations)
        return sorted(names)

    def duration(
        self, task: str | None = None, outcome: str | None = None
    ) -> Histogram:
        """Return attempt durations for one task and/or outcome, or all merged.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> MetricsSnapshot.empty().duration("email").count
            0
        """
        merged = Histogram.empty(self.duration_bounds)
        for (t, o), hist in self.durations.items():
            if (task is None or t == task) and (outcome is None or o == outcome):
                merged = merged + hist
        return merged

    def attempts_of(self, task: str | None = None) -> Histogram:
        """Return the attempts-per-finished-job histogram of one task, or all merged.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> MetricsSnapshot.empty().attempts_of().count
            0
        """
        merged = Histogram.empty(self.attempt_bounds)
        for t, hist in self.attempts.items():
            if task is None or t == task:
                merged = merged + hist
        return merged

    @classmethod
    def empty(cls) -> MetricsSnapshot:
        """Return the snapshot of a queue that never saw a job.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> MetricsSnapshot.empty().tasks
            []
        """
        return cls({name: {} for name in COUNTERS}, {}, {}, QueueCounts({}))

    def rows(self) -> list[dict[str, Any]]:
        """Return one row per task and queue: counters, then duration statistics.

        This is the table that :meth:`_repr_html_` and ``jobkit stats`` show.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> MetricsSnapshot.empty().rows()
            []
        """
        keys = sorted({key for per in self.counters.values() for key in per})
        rows = []
        for task, queue in keys:
            row: dict[str, Any] = {"task": task, "queue": queue}
            for name in COUNTERS:
                row[name] = self.counters.get(name, {}).get((task, queue), 0)
            hist = self.duration(task)
            row["mean_duration"] = hist.mean
            row["p95_duration"] = hist.quantile(0.95) if hist.count else math.nan
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON data (``jobkit metrics --json``).

        Histogram buckets are ``[upper bound, cumulative count]`` pairs, the
        last bound being the string ``"+Inf"``.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> sorted(MetricsSnapshot.empty().to_dict())
            ['attempts', 'counters', 'depth', 'durations', 'seq']
        """

        def hist(h: Histogram) -> dict[str, Any]:
            return {
                "count": h.count,
                "sum": h.sum,
                "buckets": [
                    [bound if math.isfinite(bound) else "+Inf", n]
                    for bound, n in h.cumulative()
                ],
            }

        return {
            "seq": self.seq,
            "counters": {
                name: [
                    {"task": t, "queue": q, "value": n}
                    for (t, q), n in sorted(self.counters.get(name, {}).items())
                ]
                for name in COUNTERS
            },
            "durations": [
                {"task": t, "outcome": o, **hist(h)}
                for (t, o), h in sorted(self.durations.items())
            ],
            "attempts": [
                {"task": t, **hist(h)} for t, h in sorted(self.attempts.items())
            ],
            "depth": [
                {"queue": q, "state": s.value, "jobs": self.depth.get(q, s)}
                for q in self.depth.queues
                for s in JobState
            ],
        }

    def __repr__(self) -> str:
        main = " ".join(f"{n}={self.total(n)}" for n in COUNTERS[:6])
        depth = " ".join(
            f"{s.value}={self.depth.total(s)}"
            for s in (JobState.QUEUED, JobState.RUNNING, JobState.DEAD)
        )
        return f"<MetricsSnapshot {main}; depth {depth}>"

    def __str__(self) -> str:
        lines = [repr(self)]
        for row in self.rows():
            counts = ", ".join(
                f"{n} {row[n]}" for n in COUNTERS if row[n] or n in COUNTERS[:6]
            )
            lines.append(
                f"  {row['task']} @ {row['queue']}: {counts}; mean "
                f"{_fmt_seconds(row['mean_duration'])}, p95 "
                f"{_fmt_seconds(row['p95_duration'])}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        shown = COUNTERS[:6]
        head = "".join(
            f"<th>{h}</th>"
            for h in ("task", "queue", *shown, "mean duration", "p95 duration")
        )
        body = []
        for row in self.rows():
            cells = [html.escape(row["task"]), html.escape(row["queue"])]
            cells += [str(row[n]) for n in shown]
            cells += [
                _fmt_seconds(row["mean_duration"]),
                _fmt_seconds(row["p95_duration"]),
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        depth_head = "".join(f"<th>{s.value}</th>" for s in JobState)
        depth_rows = [
            f"<tr><td>{html.escape(q)}</td>"
            + "".join(f"<td>{self.depth.get(q, s)}</td>" for s in JobState)
            + "</tr>"
            for q in self.depth.queues
        ]
        return (
            "<div><strong>jobkit metrics</strong>"
            f"<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
            "<strong>depth</strong>"
            f"<table><thead><tr><th>queue</th>{depth_head}</tr></thead>"
            f"<tbody>{''.join(depth_rows)}</tbody></table></div>"
        )

    def to_prometheus(self, *, prefix: str = "jobkit") -> str:
        """Render the snapshot in the Prometheus text exposition format (0.0.4).

        Counters are ``<prefix>_jobs_<name>_total{task, queue}``, durations
        the histogram ``<prefix>_job_duration_seconds{task, outcome}``,
        attempts the histogram ``<prefix>_job_attempts{task}``, and depth the
        gauge ``<prefix>_jobs{queue, state}`` with every state of every known
        queue, zeros included, so a dashboard sees a state empty out.

        Example::

            >>> from jobkit import MetricsSnapshot
            >>> text = MetricsSnapshot.empty().to_prometheus()
            >>> print(text.splitlines()[1])
            # TYPE jobkit_jobs_enqueued_total counter
        """
        from .prometheus import render

        return render(self, prefix=prefix)


class Metrics:
    """Fold a store's event log into counters and histograms, incrementally.

    :meth:`update` reads only the events after the last one it saw, so
    calling it often is cheap; :meth:`snapshot` freezes the current numbers.
    :func:`collect_metrics` keeps one of these per store and does both.
    :meth:`observe` is the pure step, for feeding events by hand.

    Memory stays proportional to the jobs still in flight: a job's labels are
    forgotten once it finishes and looked up again if a person requeues it.

    Example::

        >>> from jobkit import JobEvent, EventKind, Metrics
        >>> m = Metrics()
        >>> m.observe(1, JobEvent(7, EventKind.ENQUEUED, 0.0, 0), task="t", queue="q")
        >>> m.observe(2, JobEvent(7, EventKind.STARTED, 1.0, 1), task="t", queue="q")
        >>> m.observe(3, JobEvent(7, EventKind.SUCCEEDED, 3.0, 1), task="t", queue="q")
        >>> snap = m.snapshot()
        >>> snap.total("succeeded"), snap.duration("t").sum, snap.seq
        (1, 2.0, 3)
    """

    def __init__(
        self,
        *,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
        attempt_buckets: Sequence[float] = ATTEMPT_BUCKETS,
        batch: int = 5000,
    ) -> None:
        self._duration_bounds = _check_buckets(duration_buckets, "duration_buckets")
        self._attempt_bounds = _check_buckets(attempt_buckets, "attempt_buckets")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        self._batch = batch
        self._clear()

    def _clear(self) -> None:
        self.seq = 0
        """The sequence number of the last event folded in."""
        self._labels: dict[int, tuple[str, str]] = {}
        self._running: dict[int, tuple[int, float]] = {}
        self._counters: Counter[tuple[str, str, str]] = Counter()
        self._durations: dict[tuple[str, str], _HistogramBuilder] = {}
        self._attempts: dict[str, _HistogramBuilder] = {}
        self._purge_version = 0

    def __repr__(self) -> str:
        return f"<Metrics at event {self.seq}, {len(self._running)} attempts running>"

    def observe(self, seq: int, event: Event, *, task: str, queue: str) -> None:
        """Fold one event of a job of ``task`` on ``queue`` into the metrics.

        Events at or before :attr:`seq` were already counted and are ignored,
        so overlapping reads of the log cannot count anything twice.
        """
        if seq <= self.seq:
            return
        self.seq = seq
        kind = event.kind
        lost = kind is EventKind.EXPIRED or (
            kind is EventKind.DEAD and event.error == EXPIRED_ERROR
        )
        for name in _COUNTS.get(kind, ()):
            self._counters[(name, task, queue)] += 1
        if lost and kind is EventKind.DEAD:
            self._counters[("expired", task, queue)] += 1
        if kind is EventKind.STARTED:
            self._running[event.job_id] = (event.attempt, event.at)
        elif kind in _ENDS_ATTEMPT:
            started = self._running.get(event.job_id)
            if started is not None and started[0] == event.attempt:
                del self._running[event.job_id]
                if kind is not EventKind.RELEASED and not lost:
                    outcome = "succeeded" if kind is EventKind.SUCCEEDED else "failed"
                    builder = self._duration_builder(task, outcome)
                    builder.observe(max(0.0, event.at - started[1]))
        if kind in (EventKind.SUCCEEDED, EventKind.DEAD):
            self._attempts_builder(task).observe(event.attempt)
        if kind in _FORGET:
            self._labels.pop(event.job_id, None)
        else:
            self._labels[event.job_id] = (task, queue)

    def _duration_builder(self, task: str, outcome: str) -> _HistogramBuilder:
        builder = self._durations.get((task, outcome))
        if builder is None:
            builder = _HistogramBuilder(self._duration_bounds)
            self._durations[(task, outcome)] = builder
        return builder

    def _attempts_builder(self, task: str) -> _HistogramBuilder:
        builder = self._attempts.get(task)
        if builder is None:
            builder = self._attempts[task] = _HistogramBuilder(self._attempt_bounds)
        return builder

    def start_from(self, totals: PurgeTotals) -> None:
        """Forget everything folded so far and start from a store's purge totals.

        :meth:`update` does this whenever the store purged since the last
        call, then folds the whole remaining log again.

        Example::

            >>> from jobkit import EventKind, Metrics, PurgeTotals
            >>> m = Metrics()
            >>> m.start_from(PurgeTotals(1, {("t", "q", "succeeded", 0): (20, 0.0)}))
            >>> m.snapshot().total("succeeded")
            20
        """
        self._clear()
        self._purge_version = totals.version
        kinds = {kind.value: kind for kind in EventKind}
        for (task, queue, series, key), (n, total) in totals.tallies.items():
            kind = kinds.get(series)
            if kind is not None:
                for name in _COUNTS.get(kind, ()):
                    self._counters[(name, task, queue)] += n
                if key and kind is EventKind.DEAD:
                    self._counters[("expired", task, queue)] += n
            elif series == _ATTEMPTS_SERIES:
                builder = self._attempts_builder(task)
                builder.counts[bisect.bisect_left(self._attempt_bounds, key)] += n
                builder.sum += total
            elif series in _DURATION_SERIES.values():
                outcome = series.split(":", 1)[1]
                builder = self._duration_builder(task, outcome)
                # The lowest of this run's buckets the durations may be in.
                low = DURATION_BUCKETS[key - 1] if key > 0 else -math.inf
                builder.counts[bisect.bisect_right(self._duration_bounds, low)] += n
                builder.sum += total

    async def _labels_for(
        self,
        store: Store,
        job_ids: set[int],
        catalog: dict[int, tuple[str, str]],
    ) -> dict[int, tuple[str, str]]:
        # One listing of a range of ids beats thousands of lookups when
        # catching up on a long log; a few lookups beat loading many jobs.
        # ``catalog`` keeps that listing for the rest of this update.
        unknown = job_ids - catalog.keys()
        if len(unknown) > 64:
            # The ids between the lowest and the highest unknown one: a
            # follower that keeps up reads the newest rows, not the table.
            catalog.clear()
            for job in await store.list(
                after_id=min(unknown) - 1, before_id=max(unknown) + 1, limit=None
            ):
                catalog[job.id] = (job.task, job.queue)
        found = {i: catalog[i] for i in job_ids if i in catalog}
        for job_id in job_ids - found.keys():
            try:
                job = await store.get(job_id)
            except JobNotFound:
                found[job_id] = (UNKNOWN, UNKNOWN)
            else:
                found[job_id] = (job.task, job.queue)
        return found

    async def update(self, store: Store) -> int:
        """Fold in every event the store recorded since the last call; return how many.

        If the store purged jobs since, the numbers are rebuilt from its
        :meth:`~jobkit.Store.purge_totals` and the remaining log, so no
        counter ever goes down and no purged job shows up as ``unknown``.

        Example::

            >>> import trio
            >>> from jobkit import MemoryStore, Metrics, NewJob
            >>> async def main():
            ...     store, metrics = MemoryStore(), Metrics()
            ...     await store.enqueue([NewJob(task="t")], now=0.0)
            ...     return await metrics.update(store), await metrics.update(store)
            >>> trio.run(main)
            (1, 0)
        """
        while True:
            totals = await store.purge_totals()
            if totals.version != self._purge_version:
                self.start_from(totals)
            folded = await self._fold_log(store)
            # A purge while folding may have taken events before they were
            # read, or jobs before their labels were: then start again.
            if (await store.purge_totals()).version == totals.version:
                return folded

    async def _fold_log(self, store: Store) -> int:
        folded = 0
        catalog: dict[int, tuple[str, str]] = {}
        while True:
            batch = await store.events(after=self.seq, limit=self._batch)
            if not batch:
                return folded
            # Resolve every job of the batch up front: observe() forgets a job
            # that finishes, and the same batch may requeue it afterwards.
            labels = {e.job_id: self._labels.get(e.job_id) for _, e in batch}
            missing = {job_id for job_id, known in labels.items() if known is None}
            if missing:
                labels.update(await self._labels_for(store, missing, catalog))
            for seq, event in batch:
                if seq <= self.seq:
                    continue  # another update() folded it while we waited
                task, queue = labels[event.job_id] or (UNKNOWN, UNKNOWN)
                self.observe(seq, event, task=task, queue=queue)
                folded += 1
            if len(batch) < self._batch:
                return folded

    def snapshot(self, depth: QueueCounts | None = None) -> MetricsSnapshot:
        """Freeze the current numbers, with ``depth`` as the queue depth."""
        counters: dict[str, dict[tuple[str, str], int]] = {n: {} for n in COUNTERS}
        for (name, task, queue), n in sorted(self._counters.items()):
            counters[name][(task, queue)] = n
        return MetricsSnapshot(
            counters=counters,
            durations={k: b.freeze() for k, b in sorted(self._durations.items())},
            attempts={k: b.freeze() for k, b in sorted(self._attempts.items())},
            depth=QueueCounts({}) if depth is None else depth,
            seq=self.seq,
            duration_bounds=self._duration_bounds,
            attempt_bounds=self._attempt_bounds,
        )


# One accumulator per store, so repeated ``queue.metrics()`` calls read only
# the new events. Weak keys: the cache must not keep a closed store alive.
_FOLLOWERS: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


def _store_of(source: Any) -> Store:
    store = getattr(source, "store", source)
    if not isinstance(store, Store):
        raise TypeError(
            f"expected a jobkit Queue or Store, got {type(source).__name__}"
        )
    return store


async def collect_metrics(source: Any) -> MetricsSnapshot:
    """Return a :class:`MetricsSnapshot` of a queue or store, from its event log.

    ``source`` is a ``jobkit.Queue`` (its current ``store`` is read) or a
    store. The first call reads the whole log; later calls on the same store
    read only the events since, so polling this is cheap.

    Example::

        >>> import trio
        >>> from jobkit import JobState, MemoryStore, NewJob, collect_metrics
        >>> async def main():
        ...     store = MemoryStore()
        ...     await store.enqueue([NewJob(task="t", queue="mail")], now=0.0)
        ...     return await collect_metrics(store)
        >>> snap = trio.run(main)
        >>> snap.total("enqueued", queue="mail")
        1
        >>> snap.depth.get("mail", JobState.QUEUED)
        1
    """
    store = _store_of(source)
    try:
        metrics = _FOLLOWERS[store]
    except KeyError:
        metrics = Metrics()
        # A store that cannot be weakly referenced is read from scratch each time.
        with contextlib.suppress(TypeError):
            _FOLLOWERS[store] = metrics
    except TypeError:
        metrics = Metrics()
    await metrics.update(store)
    return metrics.snapshot(await store.counts())
