"""``jobkit dashboard``: serve a web page to watch and operate the queue."""

from __future__ import annotations

import argparse
import functools
import os
import sys

import trio

from . import options
from .common import CLIError, db_path, open_store
from .options import Subparsers

DASHBOARD_TOKEN_ENV = "JOBKIT_DASHBOARD_TOKEN"
"""The environment variable that ``dashboard --token`` defaults to."""

DASHBOARD_NICENESS = 10
"""How much lower than its caller's the dashboard's CPU priority is."""


def _port(text: str) -> int:
    value = options.whole_number(text, 0, "a port is 0..65535 (0: any free port)")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def add_dashboard(commands: Subparsers) -> None:
    parser = options.add_command(
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
        json=False,  # it prints nothing to parse
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
        type=options.duration,
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
