"""The delay a job records at each retry, and the jitter drawn from it."""

from __future__ import annotations

import functools
import random

import attrs
import trio

from jobkit import Backoff, MemoryStore, NewJob, Queue, RetryPolicy, run_worker
from jobkit.sim import (
    Attempt,
    Burst,
    Fault,
    FaultPlan,
    Simulation,
    StoreErrors,
    TransientErrors,
)
from jobkit.store import Failure


@attrs.frozen
class SlowFirstAttempt(Fault):
    """The first attempt of every job outlives a 3 s lease."""

    async def inject(self, attempt: Attempt) -> None:
        if attempt.job.attempts == 1:
            await trio.sleep(5)


def test_decorrelated_jitter_draws_from_the_delay_the_store_recorded() -> None:
    """Each decorrelated delay is drawn from the delay the job last recorded.

    Attempt 1 outlives what its lease allows (no renewal gets through), so
    the worker fences it at 2.5 s, a failure that records a first delay;
    the delay after attempt 2 is then drawn from [base, 3 * that delay].
    """
    trace = Simulation(
        1,
        workload=Burst(1),
        concurrency=1,
        lease=3,
        faults=FaultPlan(
            SlowFirstAttempt(),
            TransientErrors(1.0),
            StoreErrors(1.0, operations={"renew"}),
        ),
        retry=RetryPolicy(3, Backoff.exponential(1, 100, jitter="decorrelated")),
    ).run()
    assert trace.violations() == []
    first, second = trace.waits()
    assert (first.attempt, second.attempt) == (1, 2)
    assert 1.0 <= first.delay <= 3.0
    assert 1.0 <= second.delay <= 3 * first.delay


class _Highest(random.Random):
    """Draws the top of every interval, so a delay shows the bound it came from."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_the_worker_feeds_the_recorded_delay_to_the_backoff(
    autojump_clock: object,
) -> None:
    """The next decorrelated delay is 3x the delay stored on the job, not a guess."""
    store = MemoryStore()
    queue = Queue(store, clock=trio.current_time)

    @queue.task(
        retry=RetryPolicy(5, Backoff.exponential(1, 1000, jitter="decorrelated"))
    )
    async def flaky() -> None:
        raise OSError("down")

    [job_id] = await store.enqueue(
        [NewJob(task="flaky", max_attempts=5)], now=trio.current_time()
    )
    # Attempt 1 failed elsewhere, and the store recorded a 7 s delay.
    [job] = await store.claim(queues=None, limit=1, now=0.0, lease=30.0)
    await store.settle([Failure(job_id, 1, "down", retry_at=7.0, delay=7.0)], now=0.0)
    async with trio.open_nursery() as nursery:
        worker = functools.partial(run_worker, queue, rng=_Highest(), until_empty=True)
        with trio.move_on_after(7.5):
            await nursery.start(worker)
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    job = await store.get(job_id)
    assert (job.attempts, job.retry_delay) == (2, 21.0)
