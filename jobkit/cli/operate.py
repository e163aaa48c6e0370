"""Operating on jobs: ``jobkit requeue``, ``discard``, ``cancel`` and ``purge``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TypeVar

from ..core.job import JobState, TransitionError
from ..queue.facade import Queue
from ..store.protocol import JobNotFound, Store
from . import options
from .common import CLIError, print_json, run_with_store, when
from .options import Subparsers

T = TypeVar("T")


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


def _ids_or_all(parser: argparse.ArgumentParser, *, all_dead: bool) -> None:
    parser.add_argument(
        "ids", type=options.job_id, nargs="*", metavar="ID", help="job ids"
    )
    if all_dead:
        parser.add_argument(
            "--all-dead", action="store_true", help="every dead job (of --queue)"
        )
        parser.add_argument(
            "--queue", type=options.name, metavar="Q", help="with --all-dead: one queue"
        )


def add_requeue(commands: Subparsers) -> None:
    parser = options.add_command(
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
    parser = options.add_command(
        commands,
        "discard",
        "give up on dead jobs",
        "Move dead jobs to cancelled for good; their records stay. Every ID is\n"
        "checked first: if one is unknown or not dead, nothing is changed.",
        cmd_discard,
        epilog="example:\n  jobkit discard 17 18 --db jobs.db",
    )
    _ids_or_all(parser, all_dead=False)


async def _jobs_in(store: Store, ids: Sequence[int], state: JobState) -> list[int]:
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

    async def body(store: Store) -> list[int]:
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
    parser = options.add_command(
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


def add_purge(commands: Subparsers) -> None:
    parser = options.add_command(
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
        type=options.duration,
        required=True,
        metavar="AGE",
        help="seconds, or a number with ms, s, m, h or d (7d: a week)",
    )


def cmd_purge(args: argparse.Namespace) -> int:
    before = time.time() - args.older_than

    async def body(store: Store) -> int:
        return await store.purge(before=before)

    deleted = run_with_store(args, body)
    if args.json:
        print_json({"purged": deleted, "before": before})
    else:
        jobs = "job" if deleted == 1 else "jobs"
        print(f"purged {deleted} finished {jobs} last changed before {when(before)}")
    return 0
