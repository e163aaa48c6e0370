"""Benchmark: jobkit against the Python job queues that also keep jobs in SQLite.

Run it with ``nox -s bench`` (which installs the peers) or, with huey,
persist-queue and litequeue installed, ``python tests/benchmarks/bench_peers.py``;
``BENCH_RUNS`` sets the rounds (5 by default, about ten minutes).

The systems:

- the hand-written queue of ``_baseline.py``, the smallest at-least-once
  SQLite queue, one job per transaction; every ratio is to it;
- the same queue awaiting one ``trio.lowlevel.checkpoint()`` per call, as any
  async API on trio must: the floor for jobkit's column;
- jobkit: :class:`jobkit.Queue` over :class:`jobkit.SQLiteStore` to enqueue,
  the store's ``claim`` and ``settle`` for single claims, a
  :class:`jobkit.Worker` (``until_empty``) for the worker rows;
- huey's ``SqliteHuey`` (its tasks, ``dequeue`` and ``execute``, as its
  consumer's worker threads do), persist-queue's ``SQLiteAckQueue``
  (``put``, ``get``, ``ack``) and litequeue's ``LiteQueue`` (``put``, ``pop``,
  ``done``); their worker rows use one thread per slot.

All use WAL and ``synchronous=NORMAL``. Every measurement runs in a fresh
process on a fresh file; the systems take turns, in reversed order every other
round, and each figure is the median of the rounds. Setup (filling a queue
with 100,000 jobs, say) is done once per system into a template that each
round copies, and is not timed.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from _baseline import Baseline, payload

import jobkit
from jobkit.core.job import Success

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ONE_BY_ONE = 3000  # enqueues, one at a time
BATCH = 10_000  # enqueue_many; worker drains
QUEUED = 20_000  # waiting while single claims are timed
CLAIMED = 5000  # single claims timed
BIG = 100_000  # jobs waiting, or finished, while claims are timed
BIG_CLAIMED = 500
PROCESSES = 3
SHARED = 20_000  # drained by PROCESSES processes from one file
SLOTS = 10
PRODUCERS = 100  # concurrent tasks enqueueing
LEASE = 30.0
# Seconds a peer's connection waits for SQLite's lock: ten threads queue up on
# it for longer than sqlite3's default 5 s on a busy machine.
BUSY_TIMEOUT = 30.0

GUARANTEES = {
    "hand-written": "at-least-once: a claim takes a lease and counts the attempt,"
    " a completion checks it; no history, counts or retries (and, kept minimal,"
    " no sweep that puts expired leases back)",
    "jobkit": "at-least-once with leases (an expired attempt is claimed again),"
    " retries with backoff, an event per transition (history) and counts per"
    " queue and state; finished jobs are kept until purged",
    "huey": "at-most-once: dequeue deletes the task before it runs, so a crash"
    " loses it; no leases; finished tasks leave no row (only return values are"
    " stored)",
    "persist-queue": "at-least-once within a process: get marks the row unacked"
    " and ack marks it acked, but unacked rows go back only when a queue is"
    " opened (no leases); the claim is a SELECT then an UPDATE outside one"
    " transaction, so processes sharing a file can take the same item; acked"
    " rows are kept until clear_acked_data",
    "litequeue": "at-least-once if the caller sweeps: pop locks a row in an"
    " IMMEDIATE transaction, done marks it; locked rows are never put back"
    " by themselves (list_locked + retry by hand, no leases); done rows are"
    " kept until prune",
}


async def no_pause() -> None:
    pass


async def handler(user_id: int, template: str) -> None:
    """The job every system runs: nothing."""


# -- the systems -------------------------------------------------------------------


class System:
    """One queue behind the calls the workloads make; all are async for trio."""

    db: Path  # the SQLite file

    async def enqueue(self, i: int) -> None:
        raise NotImplementedError

    async def enqueue_many(self, count: int) -> bool:
        """Enqueue ``count`` jobs in one call; False if the system has none."""
        return False

    async def claim_settle(self) -> bool:
        """Claim one job and settle it; False if none was waiting."""
        raise NotImplementedError

    async def drain(self, slots: int) -> int:
        """Run jobs with ``slots`` at once until none waits; return how many."""
        raise NotImplementedError

    async def finish_all(self) -> None:
        await self.drain(SLOTS)

    async def close(self) -> None:
        pass

    async def fill(self, count: int) -> None:
        """Enqueue ``count`` jobs the fastest way the system offers."""
        if not await self.enqueue_many(count):
            for i in range(count):
                await self.enqueue(i)


class HandWritten(System):
    def __init__(self, directory: Path, pause: Callable[[], Awaitable[None]]) -> None:
        self.db = directory / "jobs.db"
        self.q = Baseline(self.db)
        self.pause = pause

    async def enqueue(self, i: int) -> None:
        await self.pause()
        self.q.enqueue("send", payload(i), time.time())

    async def enqueue_many(self, count: int) -> bool:
        await self.pause()
        self.q.enqueue_many([("send", payload(i)) for i in range(count)], time.time())
        return True

    async def claim_settle(self) -> bool:
        await self.pause()
        claimed = self.q.claim(time.time(), LEASE)
        if claimed is None:
            return False
        job_id, attempt, args = claimed
        assert isinstance(args, dict)
        await handler(**args)
        await self.pause()
        self.q.complete(job_id, attempt, None)
        return True

    async def drain(self, slots: int) -> int:
        done = 0
        if slots == 1:
            while await self.claim_settle():
                done += 1
            return done
        # Several slots by hand: claim a batch, run it, complete it together.
        while True:
            await self.pause()
            claimed = self.q.claim_many(slots, time.time(), LEASE)
            if not claimed:
                return done
            for _, _, args in claimed:
                assert isinstance(args, dict)
                await handler(**args)
            await self.pause()
            self.q.complete_many(
                [(job_id, attempt, None) for job_id, attempt, _ in claimed]
            )
            done += len(claimed)

    async def close(self) -> None:
        self.q.close()


class Jobkit(System):
    def __init__(self, directory: Path) -> None:
        self.db = directory / "jobs.db"
        self.store = jobkit.SQLiteStore(self.db)
        self.queue = jobkit.Queue(self.store)
        self.send = self.queue.task(name="send")(handler)

    async def enqueue(self, i: int) -> None:
        await self.send.enqueue(**payload(i))  # type: ignore[arg-type]

    async def enqueue_many(self, count: int) -> bool:
        await self.queue.enqueue_many(
            self.send.prepare(**payload(i))  # type: ignore[arg-type]
            for i in range(count)
        )
        return True

    async def claim_settle(self) -> bool:
        claimed = await self.store.claim(
            queues=["default"], limit=1, now=time.time(), lease=LEASE
        )
        if not claimed:
            return False
        [job] = claimed
        await handler(**job.payload)
        await self.store.settle([Success(job.id, job.attempts, None)], now=time.time())
        return True

    async def drain(self, slots: int) -> int:
        worker = jobkit.Worker(self.queue, concurrency=slots, until_empty=True)
        await worker.run()
        return worker.statistics().succeeded

    async def close(self) -> None:
        await self.store.aclose()


def threads(slots: int, consumer: Callable[[], Callable[[], bool]]) -> int:
    """Run ``slots`` threads, each calling its consumer until it finds nothing."""
    done = [0] * slots

    def run(k: int) -> None:
        one = consumer()
        while one():
            done[k] += 1

    started = [threading.Thread(target=run, args=(k,)) for k in range(slots)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return sum(done)


class SyncSystem(System):
    """A peer with a blocking API: one slot runs inline, more run in threads."""

    def one(self) -> bool:
        raise NotImplementedError

    def consumer(self) -> Callable[[], bool]:
        return self.one

    async def claim_settle(self) -> bool:
        return self.one()

    async def finish_all(self) -> None:
        await self.drain(1)  # their threads mostly wait on each other's locks

    async def drain(self, slots: int) -> int:
        if slots == 1:
            done = 0
            while self.one():
                done += 1
            return done
        return threads(slots, self.consumer)


class Huey(SyncSystem):
    def __init__(self, directory: Path) -> None:
        api = importlib.import_module("huey")
        storage = importlib.import_module("huey.storage").SqliteStorage

        def connect(self: Any) -> sqlite3.Connection:
            conn: sqlite3.Connection = storage._create_connection(self)
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        normal = type(
            "NormalSqliteStorage", (storage,), {"_create_connection": connect}
        )
        self.db = directory / "huey.db"
        self.huey = api.SqliteHuey(
            filename=str(self.db), storage_class=normal, timeout=BUSY_TIMEOUT
        )

        def send(user_id: int, template: str) -> None:
            pass

        self.send = self.huey.task(name="send")(send)

    async def enqueue(self, i: int) -> None:
        self.send(**payload(i))

    def one(self) -> bool:
        task = self.huey.dequeue()
        if task is None:
            return False
        self.huey.execute(task)
        return True

    async def close(self) -> None:
        self.huey.storage.close()


class PersistQueue(SyncSystem):
    def __init__(self, directory: Path) -> None:
        module = importlib.import_module("persistqueue")
        self.empty = module.Empty
        self.db = directory / "queue" / "data.db"
        self.q = module.SQLiteAckQueue(
            str(self.db.parent), multithreading=True, timeout=BUSY_TIMEOUT
        )
        for conn in {self.q._getter, self.q._putter}:
            conn.execute("PRAGMA synchronous = NORMAL")

    async def enqueue(self, i: int) -> None:
        self.q.put(payload(i))

    def one(self) -> bool:
        try:
            item = self.q.get(block=False, raw=True)
        except self.empty:
            return False
        handler_sync(**item["data"])
        self.q.ack(id=item["pqid"])
        return True

    async def finish_all(self) -> None:
        # Its claim scans every acked row before the first ready one, so a
        # hundred thousand claims in a row take hours: mark them acked at once.
        with self.q._putter as conn:
            conn.execute(f"UPDATE {self.q._table_name} SET status = 5")  # acked

    async def close(self) -> None:
        self.q.close()


class LiteQueue(SyncSystem):
    def __init__(self, directory: Path) -> None:
        self.module = importlib.import_module("litequeue")
        self.db = directory / "queue.db"
        self.q = self.connect()

    def connect(self) -> Any:
        return self.module.LiteQueue(str(self.db), timeout=BUSY_TIMEOUT)

    async def enqueue(self, i: int) -> None:
        self.q.put(json.dumps(payload(i)))

    def one(self) -> bool:
        return self.take(self.q)

    @staticmethod
    def take(q: Any) -> bool:
        message = q.pop()
        if message is None:
            return False
        handler_sync(**json.loads(message.data))
        q.done(message.message_id)
        return True

    async def finish_all(self) -> None:
        # Its claim sorts every waiting row, so draining a hundred thousand
        # one by one takes hours: mark them done at once, as done() would.
        self.q.conn.execute(
            f"UPDATE {self.q.table} SET status = 2, done_time = in_time"  # DONE
        )

    def consumer(self) -> Callable[[], bool]:
        # One connection per thread: its transactions are per connection.
        q = self.connect()
        return lambda: self.take(q)

    async def close(self) -> None:
        self.q.close()


def handler_sync(user_id: int, template: str) -> None:
    """The job, for the peers that run jobs in threads: nothing."""


SYSTEMS: dict[str, Callable[[Path], System]] = {
    "hand-written": lambda d: HandWritten(d, no_pause),
    "yielding": lambda d: HandWritten(d, trio.lowlevel.checkpoint),
    "jobkit": Jobkit,
    "huey": Huey,
    "persist-queue": PersistQueue,
    "litequeue": LiteQueue,
}


# -- the workloads, each run in a process of its own ---------------------------------


def rate(count: int, start: float) -> float:
    return count / (time.perf_counter() - start)


async def enqueue_one(system: System) -> float:
    start = time.perf_counter()
    for i in range(ONE_BY_ONE):
        await system.enqueue(i)
    return rate(ONE_BY_ONE, start)


async def enqueue_many(system: System) -> float:
    start = time.perf_counter()
    assert await system.enqueue_many(BATCH)
    return rate(BATCH, start)


async def claims(system: System, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        assert await system.claim_settle()
    return rate(count, start)


async def claim_one(system: System) -> float:
    await system.fill(QUEUED)
    return await claims(system, CLAIMED)


async def drain_one(system: System) -> float:
    await system.fill(BATCH)
    start = time.perf_counter()
    done = await system.drain(1)
    assert done == BATCH, done
    return rate(done, start)


async def drain_many(system: System) -> float:
    start = time.perf_counter()
    await system.fill(BATCH)
    done = await system.drain(SLOTS)
    assert done == BATCH, done
    return rate(done, start)


async def producers(system: System) -> float:
    """Enqueue from PRODUCERS concurrent trio tasks, as a web server under load.

    The hand-written queue (the baseline) enqueues the same jobs one at a time.
    """
    if not isinstance(system, Jobkit):
        return await enqueue_one(system)
    each = ONE_BY_ONE // PRODUCERS

    async def produce(k: int) -> None:
        for i in range(each):
            await system.enqueue(k * each + i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(PRODUCERS):
            nursery.start_soon(produce, k)
    return rate(each * PRODUCERS, start)


async def big_claims(system: System) -> float:
    return await claims(system, BIG_CLAIMED)


async def memory(directory: Path, system: str) -> float:
    """A MemoryStore worker with 10 slots, or a trio channel with 10 consumers."""
    if system == "jobkit":
        queue = jobkit.Queue(jobkit.MemoryStore())
        send = queue.task(name="send")(handler)
        await queue.enqueue_many(send.prepare(**payload(i)) for i in range(BATCH))  # type: ignore[arg-type]
        worker = jobkit.Worker(queue, concurrency=SLOTS, until_empty=True)
        start = time.perf_counter()
        await worker.run()
        assert worker.statistics().succeeded == BATCH
        return rate(BATCH, start)
    sender, receiver = trio.open_memory_channel[dict[str, Any]](math.inf)
    for i in range(BATCH):
        sender.send_nowait(payload(i))
    sender.close()

    async def consume() -> None:
        async for args in receiver:
            await handler(**args)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(SLOTS):
            nursery.start_soon(consume)
    return rate(BATCH, start)


# Each workload: (what the template holds, the timed run).
Timed = Callable[[System], Awaitable[float]]
WORKLOADS: dict[str, tuple[str | None, Timed | None]] = {
    "enqueue": (None, enqueue_one),
    "enqueue_many": (None, enqueue_many),
    "producers": (None, producers),
    "claim": (None, claim_one),
    "drain1": (None, drain_one),
    "drain10": (None, drain_many),
    "memory": (None, None),
    "waiting": ("waiting", big_claims),
    "finished": ("finished", big_claims),
    "processes": ("shared", None),
}


async def prepare(system: System, template: str) -> dict[str, float]:
    """Fill a template file; for ``finished``, report the bytes per finished job."""
    if template == "shared":
        await system.fill(SHARED)
        return {}
    if template == "waiting":
        await system.fill(BIG)
        return {}
    before = used_bytes(system.db)
    await system.fill(BIG)
    await system.finish_all()
    after = used_bytes(system.db)
    await system.fill(BIG_CLAIMED)
    return {"bytes": (after - before) / BIG}


def used_bytes(path: Path) -> int:
    """Bytes of the pages in use, the write-ahead log's content included."""
    db = sqlite3.connect(path)
    [(pages, free, size)] = db.execute(
        "SELECT * FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
    ).fetchall()
    db.close()
    return int((pages - free) * size)


async def child(mode: str, name: str, workload: str, directory: Path) -> None:
    """The body of one measuring process; prints its result as JSON."""
    if mode == "measure" and workload == "memory":
        print(json.dumps(await memory(directory, name)))
        return
    system = SYSTEMS[name](directory)
    if mode == "prepare":
        result: object = await prepare(system, workload)
    elif mode == "drain":
        print("ready", flush=True)
        sys.stdin.readline()
        done = await system.drain(1)
        result = {"done": done, "end": time.monotonic()}
    else:
        timed = WORKLOADS[workload][1]
        assert timed is not None
        result = await timed(system)
    await system.close()
    print(json.dumps(result))


# -- the parent: rounds, processes, the table ----------------------------------------


def spawn(*args: object) -> list[str]:
    done = subprocess.run(
        [sys.executable, __file__, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1:]
        raise RuntimeError(f"{args[:3]}: {last}")
    return done.stdout.splitlines()


def shared_drain(name: str, directory: Path) -> tuple[float, int]:
    """Drain one file from PROCESSES processes, started together: rate and count."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "drain", name, "-", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{name}: a draining process failed")
        results.append(json.loads(out.splitlines()[-1]))
    done = sum(r["done"] for r in results)
    return SHARED / (max(r["end"] for r in results) - start), done


def supports(name: str, workload: str) -> bool:
    if workload in ("enqueue_many", "producers"):
        return name in ("hand-written", "jobkit")
    if workload == "memory":
        return name in ("hand-written", "jobkit")
    return True


def main() -> int:
    names = list(SYSTEMS)
    rates: dict[tuple[str, str], list[float]] = {}
    delivered: dict[str, list[int]] = {}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        templates: dict[tuple[str, str], Path] = {}
        for workload, (template, _) in WORKLOADS.items():
            if template is None:
                continue
            for name in names:
                directory = root / f"template-{template}-{name}"
                directory.mkdir()
                [line] = spawn("prepare", name, template, directory)
                if template == "finished":
                    sizes[name] = json.loads(line)["bytes"]
                templates[workload, name] = directory
            print(f"prepared: {template}", file=sys.stderr)
        for workload, (template, _) in WORKLOADS.items():
            for run in range(RUNS):
                order = names[::-1] if run % 2 else names
                for name in order:
                    if not supports(name, workload):
                        continue
                    directory = root / f"run-{workload}-{name}-{run}"
                    if template is None:
                        directory.mkdir()
                    else:
                        shutil.copytree(templates[workload, name], directory)
                    try:
                        if workload == "processes":
                            value, done = shared_drain(name, directory)
                            delivered.setdefault(name, []).append(done)
                        else:
                            out = spawn("measure", name, workload, directory)
                            value = json.loads(out[-1])
                    except RuntimeError as exc:
                        # One failed round is reported, not fatal to the rest.
                        print(f"failed: {exc}", file=sys.stderr)
                        value = math.nan
                    rates.setdefault((workload, name), []).append(value)
                    shutil.rmtree(directory)
            print(f"measured: {workload}", file=sys.stderr)
    raw = {f"{w} {n}": v for (w, n), v in rates.items()}
    print(
        json.dumps({"rates": raw, "bytes": sizes, "delivered": delivered}),
        file=sys.stderr,
    )
    medians = {
        key: statistics.median([v for v in values if not math.isnan(v)] or [math.nan])
        for key, values in rates.items()
    }
    report(names, medians, delivered, sizes)
    for (workload, name), values in rates.items():
        if failed := sum(map(math.isnan, values)):
            print(f"{name}, {ROWS[workload]}: {failed} of {RUNS} rounds failed")
    return 0


ROWS = {
    "enqueue": f"enqueue one at a time ({ONE_BY_ONE:,})",
    "enqueue_many": f"enqueue_many {BATCH:,} vs executemany",
    "producers": f"enqueue from {PRODUCERS} tasks vs one at a time",
    "claim": f"claim + settle one at a time ({CLAIMED:,} of {QUEUED:,})",
    "drain1": f"worker, 1 slot, drain {BATCH:,}",
    "drain10": f"worker, {SLOTS} slots, enqueue {BATCH:,} then drain",
    "memory": f"MemoryStore worker vs trio channel, {SLOTS} consumers",
    "waiting": f"claim + settle, {BIG:,} waiting",
    "finished": f"claim + settle, {BIG:,} finished",
    "processes": f"{PROCESSES} processes drain {SHARED:,} from one file",
}


def report(
    names: list[str],
    medians: dict[tuple[str, str], float],
    delivered: dict[str, list[int]],
    sizes: dict[str, float],
) -> None:
    width = max(map(len, ROWS.values()))
    print(
        f"\nmedian of {RUNS} rounds; the hand-written queue in jobs/s, the others"
        " as a ratio to it (higher is better)\n"
    )
    print(f"{'workload':<{width}} " + " ".join(f"{n:>13}" for n in names))
    for workload, title in ROWS.items():
        base = medians[workload, "hand-written"]
        cells = [f"{base:13.0f}"]
        for name in names[1:]:
            value = medians.get((workload, name))
            cells.append(f"{'-':>13}" if value is None else f"{value / base:13.2f}")
        print(f"{title:<{width}} " + " ".join(cells))
    cells = [f"{sizes[name]:13.0f}" for name in names]
    print(f"{'bytes kept per finished job':<{width}} " + " ".join(cells))
    print(
        "\nenqueue_many's baseline is one executemany; the MemoryStore row's is a"
        " trio memory channel\n(in the hand-written column); the row of"
        f" {PRODUCERS} tasks compares jobkit's group commit with\nthe"
        " hand-written queue's one-at-a-time rate. The worker rows of"
        " the hand-written queue claim\nand complete ten jobs per transaction"
        f" for {SLOTS} slots; huey, persist-queue and litequeue\nuse a thread"
        " per slot. Bytes are of the pages in use, per finished job."
    )
    print(f"\njobs delivered in all by {PROCESSES} processes draining {SHARED:,}:")
    for name in names:
        print(f"  {name:<14} {sorted(delivered.get(name, []))}")
    print("\nwhat each system guarantees:")
    for name in names:
        key = "hand-written" if name == "yielding" else name
        print(f"  {name}: {GUARANTEES[key]}")


if __name__ == "__main__":
    if len(sys.argv) == 5:
        mode, name, workload, directory = sys.argv[1:]
        trio.run(child, mode, name, workload, Path(directory))
        sys.exit(0)
    sys.exit(main())
