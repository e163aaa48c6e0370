"""The stores every store test runs on, and a wrapper that counts and injects failures.

:data:`STORES` lists every store the shared tests (contract, model,
schedules) run on, as a factory of a fresh, empty store; adding a store is
one line there. :func:`dispose` closes what a factory made and deletes what
it left behind.

PostgreSQL tests use ``$JOBKIT_TEST_POSTGRES_URL`` (default: the local
server), each in a schema of its own so that they run in parallel. When no
server answers they are skipped, except under ``$CI``, where they fail.
"""

from __future__ import annotations

import builtins
import functools
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from jobkit import (
    JobState,
    PurgeTotals,
    QueueCounts,
    SettleClaimStore,
    SQLiteStore,
    Store,
)
from jobkit.core.job import Event, Job, NewJob, Outcome
from jobkit.store.memory import MemoryStore

POSTGRES_URL = os.environ.get(
    "JOBKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgres_problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {POSTGRES_URL} ({exc})".splitlines()[0]
    return None


def postgres_url() -> str:
    """Return the test server's URL; skip the test (under $CI: fail) if it is down."""
    problem = postgres_problem()
    if problem is not None:
        message = (
            f"{problem}; to run the PostgreSQL tests start a server or set "
            "JOBKIT_TEST_POSTGRES_URL=postgresql://user@host:port/db"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_URL


def fresh_schema() -> str:
    """A schema name no other test uses."""
    return f"test_{uuid.uuid4().hex[:20]}"


def postgres_store(tmp_path: Path) -> Store:
    """A PostgresStore in a fresh schema of the test server."""
    from jobkit import PostgresStore

    return PostgresStore(postgres_url(), schema=fresh_schema(), timeout=20.0)


STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp_path: MemoryStore(),
    "sqlite": lambda tmp_path: SQLiteStore(tmp_path / "jobs.db"),
    "postgres": postgres_store,
}
"""Every store the shared tests run on: a name and a factory of a fresh, empty store."""


REMOTE: frozenset[str] = frozenset({"postgres"})
"""The stores reached over a connection: each call costs a round trip or more."""


def require(name: str) -> None:
    """Skip the test (under $CI: fail it) if the store ``name`` cannot be reached."""
    if name == "postgres":
        postgres_url()


MARKS: dict[str, list[pytest.MarkDecorator]] = {"postgres": [pytest.mark.postgres]}
"""Marks each store's tests carry: ``postgres`` ones are left out, with one
line saying so, when no server answers (see ``tests/conftest.py``)."""


def store_params(*, slow_remote: bool = False) -> list[Any]:
    """Every name in :data:`STORES` as a pytest parameter with its marks; remote
    ones also marked slow if ``slow_remote`` (for tests of thousands of calls)."""
    return [
        pytest.param(
            name,
            marks=[
                *MARKS.get(name, []),
                *([pytest.mark.slow] if slow_remote and name in REMOTE else []),
            ],
        )
        for name in sorted(STORES)
    ]


async def dispose(store: Store) -> None:
    """Close a store made by :data:`STORES` and delete what it left (a schema)."""
    drop = getattr(store, "drop_schema", None)
    if drop is not None:
        await drop()
    else:
        await store.aclose()


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

    async def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        tasks: Sequence[str] | None = None,
        max_attempts: Mapping[str, int] | None = None,
    ) -> tuple[list[bool], list[Job]]:
        # Recorded as the two calls it stands for; an injected failure of
        # either fails the whole step before anything changes.
        self._note("settle", len(outcomes))
        self._note("claim", limit)
        claim = {
            "queues": queues,
            "limit": limit,
            "lease": lease,
            "tasks": tasks,
            "max_attempts": max_attempts,
        }
        if isinstance(self.inner, SettleClaimStore):
            result = await self.inner.settle_and_claim(outcomes, now=now, **claim)
        else:
            applied = await self.inner.settle(outcomes, now=now)
            result = applied, await self.inner.claim(now=now, **claim)
        self._bump()
        return result

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
