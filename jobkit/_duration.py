"""Durations given as float seconds or a timedelta, checked in one place.

Every module that takes a delay, a period or a timeout accepts the same two
spellings and refuses the same bad values; only the wording of the error has
grown apart between areas (and the tests pin each area's wording), so the
wording is chosen by the caller while the checks stay shared.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Literal, TypeAlias

__all__ = ["Wording", "seconds"]

Wording: TypeAlias = Literal["duration", "seconds", "bare"]
"""How the errors read.

``"duration"``: "delay must be seconds (float) or a timedelta", "delay must
be a finite duration >= 0". ``"seconds"``: "grace must be a number of
seconds", "grace must be >= 0 seconds". ``"bare"``: as ``"seconds"`` without
the unit after the bound: "period must be > 0".
"""


def seconds(
    value: object,
    name: str,
    *,
    positive: bool = False,
    finite: bool = False,
    timedelta_ok: bool = True,
    wording: Wording = "seconds",
) -> float:
    """Return ``value`` as float seconds, or raise an error naming ``name``.

    ``value`` is an int or float of seconds or, if ``timedelta_ok``, a
    :class:`datetime.timedelta`; a bool is not a number here. NaN and
    negative values are refused, and zero too if ``positive``; infinity is
    refused only if ``finite``.

    Example::

        >>> seconds(timedelta(minutes=1), "delay")
        60.0
        >>> seconds(0, "period", positive=True, wording="bare")
        Traceback (most recent call last):
        ...
        ValueError: period must be > 0, got 0
    """
    if timedelta_ok and isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{name} must be {_kind(wording, timedelta_ok)}, got {value!r}")
    low_ok = result > 0 if positive else result >= 0  # False for NaN
    if not low_ok or (finite and math.isinf(result)):
        raise ValueError(
            f"{name} must be {_bound(wording, positive, finite)}, got {value!r}"
        )
    return result


def _kind(wording: Wording, timedelta_ok: bool) -> str:
    if wording == "duration":
        return "seconds (float) or a timedelta"
    return "a number of seconds" + (" or a timedelta" if timedelta_ok else "")


def _bound(wording: Wording, positive: bool, finite: bool) -> str:
    bound = "> 0" if positive else ">= 0"
    if wording == "duration":
        return f"a finite duration {bound}" if finite else f"a duration {bound}"
    if finite:
        bound = f"finite and {bound}"
    return f"{bound} seconds" if wording == "seconds" else bound
