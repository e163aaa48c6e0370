"""Retry policies and backoff: pure functions of ``(attempt, previous, rng)``.

Nothing here sleeps, reads a clock or touches a store. The queue, the worker,
the simulator and the charts all call the same two methods,
:meth:`Backoff.delay` and :meth:`RetryPolicy.decide`, so what a chart shows is
what the worker does.
"""

from __future__ import annotations

import html
import math
import operator
import random
from datetime import timedelta
from fractions import Fraction
from typing import Literal, TypeAlias

import attrs

from . import _html
from ._checks import int_at_least
from ._duration import seconds

__all__ = ["Backoff", "Jitter", "Permanent", "RetryLater", "RetryPolicy"]

Jitter: TypeAlias = Literal["full", "equal", "decorrelated"]
"""How a :class:`Backoff` randomizes its delays; ``None`` means no jitter."""

_Kind: TypeAlias = Literal["constant", "linear", "exponential"]

_JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated")
_KINDS: tuple[_Kind, ...] = ("constant", "linear", "exponential")
# Each kind calls its first duration something different; errors use the
# name the caller typed.
_BASE_NAME: dict[_Kind, str] = {
    "constant": "delay",
    "linear": "step",
    "exponential": "base",
}


def _seconds(value: float | timedelta, name: str) -> float:
    """Convert a duration given as seconds or a timedelta into float seconds."""
    return seconds(value, name, finite=True, wording="duration")


def _check_attempt(attempt: int) -> int:
    try:
        number = operator.index(attempt)
    except TypeError:
        raise TypeError(f"attempt must be an int, got {attempt!r}") from None
    if isinstance(attempt, bool) or number < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt!r}")
    return number


@attrs.frozen(repr=False)
class Backoff:
    """How long to wait after a failed attempt before trying again.

    A pure, immutable policy: :meth:`delay` maps the number of the attempt
    that just failed (1 for the first) to a wait in seconds, drawing any
    randomness from the ``rng`` the caller passes, so a seeded
    :class:`random.Random` replays the same delays. Build one with
    :meth:`constant`, :meth:`linear` or :meth:`exponential`; every duration
    may be given as float seconds or as a :class:`~datetime.timedelta`.

    First the kind gives the un-jittered value ``v`` for attempt ``n``:

    - constant: ``v = delay``
    - linear: ``v = min(cap, step * n)``
    - exponential: ``v = min(cap, base * factor ** (n - 1))``

    then the jitter turns it into the delay:

    - ``None``: ``v``
    - ``"full"``: ``uniform(0, v)``
    - ``"equal"``: ``v / 2 + uniform(0, v / 2)``
    - ``"decorrelated"``: ``min(cap, uniform(base, previous * 3))``, where
      ``base`` is the kind's first duration, ``previous`` is the delay used
      after the previous attempt (``base`` when there was none), and the
      attempt number plays no part.

    Jitter spreads the retries of many jobs that failed together, so they do
    not hit a recovering service in synchronized waves. :meth:`bounds` gives
    the interval each delay lies in.

    Example::

        >>> import random
        >>> backoff = Backoff.exponential(1, 60)
        >>> [backoff.delay(n, rng=random.Random(0)) for n in range(1, 9)]
        [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
        >>> jittered = Backoff.exponential(1, 60, jitter="full")
        >>> jittered.bounds(4)
        (0.0, 8.0)
        >>> 0 <= jittered.delay(4, rng=random.Random(7)) <= 8
        True
    """

    kind: _Kind
    base: float
    cap: float
    factor: float = 2.0
    jitter: Jitter | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.jitter is not None and self.jitter not in _JITTERS:
            raise ValueError(
                f"jitter must be None or one of {_JITTERS}, got {self.jitter!r}"
            )
        base_name = _BASE_NAME[self.kind]
        for name, value in ((base_name, self.base), ("cap", self.cap)):
            if isinstance(value, bool) or not isinstance(value, float):
                raise TypeError(f"{name} must be a float, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{name} must be a finite duration >= 0, got {value!r}"
                )
        if self.cap < self.base:
            raise ValueError(
                f"cap must be >= {base_name} ({self.base!r}), got {self.cap!r}"
            )
        if (
            isinstance(self.factor, bool)
            or not isinstance(self.factor, int | float)
            or not math.isfinite(self.factor)
            or self.factor < 1
        ):
            raise ValueError(
                f"factor must be a finite number >= 1, got {self.factor!r}"
            )

    @classmethod
    def constant(
        cls, delay: float | timedelta, *, jitter: Jitter | None = None
    ) -> Backoff:
        """Wait the same ``delay`` after every attempt (before jitter).

        Example::

            >>> import random
            >>> Backoff.constant(5).delay(3, rng=random.Random(0))
            5.0
        """
        seconds = _seconds(delay, "delay")
        return cls("constant", seconds, seconds, 1.0, jitter)

    @classmethod
    def linear(
        cls,
        step: float | timedelta,
        cap: float | timedelta,
        *,
        jitter: Jitter | None = None,
    ) -> Backoff:
        """Wait ``min(cap, step * attempt)``: one more ``step`` per failure.

        Example::

            >>> import random
            >>> backoff = Backoff.linear(10, 25)
            >>> [backoff.delay(n, rng=random.Random(0)) for n in (1, 2, 3)]
            [10.0, 20.0, 25.0]
        """
        return cls("linear", _seconds(step, "step"), _seconds(cap, "cap"), 1.0, jitter)

    @classmethod
    def exponential(
        cls,
        base: float | timedelta,
        cap: float | timedelta,
        factor: float = 2.0,
        *,
        jitter: Jitter | None = None,
    ) -> Backoff:
        """Wait ``min(cap, base * factor ** (attempt - 1))``.

        Example::

            >>> import random
            >>> from datetime import timedelta
            >>> backoff = Backoff.exponential(timedelta(seconds=2), 100, factor=3)
            >>> [backoff.delay(n, rng=random.Random(0)) for n in (1, 2, 3, 4, 5)]
            [2.0, 6.0, 18.0, 54.0, 100.0]
        """
        return cls(
            "exponential", _seconds(base, "base"), _seconds(cap, "cap"), factor, jitter
        )

    def nominal(self, attempt: int) -> float:
        """Return the un-jittered value ``v`` for ``attempt``, never above ``cap``.

        Huge attempt numbers are fine: the growth is compared with the cap
        before it is computed, so nothing overflows.

        Example::

            >>> Backoff.exponential(1, 300).nominal(10**18)
            300.0
        """
        attempt = _check_attempt(attempt)
        if self.kind == "constant":
            return self.base
        if self.kind == "linear":
            # Exact rational arithmetic: step * attempt may not fit in a float
            # even though the capped result always does.
            value = Fraction(self.base) * attempt
            return self.cap if value >= Fraction(self.cap) else float(value)
        if self.base == 0 or self.factor == 1:
            return self.base
        exponent = attempt - 1
        # factor ** exponent overflows long before the comparison does:
        # compare the exponent with log_factor(cap / base) instead.
        limit = (math.log(self.cap) - math.log(self.base)) / math.log(self.factor)
        if exponent >= limit:
            return self.cap
        try:
            value_f = self.base * self.factor**exponent
        except OverflowError:
            # Only when cap / base itself exceeds the float range.
            value_f = math.exp(math.log(self.base) + exponent * math.log(self.factor))
        return min(self.cap, value_f)

    def bounds(
        self, attempt: int, previous: float | timedelta | None = None
    ) -> tuple[float, float]:
        """Return ``(lo, hi)``, the closed interval that :meth:`delay` lies in.

        Tests and the simulator's trace checks use it to assert that every
        recorded wait obeys the policy's formula.

        Example::

            >>> Backoff.exponential(1, 60, jitter="equal").bounds(3)
            (2.0, 4.0)
            >>> Backoff.exponential(1, 60, jitter="decorrelated").bounds(5, previous=8)
            (1.0, 24.0)
        """
        if self.jitter == "decorrelated":
            _check_attempt(attempt)
            prev = self.base if previous is None else _seconds(previous, "previous")
            lo, hi = sorted((self.base, prev * 3))
            return min(self.cap, lo), min(self.cap, hi)
        v = self.nominal(attempt)
        if self.jitter == "full":
            return 0.0, v
        if self.jitter == "equal":
            return v / 2, v
        return v, v

    def delay(
        self,
        attempt: int,
        *,
        previous: float | timedelta | None = None,
        rng: random.Random,
    ) -> float:
        """Return the seconds to wait after failed attempt number ``attempt``.

        ``attempt`` counts from 1. ``previous`` is the delay chosen after the
        previous attempt; only decorrelated jitter reads it. ``rng`` is
        required, and is the only source of randomness: pass a seeded
        :class:`random.Random` for reproducible delays, or a
        :class:`random.SystemRandom` when nothing needs replaying.

        Example::

            >>> import random
            >>> backoff = Backoff.exponential(1, 60, jitter="full")
            >>> first = [backoff.delay(n, rng=random.Random(42)) for n in (1, 2, 3)]
            >>> again = [backoff.delay(n, rng=random.Random(42)) for n in (1, 2, 3)]
            >>> first == again
            True
        """
        lo, hi = self.bounds(attempt, previous)
        if self.jitter is None:
            return hi
        if self.jitter == "full":
            drawn = rng.uniform(0.0, hi)
        elif self.jitter == "equal":
            drawn = hi / 2 + rng.uniform(0.0, hi / 2)
        else:
            prev = self.base if previous is None else _seconds(previous, "previous")
            drawn = min(self.cap, rng.uniform(self.base, prev * 3))
        # uniform() may land one rounding step past its end point; the
        # documented bounds are a promise, so hold to them exactly.
        return min(hi, max(lo, drawn))

    def delays(self, count: int, *, rng: random.Random) -> list[float]:
        """Return the delays after attempts ``1..count``, each fed the previous one.

        This is the sequence one job sees when it keeps failing, and what
        charts of a policy plot.

        Example::

            >>> import random
            >>> Backoff.linear(1, 3).delays(4, rng=random.Random(0))
            [1.0, 2.0, 3.0, 3.0]
        """
        if isinstance(count, bool) or operator.index(count) < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        out: list[float] = []
        previous: float | None = None
        for attempt in range(1, count + 1):
            previous = self.delay(attempt, previous=previous, rng=rng)
            out.append(previous)
        return out

    def envelope(self, attempts: int = 10) -> list[tuple[float, float]]:
        """Return ``(lowest, highest)`` wait after each of ``attempts`` failures.

        For no, full and equal jitter that is :meth:`bounds`; decorrelated
        jitter draws from an interval that depends on the previous wait, so
        its envelope is every value a wait can have reached by then, from
        ``base`` up to ``min(cap, base * 3**n)``.

        Example::

            >>> Backoff.exponential(1, 60, jitter="decorrelated").envelope(4)
            [(1.0, 3.0), (1.0, 9.0), (1.0, 27.0), (1.0, 60.0)]
            >>> Backoff.exponential(1, 60, jitter="equal").envelope(3)
            [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]
        """
        out: list[tuple[float, float]] = []
        reach = self.base
        for attempt in range(1, int_at_least(attempts, "attempts", 1) + 1):
            if self.jitter == "decorrelated":
                reach = min(self.cap, reach * 3)
                out.append((min(self.base, self.cap), reach))
            else:
                out.append(self.bounds(attempt))
        return out

    def _svg(self, attempts: int) -> str:
        spans = self.envelope(attempts)
        return _html.envelope_svg(
            [lo for lo, _ in spans],
            [hi for _, hi in spans],
            [self.nominal(n) for n in range(1, attempts + 1)],
        )

    def _repr_html_(self) -> str:
        return (
            f"<div><code>{html.escape(repr(self))}</code><br>"
            "the waits after failed attempts 1 to 10: the line without jitter, "
            "the band what jitter may draw</div>" + self._svg(10)
        )

    def __repr__(self) -> str:
        jitter = "" if self.jitter is None else f", jitter={self.jitter!r}"
        if self.kind == "constant":
            return f"Backoff.constant({self.base!r}{jitter})"
        if self.kind == "linear":
            return f"Backoff.linear({self.base!r}, {self.cap!r}{jitter})"
        return (
            f"Backoff.exponential({self.base!r}, {self.cap!r}, "
            f"factor={self.factor!r}{jitter})"
        )


class RetryLater(Exception):
    """Raised by a handler to ask for another attempt, optionally after ``delay``.

    With ``delay=None`` the policy's backoff chooses the wait. The attempt
    still counts: once the job has used ``max_attempts`` it is dead even if
    it asked to retry, so a handler cannot loop forever. The request holds
    even when ``retry_on`` or ``give_up_on`` would say otherwise, since the
    handler asked for it explicitly.

    Example::

        >>> import random
        >>> policy = RetryPolicy(3, Backoff.constant(10))
        >>> policy.decide(RetryLater(delay=2.5), 1, rng=random.Random(0))
        2.5
        >>> policy.decide(RetryLater(), 1, rng=random.Random(0))
        10.0
    """

    delay: float | None

    def __init__(self, delay: float | timedelta | None = None) -> None:
        self.delay = None if delay is None else _seconds(delay, "delay")
        super().__init__(delay)

    def __str__(self) -> str:
        if self.delay is None:
            return "retry requested"
        return f"retry requested in {self.delay:g}s"


class Permanent(Exception):
    """Raised by a handler for a failure that retrying cannot fix.

    The job goes straight to dead, whatever attempts it has left. Chain the
    original error with ``raise Permanent(...) from err`` to keep it.

    Example::

        >>> import random
        >>> policy = RetryPolicy(5, Backoff.constant(1))
        >>> print(policy.decide(Permanent("no such user"), 1, rng=random.Random(0)))
        None
    """


def _exception_types(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"expected exception classes, got {t!r}")
    return types


@attrs.frozen
class RetryPolicy:
    """Decide, after a failed attempt, whether to retry a job and after how long.

    ``max_attempts`` counts every attempt including the first, so
    ``max_attempts=1`` never retries. :meth:`decide` gives up (returns
    ``None``, the job goes dead) when any of these hold, in this order:

    1. the attempt that failed was attempt ``max_attempts`` or later;
    2. the error is a :class:`Permanent`;
    3. the error is an instance of one of ``give_up_on``;
    4. the error is not an instance of one of ``retry_on``

    except that a :class:`RetryLater` skips checks 3 and 4. Otherwise it
    returns the backoff's delay, or the one the :class:`RetryLater` carries.
    A job that runs past its timeout fails with :class:`trio.TooSlowError`,
    which goes through the same checks as any other error: the default
    ``retry_on=(Exception,)`` retries it.

    Example::

        >>> import random
        >>> policy = RetryPolicy(
        ...     max_attempts=3,
        ...     backoff=Backoff.exponential(1, 60),
        ...     retry_on=(OSError,),
        ... )
        >>> rng = random.Random(0)
        >>> policy.decide(ConnectionError("reset"), 1, rng=rng)
        1.0
        >>> policy.decide(ConnectionError("reset"), 2, rng=rng)
        2.0
        >>> print(policy.decide(ConnectionError("reset"), 3, rng=rng))
        None
        >>> print(policy.decide(KeyError("id"), 1, rng=rng))
        None
    """

    max_attempts: int = attrs.field()
    backoff: Backoff = attrs.field()
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_exception_types
    )
    give_up_on: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_exception_types
    )

    @max_attempts.validator
    def _check_max_attempts(self, _: attrs.Attribute[int], value: int) -> None:
        int_at_least(value, "max_attempts", 1)

    @backoff.validator
    def _check_backoff(self, _: attrs.Attribute[Backoff], value: Backoff) -> None:
        if not isinstance(value, Backoff):
            raise TypeError(f"backoff must be a Backoff, got {value!r}")

    @classmethod
    def default(cls) -> RetryPolicy:
        """Return the queue's default policy: 5 attempts, full-jitter exponential.

        Waits are drawn from ``uniform(0, min(300, 2 ** (attempt - 1)))``
        seconds, so a failing job is retried four times within about 15
        seconds at most before going dead; any exception is retried.

        Example::

            >>> RetryPolicy.default().max_attempts
            5
            >>> RetryPolicy.default().backoff
            Backoff.exponential(1.0, 300.0, factor=2.0, jitter='full')
        """
        return cls(5, Backoff.exponential(1, 300, jitter="full"))

    def _repr_html_(self) -> str:
        waits = max(1, self.max_attempts - 1)
        longest = sum(hi for _, hi in self.backoff.envelope(waits))
        names = ", ".join(t.__name__ for t in self.retry_on) or "nothing"
        pairs: list[tuple[str, object]] = [
            ("attempts", f"at most {self.max_attempts}, the first included"),
            ("backoff", repr(self.backoff)),
            ("retries", names),
        ]
        if self.give_up_on:
            pairs.append(
                ("gives up at once on", ", ".join(t.__name__ for t in self.give_up_on))
            )
        pairs.append(("dead within", f"{longest:g} s of the first failure, at most"))
        svg = self.backoff._svg(waits) if self.max_attempts > 1 else ""
        return _html.fields(pairs, title="RetryPolicy") + svg

    def decide(
        self,
        error: BaseException,
        attempt: int,
        *,
        previous_delay: float | timedelta | None = None,
        rng: random.Random,
    ) -> float | None:
        """Return the seconds to wait before retrying, or ``None`` to give up.

        ``attempt`` is the number of the attempt that just failed with
        ``error`` (1 for the first); ``previous_delay`` is the wait chosen
        after the attempt before it, for decorrelated jitter.

        Example::

            >>> import random
            >>> policy = RetryPolicy(2, Backoff.constant(30))
            >>> policy.decide(ValueError("flaky"), 1, rng=random.Random(0))
            30.0
            >>> print(policy.decide(ValueError("flaky"), 2, rng=random.Random(0)))
            None
        """
        attempt = _check_attempt(attempt)
        if attempt >= self.max_attempts or isinstance(error, Permanent):
            return None
        if isinstance(error, RetryLater):
            if error.delay is not None:
                return error.delay
        elif isinstance(error, self.give_up_on) or not isinstance(error, self.retry_on):
            return None
        return self.backoff.delay(attempt, previous=previous_delay, rng=rng)
