"""Attempts as spans of time: the one model behind timelines, tables and the lab.

An attempt starts with a STARTED event and ends with the event that took
the job out of RUNNING. :func:`attempt_spans` pairs them from a store's log;
the fault-injection lab's :meth:`jobkit.sim.Trace.spans` pairs its own
events with the same :class:`SpanBuilder`, adding what only it knows: the
worker, what the fault plan did, and when a worker crashed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import attrs

from ..core.job import Event, EventKind
from ..store.tallies import ENDS_ATTEMPT

__all__ = ["AttemptSpan", "SpanBuilder", "attempt_spans"]


@attrs.frozen(init=False)
class AttemptSpan:
    """One attempt of one job, from its STARTED event to the event that ended it.

    ``outcome`` is the kind of the ending event; it and ``end`` are None
    while the attempt runs. ``error`` is the error the ending event
    recorded. The simulator also fills ``worker`` (who ran it), ``cause``
    (what its fault plan did) and, if the worker died, ``crashed_at``; the
    span then ends when the store noticed (the lease expired).

    Example::

        >>> from jobkit import AttemptSpan, EventKind
        >>> span = AttemptSpan(job_id=1, attempt=2, start=10.0, end=10.5,
        ...                    outcome=EventKind.SUCCEEDED)
        >>> span.duration
        0.5
    """

    job_id: int
    attempt: int
    start: float
    end: float | None = None
    outcome: EventKind | None = None
    error: str | None = None
    worker: str | None = None
    cause: str | None = None
    crashed_at: float | None = None

    def __init__(
        self,
        job_id: int | None = None,
        attempt: int | None = None,
        start: float | None = None,
        end: float | None = None,
        outcome: EventKind | str | None = None,
        error: str | None = None,
        *,
        worker: str | None = None,
        cause: str | None = None,
        crashed_at: float | None = None,
        job: int | None = None,
    ) -> None:
        # ``job=`` and a string outcome are how jobkit.sim built its own
        # spans before there was one model; kept for one release.
        if job is not None:
            _deprecated("AttemptSpan(job=...)", "job_id=")
            job_id = job
        if isinstance(outcome, str):
            _deprecated("a string outcome", "an EventKind, or None while running")
            outcome = None if outcome == "running" else EventKind(outcome)
        if job_id is None or attempt is None or start is None:
            raise TypeError("AttemptSpan needs a job_id, an attempt and a start")
        self.__attrs_init__(
            job_id, attempt, start, end, outcome, error, worker, cause, crashed_at
        )

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while the attempt runs."""
        return None if self.end is None else self.end - self.start

    @property
    def job(self) -> int:
        """Deprecated name of :attr:`job_id`."""
        _deprecated("AttemptSpan.job", "AttemptSpan.job_id")
        return self.job_id


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated, use {new}", DeprecationWarning, stacklevel=3)


class SpanBuilder:
    """Pair the starts and ends of attempts into :class:`AttemptSpan` records.

    Feed it a job's events in the order they happened: :meth:`add` takes a
    store's events; :meth:`start`, :meth:`end` and :meth:`crash` take the
    pieces, with what a simulator knows beyond the store. An end pairs with
    the open attempt of the same job and number, and is ignored otherwise.

    Example::

        >>> from jobkit import EventKind
        >>> from jobkit.observe.spans import SpanBuilder
        >>> spans = SpanBuilder()
        >>> spans.start(7, 1, 0.0, worker="w1")
        >>> spans.crash(7, 1, 1.0)
        >>> spans.end(7, 1, EventKind.EXPIRED, 10.0, cause="crash")
        >>> [(s.worker, s.crashed_at, s.end) for s in spans.spans()]
        [('w1', 1.0, 10.0)]
    """

    def __init__(self) -> None:
        # Each span is built once, when its attempt ends (or when asked for,
        # if it has not): a long simulated run has many thousands.
        self._spans: list[AttemptSpan | None] = []
        self._started: list[tuple[int, int, float, str | None]] = []
        self._crashed: dict[int, float] = {}
        self._open: dict[int, int] = {}

    def start(
        self, job_id: int, attempt: int, at: float, *, worker: str | None = None
    ) -> None:
        """Open an attempt."""
        self._open[job_id] = len(self._spans)
        self._spans.append(None)
        self._started.append((job_id, attempt, at, worker))

    def _current(self, job_id: int, attempt: int) -> int | None:
        index = self._open.get(job_id)
        if index is None or self._started[index][1] != attempt:
            return None
        return index

    def end(
        self,
        job_id: int,
        attempt: int,
        kind: EventKind,
        at: float,
        *,
        error: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Close the open attempt with the event that ended it."""
        index = self._current(job_id, attempt)
        if index is None:
            return
        del self._open[job_id]
        _, _, start, worker = self._started[index]
        self._spans[index] = AttemptSpan(
            job_id,
            attempt,
            start,
            at,
            kind,
            error,
            worker=worker,
            cause=cause,
            crashed_at=self._crashed.pop(index, None),
        )

    def crash(self, job_id: int, attempt: int, at: float) -> None:
        """Note that the worker running the open attempt died at ``at``."""
        index = self._current(job_id, attempt)
        if index is not None:
            self._crashed[index] = at

    def add(self, event: Event) -> None:
        """Fold in one event of a store's log."""
        if event.kind is EventKind.STARTED:
            self.start(event.job_id, event.attempt, event.at)
        elif event.kind in ENDS_ATTEMPT:
            self.end(
                event.job_id, event.attempt, event.kind, event.at, error=event.error
            )

    def spans(self) -> list[AttemptSpan]:
        """Return every attempt so far, in the order they started."""
        return [
            span
            if span is not None
            else AttemptSpan(
                job_id,
                attempt,
                start,
                worker=worker,
                crashed_at=self._crashed.get(index),
            )
            for index, (span, (job_id, attempt, start, worker)) in enumerate(
                zip(self._spans, self._started, strict=True)
            )
        ]


def attempt_spans(events: Iterable[Event | tuple[int, Event]]) -> list[AttemptSpan]:
    """Pair each STARTED event with the event that ended that attempt.

    Accepts events or the ``(seq, event)`` pairs ``store.events()`` returns,
    oldest first. Attempts still running have ``end=None``. Spans are
    returned in the order the attempts started.

    Example::

        >>> from jobkit import JobEvent, EventKind, attempt_spans
        >>> spans = attempt_spans([
        ...     JobEvent(1, EventKind.STARTED, 0.0, 1),
        ...     JobEvent(1, EventKind.RETRIED, 2.0, 1, "boom"),
        ...     JobEvent(1, EventKind.STARTED, 5.0, 2),
        ... ])
        >>> [(s.attempt, s.duration, s.error) for s in spans]
        [(1, 2.0, 'boom'), (2, None, None)]
    """
    builder = SpanBuilder()
    for item in events:
        builder.add(item[1] if isinstance(item, tuple) else item)
    return builder.spans()
