"""What only SQLiteStore promises: file format, query plans, locking, processes.

The behaviour every store shares is in ``test_store_contract.py``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
import unittest.mock
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from jobkit import (
    EventKind,
    IncompatibleStore,
    JobState,
    NewJob,
    Schedule,
    SQLiteStore,
    StoreBusy,
    StoreError,
    collect_metrics,
)
from jobkit.core.job import Failure, Release, Success
from jobkit.store.sqlite import schema as sql
from jobkit.store.sqlite import store as sqlite_store


def file_state(path: Path) -> dict[str, bytes]:
    """The bytes of the database file and of any side files next to it."""
    found = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            found[suffix] = side.read_bytes()
    return found


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- the file ------------------------------------------------------------------


async def test_a_new_file_gets_the_schema_in_wal_mode(tmp_path: Path) -> None:
    """A fresh file is created with jobkit's schema version, id, pages and WAL."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        await store.enqueue([NewJob(task="t")], now=0.0)
    db = raw(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
    assert db.execute("PRAGMA application_id").fetchone()[0] == sql.APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA page_size").fetchone()[0] == sql.PAGE_SIZE == 2048
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "events", "counts", "jobs_claim", "jobs_unique"} <= tables
    db.close()


async def test_an_empty_file_is_a_new_database(tmp_path: Path) -> None:
    """A zero-byte file (e.g. from mkstemp) gets the schema like a missing one."""
    path = tmp_path / "jobs.db"
    path.touch()
    async with SQLiteStore(path) as store:
        assert await store.enqueue([NewJob(task="t")], now=0.0) == [1]


async def test_jobs_and_events_survive_reopening(tmp_path: Path) -> None:
    """Closing and opening the file again finds every job and event as they were."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        [job_id] = await store.enqueue(
            [NewJob(task="t", payload={"k": [1, "ü"]}, max_attempts=2)], now=1.0
        )
        await store.claim(queues=None, limit=1, now=2.0, lease=5.0)
        await store.settle([Failure(job_id, 1, "boom", retry_at=9.0)], now=3.0)
        before = await store.get(job_id)
        events = await store.events(job_id=job_id)
    async with SQLiteStore(path) as store:
        assert await store.get(job_id) == before
        assert await store.events(job_id=job_id) == events
        [job] = await store.claim(queues=None, limit=1, now=9.0, lease=5.0)
        assert job.attempts == 2
        assert [e.kind for _, e in await store.events(job_id=job_id)][-1] is (
            EventKind.STARTED
        )


async def test_payloads_and_results_are_stored_as_json_text(tmp_path: Path) -> None:
    """The file holds JSON text, never pickles: any tool can read it."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        [job_id] = await store.enqueue([NewJob(task="t", payload={"n": 1})], now=0.0)
        await store.claim(queues=None, limit=1, now=0.0, lease=5.0)
        await store.settle([Success(job_id, 1, ["ok", 2.5])], now=0.0)
    db = raw(path)
    payload, result = db.execute("SELECT payload, result FROM jobs").fetchone()
    db.close()
    assert (json.loads(payload), json.loads(result)) == ({"n": 1}, ["ok", 2.5])


async def test_event_sequences_are_the_rowids_of_the_events_table(
    tmp_path: Path,
) -> None:
    """events() numbers events by the events table's rowid, in insertion order."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        await store.enqueue([NewJob(task="t")] * 3, now=0.0)
        await store.claim(queues=None, limit=2, now=0.0, lease=5.0)
        events = await store.events()
    db = raw(path)
    rows = db.execute("SELECT seq, job_id, kind FROM events ORDER BY seq").fetchall()
    db.close()
    assert [(seq, e.job_id, e.kind.value) for seq, e in events] == rows
    assert [seq for seq, _ in events] == [1, 2, 3, 4, 5]


# -- refusing files that are not ours ------------------------------------------


def make_jobkit_file(path: Path, version: int) -> None:
    """Create a jobkit file, then stamp it with another schema version."""
    store = SQLiteStore(path)
    trio.run(store.aclose)
    db = raw(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file from a newer jobkit is refused, naming the path and both versions."""
    path = tmp_path / "jobs.db"
    newer = sql.SCHEMA_VERSION + 1
    make_jobkit_file(path, newer)
    before = file_state(path)
    with pytest.raises(IncompatibleStore) as info:
        SQLiteStore(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema version {newer}, newer than version {sql.SCHEMA_VERSION}" in (
        message
    )
    assert "left unchanged" in message
    assert file_state(path) == before


def test_a_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Another application's SQLite file is refused and keeps every byte."""
    path = tmp_path / "app.db"
    db = raw(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.close()
    before = file_state(path)
    with pytest.raises(IncompatibleStore) as info:
        SQLiteStore(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a jobkit database" in message
    assert "user_version 0" in message and "tables: users" in message
    assert f"schema version {sql.SCHEMA_VERSION}" in message
    assert file_state(path) == before


def test_a_foreign_database_with_a_version_is_refused(tmp_path: Path) -> None:
    """A database with someone else's user_version and application_id is refused."""
    path = tmp_path / "other.db"
    db = raw(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")  # even a "jobs" table
    db.execute("PRAGMA user_version = 1")
    db.execute("PRAGMA application_id = 1234")
    db.close()
    before = file_state(path)
    with pytest.raises(IncompatibleStore, match="application_id 0x4d2, user_version 1"):
        SQLiteStore(path)
    assert file_state(path) == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    """A text file is refused as not an SQLite database, byte for byte unchanged."""
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 50)
    before = file_state(path)
    with pytest.raises(IncompatibleStore, match="is not an SQLite database"):
        SQLiteStore(path)
    assert file_state(path) == before


def test_an_unopenable_path_raises_a_store_error(tmp_path: Path) -> None:
    """A path in a missing directory raises StoreError naming the path."""
    path = tmp_path / "missing" / "jobs.db"
    with pytest.raises(StoreError, match="cannot open") as info:
        SQLiteStore(path)
    assert not isinstance(info.value, IncompatibleStore)
    assert not path.parent.exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"busy_timeout": -1}, "busy_timeout must be >= 0"),
        ({"synchronous": "OFF"}, "synchronous must be 'NORMAL' or 'FULL'"),
    ],
)
def test_bad_options_are_refused(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    """Options outside their range raise ValueError before the file is touched."""
    with pytest.raises(ValueError, match=match):
        SQLiteStore(tmp_path / "jobs.db", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "jobs.db").exists()


def test_several_openers_of_a_new_file_create_the_schema_once(tmp_path: Path) -> None:
    """Stores opened at once from several threads agree on one schema.

    Turning a new file to WAL needs it to itself, and SQLite answers busy at
    once, without waiting, while another opener holds it: the race is lost
    in a few openings out of a hundred, so it is run twenty times."""

    async def use(stores: list[SQLiteStore]) -> list[int]:
        ids = [(await s.enqueue([NewJob(task="t")], now=0.0))[0] for s in stores]
        for s in stores:
            await s.aclose()
        return ids

    for i in range(20):
        path = tmp_path / f"jobs-{i}.db"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            stores = list(pool.map(lambda _: SQLiteStore(path), range(4)))  # noqa: B023
        assert trio.run(use, stores) == [1, 2, 3, 4]


# -- query plans -----------------------------------------------------------------


def plan(db: sqlite3.Connection, statement: str, params: tuple[object, ...]) -> str:
    rows = db.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return "\n".join(row[3] for row in rows)


def full_scans(shown: str) -> list[str]:
    """Plan lines that read a whole table (scanning a partial index is fine)."""
    return [line for line in shown.splitlines() if line in ("SCAN jobs", "SCAN events")]


@pytest.fixture
def busy_file(tmp_path: Path) -> Path:
    """A store file with many finished jobs, a few queued, and planner statistics."""
    path = tmp_path / "jobs.db"
    trio.run(SQLiteStore(path).aclose)
    db = raw(path)
    db.execute("BEGIN")
    db.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
        INSERT INTO jobs (task, queue, payload, state, attempts, max_attempts,
                          priority, run_at, created_at, updated_at, event)
        SELECT 't', 'q' || (i % 3), '{}', CASE WHEN i % 50 = 0 THEN 'queued'
               ELSE 'succeeded' END, 1, 1, i % 4, i, 0, 0, 'enqueued' FROM n
        """
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return path


async def plans_of(path: Path, call: str) -> list[str]:
    """The query plans of the statements a store call really runs."""
    seen: list[str] = []
    async with SQLiteStore(path) as store:
        store._conn.set_trace_callback(seen.append)
        await eval(call, {"store": store, "JobState": JobState, "NewJob": NewJob})
        store._conn.set_trace_callback(None)
        db = store._conn
        # SQLite reports a statement again for each trigger step it runs.
        return [
            plan(db, statement, ())
            for statement in dict.fromkeys(seen)
            if statement.split()[0] in ("SELECT", "UPDATE", "WITH")
        ]


DUE_AT_ONE_LEVEL = (
    "SEARCH jobs USING INDEX jobs_claim (queue=? AND priority=? AND run_at<?)"
)


async def test_claim_reads_due_jobs_off_the_claim_index(tmp_path: Path) -> None:
    """A claim of one priority reads jobs_claim in claim order up to the first not due.

    No table scan, no sort; and the jobs waiting for later, after the due
    ones in the index, are not read (the seek is bounded by run_at).
    """
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        await store.enqueue(
            [NewJob(task="t", run_at=float(i)) for i in range(50)], now=0.0
        )
    call = "store.claim(queues=['default'], limit=5, now=10.0, lease=1.0)"
    [levels, shown] = await plans_of(tmp_path / "jobs.db", call)
    assert "jobs_claim" in levels and not full_scans(levels)
    assert DUE_AT_ONE_LEVEL in shown
    assert not full_scans(shown)
    assert "TEMP B-TREE" not in shown


async def test_claim_of_several_priorities_seeks_each(busy_file: Path) -> None:
    """Several priorities: a bounded seek each; only their few candidates are sorted."""
    call = "store.claim(queues=['q1'], limit=5, now=1e9, lease=1.0)"
    [levels, shown] = await plans_of(busy_file, call)
    assert not full_scans(levels)
    assert shown.count(DUE_AT_ONE_LEVEL) == 2  # queued: every 50th, priority 0 or 2
    assert not full_scans(shown)


@pytest.mark.parametrize("where", ["file", ":memory:"])
async def test_a_claim_of_all_queues_sees_each_way_a_job_is_queued(
    tmp_path: Path, where: str
) -> None:
    """Each way a job becomes QUEUED, in a queue the last claim did not list.

    A claim of all queues reuses the queue names it last read until another
    connection commits or this one may have queued a job elsewhere; here
    each job is made QUEUED (by another connection, or by this one in each
    way it can) right after a claim read the names without its queue, and
    the next claim must take it.
    """
    path = tmp_path / "jobs.db" if where == "file" else ":memory:"
    async with SQLiteStore(path) as store:

        async def claim_all(now: float = 0.0, limit: int = 10) -> list[str]:
            jobs = await store.claim(queues=None, limit=limit, now=now, lease=10.0)
            return [job.queue for job in jobs]

        async def running_in(queue: str) -> int:
            [job_id] = await store.enqueue(
                [NewJob(task="t", queue=queue, max_attempts=2)], now=0.0
            )
            assert await claim_all() == [queue]
            # Have the names read again while the job runs, so that its queue
            # is not among them: a job not due yet, in a queue of its own.
            await store.enqueue(
                [NewJob(task="t", queue=f"{queue}-later", run_at=1e9)], now=0.0
            )
            assert await claim_all() == []
            return job_id

        await store.enqueue([NewJob(task="t", queue="a")], now=0.0)
        assert await claim_all() == ["a"]
        await store.enqueue([NewJob(task="t", queue="b")], now=0.0)
        assert await claim_all() == ["b"]
        if where == "file":
            async with SQLiteStore(path) as other:
                await other.enqueue([NewJob(task="t", queue="other")], now=0.0)
            assert await claim_all() == ["other"]
        # A batch big enough to be written in a thread.
        await store.enqueue([NewJob(task="t", queue="c")] * 1001, now=0.0)
        assert await claim_all(limit=2000) == ["c"] * 1001

        job_id = await running_in("retried")
        await store.settle([Failure(job_id, 1, "x", retry_at=0.0)], now=0.0)
        assert "retried" in await claim_all()

        job_id = await running_in("released")
        await store.settle([Release(job_id, 1)], now=0.0)
        assert "released" in await claim_all()

        await running_in("expired")
        assert "expired" in [job.queue for job in await store.reap(now=20.0)]
        assert "expired" in await claim_all(20.0, limit=2000)

        job_id = await running_in("requeued")
        await store.settle([Failure(job_id, 1, "x", retry_at=None)], now=0.0)
        assert "requeued" not in await claim_all()
        await store.requeue(job_id, now=0.0)
        assert "requeued" in await claim_all()

        await store.put_schedule(
            Schedule.create("s", "t", every=60, queue="scheduled", start=0.0, now=0.0)
        )
        await store.fire_schedules(now=0.0)
        assert "scheduled" in await claim_all()


@pytest.mark.parametrize("where", ["file", ":memory:"])
async def test_a_claim_sees_each_way_a_job_is_queued_at_a_new_priority(
    tmp_path: Path, where: str
) -> None:
    """Each way a job becomes QUEUED, at a priority the last claim did not see.

    A claim reads a queue's priorities once and reuses them until another
    connection commits or this one may have queued a job at another; here
    each job is made QUEUED right after a claim read the priorities without
    its own, and the next claim must take it.
    """
    path = tmp_path / "jobs.db" if where == "file" else ":memory:"
    async with SQLiteStore(path) as store:

        async def claim(now: float = 0.0, limit: int = 10) -> list[int]:
            jobs = await store.claim(queues=["q"], limit=limit, now=now, lease=10.0)
            return [job.priority for job in jobs]

        async def queue(priority: int, **options: Any) -> list[int]:
            spec = NewJob(task="t", queue="q", priority=priority, **options)
            return await store.enqueue([spec], now=0.0)

        async def running_at(priority: int) -> int:
            [job_id] = await queue(priority, max_attempts=2)
            assert await claim() == [priority]
            # Have the priorities read again while the job runs, so that its
            # own is not among them: a job not due yet, at a priority of its own.
            await queue(priority + 100, run_at=1e9)
            assert await claim() == []
            return job_id

        await queue(1)
        assert await claim() == [1]
        await queue(2)
        assert await claim() == [2]
        if where == "file":
            async with SQLiteStore(path) as other:
                await other.enqueue([NewJob(task="t", queue="q", priority=3)], now=0.0)
            assert await claim() == [3]
        # A batch big enough to be written in a thread.
        await store.enqueue([NewJob(task="t", queue="q", priority=4)] * 1001, now=0.0)
        assert await claim(limit=2000) == [4] * 1001

        job_id = await running_at(5)
        await store.settle([Failure(job_id, 1, "x", retry_at=0.0)], now=0.0)
        assert await claim() == [5]

        job_id = await running_at(6)
        await store.settle([Release(job_id, 1)], now=0.0)
        assert await claim() == [6]

        await running_at(7)
        assert 7 in [job.priority for job in await store.reap(now=20.0)]
        assert 7 in await claim(20.0, limit=2000)

        job_id = await running_at(8)
        await store.settle([Failure(job_id, 1, "x", retry_at=None)], now=0.0)
        assert await claim() == []
        await store.requeue(job_id, now=0.0)
        assert await claim() == [8]

        await store.put_schedule(
            Schedule.create(
                "s", "t", every=60, queue="q", priority=9, start=0.0, now=0.0
            )
        )
        await store.fire_schedules(now=0.0)
        assert await claim() == [9]


async def test_a_claim_reads_any_number_of_priorities(tmp_path: Path) -> None:
    """More priorities than one statement can read: claimed in claim order still."""
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        specs = [
            NewJob(task="t", queue=queue, priority=p, run_at=float(p % 7))
            for p in range(600)
            for queue in ("a", "b")
        ]
        await store.enqueue(specs, now=0.0)
        first = await store.claim(queues=None, limit=250, now=10.0, lease=1.0)
        rest = await store.claim(queues=None, limit=2000, now=10.0, lease=1.0)
    expected = sorted(specs, key=lambda spec: (-spec.priority, spec.run_at))
    assert [(j.priority, j.queue) for j in first + rest] == [
        (spec.priority, spec.queue) for spec in expected
    ]
    assert len(first) == 250


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(-3, 9)), unique=True),
    st.integers(1, 5),
)
def test_levels_are_grouped_by_priority_for_each_statement(
    levels: list[tuple[str, int]], most: int
) -> None:
    """Groups come highest priority first, never split one, and fit a statement."""
    with unittest.mock.patch.object(sqlite_store, "_LEVELS_PER_STATEMENT", most):
        groups = sqlite_store._level_groups(levels)
    assert sorted(level for group in groups for level in group) == sorted(levels)
    flat = [priority for group in groups for _, priority in group]
    assert flat == sorted(flat, reverse=True)
    for group, after in itertools.pairwise(groups):
        assert group[-1][1] != after[0][1]
    for group in groups:
        # Over the limit only when one priority alone is.
        assert len(group) <= most or len({p for _, p in group}) == 1


async def test_claim_over_several_queues_seeks_each_queue(busy_file: Path) -> None:
    """Several queues: a bounded seek per priority of each; few candidates sorted."""
    call = "store.claim(queues=None, limit=5, now=1e9, lease=1.0)"
    shown = (await plans_of(busy_file, call))[-1]
    assert shown.count(DUE_AT_ONE_LEVEL) == 3 * 2  # three queues, two priorities
    assert not full_scans(shown)


@pytest.mark.parametrize(
    ("call", "index"),
    [
        ("store.reap(now=1e9)", "USING INDEX jobs_lease (lease_until<?)"),
        ("store.next_run_at(queues=['q1'])", "USING INDEX jobs_claim (queue=?"),
        ("store.enqueue([NewJob(task='t', unique_key='k')], now=0.0)", "jobs_unique"),
        ("store.events(job_id=7)", "SEARCH events USING INTEGER PRIMARY KEY"),
        ("store.list(state=JobState.DEAD)", "USING INDEX jobs_dead"),
        ("store.list(state=JobState.QUEUED, queue='q2')", "jobs_claim (queue=?)"),
    ],
    ids=["reap", "next_run_at", "unique_key", "job_events", "dead", "queued"],
)
async def test_other_lookups_use_their_index(
    busy_file: Path, call: str, index: str
) -> None:
    """Reaping, due times, unique keys, job events, lists by state: no table scan."""
    shown = "\n".join(await plans_of(busy_file, call))
    assert index in shown
    assert not full_scans(shown)


# -- locking -----------------------------------------------------------------------


async def test_a_busy_database_is_waited_for_not_reported(tmp_path: Path) -> None:
    """While another connection holds the write lock, a call retries, then succeeds."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE counts SET n = n")
        ids: list[int] = []

        async def enqueue() -> None:
            ids.extend(await store.enqueue([NewJob(task="t")], now=0.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(enqueue)
            await trio.testing.wait_all_tasks_blocked()
            assert ids == []  # backing off in trio.sleep, the loop free
            other.execute("COMMIT")
        other.close()
        assert ids == [1]


async def test_a_lock_held_past_the_deadline_raises_store_busy(tmp_path: Path) -> None:
    """Past busy_timeout the call raises StoreBusy, without SQLite's own message."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path, busy_timeout=0) as store:
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusy) as info:
            await store.claim(queues=None, limit=1, now=0.0, lease=1.0)
        other.execute("ROLLBACK")
        other.close()
        assert str(path) in str(info.value)
        assert "database is locked" not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
        assert await store.enqueue([NewJob(task="t")], now=0.0) == [1]


async def test_two_store_objects_share_one_file(tmp_path: Path) -> None:
    """Two stores on one file see each other's jobs, keys, events and counts."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as a, SQLiteStore(path) as b:
        [first] = await a.enqueue([NewJob(task="t", unique_key="k")], now=0.0)
        assert await b.enqueue([NewJob(task="t", unique_key="k")], now=0.0) == [first]
        [job] = await b.claim(queues=None, limit=5, now=0.0, lease=5.0)
        assert job.id == first
        assert await a.claim(queues=None, limit=5, now=0.0, lease=5.0) == []
        assert await a.settle([Success(first, 1)], now=1.0) == [True]
        assert (await b.get(first)).state is JobState.SUCCEEDED
        assert (await b.counts()).counts == {("default", JobState.SUCCEEDED): 1}
        assert len(await b.events()) == 3


async def test_a_big_batch_runs_beside_other_calls(tmp_path: Path) -> None:
    """A batch large enough to go to a worker thread is atomic beside other calls."""
    path = tmp_path / "jobs.db"
    size = sqlite_store._THREAD_ROWS + 500
    async with SQLiteStore(path) as store:
        await store.enqueue([NewJob(task="first")], now=0.0)
        claimed = []

        async def claim_meanwhile() -> None:
            await trio.testing.wait_all_tasks_blocked()
            claimed.extend(await store.claim(queues=None, limit=1, now=0.0, lease=1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim_meanwhile)
            ids = await store.enqueue([NewJob(task="t")] * size, now=0.0)
        assert ids == list(range(2, size + 2))
        assert [j.task for j in claimed] == ["first"]
        assert (await store.counts()).get("default", JobState.QUEUED) == size


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    """After aclose() every call raises ClosedResourceError; closing again is fine."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.aclose()
    await store.aclose()
    assert "closed" in repr(store)
    with pytest.raises(trio.ClosedResourceError):
        await store.get(1)


def test_background_checkpoint_never_creates_a_file(tmp_path: Path) -> None:
    """The checkpointing thread opens the file read-write only, never creating it."""
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    trio.run(store.aclose)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(sqlite3.OperationalError):
        store._checkpoint()
    assert not path.exists()


# -- several processes -----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import trio
    from jobkit import JobState, SQLiteStore
    from jobkit.core.job import Success

    path, ready_dir, me, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main():
        claimed = []
        async with SQLiteStore(path) as store:
            open(os.path.join(ready_dir, me), "w").close()
            while len(os.listdir(ready_dir)) < count:  # start together
                time.sleep(0.001)
            batch = 0
            while True:
                batch = batch % 3 + 1
                jobs = await store.claim(
                    queues=None, limit=batch, now=time.time(), lease=600.0
                )
                if not jobs:
                    counts = await store.counts()
                    if counts.total(JobState.QUEUED) == 0:
                        break
                    continue
                claimed.extend(job.id for job in jobs)
                outcomes = [Success(job.id, job.attempts, me) for job in jobs]
                applied = await store.settle(outcomes, now=time.time())
                assert applied == [True] * len(jobs)
        print(json.dumps(claimed))

    trio.run(main)
    """
)


@pytest.mark.slow
def test_processes_claiming_from_one_file_share_the_jobs_exactly(
    tmp_path: Path,
) -> None:
    """Three processes claim and settle at once: each job runs once, none is lost."""
    path = tmp_path / "jobs.db"
    total, processes = 900, 3

    async def fill() -> list[int]:
        async with SQLiteStore(path) as store:
            return await store.enqueue([NewJob(task="t")] * total, now=0.0)

    ids = trio.run(fill)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ready = tmp_path / "ready"
    ready.mkdir()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(path),
                str(ready),
                f"p{n}",
                str(processes),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    claimed: dict[str, list[int]] = {}
    for n, child in enumerate(children):
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "locked" not in err
        claimed[f"p{n}"] = json.loads(out)
    every = [job_id for got in claimed.values() for job_id in got]
    # Each job claimed once, none lost. How the jobs are shared out is not
    # asserted: SQLite's write lock is not fair, and a process that backs off
    # on a busy database can find the others have drained the queue.
    assert sorted(every) == ids

    async def check() -> None:
        async with SQLiteStore(path) as store:
            assert (await store.counts()).counts == {
                ("default", JobState.SUCCEEDED): total
            }
            for name, got in claimed.items():
                for job_id in got[:20]:
                    assert (await store.get(job_id)).result == name
            starts = [e for _, e in await store.events() if e.kind is EventKind.STARTED]
            assert sorted(e.job_id for e in starts) == ids

    trio.run(check)


async def test_purge_deletes_in_batches_and_keeps_counts_right(tmp_path: Path) -> None:
    """A purge larger than one batch deletes every candidate, events and counts too."""
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        total = sql.PURGE_BATCH * 2 + 37
        await store.enqueue([NewJob(task="t")] * total, now=0.0)
        jobs = await store.claim(queues=None, limit=total, now=0.0, lease=60.0)
        await store.settle([Success(j.id, 1) for j in jobs], now=1.0)
        await store.enqueue([NewJob(task="t")], now=2.0)
        assert await store.purge(before=5.0) == total
        assert (await store.counts()).counts == {("default", JobState.QUEUED): 1}
        log = await store.events()
        # The newest event (the last enqueue) and nothing of the purged jobs.
        assert [(e.job_id, e.kind) for _, e in log] == [(total + 1, EventKind.ENQUEUED)]


async def test_calls_arriving_while_a_thread_writes_wait_their_turn(
    tmp_path: Path,
) -> None:
    """Store calls made while a large batch is written in a thread all complete."""
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        done: list[int] = []

        async def small(n: int) -> None:
            [job_id] = await store.enqueue([NewJob(task=f"small{n}")], now=0.0)
            done.append(job_id)

        big = [NewJob(task="big")] * (sqlite_store._THREAD_ROWS * 5)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(store.enqueue, big, now=0.0))
                # The batch is in its thread now: these three queue up behind it.
                await trio.testing.wait_all_tasks_blocked()
                for n in range(3):
                    nursery.start_soon(small, n)
        assert len(done) == 3
        counts = await store.counts()
        assert counts.get("default", JobState.QUEUED) == len(big) + 3


async def test_a_version_2_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A file jobkit wrote at schema version 2 opens at today's version, data intact.

    Its jobs gain ``retry_delay`` (None) and it gains the ``purged`` totals;
    a purge afterwards keeps the metrics of what it deletes.
    """
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(path)
    db.executescript((Path(__file__).parent / "data" / "schema_v2.sql").read_text())
    db.close()
    async with SQLiteStore(path) as store:
        jobs = await store.list()
        assert [(j.task, j.state.value, j.max_attempts) for j in jobs] == [
            ("a", "succeeded", 3),
            ("a", "succeeded", 3),
            ("a", "queued", 3),
            ("b", "queued", 1),
        ]
        assert jobs[0].result == {"ok": 1}
        assert {j.retry_delay for j in jobs} == {None}
        assert len(await store.events()) == 10
        before = await collect_metrics(store)
        assert await store.purge(before=10.0) == 2
        after = await collect_metrics(store)
        assert after.counters == before.counters
        [job] = await store.claim(queues=["default"], limit=1, now=6.0, lease=5.0)
        assert (job.id, job.attempts) == (3, 2)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION == 4
    db.close()


async def test_a_version_3_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A version 3 file opens at version 4 with the same jobs, events and counts.

    Its counts were kept by triggers, exact: they become the folded counts,
    up to its newest event. New transitions are counted, and numbered in
    each job's chain, as in a new file.
    """
    path = tmp_path / "jobs.db"
    db = raw(path)
    db.executescript((Path(__file__).parent / "data" / "schema_v3.sql").read_text())
    db.close()
    v3_counts = {
        ("default", JobState.SUCCEEDED): 1,
        ("default", JobState.QUEUED): 1,
        ("default", JobState.CANCELLED): 1,
        ("mail", JobState.DEAD): 1,
        ("mail", JobState.QUEUED): 1,
        ("mail", JobState.RUNNING): 1,
    }
    async with SQLiteStore(path) as store:
        jobs = await store.list()
        assert [(j.id, j.task, j.state.value) for j in jobs] == [
            (3, "a", "succeeded"),
            (4, "a", "queued"),
            (5, "b", "dead"),
            (6, "c", "cancelled"),
            (7, "d", "running"),
            (8, "e", "queued"),
        ]
        assert (await store.counts()).counts == v3_counts
        log = await store.events()
        assert [seq for seq, _ in log] == sorted(seq for seq, _ in log)
        for job in jobs:
            mine = [(seq, e) for seq, e in log if e.job_id == job.id]
            assert await store.events(job_id=job.id) == mine
        before = await collect_metrics(store)

        [job] = await store.claim(queues=["default"], limit=1, now=10.0, lease=5.0)
        assert job.id == 4
        await store.settle([Success(4, 1)], now=11.0)
        [new] = await store.enqueue([NewJob(task="f", queue="mail")], now=12.0)
        await store.cancel(new, now=13.0)
        expected = {**v3_counts, ("default", JobState.SUCCEEDED): 2}
        del expected["default", JobState.QUEUED]
        expected["mail", JobState.CANCELLED] = 1
        assert (await store.counts()).counts == expected
        kinds = [e.kind for _, e in await store.events(job_id=4)]
        assert kinds[-2:] == [EventKind.STARTED, EventKind.SUCCEEDED]
        after = await collect_metrics(store)
        assert after.total("succeeded") == before.total("succeeded") + 1
    db = raw(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION == 4
    # Upgraded at the newest event of version 3, which was event 23.
    assert db.execute("SELECT seq FROM events WHERE job_id = 4").fetchall()[-2:] == [
        (24,),
        (25,),
    ]
    triggers = dict(
        db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
    )
    assert set(triggers) == {"jobs_enqueued", "jobs_transition"}
    assert not any("counts" in body for body in triggers.values())
    # An existing file keeps the page size it was made with.
    assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
    db.close()


def true_counts(conn: sqlite3.Connection) -> dict[tuple[str, JobState], int]:
    """The jobs per queue and state, counted row by row."""
    rows = conn.execute("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
    return {(queue, JobState(state)): n for queue, state, n in rows}


@pytest.mark.parametrize("where", ["file", ":memory:"])
async def test_counts_folded_from_the_events_stay_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Between folds and across them, counts() matches the rows, and so do the folds.

    Folds are made every few commits here, in a checkpoint's thread for a
    file and inline for a database in memory.
    """
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_EVERY", 3)
    monkeypatch.setattr(sqlite_store, "_WAL_CHECK_EVERY", 1)
    path = tmp_path / "jobs.db" if where == "file" else ":memory:"
    async with SQLiteStore(path) as store:
        conn = store._conn

        async def check() -> None:
            counts = {k: n for k, n in (await store.counts()).counts.items() if n}
            assert counts == true_counts(conn)

        for step in range(12):
            queue = ("a", "b", "c")[step % 3]
            ids = await store.enqueue(
                [NewJob(task="t", queue=queue, max_attempts=2)] * 3, now=float(step)
            )
            await check()
            jobs = await store.claim(queues=None, limit=2, now=float(step), lease=1.0)
            await check()
            outcomes: list[Success | Failure] = [Success(jobs[0].id, jobs[0].attempts)]
            if len(jobs) > 1:
                outcomes.append(Failure(jobs[1].id, jobs[1].attempts, "x", None))
            await store.settle(outcomes, now=float(step))
            await check()
            await store.claim(queues=[queue], limit=1, now=float(step), lease=1.0)
            await store.reap(now=step + 2.0)
            await check()
            await store.cancel(ids[-1], now=float(step))
            for job in await store.list(state=JobState.DEAD, limit=1):
                await store.requeue(job.id, now=float(step))
            await check()
            if step == 6:
                await store.purge(before=5.0)
                await check()
        # A fold takes the counts table itself to the truth (waiting for a
        # checkpoint's thread that may be folding too).
        conn.execute("PRAGMA busy_timeout = 10000")
        sqlite_store._fold(conn)
        folded = dict(
            ((queue, JobState(state)), n)
            for queue, state, n in conn.execute("SELECT * FROM counts WHERE n != 0")
        )
        assert folded == true_counts(conn)
        (counted,) = conn.execute("SELECT seq FROM counted").fetchone()
        assert counted == conn.execute("SELECT max(seq) FROM events").fetchone()[0]


async def test_each_event_is_numbered_in_its_jobs_chain(tmp_path: Path) -> None:
    """Claims of one and of many, settles, reaps: a job's chain holds its events.

    A transition of one job numbers its event in its own statement; one of
    several jobs leaves it to the trigger. Either way the numbers run on
    from 1 without a gap, and each job's history is its share of the log.
    """
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        await store.enqueue([NewJob(task="t", max_attempts=3)] * 8, now=0.0)
        many = await store.claim(queues=None, limit=5, now=0.0, lease=1.0)
        [one] = await store.claim(queues=["default"], limit=1, now=0.0, lease=1.0)
        await store.settle([Success(many[0].id, 1), Release(one.id, 1)], now=0.5)
        await store.settle([Failure(many[1].id, 1, "x", 0.7, 0.2)], now=0.6)
        assert len(await store.reap(now=2.0)) == 3
        await store.claim(queues=None, limit=3, now=2.0, lease=1.0)
        [last] = await store.claim(queues=None, limit=1, now=2.0, lease=1.0)
        await store.settle([Success(last.id, last.attempts)], now=3.0)
        log = await store.events()
        assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
        for job in await store.list():
            mine = [(seq, e) for seq, e in log if e.job_id == job.id]
            assert await store.events(job_id=job.id) == mine
            assert mine[0][1].kind is EventKind.ENQUEUED


async def test_aclose_returns_after_the_checkpoint_thread_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the file made right after aclose() sees no thread still at work."""
    finished = []

    def slow_checkpoint(self: SQLiteStore) -> None:
        time.sleep(0.3)
        finished.append(True)

    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_store, "_WAL_CHECK_EVERY", 1)
    monkeypatch.setattr(SQLiteStore, "_checkpoint", slow_checkpoint)
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.enqueue([NewJob(task="t")], now=0.0)
    await store.aclose()
    assert finished == [True]


@pytest.mark.slow
def test_the_write_ahead_log_stays_bounded_under_sustained_load(
    tmp_path: Path,
) -> None:
    """Two processes writing flat out for 5 s keep the log under 16 MB.

    Without the truncating checkpoint the log grew past 40 MB within seconds.
    """
    path = tmp_path / "jobs.db"
    trio.run(SQLiteStore(path).aclose)
    script = textwrap.dedent(
        """
        import sys, time, trio
        from jobkit import NewJob, SQLiteStore
        from jobkit.core.job import Success
        async def main():
            async with SQLiteStore(sys.argv[1]) as store:
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    await store.enqueue([NewJob("t", {"x": "y" * 200})], now=0.0)
                    for job in await store.claim(
                            queues=None, limit=1, now=0.0, lease=30.0):
                        await store.settle([Success(job.id, 1)], now=0.0)
        trio.run(main)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(2)
    ]
    wal = Path(f"{path}-wal")
    peak = 0
    while any(p.poll() is None for p in procs):
        if wal.exists():
            peak = max(peak, wal.stat().st_size)
        time.sleep(0.01)
    assert [p.returncode for p in procs] == [0, 0]
    assert 0 < peak < 16 << 20, peak
