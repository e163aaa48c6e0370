"""Helpers for tests, notebooks and experiments that run jobkit in virtual time.

:mod:`jobkit.testing.store_contract` holds the tests every store passes, for a
store written outside jobkit to run (it needs pytest, unlike this module).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple, Unpack

import trio
import trio.testing

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

__all__ = ["run_virtual"]


def run_virtual(
    async_fn: Callable[[Unpack[Ts]], Awaitable[T]],
    *args: *Ts,
    clock: trio.testing.MockClock | None = None,
) -> T:
    """Run ``async_fn(*args)`` under trio on a virtual clock and return its value.

    The clock jumps forward whenever every task is blocked, so an hour of
    sleeps takes no wall time and every instant is exact. This is how the
    book's notebooks run trio code in a cell.

    Example::

        >>> import trio, jobkit.testing
        >>> async def nap():
        ...     await trio.sleep(3600)
        ...     return trio.current_time()
        >>> jobkit.testing.run_virtual(nap)
        3600.0
    """
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(async_fn, *args, clock=clock)
