"""``jobkit demo``: a short tour of jobkit at work, printed as it happens.

It runs a durable queue on a real SQLite file (with a restart that loses
nothing, retries and a dead letter), the runtime in virtual time, and a
retry storm in the fault-injection laboratory, then says where the book is.
The database is left in place, and the tour ends with the ``jobkit``
commands that look into it.
"""

from __future__ import annotations

import logging
import shlex
import tempfile
import time
from pathlib import Path

import trio

import jobkit
from jobkit import testing

# The rendered book sits beside the package in a source checkout.
CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)))


def _build_queue(path: Path) -> jobkit.Queue:
    """A queue on an SQLite file with three tasks: fine, flaky and broken."""
    queue = jobkit.Queue(jobkit.SQLiteStore(path))
    quick = jobkit.RetryPolicy(4, jobkit.Backoff.exponential(0.02, 0.2))

    @queue.task(retry=quick)
    async def send_welcome(user: str) -> str:
        await trio.sleep(0.01)
        return f"welcomed {user}"

    @queue.task(retry=quick)
    async def charge(account: str) -> str:
        # Fails on its first two attempts, like a payment gateway that times out.
        if jobkit.current_job().attempts < 3:
            raise ConnectionError(f"gateway timeout for {account}")
        return f"charged {account}"

    @queue.task(retry=quick)
    def render_report(month: str) -> None:
        raise jobkit.Permanent(f"no data for {month}")

    return queue


async def _drain(queue: jobkit.Queue, *, concurrency: int) -> float:
    """Run a worker until nothing is queued or running; return the seconds it took."""
    started = time.perf_counter()
    await jobkit.run_worker(
        queue, concurrency=concurrency, poll_interval=0.05, until_empty=True
    )
    return time.perf_counter() - started


async def _durable_queue(folder: Path) -> int:
    path = folder / "jobs.db"
    _section("A durable queue on SQLite")
    producer = _build_queue(path)
    ids = [await producer.enqueue("send_welcome", {"user": f"u{i}"}) for i in range(40)]
    ids += [await producer.enqueue("charge", {"account": "acme"})]
    ids += [await producer.enqueue("render_report", {"month": "2026-10"})]
    await producer.store.aclose()
    print(f"enqueued {len(ids)} jobs into {path.name}, then the producer exited")

    # A new process would do exactly this: open the same file and work.
    worker_side = _build_queue(path)
    seconds = await _drain(worker_side, concurrency=8)
    stats = await worker_side.counts()
    print(
        f"a fresh worker ran them in {seconds:.2f} s: "
        f"{stats.total(jobkit.JobState.SUCCEEDED)} succeeded, "
        f"{stats.total(jobkit.JobState.DEAD)} dead"
    )
    charge = await worker_side.get(ids[-2])
    print(f"'charge' needed {charge.attempts} attempts and returned {charge.result!r}")
    await _history(worker_side, charge.id)
    [dead] = await worker_side.dead()
    reason = (dead.last_error or "").splitlines()[0]
    print(f"dead letter: job {dead.id} ({dead.task}): {reason}")
    print(f"it stays in the file, for a person to requeue or discard; job {dead.id}:")
    await _history(worker_side, dead.id)
    await worker_side.store.aclose()
    return dead.id


async def _history(queue: jobkit.Queue, job_id: int) -> None:
    for _, event in await queue.events(job_id=job_id):
        error = f"  ({event.error.splitlines()[0]})" if event.error else ""
        print(f"   attempt {event.attempt}: {event.kind.value}{error}")


async def _runtime() -> str:
    lines = []
    async with jobkit.open_join_set(limit=2) as js:
        for seconds in (3, 1, 2, 1):
            js.spawn(trio.sleep, seconds, name=f"sleep {seconds}s")
        while (result := await js.join_next()) is not None:
            lines.append(f"   t={trio.current_time():.0f}s  {result.name} finished")
    # The ticker starts where the join set ended, t=4 s: the first tick is
    # due at once, then every 5 s on that grid.
    start = trio.current_time()
    ticker = jobkit.interval(5.0, missed_tick_behavior=jobkit.MissedTickBehavior.SKIP)
    ticks = []
    for _ in range(4):
        ticks.append(await ticker.tick())
        if len(ticks) == 2:
            await trio.sleep(12)  # a clean-up run that overruns two periods
    lines.append(
        f"an interval of 5 s with SKIP, created at t={start:g} s (where the join set"
    )
    lines.append(
        "ended), so its grid is 4, 9, 14, 19, 24 s; the run after the tick at 9 s"
    )
    lines.append("takes 12 s, so the tick due at 14 s comes late and 19 s is skipped:")
    lines.append(f"   SKIP ticks after a 12 s overrun: {ticks}")
    return "\n".join(lines)


def _retry_storm() -> None:
    from jobkit.sim import Burst, Dependency, FaultPlan, Simulation

    _section("A retry storm in the laboratory (virtual time)")
    print("300 jobs at once against an API that serves 30 requests per second;")
    print("12 attempts each, exponential backoff from 1 s capped at 60 s:")
    api = Dependency(capacity=30, window=1.0, latency=0.05, name="payments API")
    for jitter in (None, "full", "equal", "decorrelated"):
        trace = Simulation(
            seed=1,
            workload=Burst(300),
            concurrency=300,
            faults=FaultPlan(api),
            retry=jobkit.RetryPolicy(
                12, jobkit.Backoff.exponential(1, 60, jitter=jitter)
            ),
            progress=False,
        ).run()
        s = trace.summary()
        print(
            f"   {(jitter or 'no') + ' jitter:':20} {s.attempts:5} attempts, "
            f"all done after {s.end:5.0f} s, {s.dead} dead"
        )


def _next_steps(db: Path, dead_id: int) -> None:
    _section("Your turn")
    print("The queue's database is still there. Look into it with:")
    where = shlex.quote(str(db))
    for command, what in (
        ("stats", "jobs per queue and state"),
        ("jobs", "every job"),
        ("dead", "the dead letter, with its error"),
        (f"show {dead_id}", "one job, with its traceback and history"),
        ("metrics", "the counters, in Prometheus's text format"),
    ):
        print(f"   jobkit {command} --db {where}".ljust(60) + f"# {what}")
    print(f"and delete it with: rm -r {shlex.quote(str(db.parent))}")


def main() -> int:
    """Run the tour and return the process exit status."""
    logging.getLogger("jobkit").setLevel(logging.CRITICAL)
    # Kept on purpose, for the commands printed at the end.
    folder = Path(tempfile.mkdtemp(prefix="jobkit-demo-"))
    dead_id = trio.run(_durable_queue, folder)
    _section("The structured runtime (virtual time)")
    print("a join set with limit=2 runs sleeps of 3, 1, 2, 1 s:")
    print(testing.run_virtual(_runtime))
    _retry_storm()
    _section("The book")
    print("chapter 7 charts a storm like this one; every chapter, executed, is in")
    print(f"{CHAPTERS} (render them again with: nox -s chapters)")
    _next_steps(folder / "jobs.db", dead_id)
    return 0
