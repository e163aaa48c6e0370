"""What the commands take: argument types, the options every command shares,
and :func:`add_command`, which every command's ``add_*`` function starts with.

An argument type raises ``argparse.ArgumentTypeError``, which argparse
prints as a one-line usage error with status 2.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

from .._checks import INT64_MAX, INT64_MIN
from ..core.job import JobState
from .common import APP_ENV, DB_ENV

# -- argument types ----------------------------------------------------------------


def whole_number(
    text: str,
    minimum: int,
    too_small: str,
    *,
    expected: str = "expected a whole number",
) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{too_small}, got {value}")
    if value > INT64_MAX:
        # Every number the store keeps is a signed 64-bit integer.
        raise argparse.ArgumentTypeError(f"must be at most {INT64_MAX}, got {value}")
    return value


def priority(text: str) -> int:
    return whole_number(text, INT64_MIN, f"must be at least {INT64_MIN}")


def not_utf8(text: str) -> str | None:
    """Describe where ``text`` holds bytes that were not UTF-8, or return None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Python hands such bytes over as lone surrogates U+DC80..U+DCFF.
        code = ord(text[exc.start])
        shown = (
            f"the byte {code - 0xDC00:#04x}"
            if code >= 0xDC80
            else repr(text[exc.start])
        )
        return f"holds {shown} at character {exc.start}, which is not UTF-8"
    return None


def name(text: str) -> str:
    """A task, queue or key name: some UTF-8 text."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    problem = not_utf8(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def positive_int(text: str) -> int:
    return whole_number(text, 1, "must be at least 1")


def job_id(text: str) -> int:
    return whole_number(text, 1, "job ids start at 1", expected="a job id is a number")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9.]+(?:e[+-]?[0-9]+)?)(ms|s|m|h|d)?", re.IGNORECASE)


def duration(text: str) -> float:
    """Seconds from ``30``, ``1.5``, ``500ms``, ``90s``, ``10m``, ``12h`` or ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        value = float(match[1]) * _UNITS[(match[2] or "s").lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or a duration such as 90s, 10m, 12h or 7d, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite duration, got {text!r}")
    return value


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def job_state(text: str) -> JobState:
    try:
        return JobState(text)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise argparse.ArgumentTypeError(
            f"unknown state {text!r}; choose from {names}"
        ) from None


def limit(text: str) -> int | None:
    value = whole_number(text, 0, "must be >= 0 (0: no limit)")
    return None if value == 0 else value


# -- the parser ---------------------------------------------------------------------


def add_global_options(
    parser: argparse.ArgumentParser, *, top: bool, app: bool = True, json: bool = True
) -> None:
    """Add --db, and --app and --json if asked, which go before or after a command.

    A command's copies default to SUPPRESS, so that a value given before the
    command is kept when none is given after it.
    """
    unset = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=unset,
        help=(
            "the store: an SQLite file (or sqlite:///PATH), postgresql://... "
            f"(default: ${DB_ENV})"
        ),
    )
    if app:
        parser.add_argument(
            "--app",
            metavar="APP",
            default=unset,
            help=f"module:attribute naming a Queue (default: ${APP_ENV})",
        )
    if json:
        parser.add_argument(
            "--json",
            action="store_true",
            default=False if top else argparse.SUPPRESS,
            help="print JSON (worker: log one JSON object per line)",
        )


Subparsers = Any  # argparse's _SubParsersAction is private


def add_command(
    commands: Subparsers,
    name: str,
    summary: str,
    description: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    epilog: str | None = None,
    app: bool = False,
    json: bool = True,
) -> argparse.ArgumentParser:
    """Add the command ``name``, run by ``handler``, with --db and, if asked,
    --app and --json; return its parser, for the command's own arguments."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, top=False, app=app, json=json)
    parser.set_defaults(handler=handler)
    return parser
