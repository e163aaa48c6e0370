"""Checks of whole-number arguments, shared so that every area words them alike."""

from __future__ import annotations

__all__ = ["int_at_least"]


def int_at_least(value: object, name: str, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ValueError.

    A bool is refused although it is an int: ``workers=True`` is a mistake.

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
    return value
