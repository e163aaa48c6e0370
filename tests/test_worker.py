"""The worker runs, retries, times out, leases, recovers and stops at exact instants."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers.stores import WatchedStore
from hypothesis import given
from hypothesis import strategies as st

import jobkit
import jobkit.testing
from jobkit import (
    Backoff,
    CancellationToken,
    EventKind,
    JobState,
    MemoryStore,
    Permanent,
    Queue,
    RetryLater,
    RetryPolicy,
    SQLiteStore,
    Store,
    Worker,
)
from jobkit.core.job import NewJob

DONE = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


@pytest.fixture(params=["memory", "sqlite"])
async def inner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store the worker must behave the same on."""
    if request.param == "memory":
        yield MemoryStore()
        return
    store = SQLiteStore(tmp_path / "jobs.db")
    yield store
    await store.aclose()


def make_queue(
    attempts: int = 3, delay: float = 5.0, inner: Store | None = None
) -> tuple[Queue, WatchedStore]:
    store = WatchedStore(inner)
    policy = RetryPolicy(attempts, Backoff.constant(delay))
    return Queue(store, clock=trio.current_time, default_retry=policy), store


@asynccontextmanager
async def worker_running(
    queue: Queue, **options: Any
) -> AsyncIterator[tuple[Worker, CancellationToken]]:
    """Run a worker for the body of the block, then shut it down gracefully."""
    token = options.pop("shutdown", None) or CancellationToken()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(
            partial(jobkit.run_worker, queue, shutdown=token, **options)
        )
        yield worker, token
        token.cancel()


async def timeline(queue: Queue, job_id: int) -> list[tuple[str, float, int]]:
    return [
        (e.kind.value, e.at, e.attempt) for _, e in await queue.events(job_id=job_id)
    ]


async def test_runs_a_job_and_stores_its_result(
    autojump_clock: Any, inner: Store
) -> None:
    """An enqueued job is claimed at once, run, and marked SUCCEEDED with its result."""
    queue, store = make_queue(inner=inner)

    @queue.task()
    async def add(a: int, b: int) -> int:
        await trio.sleep(2)
        return a + b

    async with worker_running(queue) as (worker, _):
        job_id = await add.enqueue(a=2, b=3)
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.result, job.attempts) == (JobState.SUCCEEDED, 5, 1)
    assert await timeline(queue, job_id) == [
        ("enqueued", 0.0, 0),
        ("started", 0.0, 1),
        ("succeeded", 2.0, 1),
    ]
    assert worker.statistics() == jobkit.WorkerStatistics(
        claimed=1,
        running=0,
        succeeded=1,
        failed=0,
        retried=0,
        dead=0,
        released=0,
        lost=0,
    )


async def test_retry_instants_follow_the_backoff(
    autojump_clock: Any, inner: Store
) -> None:
    """Each retry starts at failure time + the policy's delay; then the job dies."""
    queue, store = make_queue(inner=inner)

    @queue.task(retry=RetryPolicy(4, Backoff.exponential(1, 60)))
    async def flaky() -> None:
        await trio.sleep(0.5)
        raise ConnectionError("reset by peer")

    async with worker_running(queue, poll_interval=30) as (worker, _):
        job_id = await flaky.enqueue()
        job = await store.wait_for(job_id, *DONE)
    assert job.state is JobState.DEAD
    assert job.last_error is not None
    assert job.last_error.startswith("ConnectionError: reset by peer\n\nTraceback")
    # fail at 0.5 (+1), at 2.0 (+2), at 4.5 (+4), then the 4th attempt is the last
    assert await timeline(queue, job_id) == [
        ("enqueued", 0.0, 0),
        ("started", 0.0, 1),
        ("retried", 0.5, 1),
        ("started", 1.5, 2),
        ("retried", 2.0, 2),
        ("started", 4.0, 3),
        ("retried", 4.5, 3),
        ("started", 8.5, 4),
        ("dead", 9.0, 4),
    ]
    stats = worker.statistics()
    assert (stats.failed, stats.retried, stats.dead) == (4, 3, 1)
    # The worker looked at the store when it started, on the enqueue and at
    # each retry's instant; a failure alone only moved its wake-up earlier.
    assert len(store.sizes("claim")) == 5


async def test_decorrelated_jitter_feeds_the_previous_delay(
    autojump_clock: Any,
) -> None:
    """With decorrelated jitter the worker feeds each job's previous wait back."""
    queue, store = make_queue()
    policy = RetryPolicy(4, Backoff.exponential(1, 100, jitter="decorrelated"))

    @queue.task(retry=policy)
    async def flaky() -> None:
        raise ConnectionError("reset")

    async with worker_running(queue, rng=random.Random(7)) as _:
        job_id = await flaky.enqueue()
        await store.wait_for(job_id, *DONE)
    expected_rng = random.Random(7)
    previous = None
    expected, now = [0.0], 0.0
    for attempt in (1, 2, 3):
        previous = policy.decide(
            ConnectionError(), attempt, previous_delay=previous, rng=expected_rng
        )
        assert previous is not None
        now += previous
        expected.append(now)
    starts = [at for kind, at, _ in await timeline(queue, job_id) if kind == "started"]
    assert starts == pytest.approx(expected, rel=1e-12)


async def test_decorrelated_jitter_reads_the_previous_delay_back(
    autojump_clock: Any,
) -> None:
    """A worker that did not choose the previous wait reads it from the job's events."""
    queue, store = make_queue()
    policy = RetryPolicy(3, Backoff.exponential(1, 100, jitter="decorrelated"))

    @queue.task(retry=policy)
    async def flaky() -> None:
        raise ConnectionError("reset")

    async with worker_running(queue, rng=random.Random(7)) as _:
        job_id = await flaky.enqueue()
        await store.wait_until(
            job_id, lambda job: job.state is JobState.QUEUED and job.attempts == 1
        )
    async with worker_running(queue, rng=random.Random(8)) as _:
        await store.wait_for(job_id, *DONE)
    error = ConnectionError()
    first = policy.decide(error, 1, rng=random.Random(7))
    assert first is not None
    second = policy.decide(error, 2, previous_delay=first, rng=random.Random(8))
    assert second is not None
    starts = [at for kind, at, _ in await timeline(queue, job_id) if kind == "started"]
    assert starts == pytest.approx([0.0, first, first + second], rel=1e-12)


async def test_retry_later_waits_the_requested_delay(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """RetryLater(delay) retries after exactly that delay; no traceback is logged."""
    queue, store = make_queue(delay=100)

    @queue.task()
    async def poll_report() -> str:
        if jobkit.current_job().attempts == 1:
            raise RetryLater(delay=7)
        return "ready"

    async with worker_running(queue) as _:
        job_id = await poll_report.enqueue()
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "ready")
    assert [e[:2] for e in await timeline(queue, job_id)][1:] == [
        ("started", 0.0),
        ("retried", 0.0),
        ("started", 7.0),
        ("succeeded", 7.0),
    ]
    [retried] = [r for r in caplog.records if getattr(r, "event", "") == "retried"]
    assert retried.exc_info is None
    assert "retrying in 7s: RetryLater: retry requested in 7s" in retried.getMessage()


async def test_permanent_error_is_dead_after_one_attempt(autojump_clock: Any) -> None:
    """A Permanent error makes the job DEAD at once, though attempts remain."""
    queue, store = make_queue(attempts=5)

    @queue.task()
    async def charge(card: str) -> None:
        raise Permanent(f"card {card} was declined")

    async with worker_running(queue) as (worker, _):
        job_id = await charge.enqueue(card="4242")
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    assert job.last_error is not None
    assert job.last_error.splitlines()[0] == "Permanent: card 4242 was declined"
    assert worker.statistics().dead == 1


async def test_max_attempts_set_at_enqueue_wins(autojump_clock: Any) -> None:
    """options(max_attempts=2) ends the job after 2 attempts; the policy allows 5."""
    queue, store = make_queue(attempts=5, delay=1)

    @queue.task()
    async def fail() -> None:
        raise ValueError("nope")

    async with worker_running(queue) as _:
        job_id = await fail.options(max_attempts=2).enqueue()
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.attempts, job.max_attempts) == (JobState.DEAD, 2, 2)
    assert [e[:2] for e in await timeline(queue, job_id)][-1] == ("dead", 1.0)


async def test_timeout_is_a_failed_attempt(autojump_clock: Any, inner: Store) -> None:
    """A handler that overruns its timeout is cancelled and the attempt fails then."""
    queue, store = make_queue(attempts=2, delay=1, inner=inner)

    @queue.task(timeout=3)
    async def hang() -> None:
        await trio.sleep(100)

    async with worker_running(queue) as _:
        job_id = await hang.enqueue()
        job = await store.wait_for(job_id, *DONE)
    assert job.state is JobState.DEAD
    assert job.last_error is not None
    assert job.last_error.splitlines()[0] == (
        "TooSlowError: attempt timed out after 3s"
    )
    assert [e[:2] for e in await timeline(queue, job_id)][1:] == [
        ("started", 0.0),
        ("retried", 3.0),
        ("started", 4.0),
        ("dead", 7.0),
    ]


async def test_sync_handler_runs_in_a_thread_with_current_job() -> None:
    """A plain function runs in a worker thread, and current_job() works there."""
    queue, store = make_queue()
    seen: list[tuple[bool, int]] = []

    @queue.task()
    def resize(path: str) -> str:
        job = jobkit.current_job()
        seen.append((threading.current_thread() is threading.main_thread(), job.id))
        return path.upper()

    with trio.fail_after(10):
        async with worker_running(queue) as _:
            job_id = await resize.enqueue(path="a.png")
            job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "A.PNG")
    assert seen == [(False, job_id)]


# Threads run in real time while a MockClock jumps whenever trio is idle, so
# these tests wait on what a thread has done, never on the instant it did it.


async def test_a_timed_out_thread_keeps_its_job_until_it_returns(
    autojump_clock: Any,
) -> None:
    """Past its timeout a thread still holds its job: no second run meanwhile."""
    queue, store = make_queue(attempts=2, delay=1)
    entered = trio.Event()
    release = threading.Event()
    started: list[int] = []

    @queue.task(timeout=3)
    def block() -> str:
        started.append(jobkit.current_job().attempts)
        trio.from_thread.run_sync(entered.set)
        release.wait(60)
        return "late"

    try:
        async with worker_running(queue, lease=3, concurrency=2) as _:
            job_id = await block.enqueue()
            await entered.wait()
            await trio.sleep(100)  # the lease is renewed all along
            job = await queue.get(job_id)
            assert (job.state, job.attempts, started) == (JobState.RUNNING, 1, [1])
            assert job.lease_until is not None
            assert job.lease_until > trio.current_time()
            released = trio.current_time()
            release.set()
            await store.wait_until(job_id, lambda job: job.attempts == 2)
            returned = trio.current_time()
    finally:
        release.set()
    kinds = [(kind, at) for kind, at, _ in await timeline(queue, job_id)]
    assert kinds[:2] == [("enqueued", 0.0), ("started", 0.0)]
    (retried, failed_at), (restarted, rerun_at) = kinds[2:4]
    assert (retried, restarted) == ("retried", "started")
    assert released <= failed_at <= returned and failed_at < rerun_at
    events = await queue.events(job_id=job_id)
    assert events[2][1].error is not None
    assert events[2][1].error.startswith("TooSlowError: attempt timed out after 3s")


async def test_a_thread_can_stop_early_when_its_attempt_times_out(
    autojump_clock: Any,
) -> None:
    """trio.from_thread.check_cancelled() raises in a thread whose attempt timed out."""
    queue, store = make_queue(attempts=1)
    ended: list[str] = []

    @queue.task(timeout=3)
    def poll() -> None:
        try:
            while True:
                trio.from_thread.check_cancelled()
                trio.from_thread.run(trio.sleep, 1)
        except BaseException as exc:
            ended.append(type(exc).__name__)
            raise

    async with worker_running(queue) as _:
        job = await store.wait_for(await poll.enqueue(), *DONE)
    assert (job.state, ended) == (JobState.DEAD, ["Cancelled"])
    assert job.last_error is not None
    assert job.last_error.startswith("TooSlowError: attempt timed out after 3s")


async def test_shutdown_waits_for_a_thread_and_settles_what_it_returns(
    autojump_clock: Any,
) -> None:
    """At the end of the grace a thread's job is not released to run elsewhere."""
    queue, store = make_queue()
    entered = trio.Event()
    release = threading.Event()
    runs: list[int] = []

    @queue.task()
    def block() -> str:
        runs.append(jobkit.current_job().attempts)
        trio.from_thread.run_sync(entered.set)
        release.wait(60)
        return "finished"

    first = CancellationToken()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(jobkit.run_worker, queue, shutdown=first, grace=2, lease=3)
            )
            job_id = await block.enqueue()
            await entered.wait()
            async with worker_running(queue, poll_interval=1) as (other, _):
                first.cancel()
                await trio.sleep(100)  # far past the grace
                job = await queue.get(job_id)
                assert (job.state, job.attempts, runs) == (JobState.RUNNING, 1, [1])
                assert job.lease_until is not None
                assert job.lease_until > trio.current_time()
                release.set()
                job = await store.wait_for(job_id, *DONE)
    finally:
        release.set()
    assert (job.state, job.result, runs) == (JobState.SUCCEEDED, "finished", [1])
    assert other.statistics().claimed == 0


async def test_current_job_in_an_async_handler(autojump_clock: Any) -> None:
    """current_job() gives the handler its own job, with the attempt number."""
    queue, store = make_queue(delay=1)
    seen: list[tuple[int, int]] = []

    @queue.task()
    async def note() -> None:
        job = jobkit.current_job()
        seen.append((job.id, job.attempts))
        if job.attempts < 2:
            raise ValueError("once more")

    async with worker_running(queue) as _:
        job_id = await note.enqueue()
        await store.wait_for(job_id, *DONE)
    assert seen == [(job_id, 1), (job_id, 2)]
    with pytest.raises(RuntimeError, match="outside a job handler"):
        jobkit.current_job()


async def test_higher_priority_runs_first(autojump_clock: Any) -> None:
    """Among due jobs, higher priority runs first, then older ones."""
    queue, store = make_queue()
    order: list[str] = []

    @queue.task()
    async def step(name: str) -> None:
        order.append(name)
        await trio.sleep(1)

    ids = [
        await step.enqueue(name="low"),
        await step.options(priority=10).enqueue(name="high"),
        await step.options(priority=5).enqueue(name="mid"),
        await step.options(priority=10).enqueue(name="high-later"),
    ]
    async with worker_running(queue, concurrency=1) as _:
        await store.wait_all(ids, *DONE)
    assert order == ["high", "high-later", "mid", "low"]


async def test_delay_and_run_at_start_exactly_on_time(autojump_clock: Any) -> None:
    """A delayed job starts at enqueue time + delay; run_at starts at that instant."""
    queue, store = make_queue()

    @queue.task()
    async def tick() -> None:
        pass

    async with worker_running(queue, poll_interval=60) as _:
        await trio.sleep(2)
        later = await tick.options(delay=5).enqueue()
        at = await tick.options(run_at=12.25).enqueue()
        await store.wait_all([later, at], *DONE)
    assert ("started", 7.0, 1) in await timeline(queue, later)
    assert ("started", 12.25, 1) in await timeline(queue, at)


async def test_enqueue_wakes_an_idle_worker_at_once(autojump_clock: Any) -> None:
    """A local enqueue starts the job at once, not at the next poll."""
    queue, store = make_queue()

    @queue.task()
    async def noop() -> None:
        pass

    async with worker_running(queue, poll_interval=3600) as _:
        await trio.sleep(5)
        job_id = await noop.enqueue()
        await store.wait_for(job_id, *DONE)
        assert trio.current_time() == 5.0
    assert ("started", 5.0, 1) in await timeline(queue, job_id)


async def test_worker_only_takes_its_queues(autojump_clock: Any) -> None:
    """A worker given queues=[...] leaves other queues' jobs alone."""
    queue, store = make_queue()

    @queue.task(queue="emails")
    async def send() -> None:
        pass

    @queue.task(queue="reports")
    async def report() -> None:
        pass

    async with worker_running(queue, queues=["emails"]) as _:
        mail = await send.enqueue()
        rep = await report.enqueue()
        await store.wait_for(mail, *DONE)
        await trio.sleep(10)
    assert (await queue.get(rep)).state is JobState.QUEUED


async def test_concurrency_limit_and_batched_claims(
    autojump_clock: Any, inner: Store
) -> None:
    """At most `concurrency` jobs run at once; claims and settles go in batches."""
    queue, store = make_queue(inner=inner)
    running = 0
    peak = 0

    @queue.task()
    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    ids = await queue.enqueue_many([work.prepare() for _ in range(10)])
    async with worker_running(queue, concurrency=3) as _:
        await store.wait_all(ids, *DONE)
    assert peak == 3
    starts = sorted(
        e.at for _, e in await queue.events() if e.kind is EventKind.STARTED
    )
    assert starts == [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0]
    # three jobs finish together: one settle for the three, one claim for three
    assert store.sizes("settle")[:3] == [3, 3, 3]
    assert store.sizes("claim")[:4] == [3, 3, 3, 3]


async def test_long_job_keeps_its_lease_by_renewing(
    autojump_clock: Any, inner: Store
) -> None:
    """A job running far longer than its lease renews it and is never taken over."""
    queue, store = make_queue(inner=inner)

    @queue.task()
    async def crunch() -> str:
        await trio.sleep(100)
        return "done"

    async with worker_running(queue, lease=9) as _, worker_running(queue, lease=9) as _:
        job_id = await crunch.enqueue()
        await trio.sleep(50)
        job = await queue.get(job_id)
        # renewed at 48 (every lease/3 = 3 s): held until 57
        assert (job.state, job.lease_until) == (JobState.RUNNING, 57.0)
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    kinds = [kind for kind, _, _ in await timeline(queue, job_id)]
    assert kinds == ["enqueued", "started", "succeeded"]


async def test_expired_lease_is_reaped_and_retried(
    autojump_clock: Any, inner: Store
) -> None:
    """A job whose worker died is recovered at the next reap and run again."""
    queue, store = make_queue(inner=inner)

    @queue.task()
    async def work() -> str:
        return "ok"

    [job_id] = await store.enqueue([NewJob("work", max_attempts=3)], now=0.0)
    # A worker claims it with a 5 s lease, then dies without a word.
    await store.claim(queues=None, limit=1, now=0.0, lease=5.0)
    async with worker_running(queue, lease=30) as (worker, _):
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
    # reaps run at 0, 10, 20, ...: the lease ended at 5, so it is recovered at 10
    assert await timeline(queue, job_id) == [
        ("enqueued", 0.0, 0),
        ("started", 0.0, 1),
        ("expired", 10.0, 1),
        ("started", 10.0, 2),
        ("succeeded", 10.0, 2),
    ]
    assert worker.statistics().claimed == 1


async def test_poison_job_ends_dead(autojump_clock: Any) -> None:
    """A job that kills its worker every time is DEAD once its attempts are used up."""
    queue, store = make_queue()
    [job_id] = await store.enqueue([NewJob("poison", max_attempts=2)], now=0.0)
    # Every worker that claims it dies; the survivor only reaps (it serves
    # another queue, so it never runs the poison itself).
    async with worker_running(queue, lease=3, queues=["other"]) as _:
        for _ in range(2):
            await store.wait_for(job_id, JobState.QUEUED)
            await store.claim(queues=None, limit=1, now=trio.current_time(), lease=1.0)
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.attempts) == (JobState.DEAD, 2)
    assert job.last_error == jobkit.core.job.EXPIRED_ERROR
    assert [kind for kind, _, _ in await timeline(queue, job_id)] == [
        "enqueued",
        "started",
        "expired",
        "started",
        "dead",
    ]


async def test_graceful_shutdown_lets_a_short_job_finish(autojump_clock: Any) -> None:
    """On shutdown a job that finishes within the grace period succeeds."""
    queue, _store = make_queue()

    @queue.task()
    async def short() -> str:
        await trio.sleep(3)
        return "finished"

    token = CancellationToken()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(
            partial(jobkit.run_worker, queue, shutdown=token, grace=5)
        )
        job_id = await short.enqueue()
        late = await short.options(delay=2).enqueue()
        await trio.sleep(1)
        token.cancel()
    assert trio.current_time() == 3.0  # run_worker returned when the job ended
    job = await queue.get(job_id)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "finished")
    assert (await queue.get(late)).state is JobState.QUEUED  # no claim after stop
    assert worker.statistics().claimed == 1


async def test_graceful_shutdown_releases_a_long_job(
    autojump_clock: Any, inner: Store
) -> None:
    """After the grace period a job is released and another worker takes it at once."""
    queue, _store = make_queue(inner=inner)
    runs: list[tuple[str, float, int]] = []

    @queue.task()
    async def long(who: str = "") -> None:
        runs.append(("start", trio.current_time(), jobkit.current_job().attempts))
        await trio.sleep(100)

    first = CancellationToken()
    async with trio.open_nursery() as nursery:
        a = await nursery.start(
            partial(jobkit.run_worker, queue, shutdown=first, grace=2)
        )
        job_id = await long.enqueue()
        await trio.sleep(0.5)
        async with worker_running(queue, poll_interval=3600) as (b, _):
            await trio.sleep(0.5)
            first.cancel()  # at 1.0; grace ends at 3.0
            await trio.sleep(2.5)
            job = await queue.get(job_id)
            assert (job.state, job.attempts) == (JobState.RUNNING, 1)
            assert b.statistics().running == 1
            nursery.cancel_scope.cancel()  # a already returned; nothing else here
    assert runs == [("start", 0.0, 1), ("start", 3.0, 1)]
    assert await timeline(queue, job_id) == [
        ("enqueued", 0.0, 0),
        ("started", 0.0, 1),
        ("released", 3.0, 1),
        ("started", 3.0, 1),
        ("released", 3.5, 1),  # b cancelled from outside, also gives it back
    ]
    assert a.statistics().released == 1
    job = await queue.get(job_id)
    assert (job.state, job.attempts, job.lease_until) == (JobState.QUEUED, 0, None)


async def test_outer_cancellation_releases_leases(
    autojump_clock: Any, inner: Store
) -> None:
    """A worker cancelled from outside hands its leases back instead of leaving them."""
    queue, store = make_queue(inner=inner)

    @queue.task()
    async def long() -> None:
        await trio.sleep(100)

    job_ids = await queue.enqueue_many([long.prepare() for _ in range(3)])
    with trio.move_on_after(1):
        await jobkit.run_worker(queue, concurrency=2)
    jobs = [await queue.get(i) for i in job_ids]
    assert [(j.state, j.attempts, j.run_at) for j in jobs] == [
        (JobState.QUEUED, 0, 1.0),
        (JobState.QUEUED, 0, 1.0),
        (JobState.QUEUED, 0, 0.0),
    ]
    assert store.sizes("settle") == [2]  # one call for both


@pytest.mark.parametrize("slots", [1, 2])
async def test_outer_cancellation_waits_for_a_settle_that_claims(
    autojump_clock: Any, slots: int
) -> None:
    """Cancelled while a settle that also claims is on its way, a worker waits for it.

    The store has claimed the next jobs once it committed: cutting the call
    short would leave them leased to nobody. The worker takes them and hands
    them back, as it does any job it runs when cancelled. With one slot the
    slot writes its own outcome; with more, the settler does.
    """

    class SlowReply(jobkit.MemoryStore):
        async def settle_and_claim(self, outcomes: Any, **kwargs: Any) -> Any:
            answer = await super().settle_and_claim(outcomes, **kwargs)
            await trio.sleep(1)  # committed; the reply is on its way
            return answer

    queue = Queue(SlowReply(), clock=trio.current_time)

    @queue.task()
    async def quick() -> None:
        await trio.sleep(1)

    job_ids = await queue.enqueue_many([quick.prepare() for _ in range(4)])
    with trio.move_on_after(1.5):  # during the settle of the first ones, at 1.0
        await jobkit.run_worker(queue, concurrency=slots)
    jobs = [await queue.get(i) for i in job_ids]
    assert [(j.state, j.attempts) for j in jobs] == [
        (JobState.SUCCEEDED, 1)
    ] * slots + [(JobState.QUEUED, 0)] * (4 - slots)


class SlowClaims(jobkit.MemoryStore):
    """Each claim looks at the jobs a second after it is asked; notes when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    async def claim(self, **kwargs: Any) -> Any:
        self.asked.append(kwargs["now"])
        await trio.sleep(1)  # waiting for a lock, say
        return await super().claim(**{**kwargs, "now": trio.current_time()})


@pytest.mark.parametrize("taken", [True, False])
async def test_an_enqueue_heard_during_a_claim_that_took_it_needs_no_other_claim(
    autojump_clock: Any, taken: bool
) -> None:
    """A claim that took the last job of an enqueue it was told of saw that enqueue.

    Told of an enqueue while a claim is on its way, the worker claims again
    at once, unless the claim came back with that enqueue's last job. Here
    the job is due at once only if ``taken``.
    """
    store = SlowClaims()
    queue = Queue(store, clock=trio.current_time)

    @queue.task()
    async def quick() -> None:
        pass

    async with worker_running(queue, poll_interval=10) as (worker, _):
        await trio.sleep(0.5)  # during the first claim
        await quick.options(delay=0 if taken else 5).enqueue()
        await trio.sleep(1.5)
        assert worker.statistics().claimed == (1 if taken else 0)
    assert store.asked == ([0.0] if taken else [0.0, 1.0])


async def test_a_poll_lets_an_enqueue_at_the_same_instant_go_first(
    autojump_clock: Any,
) -> None:
    """A poll that falls at the instant of an enqueue takes its job in one claim.

    The worker and the producer wake at the same instants; in whichever
    order trio runs them, the poll looks after the enqueue.
    """
    store = WatchedStore()
    queue = Queue(store, clock=trio.current_time)

    @queue.task()
    async def beat() -> None:
        pass

    async with worker_running(queue, poll_interval=1) as (worker, _):
        for _ in range(30):
            await trio.sleep(1)
            await beat.enqueue()
        await trio.sleep(0.5)
        assert worker.statistics().succeeded == 30
    # One claim at the start, then one at each beat; none finds nothing.
    assert len(store.sizes("claim")) == 31


async def test_a_claim_on_its_way_at_shutdown_is_seen_through(
    autojump_clock: Any,
) -> None:
    """Stopped while a committed claim's reply is on its way, a worker waits for it.

    The claimed jobs are leased to this worker once the store committed:
    cutting the call short would leave them leased to nobody until the
    lease ran out. The worker runs them within its grace instead.
    """

    class SlowReply(jobkit.MemoryStore):
        async def claim(self, **kwargs: Any) -> Any:
            jobs = await super().claim(**kwargs)
            if jobs:
                await trio.sleep(1)  # committed; the reply is on its way
            return jobs

    queue = Queue(SlowReply(), clock=trio.current_time)

    @queue.task()
    async def quick() -> None:
        await trio.sleep(1)

    job_ids = await queue.enqueue_many([quick.prepare() for _ in range(2)])
    token = CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(jobkit.run_worker, queue, concurrency=2, shutdown=token)
        )
        await trio.sleep(0.5)  # during the claim
        token.cancel()
    jobs = [await queue.get(i) for i in job_ids]
    assert [(j.state, j.attempts, j.updated_at) for j in jobs] == [
        (JobState.SUCCEEDED, 1, 2.0)
    ] * 2


async def test_already_cancelled_token_claims_nothing(autojump_clock: Any) -> None:
    """A worker whose token is already cancelled returns at once without claiming."""
    queue, _store = make_queue()

    @queue.task()
    async def noop() -> None:
        pass

    job_id = await noop.enqueue()
    token = CancellationToken()
    token.cancel()
    await jobkit.run_worker(queue, shutdown=token)
    assert trio.current_time() == 0.0
    assert (await queue.get(job_id)).state is JobState.QUEUED


async def test_failures_are_logged_once_with_fields_and_traceback(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failure is one 'jobkit' record with job fields and the traceback."""
    queue, store = make_queue(attempts=2, delay=1)

    @queue.task(queue="billing")
    async def bill(account: str) -> None:
        raise KeyError(account)

    caplog.set_level(logging.DEBUG, logger="jobkit")
    async with worker_running(queue) as _:
        job_id = await bill.enqueue(account="acme")
        await store.wait_for(job_id, *DONE)
    failures = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    failures = [r for r in failures if r.levelno >= logging.WARNING]
    fields = [
        (r.levelname, r.attempt, r.event, r.state, r.error)  # type: ignore[attr-defined]
        for r in failures
    ]
    assert fields == [
        ("WARNING", 1, "retried", "queued", "KeyError: 'acme'"),
        ("ERROR", 2, "dead", "dead", "KeyError: 'acme'"),
    ]
    for record in failures:
        assert record.name == "jobkit"
        assert (record.task, record.queue) == ("bill", "billing")  # type: ignore[attr-defined]
        assert record.exc_info is not None and record.exc_info[0] is KeyError
    started = [r for r in caplog.records if getattr(r, "event", None) == "started"]
    assert [r.attempt for r in started] == [1, 2]  # type: ignore[attr-defined]
    assert "retrying in 1s" in failures[0].getMessage()
    assert caplog.text.count("Traceback (most recent call last)") == 2


async def test_store_errors_are_logged_and_retried(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing claims and settles are retried; the job still succeeds."""
    queue, store = make_queue()

    @queue.task()
    async def noop() -> str:
        return "ok"

    store.failures = {"claim": 3, "settle": 1}
    async with worker_running(queue) as (worker, _):
        job_id = await noop.enqueue()
        job = await store.wait_for(job_id, *DONE)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "ok")
    calls = [r.store_call for r in caplog.records if hasattr(r, "store_call")]  # type: ignore[attr-defined]
    assert calls.count("claim") >= 3 and "settle" in calls
    assert worker.statistics().succeeded == 1


async def test_settle_after_losing_the_lease_is_a_warning(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt finishing after its lease was reaped is discarded with a warning."""
    queue, store = make_queue()

    @queue.task()
    async def slow() -> None:
        await trio.sleep(2)

    async with worker_running(queue, lease=30, poll_interval=60) as (worker, _):
        job_id = await slow.enqueue()
        await trio.sleep(1)
        # As if the lease had run out: another worker reaps it.
        await store.reap(now=10_000.0)
        await trio.sleep(2)
    assert worker.statistics().lost == 1
    assert "outcome was discarded" in caplog.text
    assert (await queue.get(job_id)).last_error == jobkit.core.job.EXPIRED_ERROR


async def test_lost_attempt_ending_after_its_job_ran_again(
    autojump_clock: Any,
) -> None:
    """A lost attempt ending after its job was claimed again leaves the new one be."""
    queue, store = make_queue()
    finished: list[tuple[int, float]] = []

    @queue.task()
    async def stubborn() -> None:
        attempt = jobkit.current_job().attempts
        if attempt == 1:
            with trio.CancelScope(shield=True):  # ignores being stopped
                await trio.sleep(5)
        finished.append((attempt, trio.current_time()))

    async with worker_running(queue, lease=3, poll_interval=1) as (worker, _):
        job_id = await stubborn.enqueue()
        await trio.sleep(0.5)
        await store.reap(now=3.5)  # another worker reaped the lease at 3.5
        await trio.sleep(6)
    assert finished == [(2, 3.5), (1, 5.0)]
    stats = worker.statistics()
    assert (stats.claimed, stats.succeeded, stats.lost, stats.running) == (2, 1, 1, 0)
    job = await queue.get(job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)


async def test_attempts_reuse_a_few_tasks(autojump_clock: Any) -> None:
    """Many jobs run on at most ``concurrency`` tasks, each job at its instant."""
    queue, _store = make_queue()
    ran: list[tuple[int, float]] = []
    tasks: set[trio.lowlevel.Task] = set()

    @queue.task()
    async def step(n: int) -> None:
        tasks.add(trio.lowlevel.current_task())
        await trio.sleep(1)
        ran.append((n, trio.current_time()))

    async with worker_running(queue, concurrency=2) as (worker, _):
        ids = [await step.enqueue(n=n) for n in range(6)]
        await queue.store.wait_all(ids, *DONE)  # type: ignore[attr-defined]
    assert sorted(ran) == [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3)]
    assert len(tasks) == 2
    assert worker.statistics().succeeded == 6


_seen: ContextVar[str] = ContextVar("seen", default="unset")


async def test_handlers_do_not_share_context_variables(autojump_clock: Any) -> None:
    """A handler sees the worker's context, never what an earlier job set in it."""
    queue, _store = make_queue()
    seen: list[str] = []

    @queue.task()
    async def remember(n: int) -> None:
        seen.append(_seen.get())
        _seen.set(f"job {n}")

    _seen.set("worker")
    async with worker_running(queue, concurrency=1) as _:
        ids = [await remember.enqueue(n=n) for n in range(3)]
        await queue.store.wait_all(ids, *DONE)  # type: ignore[attr-defined]
    assert seen == ["worker"] * 3


async def test_a_stopped_attempt_frees_its_slot(autojump_clock: Any) -> None:
    """After an attempt is stopped for a lost lease, the next job runs at once."""
    queue, store = make_queue()
    ran: list[tuple[str, float]] = []

    @queue.task()
    async def work(name: str, seconds: float) -> None:
        ran.append((name, trio.current_time()))
        await trio.sleep(seconds)
        ran.append((f"{name} done", trio.current_time()))

    async with worker_running(queue, concurrency=1, lease=3) as (worker, _):
        stuck = await work.enqueue(name="stuck", seconds=100)
        await trio.sleep(0.5)
        after = await work.enqueue(name="after", seconds=1)
        await store.reap(now=3.5)  # another worker reaped the lease at 3.5
        await store.wait_all([after], *DONE)
    # The renewal at 1.0 finds the lease lost and stops the attempt, which
    # frees the only slot for the job waiting behind it.
    assert ran == [("stuck", 0.0), ("after", 1.0), ("after done", 2.0)]
    assert worker.statistics().lost == 1
    assert await timeline(queue, stuck) == [
        ("enqueued", 0.0, 0),
        ("started", 0.0, 1),
        ("expired", 3.5, 1),
    ]


async def test_a_bad_result_is_a_failure(autojump_clock: Any) -> None:
    """A result that is not JSON makes the job dead at once."""
    queue, store = make_queue(attempts=1)

    @queue.task()
    async def returns_set() -> set[int]:
        return {1, 2}

    bad = await returns_set.options(max_attempts=3).enqueue()
    async with worker_running(queue) as _:
        bad_job = await store.wait_for(bad, *DONE)
    assert (bad_job.state, bad_job.attempts) == (JobState.DEAD, 1)
    assert bad_job.last_error is not None
    assert bad_job.last_error.splitlines()[0] == (
        "Permanent: the handler's result is not storable JSON: "
        "result is a set ({1, 2}), which is not JSON-serializable"
    )


# -- outcomes a store cannot hold ---------------------------------------------------

ODD_NAME = os.fsdecode(b"r-\xff.csv")  # a lone surrogate, as from a file name


async def test_an_unstorable_result_fails_its_job_alone(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Text UTF-8 cannot encode fails that job for good; the others settle."""
    store = SQLiteStore(tmp_path / "jobs.db")
    queue = Queue(store, clock=trio.current_time)

    @queue.task(retry=RetryPolicy(3, Backoff.constant(1)))
    async def name(odd: bool) -> str:
        await trio.sleep(1)
        return ODD_NAME if odd else "r-.csv"

    odd = await name.enqueue(odd=True)
    fine = [await name.enqueue(odd=False) for _ in range(3)]
    with trio.fail_after(60):
        await Worker(queue, concurrency=4, until_empty=True).run()
    assert trio.current_time() == 1.0
    assert [(await queue.get(i)).state for i in fine] == [JobState.SUCCEEDED] * 3
    job = await queue.get(odd)
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    assert job.last_error is not None
    assert job.last_error.splitlines()[0] == (
        "Permanent: the handler's result is not storable JSON: result holds "
        "'\\udcff' at index 2, a lone surrogate that UTF-8 cannot encode"
    )
    await store.aclose()


async def test_error_text_utf8_cannot_encode_is_stored_escaped(
    autojump_clock: Any, inner: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """An error message with a lone surrogate is stored with a backslash escape."""
    # The logged traceback keeps the surrogate, which pytest-xdist cannot
    # send back from its worker process.
    caplog.set_level(logging.CRITICAL, logger="jobkit")
    queue, store = make_queue(attempts=2, delay=1, inner=inner)

    @queue.task()
    async def read() -> None:
        raise FileNotFoundError(f"no such file: {ODD_NAME}")

    async with worker_running(queue) as _:
        job = await store.wait_for(await read.enqueue(), *DONE)
    assert (job.state, job.attempts) == (JobState.DEAD, 2)
    assert job.last_error is not None
    assert job.last_error.splitlines()[0] == (
        "FileNotFoundError: no such file: r-\\udcff.csv"
    )


async def test_an_outcome_the_store_refuses_is_split_from_its_batch(
    autojump_clock: Any, inner: Store
) -> None:
    """A result JSON cannot write fails its job; the batch's others still land."""
    queue, store = make_queue(attempts=3, inner=inner)

    @queue.task()
    async def power(n: int) -> int:
        await trio.sleep(1)
        return 10**n  # 10**5000 has more digits than int -> str may make

    ids = [await power.enqueue(n=n) for n in (1, 5000, 2, 3)]
    async with worker_running(queue, concurrency=4) as _:
        jobs = await store.wait_all(ids, *DONE)
    assert [(j.state, j.result) for j in jobs] == [
        (JobState.SUCCEEDED, 10),
        (JobState.DEAD, None),
        (JobState.SUCCEEDED, 100),
        (JobState.SUCCEEDED, 1000),
    ]
    assert [j.updated_at for j in jobs] == [1.0] * 4
    assert jobs[1].last_error is not None
    assert jobs[1].last_error.startswith(
        "the store refused the handler's result (ValueError: Exceeds the limit"
    )


async def test_shutdown_ends_within_the_grace_while_settles_keep_failing(
    autojump_clock: Any,
) -> None:
    """A store that refuses every settle cannot keep a stopping worker running."""
    queue, store = make_queue()

    @queue.task()
    async def work(seconds: float) -> str:
        await trio.sleep(seconds)
        return "done"

    store.failures = {"settle": 10**9}
    token = CancellationToken()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(jobkit.run_worker, queue, shutdown=token, grace=5)
            )
            ids = [await work.enqueue(seconds=s) for s in (1, 100)]
            await trio.sleep(2)
            token.cancel()
    assert trio.current_time() == 7.0
    # Never settled: their leases expire and the jobs run again elsewhere.
    assert [(await queue.get(i)).state for i in ids] == [JobState.RUNNING] * 2


async def test_shutdown_ends_at_once_while_claims_keep_failing(
    autojump_clock: Any,
) -> None:
    """A claim being retried against a failing store ends when shutdown comes."""
    queue, store = make_queue()
    store.failures = {"claim": 10**9}
    token = CancellationToken()
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(jobkit.run_worker, queue, shutdown=token))
            await trio.sleep(30)
            token.cancel()
    assert trio.current_time() == 30.0


FAILING_SETTLE_APP = """
import jobkit

class FailingSettle(jobkit.SQLiteStore):
    async def settle(self, outcomes, *, now):
        raise OSError("the disk is gone")

queue = jobkit.Queue(FailingSettle("jobs.db"))

@queue.task()
async def quick() -> str:
    return "done"
"""


@pytest.mark.slow
def test_sigterm_stops_a_worker_whose_settles_keep_failing(tmp_path: Path) -> None:
    """A real worker process exits on SIGTERM within its grace, store failing."""
    (tmp_path / "failing_app.py").write_text(FAILING_SETTLE_APP)

    async def fill() -> None:
        queue = Queue(SQLiteStore(tmp_path / "jobs.db"))
        queue.task(name="quick")(trio.lowlevel.checkpoint)
        await queue.enqueue_many([queue.tasks["quick"].prepare() for _ in range(3)])
        await queue.store.aclose()

    trio.run(fill)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobkit", "worker", "failing_app:queue", "--grace", "1"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "JOBKIT_DB": ""},
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "store settle failed" in line:
                break
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, rest = proc.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, rest
    assert elapsed < 1 + 5  # the grace, and a store call or two
    assert "store settle failed while the worker stops; not retrying" in rest


# -- payloads that do not fit -----------------------------------------------------


async def test_a_payload_that_does_not_fit_the_handler_is_dead_at_once(
    autojump_clock: Any,
) -> None:
    """An unknown or missing argument fails the job for good, before it runs."""
    queue, store = make_queue(attempts=5)
    calls: list[dict[str, Any]] = []

    @queue.task()
    async def send_welcome(user_id: int, lang: str = "en", **extra: Any) -> None:
        calls.append(extra)
        if extra:
            raise TypeError("a TypeError from inside the handler")

    @queue.task()
    async def strict(user_id: int) -> None: ...

    extra, missing, inside = await store.enqueue(
        [
            NewJob("strict", {"user_id": 1, "extra": True}, max_attempts=5),
            NewJob("send_welcome", {"lang": "fr"}, max_attempts=5),
            NewJob("send_welcome", {"user_id": 1, "x": 1}, max_attempts=5),
        ],
        now=0.0,
    )
    async with worker_running(queue) as _:
        jobs = await store.wait_all([extra, missing, inside], *DONE)
    assert [(j.state, j.attempts) for j in jobs] == [
        (JobState.DEAD, 1),
        (JobState.DEAD, 1),
        (JobState.DEAD, 5),  # raised inside: retried like any error
    ]
    assert [j.last_error.splitlines()[0] for j in jobs if j.last_error] == [
        "Permanent: the payload of task 'strict' does not fit its handler: "
        "got an unexpected keyword argument 'extra'",
        "Permanent: the payload of task 'send_welcome' does not fit its handler: "
        "missing a required argument: 'user_id'",
        "TypeError: a TypeError from inside the handler",
    ]
    assert calls == [{"x": 1}] * 5


async def test_jobs_of_unknown_tasks_wait_for_a_worker_that_knows_them(
    autojump_clock: Any,
) -> None:
    """A worker leaves a job of a task it lacks QUEUED, and --until-empty ends.

    A newer deploy that knows the task then runs it, with that task's
    retry policy filling in a job enqueued without max_attempts.
    """
    queue, store = make_queue()

    @queue.task()
    async def known() -> None:
        pass

    [ghost] = await store.enqueue([NewJob("ghost", max_attempts=None)], now=0.0)
    done = await known.enqueue()
    await Worker(queue, until_empty=True).run()
    assert trio.current_time() == 0.0
    assert (await queue.get(done)).state is JobState.SUCCEEDED
    assert (await queue.get(ghost)).state is JobState.QUEUED
    assert await store.queued_tasks() == {("default", "ghost"): 1}

    newer, _ = make_queue(inner=store)

    @newer.task(name="ghost", retry=RetryPolicy(7, Backoff.constant(1)))
    async def ghost_task() -> None:
        pass

    await Worker(newer, until_empty=True).run()
    job = await queue.get(ghost)
    assert (job.state, job.max_attempts) == (JobState.SUCCEEDED, 7)


def test_worker_refuses_bad_options() -> None:
    """Bad worker options raise errors that name the option."""
    queue = Queue()
    with pytest.raises(ValueError, match="concurrency must be an int >= 1, got 0"):
        Worker(queue, concurrency=0)
    with pytest.raises(ValueError, match=r"lease must be > 0 seconds, got -1"):
        Worker(queue, lease=-1)
    with pytest.raises(TypeError, match="not the string 'emails'"):
        Worker(queue, queues="emails")
    with pytest.raises(TypeError, match=r"queue must be a jobkit\.Queue"):
        Worker("jobs.db")  # type: ignore[arg-type]


async def test_worker_without_a_store_says_how_to_give_one() -> None:
    """A worker on a queue with no store raises a RuntimeError saying what to do."""
    with pytest.raises(RuntimeError, match=r"queue\.store = "):
        await jobkit.run_worker(Queue())


@given(
    plans=st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 4)), min_size=1, max_size=8
    ),
    concurrency=st.integers(1, 4),
)
def test_every_job_ends_as_its_failures_dictate(
    plans: list[tuple[int, int]], concurrency: int
) -> None:
    """f failures of m attempts: SUCCEEDED after f+1 if f < m, else DEAD after m."""

    async def main() -> list[jobkit.Job]:
        queue, store = make_queue(delay=1)

        @queue.task()
        async def scripted(failures: int) -> None:
            await trio.sleep(0.25)
            if jobkit.current_job().attempts <= failures:
                raise ValueError("scripted")

        ids = await queue.enqueue_many(
            [scripted.options(max_attempts=m).prepare(failures=f) for f, m in plans]
        )
        async with worker_running(queue, concurrency=concurrency) as _:
            return await store.wait_all(ids, *DONE)

    jobs = jobkit.testing.run_virtual(main)
    for job, (failures, max_attempts) in zip(jobs, plans, strict=True):
        if failures < max_attempts:
            assert (job.state, job.attempts) == (JobState.SUCCEEDED, failures + 1)
        else:
            assert (job.state, job.attempts) == (JobState.DEAD, max_attempts)


def test_describe_error_text_is_the_standard_traceback_every_time() -> None:
    """describe_error gives the standard traceback text (markers, chains) every call."""
    import traceback

    from jobkit.worker.tracebacks import describe_error

    def lookup(data: dict[str, Any]) -> Any:
        return data["a"]["b"] + 1

    def wrapped() -> None:
        try:
            lookup({"a": {}})
        except KeyError as exc:
            raise ValueError("wrapped") from exc

    texts = []
    for _ in range(3):
        try:
            wrapped()
        except ValueError as exc:
            expected = "".join(traceback.format_exception(exc))
            text = describe_error(exc)
            assert text == f"ValueError: wrapped\n\n{expected}"
            texts.append(text)
    assert "~~~~~~^^^^^" in texts[0]
    assert "The above exception was the direct cause" in texts[0]


def test_describe_error_of_a_repeated_plain_failure_is_the_standard_traceback() -> None:
    """A failure raised again at one place reuses frames, reads as traceback's."""
    import functools
    import traceback

    from jobkit.worker.tracebacks import describe_error

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        error = LookupError(f"missing {n}")
        error.add_note("while looking")
        raise error

    def flat(values: list[int]) -> int:
        return values[3] * 2

    texts = []
    for attempt in range(3):
        calls = (lambda: deep(5), lambda: deep(1), functools.partial(flat, [attempt]))
        for fn in calls:
            try:
                fn()
            except Exception as exc:
                expected = "".join(traceback.format_exception(exc))
                text = describe_error(exc)
                assert text.split("\n\n", 1)[1] == expected
                texts.append(text)
    assert "[Previous line repeated" in texts[0]
    assert "while looking" in texts[1]
    assert "~~~~~~^^^" in texts[2]


# -- until_empty ------------------------------------------------------------------


async def test_until_empty_returns_once_retries_have_run_too(
    autojump_clock: Any, inner: Store
) -> None:
    """The worker waits for a retry due later, runs it, then returns by itself."""
    queue, _ = make_queue(attempts=3, delay=5.0, inner=inner)
    failures = {"flaky": 1}

    @queue.task()
    async def work(name: str) -> str:
        await trio.sleep(1)
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            raise ConnectionError("try again")
        return name

    ids = [await work.enqueue(name=n) for n in ("steady", "flaky")]
    worker = Worker(queue, poll_interval=100, until_empty=True)
    await worker.run()
    # flaky: fails at 1, retried at 6, succeeds at 7; nothing else is due. The
    # last attempt's end wakes the worker, not its next poll.
    assert trio.current_time() == 7.0
    assert [(await queue.get(i)).state for i in ids] == [JobState.SUCCEEDED] * 2
    assert (worker.statistics().succeeded, worker.statistics().retried) == (2, 1)


async def test_until_empty_on_an_empty_store_returns_at_once(
    autojump_clock: Any,
) -> None:
    """Nothing queued or running: run_worker returns at the instant it starts."""
    queue, _ = make_queue()
    await jobkit.run_worker(queue, until_empty=True)
    assert trio.current_time() == 0.0


async def test_until_empty_ignores_dead_jobs_and_other_queues(
    autojump_clock: Any,
) -> None:
    """Dead letters and jobs of queues it does not serve do not keep it running."""
    queue, _ = make_queue(attempts=1)

    @queue.task()
    async def broken() -> None:
        raise ValueError("no")

    dead = await broken.enqueue()
    await Worker(queue, until_empty=True).run()
    assert (await queue.get(dead)).state is JobState.DEAD
    elsewhere = await queue.enqueue("broken", {}, queue="reports", delay=60)
    await Worker(queue, queues=["default"], until_empty=True).run()
    assert trio.current_time() == 0.0
    assert (await queue.get(elsewhere)).state is JobState.QUEUED


async def test_until_empty_waits_for_a_job_running_elsewhere(
    autojump_clock: Any,
) -> None:
    """A job another worker holds keeps it waiting: here, until reaped and rerun."""
    queue, store = make_queue()

    @queue.task()
    async def t() -> str:
        return "done"

    job_id = await t.enqueue()
    await store.claim(queues=None, limit=1, now=0.0, lease=30.0)  # then that dies
    await Worker(queue, lease=30, poll_interval=100, until_empty=True).run()
    # Reaped at the first maintenance tick after 30 s (every 10 s), run at once.
    assert trio.current_time() == 40.0
    job = await queue.get(job_id)
    assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 2, "done")


async def test_until_empty_ends_soon_after_another_process_settles_the_last_job(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Waiting only on a job another process runs, it looks every 1/16 s."""
    here = SQLiteStore(tmp_path / "jobs.db")
    there = WatchedStore(SQLiteStore(tmp_path / "jobs.db"))  # another process's
    queues = [Queue(store, clock=trio.current_time) for store in (here, there)]
    for queue in queues:
        queue.task(name="work")(trio.sleep)
    token = CancellationToken()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(jobkit.run_worker, queues[1], shutdown=token, poll_interval=100)
        )
        job_id = await queues[1].enqueue("work", {"seconds": 5.52})
        await there.wait_for(job_id, JobState.RUNNING)
        await Worker(queues[0], poll_interval=100, until_empty=True).run()
        assert trio.current_time() == 5.5625  # the first look after 5.52
        token.cancel()
    assert (await queues[0].get(job_id)).state is JobState.SUCCEEDED
    await here.aclose()
    await there.aclose()


async def test_until_empty_still_stops_on_its_shutdown_token(
    autojump_clock: Any,
) -> None:
    """The shutdown token stops an until_empty worker like any other."""
    queue, _ = make_queue()

    @queue.task()
    async def later() -> None: ...

    await later.enqueue()
    await queue.enqueue("later", {}, delay=3600)
    token = CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(jobkit.run_worker, queue, until_empty=True, shutdown=token)
        )
        await trio.sleep(10)
        token.cancel()
    assert trio.current_time() == 10.0


async def test_until_empty_first_enqueues_the_due_slots_of_schedules(
    autojump_clock: Any,
) -> None:
    """A schedule's due slot is enqueued and run before the store counts as empty."""
    # trio starts the worker's tasks in a random order: twenty workers try
    # (nearly surely) both orders of the claim loop and the schedule firer.
    ran: list[float] = []
    for attempt in range(20):
        queue = Queue(MemoryStore(), clock=trio.current_time)
        ran.clear()

        @queue.task()
        async def tidy() -> None:
            await trio.sleep(2)
            ran.append(trio.current_time())

        await queue.schedule(tidy, {}, every=3600)
        began = trio.current_time()
        await Worker(queue, poll_interval=100, until_empty=True).run()
        assert (ran, trio.current_time()) == ([began + 2], began + 2), attempt


async def test_a_busy_worker_settles_and_claims_in_one_transaction(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """While every slot is busy, a finished job's outcome and the next claim
    share one transaction: a one-slot worker writes once per job."""
    store = SQLiteStore(tmp_path / "jobs.db")
    queue = Queue(store, clock=trio.current_time)

    @queue.task()
    async def work(n: int) -> int:
        return n

    await queue.enqueue_many(work.prepare(n=n) for n in range(20))
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    worker = Worker(queue, concurrency=1, until_empty=True)
    await worker.run()
    store._conn.set_trace_callback(None)
    assert worker.statistics().succeeded == 20
    # The first claim, then one transaction per job: its outcome and the
    # next claim. The last finds nothing, so the claim loop looks once more
    # before it stops.
    assert statements.count("BEGIN IMMEDIATE") == 1 + 20 + 1
    assert statements.count("COMMIT") == 1 + 20 + 1
    await store.aclose()
