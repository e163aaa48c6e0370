"""Self-fencing: a worker that cannot renew a lease stops the job before it runs out.

A worker cut off from its store keeps running its handlers, but once their
leases end another worker reaps the jobs and runs them again. So when
renewals keep failing, the worker cancels each handler ``lease / 6`` before
its lease ends (the margin covers the cancellation landing and the clocks of
the hosts disagreeing) and records a failed attempt, never a success: no job
runs twice at the same time. Virtual time makes every instant exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
from helpers.stores import WatchedStore

import jobkit
from jobkit import EventKind, JobState, Queue, StoreError


class RenewFails(WatchedStore):
    """A store whose renewals fail with StoreError while ``failing(now)`` holds."""

    def __init__(
        self, failing: Callable[[float], bool], inner: jobkit.Store | None = None
    ) -> None:
        super().__init__(inner)
        self.failing = failing

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        if self.failing(now):
            raise StoreError("the database did not answer")
        return await super().renew(leases, now=now, lease=lease)


class CutLink(WatchedStore):
    """A store seen through a link that, while ``cut``, fails every call."""

    cut = False

    def _note(self, name: str, size: int) -> None:
        if self.cut:
            raise StoreError("the database did not answer")
        super()._note(name, size)


def make_queue(failing: Callable[[float], bool]) -> tuple[Queue, RenewFails]:
    store = RenewFails(failing)
    policy = jobkit.RetryPolicy(3, jobkit.Backoff.constant(1.0))
    return Queue(store, clock=trio.current_time, default_retry=policy), store


async def kinds_until(
    queue: Queue, job_id: int, until: float
) -> list[tuple[str, float]]:
    return [
        (e.kind.value, e.at)
        for _, e in await queue.events(job_id=job_id)
        if e.at <= until
    ]


async def test_handler_is_cancelled_at_lease_end_minus_margin(
    autojump_clock: Any,
) -> None:
    """Renewals all fail: the handler is cancelled at lease_until - lease/6, exactly."""
    queue, _ = make_queue(lambda now: True)
    ran: list[tuple[float, str]] = []
    stopped = trio.Event()

    @queue.task()
    async def crunch() -> str:
        ran.append((trio.current_time(), "start"))
        try:
            await trio.sleep(100)
        finally:
            ran.append((trio.current_time(), "end"))
            stopped.set()
        return "done"

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(
            jobkit.Worker(queue, lease=30, shutdown=token, grace=0).run
        )
        job_id = await crunch.enqueue()
        await stopped.wait()
        token.cancel()
    # Claimed at 0 with a 30 s lease; the renewals at 10 and 20 failed; the
    # lease ends at 30; the handler stops at 25.
    assert ran[:2] == [(0.0, "start"), (25.0, "end")]
    assert await kinds_until(queue, job_id, 25.0) == [
        ("enqueued", 0.0),
        ("started", 0.0),
        ("retried", 25.0),
    ]
    assert worker.statistics().fenced >= 1
    job = await queue.get(job_id)
    assert job.last_error == jobkit.worker.leases.FENCED_ERROR


class RenewHangs(WatchedStore):
    """A store whose renewals never answer, as over a silent network."""

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_renewal_that_hangs_fences_as_one_that_fails(
    autojump_clock: Any,
) -> None:
    """The first renewal never returns: the handler is still cancelled at 25."""
    queue = Queue(RenewHangs(), clock=trio.current_time)
    ended = trio.Event()
    ends: list[float] = []

    @queue.task()
    async def crunch() -> None:
        try:
            await trio.sleep(100)
        finally:
            ends.append(trio.current_time())
            ended.set()

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        await nursery.start(jobkit.Worker(queue, lease=30, shutdown=token, grace=0).run)
        await crunch.enqueue()
        await ended.wait()
        token.cancel()
    assert ends[0] == 25.0


async def test_cut_off_worker_stops_before_another_reaps_the_job(
    autojump_clock: Any,
) -> None:
    """Two workers on one store, one cut off: its run ends before the other's begins."""
    store = WatchedStore()
    policy = jobkit.RetryPolicy(3, jobkit.Backoff.constant(1.0))
    # The cut-off worker sees the same jobs through a link that can be cut.
    link = CutLink(store)
    cut = Queue(link, clock=trio.current_time, default_retry=policy)
    other = Queue(store, clock=trio.current_time, default_retry=policy)
    runs: dict[str, list[float]] = {}
    for name, queue in (("cut", cut), ("other", other)):

        @queue.task(name="crunch")
        async def crunch(name: str = name) -> None:
            run = runs.setdefault(name, [trio.current_time()])
            try:
                await trio.sleep(40)
            finally:
                run.append(trio.current_time())

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        cut_worker = await nursery.start(
            jobkit.Worker(cut, lease=30, shutdown=token).run
        )
        job_id = await cut.enqueue("crunch")
        await store.wait_for(job_id, JobState.RUNNING)
        link.cut = True
        await nursery.start(jobkit.Worker(other, lease=30, shutdown=token).run)
        job = await store.wait_for(job_id, JobState.SUCCEEDED)
        link.cut = False  # healed: the cut-off worker's report is refused
        token.cancel()
    # The cut-off worker stopped at 25; its lease ended at 30; the other
    # worker reaped it at its first reap after that (every 10 s, from 0),
    # then ran it.
    assert runs == {"cut": [0.0, 25.0], "other": [40.0, 80.0]}
    assert (job.attempts, job.updated_at) == (2, 80.0)
    events = [(e.kind, e.at) for _, e in await other.events(job_id=job_id)]
    assert (EventKind.EXPIRED, 40.0) in events
    stats = cut_worker.statistics()
    assert (stats.fenced, stats.lost, stats.succeeded) == (1, 1, 0)


async def test_a_renewal_that_succeeds_in_time_keeps_the_handler_running(
    autojump_clock: Any,
) -> None:
    """Renewals fail at 0 and 10, succeed at 20: the lease moves to 50, no fence."""
    queue, store = make_queue(lambda now: now < 15)

    @queue.task()
    async def crunch() -> str:
        await trio.sleep(40)
        return "done"

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(jobkit.Worker(queue, lease=30, shutdown=token).run)
        job_id = await crunch.enqueue()
        job = await store.wait_for(job_id, JobState.SUCCEEDED, JobState.DEAD)
        token.cancel()
    assert (job.state, job.attempts, job.updated_at) == (JobState.SUCCEEDED, 1, 40.0)
    assert worker.statistics().fenced == 0


async def test_a_job_that_ends_before_the_fence_succeeds(autojump_clock: Any) -> None:
    """No renewal ever works, but the handler returns at 24, before the fence at 25."""
    queue, store = make_queue(lambda now: True)

    @queue.task()
    async def quick() -> str:
        await trio.sleep(24)
        return "done"

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        worker = await nursery.start(jobkit.Worker(queue, lease=30, shutdown=token).run)
        job_id = await quick.enqueue()
        job = await store.wait_for(job_id, JobState.SUCCEEDED, JobState.DEAD)
        token.cancel()
    assert (job.state, job.result, job.updated_at) == (JobState.SUCCEEDED, "done", 24.0)
    assert worker.statistics().fenced == 0
