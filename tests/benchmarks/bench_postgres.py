"""Benchmark: PostgresStore's claim+settle cycles, and claims among finished jobs.

Run it with ``python tests/benchmarks/bench_postgres.py [URL]`` against a
PostgreSQL server (default ``$JOBKIT_TEST_POSTGRES_URL`` or the local one);
``--finished 500000`` sets the size of the finished backlog (slow to build).
Each part works in a schema of its own, dropped afterwards.

- **cycles**: 8 trio tasks each claim one job and settle it (Success), over
  and over, for ``JOBS`` jobs enqueued beforehand; each store call is one
  thread hop and one transaction. Shown for ``synchronous="NORMAL"`` (the
  default: claims and settles do not wait for the disk) and ``"FULL"``.
- **batched**: the same with claims of 8 and one settle per batch, as a busy
  worker does.
- **finished**: the claim rate (one task, claim+settle of single jobs) with
  no finished jobs, then with ``--finished`` SUCCEEDED jobs in the table:
  the claim reads the partial index of QUEUED jobs, so the ratio should stay
  near 1.

- **wake-up**: an idle worker (default poll interval, 1 s) on one store; jobs
  enqueued one at a time through a second store, as another process would:
  the time to the handler's start from the enqueue call, and from the
  moment the call returned (its commit), p50 and p99. The hint travels by
  NOTIFY; without it the wait would be up to the poll. Shown for
  ``synchronous="NORMAL"`` (the default: an enqueue waits for the server's
  disk) and ``"OFF"`` (it does not), alternating, ``WAKE_ROUNDS`` rounds.
- **commit floor**: a transaction that writes only its commit record, with
  ``synchronous_commit`` on and off: the disk flush an enqueue waits for.

Each figure is the median of ``ROUNDS`` rounds (wake-ups: ``WAKE_ROUNDS``).
``--parts`` picks some of them: ``cycles,wake,finished``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import uuid
from typing import Literal

import psycopg
import trio

import jobkit
from jobkit import NewJob, PostgresStore
from jobkit.core.job import Success

JOBS = 4000
TASKS = 8
ROUNDS = 3
WAKE_ROUNDS = 5
PINGS = 200
Sync = Literal["OFF", "NORMAL", "FULL"]
DEFAULT_URL = os.environ.get(
    "JOBKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def fresh(url: str, synchronous: Sync = "NORMAL") -> PostgresStore:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    return PostgresStore(url, schema=schema, synchronous=synchronous)


async def cycles(
    store: PostgresStore, jobs: int, tasks: int, batch: int, *, vacuum: bool = False
) -> float:
    await store.enqueue([NewJob(task="noop")] * jobs, now=0.0)
    if vacuum:
        await trio.to_thread.run_sync(vacuum_jobs, store)
    done = 0

    async def work() -> None:
        nonlocal done
        while True:
            claimed = await store.claim(queues=None, limit=batch, now=1.0, lease=60.0)
            if not claimed:
                return
            await store.settle([Success(j.id, j.attempts) for j in claimed], now=2.0)
            done += len(claimed)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(work)
    elapsed = time.perf_counter() - start
    assert done == jobs, done
    return jobs / elapsed


def fill_finished(store: PostgresStore, url: str, count: int) -> None:
    """Insert ``count`` SUCCEEDED jobs directly, in bulk (no events: not needed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {store.schema}.jobs DISABLE TRIGGER jobs_inserted")
        conn.execute(
            f"INSERT INTO {store.schema}.jobs (task, queue, payload, state, "
            "attempts, max_attempts, priority, run_at, created_at, updated_at, "
            "event) SELECT 'old', 'default', '{}', 'succeeded', 1, 1, 0, 0, 0, 0, "
            f"'succeeded' FROM generate_series(1, {count})"
        )
        conn.execute(f"ALTER TABLE {store.schema}.jobs ENABLE TRIGGER jobs_inserted")


def claim_pages(store: PostgresStore) -> int:
    """Buffers one claim of one job touches (EXPLAIN ANALYZE, rolled back).

    The fewest of five tries, each rolled back: the first ones may also tidy
    pages that earlier work left (hint bits, pruning), not the claim's cost.
    """
    trio.run(functools.partial(store.enqueue, [NewJob(task="noop")] * 100, now=0.0))
    vacuum_jobs(store)
    params: dict[str, object] = {
        "now": 1.0,
        "queues": None,
        "limit": 1,
        "until": 61.0,
        "tasks": None,
        "default_tasks": [],
        "defaults": [],
    }
    counts = []
    with psycopg.connect(store.url) as conn:
        for _ in range(5):
            [[[plan]]] = conn.execute(
                b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + store._sql.claim, params
            ).fetchall()
            top = plan["Plan"]
            counts.append(int(top["Shared Hit Blocks"] + top["Shared Read Blocks"]))
            conn.rollback()
    return min(counts)


def vacuum_jobs(store: PostgresStore) -> None:
    """Start from a clean table and fresh statistics, as autovacuum keeps it."""
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {store.schema}.jobs")


async def wake_ups(
    url: str, count: int, synchronous: Sync
) -> tuple[list[float], list[float]]:
    """Per job: from the enqueue call to the handler, and from its commit."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    latencies: list[float] = []
    after_commit: list[float] = []
    async with (
        PostgresStore(url, schema=schema, synchronous=synchronous) as here,
        PostgresStore(url, schema=schema, synchronous=synchronous) as there,
    ):
        queue = jobkit.Queue(here)
        started = trio.Event()

        @queue.task()
        async def ping(sent: float) -> None:
            now = time.time()
            latencies.append(now - sent)
            after_commit.append(now)
            started.set()

        token = jobkit.CancellationToken()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(jobkit.run_worker, queue, shutdown=token)
            )
            for _ in range(count):
                await trio.sleep(0.02)  # the worker is idle again
                started = trio.Event()
                job = NewJob(task="ping", payload={"sent": time.time()})
                await there.enqueue([job], now=time.time())
                committed = time.time()
                await started.wait()
                after_commit[-1] -= committed
            token.cancel()
        await here.drop_schema()
    return latencies, after_commit


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``values``, in milliseconds."""
    values = sorted(values)
    return values[len(values) // 2] * 1e3, values[int(len(values) * 0.99)] * 1e3


def commit_floor(url: str, setting: str, count: int = 300) -> float:
    """Median time of the smallest write transaction: one row of one column.

    (A transaction that only takes an id writes no log before its commit
    record, and PostgreSQL does not wait for the disk to commit it.)
    """
    table = f"bench_floor_{uuid.uuid4().hex[:12]}"
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n bigint)".encode())
        conn.execute(f"INSERT INTO {table} VALUES (0)".encode())
        conn.execute(f"SET synchronous_commit = {setting}".encode())
        update = f"UPDATE {table} SET n = n + 1".encode()
        try:
            for _ in range(count):
                start = time.perf_counter()
                with conn.transaction():
                    conn.execute(update)
                times.append(time.perf_counter() - start)
        finally:
            conn.execute(f"DROP TABLE {table}".encode())
    return statistics.median(times)


def report_wake_ups(url: str) -> None:
    modes: tuple[Sync, ...] = ("NORMAL", "OFF")
    figures: dict[tuple[Sync, str], list[tuple[float, float]]] = {}
    floors: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(WAKE_ROUNDS):
        for synchronous in modes:  # alternating: both see the same load
            measured = trio.run(wake_ups, url, PINGS, synchronous)
            for label, values in zip(("call", "commit"), measured, strict=True):
                figures.setdefault((synchronous, label), []).append(percentiles(values))
        for setting, found in floors.items():
            found.append(commit_floor(url, setting))
    print(f"  wake-up, enqueue elsewhere to handler, {PINGS} jobs, ", end="")
    print(f"median of {WAKE_ROUNDS} rounds:")
    for (synchronous, label), rounds in figures.items():
        p50 = statistics.median(r[0] for r in rounds)
        p99 = statistics.median(r[1] for r in rounds)
        print(f"    {synchronous:<6} from the {label:<6}: ", end="")
        print(f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    for setting, found in floors.items():
        floor = statistics.median(found) * 1e3
        print(f"  commit floor, synchronous_commit={setting:<3}: {floor:.2f} ms")


def run_cycles(url: str, tasks: int, batch: int, synchronous: Sync) -> float:
    rates = []
    for _ in range(ROUNDS):
        store = fresh(url, synchronous=synchronous)
        try:
            rates.append(trio.run(cycles, store, JOBS, tasks, batch))
        finally:
            trio.run(store.drop_schema)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--finished", type=int, default=500_000)
    parser.add_argument("--parts", default="cycles,wake,finished")
    args = parser.parse_args()
    url = args.url
    parts = set(args.parts.split(","))

    print(f"PostgresStore at {url}: {JOBS} jobs, median of {ROUNDS} rounds")
    if "cycles" in parts:
        modes: tuple[Sync, ...] = ("NORMAL", "FULL")
        for synchronous in modes:
            rate = run_cycles(url, TASKS, 1, synchronous)
            print(
                f"  cycles, {TASKS} tasks, 1 job per call, {synchronous}: {rate:,.0f}/s"
            )
        rate = run_cycles(url, TASKS, 8, "NORMAL")
        print(f"  cycles, {TASKS} tasks, 8 jobs per call, NORMAL: {rate:,.0f} jobs/s")
    if "wake" in parts:
        report_wake_ups(url)
    if "finished" in parts:
        report_finished(url, args.finished)


def report_finished(url: str, finished_jobs: int) -> None:
    rates: dict[int, float] = {}
    pages: dict[int, int] = {}
    for finished in (0, finished_jobs):
        store = fresh(url)
        try:
            fill_finished(store, url, finished)
            rates[finished] = statistics.median(
                trio.run(functools.partial(cycles, store, JOBS // 4, 1, 1, vacuum=True))
                for _ in range(ROUNDS)
            )
            pages[finished] = claim_pages(store)
        finally:
            trio.run(store.drop_schema)
    empty, full = rates[0], rates[finished_jobs]
    print(
        f"  claim+settle, 1 task: {empty:,.0f}/s with no finished jobs, "
        f"{full:,.0f}/s with {finished_jobs:,}: ratio {full / empty:.2f}"
    )
    print(
        f"  pages one claim reads: {pages[0]} with no finished jobs, "
        f"{pages[finished_jobs]} with {finished_jobs:,} (load-independent)"
    )


if __name__ == "__main__":
    main()
