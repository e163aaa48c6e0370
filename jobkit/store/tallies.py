"""What a purge keeps of the finished jobs it deletes: their events, added up.

A store folds each purged job's events into its purge totals with
:func:`tally_events`, so that the metrics built on the event log never go
backwards when old jobs are deleted. The store layer owns this because the
store does the folding, inside the purge's transaction; :mod:`jobkit.observe`
reads the totals back.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..core.job import EXPIRED_ERROR, Event, EventKind
from .protocol import TallyKey

__all__ = ["DURATION_BUCKETS", "tally_events"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
"""Upper bounds (seconds) of the attempt-duration histogram: Prometheus's
defaults, stretched to an hour because background jobs run long."""

# The events that end an attempt, whatever its outcome.
ENDS_ATTEMPT = frozenset(
    {
        EventKind.SUCCEEDED,
        EventKind.RETRIED,
        EventKind.EXPIRED,
        EventKind.DEAD,
        EventKind.RELEASED,
    }
)

# Series of the purge tallies (besides the event kinds' values).
DURATION_SERIES = {"succeeded": "duration:succeeded", "failed": "duration:failed"}
ATTEMPTS_SERIES = "attempts"


def tally_events(
    task: str, queue: str, events: Iterable[Event]
) -> dict[TallyKey, tuple[int, float]]:
    """Add up one finished job's events as a purge keeps them, without bucket bounds.

    Keys are ``(task, queue, series, key)``, values ``(count, sum)``:

    - series an event kind's value: that many events; key 1 marks DEAD
      events of lost leases, 0 the others;
    - ``"duration:succeeded"``/``"duration:failed"``: attempt durations,
      key the index of their bucket in :data:`DURATION_BUCKETS`;
    - ``"attempts"``: finished jobs, key the attempts each used.

    Example::

        >>> from jobkit import EventKind, JobEvent, tally_events
        >>> t = tally_events("t", "q", [JobEvent(1, EventKind.ENQUEUED, 0.0, 0),
        ...     JobEvent(1, EventKind.STARTED, 1.0, 1),
        ...     JobEvent(1, EventKind.SUCCEEDED, 1.5, 1)])
        >>> t[("t", "q", "succeeded", 0)], t[("t", "q", "duration:succeeded", 6)]
        ((1, 0.0), (1, 0.5))
    """
    out: dict[TallyKey, tuple[int, float]] = {}

    def add(series: str, key: int, value: float = 0.0) -> None:
        n, total = out.get((task, queue, series, key), (0, 0.0))
        out[(task, queue, series, key)] = (n + 1, total + value)

    started: tuple[int, float] | None = None
    for event in events:
        kind = event.kind
        lost = kind is EventKind.EXPIRED or (
            kind is EventKind.DEAD and event.error == EXPIRED_ERROR
        )
        add(kind.value, int(lost and kind is EventKind.DEAD))
        if kind is EventKind.STARTED:
            started = (event.attempt, event.at)
        elif kind in ENDS_ATTEMPT:
            if (
                started is not None
                and started[0] == event.attempt
                and kind is not EventKind.RELEASED
                and not lost
            ):
                outcome = "succeeded" if kind is EventKind.SUCCEEDED else "failed"
                took = max(0.0, event.at - started[1])
                bucket = bisect.bisect_left(DURATION_BUCKETS, took)
                add(DURATION_SERIES[outcome], bucket, took)
            started = None
        if kind in (EventKind.SUCCEEDED, EventKind.DEAD):
            add(ATTEMPTS_SERIES, event.attempt, event.attempt)
    return out
