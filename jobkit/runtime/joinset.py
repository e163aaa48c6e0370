"""JoinSet: a group of tasks whose results come back in the order they finish.

Tokio's ``JoinSet`` in structured form: the set lives in an ``async with``
block, tasks are spawned into it without waiting, results are collected with
:meth:`JoinSet.join_next` as tasks finish, and leaving the block cancels
whatever still runs.

How the set runs its tasks, and why:

- Tasks run in a nursery of their own (a *generation*), hosted by a helper
  task, so :meth:`JoinSet.abort_all` can cancel every task at once without
  cancelling the code inside the ``async with`` block. After an
  ``abort_all``, new tasks go into a fresh generation.
- Cancelling one task alone takes a trio cancel scope, which costs about as
  much as the task itself when the task is trivial. A task only gets one
  when it starts while someone still holds its :class:`TaskHandle`; a task
  whose handle was dropped cannot be aborted alone, so it runs without one.
- Finished tasks go to a deque in completion order, and a waiting
  ``join_next`` is woken once, not once per task.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, TypeVarTuple

import trio

from .tasks import (
    CANCELLED,
    FAILED,
    NOTHING,
    RUNNING,
    SUCCEEDED,
    TaskCancelled,
    TaskHandle,
    TaskResult,
    _Task,
    check_name,
    check_spawnable,
    explain_type_error,
    is_cancellation,
    log_unhandled,
)

__all__ = ["JoinSet", "open_join_set"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_Start = tuple[_Task, Callable[..., Awaitable[Any]], tuple[Any, ...]]

# The name trio shows for a join set's tasks. Given as a string, it spares
# trio from building one per task out of the wrapper's qualified name.
_TRIO_NAME = "jobkit.JoinSet task"


class _Generation:
    """One nursery the set's tasks run in; ``abort_all`` cancels it as a whole."""

    __slots__ = ("aborted", "backlog", "nursery")

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None
        # Tasks spawned before the hosting task has opened the nursery.
        self.backlog: list[_Start] = []
        self.aborted = False


class JoinSet(Generic[T]):
    """A set of tasks whose results are collected in the order they finish.

    Not constructed directly: use :func:`open_join_set`. Semantics follow
    Tokio's ``JoinSet``:

    - :meth:`spawn` starts a task and returns its :class:`TaskHandle` at
      once; with ``limit=N`` at most N tasks run at a time and the others
      wait their turn in the order they were spawned.
    - :meth:`join_next` returns the next finished task's
      :class:`TaskResult` (completion order), or None once the set is empty.
      A failing task never raises into the block: its error is in its
      result.
    - :meth:`join_all` returns all values, or cancels the rest and raises
      the first failure.
    - :meth:`abort_all` cancels every task; they stay in the set and come
      out as cancelled results. :meth:`shutdown` aborts and drains.
    - ``len(js)`` counts the tasks not yet joined, finished ones included.
    - Leaving the ``async with`` block cancels what still runs. A failure
      whose result nobody took (by ``join_next``, ``try_join_next``,
      ``join_all`` or the handle's ``join()``) is logged on the ``jobkit``
      logger with its traceback when it leaves the set unseen: at the end
      of the block, or when :meth:`shutdown` discards it.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def nap(seconds):
        ...     await trio.sleep(seconds)
        ...     return seconds
        >>> async def main():
        ...     async with jobkit.open_join_set() as js:
        ...         for s in (3, 1, 2):
        ...             js.spawn(nap, s)
        ...         order = []
        ...         while (result := await js.join_next()) is not None:
        ...             order.append((result.value, trio.current_time()))
        ...         return order
        >>> jobkit.testing.run_virtual(main)
        [(1, 1.0), (2, 2.0), (3, 3.0)]
    """

    __slots__ = (
        "_active",
        "_closed",
        "_count",
        "_done",
        "_gen",
        "_limit",
        "_lot",
        "_outer",
        "_pending",
        "_waiters",
    )

    def __init__(self, limit: int | None, outer: trio.Nursery) -> None:
        self._limit = limit
        self._outer = outer
        self._gen: _Generation | None = None
        self._closed = False
        # Tasks not yet joined: waiting for a slot, running, or finished.
        self._count = 0
        # Tasks holding a slot: launched and not yet finished.
        self._active = 0
        self._pending: deque[_Start] = deque()
        self._done: deque[_Task] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        # Tasks parked in _lot and not yet woken.
        self._waiters = 0

    @property
    def limit(self) -> int | None:
        """How many tasks may run at once; None means no limit."""
        return self._limit

    def __len__(self) -> int:
        """The number of tasks not yet joined, finished ones included."""
        return self._count

    def __repr__(self) -> str:
        return (
            f"<JoinSet limit={self._limit} tasks={self._count} "
            f"finished={len(self._done)}{' closed' if self._closed else ''}>"
        )

    def spawn(
        self,
        fn: Callable[[*Ts], Awaitable[T]],
        *args: *Ts,
        name: str | None = None,
    ) -> TaskHandle[T]:
        """Start ``fn(*args)`` as a task in the set and return its handle at once.

        Never blocks: when the set is at its limit, the task waits in line
        (first spawned, first started) and starts when a slot frees up.
        ``name`` names the task in results and logs (default: the
        function's name).

        Raises RuntimeError if the set's block has ended, and TypeError if
        ``fn`` is not an async function (passing ``fn(*args)``, a coroutine
        object, instead of ``fn, *args`` is the usual slip).

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def square(x):
            ...     return x * x
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         handle = js.spawn(square, 7, name="seven")
            ...         return handle.name, await js.join_all()
            >>> jobkit.testing.run_virtual(main)
            ('seven', [49])
        """
        if self._closed:
            raise RuntimeError(
                "this join set is closed: its async with block has ended, "
                "so no task can be spawned into it"
            )
        if not callable(fn):
            check_spawnable(fn, "JoinSet")
        if name is not None:
            check_name(name)
        task = _Task(self, fn, name)
        handle: TaskHandle[T] = TaskHandle(task)
        self._count += 1
        limit = self._limit
        if limit is None or self._active < limit:
            self._active += 1
            gen = self._gen
            if gen is not None and gen.nursery is not None:
                gen.nursery.start_soon(self._run, task, fn, args, gen, name=_TRIO_NAME)
            else:
                self._launch(task, fn, args)
        else:
            self._pending.append((task, fn, args))
        return handle

    def _launch(
        self, task: _Task, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        gen = self._gen
        if gen is None:
            gen = self._gen = _Generation()
            self._outer.start_soon(self._host, gen)
        if gen.nursery is not None:
            gen.nursery.start_soon(self._run, task, fn, args, gen, name=_TRIO_NAME)
        else:
            gen.backlog.append((task, fn, args))

    async def _host(
        self,
        gen: _Generation,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if gen.aborted:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            gen.nursery = nursery
            backlog, gen.backlog = gen.backlog, []
            for task, fn, args in backlog:
                nursery.start_soon(self._run, task, fn, args, gen, name=_TRIO_NAME)
            task_status.started()
            await trio.sleep_forever()

    async def _run(
        self,
        task: _Task,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        gen: _Generation,
    ) -> None:
        if task.state != RUNNING:
            # Aborted before it started: it is already among the finished.
            self._release()
            return
        if gen.aborted:
            # Its generation was aborted before it got to run: it never starts.
            task.finish(CANCELLED, None, None)
            self._completed(task)
            return
        returned: Any = NOTHING
        try:
            if task.handle_alive:
                # Someone may still abort this task alone: give it a scope.
                task.scope = scope = trio.CancelScope()
                with scope:
                    returned = fn(*args)
                    value = await returned
                if scope.cancelled_caught:
                    task.finish(CANCELLED, None, None)
                else:
                    task.finish(SUCCEEDED, value, None)
            else:
                # The hot path: nobody holds the handle, so nobody can join
                # it either, and there is no event to set.
                returned = fn(*args)
                task.value = await returned
                task.state = SUCCEEDED
        except Exception as exc:
            task.finish(FAILED, None, explain_type_error(exc, fn, returned))
        except BaseException as exc:
            # Cancelled from outside (abort_all, or the block ending), or
            # KeyboardInterrupt and the like, which must go on propagating.
            if is_cancellation(exc):
                task.finish(CANCELLED, None, None)
            else:
                task.finish(FAILED, None, exc)
            self._completed(task)
            raise
        # What _completed does, inlined: this runs once per task.
        self._done.append(task)
        if self._waiters:
            self._wake()
        self._active -= 1
        if self._pending:
            self._start_next()

    def _completed(self, task: _Task) -> None:
        self._done.append(task)
        if self._waiters:
            self._wake()
        self._active -= 1
        if self._pending:
            self._start_next()

    def _release(self) -> None:
        self._active -= 1
        if self._pending:
            self._start_next()

    def _start_next(self) -> None:
        if self._closed:
            return
        pending = self._pending
        while pending:
            task, fn, args = pending.popleft()
            if task.state == RUNNING:  # skip tasks aborted while waiting
                self._active += 1
                self._launch(task, fn, args)
                return

    def _wake(self, everyone: bool = False) -> None:
        # The waker counts the wake-up, so that the many completions that
        # happen before the woken task runs do not wake it again.
        woken = self._lot.unpark_all() if everyone else self._lot.unpark()
        self._waiters -= len(woken)

    async def _park(self) -> None:
        self._waiters += 1
        try:
            await self._lot.park()
        except BaseException:
            self._waiters -= 1  # cancelled: nobody woke it
            raise

    def _abort_unstarted(self, task: _Task) -> None:
        # Called by TaskHandle.abort() for a task that has not entered its
        # scope yet. It finishes now; a slot it holds is freed when its
        # launched wrapper runs, and one still waiting for a slot is
        # skipped when its turn comes.
        task.finish(CANCELLED, None, None)
        self._done.append(task)
        if self._waiters:
            self._wake()

    def _abort_generation(self, gen: _Generation) -> None:
        gen.aborted = True
        if gen.nursery is not None:
            gen.nursery.cancel_scope.cancel()
            return
        backlog, gen.backlog = gen.backlog, []
        for task, _fn, _args in backlog:
            self._active -= 1
            if task.state == RUNNING:
                task.finish(CANCELLED, None, None)
                self._done.append(task)

    def abort_all(self) -> None:
        """Cancel every task in the set; they stay in it as cancelled results.

        Running tasks are cancelled at their next checkpoint; tasks waiting
        for a slot never start. Each still comes out of :meth:`join_next`
        (as a cancelled result, unless it finished first). Tasks spawned
        afterwards run normally.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         js.spawn(trio.sleep_forever)
            ...         js.abort_all()
            ...         result = await js.join_next()
            ...         return result.cancelled, len(js)
            >>> jobkit.testing.run_virtual(main)
            (True, 0)
        """
        pending = self._pending
        while pending:
            task, _fn, _args = pending.popleft()
            if task.state == RUNNING:
                task.finish(CANCELLED, None, None)
                self._done.append(task)
        gen = self._gen
        if gen is not None:
            self._gen = None
            self._abort_generation(gen)
        if self._done and self._waiters:
            self._wake(everyone=True)

    def _take(self) -> _Task:
        task = self._done.popleft()
        self._count -= 1
        task.observed = True
        if not self._count and self._waiters:
            # The set is empty now: other waiters must see that and return.
            self._wake(everyone=True)
        return task

    def try_join_next(self) -> TaskResult[T] | None:
        """Return a finished task's result if there is one, else None; never waits.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         js.spawn(trio.sleep, 1)
            ...         before = js.try_join_next()
            ...         await trio.sleep(2)
            ...         return before, js.try_join_next().name
            >>> jobkit.testing.run_virtual(main)
            (None, 'sleep')
        """
        if self._done:
            return self._take().result()
        return None

    async def join_next(self) -> TaskResult[T] | None:
        """Wait for the next task to finish and return its result; None when empty.

        Results come in completion order, each task exactly once. A task
        that failed or was cancelled comes out as a result too (see
        :class:`TaskResult`); nothing is raised here. If ``join_next`` is
        cancelled while waiting, no result is lost.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def fail():
            ...     raise ValueError("no")
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         js.spawn(fail)
            ...         result = await js.join_next()
            ...         return result.error, await js.join_next()
            >>> jobkit.testing.run_virtual(main)
            (ValueError('no'), None)
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        done = self._done
        if done:
            task = self._take()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return task.result()
        while True:
            if not self._count:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return None
            await self._park()
            if done:
                return self._take().result()

    async def join_all(self) -> list[T]:
        """Wait for every task and return their values in completion order.

        If a task failed, the remaining tasks are aborted and its error is
        raised at once (:class:`TaskCancelled` for a task that was
        cancelled); the aborted tasks stay in the set as cancelled results
        until joined or until the block ends. If ``join_all`` itself is
        cancelled, the values it had collected go back into the set.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def nap(seconds):
            ...     await trio.sleep(seconds)
            ...     return seconds
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         for s in (2, 3, 1):
            ...             js.spawn(nap, s)
            ...         return await js.join_all()
            >>> jobkit.testing.run_virtual(main)
            [1, 2, 3]
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        done = self._done
        taken: list[_Task] = []
        failed: _Task | None = None
        waited = False
        try:
            while True:
                # What _take does, inlined: this runs once per task.
                while done:
                    task = done.popleft()
                    self._count -= 1
                    task.observed = True
                    if task.state != SUCCEEDED:
                        failed = task
                        break
                    taken.append(task)
                if failed is not None or not self._count:
                    break
                await self._park()
                waited = True
        except BaseException:
            # Cancelled while waiting: give back what was collected.
            done.extendleft(reversed(taken))
            self._count += len(taken)
            raise
        if not self._count and self._waiters:
            self._wake(everyone=True)
        if failed is not None:
            self.abort_all()
            if failed.error is not None:
                raise failed.error
            raise TaskCancelled(failed.name)
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return [task.value for task in taken]

    async def shutdown(self) -> None:
        """Abort every task and wait until all have finished, discarding their results.

        The set is empty and usable afterwards. A failure that nobody had
        joined is logged as it is discarded.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     async with jobkit.open_join_set() as js:
            ...         for _ in range(3):
            ...             js.spawn(trio.sleep_forever)
            ...         await js.shutdown()
            ...         return len(js), trio.current_time()
            >>> jobkit.testing.run_virtual(main)
            (0, 0.0)
        """
        self.abort_all()
        done = self._done
        while self._count:
            if not done:
                await self._park()
            while done:
                self._discard(done.popleft())
        await trio.lowlevel.checkpoint()

    def _discard(self, task: _Task) -> None:
        self._count -= 1
        if task.state == FAILED and not task.observed:
            log_unhandled(task, "task %r failed and its result was never joined: %s")

    def _close(self) -> None:
        self._closed = True
        pending = self._pending
        while pending:
            task, _fn, _args = pending.popleft()
            if task.state == RUNNING:
                task.finish(CANCELLED, None, None)
                self._done.append(task)
        gen = self._gen
        if gen is not None:
            self._abort_generation(gen)
        self._outer.cancel_scope.cancel()

    def _after_close(self) -> None:
        done = self._done
        while done:
            self._discard(done.popleft())


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be a whole number or None, got {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for no limit), got {limit!r}")
    return limit


@asynccontextmanager
async def open_join_set(limit: int | None = None) -> AsyncIterator[JoinSet[Any]]:
    """Open a :class:`JoinSet`; leaving the block cancels the tasks still running.

    ``limit`` caps how many of the set's tasks run at once (None: no cap);
    the rest wait in spawn order. ``limit < 1`` raises ValueError.

    When the block ends, normally or by an exception, every task still
    running is cancelled and waited for (Tokio's "abort on drop"), tasks
    still waiting for a slot never start, and failures that nobody joined
    are logged on the ``jobkit`` logger. An exception raised in the block
    propagates unchanged.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def nap(seconds):
        ...     await trio.sleep(seconds)
        ...     return trio.current_time()
        >>> async def main():
        ...     async with jobkit.open_join_set(limit=2) as js:
        ...         for s in (1, 2, 3):
        ...             js.spawn(nap, s)
        ...         return await js.join_all()
        >>> jobkit.testing.run_virtual(main)  # the third starts when the first ends
        [1.0, 2.0, 4.0]
    """
    checked = _check_limit(limit)
    body_error: BaseException | None = None
    js: JoinSet[Any] | None = None
    try:
        async with trio.open_nursery() as outer:
            js = JoinSet(checked, outer)
            gen = js._gen = _Generation()
            await outer.start(js._host, gen)
            try:
                yield js
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, after the tasks are gone, so that it comes
                # out as itself rather than inside the nursery's ExceptionGroup.
                body_error = exc
            finally:
                js._close()
    finally:
        if js is not None:
            js._after_close()
    if body_error is not None:
        raise body_error
