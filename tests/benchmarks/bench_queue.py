"""Benchmark: jobkit's SQLite queue against a minimal hand-written SQLite queue.

Run it with ``python tests/benchmarks/bench_queue.py`` (about a minute). Both
sides use WAL and ``synchronous=NORMAL`` on a fresh file per run, in the same
trio program, doing the same work:

- the baseline is the smallest queue that is still correct: one table, one
  partial index for the claim, one ``INSERT`` per enqueue, a claim of one
  ``BEGIN IMMEDIATE`` + ``UPDATE … RETURNING``, an ack of one ``UPDATE``;
- ``SQLiteStore`` additionally records an event per transition, keeps counts
  per queue and state, and maintains the indexes for leases, dead letters and
  unique keys;
- the batched row claims and completes ten jobs per transaction on both
  sides, as a busy worker does;
- the API rows go through :class:`jobkit.Queue` (``enqueue`` and
  ``enqueue_many``), as a producer would; the ``run_worker`` row is a whole
  worker with 10 slots running trivial async handlers, claims, settles and
  all, against the baseline's batches of ten;
- the "jobkit SQL by hand" rows run SQLiteStore's own statements on its own
  schema straight through ``sqlite3``, without jobkit's Python layer or trio
  checkpoints. They split the gap to the baseline in two: what the extra
  database work costs (baseline vs by hand) and what the Python layer costs
  (by hand vs SQLiteStore).
- the "baseline, yielding to trio" rows are the baseline again, awaiting one
  ``trio.lowlevel.checkpoint()`` per call, as every async function of a trio
  library must (a cancellation point and a chance for other tasks to run).
  They show what being an async API costs before any work is done: the
  ceiling of any trio store's ratio on the single-job rows.

Each figure is the median of several runs; the ratio is jobkit's rate over the
baseline's, measured in the same run. A second table counts the pages each
transaction writes to the write-ahead log, with their size, which is what a
single-job transaction's cost follows. The last table shows that a claim's cost does not
grow with the number of finished jobs in the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from _baseline import Baseline, payload

import jobkit
from jobkit import NewJob, SQLiteStore
from jobkit.core.job import Success
from jobkit.store.sqlite import schema as sql

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ONE_BY_ONE = 3000
BATCH = 10_000
QUEUED = 20_000
CLAIMED = 5000
CYCLES = 2000
BATCHED = 10
FINISHED = 500_000


# -- one run of each workload, returning jobs per second -------------------------

# Called before each of the baseline's calls: nothing, or a trio checkpoint.
Pause = Callable[[], Awaitable[None]]


def yielding(workload: Callable[[Path, Pause], Awaitable[float]]) -> Workload:
    """The baseline workload, awaiting one trio checkpoint per call."""
    return lambda path: workload(path, trio.lowlevel.checkpoint)


def timed(count: int, start: float) -> float:
    return count / (time.perf_counter() - start)


async def no_pause() -> None:
    pass


async def base_enqueue_one(path: Path, pause: Pause = no_pause) -> float:
    q = Baseline(path)
    start = time.perf_counter()
    for i in range(ONE_BY_ONE):
        await pause()
        q.enqueue("send", payload(i), time.time())
    rate = timed(ONE_BY_ONE, start)
    q.close()
    return rate


async def store_enqueue_one(path: Path) -> float:
    store = SQLiteStore(path)
    start = time.perf_counter()
    for i in range(ONE_BY_ONE):
        await store.enqueue([NewJob(task="send", payload=payload(i))], now=time.time())
    rate = timed(ONE_BY_ONE, start)
    await store.aclose()
    return rate


async def raw_enqueue_one(path: Path) -> float:
    store = SQLiteStore(path)
    db = store._conn
    start = time.perf_counter()
    for i in range(ONE_BY_ONE):
        now = time.time()
        row = ("send", "default", json.dumps(payload(i)), 1, 0, now, now, None)
        db.execute(sql.INSERT, row)
    rate = timed(ONE_BY_ONE, start)
    await store.aclose()
    return rate


def make_queue(path: Path) -> tuple[jobkit.Queue, jobkit.Task[..., Any]]:
    queue = jobkit.Queue(SQLiteStore(path))

    @queue.task()
    async def send(user_id: int, template: str) -> None:
        """Not run: the benchmark only enqueues."""

    return queue, send


async def api_enqueue_one(path: Path) -> float:
    queue, _ = make_queue(path)
    start = time.perf_counter()
    for i in range(ONE_BY_ONE):
        await queue.enqueue("send", payload(i))
    rate = timed(ONE_BY_ONE, start)
    await queue.store.aclose()
    return rate


async def base_enqueue_many(path: Path) -> float:
    q = Baseline(path)
    jobs = [("send", payload(i)) for i in range(BATCH)]
    start = time.perf_counter()
    q.enqueue_many(jobs, time.time())
    rate = timed(BATCH, start)
    q.close()
    return rate


async def store_enqueue_many(path: Path) -> float:
    store = SQLiteStore(path)
    jobs = [NewJob(task="send", payload=payload(i)) for i in range(BATCH)]
    start = time.perf_counter()
    await store.enqueue(jobs, now=time.time())
    rate = timed(BATCH, start)
    await store.aclose()
    return rate


async def api_enqueue_many(path: Path) -> float:
    queue, send = make_queue(path)
    start = time.perf_counter()
    # Preparing the jobs is part of the API's work (argument checks).
    await queue.enqueue_many(send.prepare(**payload(i)) for i in range(BATCH))
    rate = timed(BATCH, start)
    await queue.store.aclose()
    return rate


async def base_claim_complete(path: Path, pause: Pause = no_pause) -> float:
    q = Baseline(path)
    q.enqueue_many([("send", payload(i)) for i in range(QUEUED)], time.time())
    start = time.perf_counter()
    for _ in range(CLAIMED):
        await pause()
        claimed = q.claim(time.time(), 30.0)
        assert claimed is not None
        job_id, attempt, _ = claimed
        await pause()
        q.complete(job_id, attempt, None)
    rate = timed(CLAIMED, start)
    q.close()
    return rate


async def claim_and_settle(store: SQLiteStore, count: int) -> None:
    for _ in range(count):
        [job] = await store.claim(
            queues=["default"], limit=1, now=time.time(), lease=30.0
        )
        await store.settle([Success(job.id, job.attempts, None)], now=time.time())


async def store_claim_complete(path: Path) -> float:
    store = SQLiteStore(path)
    jobs = [NewJob(task="send", payload=payload(i)) for i in range(QUEUED)]
    await store.enqueue(jobs, now=time.time())
    start = time.perf_counter()
    await claim_and_settle(store, CLAIMED)
    rate = timed(CLAIMED, start)
    await store.aclose()
    return rate


async def base_batches(path: Path) -> float:
    q = Baseline(path)
    q.enqueue_many([("send", payload(i)) for i in range(QUEUED)], time.time())
    start = time.perf_counter()
    for _ in range(CLAIMED // BATCHED):
        claimed = q.claim_many(BATCHED, time.time(), 30.0)
        q.complete_many([(job_id, attempt, None) for job_id, attempt, _ in claimed])
    rate = timed(CLAIMED, start)
    q.close()
    return rate


async def store_batches(path: Path) -> float:
    store = SQLiteStore(path)
    jobs = [NewJob(task="send", payload=payload(i)) for i in range(QUEUED)]
    await store.enqueue(jobs, now=time.time())
    start = time.perf_counter()
    for _ in range(CLAIMED // BATCHED):
        claimed = await store.claim(
            queues=["default"], limit=BATCHED, now=time.time(), lease=30.0
        )
        outcomes = [Success(job.id, job.attempts, None) for job in claimed]
        await store.settle(outcomes, now=time.time())
    rate = timed(CLAIMED, start)
    await store.aclose()
    return rate


async def worker_drain(path: Path) -> float:
    queue = jobkit.Queue(SQLiteStore(path))
    token = jobkit.CancellationToken()
    ran = 0

    @queue.task()
    async def send(user_id: int, template: str) -> None:
        nonlocal ran
        ran += 1
        if ran == CLAIMED:
            token.cancel()  # the worker still settles what is in hand

    await queue.enqueue_many(
        send.prepare(user_id=i, template="welcome") for i in range(QUEUED)
    )
    worker = jobkit.Worker(queue, concurrency=BATCHED, shutdown=token)
    start = time.perf_counter()
    await worker.run()
    rate = timed(worker.statistics().succeeded, start)
    await queue.store.aclose()
    return rate


async def raw_claim_complete(path: Path) -> float:
    store = SQLiteStore(path)
    jobs = [NewJob(task="send", payload=payload(i)) for i in range(QUEUED)]
    await store.enqueue(jobs, now=time.time())
    db = store._conn
    claim = sql.CLAIM_FIRST  # the store's claim of one job from one queue
    start = time.perf_counter()
    for _ in range(CLAIMED):
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        [row] = db.execute(claim, (now + 30.0, now, "default", now, 1)).fetchall()
        db.execute("COMMIT")
        json.loads(row[3])
        db.execute(sql.SUCCEED, (None, time.time(), row[0], row[5]))
    rate = timed(CLAIMED, start)
    await store.aclose()
    return rate


async def base_cycle(path: Path, pause: Pause = no_pause) -> float:
    q = Baseline(path)
    start = time.perf_counter()
    for i in range(CYCLES):
        await pause()
        q.enqueue("send", payload(i), time.time())
        await pause()
        claimed = q.claim(time.time(), 30.0)
        assert claimed is not None
        await pause()
        q.complete(claimed[0], claimed[1], None)
    rate = timed(CYCLES, start)
    q.close()
    return rate


async def store_cycle(path: Path) -> float:
    store = SQLiteStore(path)
    start = time.perf_counter()
    for i in range(CYCLES):
        await store.enqueue([NewJob(task="send", payload=payload(i))], now=time.time())
        await claim_and_settle(store, 1)
    rate = timed(CYCLES, start)
    await store.aclose()
    return rate


async def api_cycle(path: Path) -> float:
    queue, _ = make_queue(path)
    store = queue.store
    assert isinstance(store, SQLiteStore)
    start = time.perf_counter()
    for i in range(CYCLES):
        await queue.enqueue("send", payload(i))
        await claim_and_settle(store, 1)
    rate = timed(CYCLES, start)
    await store.aclose()
    return rate


def wal_frames(path: Path) -> int:
    wal = Path(f"{path}-wal")
    if not wal.exists():
        return 0
    return (wal.stat().st_size - 32) // (24 + page_size(path))


def page_size(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        size: int = db.execute("PRAGMA page_size").fetchone()[0]
        return size


def pages_per_transaction(directory: Path, count: int = 200) -> dict[str, list[float]]:
    """WAL pages written per enqueue, claim and completion, checkpoints held off."""
    q = Baseline(directory / "pages-base.db")
    q.db.execute("PRAGMA wal_autocheckpoint = 0")
    marks = [wal_frames(directory / "pages-base.db")]
    for i in range(count):
        q.enqueue("send", payload(i), 1.0)
    marks.append(wal_frames(directory / "pages-base.db"))
    claimed = [q.claim(2.0, 30.0) for _ in range(count)]
    marks.append(wal_frames(directory / "pages-base.db"))
    for job in claimed:
        assert job is not None
        q.complete(job[0], job[1], None)
    marks.append(wal_frames(directory / "pages-base.db"))
    q.close()

    path = directory / "pages-store.db"

    async def store_side() -> list[int]:
        store = SQLiteStore(path)
        store._conn.execute("PRAGMA wal_autocheckpoint = 0")
        store._checkpointing = True  # no background checkpoint either
        found = [wal_frames(path)]
        for i in range(count):
            await store.enqueue([NewJob(task="send", payload=payload(i))], now=1.0)
        found.append(wal_frames(path))
        jobs = []
        for _ in range(count):
            jobs += await store.claim(queues=["default"], limit=1, now=2.0, lease=30)
        found.append(wal_frames(path))
        for job in jobs:
            await store.settle([Success(job.id, job.attempts, None)], now=3.0)
        found.append(wal_frames(path))
        await store.aclose()
        return found

    store_marks = trio.run(store_side)
    return {
        f"{name} ({page_size(file) // 1024} KB pages)": [
            (m[i + 1] - m[i]) / count for i in range(3)
        ]
        for name, m, file in (
            ("baseline", marks, directory / "pages-base.db"),
            ("SQLiteStore", store_marks, path),
        )
    }


def add_finished_jobs(path: Path, count: int) -> None:
    """Fill the table with finished jobs and their events in one transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO jobs (task, queue, payload, state, attempts, max_attempts,
                          priority, run_at, created_at, updated_at, event)
        SELECT 'send', 'default', '{"user_id":' || i || '}', 'succeeded', 1, 1,
               0, 0.0, 0.0, 1.0, 'succeeded' FROM n
        """,
        (count,),
    )
    db.execute("COMMIT")
    db.close()


async def claim_rate(path: Path) -> float:
    store = SQLiteStore(path)
    jobs = [NewJob(task="send", payload=payload(i)) for i in range(CLAIMED)]
    await store.enqueue(jobs, now=time.time())
    start = time.perf_counter()
    await claim_and_settle(store, CLAIMED)
    rate = timed(CLAIMED, start)
    await store.aclose()
    return rate


# -- running and reporting -------------------------------------------------------

Workload = Callable[[Path], Awaitable[float]]


def median_rates(workloads: dict[str, Workload], directory: Path) -> dict[str, float]:
    """Run the workloads interleaved, RUNS times each, on fresh files."""
    rates: dict[str, list[float]] = {name: [] for name in workloads}
    for run in range(RUNS):
        names = list(workloads)
        if run % 2:
            names.reverse()  # alternate who goes first, against drift
        for name in names:
            path = Path(tempfile.mkdtemp(dir=directory)) / "jobs.db"
            rates[name].append(trio.run(workloads[name], path))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> int:
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        suites: list[tuple[str, Workload, dict[str, Workload]]] = [
            (
                f"enqueue one at a time ({ONE_BY_ONE} jobs)",
                base_enqueue_one,
                {
                    "baseline, yielding to trio": yielding(base_enqueue_one),
                    "jobkit SQL by hand": raw_enqueue_one,
                    "SQLiteStore.enqueue": store_enqueue_one,
                    "Queue.enqueue": api_enqueue_one,
                },
            ),
            (
                f"enqueue_many of {BATCH} in one call",
                base_enqueue_many,
                {
                    "SQLiteStore.enqueue": store_enqueue_many,
                    "Queue.enqueue_many": api_enqueue_many,
                },
            ),
            (
                f"claim one + complete one ({CLAIMED} of {QUEUED} queued)",
                base_claim_complete,
                {
                    "baseline, yielding to trio": yielding(base_claim_complete),
                    "jobkit SQL by hand": raw_claim_complete,
                    "SQLiteStore claim/settle": store_claim_complete,
                },
            ),
            (
                f"claim {BATCHED} + complete {BATCHED} per transaction",
                base_batches,
                {
                    "SQLiteStore claim/settle": store_batches,
                    f"run_worker, {BATCHED} slots": worker_drain,
                },
            ),
            (
                f"full cycle: enqueue, claim, complete ({CYCLES} jobs)",
                base_cycle,
                {
                    "baseline, yielding to trio": yielding(base_cycle),
                    "SQLiteStore": store_cycle,
                    "Queue.enqueue + store": api_cycle,
                },
            ),
        ]
        for title, baseline, contenders in suites:
            rates = median_rates({"baseline": baseline, **contenders}, directory)
            for name in contenders:
                rows.append((title, rates["baseline"], rates[name], name))
            print(f"measured: {title}", file=sys.stderr)

        empty = directory / "empty.db"
        full = directory / "full.db"
        SQLiteStore(empty)._conn.close()
        SQLiteStore(full)._conn.close()
        start = time.perf_counter()
        add_finished_jobs(full, FINISHED)
        setup = time.perf_counter() - start
        finished_rates: dict[str, list[float]] = {"empty": [], "full": []}
        for run in range(RUNS):
            for name, path in [("empty", empty), ("full", full)][
                :: 1 if run % 2 else -1
            ]:
                finished_rates[name].append(trio.run(claim_rate, path))
        size = os.path.getsize(full) / 2**20
        pages = pages_per_transaction(directory)

    width = max(len(title) for title, *_ in rows)
    print(f"\nmedian of {RUNS} runs; jobs per second (higher is better)\n")
    print(
        f"{'workload':<{width}}  {'jobkit side':<26} "
        f"{'baseline':>9} {'jobkit':>9} {'ratio':>6}"
    )
    for title, base, mine, name in rows:
        print(
            f"{title:<{width}}  {name:<26} {base:9.0f} {mine:9.0f} {mine / base:6.2f}"
        )
    print("\nWAL pages written per single-job transaction")
    print(f"  {'':30} {'enqueue':>8} {'claim':>8} {'complete':>8}")
    for name, (enqueue, claim, complete) in pages.items():
        print(f"  {name:30} {enqueue:8.1f} {claim:8.1f} {complete:8.1f}")
    empty_rate = statistics.median(finished_rates["empty"])
    full_rate = statistics.median(finished_rates["full"])
    print(
        f"\nclaim + complete, one at a time, {CLAIMED} queued jobs "
        f"(setup of {FINISHED} finished rows: {setup:.1f} s, file {size:.0f} MiB)"
    )
    print(f"  0 finished jobs in the table:       {empty_rate:9.0f} jobs/s")
    print(f"  {FINISHED} finished jobs in the table:  {full_rate:9.0f} jobs/s")
    print(f"  ratio: {full_rate / empty_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
