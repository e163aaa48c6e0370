"""A small app for the real-process tests: a producer and a worker on one SQLite file.

Usage::

    python worker_app.py enqueue DB --count N --seconds S
    python worker_app.py work DB --log-dir DIR [--concurrency C] [--lease L]
                                 [--until-done] [--ready-file PATH]

The single task, ``record``, appends a ``start`` line when it begins and an
``end`` line when it finishes to ``DIR/exec-<pid>.log`` (one file per
process, so lines from different processes never interleave), then returns.
``--until-done`` makes the worker shut down gracefully once there are jobs
and none is queued or running; SIGINT/SIGTERM shut it down gracefully too.
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


def build_queue(db: str, log_dir: str | None = None) -> jobkit.Queue:
    queue = jobkit.Queue(jobkit.SQLiteStore(db))
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

    @queue.task(retry=jobkit.RetryPolicy(5, jobkit.Backoff.constant(0.05)))
    async def record(n: int, seconds: float) -> int:
        note("start")
        await trio.sleep(seconds)
        note("end")
        return n

    return queue


async def enqueue(db: str, count: int, seconds: float) -> None:
    queue = build_queue(db)
    ids = await queue.enqueue_many(
        [queue.tasks["record"].prepare(n=i, seconds=seconds) for i in range(count)]
    )
    print(" ".join(map(str, ids)))
    await queue.store.aclose()


async def until_done(queue: jobkit.Queue, token: jobkit.CancellationToken) -> None:
    while True:
        counts = await queue.counts()
        active = counts.total(jobkit.JobState.QUEUED) + counts.total(
            jobkit.JobState.RUNNING
        )
        # Wait for work to exist first: workers may start before the producer.
        if active == 0 and sum(counts.counts.values()) > 0:
            token.cancel()
            return
        await trio.sleep(0.05)


async def work(args: argparse.Namespace) -> None:
    queue = build_queue(args.db, args.log_dir)
    token = jobkit.CancellationToken()
    async with jobkit.cancel_on_signals(token), trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                jobkit.run_worker,
                queue,
                concurrency=args.concurrency,
                lease=args.lease,
                poll_interval=0.05,
                shutdown=token,
                grace=5.0,
            )
        )
        if args.ready_file:
            await trio.Path(args.ready_file).write_text(str(os.getpid()))
        if args.until_done:
            nursery.start_soon(until_done, queue, token)
    await queue.store.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enqueue")
    p.add_argument("db")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seconds", type=float, default=0.1)
    w = sub.add_parser("work")
    w.add_argument("db")
    w.add_argument("--log-dir", required=True)
    w.add_argument("--concurrency", type=int, default=4)
    w.add_argument("--lease", type=float, default=5.0)
    w.add_argument("--until-done", action="store_true")
    w.add_argument("--ready-file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command == "enqueue":
        trio.run(enqueue, args.db, args.count, args.seconds)
    else:
        trio.run(work, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
