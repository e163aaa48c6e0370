"""Periodic ticks on trio's clock, with Tokio's rules for ticks that come late."""

from __future__ import annotations

import enum
import math
from datetime import timedelta
from typing import Final

import trio

from .._checks import seconds

__all__ = ["Interval", "MissedTickBehavior", "interval"]

#: A tick counts as missed only when it is delivered more than this late. The
#: value is Tokio's: a consumer a hair late (scheduler jitter) keeps its grid.
MISSED_TICK_GRACE: Final = 0.005


class MissedTickBehavior(enum.Enum):
    """What an :class:`Interval` does after a tick was delivered late.

    A tick whose scheduled instant ``D`` is delivered at ``now > D + 0.005``
    (5 ms of grace) is *missed*: the work between two ticks overran the
    period, or the task was busy elsewhere. The behaviour decides the next
    deadline. With a period of 1 s, ticks due at 0, 1, 2, ... and a consumer
    that comes back to ``tick()`` at 3.5 s after the tick at 0:

    ========  =========================================  ==================
    BURST     next = ``D + period``                      1, 2, 3, 4, 5, ...
    DELAY     next = ``now + period``                    1, 4.5, 5.5, ...
    SKIP      next = first ``D + k·period`` after now    1, 4, 5, ...
    ========  =========================================  ==================

    (The tick due at 1 is always delivered at 3.5: it is the one that tells
    the interval that it is late.)

    Example::

        >>> import jobkit
        >>> jobkit.MissedTickBehavior.SKIP
        <MissedTickBehavior.SKIP: 'skip'>
        >>> jobkit.MissedTickBehavior("delay") is jobkit.MissedTickBehavior.DELAY
        True
    """

    BURST = "burst"
    DELAY = "delay"
    SKIP = "skip"


MissedTickBehavior.BURST.__doc__ = """Fire missed ticks back to back until caught up.

The schedule never moves: ticks stay on ``start + k·period``, and the ones
that fell due while the consumer was busy are delivered at once, one per
``tick()`` call, until the next deadline is in the future again. This is the
default (as in Tokio). Use it when every tick stands for a unit of work that
must happen, such as one sample per period or one token added to a bucket.
"""

MissedTickBehavior.DELAY.__doc__ = """Re-base the grid on the late tick: now + period.

Missed ticks are dropped and the grid moves, so two ticks are never closer
than one period once a tick was late. Use it when what matters is the rest
between two runs, such as polling a remote service politely.
"""

MissedTickBehavior.SKIP.__doc__ = """Drop the missed ticks and stay on the grid.

The next deadline is the first ``start + k·period`` strictly after now, so
the work runs at most once for all the ticks it missed, and keeps its
phase (a job meant for each full minute stays on full minutes). This is
what most maintenance tasks want: cache clean-ups, metric snapshots, health
pings.
"""


def _check_instant(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a time on trio's clock (float), got {value!r}")
    if math.isnan(value) or value == -math.inf:
        raise ValueError(f"{what} must be a finite time or math.inf, got {value!r}")
    return float(value)


class Interval:
    """A ticker that completes once per period, on a fixed grid of instants.

    Obtained from :func:`interval`. ``await ticker.tick()`` sleeps until the
    next scheduled instant and returns that instant (not the time it woke
    up); ``async for t in ticker`` does the same forever. What happens when
    the consumer falls behind is set by :attr:`missed_tick_behavior`.

    Times are seconds on ``trio.current_time()``, so an interval follows
    ``trio.testing.MockClock`` in tests and simulations. An interval belongs
    to the trio run it was created in; it is not safe to share between runs
    or threads.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def main():
        ...     ticker = jobkit.interval(2.0)
        ...     return [await ticker.tick() for _ in range(3)]
        >>> jobkit.testing.run_virtual(main)
        [0.0, 2.0, 4.0]
    """

    __slots__ = ("_anchor", "_behavior", "_generation", "_k", "_period", "_waiter")

    def __init__(
        self,
        period: float | timedelta,
        *,
        start: float | None = None,
        missed_tick_behavior: MissedTickBehavior = MissedTickBehavior.BURST,
    ) -> None:
        self._period = seconds(period, "period", positive=True)
        self.missed_tick_behavior = missed_tick_behavior
        if start is None:
            try:
                start = trio.current_time()
            except RuntimeError:
                raise RuntimeError(
                    "interval() without start= reads trio's clock, so it must be "
                    "called inside trio.run; pass start= to create it elsewhere"
                ) from None
        # The deadline is kept as anchor + k·period rather than by adding the
        # period to the previous deadline: one rounding per instant instead of
        # one per tick, so after a million ticks of 0.1 s the grid is still
        # exactly start + k·0.1 and SKIP never drifts off it.
        self._anchor = _check_instant(start, "start")
        self._k = 0
        # Bumped by every reset, so a tick() asleep on the old deadline notices.
        self._generation = 0
        self._waiter: trio.CancelScope | None = None

    @property
    def period(self) -> float:
        """The period in seconds.

        Example::

            >>> import datetime, jobkit
            >>> jobkit.interval(datetime.timedelta(minutes=5), start=0.0).period
            300.0
        """
        return self._period

    @property
    def missed_tick_behavior(self) -> MissedTickBehavior:
        """What happens after a tick is delivered late; settable at any time.

        Example::

            >>> import jobkit
            >>> ticker = jobkit.interval(300, start=0.0)
            >>> ticker.missed_tick_behavior = jobkit.MissedTickBehavior.SKIP
            >>> ticker.missed_tick_behavior
            <MissedTickBehavior.SKIP: 'skip'>
        """
        return self._behavior

    @missed_tick_behavior.setter
    def missed_tick_behavior(self, behavior: MissedTickBehavior) -> None:
        if not isinstance(behavior, MissedTickBehavior):
            raise TypeError(
                f"missed_tick_behavior must be a jobkit.MissedTickBehavior, "
                f"got {behavior!r}"
            )
        self._behavior = behavior

    @property
    def deadline(self) -> float:
        """The instant the next tick is scheduled for (``math.inf``: never).

        Example::

            >>> import jobkit
            >>> jobkit.interval(5.0, start=10.0).deadline
            10.0
        """
        return self._grid(self._k)

    def _grid(self, k: int) -> float:
        # k == 0 is special-cased because 0 * inf is NaN.
        return self._anchor if k == 0 else self._anchor + k * self._period

    def _rebase(self, instant: float) -> None:
        self._anchor = instant
        self._k = 0
        self._generation += 1
        if self._waiter is not None:
            self._waiter.deadline = instant

    async def tick(self) -> float:
        """Wait for the next scheduled instant and return it.

        The returned value is the instant the tick was due, which may be
        earlier than ``trio.current_time()`` when the caller is late. The
        next deadline then follows :attr:`missed_tick_behavior`. Always a
        checkpoint.

        Cancel-safe: if the wait is cancelled, no tick is consumed and the
        next call returns the same instant, so ``tick()`` can be raced
        against shutdown (see ``CancellationToken.run_until_cancelled``).
        A reset made while a task waits here applies to that wait. Only one
        task may wait at a time; a second gets ``trio.BusyResourceError``.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     ticker = jobkit.interval(1.0)
            ...     await ticker.tick()
            ...     await trio.sleep(2.5)         # the work overran
            ...     late = await ticker.tick()    # due at 1.0, delivered at 2.5
            ...     return late, trio.current_time(), ticker.deadline
            >>> jobkit.testing.run_virtual(main)
            (1.0, 2.5, 2.0)
        """
        if self._waiter is not None:
            raise trio.BusyResourceError(
                "another task is already waiting in this interval's tick()"
            )
        while True:
            generation = self._generation
            due = self._grid(self._k)
            # Cancellation can only strike inside this await, before any
            # state changes: that is the whole of the cancel-safety guarantee.
            with trio.CancelScope(deadline=due) as self._waiter:
                try:
                    await trio.sleep_forever()
                finally:
                    self._waiter = None
            if generation == self._generation:
                break
            # A reset moved the deadline while we slept: wait for the new one.
        now = trio.current_time()
        if now > due + MISSED_TICK_GRACE:
            self._schedule_after_miss(now)
        else:
            self._k += 1
        return due

    def _schedule_after_miss(self, now: float) -> None:
        behavior = self._behavior
        if behavior is MissedTickBehavior.BURST:
            self._k += 1
        elif behavior is MissedTickBehavior.DELAY:
            self._rebase(now + self._period)
        else:
            # First grid point strictly after now. When now lands exactly on
            # a grid point that point is dropped too (it is not after now),
            # as in Tokio's `now + period - (now - D) % period`.
            if math.isinf(self._period):
                self._k = 1
                return
            k = max(self._k + 1, math.floor((now - self._anchor) / self._period) + 1)
            # The division rounds; settle k on the exact float comparison.
            while self._grid(k) <= now:
                k += 1
            while k - 1 > self._k and self._grid(k - 1) > now:
                k -= 1
            self._k = k

    def reset(self) -> None:
        """Schedule the next tick one period from now, and the grid from there.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     ticker = jobkit.interval(10.0)
            ...     await ticker.tick()
            ...     await trio.sleep(3)
            ...     ticker.reset()
            ...     return await ticker.tick()
            >>> jobkit.testing.run_virtual(main)
            13.0
        """
        self._rebase(trio.current_time() + self._period)

    def reset_immediately(self) -> None:
        """Schedule the next tick for now, and the grid from there.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     ticker = jobkit.interval(10.0)
            ...     await ticker.tick()
            ...     await trio.sleep(3)
            ...     ticker.reset_immediately()
            ...     return [await ticker.tick(), await ticker.tick()]
            >>> jobkit.testing.run_virtual(main)
            [3.0, 13.0]
        """
        self._rebase(trio.current_time())

    def reset_after(self, delay: float | timedelta) -> None:
        """Schedule the next tick ``delay`` from now, and the grid from there.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> async def main():
            ...     ticker = jobkit.interval(10.0)
            ...     await ticker.tick()
            ...     ticker.reset_after(0.25)
            ...     return [await ticker.tick(), await ticker.tick()]
            >>> jobkit.testing.run_virtual(main)
            [0.25, 10.25]
        """
        delay_seconds = seconds(delay, "delay")
        self._rebase(trio.current_time() + delay_seconds)

    def reset_at(self, deadline: float) -> None:
        """Schedule the next tick at ``deadline`` (trio time), and the grid from there.

        A deadline in the past makes the next tick complete at once; if it is
        more than the grace in the past, that tick counts as missed.

        Example::

            >>> import jobkit, jobkit.testing
            >>> async def main():
            ...     ticker = jobkit.interval(10.0)
            ...     ticker.reset_at(7.0)
            ...     return [await ticker.tick(), await ticker.tick()]
            >>> jobkit.testing.run_virtual(main)
            [7.0, 17.0]
        """
        self._rebase(_check_instant(deadline, "deadline"))

    def __aiter__(self) -> Interval:
        return self

    async def __anext__(self) -> float:
        return await self.tick()

    def __repr__(self) -> str:
        return (
            f"<jobkit.Interval period={self._period!r} "
            f"next={self.deadline!r} {self._behavior.name}>"
        )


def interval(
    period: float | timedelta,
    *,
    start: float | None = None,
    missed_tick_behavior: MissedTickBehavior = MissedTickBehavior.BURST,
) -> Interval:
    """Return an :class:`Interval` that ticks every ``period``, first at ``start``.

    ``period`` is seconds (float) or a ``datetime.timedelta`` and must be
    > 0. ``start`` is an instant on trio's clock and defaults to now, so the
    first ``tick()`` completes at once. Without ``start`` it must be called
    inside ``trio.run``.

    ``period=math.inf`` is allowed: the interval ticks once, at ``start``, and
    then waits forever (Tokio does the same, up to its "far future" of about
    30 years). A reset then schedules exactly one more tick.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> async def cleanup_every_five_minutes():
        ...     ticker = jobkit.interval(
        ...         300, missed_tick_behavior=jobkit.MissedTickBehavior.SKIP
        ...     )
        ...     ran_at = []
        ...     async for instant in ticker:
        ...         ran_at.append(instant)
        ...         if len(ran_at) == 3:
        ...             return ran_at
        >>> jobkit.testing.run_virtual(cleanup_every_five_minutes)
        [0.0, 300.0, 600.0]
    """
    return Interval(period, start=start, missed_tick_behavior=missed_tick_behavior)
