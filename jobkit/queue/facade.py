"""The queue facade: named tasks, enqueueing, and the operations a person needs.

A :class:`Queue` ties three things together: a :class:`~jobkit.Store` that
keeps the jobs, a clock that says what "now" is in the store's time base, and
a registry of :class:`Task` handlers by name. Producers call
:meth:`Task.enqueue` or :meth:`Queue.enqueue`; workers
(:func:`jobkit.run_worker`) look handlers up by the name stored on each job.

Registering tasks and enqueueing live in :class:`~jobkit.queue.base.QueueBase`
(``base.py``); this module adds looking at jobs, operating on them, and
schedules.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any, Protocol

import trio

from .._checks import instant
from .._checks import seconds as check_seconds
from ..core import job as _job
from ..core.job import JSON, Event, EventKind, Job, JobState
from ..core.schedule import DEFAULT_MAX_BURST, Schedule
from ..observe.logs import log_job_event, logger
from ..observe.metrics import MetricsSnapshot, collect_metrics
from ..runtime.interval import MissedTickBehavior
from ..store.protocol import QueueCounts, ScheduleStore
from .base import QueueBase
from .prepared import PreparedJob
from .task import Task, TaskOptions

__all__ = ["PreparedJob", "Queue", "Task", "TaskOptions"]


class _Transition(Protocol):
    """A store method that moves one job on, such as ``Store.cancel``."""

    def __call__(self, job_id: int, *, now: float) -> Awaitable[Job]: ...


class Queue(QueueBase):
    """A job queue: tasks by name, a store that keeps jobs, and a clock.

    ``store`` may be given later (``queue.store = SQLiteStore(path)``), so
    that tasks can be declared at import time and the database chosen at
    start-up; every operation that needs it raises ``RuntimeError`` until
    then. ``clock`` returns "now" in the store's time base: wall-clock epoch
    seconds by default, ``trio.current_time`` for a simulation in virtual
    time. ``default_retry`` applies to tasks that have no policy of their
    own (default: :meth:`RetryPolicy.default`).

    Enqueueing wakes the workers of this process that serve the job's queue
    at once; workers elsewhere find new jobs when they next poll.

    Example::

        >>> import trio, jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore())
        >>> @queue.task()
        ... async def add(a: int, b: int) -> int:
        ...     return a + b
        >>> async def main():
        ...     job_id = await add.enqueue(a=2, b=3)
        ...     async with trio.open_nursery() as nursery:
        ...         await nursery.start(jobkit.run_worker, queue)
        ...         job = await queue.wait(job_id)
        ...         nursery.cancel_scope.cancel()
        ...     return job.result
        >>> trio.run(main)
        5
    """

    # -- inspecting and operating ---------------------------------------------------

    async def get(self, job_id: int) -> Job:
        """Return the job with ``job_id``; raise :class:`JobNotFound` if none.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     return (await queue.get(await noop.enqueue())).state
            >>> trio.run(main)
            <JobState.QUEUED: 'queued'>
        """
        return await self.store.get(job_id)

    async def cancel(self, job_id: int) -> Job:
        """Cancel a job that has not started yet (QUEUED to CANCELLED).

        A running job cannot be cancelled this way (``TransitionError``);
        its handler decides how to stop.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     return (await queue.cancel(await noop.enqueue())).state.value
            >>> trio.run(main)
            'cancelled'
        """
        return await self._by_hand(self.store.cancel, job_id, EventKind.CANCELLED)

    async def list(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        limit: int | None = 100,
    ) -> builtins.list[Job]:
        """Return jobs, oldest first, optionally only one state and queue.

        ``state`` is a :class:`JobState` or its value (``"dead"``).

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     await noop.enqueue()
            ...     return [job.id for job in await queue.list(state="queued")]
            >>> trio.run(main)
            [1]
        """
        return await self.store.list(state=_state(state), queue=queue, limit=limit)

    async def dead(
        self, *, queue: str | None = None, limit: int | None = 100
    ) -> builtins.list[Job]:
        """Return the dead letters: jobs that failed for good and wait for a person.

        Each carries its ``last_error``; :meth:`requeue` retries one with
        fresh attempts, :meth:`discard` gives up on it.

        Example::

            >>> import trio, jobkit
            >>> trio.run(jobkit.Queue(jobkit.MemoryStore()).dead)
            []
        """
        return await self.store.list(state=JobState.DEAD, queue=queue, limit=limit)

    async def requeue(self, job_id: int) -> Job:
        """Send a dead job back to QUEUED, due now, with its attempts reset to zero.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> async def main():
            ...     for job in await queue.dead():
            ...         await queue.requeue(job.id)
            >>> trio.run(main)
        """
        job = await self._by_hand(self.store.requeue, job_id, EventKind.REQUEUED)
        self._wakeups.ready.notify(job.queue)
        return job

    async def discard(self, job_id: int) -> Job:
        """Give up on a dead job for good (DEAD to CANCELLED); its record stays.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> async def main():
            ...     for job in await queue.dead():
            ...         await queue.discard(job.id)
            >>> trio.run(main)
        """
        return await self._by_hand(self.store.discard, job_id, EventKind.DISCARDED)

    async def _by_hand(
        self, transition: _Transition, job_id: int, kind: EventKind
    ) -> Job:
        """Apply a transition someone asked for to one job, now, and log it."""
        now = self.clock()
        job = await transition(job_id, now=now)
        log_job_event(Event(job.id, kind, now, job.attempts), job)
        self._wakeups.jobs.notify(job.id)
        return job

    async def wait(self, job_id: int, *, poll_interval: float | timedelta = 1.0) -> Job:
        """Wait until the job ``job_id`` has finished, then return it.

        Finished means SUCCEEDED, DEAD or CANCELLED (:data:`TERMINAL_STATES`):
        look at ``job.state``, then ``job.result`` or ``job.last_error``. A
        worker or a call of this process that finishes the job wakes the wait
        at once; a job finished by another process is seen at the next look
        at the store, every ``poll_interval`` seconds. There is no timeout
        parameter: as everywhere in trio, put the call under
        ``trio.move_on_after`` or ``trio.fail_after``. Raises
        :class:`JobNotFound` if there is no such job.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
            >>> @queue.task()
            ... async def add(a: int, b: int) -> int:
            ...     await trio.sleep(2)
            ...     return a + b
            >>> async def main():
            ...     async with trio.open_nursery() as nursery:
            ...         await nursery.start(jobkit.run_worker, queue)
            ...         job = await queue.wait(await add.enqueue(a=2, b=3))
            ...         nursery.cancel_scope.cancel()
            ...     return job.state.value, job.result, trio.current_time()
            >>> jobkit.testing.run_virtual(main)
            ('succeeded', 5, 2.0)
        """
        interval = check_seconds(poll_interval, "poll_interval", positive=True)
        store = self.store
        while True:
            # Watch before looking, so a change made while we look still wakes us.
            event = self._wakeups.jobs.watch(job_id)
            try:
                job = await store.get(job_id)
                if job.state in _job.TERMINAL_STATES:
                    return job
                with trio.move_on_after(interval):
                    await event.wait()
            finally:
                self._wakeups.jobs.unwatch(job_id, event)

    async def purge(self, older_than: float | timedelta) -> int:
        """Delete finished jobs last changed over ``older_than`` ago; return how many.

        Finished means SUCCEEDED or CANCELLED; their events go with them. Dead
        letters stay until a person requeues or discards them, and nothing
        QUEUED or RUNNING is touched. Without purging, a store keeps every
        job it ever ran; run this now and then, from a periodic task or
        ``jobkit purge``, with an age longer than anyone will look back.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> from datetime import timedelta
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
            >>> @queue.task()
            ... async def ping() -> None: ...
            >>> async def main():
            ...     old = await ping.enqueue()
            ...     await queue.cancel(old)
            ...     await trio.sleep(8 * 86400)
            ...     await queue.cancel(await ping.enqueue())  # cancelled today
            ...     deleted = await queue.purge(timedelta(days=7))
            ...     return deleted, [job.id for job in await queue.list()]
            >>> jobkit.testing.run_virtual(main)
            (1, [2])
        """
        age = check_seconds(older_than, "older_than")
        deleted = await self.store.purge(before=self.clock() - age)
        logger.info(
            "purged %d finished %s last changed over %gs ago",
            deleted,
            "job" if deleted == 1 else "jobs",
            age,
            extra={"purged": deleted},
        )
        return deleted

    async def counts(self) -> QueueCounts:
        """Return how many jobs each queue holds in each state.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     await noop.enqueue()
            ...     return (await queue.counts()).get("default", jobkit.JobState.QUEUED)
            >>> trio.run(main)
            1
        """
        return await self.store.counts()

    async def stats(self) -> QueueCounts:
        """Return :meth:`counts`; deprecated, and removed in the next release.

        Example::

            >>> import trio, warnings, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> with warnings.catch_warnings(record=True) as caught:
            ...     warnings.simplefilter("always")
            ...     _ = trio.run(queue.stats)
            >>> str(caught[0].message)
            'Queue.stats() is deprecated, use Queue.counts()'
        """
        warnings.warn(
            "Queue.stats() is deprecated, use Queue.counts()",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.counts()

    async def metrics(self) -> MetricsSnapshot:
        """Return this queue's counters, durations and depth, read from its event log.

        Repeated calls read only the events recorded since the last one. See
        :class:`MetricsSnapshot` for what it holds.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     await noop.enqueue()
            ...     return (await queue.metrics()).total("enqueued", task="noop")
            >>> trio.run(main)
            1
        """
        return await collect_metrics(self)

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        """Return ``(sequence, event)`` pairs recorded after ``after``, oldest first.

        Pass the last sequence seen to follow the log.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     job_id = await noop.enqueue()
            ...     return [e.kind.value for _, e in await queue.events(job_id=job_id)]
            >>> trio.run(main)
            ['enqueued']
        """
        return await self.store.events(job_id=job_id, after=after, limit=limit)

    # -- schedules ------------------------------------------------------------------

    def _schedule_store(self) -> ScheduleStore:
        store = self.store
        if not isinstance(store, ScheduleStore):
            raise TypeError(
                f"{store!r} does not keep schedules (it lacks the "
                "jobkit.ScheduleStore methods); MemoryStore and SQLiteStore do"
            )
        return store

    async def schedule(
        self,
        task: Task[Any, Any] | str,
        payload: Mapping[str, JSON] | None = None,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: str | tzinfo | None = None,
        name: str | None = None,
        misfire: MissedTickBehavior = MissedTickBehavior.SKIP,
        start: float | datetime | None = None,
        max_burst: int = DEFAULT_MAX_BURST,
        priority: int | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
    ) -> Schedule:
        """Store a schedule that enqueues ``task`` once per slot; return it.

        Give ``every`` (seconds or a timedelta) or ``cron`` (an expression
        such as ``"*/5 * * * *"``, read in ``tz``, UTC by default; needs
        ``jobkit[cron]``). The first slot is ``start`` (default: now) for
        ``every``, the first cron time from then on for ``cron``. Running
        workers (:func:`run_worker`) enqueue each slot exactly once, as a
        job with ``payload`` (checked against the handler now) and the unique
        key ``schedule:<name>:<slot>``; ``priority``, ``queue`` and
        ``max_attempts`` default to the task's.

        ``misfire`` decides what happens to slots missed while no worker
        ran: SKIP (the default) runs once for the latest, BURST runs each
        (at most ``max_burst``, the latest), DELAY runs once now and
        re-bases (see :meth:`jobkit.Schedule.due`).

        Schedules live in the store, so they survive restarts: declaring
        one again with the same ``name`` (default: the task's name) and the
        same definition keeps its next slot; a changed definition replaces
        it, starting afresh.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 0.0)
            >>> @queue.task()
            ... async def purge(days: int) -> None: ...
            >>> async def main():
            ...     s = await queue.schedule(purge, {"days": 30}, every=3600)
            ...     return s.name, s.spec, s.next_slot, s.misfire.value
            >>> trio.run(main)
            ('purge', 'every 3600s', 0.0, 'skip')
        """
        store = self._schedule_store()
        target = self._task_named(task)
        now = self.clock()
        # Resolved as an enqueue would be: the payload checked against the
        # handler, the task's defaults filled in.
        spec = self._resolve(
            PreparedJob(
                target.name,
                payload,
                priority=priority,
                queue=queue,
                max_attempts=max_attempts,
            ),
            now,
        )
        schedule = Schedule.create(
            target.name if name is None else name,
            target.name,
            every=every,
            cron=cron,
            tz=tz,
            payload=spec.payload,
            queue=spec.queue,
            priority=spec.priority,
            max_attempts=spec.max_attempts or 1,  # resolved: never None
            misfire=misfire,
            max_burst=max_burst,
            start=None if start is None else instant(start, "start", datetime_ok=True),
            now=now,
        )
        stored = await store.put_schedule(schedule)
        self._wakeups.schedules.notify(stored.name)
        return stored

    async def schedules(self) -> builtins.list[Schedule]:
        """Return the stored schedules, by name, with their next and last slots.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 0.0)
            >>> @queue.task()
            ... async def ping() -> None: ...
            >>> async def main():
            ...     await queue.schedule(ping, every=60, name="ping-each-minute")
            ...     return [s.name for s in await queue.schedules()]
            >>> trio.run(main)
            ['ping-each-minute']
        """
        return await self._schedule_store().schedules()

    async def unschedule(self, name: str) -> bool:
        """Delete the schedule ``name``; return whether it existed.

        Jobs it enqueued already stay queued.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> trio.run(queue.unschedule, "nightly")
            False
        """
        removed = await self._schedule_store().remove_schedule(name)
        self._wakeups.schedules.notify(name)
        return removed


def _state(state: JobState | str | None) -> JobState | None:
    if state is None or isinstance(state, JobState):
        return state
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(repr(s.value) for s in JobState)
        raise ValueError(
            f"unknown job state {state!r}; expected one of {names}"
        ) from None
