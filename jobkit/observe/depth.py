"""Queue depth over time: sampled from a store, or replayed from an event log.

A :class:`DepthSampler` asks a store how many jobs each queue holds in each
state, every few seconds: the only view of a long-running queue whose log is
purged. :func:`depth_points` replays a complete log instead, and tells
apart the queued jobs that are due from those waiting out a backoff; the
fault-injection lab's :meth:`jobkit.sim.Trace.queue_depth` is this replay of
its run. :func:`jobkit.charts.queue_depth` draws either.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from ..core.job import Event, EventKind
from ..store.protocol import QueueCounts
from .metrics import _store_of

__all__ = [
    "DepthPoint",
    "DepthSample",
    "DepthSampler",
    "depth_points",
    "replay_depth",
]


@attrs.frozen
class DepthSample:
    """The number of jobs per queue and state at one instant.

    Example::

        >>> from jobkit import DepthSample, JobState, QueueCounts
        >>> s = DepthSample(at=5.0, counts=QueueCounts({("q", JobState.QUEUED): 2}))
        >>> s.counts.get("q", JobState.QUEUED)
        2
    """

    at: float
    counts: QueueCounts


class DepthSampler:
    """Record queue depth on a fixed period, for charts of depth over time.

    Run :meth:`run` in a nursery; it samples at once and then every
    ``every`` seconds of trio's clock (so a ``MockClock`` drives it) until
    cancelled, appending :class:`DepthSample` records to :attr:`samples`.
    Sample times come from ``clock``, by default the queue's own clock when
    given a queue (so they line up with event times) and trio's otherwise.

    Example::

        >>> import trio, jobkit.testing
        >>> from jobkit import DepthSampler, JobState, MemoryStore, NewJob
        >>> async def main():
        ...     store = MemoryStore()
        ...     sampler = DepthSampler(store, every=10)
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(sampler.run)
        ...         await trio.sleep(15)
        ...         await store.enqueue([NewJob(task="t")], now=15.0)
        ...         await trio.sleep(10)
        ...         nursery.cancel_scope.cancel()
        ...     return [(s.at, s.counts.total(JobState.QUEUED))
        ...             for s in sampler.samples]
        >>> jobkit.testing.run_virtual(main)
        [(0.0, 0), (10.0, 0), (20.0, 1)]
    """

    def __init__(
        self,
        source: Any,
        *,
        every: float,
        clock: Callable[[], float] | None = None,
        limit: int | None = None,
    ) -> None:
        _store_of(source)
        if not (isinstance(every, int | float) and math.isfinite(every) and every > 0):
            raise ValueError(
                f"every must be a positive number of seconds, got {every!r}"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        self._source = source
        self.every = float(every)
        if clock is None:
            queue_clock = getattr(source, "clock", None)
            clock = queue_clock if callable(queue_clock) else trio.current_time
        self._clock = clock
        self._limit = limit
        self.samples: list[DepthSample] = []
        """Every sample taken, oldest first (the oldest dropped past ``limit``)."""

    def __repr__(self) -> str:
        return f"<DepthSampler every {self.every:g}s, {len(self.samples)} samples>"

    async def sample(self) -> DepthSample:
        """Take one sample now, record it and return it."""
        counts = await _store_of(self._source).counts()
        sample = DepthSample(self._clock(), counts)
        self.samples.append(sample)
        if self._limit is not None and len(self.samples) > self._limit:
            del self.samples[0]
        return sample

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample now and then every ``every`` seconds, until cancelled."""
        from ..runtime.interval import MissedTickBehavior, interval

        # DELAY: after a slow store call, keep the spacing, not a burst.
        ticker = interval(self.every, missed_tick_behavior=MissedTickBehavior.DELAY)
        started = False
        while True:
            await ticker.tick()
            await self.sample()
            if not started:
                task_status.started()
                started = True


@attrs.frozen
class DepthPoint:
    """How many jobs were in each phase from ``time`` until the next point.

    ``ready`` jobs are queued and due, waiting for a worker; ``waiting`` jobs
    are queued but wait out a backoff delay; ``running`` jobs are held by a
    worker. :func:`depth_points` replays a log into these.

    Example::

        >>> from jobkit import DepthPoint
        >>> DepthPoint(time=5.0, ready=3, waiting=2, running=4).queued
        5
    """

    time: float
    ready: int
    waiting: int
    running: int

    @property
    def queued(self) -> int:
        """Jobs in the QUEUED state: ready plus waiting."""
        return self.ready + self.waiting


# Module constants compared by identity: reading a member off its enum, or
# hashing it, runs Python code, once per event of a long simulated run.
(_ENQUEUED, _STARTED, _SUCCEEDED, _RETRIED, _EXPIRED, _DEAD) = (
    EventKind.ENQUEUED,
    EventKind.STARTED,
    EventKind.SUCCEEDED,
    EventKind.RETRIED,
    EventKind.EXPIRED,
    EventKind.DEAD,
)
_RELEASED, _REQUEUED, _CANCELLED = (
    EventKind.RELEASED,
    EventKind.REQUEUED,
    EventKind.CANCELLED,
)


def depth_points(
    events: Iterable[Event | tuple[int, Event]],
    *,
    due: Mapping[tuple[int, int], float] | None = None,
    until: float | None = None,
) -> list[DepthPoint]:
    """Replay an event log into the jobs ready, waiting and running over time.

    Takes events oldest first, or the ``(seq, event)`` pairs
    ``store.events()`` returns, and gives one point per change, each holding
    until the next. A job retried after attempt ``n`` waits until
    ``due[(job_id, n)]``, its ``run_at`` then, which the log does not hold;
    without it the job counts as ready at once. Waits still running after
    the last event end at their due time, up to ``until``.

    Example::

        >>> from jobkit import EventKind, JobEvent, depth_points
        >>> log = [JobEvent(1, EventKind.ENQUEUED, 0.0, 0),
        ...        JobEvent(1, EventKind.STARTED, 1.0, 1),
        ...        JobEvent(1, EventKind.RETRIED, 2.0, 1, "boom")]
        >>> [(p.time, p.ready, p.waiting, p.running)
        ...  for p in depth_points(log, due={(1, 1): 6.0})]
        [(0.0, 1, 0, 0), (1.0, 0, 0, 1), (2.0, 0, 1, 0), (6.0, 1, 0, 0)]
    """
    dues = due or {}
    rows = (
        (
            e.at,
            e.kind,
            e.job_id,
            dues.get((e.job_id, e.attempt)) if e.kind is EventKind.RETRIED else None,
        )
        for e in (item[1] if isinstance(item, tuple) else item for item in events)
    )
    return replay_depth(rows, until=until)


def replay_depth(
    rows: Iterable[tuple[float, EventKind, int, float | None]],
    *,
    until: float | None = None,
) -> list[DepthPoint]:
    """Replay ``(at, kind, job_id, due)`` rows into :class:`DepthPoint` records.

    This is :func:`depth_points` for callers that keep their own records of
    the log, such as the fault-injection lab's trace: ``due`` is when a
    RETRIED job becomes due again (None elsewhere, or if unknown).

    Example::

        >>> from jobkit import EventKind
        >>> from jobkit.observe.depth import replay_depth
        >>> rows = [(0.0, EventKind.ENQUEUED, 1, None)]
        >>> [(p.time, p.ready) for p in replay_depth(rows)]
        [(0.0, 1)]
    """
    ready = waiting = running = 0
    # (due time, job) per wait; a cancelled job's entry is skipped when popped.
    wakes: list[tuple[float, int]] = []
    waiting_until: dict[int, float] = {}
    points: list[DepthPoint] = []

    def note(t: float) -> None:
        point = DepthPoint(t, ready, waiting, running)
        if points and points[-1].time == t:
            points[-1] = point
        else:
            points.append(point)

    for at, kind, job_id, wake in rows:
        while wakes and wakes[0][0] <= at:
            t, woken = heapq.heappop(wakes)
            if waiting_until.get(woken) == t:
                del waiting_until[woken]
                waiting -= 1
                ready += 1
                note(t)
        if kind is _ENQUEUED or kind is _REQUEUED:
            ready += 1
        elif kind is _STARTED:
            ready -= 1
            running += 1
        elif kind is _SUCCEEDED or kind is _DEAD:
            running -= 1
        elif kind is _EXPIRED or kind is _RELEASED:
            running -= 1
            ready += 1
        elif kind is _RETRIED:
            running -= 1
            if wake is not None and wake > at:
                waiting += 1
                waiting_until[job_id] = wake
                heapq.heappush(wakes, (wake, job_id))
            else:
                ready += 1
        elif kind is _CANCELLED:
            if waiting_until.pop(job_id, None) is None:
                ready -= 1
            else:
                waiting -= 1
        else:
            continue
        note(at)
    limit = math.inf if until is None else until
    while wakes and wakes[0][0] <= limit:
        t, woken = heapq.heappop(wakes)
        if waiting_until.get(woken) == t:
            del waiting_until[woken]
            waiting -= 1
            ready += 1
            note(t)
    return points
