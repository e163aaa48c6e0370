"""Checks of arguments shared by every area, so that they are worded alike.

Whole numbers that a store keeps (a job's priority, its attempts) must fit
the signed 64-bit integers of SQLite and PostgreSQL; checking them here, on
the way in, names the argument instead of letting a driver's OverflowError
escape from deep inside a store call.
"""

from __future__ import annotations

__all__ = ["INT64_MAX", "INT64_MIN", "int_at_least", "stored_int"]

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
