"""Charts draw the data they are given, on the axes they are given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import trio

import jobkit
import jobkit.charts as charts
from jobkit import (
    Backoff,
    DepthSample,
    Event,
    EventKind,
    Job,
    JobState,
    MemoryStore,
    NewJob,
    QueueCounts,
    RetryPolicy,
    collect_metrics,
)
from jobkit._job import Failure, Success


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def test_importing_jobkit_does_not_import_matplotlib() -> None:
    """The core stays free of matplotlib; only jobkit.charts loads it."""
    code = (
        "import sys, jobkit, jobkit.testing\n"
        "assert 'matplotlib' not in sys.modules, 'core imported matplotlib'\n"
        "import jobkit.charts\n"
        "jobkit.charts.backoff_delays(jobkit.Backoff.constant(1))\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    env_backend = {"MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env_backend},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_queue_depth_steps_through_the_samples() -> None:
    """One step line per state, summed over queues or for one queue."""
    samples = [
        DepthSample(
            100.0 + t,
            QueueCounts({("a", JobState.QUEUED): q, ("b", JobState.QUEUED): 1}),
        )
        for t, q in [(0, 4), (5, 2), (10, 0)]
    ]
    _fig, ax = plt.subplots()
    assert charts.queue_depth(samples, ax) is ax
    queued, running, _dead = ax.get_lines()
    assert floats(queued.get_xdata()) == [0.0, 5.0, 10.0]
    assert floats(queued.get_ydata()) == [5, 3, 1]
    assert floats(running.get_ydata()) == [0, 0, 0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "queued",
        "running",
        "dead",
    ]
    only_a = charts.queue_depth(samples, queue="a", states=[JobState.QUEUED])
    assert floats(only_a.get_lines()[0].get_ydata()) == [4, 2, 0]
    assert only_a.get_title() == "Queue depth of 'a'"


async def test_queue_depth_accepts_a_sampler(autojump_clock: Any) -> None:
    """A DepthSampler is drawn from its samples."""
    store = MemoryStore()
    sampler = jobkit.DepthSampler(store, every=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        await store.enqueue([NewJob(task="t")], now=0.0)
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    ax = charts.queue_depth(sampler, start=0.0)
    assert floats(ax.get_lines()[0].get_ydata()) == [0, 1, 1]


def test_throughput_counts_finished_attempts_per_window() -> None:
    """Bars are finished attempts per second; the line is the success rate."""
    events = [
        (1, Event(1, EventKind.STARTED, 0.0, 1)),
        (2, Event(1, EventKind.SUCCEEDED, 1.0, 1)),
        (3, Event(2, EventKind.RETRIED, 3.0, 1, "E")),
        (4, Event(3, EventKind.DEAD, 3.5, 1, "E")),
        (5, Event(2, EventKind.SUCCEEDED, 5.0, 2)),
        (6, Event(4, EventKind.EXPIRED, 5.5, 1, "E")),
    ]
    _fig, ax = plt.subplots()
    assert charts.throughput(events, ax, bucket=2.0, start=0.0) is ax
    ok, bad = ax.containers
    assert floats(b.get_height() for b in ok) == [0.5, 0.0, 0.5]
    assert floats(b.get_height() for b in bad) == [0.0, 1.0, 0.5]
    rate = ax.right_ax.get_lines()[0]  # type: ignore[attr-defined]
    assert floats(rate.get_ydata()) == [1.0, 0.0, 0.5]
    assert floats(rate.get_xdata()) == [1.0, 3.0, 5.0]


def test_throughput_picks_a_round_window_and_refuses_bad_ones() -> None:
    """Without a bucket about 30 round windows cover the span; <= 0 is refused."""
    events = [Event(i, EventKind.SUCCEEDED, float(i), 1) for i in range(300)]
    ax = charts.throughput(events)
    assert len(ax.containers[0]) == 30
    assert ax.containers[0][0].get_width() == 10.0
    with pytest.raises(ValueError, match="bucket must be a positive number"):
        charts.throughput(events, bucket=0)
    empty = charts.throughput([])
    assert floats(b.get_height() for b in empty.containers[0]) == [0.0]


async def test_durations_from_a_snapshot_stack_outcomes() -> None:
    """Snapshot buckets are drawn on a log axis, succeeded under failed."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t", max_attempts=2)] * 3, now=0.0)
    await store.claim(queues=None, limit=3, now=0.0, lease=60.0)
    await store.settle(
        [Success(1, 1), Success(2, 1), Failure(3, 1, "E", retry_at=None)], now=0.3
    )
    snap = await collect_metrics(store)
    _fig, ax = plt.subplots()
    assert charts.durations(snap, ax) is ax
    assert ax.get_xscale() == "log"
    ok, bad = ax.containers
    bucket = list(snap.duration_bounds).index(0.5)  # 0.3 s is in (0.25, 0.5]
    assert ok[bucket].get_height() == 2
    assert bad[bucket].get_height() == 1
    assert bad[bucket].get_y() == 2
    assert sum(b.get_height() for b in ok) == 2


def test_durations_from_numbers_is_a_histogram() -> None:
    """Plain seconds become an ordinary histogram."""
    ax = charts.durations([0.1, 0.1, 0.9], bins=2)
    assert floats(p.get_height() for p in ax.patches) == [2.0, 1.0]


def make_job(job_id: int, state: JobState, attempts: int) -> Job:
    return Job(
        id=job_id,
        task="t" if job_id % 2 else "u",
        queue="q",
        payload={},
        state=state,
        attempts=attempts,
        max_attempts=4,
        priority=0,
        run_at=0.0,
        created_at=0.0,
        updated_at=0.0,
    )


def test_attempts_per_job_from_jobs() -> None:
    """Finished jobs are counted by attempts, split into succeeded and dead."""
    jobs = [
        make_job(1, JobState.SUCCEEDED, 1),
        make_job(2, JobState.SUCCEEDED, 1),
        make_job(3, JobState.SUCCEEDED, 3),
        make_job(5, JobState.DEAD, 4),
        make_job(7, JobState.QUEUED, 2),  # not finished: left out
    ]
    _fig, ax = plt.subplots()
    assert charts.attempts_per_job(jobs, ax) is ax
    ok, dead = ax.containers
    assert floats(b.get_height() for b in ok) == [2, 0, 1, 0]
    assert floats(b.get_height() for b in dead) == [0, 0, 0, 1]
    only_t = charts.attempts_per_job(jobs, task="t")
    assert floats(b.get_height() for b in only_t.containers[0]) == [1, 0, 1, 0]


async def test_attempts_per_job_from_a_snapshot() -> None:
    """The snapshot's attempts histogram is drawn with readable bucket labels."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t", max_attempts=9)], now=0.0)
    for attempt in range(1, 7):
        await store.claim(queues=None, limit=1, now=attempt, lease=60.0)
        retry: float | None = attempt + 0.5 if attempt < 6 else None
        await store.settle([Failure(1, attempt, "E", retry_at=retry)], now=attempt)
    snap = await collect_metrics(store)
    ax = charts.attempts_per_job(snap)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1", "2", "3", "4", "5", "6-7"]
    assert floats(b.get_height() for b in ax.containers[0]) == [0, 0, 0, 0, 0, 1]


def test_backoff_delays_without_jitter_is_the_formula() -> None:
    """The line is the un-jittered delay; no band or samples are drawn."""
    _fig, ax = plt.subplots()
    result = charts.backoff_delays(Backoff.exponential(2, 20), ax, attempts=5)
    assert result is ax
    [line] = ax.get_lines()
    assert floats(line.get_ydata()) == [2, 4, 8, 16, 20]
    assert len(ax.collections) == 0


def test_backoff_delays_with_jitter_samples_inside_the_band() -> None:
    """Sampled delays are seeded, and each lies within the policy's bounds."""
    backoff = Backoff.exponential(1, 30, jitter="full")
    ax = charts.backoff_delays(backoff, attempts=6, runs=5, seed=3)
    _nominal, *runs = ax.get_lines()
    assert len(runs) == 5
    for run in runs:
        for n, delay in zip(range(1, 7), run.get_ydata(), strict=True):
            lo, hi = backoff.bounds(n)
            assert lo <= delay <= hi
    again = charts.backoff_delays(backoff, attempts=6, runs=5, seed=3)
    assert floats(again.get_lines()[1].get_ydata()) == floats(runs[0].get_ydata())
    assert len(ax.collections) == 1  # the shaded range


def test_backoff_delays_of_a_retry_policy_shows_its_waits() -> None:
    """A RetryPolicy shows max_attempts - 1 waits; bad arguments are refused."""
    policy = RetryPolicy(4, Backoff.linear(5, 60, jitter="decorrelated"))
    ax = charts.backoff_delays(policy, runs=2)
    assert len(ax.get_lines()[0].get_ydata()) == 3
    with pytest.raises(TypeError, match="policy must be a Backoff or RetryPolicy"):
        charts.backoff_delays(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts must be a positive integer"):
        charts.backoff_delays(policy, attempts=0)


def test_decorrelated_band_is_what_each_wait_can_reach() -> None:
    """Attempt 1 draws from [base, 3 base]; the band widens by 3x up to the cap."""
    backoff = Backoff.exponential(1, 60, jitter="decorrelated")
    ax = charts.backoff_delays(backoff, attempts=6, runs=20, seed=7)
    band = ax.collections[0].get_paths()[0].vertices
    tops = {round(float(x)): float(y) for x, y in band if y > 1.0}
    assert [tops[n] for n in range(1, 7)] == [3.0, 9.0, 27.0, 60.0, 60.0, 60.0]
    for run in ax.get_lines()[1:]:
        for n, delay in zip(range(1, 7), run.get_ydata(), strict=True):
            assert 1.0 <= delay <= tops[n]


def test_concurrency_counts_open_intervals_back_to_back_as_one_level() -> None:
    """Two intervals meeting at an instant keep the count level there."""
    ax = charts.concurrency([(0.0, 1.0), (1.0, 2.0), (0.5, 1.5)])
    line = ax.get_lines()[0]
    assert floats(line.get_xdata()) == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert [int(y) for y in line.get_ydata()] == [0, 1, 2, 2, 1, 0]


def test_counter_rates_are_increases_between_snapshots() -> None:
    """Bars show each counter's increase over each interval, at its middle."""
    import jobkit

    async def main() -> list[tuple[float, jobkit.MetricsSnapshot]]:
        queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)

        @queue.task()
        async def t() -> None: ...

        snapshots = [(0.0, await queue.metrics())]
        for at, count in ((60.0, 5), (120.0, 2)):
            for _ in range(count):
                await t.enqueue()
            await trio.sleep_until(at)
            snapshots.append((at, await queue.metrics()))
        return snapshots

    snapshots = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    ax = charts.counter_rates(snapshots, bars=("enqueued",), lines=("retried",))
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [5, 2]
    assert floats(ax.get_lines()[0].get_xdata()) == [30.0, 90.0]


def test_slot_runs_joins_late_runs_and_counts_a_catch_up() -> None:
    """A late run gets a line to its slot; several runs at one instant are counted."""
    ax = charts.slot_runs({"BURST": [(40, 95), (50, 95), (100, 100)]})
    joined = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert [floats(line.get_xdata()) for line in joined] == [[40.0, 95.0], [50.0, 95.0]]
    assert [t.get_text() for t in ax.texts] == ["2 jobs"]
