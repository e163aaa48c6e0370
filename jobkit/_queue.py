"""The queue facade: named tasks, enqueueing, and the operations a person needs.

A :class:`Queue` ties three things together: a :class:`~jobkit.Store` that
keeps the jobs, a clock that says what "now" is in the store's time base, and
a registry of :class:`Task` handlers by name. Producers call
:meth:`Task.enqueue` or :meth:`Queue.enqueue`; workers
(:func:`jobkit.run_worker`) look handlers up by the name stored on each job.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

import attrs
import trio

from . import _job
from ._checks import stored_int
from ._duration import seconds
from ._interval import MissedTickBehavior
from ._job import JSON, Event, EventKind, Job, JobState, NewJob, check_json
from ._logging import log_job_event, logger
from ._metrics import MetricsSnapshot, collect_metrics
from ._retry import RetryPolicy
from ._schedule import DEFAULT_MAX_BURST, Schedule
from ._store import QueueCounts, ScheduleStore, Store

__all__ = ["PreparedJob", "Queue", "Task", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")

Clock = Callable[[], float]


class _Transition(Protocol):
    """A store method that moves one job on, such as ``Store.cancel``."""

    def __call__(self, job_id: int, *, now: float) -> Awaitable[Job]: ...


# -- argument checks -------------------------------------------------------------


def _duration(value: float | timedelta, name: str) -> float:
    return seconds(value, name, finite=True, wording="duration")


def _instant(value: float | datetime, name: str = "run_at") -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{name} must be timezone-aware (a naive datetime is ambiguous), "
                f"got {value!r}"
            )
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite time, got {value!r}")
        return float(value)
    raise TypeError(
        f"{name} must be a time in the queue clock's seconds or an aware "
        f"datetime, got {value!r}"
    )


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


# -- enqueue requests ---------------------------------------------------------------


@attrs.frozen(init=False)
class PreparedJob:
    """A job ready to be enqueued: a task name, its payload and its options.

    :meth:`Queue.enqueue_many` takes a list of these and stores them in one
    atomic call. Build them with :meth:`Task.prepare` (which checks the
    arguments against the handler's signature) or directly by task name.
    Options left as ``None`` take the task's defaults; ``delay`` counts from
    the moment the job is enqueued, not from when it was prepared.

    Example::

        >>> import jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore())
        >>> @queue.task()
        ... async def send(to: str) -> None: ...
        >>> job = send.prepare(to="ada@example.com")
        >>> job.task, job.payload
        ('send', {'to': 'ada@example.com'})
        >>> jobkit.PreparedJob("send", {"to": "bob@example.com"}, delay=60).delay
        60.0
    """

    task: str = attrs.field()
    payload: dict[str, JSON] = attrs.field(factory=dict)
    delay: float | None = attrs.field(default=None)
    run_at: float | None = attrs.field(default=None)
    priority: int | None = attrs.field(default=None)
    queue: str | None = attrs.field(default=None)
    unique_key: str | None = attrs.field(default=None)
    max_attempts: int | None = attrs.field(default=None)

    def __init__(
        self,
        task: str,
        payload: Mapping[str, JSON] | None = None,
        *,
        delay: float | timedelta | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if payload is None:
            payload = {}
        elif not isinstance(payload, Mapping):
            raise TypeError(
                "payload must be a mapping of keyword arguments for the handler, "
                f"got {type(payload).__name__}"
            )
        payload = dict(payload)
        check_json(payload)
        if delay is not None and run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        self.__attrs_init__(
            task=_name(task, "task name"),
            payload=payload,
            delay=None if delay is None else _duration(delay, "delay"),
            run_at=None if run_at is None else _instant(run_at),
            priority=None if priority is None else stored_int(priority, "priority"),
            queue=None if queue is None else _name(queue, "queue"),
            unique_key=(
                None if unique_key is None else _name(unique_key, "unique_key")
            ),
            max_attempts=(
                None
                if max_attempts is None
                else stored_int(max_attempts, "max_attempts", minimum=1)
            ),
        )

    @classmethod
    def _checked(cls, task: str, payload: dict[str, JSON]) -> PreparedJob:
        # For Task.prepare, which has just built and checked a fresh payload:
        # checking it again is a third of the cost of preparing a job.
        job = cls.__new__(cls)
        job.__attrs_init__(task=task, payload=payload)
        return job


@attrs.frozen
class _Options:
    delay: float | timedelta | None = None
    run_at: float | datetime | None = None
    priority: int | None = None
    queue: str | None = None
    unique_key: str | None = None
    max_attempts: int | None = None

    def prepare(self, task: str, payload: Mapping[str, JSON] | None) -> PreparedJob:
        return PreparedJob(
            task,
            payload,
            delay=self.delay,
            run_at=self.run_at,
            priority=self.priority,
            queue=self.queue,
            unique_key=self.unique_key,
            max_attempts=self.max_attempts,
        )


# -- tasks -----------------------------------------------------------------------


class Task(Generic[P, R]):
    """A named job handler registered on a :class:`Queue`.

    Not constructed directly: decorate a function with :meth:`Queue.task`.
    Calling the task calls the function, so it stays testable as plain
    code; :meth:`enqueue` stores a job that a worker will run later as
    ``fn(**payload)``. Async handlers run on trio, plain functions in a
    worker thread; a thread cannot be interrupted, so its job is not run
    again, nor released at shutdown, until the thread returns, even past
    its timeout (see :func:`run_worker`).

    Arguments are stored as JSON by parameter name, so enqueue takes the
    same arguments the function does and checks them against its signature
    at once: a missing or unknown argument, or one that is not JSON, is
    refused before anything is stored.

    Example::

        >>> import trio, jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore())
        >>> @queue.task(retry=jobkit.RetryPolicy(3, jobkit.Backoff.constant(5)))
        ... async def send_welcome(user_id: int) -> str:
        ...     return f"sent to {user_id}"
        >>> send_welcome.name, send_welcome.retry.max_attempts
        ('send_welcome', 3)
        >>> trio.run(send_welcome, 7)          # a direct call runs the function
        'sent to 7'
        >>> async def produce():
        ...     job_id = await send_welcome.enqueue(user_id=7)
        ...     return (await queue.get(job_id)).payload
        >>> trio.run(produce)
        {'user_id': 7}
    """

    def __init__(
        self,
        owner: Queue,
        fn: Callable[P, R],
        *,
        name: str,
        retry: RetryPolicy | None,
        timeout: float | None,
        queue: str,
        priority: int,
    ) -> None:
        self._owner = owner
        self._fn = fn
        self._name = name
        self._retry = retry
        self._timeout = timeout
        self._queue = queue
        self._priority = priority
        self._is_async = inspect.iscoroutinefunction(fn)
        self._signature = _handler_signature(fn, name)
        self._shape = _Shape.of(self._signature)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        kind = "async" if self._is_async else "sync"
        return f"<jobkit.Task {self._name!r} ({kind}, queue {self._queue!r})>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    @property
    def name(self) -> str:
        """The name stored on each job; workers find the handler by it."""
        return self._name

    @property
    def fn(self) -> Callable[P, R]:
        """The decorated function."""
        return self._fn

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` handler (run on trio), False for a thread one."""
        return self._is_async

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy in force: the task's own, else the queue's default."""
        return self._retry or self._owner.default_retry

    @property
    def timeout(self) -> float | None:
        """Seconds an attempt may run before it fails with ``trio.TooSlowError``."""
        return self._timeout

    @property
    def queue(self) -> str:
        """The queue name jobs of this task go to unless told otherwise."""
        return self._queue

    @property
    def priority(self) -> int:
        """The priority jobs of this task get unless told otherwise."""
        return self._priority

    def payload_of(self, *args: Any, **kwargs: Any) -> dict[str, JSON]:
        """Return the JSON payload for a call with these arguments.

        Positional arguments are stored under their parameter names.
        Raises ``TypeError`` when the handler would refuse the arguments
        or a value is not JSON.

        Example::

            >>> import jobkit
            >>> queue = jobkit.Queue()
            >>> @queue.task()
            ... def resize(path: str, width: int = 800) -> None: ...
            >>> resize.payload_of("a.png", width=64)
            {'path': 'a.png', 'width': 64}
        """
        payload = None
        if not args and self._shape is not None:
            payload = self._shape.bind(kwargs)
        if payload is None:
            payload = _bind(self._signature, self._name, args, kwargs)
        check_json(payload)
        return payload

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedJob:
        """Return a :class:`PreparedJob` for :meth:`Queue.enqueue_many`.

        Example::

            >>> import jobkit
            >>> queue = jobkit.Queue()
            >>> @queue.task()
            ... async def ping(host: str) -> None: ...
            >>> ping.prepare(host="db").payload
            {'host': 'db'}
        """
        return PreparedJob._checked(self._name, self.payload_of(*args, **kwargs))

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Store a job that runs this task with these arguments; return its id.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def ping(host: str) -> None: ...
            >>> trio.run(lambda: ping.enqueue(host="db"))
            1
        """
        [job_id] = await self._owner.enqueue_many([self.prepare(*args, **kwargs)])
        return job_id

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
    ) -> TaskOptions[P, R]:
        """Return this task with enqueue options set, for one call or many.

        ``delay`` (seconds or a timedelta) and ``run_at`` (a time on the
        queue's clock, or an aware datetime) postpone the job; ``priority``,
        ``queue`` and ``max_attempts`` override the task's defaults;
        ``unique_key`` makes the enqueue a no-op that returns the existing
        job's id while a job with the same key is queued or running.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 100.0)
            >>> @queue.task()
            ... async def report(day: str) -> None: ...
            >>> async def main():
            ...     later = report.options(delay=60, unique_key="report:2024-05-01")
            ...     first = await later.enqueue(day="2024-05-01")
            ...     again = await later.enqueue(day="2024-05-01")
            ...     return first == again, (await queue.get(first)).run_at
            >>> trio.run(main)
            (True, 160.0)
        """
        opts = _Options(delay, run_at, priority, queue, unique_key, max_attempts)
        # Build one request now so that bad options fail here, not at enqueue.
        opts.prepare(self._name, None)
        return TaskOptions(self, opts)


class TaskOptions(Generic[P, R]):
    """A :class:`Task` with enqueue options fixed; made by :meth:`Task.options`.

    Example::

        >>> import trio, jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 0.0)
        >>> @queue.task()
        ... async def ping(host: str) -> None: ...
        >>> urgent = ping.options(priority=10)
        >>> async def main():
        ...     job_id = await urgent.enqueue(host="db")
        ...     return (await queue.get(job_id)).priority
        >>> trio.run(main)
        10
    """

    def __init__(self, task: Task[P, R], options: _Options) -> None:
        self._task = task
        self._options = options

    def __repr__(self) -> str:
        return f"<jobkit.TaskOptions of {self._task.name!r}: {self._options!r}>"

    @property
    def task(self) -> Task[P, R]:
        """The task these options apply to."""
        return self._task

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedJob:
        """Return a :class:`PreparedJob` with these options, for ``enqueue_many``.

        Example::

            >>> import jobkit
            >>> queue = jobkit.Queue()
            >>> @queue.task()
            ... async def ping(host: str) -> None: ...
            >>> ping.options(delay=5).prepare(host="db").delay
            5.0
        """
        payload = self._task.payload_of(*args, **kwargs)
        return self._options.prepare(self._task.name, payload)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Store a job with these options and arguments; return its id.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def ping(host: str) -> None: ...
            >>> trio.run(lambda: ping.options(queue="net").enqueue(host="db"))
            1
        """
        [job_id] = await self._task._owner.enqueue_many([self.prepare(*args, **kwargs)])
        return job_id


def _handler_signature(fn: Callable[..., Any], name: str) -> inspect.Signature | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C function: arguments are checked when it runs
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
            raise ValueError(
                f"task {name!r}: handlers are called with keyword arguments "
                f"(fn(**payload)), so parameter {param.name!r} cannot be "
                f"{param.kind.description}"
            )
    return signature


def _bind(
    signature: inspect.Signature | None,
    name: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> dict[str, JSON]:
    if signature is None:
        if args:
            raise TypeError(
                f"task {name!r} takes keyword arguments only (its signature is "
                f"unknown), got {len(args)} positional"
            )
        return dict(kwargs)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"task {name!r}: {exc}") from None
    payload: dict[str, JSON] = {}
    for key, value in bound.arguments.items():
        if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            payload.update(value)
        else:
            payload[key] = value
    return payload


@attrs.frozen
class _Shape:
    """What keyword arguments a handler accepts, for checking them without binding.

    ``Signature.bind`` costs several microseconds per call, most of a
    prepared job's cost in a big ``enqueue_many``; two set comparisons give
    the same answer for handlers without ``**kwargs``. Anything they cannot
    settle goes to ``_bind``, which also words the error.
    """

    order: tuple[str, ...]
    names: frozenset[str]
    required: frozenset[str]

    @classmethod
    def of(cls, signature: inspect.Signature | None) -> _Shape | None:
        if signature is None:
            return None
        params = signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return cls(
            tuple(p.name for p in params),
            frozenset(p.name for p in params),
            frozenset(p.name for p in params if p.default is inspect.Parameter.empty),
        )

    def accepts(self, kwargs: Mapping[str, Any]) -> bool:
        """Return whether ``_bind`` would surely accept ``kwargs``."""
        keys = kwargs.keys()
        return keys <= self.names and self.required <= keys

    def bind(self, kwargs: Mapping[str, Any]) -> dict[str, JSON] | None:
        """Return ``kwargs`` in parameter order, as ``_bind`` would, or None."""
        keys = kwargs.keys()
        if not (keys <= self.names and self.required <= keys):
            return None
        if len(keys) == len(self.order):
            return {key: kwargs[key] for key in self.order}
        return {key: kwargs[key] for key in self.order if key in kwargs}


# -- the queue -------------------------------------------------------------------


class _Listeners:
    """Callbacks told about every local enqueue, so idle workers wake at once."""

    def __init__(self) -> None:
        self._callbacks: set[Callable[[str], None]] = set()

    def add(self, callback: Callable[[str], None]) -> None:
        self._callbacks.add(callback)

    def discard(self, callback: Callable[[str], None]) -> None:
        self._callbacks.discard(callback)

    def notify(self, queue: str) -> None:
        for callback in list(self._callbacks):
            callback(queue)


class _Watchers:
    """Tasks in :meth:`Queue.wait` by job id, woken when this process changes one."""

    def __init__(self) -> None:
        self._events: dict[int, set[trio.Event]] = {}

    def watch(self, job_id: int) -> trio.Event:
        event = trio.Event()
        self._events.setdefault(job_id, set()).add(event)
        return event

    def unwatch(self, job_id: int, event: trio.Event) -> None:
        events = self._events.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[job_id]

    def notify(self, job_id: int) -> None:
        for event in self._events.pop(job_id, ()):
            event.set()


_DEFAULT_RETRY = RetryPolicy.default()


class Queue:
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
        self._listeners = _Listeners()
        self._schedule_listeners = _Listeners()
        self._watchers = _Watchers()

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
        return MappingProxyType(self._tasks)

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
            _name(name, "task name")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
        seconds = None if timeout is None else _duration(timeout, "timeout")
        if seconds == 0:
            raise ValueError("timeout must be > 0 seconds (or None for no limit)")
        _name(queue, "queue")
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
        name = self._task_named(task).name
        prepared = PreparedJob(
            name,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            unique_key=unique_key,
            max_attempts=max_attempts,
        )
        [job_id] = await self.enqueue_many([prepared])
        return job_id

    async def enqueue_many(self, jobs: Iterable[PreparedJob]) -> builtins.list[int]:
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
        prepared = builtins.list(jobs)
        for item in prepared:
            if not isinstance(item, PreparedJob):
                raise TypeError(
                    "enqueue_many() takes PreparedJob records (see Task.prepare), "
                    f"got {item!r}"
                )
        store = self.store
        now = self.clock()
        specs = [self._resolve(item, now) for item in prepared]
        ids = await store.enqueue(specs, now=now)
        for name in sorted({spec.queue for spec in specs}):
            self._listeners.notify(name)
        if logger.isEnabledFor(logging.INFO):
            await self._log_enqueued(specs, ids, now)
        return ids

    async def _log_enqueued(
        self, specs: builtins.list[NewJob], ids: builtins.list[int], now: float
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
        if task._signature is not None and (
            task._shape is None or not task._shape.accepts(item.payload)
        ):
            _bind(task._signature, task.name, (), item.payload)
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
        self._listeners.notify(job.queue)
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
        self._watchers.notify(job.id)
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
        interval = seconds(poll_interval, "poll_interval", positive=True)
        store = self.store
        while True:
            # Watch before looking, so a change made while we look still wakes us.
            event = self._watchers.watch(job_id)
            try:
                job = await store.get(job_id)
                if job.state in _job.TERMINAL_STATES:
                    return job
                with trio.move_on_after(interval):
                    await event.wait()
            finally:
                self._watchers.unwatch(job_id, event)

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
        age = seconds(older_than, "older_than", wording="duration")
        deleted = await self.store.purge(before=self.clock() - age)
        logger.info(
            "purged %d finished %s last changed over %gs ago",
            deleted,
            "job" if deleted == 1 else "jobs",
            age,
            extra={"purged": deleted},
        )
        return deleted

    async def stats(self) -> QueueCounts:
        """Return how many jobs each queue holds in each state.

        Example::

            >>> import trio, jobkit
            >>> queue = jobkit.Queue(jobkit.MemoryStore())
            >>> @queue.task()
            ... async def noop() -> None: ...
            >>> async def main():
            ...     await noop.enqueue()
            ...     return (await queue.stats()).get("default", jobkit.JobState.QUEUED)
            >>> trio.run(main)
            1
        """
        return await self.store.counts()

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
            start=None if start is None else _instant(start, "start"),
            now=now,
        )
        stored = await store.put_schedule(schedule)
        self._schedule_listeners.notify(stored.name)
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
        self._schedule_listeners.notify(name)
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
