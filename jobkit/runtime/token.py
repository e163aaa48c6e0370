"""Cancellation tokens: one shutdown signal, shared by any number of tasks."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TypeVar, TypeVarTuple

import trio

__all__ = ["CancellationToken", "cancel_on_signals"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

logger = logging.getLogger("jobkit")

# One lock for every token: cancelling a tree marks the whole subtree under
# it, so nobody can observe a cancelled parent with a child not yet
# cancelled, and there is no lock order to get wrong. Wake-ups run after it
# is released.
_LOCK = threading.Lock()

# What to call on cancel, and the trio run it must be called in.
_Callback = tuple[trio.lowlevel.TrioToken, Callable[[], object]]


class CancellationToken:
    """A flag that tasks wait on and that anyone can raise, once, to ask them to stop.

    ``cancel()`` sets it for good and wakes every task in :meth:`wait`,
    every :meth:`cancel_scope` and every :meth:`run_until_cancelled` tied to
    it, and every :meth:`child` token. Unlike a ``trio.CancelScope``, a token
    is not tied to one block of code: pass it to as many tasks as you like,
    each decides where it may be stopped.

    A token is not bound to a trio run. It can be created at import time or
    in ``__init__``, before ``trio.run``, and used by several runs in turn.
    ``cancel()`` can be called from anywhere: sync or async code inside
    trio, code outside any run, another thread, or another trio run in
    another thread (waiters are woken inside their own run with
    ``TrioToken.run_sync_soon``), so it needs no ``trio.from_thread``
    wrapper. The one place it must not be called is a raw
    ``signal.signal`` handler: use :func:`cancel_on_signals` for signals.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def main():
        ...     token = jobkit.CancellationToken()
        ...     stopped = []
        ...     async def worker(name):
        ...         await token.wait()
        ...         stopped.append((name, trio.current_time()))
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(worker, "mailer")
        ...         nursery.start_soon(worker, "cleaner")
        ...         await trio.sleep(30)
        ...         token.cancel()
        ...     return sorted(stopped)
        >>> jobkit.testing.run_virtual(main)
        [('cleaner', 30.0), ('mailer', 30.0)]
    """

    __slots__ = ("__weakref__", "_callbacks", "_cancelled", "_children", "_parent")

    def __init__(self) -> None:
        self._cancelled = False
        self._callbacks: dict[object, _Callback] = {}
        # Children are held weakly: a long-lived parent handing out a child
        # per request must not keep every one of them alive.
        self._children: weakref.WeakSet[CancellationToken] = weakref.WeakSet()
        # ...while each child holds its parent strongly, so an intermediate
        # token that its owner dropped still links a live grandchild to the
        # root. Cleared on cancel: a cancelled token needs no parent.
        self._parent: CancellationToken | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the token has been cancelled (directly or through a parent).

        Example::

            >>> import jobkit
            >>> token = jobkit.CancellationToken()
            >>> token.cancelled
            False
            >>> token.cancel()
            >>> token.cancelled
            True
        """
        return self._cancelled

    def cancel(self) -> None:
        """Cancel this token and all its descendants; further calls do nothing.

        Safe from any thread and from outside trio; see the class docstring.

        Example::

            >>> import jobkit
            >>> parent = jobkit.CancellationToken()
            >>> child = parent.child()
            >>> parent.cancel()
            >>> child.cancelled
            True
        """
        callbacks: list[_Callback] = []
        with _LOCK:
            if self._cancelled:
                return
            parent = self._parent
            if parent is not None:
                parent._children.discard(self)
            stack = [self]
            while stack:
                token = stack.pop()
                if token._cancelled:
                    continue
                token._cancelled = True
                token._parent = None
                callbacks.extend(token._callbacks.values())
                token._callbacks.clear()
                stack.extend(token._children)
                token._children.clear()
        _dispatch(callbacks)

    def child(self) -> CancellationToken:
        """Return a new token that is cancelled whenever this one is.

        Cancelling the child does not touch the parent or its other
        children, so one request or job can be stopped on its own while
        application shutdown still stops them all. A child of a cancelled
        token starts cancelled. The parent holds its children weakly:
        children that are dropped are not kept alive.

        Example::

            >>> import jobkit
            >>> shutdown = jobkit.CancellationToken()
            >>> job = shutdown.child()
            >>> job.cancel()
            >>> shutdown.cancelled, job.cancelled
            (False, True)
            >>> shutdown.cancel()
            >>> shutdown.child().cancelled
            True
        """
        child = CancellationToken()
        with _LOCK:
            if self._cancelled:
                child._cancelled = True
            else:
                child._parent = self
                self._children.add(child)
        return child

    def _register(self, callback: Callable[[], object]) -> object | None:
        # Returns a key for _unregister, or None if already cancelled (and
        # then the callback is not registered: the caller acts at once).
        trio_token = trio.lowlevel.current_trio_token()
        with _LOCK:
            if self._cancelled:
                return None
            key = object()
            self._callbacks[key] = (trio_token, callback)
            return key

    def _unregister(self, key: object) -> None:
        with _LOCK:
            self._callbacks.pop(key, None)

    async def wait(self) -> None:
        """Wait until the token is cancelled; return at once if it already is.

        Always a checkpoint. The same as Tokio's ``cancelled().await``.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     token = jobkit.CancellationToken()
            ...     async with trio.open_nursery() as nursery:
            ...         nursery.start_soon(token.wait)
            ...         await trio.sleep(5)
            ...         token.cancel()
            ...     return trio.current_time()
            >>> jobkit.testing.run_virtual(main)
            5.0
        """
        event = trio.Event()
        key = self._register(event.set)
        if key is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            await event.wait()
        finally:
            self._unregister(key)

    @contextlib.contextmanager
    def cancel_scope(self) -> Iterator[trio.CancelScope]:
        """Open a ``trio.CancelScope`` that is cancelled when the token is.

        Code inside the block is cancelled at its next checkpoint once the
        token is cancelled, and the block is then left quietly, as with any
        cancel scope (check ``scope.cancelled_caught``). If the token is
        already cancelled, the scope starts cancelled. Must be used inside
        trio.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     token = jobkit.CancellationToken()
            ...     async def shutdown_at(t):
            ...         await trio.sleep_until(t)
            ...         token.cancel()
            ...     async with trio.open_nursery() as nursery:
            ...         nursery.start_soon(shutdown_at, 7)
            ...         with token.cancel_scope() as scope:
            ...             await trio.sleep(3600)
            ...     return scope.cancelled_caught, trio.current_time()
            >>> jobkit.testing.run_virtual(main)
            (True, 7.0)
        """
        with trio.CancelScope() as scope:
            key = self._register(scope.cancel)
            if key is None:
                scope.cancel()
            try:
                yield scope
            finally:
                if key is not None:
                    self._unregister(key)

    async def run_until_cancelled(
        self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts
    ) -> T | None:
        """Run ``await fn(*args)`` and return its value, or ``None`` if cancelled first.

        If the token is cancelled while ``fn`` runs, ``fn`` is cancelled
        and ``None`` is returned. If the token is already cancelled, ``fn``
        is not called at all. (A function that itself returns ``None`` is
        best raced with :meth:`cancel_scope` instead.) This is the trio form
        of Tokio's ``select!`` between a future and ``cancelled()``; with a
        cancel-safe ``fn`` such as ``Interval.tick`` nothing is lost.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     token = jobkit.CancellationToken()
            ...     ticker = jobkit.interval(60.0)
            ...     seen = []
            ...     async def shutdown_at(t):
            ...         await trio.sleep_until(t)
            ...         token.cancel()
            ...     async with trio.open_nursery() as nursery:
            ...         nursery.start_soon(shutdown_at, 150)
            ...         while True:
            ...             t = await token.run_until_cancelled(ticker.tick)
            ...             if t is None:
            ...                 break
            ...             seen.append(t)
            ...     return seen, trio.current_time()
            >>> jobkit.testing.run_virtual(main)
            ([0.0, 60.0, 120.0], 150.0)
        """
        if self._cancelled:
            await trio.lowlevel.checkpoint()
            return None
        with self.cancel_scope():
            return await fn(*args)
        return None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "active"
        return f"<jobkit.CancellationToken {state}>"


def _dispatch(callbacks: list[_Callback]) -> None:
    try:
        here: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
    except RuntimeError:
        here = None
    for trio_token, callback in callbacks:
        if trio_token is here:
            # Same run: act now, so that after cancel() returns every scope
            # tied to the token is already cancelled.
            callback()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                trio_token.run_sync_soon(callback)


@contextlib.asynccontextmanager
async def cancel_on_signals(
    token: CancellationToken,
    signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
) -> AsyncIterator[CancellationToken]:
    """Turn SIGINT and SIGTERM into ``token.cancel()`` for the duration of a block.

    While the ``async with`` block runs, the first of ``signals`` to arrive
    cancels the token (and is logged on the ``jobkit`` logger) instead of
    killing the program, so the code inside can shut down gracefully: stop
    taking work, finish the current job, release its lease. When the block
    is left the previous signal handlers come back.

    A signal that arrives when the token is already cancelled means "stop
    now": the block is cancelled at its next checkpoint and
    ``KeyboardInterrupt`` is raised from the ``async with``, so a second
    Ctrl-C (or a second ``kill``) always ends a shutdown that takes too long.
    Signals that arrive together may be coalesced.

    An async context manager rather than a task to start in a nursery: the
    handlers are installed exactly as long as the block, and leaving it needs
    nobody to cancel a listener. Like ``trio.open_signal_receiver``, it must
    be used in the main thread. Yields ``token``.

    Example::

        >>> import os, signal, trio, jobkit
        >>> async def main():
        ...     token = jobkit.CancellationToken()
        ...     async with jobkit.cancel_on_signals(token):
        ...         os.kill(os.getpid(), signal.SIGTERM)  # as `kill <pid>` would
        ...         await token.wait()
        ...         return "shutting down gracefully"
        >>> trio.run(main)
        'shutting down gracefully'
    """
    wanted = tuple(signals)
    if not wanted:
        raise ValueError("cancel_on_signals needs at least one signal, got none")
    forced = False
    body_error: BaseException | None = None
    with trio.open_signal_receiver(*wanted) as receiver:
        async with trio.open_nursery() as nursery:

            async def relay() -> None:
                nonlocal forced
                async for signum in receiver:
                    name = signal.Signals(signum).name
                    if token.cancelled:
                        logger.warning("%s during shutdown: stopping now", name)
                        forced = True
                        nursery.cancel_scope.cancel()
                        return
                    logger.info("%s received: shutting down", name)
                    token.cancel()

            nursery.start_soon(relay)
            try:
                yield token
            except BaseException as exc:
                # Re-raised below, outside the nursery, so that the caller
                # gets the body's own exception rather than an ExceptionGroup.
                body_error = exc
            finally:
                nursery.cancel_scope.cancel()
    if forced:
        raise KeyboardInterrupt
    if body_error is not None:
        try:
            raise body_error
        finally:
            body_error = None
