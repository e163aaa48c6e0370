"""A MemoryStore that counts its calls and lets a test wait for a job's state."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from jobkit import JobState
from jobkit._job import Job, NewJob, Outcome
from jobkit._memory import MemoryStore


class WatchedStore(MemoryStore):
    """Records the size of every batched call and wakes waiters on every change.

    Waiting on a change instead of sleeping keeps tests exact: a test asks
    for "job 3 is SUCCEEDED" and resumes the moment the store says so.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self._changed = trio.Event()
        # Set by a test to make the next N calls of a primitive fail.
        self.failures: dict[str, int] = {}

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

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        self._note("enqueue", len(jobs))
        ids = await super().enqueue(jobs, now=now)
        self._bump()
        return ids

    async def claim(
        self, *, queues: Sequence[str] | None, limit: int, now: float, lease: float
    ) -> list[Job]:
        self._note("claim", limit)
        jobs = await super().claim(queues=queues, limit=limit, now=now, lease=lease)
        if jobs:
            self._bump()
        return jobs

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        self._note("settle", len(outcomes))
        applied = await super().settle(outcomes, now=now)
        self._bump()
        return applied

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        self._note("renew", len(leases))
        return await super().renew(leases, now=now, lease=lease)

    async def reap(self, *, now: float) -> list[Job]:
        self._note("reap", 0)
        jobs = await super().reap(now=now)
        if jobs:
            self._bump()
        return jobs

    async def wait_for(self, job_id: int, *states: JobState) -> Job:
        """Return the job as soon as it is in one of ``states``."""
        while True:
            changed = self._changed
            job = await self.get(job_id)
            if job.state in states:
                return job
            await changed.wait()

    async def wait_all(self, job_ids: Sequence[int], *states: JobState) -> list[Job]:
        """Return the jobs once every one of them is in one of ``states``."""
        return [await self.wait_for(job_id, *states) for job_id in job_ids]
