"""A worker host for the multi-host tests: one process, one PostgreSQL schema.

Usage::

    python pg_worker_app.py enqueue URL SCHEMA --count N --seconds S [--then T]
    python pg_worker_app.py work URL SCHEMA --log-dir DIR [--concurrency C]
        [--lease L] [--timeout T] [--ready-file PATH]

Only jobkit's public API is used, as an application would. The single task,
``record``, appends a ``start`` line to ``DIR/exec-<pid>.log`` when it
begins, sleeps ``seconds`` (``then`` on a later attempt), then appends
``end`` (it returned) or ``stop`` (it was cancelled: a shutdown, a lost
lease or a fence). A line is
``KIND JOB_ID ATTEMPT PID WALL_TIME``; a process killed with -9 leaves a
``start`` without its end. SIGINT/SIGTERM shut the worker down gracefully.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from functools import partial

import trio

import jobkit


def build_queue(
    url: str, schema: str, timeout: float, log_dir: str | None = None
) -> jobkit.Queue:
    store = jobkit.PostgresStore(url, schema=schema, timeout=timeout)
    queue = jobkit.Queue(store)
    log_path = (
        None if log_dir is None else os.path.join(log_dir, f"exec-{os.getpid()}.log")
    )

    def note(what: str) -> None:
        assert log_path is not None
        job = jobkit.current_job()
        line = f"{what} {job.id} {job.attempts} {os.getpid()} {time.time():.6f}\n"
        # One write per line on an O_APPEND descriptor: a kill -9 loses no
        # written line and never leaves half of one.
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    @queue.task(retry=jobkit.RetryPolicy(10, jobkit.Backoff.constant(0.05)))
    async def record(n: int, seconds: float, then: float | None = None) -> int:
        note("start")
        ended = False
        if then is not None and jobkit.current_job().attempts > 1:
            seconds = then
        try:
            await trio.sleep(seconds)
            ended = True
        finally:
            note("end" if ended else "stop")
        return n

    return queue


async def enqueue(args: argparse.Namespace) -> None:
    queue = build_queue(args.url, args.schema, args.timeout)
    task = queue.tasks["record"]
    ids = []
    for start in range(0, args.count, 1000):
        batch = range(start, min(args.count, start + 1000))
        ids += await queue.enqueue_many(
            [task.prepare(n=i, seconds=args.seconds, then=args.then) for i in batch]
        )
    print(" ".join(map(str, ids)))
    await queue.store.aclose()


async def work(args: argparse.Namespace) -> None:
    queue = build_queue(args.url, args.schema, args.timeout, args.log_dir)
    token = jobkit.CancellationToken()
    async with jobkit.cancel_on_signals(token), trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                jobkit.run_worker,
                queue,
                concurrency=args.concurrency,
                lease=args.lease,
                poll_interval=args.poll_interval,
                shutdown=token,
                grace=5.0,
            )
        )
        if args.ready_file:
            await trio.Path(args.ready_file).write_text(str(os.getpid()))
    await queue.store.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("enqueue", "work"):
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("schema")
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "enqueue":
            p.add_argument("--count", type=int, required=True)
            p.add_argument("--seconds", type=float, default=0.1)
            p.add_argument("--then", type=float)
        else:
            p.add_argument("--log-dir", required=True)
            p.add_argument("--concurrency", type=int, default=4)
            p.add_argument("--lease", type=float, default=2.0)
            p.add_argument("--poll-interval", type=float, default=0.2)
            p.add_argument("--ready-file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        # The producer's per-job lines would only fill its log.
        level=logging.INFO if args.command == "work" else logging.WARNING,
        format="%(created).6f %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    trio.run(enqueue if args.command == "enqueue" else work, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
