"""``jobkit worker``: run the jobs of an application's queue."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from ..observe.logs import JSONFormatter
from ..store.protocol import Store
from . import options
from .common import (
    APP_ENV,
    DB_ENV,
    CLIError,
    app_spec,
    db_path,
    load_app,
    open_store,
    shown_url,
)
from .options import Subparsers


def add_worker(commands: Subparsers) -> None:
    parser = options.add_command(
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
        type=options.positive_int,
        default=10,
        metavar="N",
        help="jobs run at once (default 10)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        type=options.name,
        metavar="Q",
        help="serve only this queue; repeat for several (default: all)",
    )
    parser.add_argument(
        "--lease",
        type=options.positive_duration,
        default=30.0,
        metavar="DURATION",
        help="lease length, renewed every third of it (default 30)",
    )
    parser.add_argument(
        "--poll-interval",
        type=options.positive_duration,
        default=1.0,
        metavar="DURATION",
        help="how often to look for jobs enqueued elsewhere (default 1)",
    )
    parser.add_argument(
        "--grace",
        type=options.duration,
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
