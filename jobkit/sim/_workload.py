"""Workloads: when jobs arrive in a simulation.

A workload turns a random stream into a sorted list of arrival times. The
simulation's producer enqueues one job at each of them through the real
:class:`jobkit.Queue` (the jobs that arrive at the same instant in one
atomic call). Workloads add up: ``Burst(500) + Steady(1, duration=3600)``.
"""

from __future__ import annotations

import abc
import heapq
import math
import random

import attrs

from .._checks import int_at_least, seconds

__all__ = ["Burst", "Mix", "Poisson", "Steady", "Workload"]


def _count(value: int | None, name: str = "count") -> int | None:
    if value is None:
        return None
    return int_at_least(value, name, 0)


class Workload(abc.ABC):
    """When jobs arrive: the base of :class:`Burst`, :class:`Steady`, :class:`Poisson`.

    Subclass it and implement :meth:`arrivals` for a pattern of your own.

    Example::

        >>> from jobkit.sim import Burst
        >>> import random
        >>> (Burst(2) + Burst(1, at=5.0)).arrivals(random.Random(0))
        [0.0, 0.0, 5.0]
    """

    @abc.abstractmethod
    def arrivals(self, rng: random.Random) -> list[float]:
        """Return the arrival times, sorted, drawing any randomness from ``rng``."""

    def __add__(self, other: Workload) -> Mix:
        if not isinstance(other, Workload):
            return NotImplemented
        left = self.parts if isinstance(self, Mix) else (self,)
        right = other.parts if isinstance(other, Mix) else (other,)
        return Mix(*left, *right)


@attrs.frozen
class Burst(Workload):
    """``n`` jobs that all arrive at the same instant ``at``.

    Example::

        >>> from jobkit.sim import Burst
        >>> import random
        >>> Burst(3, at=10).arrivals(random.Random(0))
        [10.0, 10.0, 10.0]
    """

    n: int = attrs.field()
    at: float = attrs.field(default=0.0)

    def __attrs_post_init__(self) -> None:
        _count(self.n, "n")
        object.__setattr__(
            self, "at", seconds(self.at, "at", finite=True, timedelta_ok=False)
        )

    def arrivals(self, rng: random.Random) -> list[float]:
        """Return ``n`` copies of ``at``."""
        return [self.at] * self.n


def _limits(count: int | None, duration: float | None) -> None:
    _count(count)
    if duration is not None:
        seconds(duration, "duration", finite=True, timedelta_ok=False)
    if count is None and duration is None:
        raise ValueError("give count=, duration= or both, so the workload ends")


@attrs.frozen
class _Rated(Workload):
    """Jobs at ``rate`` per second from ``start``, until ``count`` or ``duration``."""

    rate: float = attrs.field()
    count: int | None = attrs.field(default=None, kw_only=True)
    duration: float | None = attrs.field(default=None, kw_only=True)
    start: float = attrs.field(default=0.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        seconds(self.rate, "rate", positive=True, finite=True, timedelta_ok=False)
        seconds(self.start, "start", finite=True, timedelta_ok=False)
        _limits(self.count, self.duration)

    def _bounds(self) -> tuple[float, float]:
        """How many arrivals at most, and the instant they stop at."""
        n = math.inf if self.count is None else self.count
        end = math.inf if self.duration is None else self.start + self.duration
        return n, end


@attrs.frozen
class Steady(_Rated):
    """One job every ``1 / rate`` seconds from ``start``, like a metronome.

    It stops after ``count`` jobs or at ``start + duration``, whichever comes
    first (at least one of the two is required).

    Example::

        >>> from jobkit.sim import Steady
        >>> import random
        >>> Steady(2.0, count=4, start=1.0).arrivals(random.Random(0))
        [1.0, 1.5, 2.0, 2.5]
        >>> len(Steady(1.0, duration=86_400).arrivals(random.Random(0)))
        86400
    """

    def arrivals(self, rng: random.Random) -> list[float]:
        """Return the evenly spaced arrival times."""
        n, end = self._bounds()
        times: list[float] = []
        i = 0
        # i / rate rather than a running sum, so the grid does not drift.
        while i < n:
            t = self.start + i / self.rate
            if t >= end:
                break
            times.append(t)
            i += 1
        return times


@attrs.frozen
class Poisson(_Rated):
    """Jobs that arrive independently at ``rate`` per second on average.

    The gaps between arrivals are exponentially distributed, as for
    requests from many independent users. Bounded by ``count`` jobs and/or
    ``duration`` seconds, as :class:`Steady`.

    Example::

        >>> from jobkit.sim import Poisson
        >>> import random
        >>> times = Poisson(10.0, duration=100).arrivals(random.Random(1))
        >>> 900 < len(times) < 1100, times == sorted(times)
        (True, True)
    """

    def arrivals(self, rng: random.Random) -> list[float]:
        """Return arrival times with exponential gaps drawn from ``rng``."""
        n, end = self._bounds()
        times: list[float] = []
        t = self.start
        while len(times) < n:
            t += rng.expovariate(self.rate)
            if t >= end:
                break
            times.append(t)
        return times


class Mix(Workload):
    """Several workloads at once; made by adding workloads together.

    Example::

        >>> from jobkit.sim import Burst, Steady
        >>> import random
        >>> mix = Steady(1.0, count=3) + Burst(2, at=1.0)
        >>> mix.arrivals(random.Random(0))
        [0.0, 1.0, 1.0, 1.0, 2.0]
    """

    __slots__ = ("parts",)

    def __init__(self, *parts: Workload) -> None:
        for part in parts:
            if not isinstance(part, Workload):
                raise TypeError(f"Mix takes Workload objects, got {part!r}")
        self.parts: tuple[Workload, ...] = parts

    def arrivals(self, rng: random.Random) -> list[float]:
        """Return every part's arrivals, merged in time order."""
        return list(heapq.merge(*(part.arrivals(rng) for part in self.parts)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mix):
            return NotImplemented
        return self.parts == other.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __repr__(self) -> str:
        return " + ".join(repr(part) for part in self.parts)
