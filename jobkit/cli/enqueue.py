"""``jobkit enqueue``: store a job, checked against the app's task if given."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..core.job import JSON, MAX_JSON_DEPTH, NewJob, check_json
from ..store.protocol import Store
from . import options
from .common import CLIError, app_spec, load_app, print_json, run_with_store
from .options import Subparsers


def add_enqueue(commands: Subparsers) -> None:
    parser = options.add_command(
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
        "task", type=options.name, metavar="TASK", help="the task's registered name"
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
        "--queue", type=options.name, metavar="Q", help="the queue to put it on"
    )
    parser.add_argument(
        "--priority", type=options.priority, metavar="N", help="higher runs first"
    )
    parser.add_argument(
        "--delay",
        type=options.duration,
        metavar="DURATION",
        help="run no sooner than this",
    )
    parser.add_argument(
        "--max-attempts",
        type=options.positive_int,
        metavar="N",
        help="attempts allowed",
    )
    parser.add_argument(
        "--unique-key",
        type=options.name,
        metavar="KEY",
        help="store nothing while a job with this key is queued or running",
    )


def _load_json(text: str, what: str) -> JSON:
    """Parse ``text``; refuse bytes that are not UTF-8 and runaway nesting."""
    problem = options.not_utf8(text)
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
        problem = options.not_utf8(key)
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

    async def body(store: Store) -> int:
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
