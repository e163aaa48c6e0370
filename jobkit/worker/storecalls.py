"""Store calls that retry a busy or failing store with backoff, inside a deadline."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..core.retry import Backoff
from ..store.protocol import IncompatibleStore

logger = logging.getLogger("jobkit")

T = TypeVar("T")


class _GaveUp(Exception):
    """A store call failed after the worker stopped retrying them."""


#: What a store raises for data it cannot hold, rather than for being
#: unavailable: retrying the same call cannot help.
_REFUSED = (ValueError, TypeError, OverflowError, RecursionError)


class _StoreCaller:
    """Runs store calls; a failing call is logged and retried with backoff.

    Once :meth:`stop_retrying` is called (a stopping worker's grace is
    over), a failing call raises :class:`_GaveUp` instead, and a call
    waiting to retry tries once more at once.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._backoff = Backoff.exponential(0.05, 5.0, jitter="equal")
        self._stopped = trio.Event()

    def stop_retrying(self) -> None:
        self._stopped.set()

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        shield: bool = False,
        scope: trio.CancelScope | None = None,
        refused: tuple[type[Exception], ...] = (),
    ) -> T:
        """``fn()``'s result; errors of the ``refused`` types are raised at once.

        With ``shield``, each try runs shielded from cancellation: in
        ``scope``, if given (a scope of the calling task's that encloses
        this call), shielded for the try, else in a new shielded scope.
        """
        # ``fn`` is called afresh on every try, so each one reads the clock anew.
        failures = 0
        while True:
            try:
                if shield and scope is not None:
                    # Entering a new scope costs more than a MemoryStore
                    # settle of ten jobs; shielding one the task is in, far
                    # less.
                    scope.shield = True
                    try:
                        result = await fn()
                    finally:
                        scope.shield = False
                elif shield:
                    # A claim cancelled after its transaction committed would
                    # leave jobs leased to nobody: finish what was started.
                    with trio.CancelScope(shield=True):
                        result = await fn()
                else:
                    result = await fn()
            except refused:
                raise
            except IncompatibleStore:
                # A foreign or damaged store stays so: retrying cannot help.
                raise
            except Exception as exc:
                failures += 1
                if self._stopped.is_set():
                    logger.error(
                        "store %s failed while the worker stops; not retrying",
                        what,
                        exc_info=exc,
                        extra={"store_call": what, "failures": failures},
                    )
                    raise _GaveUp(what) from exc
                delay = self._backoff.delay(failures, rng=self._rng)
                if failures == 1:
                    logger.error(
                        "store %s failed; retrying in %.2fs",
                        what,
                        delay,
                        exc_info=exc,
                        extra={"store_call": what, "failures": failures},
                    )
                else:
                    logger.warning(
                        "store %s failed again (%d times in a row); "
                        "retrying in %.2fs: %s",
                        what,
                        failures,
                        delay,
                        exc,
                        extra={"store_call": what, "failures": failures},
                    )
                with trio.move_on_after(delay):
                    await self._stopped.wait()
            else:
                if failures:
                    logger.warning(
                        "store %s works again after %d failures",
                        what,
                        failures,
                        extra={"store_call": what, "failures": failures},
                    )
                return result
