"""Benchmark: jobkit's workers on PostgreSQL against procrastinate's, on one server.

Run it with ``python tests/benchmarks/bench_postgres_workers.py [URL]``
(default ``$JOBKIT_TEST_POSTGRES_URL`` or the local server); it needs
``jobkit[postgres]`` and ``procrastinate``. Each system runs in processes of
its own (procrastinate on its own asyncio loop), in a schema of its own that
is dropped afterwards. Systems alternate within each round; every figure is
the median over the rounds, and ratios compare figures of the same run.

- **throughput**: 1 and 3 worker processes, ``concurrency`` 10 each, with
  idle workers woken by an enqueue of ``--jobs`` no-op jobs in one batch;
  from just before the enqueue until the server holds them all finished.
- **wake-up**: one idle worker, polling at its default (jobkit 1 s,
  procrastinate 5 s: both listen for NOTIFY); one job at a time, the delay
  from just before the enqueue to the start of its handler: p50 and p99.
- **finished backlog**: one jobkit worker process runs ``--jobs`` no-op
  jobs in a schema that already holds ``--finished`` SUCCEEDED jobs, and in
  an empty one, each vacuumed first (as is every table before a timed run);
  the ratio should stay near 1, as the claim reads a partial index of
  QUEUED jobs.

A worker process is this script run with ``--worker SYSTEM SCHEMA ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import trio
from bench_postgres import fill_finished
from psycopg import sql

import jobkit

DEFAULT_URL = os.environ.get(
    "JOBKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CONCURRENCY = 10
SYSTEMS = ("jobkit", "procrastinate")


# -- the worker processes ------------------------------------------------------------


def stamp(path: str) -> None:
    """Append the wall time a handler started at (one write, one line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def jobkit_worker(url: str, schema: str, ready: str, stamps: str) -> None:
    queue = jobkit.Queue(jobkit.PostgresStore(url, schema=schema))

    @queue.task()
    async def noop() -> None:
        pass

    @queue.task(name="stamp")
    async def stamp_task() -> None:
        stamp(stamps)

    async def main() -> None:
        token = jobkit.CancellationToken()
        async with jobkit.cancel_on_signals(token), trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    jobkit.run_worker, queue, concurrency=CONCURRENCY, shutdown=token
                )
            )
            await trio.Path(ready).write_text("ready")
        await queue.store.aclose()

    trio.run(main)


def procrastinate_app(url: str, schema: str) -> Any:
    import procrastinate

    # Procrastinate's SQL names its tables unqualified: the search path puts
    # them in this run's schema.
    connector = procrastinate.PsycopgConnector(
        conninfo=url, kwargs={"options": f"-c search_path={schema}"}
    )
    return procrastinate.App(connector=connector)


def procrastinate_worker(url: str, schema: str, ready: str, stamps: str) -> None:
    app = procrastinate_app(url, schema)

    async def noop() -> None:
        pass

    async def stamp_task() -> None:
        stamp(stamps)

    app.task(name="noop")(noop)
    app.task(name="stamp")(stamp_task)

    async def main() -> None:
        async with app.open_async():
            await asyncio.to_thread(Path(ready).write_text, "ready")
            await app.run_worker_async(concurrency=CONCURRENCY, delete_jobs="never")

    asyncio.run(main())


# -- the bench process: schemas, enqueues, counts -------------------------------------


class JobkitProducer:
    """A PostgresStore on a trio loop of its own thread, open for the whole run.

    The bench enqueues through it from the main thread, so that opening a
    store is never part of what is timed.
    """

    def __init__(self, url: str, schema: str) -> None:
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._serve, url, schema), daemon=True
        )
        self._thread.start()
        self._started.wait()

    async def _serve(self, url: str, schema: str) -> None:
        async with jobkit.PostgresStore(url, schema=schema) as store:
            self._store = store
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._started.set()
            await self._stop.wait()

    def enqueue(self, task: str, count: int) -> None:
        jobs = [jobkit.NewJob(task=task)] * count
        put = functools.partial(self._store.enqueue, jobs, now=time.time())
        trio.from_thread.run(put, trio_token=self._token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


class ProcrastinateProducer:
    """A procrastinate app on an asyncio loop of its own thread, open for the run."""

    def __init__(self, url: str, schema: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._app = procrastinate_app(url, schema)
        self._tasks: dict[str, Any] = {}
        self._run(self._open())

    async def _open(self) -> None:
        await self._app.open_async()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def install(self) -> None:
        self._run(self._app.schema_manager.apply_schema_async())

    def enqueue(self, task: str, count: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._app.task(name=task)(lambda: None)
        fn = self._tasks[task]
        if count == 1:
            self._run(fn.defer_async())
        else:
            self._run(fn.batch_defer_async(*([{}] * count)))

    def close(self) -> None:
        self._run(self._app.close_async())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class System:
    """One system's schema on the server, its worker processes and its jobs."""

    def __init__(self, name: str, url: str, tmp: Path) -> None:
        self.name, self.url, self.tmp = name, url, tmp
        self.schema = f"bench_{name[:4]}_{uuid.uuid4().hex[:10]}"
        self.stamps = str(tmp / f"{self.schema}.stamps")
        self.procs: list[subprocess.Popen[bytes]] = []
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
            )
        self.producer: JobkitProducer | ProcrastinateProducer
        if name == "procrastinate":
            self.producer = ProcrastinateProducer(url, self.schema)
            self.producer.install()
            self.table = "procrastinate_jobs"
            unfinished = (
                "SELECT count(*) FROM {}.procrastinate_jobs "
                "WHERE status IN ('todo', 'doing')"
            )
        else:
            # Creates the tables, in the schema made above.
            self.producer = JobkitProducer(url, self.schema)
            self.table = "jobs"
            unfinished = (
                "SELECT count(*) FROM {}.jobs WHERE state IN ('queued', 'running')"
            )
        # Read through the partial indexes both keep of unfinished jobs, so
        # that watching for the end costs the server little.
        self._unfinished = sql.SQL(unfinished).format(sql.Identifier(self.schema))
        self._conn = self.connect()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def start(self, processes: int) -> None:
        readies = []
        for _ in range(processes):
            ready = self.tmp / f"{self.schema}.{len(self.procs)}.ready"
            readies.append(ready)
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        self.name,
                        self.url,
                        self.schema,
                        str(ready),
                        self.stamps,
                    ]
                )
            )
        wait_until(lambda: all(r.exists() for r in readies), 30, "workers to start")
        # Once a batch ran to its end, the workers are listening and warm.
        self.enqueue("noop", 5 * CONCURRENCY * processes)
        self.wait_done()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def enqueue(self, task: str, count: int) -> None:
        self.producer.enqueue(task, count)

    def vacuum(self) -> None:
        """Clean the jobs table and refresh its statistics, as autovacuum would."""
        query = sql.SQL("VACUUM ANALYZE {}.{}").format(
            sql.Identifier(self.schema), sql.Identifier(self.table)
        )
        with self.connect() as conn:
            conn.execute(query)

    def unfinished(self) -> int:
        row = self._conn.execute(self._unfinished).fetchone()
        assert row is not None
        return int(row[0])

    def wait_done(self, timeout: float = 3600) -> None:
        wait_until(lambda: self.unfinished() == 0, timeout, "every job to finish")

    def close(self) -> None:
        self.stop()
        self.producer.close()
        self._conn.close()
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema))
            )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


@contextmanager
def running(name: str, url: str, tmp: Path, processes: int) -> Iterator[System]:
    system = System(name, url, tmp)
    try:
        system.start(processes)
        yield system
    finally:
        system.close()


def throughput(system: System, jobs: int) -> float:
    # Every run starts from a vacuumed table: the same for each system, and
    # for a table of 500,000 finished jobs as for an empty one.
    system.vacuum()
    start = time.perf_counter()
    system.enqueue("noop", jobs)
    system.wait_done()
    return jobs / (time.perf_counter() - start)


def wake_ups(system: System, samples: int, rng: random.Random) -> list[float]:
    """Delays from just before an enqueue to the handler's start, one job at a time."""
    delays: list[float] = []
    path = Path(system.stamps)
    path.unlink(missing_ok=True)
    stamps: list[bytes] = []

    def stamped() -> bool:
        stamps[:] = path.read_bytes().splitlines() if path.exists() else []
        return len(stamps) == len(delays) + 1

    for _ in range(samples):
        # A gap of a random length: the enqueue lands anywhere in a poll period.
        time.sleep(rng.uniform(0.005, 0.03))
        before = time.time()
        system.enqueue("stamp", 1)
        wait_until(stamped, 30, "the handler to start")
        delays.append(float(stamps[-1]) - before)
    system.wait_done()
    return delays


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--finished", type=int, default=500_000)
    args = parser.parse_args()
    rng = random.Random(4)
    rates: dict[tuple[str, int], list[float]] = {}
    delays: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    backlog: dict[str, list[float]] = {"none": [], "finished": []}
    print(
        f"Workers on PostgreSQL at {args.url}: {args.jobs:,} no-op jobs, "
        f"concurrency {CONCURRENCY} per process, median of {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        full = System("jobkit", args.url, tmp)
        try:
            fill_finished(full, args.url, args.finished)  # type: ignore[arg-type]
            for r in range(args.rounds):
                order = SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]
                for processes in (1, 3):
                    for name in order:
                        with running(name, args.url, tmp, processes) as system:
                            rate = throughput(system, args.jobs)
                        rates.setdefault((name, processes), []).append(rate)
                        print(f"  {name}, {processes} process(es): {rate:,.0f} jobs/s")
                for name in order:
                    with running(name, args.url, tmp, 1) as system:
                        delays[name] += wake_ups(
                            system, args.samples // args.rounds, rng
                        )
                with running("jobkit", args.url, tmp, 1) as system:
                    backlog["none"].append(throughput(system, args.jobs))
                full.start(1)
                try:
                    backlog["finished"].append(throughput(full, args.jobs))
                finally:
                    full.stop()
                none, full_rate = backlog["none"][-1], backlog["finished"][-1]
                print(
                    f"  jobkit among 0 / {args.finished:,} finished jobs: "
                    f"{none:,.0f} / {full_rate:,.0f} jobs/s"
                )
                print(f"  round {r + 1} of {args.rounds} done", flush=True)
        finally:
            full.close()

    median = {key: statistics.median(values) for key, values in rates.items()}
    print("throughput, jobs/s (jobkit / procrastinate):")
    for processes in (1, 3):
        ours, theirs = median["jobkit", processes], median["procrastinate", processes]
        print(
            f"  {processes} process{'es' if processes > 1 else ''}: "
            f"{ours:,.0f} / {theirs:,.0f}  ratio {ours / theirs:.2f}"
        )
    print("wake-up, enqueue -> handler start, idle worker, default polling:")
    for name in SYSTEMS:
        values = delays[name]
        print(
            f"  {name}: p50 {percentile(values, 50) * 1000:.1f} ms, "
            f"p99 {percentile(values, 99) * 1000:.1f} ms ({len(values)} jobs)"
        )
    none, finished = (statistics.median(backlog[k]) for k in ("none", "finished"))
    print(
        f"jobkit, 1 process: {none:,.0f} jobs/s with no finished jobs, "
        f"{finished:,.0f} with {args.finished:,}: ratio {finished / none:.2f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        name, url, schema, ready, stamps = sys.argv[2:7]
        worker = jobkit_worker if name == "jobkit" else procrastinate_worker
        worker(url, schema, ready, stamps)
    else:
        main()
