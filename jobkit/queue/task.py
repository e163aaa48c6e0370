"""Tasks: the job handlers registered on a :class:`Queue`, and their payloads.

:meth:`Queue.task` wraps a function in a :class:`Task`; its arguments become
the JSON payload of a job, by parameter name, checked against the handler's
signature when the job is enqueued (here) and again when it runs (the
worker). :meth:`Task.options` fixes enqueue options in a :class:`TaskOptions`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import attrs

from ..core.job import JSON, check_json
from ..core.retry import RetryPolicy
from .prepared import EnqueueOptions, PreparedJob

if TYPE_CHECKING:
    from .base import QueueBase

__all__ = ["Task", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")


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
        owner: QueueBase,
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

    def _check_payload(self, payload: Mapping[str, JSON]) -> None:
        """Raise ``TypeError`` if the handler cannot take ``payload`` as keywords."""
        if self._signature is not None and (
            self._shape is None or not self._shape.accepts(payload)
        ):
            _bind(self._signature, self._name, (), payload)

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
        return await self._owner._enqueue_payload(
            self, self.payload_of(*args, **kwargs)
        )

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
        opts = EnqueueOptions(delay, run_at, priority, queue, unique_key, max_attempts)
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

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
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
