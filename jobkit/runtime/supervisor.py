"""The supervisor: background tasks whose failures are never swallowed.

trio has no detached tasks, so "spawn and forget" becomes "spawn into a
supervisor": an ``async with`` block that owns its tasks. What the
supervisor adds to a plain nursery:

- a failing task does not cancel its siblings or crash the block (error
  isolation); instead, if nobody is waiting for it, the failure is logged
  with its traceback, counted, and passed to an ``on_error`` hook;
- crashed long-lived tasks can be restarted after a backoff delay;
- shutdown can be graceful: stop taking new work, give running tasks a
  grace period, then cancel what remains.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol, TypeVar, TypeVarTuple

import attrs
import trio

from .._checks import seconds
from .tasks import (
    CANCELLED,
    FAILED,
    NOTHING,
    RUNNING,
    SUCCEEDED,
    TaskHandle,
    _Task,
    check_name,
    check_spawnable,
    describe,
    error_summary,
    explain_type_error,
    is_cancellation,
    log_unhandled,
)

__all__ = [
    "Restart",
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

logger = logging.getLogger("jobkit")

ErrorHook = Callable[[TaskHandle[Any], Exception], object]


class _Waitable(Protocol):
    """Anything with ``await x.wait()``, such as :class:`jobkit.CancellationToken`."""

    def wait(self) -> Awaitable[object]: ...


def _backoff(
    value: float | timedelta | Callable[[int], float],
) -> float | Callable[[int], float]:
    if callable(value) and not isinstance(value, timedelta):
        return value
    return seconds(value, "Restart backoff")


def _within(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    result = seconds(value, "Restart within")
    if result == 0:
        raise ValueError(f"Restart within must be > 0 seconds or None, got {value!r}")
    return result


def _max_restarts(instance: object, attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_restarts must be a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"max_restarts must be >= 0, got {value!r}")


@attrs.frozen
class Restart:
    """How a supervisor restarts a task that crashed: how often, and after what delay.

    - ``max_restarts``: how many restarts are allowed; the crash after the
      last one is reported as the task's failure.
    - ``backoff``: the delay before a restart, in seconds (a number or a
      ``timedelta``), or a function of the restart's number (1 for the
      first) that returns seconds, e.g. ``lambda n: min(60, 2 ** n)``.
    - ``within``: if given, only restarts in the last ``within`` seconds
      count against ``max_restarts`` (and number the backoff), so a worker
      that crashes once a day is not given up on after a month.

    A task is restarted only when it raises; returning or being cancelled
    ends it. Each crash that leads to a restart is logged as a warning with
    its traceback. Delays are ``trio.sleep`` calls, so they run on virtual
    time under ``trio.testing.MockClock``.

    Example::

        >>> import jobkit
        >>> policy = jobkit.Restart(max_restarts=3, backoff=lambda n: 2.0**n)
        >>> [policy.delay(n) for n in (1, 2, 3)]
        [2.0, 4.0, 8.0]
        >>> jobkit.Restart(max_restarts=1, backoff=0.5).delay(1)
        0.5
    """

    max_restarts: int = attrs.field(validator=_max_restarts)
    backoff: float | Callable[[int], float] = attrs.field(
        default=0.0, converter=_backoff
    )
    within: float | None = attrs.field(default=None, converter=_within)

    def delay(self, restart: int) -> float:
        """Return the delay in seconds before restart number ``restart`` (first: 1).

        Example::

            >>> import jobkit
            >>> jobkit.Restart(max_restarts=5, backoff=lambda n: 10 * n).delay(2)
            20.0
        """
        backoff = self.backoff
        if not callable(backoff):
            return backoff
        value = backoff(restart)
        try:
            return seconds(value, f"Restart backoff({restart})")
        except TypeError:
            raise TypeError(
                f"Restart backoff({restart}) must return a number of seconds, "
                f"got {value!r}"
            ) from None


@attrs.frozen
class SupervisorStatistics:
    """Counts of what a supervisor's tasks have done so far.

    - ``spawned``: tasks spawned (a restart is not a new task).
    - ``running``: tasks not finished yet, including those waiting out a
      restart delay.
    - ``succeeded``, ``failed``, ``cancelled``: tasks that ended that way;
      ``failed`` counts final failures only (after restarts ran out).
    - ``restarted``: restarts performed, over all tasks.
    - ``unjoined_failures``: failures nobody was waiting for, which were
      therefore logged and passed to ``on_error``.

    Example::

        >>> import jobkit, jobkit.testing
        >>> async def crash():
        ...     raise RuntimeError("boom")
        >>> async def main():
        ...     async with jobkit.open_supervisor() as sup:
        ...         sup.spawn(crash, restart=jobkit.Restart(max_restarts=2))
        ...     return sup.statistics()
        >>> stats = jobkit.testing.run_virtual(main)
        >>> stats.failed, stats.restarted, stats.unjoined_failures
        (1, 2, 1)
    """

    spawned: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    restarted: int
    unjoined_failures: int


class Supervisor:
    """Runs background tasks, isolated from each other, and reports their failures.

    Not constructed directly: use :func:`open_supervisor`.

    **Failures are never silently swallowed.** When a task fails and nobody
    is waiting in its handle's ``join()`` at that moment, the failure is
    reported right away: logged on the ``jobkit`` logger at ERROR with the
    traceback and the task's name (``extra`` fields ``task``, ``error``,
    ``supervisor``), counted in :meth:`statistics` as an unjoined failure,
    and passed to the ``on_error`` hook. Either way the other tasks and the
    block keep running. A later ``join()`` still raises the error; it was
    reported already.

    **Stopping.** Leaving the block waits for every task (tasks may spawn
    more meanwhile). :meth:`cancel` stops taking new tasks and cancels the
    running ones, after a grace period if one is set; :meth:`shutdown` does
    the same and waits until they are gone. An exception raised in the
    block cancels the tasks and propagates unchanged.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def worker(name, period):
        ...     while True:
        ...         await trio.sleep(period)
        >>> async def main():
        ...     async with jobkit.open_supervisor(grace=5) as sup:
        ...         sup.spawn(worker, "mailer", 1)
        ...         sup.spawn(worker, "reports", 60)
        ...         await trio.sleep(10)
        ...         await sup.shutdown()
        ...     return trio.current_time(), sup.statistics().cancelled
        >>> jobkit.testing.run_virtual(main)  # the workers ignore the grace period
        (15.0, 2)
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        name: str,
        on_error: ErrorHook | None,
        grace: float,
    ) -> None:
        self._nursery = nursery
        self._name = name
        self._on_error = on_error
        self._grace = grace
        self._running: dict[_Task, None] = {}
        self._waiting_restart: set[_Task] = set()
        self._idle: trio.Event | None = None
        self._helpers = trio.CancelScope()
        self._cancel_called = False
        self._closed = False
        self._spawned = 0
        self._succeeded = 0
        self._failed = 0
        self._cancelled = 0
        self._restarted = 0
        self._unjoined = 0

    @property
    def name(self) -> str:
        """The supervisor's name, used in its log records."""
        return self._name

    @property
    def cancel_called(self) -> bool:
        """True once :meth:`cancel` or :meth:`shutdown` was called.

        Long-running tasks can check it between units of work and return on
        their own during the grace period.
        """
        return self._cancel_called

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "cancelling"
            if self._cancel_called
            else "open"
        )
        return f"<Supervisor {self._name!r} {state} running={len(self._running)}>"

    def statistics(self) -> SupervisorStatistics:
        """Return counts of spawned, running, finished and restarted tasks.

        Example::

            >>> import jobkit, jobkit.testing
            >>> async def ok():
            ...     return 1
            >>> async def main():
            ...     async with jobkit.open_supervisor() as sup:
            ...         sup.spawn(ok)
            ...         sup.spawn(ok)
            ...     return sup.statistics()
            >>> jobkit.testing.run_virtual(main)
            SupervisorStatistics(spawned=2, running=0, succeeded=2, failed=0, cancelled=0, restarted=0, unjoined_failures=0)
        """  # noqa: E501
        return SupervisorStatistics(
            spawned=self._spawned,
            running=len(self._running),
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            restarted=self._restarted,
            unjoined_failures=self._unjoined,
        )

    def spawn(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        name: str | None = None,
        restart: Restart | None = None,
    ) -> TaskHandle[T]:
        """Start ``fn(*args)`` in the background and return its handle at once.

        ``name`` names the task in logs and results (default: the
        function's name). ``restart`` restarts it when it crashes (see
        :class:`Restart`).

        Raises RuntimeError once the supervisor is closed (its block has
        ended, or :meth:`cancel` was called), and TypeError if ``fn`` is not
        an async function (passing ``fn(*args)`` instead of ``fn, *args`` is
        the usual slip).

        Example::

            >>> import jobkit, jobkit.testing
            >>> async def greet(who):
            ...     return f"hello {who}"
            >>> async def main():
            ...     async with jobkit.open_supervisor() as sup:
            ...         handle = sup.spawn(greet, "ada", name="greeter")
            ...         return handle.name, await handle.join()
            >>> jobkit.testing.run_virtual(main)
            ('greeter', 'hello ada')
        """
        if self._closed or self._cancel_called:
            why = "its block has ended" if self._closed else "cancel() was called"
            raise RuntimeError(
                f"supervisor {self._name!r} is closed ({why}): "
                f"cannot spawn {name or describe(fn)!r}"
            )
        check_spawnable(fn, "Supervisor")
        check_name(name)
        if restart is not None and not isinstance(restart, Restart):
            raise TypeError(
                f"restart must be a jobkit.Restart or None, got {restart!r}"
            )
        task = _Task(self, fn, name)
        handle: TaskHandle[T] = TaskHandle(task)
        task.handle = handle
        self._running[task] = None
        self._spawned += 1
        self._nursery.start_soon(self._run, task, fn, args, restart, name=task.name)
        return handle

    async def _run(
        self,
        task: _Task,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        restart: Restart | None,
    ) -> None:
        if task.state != RUNNING:
            return  # aborted or cancelled before it started
        task.scope = scope = trio.CancelScope()
        history: deque[float] = deque()
        state, value, error = SUCCEEDED, None, None
        try:
            with scope:
                while True:
                    returned: Any = NOTHING
                    try:
                        returned = fn(*args)
                        value = await returned
                        break
                    except Exception as exc:
                        crash = explain_type_error(exc, fn, returned)
                    # The restart decision and its wait happen outside the
                    # except block, so the crash is not "being handled" while
                    # the task sleeps.
                    try:
                        delay = self._restart_delay(task, restart, history, crash)
                    except Exception as bad:  # a broken backoff function
                        bad.__context__ = crash
                        state, error = FAILED, bad
                        break
                    if delay is None:
                        state, error = FAILED, crash
                        break
                    del crash
                    self._waiting_restart.add(task)
                    try:
                        await trio.sleep(delay)
                    finally:
                        self._waiting_restart.discard(task)
                    self._restarted += 1
            if scope.cancelled_caught:
                state, value, error = CANCELLED, None, None
        except BaseException as exc:
            # Cancelled from outside (the block raised), or KeyboardInterrupt
            # and the like, which must go on propagating.
            if is_cancellation(exc):
                self._finish(task, CANCELLED, None, None)
            else:
                self._finish(task, FAILED, None, exc)
            raise
        self._finish(task, state, value, error)

    def _restart_delay(
        self,
        task: _Task,
        restart: Restart | None,
        history: deque[float],
        error: Exception,
    ) -> float | None:
        scope = task.scope
        if (
            restart is None
            or self._cancel_called
            or (scope is not None and scope.cancel_called)
        ):
            return None
        now = trio.current_time()
        if restart.within is not None:
            while history and history[0] <= now - restart.within:
                history.popleft()
        if len(history) >= restart.max_restarts:
            return None
        number = len(history) + 1
        delay = restart.delay(number)
        history.append(now)
        name = task.name
        logger.warning(
            "task %r crashed, restarting in %ss (restart %d of %d): %s",
            name,
            delay,
            number,
            restart.max_restarts,
            error_summary(error),
            exc_info=(type(error), error, error.__traceback__),
            extra={
                "task": name,
                "error": error_summary(error),
                "supervisor": self._name,
                "restart": number,
                "delay": delay,
            },
        )
        return delay

    def _finish(
        self, task: _Task, state: int, value: Any, error: BaseException | None
    ) -> None:
        del self._running[task]
        task.finish(state, value, error)
        if state == SUCCEEDED:
            self._succeeded += 1
        elif state == CANCELLED:
            self._cancelled += 1
        else:
            self._failed += 1
            if isinstance(error, Exception) and not task.joiners:
                self._report(task, error)
        if not self._running and self._idle is not None:
            self._idle.set()
            self._idle = None

    def _report(self, task: _Task, error: Exception) -> None:
        self._unjoined += 1
        log_unhandled(
            task, "task %r failed and nobody joined it: %s", supervisor=self._name
        )
        hook = self._on_error
        if hook is None:
            return
        assert task.handle is not None
        try:
            hook(task.handle, error)
        except Exception:
            # The hook is part of error reporting: its own failure is logged,
            # not allowed to take the supervisor down.
            logger.exception(
                "on_error hook of supervisor %r raised while reporting task %r",
                self._name,
                task.name,
                extra={"task": task.name, "supervisor": self._name},
            )

    def _abort_unstarted(self, task: _Task) -> None:
        # TaskHandle.abort() before the task entered its scope: it never runs.
        self._finish(task, CANCELLED, None, None)

    def _cancel_running(self) -> None:
        for task in list(self._running):
            scope = task.scope
            if scope is not None:
                scope.cancel()
            else:
                self._abort_unstarted(task)

    async def _wait_idle(self) -> None:
        while self._running:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    async def _grace_then_cancel(self, grace: float) -> None:
        with trio.move_on_after(grace):
            await self._wait_idle()
        self._cancel_running()

    async def _watch(self, token: _Waitable) -> None:
        with self._helpers:
            await token.wait()
            self.cancel()

    def cancel(self, *, grace: float | timedelta | None = None) -> None:
        """Stop taking new tasks and cancel running ones, after a grace period if set.

        ``grace`` overrides the supervisor's own grace period for this call
        (``0`` cancels at once). During the grace period tasks keep running
        and can see :attr:`cancel_called` to wrap up; those still running
        when it ends are cancelled. Tasks waiting out a restart delay have
        no work in hand and are cancelled at once, and no task is restarted
        any more. Calling ``cancel`` again with a shorter grace shortens it.
        The code inside the ``async with`` block is not cancelled.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     async with jobkit.open_supervisor() as sup:
            ...         sup.spawn(trio.sleep_forever)
            ...         await trio.sleep(3)
            ...         sup.cancel()
            ...     return trio.current_time(), sup.statistics().cancelled
            >>> jobkit.testing.run_virtual(main)
            (3.0, 1)
        """
        delay = self._grace if grace is None else seconds(grace, "grace")
        self._cancel_called = True
        for task in list(self._waiting_restart):
            if task.scope is not None:
                task.scope.cancel()
        if delay == 0:
            self._cancel_running()
        elif self._running and not self._closed:
            self._nursery.start_soon(self._grace_then_cancel, delay)

    async def shutdown(self, *, grace: float | timedelta | None = None) -> None:
        """Cancel like :meth:`cancel`, then wait until every task has finished.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def job(seconds):
            ...     await trio.sleep(seconds)
            >>> async def main():
            ...     async with jobkit.open_supervisor() as sup:
            ...         sup.spawn(job, 2)   # finishes within the grace period
            ...         sup.spawn(job, 60)  # is cancelled when it ends
            ...         await sup.shutdown(grace=10)
            ...         return trio.current_time(), sup.statistics()
            >>> now, stats = jobkit.testing.run_virtual(main)
            >>> now, stats.succeeded, stats.cancelled
            (10.0, 1, 1)
        """
        self.cancel(grace=grace)
        await self._wait_idle()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_supervisor(
    *,
    on_error: ErrorHook | None = None,
    grace: float | timedelta | None = None,
    name: str = "supervisor",
    token: _Waitable | None = None,
) -> AsyncIterator[Supervisor]:
    """Open a :class:`Supervisor` for background tasks; the block waits for them.

    - ``on_error(handle, exc)`` is called (synchronously) for each failure
      that nobody joined, after it is logged. An exception raised by the
      hook is logged and otherwise ignored.
    - ``grace`` (seconds or a ``timedelta``) is how long :meth:`Supervisor.cancel`
      lets running tasks finish before cancelling them; None cancels at once.
    - ``name`` appears in log records (the ``supervisor`` field).
    - ``token``: anything with ``await token.wait()``, such as a
      :class:`jobkit.CancellationToken`; when it fires, the supervisor
      cancels as if :meth:`Supervisor.cancel` was called.

    Example::

        >>> import jobkit, jobkit.testing
        >>> seen = []
        >>> async def crash():
        ...     raise ValueError("bad input")
        >>> async def main():
        ...     async with jobkit.open_supervisor(
        ...         on_error=lambda handle, exc: seen.append((handle.name, exc))
        ...     ) as sup:
        ...         sup.spawn(crash, name="parser")
        >>> jobkit.testing.run_virtual(main)  # also logs the failure
        >>> seen
        [('parser', ValueError('bad input'))]
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if on_error is not None and not callable(on_error):
        raise TypeError(f"on_error must be callable or None, got {on_error!r}")
    grace_seconds = 0.0 if grace is None else seconds(grace, "grace")
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery, name=name, on_error=on_error, grace=grace_seconds)
        if token is not None:
            nursery.start_soon(sup._watch, token)
        try:
            yield sup
            await sup._wait_idle()
        except GeneratorExit:
            raise
        except BaseException as exc:
            # Re-raised below, after the tasks are gone, so that it comes out
            # as itself rather than inside the nursery's ExceptionGroup.
            body_error = exc
            nursery.cancel_scope.cancel()
        finally:
            sup._closed = True
            sup._helpers.cancel()
    if body_error is not None:
        raise body_error
