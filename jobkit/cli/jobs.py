"""Looking at jobs: ``jobkit jobs``, ``show``, ``wait`` and ``dead``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import trio

from .._checks import INT64_MAX
from ..core.job import JSON, TERMINAL_STATES, Job, JobState
from ..queue.facade import Queue
from ..runtime.tasks import first_line
from ..store.protocol import Store
from . import options
from .common import print_json, render_table, run_with_store, when
from .options import Subparsers


def clip(text: str | None, width: int = 60) -> str:
    """Return the first line of ``text``, cut to ``width`` characters."""
    line = first_line(text) or ""
    return line if len(line) <= width else line[: width - 1] + "…"


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


def add_jobs(commands: Subparsers) -> None:
    parser = options.add_command(
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
        "--state", type=options.job_state, metavar="S", help="queued, running, ..."
    )
    _add_listing_options(parser)


def _add_listing_options(parser: argparse.ArgumentParser) -> None:
    """The filters, order and paging that every command that lists jobs takes."""
    parser.add_argument(
        "--queue", type=options.name, metavar="Q", help="only this queue"
    )
    parser.add_argument("--task", type=options.name, metavar="T", help="only this task")
    parser.add_argument(
        "--limit",
        type=options.limit,
        default=100,
        metavar="N",
        help="show at most N jobs (default 100; 0: all)",
    )
    parser.add_argument(
        "--newest", action="store_true", help="newest first (default: oldest first)"
    )
    parser.add_argument(
        "--after",
        type=options.job_id,
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

    async def body(store: Store) -> list[Job]:
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
    parser = options.add_command(
        commands,
        "show",
        "show one job and its history",
        "Show every field of a job, its payload, result and last error (with\n"
        "its traceback), and the events of its history.",
        cmd_show,
        epilog="example:\n  jobkit show 42 --db jobs.db",
    )
    parser.add_argument("id", type=options.job_id, metavar="ID", help="the job's id")


def cmd_show(args: argparse.Namespace) -> int:
    async def body(store: Store) -> tuple[Job, list[Any]]:
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
    parser = options.add_command(
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
    parser.add_argument("id", type=options.job_id, metavar="ID", help="the job's id")
    parser.add_argument(
        "--timeout",
        type=options.duration,
        metavar="DURATION",
        help="give up after this long (default: wait as long as it takes)",
    )
    parser.add_argument(
        "--poll-interval",
        type=options.positive_duration,
        default=0.5,
        metavar="DURATION",
        help="how often to look (default 0.5)",
    )


def cmd_wait(args: argparse.Namespace) -> int:
    async def body(store: Store) -> Job:
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
    parser = options.add_command(
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
