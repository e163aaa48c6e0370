"""Checks of arguments shared by every layer, so that they are worded alike.

Durations are float seconds or a :class:`datetime.timedelta` everywhere;
instants are seconds on a queue's clock (or an aware datetime where a person
gives one). Each check names the argument and what it must be.

Whole numbers that a store keeps (a job's priority, its attempts) must fit
the signed 64-bit integers of SQLite and PostgreSQL; checking them here, on
the way in, names the argument instead of letting a driver's OverflowError
escape from deep inside a store call.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "instant",
    "int_at_least",
    "seconds",
    "stored_int",
]

INT64_MAX = 2**63 - 1
"""The largest whole number a store keeps: a signed 64-bit integer."""
INT64_MIN = -(2**63)
"""The smallest whole number a store keeps."""


def _too_big(value: int, name: str) -> ValueError:
    return ValueError(
        f"{name} must fit in a signed 64-bit integer "
        f"({INT64_MIN} to {INT64_MAX}), got {value!r}"
    )


def int_at_least(value: object, name: str, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ValueError.

    A bool is refused although it is an int: ``workers=True`` is a mistake.
    So is a number beyond a signed 64-bit integer, which no store can keep.

    Example::

        >>> int_at_least(3, "workers", 1)
        3
        >>> int_at_least(0, "workers", 1)
        Traceback (most recent call last):
        ...
        ValueError: workers must be an int >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value > INT64_MAX:
        raise _too_big(value, name)
    return value


def stored_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int a store can keep (and >= ``minimum``).

    Raises TypeError for anything but an int (a bool included) and
    ValueError, naming ``name``, for one below ``minimum`` or outside a
    signed 64-bit integer.

    Example::

        >>> stored_int(-5, "priority")
        -5
        >>> stored_int(2**63, "priority")
        Traceback (most recent call last):
        ...
        ValueError: priority must fit in a signed 64-bit integer (-9223372036854775808 to 9223372036854775807), got 9223372036854775808
    """  # noqa: E501
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise _too_big(value, name)
    return value


def seconds(
    value: object,
    name: str,
    *,
    positive: bool = False,
    finite: bool = False,
    timedelta_ok: bool = True,
) -> float:
    """Return ``value`` as float seconds, or raise an error naming ``name``.

    ``value`` is an int or float of seconds or, if ``timedelta_ok``, a
    :class:`datetime.timedelta`; a bool is not a number here. NaN and
    negative values are refused, and zero too if ``positive``; infinity is
    refused only if ``finite``.

    Example::

        >>> seconds(timedelta(minutes=1), "delay")
        60.0
        >>> seconds(0, "period", positive=True)
        Traceback (most recent call last):
        ...
        ValueError: period must be > 0 seconds, got 0
        >>> seconds("1m", "delay")
        Traceback (most recent call last):
        ...
        TypeError: delay must be a number of seconds or a timedelta, got '1m'
    """
    if timedelta_ok and isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        kind = "a number of seconds" + (" or a timedelta" if timedelta_ok else "")
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    low_ok = result > 0 if positive else result >= 0  # False for NaN
    if not low_ok or (finite and math.isinf(result)):
        bound = "> 0" if positive else ">= 0"
        if finite:
            bound = f"finite and {bound}"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return result


def instant(value: object, name: str, *, datetime_ok: bool = False) -> float:
    """Return ``value`` as a finite time on a queue's clock, or raise naming ``name``.

    ``value`` is an int or float of the clock's seconds or, if
    ``datetime_ok``, a timezone-aware :class:`datetime.datetime` (a naive
    one is ambiguous and refused).

    Example::

        >>> instant(5, "start")
        5.0
        >>> instant(float("nan"), "start")
        Traceback (most recent call last):
        ...
        ValueError: start must be a finite time, got nan
    """
    if datetime_ok and isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{name} must be timezone-aware (a naive datetime is ambiguous), "
                f"got {value!r}"
            )
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite time, got {value!r}")
        return float(value)
    kind = "a time in the queue clock's seconds" + (
        " or an aware datetime" if datetime_ok else ""
    )
    raise TypeError(f"{name} must be {kind}, got {value!r}")
