"""Random numbers keyed by what they are for, not by when they are drawn.

A simulation with many tasks cannot share one random stream: the order in
which tasks draw from it would depend on the scheduler, and a single extra
draw anywhere would shift every later outcome. Instead each decision gets its
own small stream, seeded by mixing the run's seed with a key that names the
decision (which fault, which job, which attempt). The same key always gives
the same numbers, whatever ran before, and the same job meets the same luck
in two runs that differ only in their retry policy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _finalize(x: int) -> int:
    # splitmix64's output function: a fast, well-mixed 64-bit permutation.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def derive(seed: int, *keys: int) -> int:
    """Mix ``seed`` and ``keys`` into one 64-bit integer; order matters.

    Example::

        >>> from jobkit.sim._rng import derive
        >>> derive(1, 2, 3) == derive(1, 2, 3)
        True
        >>> derive(1, 2, 3) == derive(1, 3, 2)
        False
    """
    return _mix(_finalize((seed + _GOLDEN) & _MASK), keys)


def _mix(x: int, keys: Sequence[int]) -> int:
    for key in keys:
        # _finalize, inlined: mixing runs for every attempt of every fault.
        x = ((x ^ (key & _MASK)) + _GOLDEN) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x


class KeyedRandom(random.Random):
    """A :class:`random.Random` whose stream is fixed by ``derive(seed, *keys)``.

    It is a splitmix64 generator: cheap to create (one per job attempt is
    fine), and with all of :class:`random.Random`'s distributions
    (``uniform``, ``expovariate``, ``lognormvariate``, ``gauss``, ...) built
    on its :meth:`random`.

    Example::

        >>> from jobkit.sim import KeyedRandom
        >>> a = KeyedRandom(42, 7, 1)
        >>> b = KeyedRandom(42, 7, 1)
        >>> [a.random() for _ in range(3)] == [b.random() for _ in range(3)]
        True
        >>> KeyedRandom(42, 7, 2).random() == KeyedRandom(42, 7, 1).random()
        False
    """

    _state: int

    def __init__(self, seed: int = 0, *keys: int) -> None:
        self._state = derive(seed, *keys)
        self.gauss_next = None

    @classmethod
    def extending(cls, state: int, *keys: int) -> KeyedRandom:
        """Return ``KeyedRandom(seed, *first, *keys)`` from ``derive(seed, *first)``.

        A caller that draws many streams under one prefix (a fault's, for
        every attempt) derives the prefix once: each key mixed in costs as
        much as a draw.

        Example::

            >>> from jobkit.sim._rng import KeyedRandom, derive
            >>> a = KeyedRandom.extending(derive(42, 7), 1)
            >>> a.random() == KeyedRandom(42, 7, 1).random()
            True
        """
        rng = cls.__new__(cls)
        rng._state = _mix(state, keys)
        rng.gauss_next = None
        return rng

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Restart the stream from ``a`` (an int; None means 0)."""
        self._state = derive(0 if a is None else int(a))
        self.gauss_next = None

    def random(self) -> float:
        """Return the next float in ``[0, 1)``."""
        x = self._state = (self._state + _GOLDEN) & _MASK
        # _finalize, inlined.
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((x ^ (x >> 31)) >> 11) * (1.0 / (1 << 53))

    def getrandbits(self, k: int) -> int:
        """Return an int with ``k`` random bits."""
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        out = 0
        for shift in range(0, k, 64):
            self._state = (self._state + _GOLDEN) & _MASK
            out |= _finalize(self._state) << shift
        return out & ((1 << k) - 1)

    def getstate(self) -> tuple[Any, ...]:
        """Return the generator's state, for :meth:`setstate`."""
        return (self._state, self.gauss_next)

    def setstate(self, state: Sequence[Any]) -> None:
        """Restore a state returned by :meth:`getstate`."""
        self._state, self.gauss_next = int(state[0]), state[1]


def salt(name: str) -> int:
    """Turn a short name into a stable 64-bit key (independent of PYTHONHASHSEED).

    Example::

        >>> from jobkit.sim._rng import salt
        >>> salt("crash") == salt("crash"), salt("crash") == salt("latency")
        (True, False)
    """
    x = 0
    for byte in name.encode():
        x = _finalize(((x ^ byte) + _GOLDEN) & _MASK)
    return x
