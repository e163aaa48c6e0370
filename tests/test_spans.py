"""One model of attempts and depth: the store's log and the lab's trace agree."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
import trio

import jobkit.sim
from jobkit import (
    AttemptSpan,
    Backoff,
    DepthPoint,
    EventKind,
    JobEvent,
    MemoryStore,
    RetryPolicy,
    attempt_spans,
    depth_points,
)
from jobkit.observe.metrics import percentile
from jobkit.sim import (
    Attempt,
    Burst,
    Fault,
    FaultPlan,
    Latency,
    Simulation,
    Trace,
    TransientErrors,
)


@attrs.frozen
class CrashJob2(Fault):
    """Kills the worker during job 2's first attempt."""

    async def inject(self, attempt: Attempt) -> None:
        if attempt.job.id == 2 and attempt.number == 1:
            await attempt.crash()


def crashy_run(store: MemoryStore) -> Trace:
    """Four jobs on two slots: retries with backoff, and one worker crash."""
    return Simulation(
        3,
        workload=Burst(4),
        concurrency=2,
        lease=6,
        restart_delay=2,
        retry=RetryPolicy(4, Backoff.exponential(1, 30)),
        faults=FaultPlan(Latency.constant(1), CrashJob2(), TransientErrors(0.5)),
        store=store,
    ).run()


def store_log(store: MemoryStore) -> list[tuple[int, JobEvent]]:
    return trio.run(store.events)


def first_lines(spans: list[AttemptSpan]) -> list[tuple[Any, ...]]:
    return [
        (
            s.job_id,
            s.attempt,
            s.start,
            s.end,
            s.outcome,
            (s.error or "\n").split("\n")[0],
        )
        for s in spans
    ]


# -- spans ---------------------------------------------------------------------


def test_the_trace_and_the_store_log_give_the_same_spans() -> None:
    """The lab's spans are the store log's, with what only the lab knows added."""
    store = MemoryStore()
    trace = crashy_run(store)
    from_store = sorted(
        attempt_spans(store_log(store)), key=lambda s: (s.job_id, s.attempt, s.start)
    )
    from_trace = trace.spans()
    assert first_lines(from_trace) == first_lines(from_store)
    outcomes = {s.outcome for s in from_trace}
    assert {EventKind.RETRIED, EventKind.EXPIRED, EventKind.SUCCEEDED} <= outcomes
    crashed = [s for s in from_trace if s.crashed_at is not None]
    # Job 1 ran beside job 2 on the worker that died: both attempts were lost.
    assert [(s.job_id, s.attempt, s.crashed_at, s.end, s.cause) for s in crashed] == [
        (1, 1, 1.0, 7.0, "crash"),
        (2, 1, 1.0, 7.0, "crash"),
    ]
    assert all(s.worker is not None for s in from_trace)
    assert all(s.worker is None and s.crashed_at is None for s in from_store)


def test_an_attempt_still_running_when_the_run_stops_has_no_end() -> None:
    """A run cut short leaves open spans, as a live queue's log does."""
    trace = Simulation(
        0, workload=Burst(2), concurrency=1, faults=FaultPlan(Latency.constant(10))
    ).run(until=15)
    spans = trace.spans()
    assert [(s.job_id, s.start, s.end, s.outcome) for s in spans] == [
        (1, 0.0, 10.0, EventKind.SUCCEEDED),
        (2, 10.0, None, None),
    ]
    assert spans[1].duration is None


def test_the_span_builder_ignores_an_end_of_another_attempt() -> None:
    """An end pairs only with the open attempt of the same number."""
    spans = attempt_spans(
        [
            JobEvent(1, EventKind.STARTED, 0.0, 2),
            JobEvent(1, EventKind.SUCCEEDED, 1.0, 1),
            JobEvent(1, EventKind.DEAD, 3.0, 2, "E"),
        ]
    )
    assert [(s.end, s.outcome, s.error) for s in spans] == [(3.0, EventKind.DEAD, "E")]


def test_the_old_simulator_span_names_still_work_and_warn() -> None:
    """``span.job``, ``job=`` and string outcomes are deprecated aliases."""
    with pytest.warns(DeprecationWarning, match="job_id="):
        span = AttemptSpan(
            job=3,
            attempt=1,
            worker="w1",
            start=0.0,
            end=0.5,
            outcome=EventKind.SUCCEEDED,
            cause=None,
        )
    assert (span.job_id, span.worker, span.duration) == (3, "w1", 0.5)
    with pytest.warns(DeprecationWarning, match="AttemptSpan.job_id"):
        assert span.job == 3
    with pytest.warns(DeprecationWarning, match="an EventKind"):
        old = AttemptSpan(1, 2, 0.0, 4.0, "expired", crashed_at=1.0)
    assert old.outcome is EventKind.EXPIRED
    with pytest.warns(DeprecationWarning):
        assert AttemptSpan(1, 1, 0.0, outcome="running").outcome is None
    with pytest.raises(TypeError, match="needs a job_id, an attempt and a start"):
        AttemptSpan(attempt=1, start=0.0)
    assert jobkit.sim.AttemptSpan is AttemptSpan
    assert jobkit.sim.DepthPoint is DepthPoint


# -- depth ---------------------------------------------------------------------


def changes(points: list[DepthPoint]) -> list[tuple[float, int, int]]:
    """Queued and running jobs at each change, whatever the split of the queued."""
    pairs = [(p.time, p.queued, p.running) for p in points]
    return [
        next(group) for _, group in itertools.groupby(pairs, key=lambda row: row[1:])
    ]


def test_the_trace_depth_is_the_replay_of_the_store_log() -> None:
    """Without due times every queued job is ready; the totals are the same."""
    store = MemoryStore()
    trace = crashy_run(store)
    replayed = depth_points(store_log(store))
    assert all(p.waiting == 0 for p in replayed)
    assert changes(replayed) == changes(trace.queue_depth())
    assert any(p.waiting for p in trace.queue_depth())


def test_depth_points_wait_out_the_backoff_and_stop_at_until() -> None:
    """A retried job waits until it is due; a cancelled wait ends at once."""
    log = [
        JobEvent(1, EventKind.ENQUEUED, 0.0, 0),
        JobEvent(2, EventKind.ENQUEUED, 0.0, 0),
        JobEvent(1, EventKind.STARTED, 1.0, 1),
        JobEvent(2, EventKind.STARTED, 1.0, 1),
        JobEvent(1, EventKind.RETRIED, 2.0, 1, "E"),
        JobEvent(2, EventKind.RETRIED, 2.0, 1, "E"),
        JobEvent(2, EventKind.CANCELLED, 3.0, 1),
    ]
    due = {(1, 1): 10.0, (2, 1): 5.0}
    points = depth_points(log, due=due)
    assert [(p.time, p.ready, p.waiting, p.running) for p in points] == [
        (0.0, 2, 0, 0),
        (1.0, 0, 0, 2),
        (2.0, 0, 2, 0),
        (3.0, 0, 1, 0),
        (10.0, 1, 0, 0),
    ]
    assert depth_points(log, due=due, until=9.0)[-1].time == 3.0


def test_percentile_is_an_observation_by_nearest_rank() -> None:
    """The lab's latency figures are values it saw, never interpolations."""
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert [percentile(values, q) for q in (0.0, 0.5, 0.8, 0.95, 1.0)] == [
        1.0,
        3.0,
        4.0,
        100.0,
        100.0,
    ]
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="q must be between 0 and 1"):
        percentile(values, 95)
