"""Benchmark: does an open dashboard slow the workers down?

Run it with ``python tests/benchmarks/bench_dashboard.py`` (about a minute;
needs the ``web`` extra). A worker with 10 slots runs trivial async jobs on
a fresh SQLite file at full speed until the queue is empty, three ways:

- alone: the baseline;
- beside ``jobkit dashboard`` in another process, which a client (a third
  process) asks for every page once a second: overview, jobs, a job's
  detail, dead letters, workers and ``/metrics``;
- with the dashboard mounted in the worker's own process and event loop,
  polled the same way: the embedded case, where every read the pages make
  competes with the worker for one thread.

Each figure is the median of several runs, taken in turns; the ratio is the
worker's rate with the dashboard open over its rate alone, measured in the
same run. The client's page times are shown too.
"""

from __future__ import annotations

import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

import jobkit
from jobkit.dashboard import create_app, serve

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
JOBS = int(os.environ.get("BENCH_DASHBOARD_JOBS", "40000"))
PAGES = ["/", "/jobs", "/jobs/1", "/dead", "/workers"]
SCRAPE = 15.0  # seconds between two reads of /metrics, as Prometheus does


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


def start_poller(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "poll", url],
        stdout=subprocess.PIPE,
        text=True,
    )


def stop_poller(poller: subprocess.Popen[str]) -> list[float]:
    poller.terminate()
    out, _ = poller.communicate(timeout=30)
    return [float(x) for x in out.split()]


async def alone(db: str) -> tuple[float, list[float]]:
    queue = build_queue(db)
    try:
        return await work(queue), []
    finally:
        await queue.store.aclose()


async def beside(db: str) -> tuple[float, list[float]]:
    server = subprocess.Popen(  # noqa: ASYNC220 - started before the measurement
        [sys.executable, "-m", "jobkit", "dashboard", "--db", db, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    found = re.search(r"dashboard on (\S+)", server.stderr.readline())
    assert found, "the dashboard did not start"
    poller = start_poller(found.group(1))
    queue = build_queue(db)
    try:
        await wait_for_first_poll(found.group(1))
        rate = await work(queue)
    finally:
        times = stop_poller(poller)
        server.terminate()
        server.communicate(timeout=30)
        await queue.store.aclose()
    return rate, times


async def embedded(db: str) -> tuple[float, list[float]]:
    queue = build_queue(db)
    app = create_app(queue)
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(functools.partial(serve, app, port=0))
            poller = start_poller(url)
            try:
                await wait_for_first_poll(url)
                rate = await work(queue)
            finally:
                times = stop_poller(poller)
                nursery.cancel_scope.cancel()
    finally:
        await queue.store.aclose()
    return rate, times


async def wait_for_first_poll(url: str) -> None:
    # The poller's first round warms the dashboard up (its log follower
    # finds where to start); the measurement starts after it.
    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(url + "/health")


def poll(url: str) -> None:
    """Ask for every page once a second until terminated; print each page's time."""
    import signal

    times: list[float] = []
    metrics: list[float] = []
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    scraped = -SCRAPE
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop:
            tick = time.perf_counter()
            scrape = tick - scraped >= SCRAPE
            for page in PAGES + (["/metrics"] if scrape else []):
                started = time.perf_counter()
                client.get(page).raise_for_status()
                times.append(time.perf_counter() - started)
                if page == "/metrics":
                    scraped = started
                    metrics.append(times.pop())
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
    print(" ".join(f"{t:.6f}" for t in times))
    if os.environ.get("BENCH_DASHBOARD_PAGES"):
        for i, page in enumerate(PAGES):
            mine = sorted(times[i :: len(PAGES)])
            print(page, f"{statistics.median(mine) * 1000:.1f}ms", file=sys.stderr)
        print("/metrics", [f"{t * 1000:.0f}ms" for t in metrics], file=sys.stderr)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "poll":
        poll(sys.argv[2])
        return 0
    ways = {"alone": alone, "beside": beside, "embedded": embedded}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    pages: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(RUNS):
            for name, way in ways.items():
                db = str(Path(tmp) / f"{name}-{run}.db")
                trio.run(fill, db)
                rate, times = trio.run(way, db)
                rates[name].append(rate)
                pages[name].extend(times)
    base = statistics.median(rates["alone"])
    print(f"worker, 10 slots, {JOBS} trivial jobs on SQLite; median of {RUNS} runs")
    print(f"{'dashboard':<34}{'jobs/s':>10}{'ratio':>8}{'page p50':>10}{'p95':>8}")
    labels = {
        "alone": "none (the baseline)",
        "beside": "polled, in another process",
        "embedded": "polled, in the worker's process",
    }
    for name in ways:
        rate = statistics.median(rates[name])
        times = sorted(pages[name])
        p50 = f"{statistics.median(times) * 1000:.1f}ms" if times else "-"
        p95 = f"{times[int(len(times) * 0.95)] * 1000:.0f}ms" if times else "-"
        print(f"{labels[name]:<34}{rate:>10.0f}{rate / base:>8.2f}{p50:>10}{p95:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
