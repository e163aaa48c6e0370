"""The commands of the ``jobkit`` command line, and the helpers they share.

Each command is a function that adds its sub-parser (``add_*``) and a
handler that returns the exit status. Handlers raise :class:`CLIError` for
anything the user can fix; ``main`` prints it as one line, ``jobkit: error:
...``, and exits with status 1. A refusal by the store or by the library's
own argument checks is printed the same way, never as a traceback; a usage
error (an argument argparse cannot parse) is one such line too, with status 2.

Read commands never create or change a database: a missing file is an error,
and :class:`~jobkit.SQLiteStore` refuses a foreign or corrupt file without
writing to it. ``worker`` and ``enqueue`` create a new database when the file
does not exist yet.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib
import json
import logging
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TextIO, TypeVar

import trio

from .._checks import INT64_MAX, INT64_MIN
from ..core.job import (
    JSON,
    MAX_JSON_DEPTH,
    TERMINAL_STATES,
    Job,
    JobState,
    NewJob,
    TransitionError,
    check_json,
)
from ..core.schedule import Schedule
from ..observe.logs import JSONFormatter
from ..observe.metrics import collect_metrics
from ..queue.facade import Queue
from ..runtime.tasks import first_line
from ..store.protocol import JobNotFound, Store, StoreError
from ..store.sqlite.store import SQLiteStore
from ..store.url import sqlite_path, store_from_url

__all__ = ["COMMANDS", "CLIError", "load_app", "open_store"]

T = TypeVar("T")

DB_ENV = "JOBKIT_DB"
"""The environment variable that ``--db`` defaults to."""

APP_ENV = "JOBKIT_APP"
"""The environment variable that ``--app`` defaults to."""


class CLIError(Exception):
    """A problem the user can fix, shown as one line and exit status 1."""


# -- shared helpers --------------------------------------------------------------


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
        raise CLIError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:
        raise CLIError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
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


def _one_line(exc: BaseException) -> str:
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
        raise database_error(sqlite_path(url) or url, exc) from None


_SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 8, 11, 26


def database_error(path: str, exc: sqlite3.Error) -> CLIError:
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


def clip(text: str | None, width: int = 60) -> str:
    """Return the first line of ``text``, cut to ``width`` characters."""
    line = first_line(text) or ""
    return line if len(line) <= width else line[: width - 1] + "…"


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


def job_to_json(job: Job) -> dict[str, JSON]:
    """Return every field of ``job`` as JSON data."""
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "run_at": job.run_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "lease_until": job.lease_until,
        "unique_key": job.unique_key,
        "payload": job.payload,
        "result": job.result,
        "last_error": job.last_error,
    }


def progress_bar(items: Sequence[T], verb: str) -> Iterable[T]:
    """Iterate ``items`` under a tqdm bar on stderr when a person watches it.

    Only on a terminal, and only with tqdm installed (the ``progress``
    extra); a log file or a pipe gets no bar.
    """
    if not sys.stderr.isatty():
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=verb, unit="job", leave=False, file=sys.stderr)


# -- argument types ----------------------------------------------------------------


def _whole_number(
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


def _priority(text: str) -> int:
    return _whole_number(text, INT64_MIN, f"must be at least {INT64_MIN}")


def _not_utf8(text: str) -> str | None:
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


def _name(text: str) -> str:
    """A task, queue or key name: some UTF-8 text."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    problem = _not_utf8(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _positive_int(text: str) -> int:
    return _whole_number(text, 1, "must be at least 1")


def _job_id(text: str) -> int:
    return _whole_number(text, 1, "job ids start at 1", expected="a job id is a number")


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


def _positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _state(text: str) -> JobState:
    try:
        return JobState(text)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise argparse.ArgumentTypeError(
            f"unknown state {text!r}; choose from {names}"
        ) from None


def _limit(text: str) -> int | None:
    value = _whole_number(text, 0, "must be >= 0 (0: no limit)")
    return None if value == 0 else value


def add_global_options(
    parser: argparse.ArgumentParser, *, top: bool, app: bool = True
) -> None:
    """Add --db, --json and (if ``app``) --app, which go before or after a command.

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
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print JSON (worker: log one JSON object per line)",
    )


Subparsers = Any  # argparse's _SubParsersAction is private


def _add(
    commands: Subparsers,
    name: str,
    summary: str,
    description: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    epilog: str | None = None,
    db: bool = True,
    app: bool = False,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if db:
        add_global_options(parser, top=False, app=app)
    parser.set_defaults(handler=handler)
    return parser


# -- worker -------------------------------------------------------------------------


def add_worker(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "worker",
        "run the jobs of an application's queue",
        "Run a worker for the tasks registered on APP's queue, on the database\n"
        "--db (or on the store APP's queue already has). SIGINT or SIGTERM\n"
        "shut it down gracefully: no new jobs are claimed, running ones get\n"
        "--grace to finish, the rest are released for another worker.\n"
        "A second Ctrl-C stops at once. With --until-empty it also stops by\n"
        "itself once nothing of its queues is queued (due now or later) or\n"
        "running: a batch run from cron or a script. APP may be given as\n"
        f"--app or ${APP_ENV} instead.",
        cmd_worker,
        epilog=(
            "examples:\n"
            "  jobkit worker myapp.jobs:queue --db jobs.db --concurrency 8\n"
            "  jobkit worker myapp.jobs:queue --db jobs.db --until-empty\n"
            "  JOBKIT_APP=myapp.jobs:queue JOBKIT_DB=jobs.db jobkit worker --json"
        ),
        app=True,
    )
    parser.add_argument(
        "app_argument",
        nargs="?",
        metavar="APP",
        help="module:attribute naming a Queue (or --app)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=10,
        metavar="N",
        help="jobs run at once (default 10)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        type=_name,
        metavar="Q",
        help="serve only this queue; repeat for several (default: all)",
    )
    parser.add_argument(
        "--lease",
        type=_positive_duration,
        default=30.0,
        metavar="DURATION",
        help="lease length, renewed every third of it (default 30)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_duration,
        default=1.0,
        metavar="DURATION",
        help="how often to look for jobs enqueued elsewhere (default 1)",
    )
    parser.add_argument(
        "--grace",
        type=duration,
        default=10.0,
        metavar="DURATION",
        help="time running jobs get to finish at shutdown (default 10)",
    )
    parser.add_argument(
        "--until-empty",
        action="store_true",
        help="exit once nothing is queued or running (retries included)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or as one JSON object each (default text; "
        "--json: json)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="the least severe log records shown (default INFO)",
    )


def _configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    log = logging.getLogger("jobkit")
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def cmd_worker(args: argparse.Namespace) -> int:
    spec = app_spec(args)
    if args.app_argument and args.app and args.app_argument != args.app:
        raise CLIError(f"APP given twice: {args.app_argument!r} and --app {args.app!r}")
    spec = args.app_argument or spec
    if spec is None:
        raise CLIError(f"no APP given: pass module:attribute, --app or set {APP_ENV}")
    # Import the application before touching the database: a wrong APP must
    # not leave a new, empty database behind.
    queue = load_app(spec)
    if not (args.db or os.environ.get(DB_ENV)) and queue.has_store:
        store: Store = queue.store  # the application chose its own store
    else:
        store = queue.store = open_store(db_path(args), create=True)
    log_format = args.log_format or ("json" if args.json else "text")
    _configure_logging(log_format, args.log_level)
    given = args.db or os.environ.get(DB_ENV)
    where = shown_url(given or getattr(store, "path", None) or type(store).__name__)
    tasks = ", ".join(sorted(queue.tasks)) or "none"
    logging.getLogger("jobkit.cli").info(
        "serving %s on %s: tasks %s",
        spec,
        where,
        tasks,
        extra={"app": spec, "database": where, "tasks": sorted(queue.tasks)},
    )

    from ..runtime.token import CancellationToken, cancel_on_signals
    from ..worker.worker import run_worker

    async def main() -> None:
        token = CancellationToken()
        try:
            async with cancel_on_signals(token):
                await run_worker(
                    queue,
                    concurrency=args.concurrency,
                    queues=args.queues,
                    lease=args.lease,
                    poll_interval=args.poll_interval,
                    shutdown=token,
                    grace=args.grace,
                    until_empty=args.until_empty,
                )
        finally:
            await store.aclose()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        print("jobkit: stopped at once; unfinished jobs were released", file=sys.stderr)
        return 130
    return 0


# -- enqueue ---------------------------------------------------------------------------


def add_enqueue(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "enqueue",
        "add a job",
        "Store a job for TASK with the keyword arguments in PAYLOAD (a JSON\n"
        "object) and --arg KEY=VALUE pairs. With --app the task must be\n"
        "registered there: its arguments are checked and its queue, priority\n"
        "and retry policy are the defaults. Without it the job is stored as\n"
        "given, and unless --max-attempts says otherwise the first worker\n"
        "that knows the task applies its retry policy's limit. Creates the\n"
        "database if it does not exist.",
        cmd_enqueue,
        epilog=(
            "examples:\n"
            '  jobkit enqueue send_email \'{"to": "ada@example.com"}\' --db jobs.db\n'
            "  jobkit enqueue resize --arg path=a.png --arg width=64 --delay 10m \\\n"
            "      --app myapp.jobs:queue --db jobs.db"
        ),
        app=True,
    )
    parser.add_argument(
        "task", type=_name, metavar="TASK", help="the task's registered name"
    )
    parser.add_argument(
        "payload", metavar="PAYLOAD", nargs="?", help="a JSON object of arguments"
    )
    parser.add_argument(
        "--arg",
        "-a",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one argument; VALUE is read as JSON, else as a string",
    )
    parser.add_argument(
        "--queue", type=_name, metavar="Q", help="the queue to put it on"
    )
    parser.add_argument(
        "--priority", type=_priority, metavar="N", help="higher runs first"
    )
    parser.add_argument(
        "--delay", type=duration, metavar="DURATION", help="run no sooner than this"
    )
    parser.add_argument(
        "--max-attempts", type=_positive_int, metavar="N", help="attempts allowed"
    )
    parser.add_argument(
        "--unique-key",
        type=_name,
        metavar="KEY",
        help="store nothing while a job with this key is queued or running",
    )


def _load_json(text: str, what: str) -> JSON:
    """Parse ``text``; refuse bytes that are not UTF-8 and runaway nesting."""
    problem = _not_utf8(text)
    if problem is not None:
        raise CLIError(f"{what} {problem}")
    try:
        value: JSON = json.loads(text)
    except RecursionError:
        raise CLIError(
            f"{what} is nested deeper than {MAX_JSON_DEPTH} levels of lists and objects"
        ) from None
    return value


def _payload(args: argparse.Namespace) -> dict[str, JSON]:
    payload: dict[str, JSON] = {}
    if args.payload is not None:
        try:
            value = _load_json(args.payload, "PAYLOAD")
        except json.JSONDecodeError as exc:
            raise CLIError(f"PAYLOAD is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CLIError(
                "PAYLOAD must be a JSON object of keyword arguments, got "
                f"{type(value).__name__}"
            )
        payload.update(value)
    for item in args.arg:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise CLIError(f"--arg takes KEY=VALUE, got {item!r}")
        problem = _not_utf8(key)
        if problem is not None:
            raise CLIError(f"--arg KEY {problem}")
        try:
            payload[key] = _load_json(text, f"--arg {key}")
        except json.JSONDecodeError:
            payload[key] = text
    try:
        check_json(payload)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    return payload


def cmd_enqueue(args: argparse.Namespace) -> int:
    payload = _payload(args)
    spec = app_spec(args)
    queue = load_app(spec) if spec else None
    if queue is not None and args.task not in queue.tasks:
        known = ", ".join(sorted(queue.tasks)) or "none"
        raise CLIError(f"no task {args.task!r} on {spec}; its tasks: {known}")

    async def body(store: SQLiteStore) -> int:
        if queue is not None:
            queue.store = store
            try:
                return await queue.enqueue(
                    args.task,
                    payload,
                    delay=args.delay,
                    priority=args.priority,
                    queue=args.queue,
                    unique_key=args.unique_key,
                    max_attempts=args.max_attempts,
                )
            except (TypeError, ValueError) as exc:
                raise CLIError(str(exc)) from None
        now = time.time()
        spec = NewJob(
            task=args.task,
            payload=payload,
            queue=args.queue or "default",
            priority=args.priority or 0,
            run_at=None if args.delay is None else now + args.delay,
            # None: the task's own limit, decided by the first worker to claim it.
            max_attempts=args.max_attempts,
            unique_key=args.unique_key,
        )
        [job_id] = await store.enqueue([spec], now=now)
        return job_id

    job_id = run_with_store(args, body, create=True)
    if queue is None:
        # Only once the job is stored: a refusal stays one line.
        print(
            f"jobkit: warning: without --app the task name {args.task!r} "
            "cannot be checked; a worker that does not know it leaves the "
            "job queued",
            file=sys.stderr,
        )
    if args.json:
        print_json({"id": job_id})
    else:
        print(f"enqueued job {job_id}")
    return 0


# -- jobs, show, dead ----------------------------------------------------------------


def add_jobs(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "jobs",
        "list jobs",
        "List jobs, oldest first (--newest: newest first), optionally of one\n"
        "state, queue and task; --after pages through long listings.",
        cmd_jobs,
        epilog=(
            "examples:\n"
            "  jobkit jobs --state queued --queue emails --db jobs.db\n"
            "  jobkit jobs --task send_email --newest --limit 20 --db jobs.db"
        ),
    )
    parser.add_argument(
        "--state", type=_state, metavar="S", help="queued, running, ..."
    )
    _add_listing_options(parser)


def _add_listing_options(parser: argparse.ArgumentParser) -> None:
    """The filters, order and paging that every command that lists jobs takes."""
    parser.add_argument("--queue", type=_name, metavar="Q", help="only this queue")
    parser.add_argument("--task", type=_name, metavar="T", help="only this task")
    parser.add_argument(
        "--limit",
        type=_limit,
        default=100,
        metavar="N",
        help="show at most N jobs (default 100; 0: all)",
    )
    parser.add_argument(
        "--newest", action="store_true", help="newest first (default: oldest first)"
    )
    parser.add_argument(
        "--after",
        type=_job_id,
        metavar="ID",
        help="the next page: the jobs that come after job ID in this order",
    )


def _jobs_table(jobs: Sequence[Job]) -> str:
    rows = [
        [
            job.id,
            job.state.value,
            job.task,
            job.queue,
            attempts(job),
            when(job.run_at),
            clip(job.last_error, 50),
        ]
        for job in jobs
    ]
    headers = ["id", "state", "task", "queue", "attempts", "run at", "last error"]
    return render_table(headers, rows, right="id,attempts")


def list_jobs(args: argparse.Namespace, state: JobState | None) -> list[Job]:
    """Return the jobs a listing shows; say on stderr when --limit left some out."""
    limit: int | None = args.limit

    async def body(store: SQLiteStore) -> list[Job]:
        return await store.list(
            state=state,
            queue=args.queue,
            task=args.task,
            # One more than shown tells whether there are more.
            limit=None if limit is None else min(limit + 1, INT64_MAX),
            newest_first=args.newest,
            after_id=None if args.newest else args.after,
            before_id=args.after if args.newest else None,
        )

    jobs = run_with_store(args, body)
    if limit is not None and len(jobs) > limit:
        del jobs[limit:]
        print(
            f"jobkit: more jobs match: --after {jobs[-1].id} shows the next "
            f"{limit}, --limit 0 all",
            file=sys.stderr,
        )
    return jobs


def attempts(job: Job) -> str:
    """``attempts/max``; ``-`` for a limit the first worker will decide."""
    limit = "-" if job.max_attempts is None else job.max_attempts
    return f"{job.attempts}/{limit}"


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = list_jobs(args, args.state)
    if args.json:
        print_json([job_to_json(job) for job in jobs])
    elif jobs:
        print(_jobs_table(jobs))
    else:
        print("no jobs")
    return 0


def add_show(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "show",
        "show one job and its history",
        "Show every field of a job, its payload, result and last error (with\n"
        "its traceback), and the events of its history.",
        cmd_show,
        epilog="example:\n  jobkit show 42 --db jobs.db",
    )
    parser.add_argument("id", type=_job_id, metavar="ID", help="the job's id")


def cmd_show(args: argparse.Namespace) -> int:
    async def body(store: SQLiteStore) -> tuple[Job, list[Any]]:
        job = await store.get(args.id)
        return job, await store.events(job_id=args.id)

    job, events = run_with_store(args, body)
    if args.json:
        print_json(
            {
                "job": job_to_json(job),
                "events": [
                    {
                        "seq": seq,
                        "kind": e.kind.value,
                        "at": e.at,
                        "attempt": e.attempt,
                        "error": e.error,
                    }
                    for seq, e in events
                ],
            }
        )
        return 0
    fields = [
        ("id", job.id),
        ("task", job.task),
        ("queue", job.queue),
        ("state", job.state.value),
        ("attempts", attempts(job)),
        ("priority", job.priority),
        ("run at", when(job.run_at)),
        ("created", when(job.created_at)),
        ("updated", when(job.updated_at)),
        ("lease until", when(job.lease_until)),
        ("unique key", job.unique_key or "-"),
        ("payload", json.dumps(job.payload, ensure_ascii=False)),
        ("result", json.dumps(job.result, ensure_ascii=False)),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.rjust(width)}  {value}")
    if job.last_error:
        print("\nlast error:")
        for line in job.last_error.rstrip().splitlines():
            print(f"  {line}".rstrip())
    print("\nhistory:")
    rows = [
        [seq, when(e.at), e.kind.value, e.attempt, clip(e.error, 50)]
        for seq, e in events
    ]
    print(render_table(["seq", "at", "event", "attempt", "error"], rows, right="seq"))
    return 0


TIMED_OUT = 124
"""``jobkit wait``'s exit status for a job not finished in time (as ``timeout``)."""


def add_wait(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "wait",
        "wait until a job has finished",
        "Wait until job ID has SUCCEEDED, gone DEAD or been CANCELLED, looking\n"
        "at the database every --poll-interval seconds, then print its state\n"
        "and result (or error). Exit status: 0 if it succeeded, 1 if it is\n"
        f"dead or cancelled, {TIMED_OUT} if it had not finished after --timeout.",
        cmd_wait,
        epilog=(
            "example:\n"
            "  id=$(jobkit enqueue report --json --db jobs.db | jq .id)\n"
            "  jobkit wait $id --timeout 600 --db jobs.db"
        ),
    )
    parser.add_argument("id", type=_job_id, metavar="ID", help="the job's id")
    parser.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="give up after this long (default: wait as long as it takes)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_duration,
        default=0.5,
        metavar="DURATION",
        help="how often to look (default 0.5)",
    )


def cmd_wait(args: argparse.Namespace) -> int:
    async def body(store: SQLiteStore) -> Job:
        queue = Queue(store)
        with trio.move_on_after(math.inf if args.timeout is None else args.timeout):
            return await queue.wait(args.id, poll_interval=args.poll_interval)
        return await store.get(args.id)

    job = run_with_store(args, body)
    finished = job.state in TERMINAL_STATES
    if args.json:
        print_json(job_to_json(job))
    elif job.state is JobState.SUCCEEDED:
        print(f"job {job.id} succeeded: {json.dumps(job.result, ensure_ascii=False)}")
    elif finished:
        print(f"job {job.id} is {job.state.value}: {first_line(job.last_error or '')}")
    else:
        print(f"job {job.id} is still {job.state.value} after {args.timeout:g} s")
    if not finished:
        return TIMED_OUT
    return 0 if job.state is JobState.SUCCEEDED else 1


def add_dead(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "dead",
        "list the dead letters",
        "List jobs that failed for good and wait for a person: see why with\n"
        "'jobkit show ID', then 'jobkit requeue' or 'jobkit discard' them.",
        cmd_dead,
    )
    _add_listing_options(parser)


def cmd_dead(args: argparse.Namespace) -> int:
    jobs = list_jobs(args, JobState.DEAD)
    if args.json:
        print_json([job_to_json(job) for job in jobs])
        return 0
    if not jobs:
        print("no dead jobs")
        return 0
    rows = [
        [
            job.id,
            job.task,
            job.queue,
            attempts(job),
            when(job.updated_at),
            clip(job.last_error, 60),
        ]
        for job in jobs
    ]
    headers = ["id", "task", "queue", "attempts", "died", "error"]
    print(render_table(headers, rows, right="id,attempts"))
    return 0


# -- requeue, discard ------------------------------------------------------------------


def _ids_or_all(parser: argparse.ArgumentParser, *, all_dead: bool) -> None:
    parser.add_argument("ids", type=_job_id, nargs="*", metavar="ID", help="job ids")
    if all_dead:
        parser.add_argument(
            "--all-dead", action="store_true", help="every dead job (of --queue)"
        )
        parser.add_argument(
            "--queue", type=_name, metavar="Q", help="with --all-dead: one queue"
        )


def add_requeue(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "requeue",
        "retry dead jobs with fresh attempts",
        "Send dead jobs back to the queue, due now, with their attempts reset.\n"
        "Every ID is checked first: if one is unknown or not dead, nothing is\n"
        "changed.",
        cmd_requeue,
        epilog=(
            "examples:\n  jobkit requeue 17 18 --db jobs.db\n"
            "  jobkit requeue --all-dead --queue emails --db jobs.db"
        ),
    )
    _ids_or_all(parser, all_dead=True)


def add_discard(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "discard",
        "give up on dead jobs",
        "Move dead jobs to cancelled for good; their records stay. Every ID is\n"
        "checked first: if one is unknown or not dead, nothing is changed.",
        cmd_discard,
        epilog="example:\n  jobkit discard 17 18 --db jobs.db",
    )
    _ids_or_all(parser, all_dead=False)


async def _jobs_in(
    store: SQLiteStore, ids: Sequence[int], state: JobState
) -> list[int]:
    """Return ``ids`` without repeats if every one is in ``state``, else refuse."""
    problems = []
    for job_id in dict.fromkeys(ids):
        try:
            job = await store.get(job_id)
        except JobNotFound:
            problems.append(f"no job with id {job_id}")
            continue
        if job.state is not state:
            problems.append(f"job {job_id} is {job.state.value}, not {state.value}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CLIError("; ".join(problems[:3]) + more + "; nothing was changed")
    return list(dict.fromkeys(ids))


def _operate(
    args: argparse.Namespace, verb: str, past: str, state: JobState = JobState.DEAD
) -> int:
    every = getattr(args, "all_dead", False)
    if every and args.ids:
        raise CLIError("give job ids or --all-dead, not both")
    if not every and not args.ids:
        raise CLIError(
            f"nothing to {verb}: give job ids"
            + (" or --all-dead" if hasattr(args, "all_dead") else "")
        )
    if getattr(args, "queue", None) and not every:
        raise CLIError("--queue only applies with --all-dead")

    async def body(store: SQLiteStore) -> list[int]:
        if every:
            jobs = await store.list(state=JobState.DEAD, queue=args.queue, limit=None)
            ids = [job.id for job in jobs]
        else:
            ids = await _jobs_in(store, args.ids, state)
        action = getattr(Queue(store), verb)
        changed = []
        for job_id in progress_bar(ids, verb):
            try:
                await action(job_id)
            except TransitionError as exc:
                # Another process acted on it since we looked: report, go on.
                print(f"jobkit: skipped: {exc}", file=sys.stderr)
            else:
                changed.append(job_id)
        return changed

    changed = run_with_store(args, body)
    if args.json:
        print_json({past: changed})
    else:
        noun = "job" if len(changed) == 1 else "jobs"
        print(f"{past} {len(changed)} {noun}")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    return _operate(args, "requeue", "requeued")


def cmd_discard(args: argparse.Namespace) -> int:
    return _operate(args, "discard", "discarded")


def add_cancel(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "cancel",
        "cancel jobs that have not started",
        "Move queued jobs to cancelled: no worker will run them. A running job\n"
        "cannot be cancelled this way (its handler decides how to stop). Every\n"
        "ID is checked first: if one is unknown or not queued, nothing is\n"
        "changed.",
        cmd_cancel,
        epilog="example:\n  jobkit cancel 17 18 --db jobs.db",
    )
    _ids_or_all(parser, all_dead=False)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _operate(args, "cancel", "cancelled", JobState.QUEUED)


# -- stats, metrics --------------------------------------------------------------------


def add_stats(commands: Subparsers) -> None:
    _add(
        commands,
        "stats",
        "count jobs per queue and state",
        "Count the jobs of each queue in each state. With --app, also count\n"
        "the queued jobs of tasks that app does not know: they wait for a\n"
        "worker that does.",
        cmd_stats,
        app=True,
    )


def cmd_stats(args: argparse.Namespace) -> int:
    spec = app_spec(args)
    app = load_app(spec) if spec else None

    async def body(store: SQLiteStore) -> Any:
        return await store.counts(), await store.queued_tasks()

    counts, queued = run_with_store(args, body)
    unknown: dict[str, int] = {}
    if app is not None:
        for (_, task), n in sorted(queued.items()):
            if task not in app.tasks:
                unknown[task] = unknown.get(task, 0) + n
    states = list(JobState)
    if args.json:
        shown: dict[str, Any] = {
            q: {s.value: counts.get(q, s) for s in states} for q in counts.queues
        }
        if app is not None:
            shown = {"queues": shown, "unknown_tasks": unknown}
        print_json(shown)
        return 0
    rows: list[list[object]] = [
        [q, *(counts.get(q, s) for s in states), sum(counts.get(q, s) for s in states)]
        for q in counts.queues
    ]
    totals = [counts.total(s) for s in states]
    rows.append(["all", *totals, sum(totals)])
    headers = ["queue", *(s.value for s in states), "total"]
    print(render_table(headers, rows, right=",".join(headers[1:])))
    if unknown:
        n = sum(unknown.values())
        print(
            f"{n} queued {'job waits' if n == 1 else 'jobs wait'} for tasks "
            f"{spec} does not know: {', '.join(sorted(unknown))}"
        )
    return 0


def add_purge(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "purge",
        "delete old finished jobs",
        "Delete the jobs that SUCCEEDED or were CANCELLED longer than AGE ago,\n"
        "with their events, and print how many went. Dead letters stay until\n"
        "requeued or discarded; queued and running jobs are never touched.\n"
        "Safe while workers run: it deletes a few hundred jobs per\n"
        "transaction. The file keeps its size; new jobs reuse the space.",
        cmd_purge,
        epilog="examples:\n  jobkit purge --older-than 7d --db jobs.db",
    )
    parser.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="AGE",
        help="seconds, or a number with ms, s, m, h or d (7d: a week)",
    )


def cmd_purge(args: argparse.Namespace) -> int:
    before = time.time() - args.older_than

    async def body(store: SQLiteStore) -> int:
        return await store.purge(before=before)

    deleted = run_with_store(args, body)
    if args.json:
        print_json({"purged": deleted, "before": before})
    else:
        jobs = "job" if deleted == 1 else "jobs"
        print(f"purged {deleted} finished {jobs} last changed before {when(before)}")
    return 0


def add_metrics(commands: Subparsers) -> None:
    _add(
        commands,
        "metrics",
        "print metrics in the Prometheus text format",
        "Print counters, attempt durations, attempts per job and queue depth,\n"
        "derived from the database's event log, in the Prometheus text\n"
        "exposition format (or as JSON with --json).",
        cmd_metrics,
        epilog=(
            "example:\n"
            "  jobkit metrics --db jobs.db > /var/lib/node_exporter/jobkit.prom"
        ),
    )


def cmd_metrics(args: argparse.Namespace) -> int:
    snapshot = run_with_store(args, collect_metrics)
    if args.json:
        print_json(snapshot.to_dict())
    else:
        sys.stdout.write(snapshot.to_prometheus())
    return 0


# -- schedules ------------------------------------------------------------------------


def add_schedules(commands: Subparsers) -> None:
    _add(
        commands,
        "schedules",
        "list the periodic and cron schedules",
        "List the schedules stored in the database: the task each enqueues,\n"
        "its grid (every N seconds, or a cron expression and time zone), its\n"
        "misfire policy, the next slot to enqueue and the last one enqueued.\n"
        "Schedules are declared by the application (Queue.schedule); any\n"
        "running worker enqueues their slots.",
        cmd_schedules,
        epilog="example:\n  jobkit schedules --db jobs.db --json",
    )


def cmd_schedules(args: argparse.Namespace) -> int:
    async def body(store: SQLiteStore) -> list[Schedule]:
        return await store.schedules()

    schedules = run_with_store(args, body)
    if args.json:
        print_json([schedule.to_dict() for schedule in schedules])
    elif schedules:
        rows = [
            [
                s.name,
                s.task,
                s.spec,
                s.misfire.value,
                when(s.next_slot),
                when(s.last_slot),
            ]
            for s in schedules
        ]
        headers = ["name", "task", "every/cron", "misfire", "next slot", "last slot"]
        print(render_table(headers, rows))
    else:
        print("no schedules")
    return 0


# -- dashboard ------------------------------------------------------------------------

DASHBOARD_TOKEN_ENV = "JOBKIT_DASHBOARD_TOKEN"
"""The environment variable that ``dashboard --token`` defaults to."""

DASHBOARD_NICENESS = 10
"""How much lower than its caller's the dashboard's CPU priority is."""


def _port(text: str) -> int:
    value = _whole_number(text, 0, "a port is 0..65535 (0: any free port)")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def add_dashboard(commands: Subparsers) -> None:
    parser = _add(
        commands,
        "dashboard",
        "serve a web page to watch and operate the queue",
        "Serve the dashboard of the store --db: queues, jobs, dead letters,\n"
        "schedules, the leases workers hold, /metrics and /health. It listens\n"
        "on 127.0.0.1 unless --host says otherwise; bound elsewhere, give it\n"
        f"a --token (or ${DASHBOARD_TOKEN_ENV}) that every request must carry.\n"
        f"It runs at a lower CPU priority (nice +{DASHBOARD_NICENESS}) than the shell\n"
        "that started it, so that workers on the same host come first.\n"
        "Needs the web extra: pip install 'jobkit[web]'.",
        cmd_dashboard,
        epilog=(
            "examples:\n"
            "  jobkit dashboard --db jobs.db\n"
            "  jobkit dashboard --db jobs.db --read-only --port 9000"
        ),
        db=False,
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=argparse.SUPPRESS,  # keeps a --db given before the command
        help=(
            "the store: an SQLite file (or sqlite:///PATH), postgresql://... "
            f"(default: ${DB_ENV})"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument(
        "--port", type=_port, default=8080, help="default 8080 (0: any free port)"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="show the pages without actions"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(DASHBOARD_TOKEN_ENV) or None,
        help="require this token: a bearer header or the login page",
    )
    parser.add_argument(
        "--refresh",
        type=duration,
        default=5.0,
        metavar="DURATION",
        help="how often open pages update (default 5, 0: never)",
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        from ..dashboard import create_app, serve
    except ImportError as exc:
        raise CLIError(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'jobkit[web]'"
        ) from None
    store = open_store(db_path(args), create=False)
    if hasattr(os, "nice"):
        # The workers' time matters more than the page's: on a busy host the
        # scheduler lets them go first.
        os.nice(DASHBOARD_NICENESS)
    app = create_app(
        store, read_only=args.read_only, token=args.token, refresh=args.refresh
    )
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and args.token is None:
        print(
            f"jobkit: warning: serving on {args.host} without --token: anyone who "
            "reaches the port can operate the queue",
            file=sys.stderr,
        )

    from ..runtime.token import CancellationToken, cancel_on_signals

    async def main() -> None:
        token = CancellationToken()
        try:
            async with cancel_on_signals(token), trio.open_nursery() as nursery:
                url = await nursery.start(
                    functools.partial(serve, app, host=args.host, port=args.port)
                )
                print(f"jobkit: dashboard on {url} (Ctrl-C stops it)", file=sys.stderr)
                await token.wait()
                nursery.cancel_scope.cancel()
        finally:
            await store.aclose()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    return 0


COMMANDS: list[Callable[[Subparsers], None]] = [
    add_worker,
    add_enqueue,
    add_jobs,
    add_show,
    add_wait,
    add_dead,
    add_requeue,
    add_discard,
    add_cancel,
    add_stats,
    add_purge,
    add_metrics,
    add_schedules,
    add_dashboard,
]
"""The commands in ``jobkit --help`` order; another area adds its own
``add_*`` function here (``jobkit schedules`` goes after ``metrics``)."""


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
    try:
        return _unwrapped(handler, args)
    except CLIError as exc:
        print(f"jobkit: error: {exc}", file=sys.stderr)
        return 1
    except (StoreError, ValueError, TypeError) as exc:
        # A refusal by the store or by an argument check that no command
        # turned into a CLIError: its message is meant for the user.
        print(
            f"jobkit: error: {first_line(str(exc)) or _one_line(exc)}", file=sys.stderr
        )
        return 1
    except (sqlite3.Error, ArithmeticError, RecursionError) as exc:
        print(f"jobkit: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # ``jobkit jobs | head``: the reader has all it wanted. Exit quietly
        # and with 0, as Unix tools do; the null device takes what Python
        # still flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
