"""What supervisors and join sets share: task handles, results, and the task record.

A spawned task is tracked by a private :class:`_Task` record that its owner (a
:class:`~jobkit.Supervisor` or a :class:`~jobkit.JoinSet`) fills in when the
task ends. The public :class:`TaskHandle` is a thin view on that record, and
:class:`TaskResult` is the frozen outcome that ``join_next`` hands out.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

import attrs
import trio

__all__ = ["TaskCancelled", "TaskHandle", "TaskResult"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

logger = logging.getLogger("jobkit")

# Task states. Plain ints: they are compared on every task's completion.
RUNNING = 0  # spawned and not finished (it may still be waiting for a slot)
SUCCEEDED = 1
FAILED = 2
CANCELLED = 3

_STATE_NAMES = {
    RUNNING: "running",
    SUCCEEDED: "succeeded",
    FAILED: "failed",
    CANCELLED: "cancelled",
}


def first_line(error: str | None) -> str | None:
    """Return the summary line of a stored error (its traceback follows it).

    Example::

        >>> from jobkit.runtime.tasks import first_line
        >>> first_line(chr(10).join(["ValueError: boom", "", "Traceback ..."]))
        'ValueError: boom'
    """
    if error is None:
        return None
    lines = error.strip().splitlines()
    return lines[0] if lines else ""


def error_summary(exc: BaseException) -> str:
    """Return the one-line ``Type: message`` summary of an exception.

    This is what jobs store as ``last_error`` and what the ``error`` log
    field holds; the full traceback goes to ``exc_info`` instead.

    Example::

        >>> from jobkit.runtime.tasks import error_summary
        >>> error_summary(ValueError("bad address"))
        'ValueError: bad address'
        >>> error_summary(TimeoutError())
        'TimeoutError'
    """
    message = str(exc).strip()
    name = type(exc).__name__
    if not message:
        return name
    # Keep the line a line: a multi-line message is cut, the traceback has it.
    first = message.splitlines()[0]
    return f"{name}: {first}" + (" ..." if "\n" in message else "")


class TaskCancelled(Exception):
    """Raised when asking for the value of a task that was cancelled.

    :meth:`TaskResult.unwrap` and :meth:`TaskHandle.join` raise it, like
    Tokio's ``JoinError::Cancelled``. ``name`` is the task's name.

    Example::

        >>> import jobkit
        >>> jobkit.TaskResult(name="report", cancelled=True).unwrap()
        Traceback (most recent call last):
          ...
        jobkit.TaskCancelled: task 'report' was cancelled
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} was cancelled")
        self.name = name


@attrs.frozen(slots=True)
class TaskResult(Generic[T_co]):
    """How one finished task ended: its value, its error, or its cancellation.

    Exactly one of three holds: the task returned (``value`` is what it
    returned, ``error`` is None, ``cancelled`` is False), it raised
    (``error`` is the exception), or it was cancelled (``cancelled`` is
    True). :meth:`unwrap` turns the record back into a value or an
    exception.

    Example::

        >>> import jobkit
        >>> ok = jobkit.TaskResult(name="add", value=3)
        >>> ok.unwrap()
        3
        >>> bad = jobkit.TaskResult(name="parse", error=ValueError("bad row"))
        >>> bad.error
        ValueError('bad row')
        >>> bad.unwrap()
        Traceback (most recent call last):
          ...
        ValueError: bad row
    """

    name: str
    """The task's name: the one given to ``spawn``, or the function's name."""
    value: T_co | None = None
    """What the task returned; None if it failed or was cancelled."""
    error: BaseException | None = None
    """The exception the task raised, or None."""
    cancelled: bool = False
    """True if the task was cancelled (aborted) before it finished."""

    def unwrap(self) -> T_co:
        """Return the task's value, or raise its error, or raise :class:`TaskCancelled`.

        Example::

            >>> import jobkit
            >>> jobkit.TaskResult(name="answer", value=42).unwrap()
            42
        """
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise TaskCancelled(self.name)
        return cast("T_co", self.value)


class _Owner(Protocol):
    def _abort_unstarted(self, task: _Task) -> None: ...


class _Task:
    """The record of one spawned task; its owner writes the outcome into it."""

    __slots__ = (
        "error",
        "event",
        "fn",
        "handle",
        "handle_alive",
        "joiners",
        "name_",
        "observed",
        "owner",
        "scope",
        "state",
        "value",
    )

    def __init__(self, owner: _Owner, fn: Callable[..., Any], name: str | None) -> None:
        self.owner = owner
        self.fn = fn
        self.name_ = name
        self.state = RUNNING
        self.value: Any = None
        self.error: BaseException | None = None
        # Created when the task starts, and only when someone could abort it alone.
        self.scope: trio.CancelScope | None = None
        # Created by the first join() that has to wait.
        self.event: trio.Event | None = None
        self.joiners = 0
        # True once someone has seen the outcome (join() or join_next()).
        self.observed = False
        # Set to False when the TaskHandle for this task is garbage.
        self.handle_alive = True
        # Owners that must pass the handle back (on_error) keep it here.
        self.handle: TaskHandle[Any] | None = None

    @property
    def name(self) -> str:
        name = self.name_
        if name is None:
            name = self.name_ = describe(self.fn)
        return name

    def finish(self, state: int, value: Any, error: BaseException | None) -> None:
        self.state = state
        self.value = value
        self.error = error
        event = self.event
        if event is not None:
            event.set()

    def result(self) -> TaskResult[Any]:
        state = self.state
        return TaskResult(
            name=self.name,
            value=self.value,
            error=self.error,
            cancelled=state == CANCELLED,
        )


class TaskHandle(Generic[T]):
    """A handle on one spawned task: join it, abort it, or look at how it ended.

    Returned at once by :meth:`Supervisor.spawn` and :meth:`JoinSet.spawn`;
    not constructed directly. The task runs whether or not anyone keeps the
    handle.

    - ``await handle.join()`` waits for the task and returns its value, or
      raises its error, or raises :class:`TaskCancelled`. It can be called
      any number of times; a cancelled ``join()`` leaves the task running.
    - ``handle.abort()`` cancels the task (a no-op once it has finished). A
      task that has not started yet never starts.
    - ``handle.done``, ``handle.name`` and ``handle.result`` (a
      :class:`TaskResult` once done, else None) describe it.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def slow_double(x):
        ...     await trio.sleep(1)
        ...     return 2 * x
        >>> async def main():
        ...     async with jobkit.open_supervisor() as sup:
        ...         a = sup.spawn(slow_double, 21)
        ...         b = sup.spawn(slow_double, 5, name="never")
        ...         b.abort()
        ...         return await a.join(), a.done, b.result
        >>> jobkit.testing.run_virtual(main)
        (42, True, TaskResult(name='never', value=None, error=None, cancelled=True))
    """

    __slots__ = ("_task",)

    def __init__(self, task: _Task) -> None:
        self._task = task

    def __del__(self) -> None:
        # Nobody can abort a task whose handle is gone, so a join set lets it
        # run without a cancel scope of its own (see JoinSet._run).
        self._task.handle_alive = False

    @property
    def name(self) -> str:
        """The task's name: the one given to ``spawn``, or the function's name."""
        return self._task.name

    @property
    def done(self) -> bool:
        """True once the task has finished: returned, failed, or been cancelled."""
        return self._task.state != RUNNING

    @property
    def result(self) -> TaskResult[T] | None:
        """How the task ended, or None while it is still running."""
        task = self._task
        if task.state == RUNNING:
            return None
        return task.result()

    def abort(self) -> None:
        """Cancel the task; a finished task is left as it is.

        A running task is cancelled at its next checkpoint, so it ends
        shortly after (as cancelled, unless it finishes first). A task that
        has not started yet (waiting for a join set's slot, or not yet
        scheduled) is marked cancelled at once and never runs.
        """
        task = self._task
        if task.state != RUNNING:
            return
        scope = task.scope
        if scope is not None:
            scope.cancel()
        else:
            task.owner._abort_unstarted(task)

    async def join(self) -> T:
        """Wait for the task to finish; return its value or raise its error.

        Raises :class:`TaskCancelled` if the task was cancelled. While
        someone waits here, a failure counts as joined: the supervisor does
        not also report it as unhandled.
        """
        task = self._task
        if task.state == RUNNING:
            event = task.event
            if event is None:
                event = task.event = trio.Event()
            task.joiners += 1
            try:
                await event.wait()
            finally:
                task.joiners -= 1
        else:
            await trio.lowlevel.checkpoint()
        task.observed = True
        return cast("T", task.result().unwrap())

    def __repr__(self) -> str:
        task = self._task
        return f"<TaskHandle {task.name!r} {_STATE_NAMES[task.state]}>"


def describe(fn: object) -> str:
    """Return a readable name for a spawned callable: its qualified name if any."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    return repr(fn)


def check_spawnable(fn: object, owner: str) -> None:
    """Raise a clear TypeError unless ``fn`` can be called to start a task."""
    if callable(fn):
        return
    if inspect.iscoroutine(fn):
        qualname = fn.__qualname__
        # The coroutine will never run; close it so Python does not warn about it.
        fn.close()
        raise TypeError(
            f"{owner}.spawn() expects an async function and its arguments, "
            f"got the coroutine object {qualname}(...): "
            f"write spawn({qualname}, *args), not spawn({qualname}(*args))"
        )
    raise TypeError(
        f"{owner}.spawn() expects an async function, got {fn!r} "
        f"of type {type(fn).__name__}"
    )


def check_name(name: object) -> str | None:
    """Return ``name`` if it is a task name (str or None), else raise TypeError."""
    if name is None or isinstance(name, str):
        return name
    raise TypeError(f"task name must be a string or None, got {name!r}")


def not_awaitable(fn: Callable[..., Any], returned: object) -> TypeError:
    """The error for a spawned function that is not async."""
    return TypeError(
        f"spawn() expects an async function, but {describe(fn)} returned "
        f"{returned!r}, which cannot be awaited; define it with 'async def'"
    )


def is_cancellation(exc: BaseException) -> bool:
    """True if ``exc`` is trio's Cancelled, alone or in a group of only Cancelled."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(e) for e in exc.exceptions)
    return False


def log_unhandled(task: _Task, message: str, **fields: object) -> None:
    """Log a failure nobody saw, with its traceback and the task's name."""
    error = task.error
    assert error is not None
    name = task.name
    logger.error(
        message,
        name,
        error_summary(error),
        exc_info=(type(error), error, error.__traceback__),
        extra={"task": name, "error": error_summary(error), **fields},
    )


def explain_type_error(
    exc: Exception, fn: Callable[..., Any], returned: object
) -> Exception:
    """Return a clear error if ``exc`` came from awaiting what a sync fn returned."""
    if (
        isinstance(exc, TypeError)
        and returned is not NOTHING
        and not inspect.isawaitable(returned)
    ):
        return not_awaitable(fn, returned)
    return exc


# Marks "fn(*args) raised before returning anything" where tasks are run.
NOTHING: Any = object()
