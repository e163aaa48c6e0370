"""The store as simulated worker processes see it, and the processes themselves.

Each simulated worker process is one ``run_worker`` call in its own cancel
scope, with a context variable naming the process. Every store call passes
through :class:`LabStore`, which uses that variable to refuse calls from a
process that has crashed (as a dead process makes none), to inject store
errors, and to report to the run what was claimed and settled.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

import attrs
import trio

from .._job import Event, Job, JobState, NewJob, Outcome
from .._store import PurgeTotals, QueueCounts, Store
from ._faults import Attempt, SimulatedStoreError, StoreErrors, StoreOperation
from ._rng import KeyedRandom, salt

if TYPE_CHECKING:
    from ._simulation import _Run

__all__ = ["LabStore", "Process", "ProcessGone", "current_process", "worker_process"]

_SALT_STORE = salt("store")


class ProcessGone(Exception):
    """A store call made by a worker process that has crashed or been stopped."""


@attrs.define(eq=False)
class Process:
    """One simulated worker process: a run_worker call in its own cancel scope."""

    name: str
    slot: int
    incarnation: int
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    gone: bool = False
    crashed: bool = False
    crashed_at: float | None = None
    ops: int = 0
    inflight: dict[tuple[int, int], Attempt] = attrs.Factory(dict)


# The worker process a task belongs to; None outside the workers (the
# producer), whose store calls are made as the run's producer.
current_process: ContextVar[Process | None] = ContextVar(
    "jobkit.sim.process", default=None
)


def worker_process() -> Process:
    process = current_process.get()
    if process is None:
        raise RuntimeError("the simulated task ran outside a simulated worker")
    return process


class LabStore:
    """The store as the simulated processes see it.

    It passes every call to the real store, and on the way: refuses calls
    from a process that is gone, injects store errors, counts the jobs that
    reach a terminal state (so the run knows when it has drained), and notes
    who claimed what and which delay the worker chose.
    """

    def __init__(self, inner: Store, run: _Run) -> None:
        self._inner = inner
        self._run = run
        self._faults: list[tuple[int, StoreErrors]] = list(run.plan.store_faults)
        self._events_seen = 0
        self._events_by_job: dict[int, list[tuple[int, Event]]] = {}

    def __repr__(self) -> str:
        return f"<simulated access to {self._inner!r}>"

    def _before(self, op: StoreOperation | None) -> tuple[Process, bool]:
        """Check the caller is alive and draw its fate; return (process, fail after)."""
        process = current_process.get() or self._run.producer
        if process.gone:
            raise ProcessGone(f"{process.name} is not running")
        if op is None or not self._faults:
            return process, False
        process.ops += 1
        for index, fault in self._faults:
            if op not in fault.operations or fault.probability <= 0:
                continue
            rng = KeyedRandom(
                self._run.seed,
                _SALT_STORE,
                index,
                process.slot,
                process.incarnation,
                process.ops,
            )
            if rng.random() < fault.probability:
                after = op != "enqueue" and rng.random() < fault.after_commit
                if not after:
                    self._run.store_error(process, op, committed=False)
                    raise SimulatedStoreError(f"store {op} failed (injected)")
                return process, True
        return process, False

    def _after(self, process: Process, op: str, fail: bool) -> None:
        if process.gone:
            # The process died while the call was in flight: the change
            # happened, but nobody is left to hear about it.
            raise ProcessGone(f"{process.name} is not running")
        if fail:
            self._run.store_error(process, op, committed=True)
            raise SimulatedStoreError(f"store {op} failed after committing (injected)")

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        process, fail = self._before("enqueue")
        ids = await self._inner.enqueue(jobs, now=now)
        self._after(process, "enqueue", fail)
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
        process, fail = self._before("claim")
        jobs = await self._inner.claim(
            queues=queues,
            limit=limit,
            now=now,
            lease=lease,
            tasks=tasks,
            max_attempts=max_attempts,
        )
        self._run.claimed(process, jobs)
        self._after(process, "claim", fail)
        return jobs

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        process, fail = self._before("settle")
        applied = await self._inner.settle(outcomes, now=now)
        self._run.settled(process, outcomes, applied, now)
        self._after(process, "settle", fail)
        return applied

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        process, fail = self._before("renew")
        renewed = await self._inner.renew(leases, now=now, lease=lease)
        self._after(process, "renew", fail)
        return renewed

    async def reap(self, *, now: float) -> list[Job]:
        process, fail = self._before("reap")
        reaped = await self._inner.reap(now=now)
        self._run.reaped(reaped)
        self._after(process, "reap", fail)
        return reaped

    async def get(self, job_id: int) -> Job:
        process, _ = self._before(None)
        job = await self._inner.get(job_id)
        self._after(process, "get", False)
        return job

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
        process, _ = self._before(None)
        jobs = await self._inner.list(
            state=state,
            queue=queue,
            limit=limit,
            task=task,
            newest_first=newest_first,
            after_id=after_id,
            before_id=before_id,
        )
        self._after(process, "list", False)
        return jobs

    async def cancel(self, job_id: int, *, now: float) -> Job:
        process, _ = self._before(None)
        job = await self._inner.cancel(job_id, now=now)
        self._after(process, "cancel", False)
        return job

    async def requeue(self, job_id: int, *, now: float) -> Job:
        process, _ = self._before(None)
        job = await self._inner.requeue(job_id, now=now)
        self._after(process, "requeue", False)
        return job

    async def discard(self, job_id: int, *, now: float) -> Job:
        process, _ = self._before(None)
        job = await self._inner.discard(job_id, now=now)
        self._after(process, "discard", False)
        return job

    async def counts(self) -> QueueCounts:
        process, _ = self._before(None)
        counts = await self._inner.counts()
        self._after(process, "counts", False)
        return counts

    async def purge(self, *, before: float) -> int:
        process, _ = self._before(None)
        deleted = await self._inner.purge(before=before)
        self._after(process, "purge", False)
        return deleted

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        process, _ = self._before(None)
        at = await self._inner.next_run_at(queues=queues, tasks=tasks)
        self._after(process, "next_run_at", False)
        return at

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        process, _ = self._before(None)
        found = await self._inner.queued_tasks()
        self._after(process, "queued_tasks", False)
        return found

    async def purge_totals(self) -> PurgeTotals:
        process, _ = self._before(None)
        totals = await self._inner.purge_totals()
        self._after(process, "purge_totals", False)
        return totals

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        process, _ = self._before(None)
        if job_id is None:
            found = await self._inner.events(after=after, limit=limit)
        else:
            # The worker reads one job's events to find its previous delay
            # (decorrelated jitter). Serve that from an index kept up to date
            # incrementally, so a long run does not rescan the whole log on
            # every failure; the rows are the store's own.
            fresh = await self._inner.events(after=self._events_seen)
            for seq, event in fresh:
                self._events_by_job.setdefault(event.job_id, []).append((seq, event))
                self._events_seen = seq
            found = [
                row for row in self._events_by_job.get(job_id, ()) if row[0] > after
            ]
            if limit is not None:
                found = found[:limit]
        self._after(process, "events", False)
        return found

    async def aclose(self) -> None:
        # The simulation owns the real store's lifetime, not the worker.
        await trio.lowlevel.checkpoint()
