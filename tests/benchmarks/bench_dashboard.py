"""Benchmark: does an open dashboard slow the workers down?

Run it with ``python tests/benchmarks/bench_dashboard.py`` (a few minutes;
needs the ``web`` extra). A worker with 10 slots runs trivial async jobs on
a fresh SQLite file at full speed until the queue is empty:

- alone: the baseline;
- beside ``jobkit dashboard`` in another process (which lowers its own CPU
  priority), which a client (a third process, at the lowest priority,
  standing in for a browser on another machine) asks for every page once a
  second: overview, jobs, a job's detail, dead letters and workers;
- the same, with ``/metrics`` read every 15 s as well, as Prometheus would;
- with the dashboard mounted in the worker's own process and event loop,
  polled the same two ways: the embedded case, where every read a page
  makes competes with the worker for one thread.

The client's first round of requests (which lets the dashboard find its
place in the event log, and ``/metrics`` fold the log so far) ends before
the worker starts: the figures are the steady state of a dashboard left
open. Each is the median of several runs, taken in turns; the ratio is the
worker's rate over its rate alone in the same run. Page times are the
client's, from request to full answer.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

import jobkit
from jobkit.dashboard import create_app, serve

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
JOBS = int(os.environ.get("BENCH_DASHBOARD_JOBS", "40000"))
PAGES = ["/", "/jobs", "/jobs/1", "/dead", "/workers"]
SCRAPE = 15.0  # seconds between two reads of /metrics


def build_queue(db: str) -> jobkit.Queue:
    queue = jobkit.Queue(jobkit.SQLiteStore(db))

    @queue.task()
    async def noop(i: int) -> int:
        return i

    return queue


async def fill(db: str) -> None:
    queue = build_queue(db)
    for start in range(0, JOBS, 5000):
        await queue.enqueue_many(
            queue.tasks["noop"].prepare(i=i) for i in range(start, start + 5000)
        )
    await queue.store.aclose()


async def work(queue: jobkit.Queue) -> float:
    """Run the worker until the queue is empty; return jobs per second."""
    started = time.perf_counter()
    await jobkit.run_worker(queue, concurrency=10, until_empty=True)
    return JOBS / (time.perf_counter() - started)


@asynccontextmanager
async def polling(url: str, scrape: bool, times: list[float]) -> AsyncIterator[None]:
    """Run the client while the body runs, from the end of its first round."""
    args = [sys.executable, __file__, "poll", url] + (["--scrape"] if scrape else [])
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as client:  # noqa: ASYNC220
        assert client.stdout is not None
        ready = await trio.to_thread.run_sync(client.stdout.readline)
        assert ready.strip() == "ready", ready
        try:
            yield
        finally:
            client.terminate()
            out = await trio.to_thread.run_sync(client.stdout.read)
            times.extend(float(x) for x in out.split())


async def alone(db: str, times: list[float]) -> float:
    queue = build_queue(db)
    try:
        return await work(queue)
    finally:
        await queue.store.aclose()


async def beside(db: str, times: list[float], *, scrape: bool) -> float:
    command = [sys.executable, "-m", "jobkit", "dashboard", "--db", db, "--port", "0"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as server:  # noqa: ASYNC220
        assert server.stderr is not None
        line = await trio.to_thread.run_sync(server.stderr.readline)
        found = re.search(r"dashboard on (\S+)", line)
        assert found, f"the dashboard did not start: {line}"
        queue = build_queue(db)
        try:
            async with polling(found.group(1), scrape, times):
                return await work(queue)
        finally:
            server.terminate()
            await queue.store.aclose()


async def embedded(db: str, times: list[float], *, scrape: bool) -> float:
    queue = build_queue(db)
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                functools.partial(serve, create_app(queue), port=0)
            )
            async with polling(url, scrape, times):
                rate = await work(queue)
            nursery.cancel_scope.cancel()
        return rate
    finally:
        await queue.store.aclose()


def poll(url: str, scrape: bool) -> None:
    """Ask for every page once a second until terminated; print the page times."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # A browser would run on another machine: here the client stands in
    # for it at a low priority, so that it takes little from the worker.
    os.nice(19)
    times: list[float] = []
    scraped = -SCRAPE
    rounds = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop:
            tick = time.perf_counter()
            pages = list(PAGES)
            if scrape and tick - scraped >= SCRAPE:
                pages.append("/metrics")
                scraped = tick
            for page in pages:
                started = time.perf_counter()
                client.get(page).raise_for_status()
                if rounds:
                    times.append(time.perf_counter() - started)
            if not rounds:
                print("ready", flush=True)
            rounds += 1
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
    print(" ".join(f"{t:.6f}" for t in times))


async def page_costs(db: str) -> dict[str, float]:
    """CPU seconds each page takes to serve, in process, over a worked database.

    Process time counts this process's own work only, so the figure holds on
    a busy host where wall-clock rates wander.
    """
    queue = build_queue(db)
    await jobkit.run_worker(queue, concurrency=10, until_empty=True)
    app = create_app(queue)
    costs: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench"
    ) as client:
        for page in [*PAGES, "/metrics"]:
            await client.get(page)  # the first read of the log, not the steady state
            # A second of new work between two reads, as a page open beside a
            # worker sees: the figure includes folding in the new events.
            await queue.enqueue_many(
                queue.tasks["noop"].prepare(i=i) for i in range(2000)
            )
            await jobkit.run_worker(queue, concurrency=10, until_empty=True)
            started = time.process_time()
            await client.get(page)
            costs[page] = time.process_time() - started
    await queue.store.aclose()
    return costs


def main() -> int:
    if sys.argv[1:2] == ["poll"]:
        poll(sys.argv[2], "--scrape" in sys.argv)
        return 0
    ways: dict[str, Callable[[str, list[float]], object]] = {
        "none (the baseline)": alone,
        "in another process": functools.partial(beside, scrape=False),
        "in another process, + /metrics": functools.partial(beside, scrape=True),
        "in the worker's process": functools.partial(embedded, scrape=False),
        "in the worker's process, + /metrics": functools.partial(embedded, scrape=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    pages: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(RUNS):
            for i, (name, way) in enumerate(ways.items()):
                db = str(Path(tmp) / f"{i}-{run}.db")
                trio.run(fill, db)
                rates[name].append(trio.run(way, db, pages[name]))  # type: ignore[arg-type]
        db = str(Path(tmp) / "costs.db")
        trio.run(fill, db)
        costs = trio.run(page_costs, db)
    base = statistics.median(rates["none (the baseline)"])
    print(
        f"a worker with 10 slots, {JOBS} trivial jobs on SQLite, median of {RUNS} "
        f"runs; pages polled every second, /metrics every {SCRAPE:g} s"
    )
    print(f"{'dashboard open':<38}{'jobs/s':>8}{'ratio':>7}{'page p50':>10}{'p95':>8}")
    for name in ways:
        rate = statistics.median(rates[name])
        times = sorted(pages[name])
        p50 = f"{statistics.median(times) * 1000:.1f}ms" if times else "-"
        p95 = f"{times[int(len(times) * 0.95)] * 1000:.0f}ms" if times else "-"
        print(f"{name:<38}{rate:>8.0f}{rate / base:>7.2f}{p50:>10}{p95:>8}")
    print()
    print(
        f"CPU to serve each page once, in process, over {JOBS} jobs done, 2000 of"
        " them since the page's last read:"
    )
    for page, seconds in costs.items():
        print(f"  {page:<10}{seconds * 1000:>8.1f} ms")
    per_second = sum(costs[page] for page in PAGES)
    print(f"  all pages once a second: {per_second * 100:.1f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
