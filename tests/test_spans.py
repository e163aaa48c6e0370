"""One model of attempts and depth: the store's log and the lab's trace agree."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import attrs
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import trio

import jobkit.charts as charts
import jobkit.sim
import jobkit.sim.charts as sim_charts
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


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


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


# -- the charts draw the same model ----------------------------------------------


def test_one_timeline_draws_crashes_for_the_lab_and_the_queue() -> None:
    """The lab's timeline is the queue's attempt timeline, crash marks included."""
    store = MemoryStore()
    trace = crashy_run(store)
    lab = sim_charts.timeline(trace)
    queue = charts.job_timeline(store_log(store), until=trace.end)
    lab_labels = lab.get_legend_handles_labels()[1]
    queue_labels = queue.get_legend_handles_labels()[1]
    assert "worker crashed" in lab_labels and "lease running out" in lab_labels
    assert "worker crashed" not in queue_labels  # the store cannot know
    assert set(queue_labels) <= set(lab_labels)
    bars = [p for p in lab.patches if p.get_height() == 0.5]
    assert len(bars) == len(trace.spans())
    # The crashed attempts' bars stop where the worker died, not at the reap.
    assert [b.get_width() for b in bars if b.get_x() == 0.0] == [1.0, 1.0]


def test_the_timeline_keeps_a_requeued_job_waiting_up_to_until() -> None:
    """A job queued again after its last attempt keeps its waiting line."""
    spans = [AttemptSpan(1, 1, 1.0, 2.0, EventKind.RETRIED)]
    ax = charts.attempt_timeline(spans, enqueued={1: 0.0, 2: 0.5}, until=9.0)
    lines = ax.collections
    segments = [seg.tolist() for c in lines for seg in c.get_segments()]
    assert segments == [[[0.0, 0.0], [9.0, 0.0]], [[0.5, 1.0], [9.0, 1.0]]]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["job 1", "job 2"]


def test_queue_depth_stacks_depth_points_and_replays_events() -> None:
    """Depth points are stacked by phase; events are replayed into them first."""
    log = [
        JobEvent(1, EventKind.ENQUEUED, 0.0, 0),
        JobEvent(1, EventKind.STARTED, 1.0, 1),
        JobEvent(1, EventKind.SUCCEEDED, 3.0, 1),
    ]
    from_points = charts.queue_depth(depth_points(log), until=5.0)
    from_events = charts.queue_depth(log, until=5.0)
    for ax in (from_points, from_events):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["running", "ready", "waiting out a backoff"]
        assert len(ax.collections) == 3
    running = from_points.collections[0].get_paths()[0].vertices
    assert max(running[:, 0]) == 5.0  # held up to until
    assert max(running[:, 1]) == 1.0


def test_the_lab_depth_chart_is_the_shared_one() -> None:
    """sim.charts.queue_depth draws trace.queue_depth() on the run's clock."""
    trace = Simulation(
        0, workload=Burst(3), concurrency=1, faults=FaultPlan(Latency.constant(1))
    ).run()
    ax = sim_charts.queue_depth(trace)
    assert ax.get_xlim() == (0.0, 3.0)
    assert ax.get_title() == "Queue depth"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "running",
        "ready",
        "waiting out a backoff",
    ]
    assert sim_charts.OUTCOME_COLORS["expired"] == charts.OUTCOMES[EventKind.EXPIRED][0]
    assert sim_charts.OUTCOME_COLORS["running"] == charts.OUTCOMES[None][0]
