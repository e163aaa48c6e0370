"""Group commit: what concurrent callers submit together shares one transaction.

A web server under load enqueues from many tasks at once. Each enqueue alone
is a transaction, and a transaction's cost is mostly fixed (the lock, the
commit, the pages at the tail of each index), so committing the enqueues that
arrive in the same scheduling pass together multiplies the rate. Each caller
still returns only after its own rows are committed, and gets its own ids.

The first caller of a group leads it: it yields once, so that the callers
ready to run in the same pass can join, then writes everyone's rows in one
call of ``write``. A single caller pays one checkpoint, which every store call
makes anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from .protocol import StoreError

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Group(Generic[Item, Result]):
    # Slots and no factories: a lone caller builds one per call.
    __slots__ = ("calls", "done", "results", "taken")

    def __init__(self, first: Sequence[Item]) -> None:
        self.calls: list[Sequence[Item] | None] = [first]
        self.taken = False
        # Made by the first caller to join: a lone leader needs none.
        self.done: trio.Event | None = None
        # Per call: its results, or the exception its call raises; None (the
        # leader was cancelled before writing) sends the caller round again.
        self.results: list[list[Result] | BaseException | None] = []

    def finish(self) -> None:
        if self.done is not None:
            self.done.set()


class GroupCommit(Generic[Item, Result]):
    """Writes the items concurrent callers submit in one call of ``write``.

    ``write`` takes the items of every call in the group, in order, and
    returns one result per item. When a group of several calls fails with
    anything but a :class:`StoreError` (the store's data refusing one item,
    say), each call is written again alone, so that a bad item fails only
    the call that brought it; a store that is unavailable fails them all.

    Cancellation keeps trio's promise: a call that raises ``Cancelled`` wrote
    nothing. A caller cancelled after its group's leader took its items waits
    (shielded) for that write and returns normally; the cancellation is then
    delivered at its next checkpoint.
    """

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[Result]]]) -> None:
        self._write = write
        self._open: _Group[Item, Result] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Write ``items`` with those of calls made meanwhile; return their results."""
        while True:
            group = self._open
            if group is None:
                result = await self._lead(items)
            else:
                result = await self._follow(group, items)
            if result is not None:
                return result

    async def _lead(self, items: Sequence[Item]) -> list[Result] | None:
        group: _Group[Item, Result] = _Group(items)
        self._open = group
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            # Nothing is written for this call; whoever joined leads again.
            group.calls[0] = None
            self._close(group)
            group.finish()
            raise
        self._close(group)
        group.taken = True
        if len(group.calls) == 1:
            # Nobody joined, and nobody can now: the write is this call's
            # alone, its result or exception its own.
            return await self._write(items if type(items) is list else list(items))
        try:
            await self._write_group(group)
        finally:
            group.finish()
        outcome = group.results[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _follow(
        self, group: _Group[Item, Result], items: Sequence[Item]
    ) -> list[Result] | None:
        index = len(group.calls)
        group.calls.append(items)
        if group.done is None:
            group.done = trio.Event()
        done = group.done
        try:
            await done.wait()
        except trio.Cancelled:
            if not group.taken:
                group.calls[index] = None
                raise
            with trio.CancelScope(shield=True):
                await done.wait()
        # None, or no results at all: nothing was written, go round again.
        outcome = group.results[index] if group.results else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _close(self, group: _Group[Item, Result]) -> None:
        if self._open is group:
            self._open = None

    async def _write_group(self, group: _Group[Item, Result]) -> None:
        calls = group.calls
        group.results = [None] * len(calls)
        try:
            flat = await self._write([item for call in calls if call for item in call])
        except StoreError as exc:
            group.results = [exc] * len(calls)
            return
        except Exception as exc:
            if sum(call is not None for call in calls) == 1:
                group.results = [exc] * len(calls)
                return
            # Some item was refused: write each call alone, to the end (a
            # cancellation now would leave some written and some not).
            with trio.CancelScope(shield=True):
                for i, call in enumerate(calls):
                    if call is not None:
                        try:
                            group.results[i] = await self._write(list(call))
                        except Exception as alone:
                            group.results[i] = alone
            return
        # A Cancelled above came before anything was committed: the results
        # stay None and every caller goes round again.
        start = 0
        for i, call in enumerate(calls):
            if call is not None:
                group.results[i] = flat[start : start + len(call)]
                start += len(call)
