"""What every command of the ``jobkit`` command line shares.

Errors (:class:`CLIError`), reaching the application (``--app``) and the
store (``--db``), and printing tables, times and JSON. Handlers raise
:class:`CLIError` for anything the user can fix; :func:`jobkit.cli.main.run`
prints it as one line, ``jobkit: error: ...``, and exits with status 1.

Read commands never create or change a database: a missing file is an error,
and :class:`~jobkit.SQLiteStore` refuses a foreign or corrupt file without
writing to it. ``worker`` and ``enqueue`` create a new database when the file
does not exist yet.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TextIO, TypeVar

import trio

from ..core.job import JSON, TransitionError
from ..queue.facade import Queue
from ..runtime.tasks import first_line
from ..store.protocol import JobNotFound, Store, StoreError
from ..store.sqlite.store import SQLiteStore
from ..store.url import sqlite_path, store_from_url

T = TypeVar("T")

DB_ENV = "JOBKIT_DB"
"""The environment variable that ``--db`` defaults to."""

APP_ENV = "JOBKIT_APP"
"""The environment variable that ``--app`` defaults to."""


class CLIError(Exception):
    """A problem the user can fix, shown as one line and exit status 1."""


def load_app(spec: str) -> Queue:
    """Import ``module:attribute`` and return the :class:`Queue` it names.

    The current directory is searched first, as for ``python -m``. Every way
    this can fail becomes a one-line :class:`CLIError`.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise CLIError(
            f"APP must be 'module:attribute' (e.g. 'myapp.jobs:queue'), got {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CLIError(
                f"cannot import {module_name!r} (from APP {spec!r}): no module "
                f"named {exc.name!r}; run jobkit from the directory that holds "
                "it, or set PYTHONPATH"
            ) from None
        raise CLIError(f"importing {module_name!r} failed: {one_line(exc)}") from None
    except Exception as exc:
        raise CLIError(f"importing {module_name!r} failed: {one_line(exc)}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CLIError(
                f"module {module_name!r} has no attribute {attribute!r} (from APP "
                f"{spec!r})"
            ) from None
    if not isinstance(target, Queue):
        raise CLIError(
            f"APP {spec!r} names a {type(target).__name__}, not a jobkit.Queue"
        )
    return target


def one_line(exc: BaseException) -> str:
    """Name the exception and give the first line of its message."""
    text = first_line(str(exc)) or ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def db_path(args: argparse.Namespace) -> str:
    """Return the ``--db`` path, or ``$JOBKIT_DB``, or fail saying how to give one."""
    path: str | None = args.db or os.environ.get(DB_ENV)
    if not path:
        raise CLIError(f"no database given: pass --db PATH or set {DB_ENV}")
    return path


def app_spec(args: argparse.Namespace) -> str | None:
    """Return ``--app``, or ``$JOBKIT_APP``, or None when neither is given."""
    return args.app or os.environ.get(APP_ENV) or None


def shown_url(url: str) -> str:
    """Return ``url`` fit for a log: a password in it is replaced by ``***``."""
    url = re.sub(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url, flags=re.I)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.I)


def open_store(url: str, *, create: bool) -> Store:
    """Open the store ``url`` names (see ``store_from_url``); create it only when
    ``create``."""
    try:
        path = sqlite_path(url)
        if path is None:
            return store_from_url(url, create=create)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except StoreError as exc:
        raise CLIError(first_line(str(exc)) or type(exc).__name__) from None
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a directory, not a database file")
    if not os.path.exists(path):
        if not create:
            raise CLIError(
                f"no database at {path!r} (it is created by 'jobkit enqueue' "
                "or 'jobkit worker')"
            )
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise CLIError(f"cannot create {path!r}: no directory {parent!r}")
    elif not create and os.path.getsize(path) == 0:
        raise CLIError(f"{path!r} is empty, not a jobkit database")
    try:
        return SQLiteStore(path)
    except StoreError as exc:
        raise CLIError(first_line(str(exc)) or type(exc).__name__) from None
    except OSError as exc:
        raise CLIError(f"cannot open {path!r}: {exc}") from None


def run_with_store(
    args: argparse.Namespace,
    body: Callable[[Any], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """Open the database, run ``body(store)`` under trio, and close the store."""
    store = open_store(db_path(args), create=create)

    async def main() -> T:
        try:
            return await body(store)
        finally:
            await store.aclose()

    try:
        return trio.run(main)
    except JobNotFound as exc:
        raise CLIError(str(exc)) from None
    except TransitionError as exc:
        raise CLIError(str(exc)) from None
    except StoreError as exc:
        raise CLIError(first_line(str(exc)) or type(exc).__name__) from None
    except sqlite3.Error as exc:
        url = db_path(args)
        raise _database_error(sqlite_path(url) or url, exc) from None


_SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 8, 11, 26


def _database_error(path: str, exc: sqlite3.Error) -> CLIError:
    """Say in one line what SQLite refused about the file at ``path``."""
    text = first_line(str(exc)) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_READONLY:
        return CLIError(
            f"cannot write to {path!r} ({text}): check the permissions of the "
            "file and of its directory"
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CLIError(
            f"{path!r} is damaged ({text}): restore it "
            "from a backup, or try the sqlite3 shell's .recover"
        )
    return CLIError(f"{path!r}: {text}")


def when(t: float | None) -> str:
    """Show a time from the queue's clock: a local date for epoch seconds."""
    if t is None:
        return "-"
    if t < 10**9:
        # Not a wall-clock time: a simulation's virtual seconds.
        return f"{t:g}s"
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: str = ""
) -> str:
    """Lay rows out in aligned columns; columns named in ``right`` align right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if h in right.split(",") else v.ljust(w)
            for h, v, w in zip(headers, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def print_json(data: JSON, out: TextIO | None = None) -> None:
    """Write ``data`` as indented JSON."""
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out or sys.stdout)
