"""A store wrapper that counts batched calls, injects failures, and lets tests wait."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence

import trio

from jobkit import JobState, PurgeTotals, QueueCounts, Store
from jobkit._job import Event, Job, NewJob, Outcome
from jobkit._memory import MemoryStore


class WatchedStore:
    """Wraps a store: records each batched call's size and wakes waiters on changes.

    Waiting on a change instead of sleeping keeps tests exact: a test asks
    for "job 3 is SUCCEEDED" and resumes the moment the store says so.
    """

    def __init__(self, inner: Store | None = None) -> None:
        self.inner: Store = inner if inner is not None else MemoryStore()
        self.calls: list[tuple[str, int]] = []
        self._changed = trio.Event()
        # Set by a test to make the next N calls of a primitive fail.
        self.failures: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<WatchedStore over {self.inner!r}>"

    def _note(self, name: str, size: int) -> None:
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            raise OSError(f"injected {name} failure")
        self.calls.append((name, size))

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def sizes(self, name: str) -> list[int]:
        """Return the batch size of each successful call of ``name``."""
        return [size for call, size in self.calls if call == name]

    async def wait_for(self, job_id: int, *states: JobState) -> Job:
        """Return the job as soon as it is in one of ``states``."""
        return await self.wait_until(job_id, lambda job: job.state in states)

    async def wait_until(self, job_id: int, condition: Callable[[Job], bool]) -> Job:
        """Return the job as soon as ``condition(job)`` holds."""
        while True:
            changed = self._changed
            job = await self.inner.get(job_id)
            if condition(job):
                return job
            await changed.wait()

    async def wait_all(self, job_ids: Sequence[int], *states: JobState) -> list[Job]:
        """Return the jobs once every one of them is in one of ``states``."""
        return [await self.wait_for(job_id, *states) for job_id in job_ids]

    # -- the Store protocol, delegated -------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        self._note("enqueue", len(jobs))
        ids = await self.inner.enqueue(jobs, now=now)
        self._bump()
        return ids

    async def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        lease: float,
        tasks: Sequence[str] | None = None,
        max_attempts: Mapping[str, int] | None = None,
    ) -> list[Job]:
        self._note("claim", limit)
        jobs = await self.inner.claim(
            queues=queues,
            limit=limit,
            now=now,
            lease=lease,
            tasks=tasks,
            max_attempts=max_attempts,
        )
        if jobs:
            self._bump()
        return jobs

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        self._note("settle", len(outcomes))
        applied = await self.inner.settle(outcomes, now=now)
        self._bump()
        return applied

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        self._note("renew", len(leases))
        return await self.inner.renew(leases, now=now, lease=lease)

    async def reap(self, *, now: float) -> list[Job]:
        self._note("reap", 0)
        jobs = await self.inner.reap(now=now)
        if jobs:
            self._bump()
        return jobs

    async def get(self, job_id: int) -> Job:
        return await self.inner.get(job_id)

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int | None = 100,
        task: str | None = None,
        newest_first: bool = False,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> builtins.list[Job]:
        return await self.inner.list(
            state=state,
            queue=queue,
            limit=limit,
            task=task,
            newest_first=newest_first,
            after_id=after_id,
            before_id=before_id,
        )

    async def cancel(self, job_id: int, *, now: float) -> Job:
        job = await self.inner.cancel(job_id, now=now)
        self._bump()
        return job

    async def requeue(self, job_id: int, *, now: float) -> Job:
        job = await self.inner.requeue(job_id, now=now)
        self._bump()
        return job

    async def discard(self, job_id: int, *, now: float) -> Job:
        job = await self.inner.discard(job_id, now=now)
        self._bump()
        return job

    async def counts(self) -> QueueCounts:
        return await self.inner.counts()

    async def purge(self, *, before: float) -> int:
        deleted = await self.inner.purge(before=before)
        self._bump()
        return deleted

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        return await self.inner.next_run_at(queues=queues, tasks=tasks)

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        return await self.inner.queued_tasks()

    async def purge_totals(self) -> PurgeTotals:
        return await self.inner.purge_totals()

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        return await self.inner.events(job_id=job_id, after=after, limit=limit)

    async def aclose(self) -> None:
        await self.inner.aclose()
