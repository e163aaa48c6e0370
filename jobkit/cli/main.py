"""The ``jobkit`` command line: its parser, its commands, and how they run.

Each command is a pair of functions in the module of its group: ``add_*``
adds its sub-parser (starting with :func:`~jobkit.cli.options.add_command`)
and names its handler, which returns the exit status. A new command is such a
pair, plus its ``add_*`` function in :data:`COMMANDS` below.

A handler raises :class:`~jobkit.cli.common.CLIError` for anything the user
can fix; :func:`run` prints it as one line, ``jobkit: error: ...``, and
exits with status 1. A refusal by the store or by the library's own argument
checks is printed the same way, never as a traceback; a usage error (an
argument argparse cannot parse) is one such line too, with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..runtime.tasks import first_line
from ..store.protocol import StoreError
from . import dashboard, enqueue, jobs, operate, schedules, stats, worker
from .common import APP_ENV, DB_ENV, CLIError, one_line
from .options import Subparsers, add_global_options

__all__ = ["COMMANDS", "build_parser", "main", "run"]

COMMANDS: list[Callable[[Subparsers], None]] = [
    worker.add_worker,
    enqueue.add_enqueue,
    jobs.add_jobs,
    jobs.add_show,
    jobs.add_wait,
    jobs.add_dead,
    operate.add_requeue,
    operate.add_discard,
    operate.add_cancel,
    stats.add_stats,
    operate.add_purge,
    stats.add_metrics,
    schedules.add_schedules,
    dashboard.add_dashboard,
]
"""The commands, in ``jobkit --help`` order (``demo`` comes first)."""


class _Parser(argparse.ArgumentParser):
    """Report a usage error in one line, as every other refusal is reported."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"jobkit: error: {message} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """``--version``; the installed version is looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs=0, help="print the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import version

        print(f"jobkit {version('jobkit')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line, every command added."""
    parser = _Parser(
        prog="jobkit",
        description="Run and inspect jobkit job queues.",
        epilog=(
            "Every command has --help. --db, --app and --json go before or after\n"
            f"the command; --db defaults to ${DB_ENV}, --app to ${APP_ENV}.\n"
            "Durations are seconds or a number with ms, s, m, h or d (90s, 10m, 7d)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="a short tour of jobkit at work")
    demo.set_defaults(handler=_demo)
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .._demo import main as demo_main

    return demo_main()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jobkit`` console script."""
    return run(build_parser().parse_args(argv))


def _unwrapped(
    handler: Callable[[argparse.Namespace], int], ns: argparse.Namespace
) -> int:
    """``handler(ns)``, with a lone error that trio wrapped in a group unwrapped."""
    try:
        return handler(ns)
    except BaseExceptionGroup as group:
        # trio's nurseries wrap even one error in a group; the user needs
        # the error itself, which ``run`` then words as a refusal or not.
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            exc = pending.pop()
            if isinstance(exc, BaseExceptionGroup):
                pending.extend(exc.exceptions)
            else:
                leaves.append(exc)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; print a :class:`CLIError` as one line."""
    handler: Callable[[argparse.Namespace], int] = args.handler
    if args.command not in ("worker", "dashboard"):
        # A one-shot command that cannot reach PostgreSQL says so in one
        # line at the end; the pool's warning for every try in between
        # would only bury it. A worker's log keeps them.
        pool_log = logging.getLogger("psycopg.pool")
        if not any(isinstance(h, logging.NullHandler) for h in pool_log.handlers):
            # Once: a notebook runs commands in its own process, many times.
            pool_log.addHandler(logging.NullHandler())
        pool_log.propagate = False
    try:
        return _unwrapped(handler, args)
    except CLIError as exc:
        print(f"jobkit: error: {exc}", file=sys.stderr)
        return 1
    except (StoreError, ValueError, TypeError) as exc:
        # A refusal by the store or by an argument check that no command
        # turned into a CLIError: its message is meant for the user.
        print(
            f"jobkit: error: {first_line(str(exc)) or one_line(exc)}", file=sys.stderr
        )
        return 1
    except (sqlite3.Error, ArithmeticError, RecursionError) as exc:
        print(f"jobkit: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # ``jobkit jobs | head``: the reader has all it wanted. Exit quietly
        # and with 0, as Unix tools do; the null device takes what Python
        # still flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
