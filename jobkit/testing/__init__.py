"""Helpers for tests, notebooks and experiments that run jobkit in virtual time.

Two suites check a store written outside jobkit the way jobkit checks its own
(they need the ``test`` extra, pytest and hypothesis, unlike this module):

- :mod:`jobkit.testing.store_contract`: the tests every store passes, as a
  class to subclass with a ``store`` fixture, and those of schedules for a
  store that keeps them;
- :mod:`jobkit.testing.store_model`: the stateful model test, in which
  hypothesis runs random sequences of operations on the store and on a model
  of the queue, which must agree after every step.

Both in one test module::

    # test_mystore.py
    import pytest
    from jobkit.testing.store_contract import ScheduleStoreContract, StoreContract
    from jobkit.testing.store_model import run_store_model

    class TestMyStore(StoreContract, ScheduleStoreContract):
        @pytest.fixture
        async def store(self):
            store = MyStore()
            yield store
            await store.aclose()

    def test_my_store_agrees_with_the_model():
        run_store_model(lambda directory: MyStore())
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
