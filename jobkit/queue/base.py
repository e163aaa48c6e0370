"""The half of :class:`~jobkit.Queue` that tasks need: registering and enqueueing.

:class:`QueueBase` holds what every queue operation builds on (the store, the
clock, the registered tasks and the wake-ups of this process) and puts jobs
in; :class:`~jobkit.Queue` (``facade.py``) adds looking at them, operating on
them, and schedules. Users see only ``Queue``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar, overload

from .._checks import seconds as check_seconds
from .._checks import stored_int
from ..core import job as _job
from ..core.job import JSON, NewJob, check_json
from ..core.retry import RetryPolicy
from ..observe.logs import log_job_event, logger
from ..store.protocol import Store
from .prepared import EnqueueOptions, PreparedJob, check_name, payload_dict
from .task import Task
from .wakeup import WakeUps

__all__ = ["Clock", "QueueBase"]

P = ParamSpec("P")
R = TypeVar("R")

Clock = Callable[[], float]

_DEFAULT_RETRY = RetryPolicy.default()


class QueueBase:
    """A queue's store, clock, tasks and wake-ups, and how jobs get in.

    Not used directly: see :class:`~jobkit.Queue`, which documents the
    arguments.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Clock = time.time,
        default_retry: RetryPolicy | None = None,
    ) -> None:
        if not callable(clock):
            raise TypeError(
                f"clock must be a callable returning seconds, got {clock!r}"
            )
        if default_retry is not None and not isinstance(default_retry, RetryPolicy):
            raise TypeError(
                f"default_retry must be a RetryPolicy, got {default_retry!r}"
            )
        self._store: Store | None = None
        if store is not None:
            self.store = store
        self.clock: Clock = clock
        """Returns "now" in the store's time base."""
        self.default_retry: RetryPolicy = default_retry or _DEFAULT_RETRY
        """The retry policy of tasks that have none of their own."""
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._tasks_view = MappingProxyType(self._tasks)
        self._wakeups = WakeUps()

    def __repr__(self) -> str:
        return f"<jobkit.Queue with {len(self._tasks)} tasks on {self._store!r}>"

    # -- configuration -----------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store that keeps the jobs; settable, e.g. from a ``--db`` option."""
        if self._store is None:
            raise RuntimeError(
                "this Queue has no store yet: pass one, as in "
                "Queue(jobkit.SQLiteStore('jobs.db')), or set queue.store = ..."
            )
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        if not isinstance(store, Store):
            raise TypeError(
                f"store must implement jobkit.Store (e.g. MemoryStore, "
                f"SQLiteStore), got {store!r}"
            )
        self._store = store

    @property
    def has_store(self) -> bool:
        """True once a store has been given."""
        return self._store is not None

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """The registered tasks by name (read-only)."""
        return self._tasks_view

    def subscribe(
        self,
        *,
        ready: Callable[[str], None] | None = None,
        schedules: Callable[[str], None] | None = None,
    ) -> Callable[[], None]:
        """Be told of changes made through this queue, in this process.

        ``ready(queue_name)`` is called when a job may have become claimable
        on that queue (an enqueue, a retry, a schedule firing: see
        :meth:`notify`), ``schedules(name)`` when a schedule was added or
        removed. The callbacks run synchronously and must not block. Returns
        the function that unsubscribes. Workers use this to wake at once
        instead of at their next poll; other processes are not told.

        Example::

            >>> import jobkit, trio
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task(queue="mail")
            ... async def send() -> None: ...
            >>> heard = []
            >>> unsubscribe = queue.subscribe(ready=heard.append)
            >>> _ = trio.run(send.enqueue)
            >>> unsubscribe(); _ = trio.run(send.enqueue)
            >>> heard
            ['mail']
        """
        return self._wakeups.subscribe(ready, schedules)

    def notify(self, *, job_id: int | None = None, queue: str | None = None) -> None:
        """Wake this process's waiters: on job ``job_id``, and on queue ``queue``.

        A worker calls this after it settled a job (waking :meth:`wait` on
        it) or made one claimable again (waking idle workers subscribed
        with ``ready``).

        Example::

            >>> import jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> heard = []
            >>> _ = queue.subscribe(ready=heard.append)
            >>> queue.notify(job_id=1, queue="mail")
            >>> heard
            ['mail']
        """
        if job_id is not None:
            self._wakeups.jobs.notify(job_id)
        if queue is not None:
            self._wakeups.ready.notify(queue)

    @overload
    def task(self, name: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        queue: str = "default",
        priority: int = 0,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        name: str | Callable[P, R] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        queue: str = "default",
        priority: int = 0,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task; use as ``@queue.task()`` or ``@queue.task``.

        ``name`` defaults to the function's ``__name__``; it is what the
        store records, so keep it stable across deployments. ``retry`` is
        the task's :class:`RetryPolicy` (its ``max_attempts`` is stored on
        each job), ``timeout`` limits each attempt (a timeout is a failed
        attempt; a plain function's thread runs on until it returns, and
        the attempt fails then), ``queue`` and ``priority`` are defaults
        for its jobs.
        Registering a second task under the same name raises ``ValueError``.

        Example::

            >>> import jobkit
            >>> queue = jobkit.Queue()
            >>> @queue.task("emails.welcome", timeout=30, queue="emails")
            ... async def welcome(user_id: int) -> None: ...
            >>> welcome.name, welcome.timeout, sorted(queue.tasks)
            ('emails.welcome', 30.0, ['emails.welcome'])
        """
        if callable(name):
            return self.task()(name)
        if name is not None:
            check_name(name, "task name")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
        seconds = (
            None if timeout is None else check_seconds(timeout, "timeout", finite=True)
        )
        if seconds == 0:
            raise ValueError("timeout must be > 0 seconds (or None for no limit)")
        check_name(queue, "queue")
        stored_int(priority, "priority")

        def register(fn: Callable[P, R]) -> Task[P, R]:
            if not callable(fn):
                raise TypeError(f"@queue.task decorates a function, got {fn!r}")
            task_name = name or getattr(fn, "__name__", None) or repr(fn)
            if task_name in self._tasks:
                raise ValueError(
                    f"a task named {task_name!r} is already registered on this "
                    "queue; pass name=... to register it under another name"
                )
            task = Task(
                self,
                fn,
                name=task_name,
                retry=retry,
                timeout=seconds,
                queue=queue,
                priority=priority,
            )
            self._tasks[task_name] = task
            return task

        return register

    def _task_named(self, task: Task[Any, Any] | str) -> Task[Any, Any]:
        if isinstance(task, Task):
            if self._tasks.get(task.name) is not task:
                raise ValueError(
                    f"task {task.name!r} is registered on another Queue, not this one"
                )
            return task
        if not isinstance(task, str):
            raise TypeError(f"task must be a Task or a task name, got {task!r}")
        try:
            return self._tasks[task]
        except KeyError:
            known = ", ".join(repr(n) for n in sorted(self._tasks)) or "none"
            raise ValueError(
                f"unknown task {task!r}; tasks registered on this queue: {known}"
            ) from None

    # -- producing ---------------------------------------------------------------

    async def enqueue(
        self,
        task: Task[Any, Any] | str,
        payload: Mapping[str, JSON] | None = None,
        *,
        delay: float | timedelta | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Store a job for ``task`` (a :class:`Task` or its name) and return its id.

        ``payload`` is the handler's keyword arguments and must be JSON.
        ``delay`` (seconds or a timedelta, >= 0) or ``run_at`` (a time on
        the queue's clock or an aware datetime; not both) postpone it.
        Options left ``None`` take the task's defaults, and
        ``max_attempts`` the task's retry policy's. When ``unique_key`` is
        held by a job that is still queued or running, nothing is stored and
        that job's id is returned, so enqueueing the same logical work twice
        is harmless.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 0.0)
            >>> @queue.task()
            ... async def bill(account: str) -> None: ...
            >>> async def main():
            ...     a = await queue.enqueue("bill", {"account": "x"}, unique_key="x")
            ...     b = await queue.enqueue(bill, {"account": "x"}, unique_key="x")
            ...     return a == b
            >>> trio.run(main)
            True
            >>> trio.run(queue.enqueue, "bil")
            Traceback (most recent call last):
            ...
            ValueError: unknown task 'bil'; tasks registered on this queue: 'bill'
        """
        target = self._task_named(task)
        if (
            delay is None
            and run_at is None
            and priority is None
            and queue is None
            and unique_key is None
            and max_attempts is None
        ):
            # No options: the checks PreparedJob makes of the payload, then
            # the task's defaults, without building the records in between.
            fresh = payload_dict(payload)
            check_json(fresh)
            target._check_payload(fresh)
            return await self._enqueue_payload(target, fresh)
        options = EnqueueOptions(
            delay, run_at, priority, queue, unique_key, max_attempts
        )
        prepared = options.prepare(target.name, payload)
        [job_id] = await self.enqueue_many([prepared])
        return job_id

    async def enqueue_many(self, jobs: Iterable[PreparedJob]) -> list[int]:
        """Store several jobs in one atomic store call; return their ids in order.

        Every job is checked before any is stored, so a bad one loses
        nothing and stores nothing.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def resize(path: str, width: int) -> None: ...
            >>> batch = [resize.prepare(path=f"{i}.png", width=64) for i in range(3)]
            >>> trio.run(queue.enqueue_many, batch)
            [1, 2, 3]
        """
        prepared = list(jobs)
        for item in prepared:
            if not isinstance(item, PreparedJob):
                raise TypeError(
                    "enqueue_many() takes PreparedJob records (see Task.prepare), "
                    f"got {item!r}"
                )
        store = self.store
        now = self.clock()
        specs = [self._resolve(item, now) for item in prepared]
        return await self._store_jobs(store, specs, now)

    async def _enqueue_payload(
        self, task: Task[Any, Any], payload: dict[str, JSON]
    ) -> int:
        """Enqueue one job of ``task`` with its defaults; ``payload`` is checked."""
        store = self.store
        now = self.clock()
        spec = NewJob(
            task._name,
            payload,
            task._queue,
            task._priority,
            None,
            task.retry.max_attempts,
        )
        [job_id] = await self._store_jobs(store, [spec], now)
        return job_id

    async def _store_jobs(
        self, store: Store, specs: list[NewJob], now: float
    ) -> list[int]:
        ids = await store.enqueue(specs, now=now)
        wakeups = self._wakeups
        wakeups.enqueued = ids
        try:
            if len(specs) == 1:
                wakeups.ready.notify(specs[0].queue)
            else:
                for name in sorted({spec.queue for spec in specs}):
                    wakeups.ready.notify(name)
        finally:
            wakeups.enqueued = None
        if logger.isEnabledFor(logging.INFO):
            await self._log_enqueued(specs, ids, now)
        return ids

    async def _log_enqueued(
        self, specs: list[NewJob], ids: list[int], now: float
    ) -> None:
        seen: set[int] = set()
        for spec, job_id in zip(specs, ids, strict=True):
            if job_id in seen:
                continue
            seen.add(job_id)
            # A held unique key returns the holder's id; only a job created by
            # this call has this call's creation time (a clock that stands
            # still, as in some virtual-time tests, cannot tell them apart).
            if spec.unique_key is not None:
                holder = await self.store.get(job_id)
                if (
                    holder.created_at != now
                    or holder.attempts
                    or holder.payload != (spec.payload)
                ):
                    continue
            job, event = _job.create(spec, job_id=job_id, now=now)
            log_job_event(event, job)

    def _resolve(self, item: PreparedJob, now: float) -> NewJob:
        task = self._tasks.get(item.task) or self._task_named(item.task)
        task._check_payload(item.payload)
        if item.delay is not None:
            run_at: float | None = now + item.delay
        else:
            run_at = item.run_at
        return NewJob(
            task=task.name,
            payload=item.payload,
            queue=task.queue if item.queue is None else item.queue,
            priority=task.priority if item.priority is None else item.priority,
            run_at=run_at,
            max_attempts=(
                task.retry.max_attempts
                if item.max_attempts is None
                else item.max_attempts
            ),
            unique_key=item.unique_key,
        )
