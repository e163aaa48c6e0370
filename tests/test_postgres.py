"""What PostgresStore adds to the shared store tests.

SQL claim order, the schema's versions, failures and retries, wake-ups, and
the command line on a postgresql:// URL.

Every test works in a schema of its own on the test server (see
``tests/helpers/stores.py``), dropped afterwards; without a server they skip.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import jobkit
from jobkit import (
    IncompatibleStore,
    MissedTickBehavior,
    NewJob,
    PostgresStore,
    Schedule,
    StoreBusy,
    StoreError,
)
from jobkit.core.job import Failure, Success, claim_order
from jobkit.store.postgres import _run, _schema
from tests.helpers.stores import fresh_schema, postgres_url
from tests.test_cli import APP, env
from tests.test_cli import jobkit as run_cli
from tests.test_schedule import race

pytestmark = pytest.mark.postgres


@pytest.fixture
def url() -> str:
    return postgres_url()


@pytest.fixture
def schema(url: str) -> Iterator[str]:
    """A schema name of this test's own, dropped at the end whatever it holds."""
    name = fresh_schema()
    yield name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")  # type: ignore[arg-type]


@pytest.fixture
async def store(url: str, schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(url, schema=schema, timeout=10.0) as s:
        yield s


def sql(url: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own; return its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []


def tables(url: str, schema: str) -> list[str]:
    return [
        name
        for (name,) in sql(
            url,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s ORDER BY 1",
            schema,
        )
    ]


# -- the package ---------------------------------------------------------------------


def test_import_jobkit_does_not_import_psycopg() -> None:
    """jobkit needs only trio and attrs; psycopg comes with jobkit.PostgresStore."""
    code = (
        "import sys, jobkit; assert 'psycopg' not in sys.modules; "
        "jobkit.PostgresStore; assert 'psycopg' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_store_from_url_opens_postgres(url: str, schema: str) -> None:
    """postgresql:// and postgres:// open a PostgresStore; ?schema= names its schema."""

    async def main() -> None:
        pg = jobkit.store_from_url(f"{url}?schema={schema}", timeout=5.0)
        assert isinstance(pg, PostgresStore) and pg.schema == schema
        await pg.aclose()
        other = jobkit.store_from_url(
            url.replace("postgresql:", "postgres:"), schema=schema
        )
        assert isinstance(other, PostgresStore) and other.schema == schema
        await other.aclose()

    trio.run(main)


# -- durability ------------------------------------------------------------------------


# How each store call below commits, with each setting: "on" waits for the
# server's disk, "off" does not. The last two open the store from a URL.
COMMITS = [
    ({"synchronous": "NORMAL"}, "", ["on", "off", "off", "on"]),
    ({"synchronous": "FULL"}, "", ["on", "on", "on", "on"]),
    ({"synchronous": "OFF"}, "", ["off", "off", "off", "off"]),
    ({}, "synchronous=off", ["off", "off", "off", "off"]),
    # libpq's own options in the URL are kept: the server's default is off
    # for the store's sessions, and the calls that would wait follow it.
    ({}, "options=-c%20synchronous_commit%3Doff", ["off", "off", "off", "off"]),
]


@pytest.mark.parametrize(("kwargs", "query", "expected"), COMMITS)
def test_synchronous_chooses_which_commits_wait_for_the_disk(
    url: str, schema: str, kwargs: dict[str, Any], query: str, expected: list[str]
) -> None:
    """Each transaction commits with the setting's synchronous_commit, and the
    jobs still go through: enqueue, claim, settle, cancel."""

    async def main() -> list[str]:
        store = jobkit.store_from_url(f"{url}?schema={schema}&{query}", **kwargs)
        assert isinstance(store, PostgresStore)
        # A trigger notes the setting each statement on the jobs runs under.
        sql(url, f"CREATE TABLE {schema}.seen (n serial, setting text)")
        sql(
            url,
            f"CREATE FUNCTION {schema}.note() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN INSERT INTO {schema}.seen (setting) "
            f"VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$",
        )
        sql(
            url,
            f"CREATE TRIGGER note AFTER INSERT OR UPDATE ON {schema}.jobs "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}.note()",
        )
        async with store:
            first, second = await store.enqueue([NewJob(task="t")] * 2, now=0.0)
            [job] = await store.claim(queues=None, limit=1, now=1.0, lease=5.0)
            assert await store.settle([Success(job.id, 1)], now=2.0) == [True]
            await store.cancel(second, now=3.0)
            assert (await store.get(first)).state is jobkit.JobState.SUCCEEDED
            assert (await store.get(second)).state is jobkit.JobState.CANCELLED
        seen = sql(url, f"SELECT setting FROM {schema}.seen ORDER BY n")
        return [setting for (setting,) in seen]

    assert trio.run(main) == expected


# -- claims ----------------------------------------------------------------------------


jobs = st.lists(
    st.tuples(
        st.sampled_from([-2, 0, 0, 1, 5]),
        st.sampled_from([0.0, 0.5, 1.0, 1.0, 3.25, 7.0]),
        st.sampled_from(["a", "b"]),
        st.sampled_from(["t", "u"]),
    ),
    min_size=1,
    max_size=12,
)
Spec = tuple[int, float, str, str]


def test_claim_sql_agrees_with_claim_order(url: str, schema: str) -> None:
    """The claim statement hands out due jobs in exactly jobkit's claim_order,
    filtered by queue and task as the other stores filter."""
    store = PostgresStore(url, schema=schema, timeout=10.0)
    clock = [10.0]

    async def one(
        specs: list[Spec],
        limit: int,
        queues: list[str] | None,
        tasks: list[str] | None,
    ) -> None:
        base = clock[0]
        now = base + 3.5
        clock[0] += 100.0
        ids = await store.enqueue(
            [
                NewJob(task=t, priority=p, run_at=base + r, queue=q)
                for p, r, q, t in specs
            ],
            now=base,
        )
        mine = [await store.get(i) for i in ids]
        due = [
            j
            for j in mine
            if j.run_at <= now
            and (queues is None or j.queue in queues)
            and (tasks is None or j.task in tasks)
        ]
        expected = [j.id for j in sorted(due, key=claim_order)][:limit]
        got = await store.claim(
            queues=queues, tasks=tasks, limit=limit, now=now, lease=1.0
        )
        # Finish everything, so that the next example starts from no job.
        rest = await store.claim(queues=None, limit=100, now=base + 50.0, lease=1.0)
        await store.settle(
            [Success(j.id, j.attempts) for j in [*got, *rest]], now=base + 50.0
        )
        assert [j.id for j in got] == expected

    @settings(max_examples=40, deadline=None)
    @given(
        jobs,
        st.integers(1, 14),
        st.sampled_from([None, ["a"], ["b"], ["b", "a"]]),
        st.sampled_from([None, ["t"], ["u", "t"]]),
    )
    def check(
        specs: list[Spec],
        limit: int,
        queues: list[str] | None,
        tasks: list[str] | None,
    ) -> None:
        trio.run(one, specs, limit, queues, tasks)

    try:
        check()
    finally:
        trio.run(store.aclose)


@pytest.mark.parametrize("backlog", ["finished", "queued"])
def test_the_claim_plan_reads_indexes_only(url: str, schema: str, backlog: str) -> None:
    """Among 20,000 finished (or queued) jobs, the claim, prepared and generic,
    reads the partial index of QUEUED jobs, bounded by the time, and the
    primary key: no table scan."""
    store = PostgresStore(url, schema=schema)
    trio.run(store.aclose)
    state = "succeeded" if backlog == "finished" else "queued"
    sql(
        url,
        f"INSERT INTO {schema}.jobs (task, queue, payload, state, attempts, "
        "max_attempts, priority, run_at, created_at, updated_at, event) "
        f"SELECT 't', 'default', '{{}}', '{state}', 0, 1, 0, 0, 0, 0, 'enqueued' "
        "FROM generate_series(1, 20000)",
    )
    sql(url, f"ANALYZE {schema}.jobs")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        query = store._sql.claim.decode()
        names = [
            "until",
            "now",
            "queues",
            "tasks",
            "limit",
            "default_tasks",
            "defaults",
        ]
        for i, name in enumerate(names, 1):
            query = query.replace(f"%({name})s", f"${i}")
        types = "float8, float8, text[], text[], bigint, text[], bigint[]"
        conn.execute(f"PREPARE claim ({types}) AS {query}")  # type: ignore[call-overload]
        rows = conn.execute(
            "EXPLAIN EXECUTE claim (2.0, 1.0, NULL, NULL, 10, '{}', '{}')"
        ).fetchall()
    plan = "\n".join(row[0] for row in rows)
    assert "jobs_claim" in plan and "jobs_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
    # Each priority is read only up to its first job not yet due.
    assert "Index Cond: ((priority = levels" in plan, plan
    assert "AND (run_at <= $2))" in plan, plan


@pytest.mark.parametrize("priorities", [1, 4])
async def test_concurrent_claims_never_share_a_job(
    url: str, schema: str, priorities: int
) -> None:
    """Eight stores (eight pools) claiming at once get every job exactly once.

    With several priorities, a claim reads each one, and may hold rows of
    one it does not take until it commits: the others skip them meanwhile.
    """
    stores = [PostgresStore(url, schema=schema, pool_size=2) for _ in range(8)]
    await stores[0].enqueue(
        [NewJob(task="t", priority=i % priorities) for i in range(400)], now=0.0
    )
    claimed: list[int] = []

    async def drain(s: PostgresStore) -> None:
        while batch := await s.claim(queues=None, limit=3, now=1.0, lease=60.0):
            claimed.extend(j.id for j in batch)

    async with trio.open_nursery() as nursery:
        for s in stores:
            nursery.start_soon(drain, s)
    assert sorted(claimed) == list(range(1, 401))
    for s in stores:
        await s.aclose()


async def test_following_the_log_never_skips_a_late_commit(
    url: str, schema: str, store: PostgresStore
) -> None:
    """An event numbered before another but committed after it is not skipped.

    Another process's transaction takes sequence number 1 and stays open
    while this one commits number 2: the log is read only up to what no
    transaction in flight can still fill in, so a follower never steps past 1.
    """
    with psycopg.connect(url) as other:
        other.execute(
            "SELECT pg_advisory_xact_lock_shared(%s)", (store._sql.writers_lock,)
        )
        other.execute(
            f"INSERT INTO {schema}.jobs (task, queue, payload, state, attempts, "  # type: ignore[arg-type]
            "max_attempts, priority, run_at, created_at, updated_at, event) "
            "VALUES ('late', 'default', '{}', 'queued', 0, 1, 0, 0, 0, 0, 'enqueued')"
        )
        await store.enqueue([NewJob(task="early")], now=0.0)
        assert await store.events() == []
        other.commit()
    assert [(seq, e.kind.value) for seq, e in await store.events()] == [
        (1, "enqueued"),
        (2, "enqueued"),
    ]


# -- the schema ------------------------------------------------------------------------


def test_a_foreign_schema_is_refused_unchanged(url: str, schema: str) -> None:
    """A schema holding another application's tables is refused, and left as it was."""
    sql(url, f"CREATE SCHEMA {schema}")
    sql(url, f"CREATE TABLE {schema}.jobs (id int, what text)")
    sql(url, f"INSERT INTO {schema}.jobs VALUES (1, 'theirs')")
    with pytest.raises(IncompatibleStore, match=r"another application.*jobs"):
        PostgresStore(url, schema=schema)
    assert tables(url, schema) == ["jobs"]
    assert sql(url, f"SELECT * FROM {schema}.jobs") == [(1, "theirs")]


def test_a_newer_jobkit_schema_is_refused_unchanged(url: str, schema: str) -> None:
    """A schema written by a newer jobkit is refused with both versions named."""
    trio.run(PostgresStore(url, schema=schema).aclose)
    before = tables(url, schema)
    newer = _schema.SCHEMA_VERSION + 1
    sql(url, f"UPDATE {schema}.jobkit_version SET version = {newer}")
    with pytest.raises(IncompatibleStore, match=f"version {newer}, newer than"):
        PostgresStore(url, schema=schema)
    assert tables(url, schema) == before
    assert sql(url, f"SELECT version FROM {schema}.jobkit_version") == [(newer,)]


V1 = Path(__file__).parent / "data" / "postgres_schema_v1.sql"


def make_version_1_schema(url: str, schema: str) -> None:
    """A schema as jobkit wrote it at version 1, holding one job: dead, retried once."""
    text = V1.read_text().replace("{s}", schema)
    text = text.replace("{channel}", f"'jobkit.{schema}'")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
        for statement in text.split("\n;\n"):
            if statement.strip():
                conn.execute(statement)  # type: ignore[call-overload]
        conn.execute(
            f"INSERT INTO {schema}.jobs (task, queue, payload, state, attempts, "  # type: ignore[arg-type]
            "max_attempts, priority, run_at, created_at, updated_at, event) "
            "VALUES ('old', 'default', '{\"n\": 1}', 'queued', 0, 3, 0, 5, 5, 5, "
            "'enqueued')"
        )


def test_a_version_1_schema_is_migrated_in_place(url: str, schema: str) -> None:
    """Opening version 1 upgrades it to the current one; its jobs and events stay."""
    make_version_1_schema(url, schema)

    async def main() -> None:
        async with PostgresStore(url, schema=schema) as s:
            [job] = await s.list()
            assert (job.task, job.payload, job.run_at, job.max_attempts) == (
                "old",
                {"n": 1},
                5.0,
                3,
            )
            assert job.retry_delay is None
            assert [e.kind.value for _, e in await s.events()] == ["enqueued"]
            # The new columns and tables work on the old rows.
            [claimed] = await s.claim(queues=None, limit=1, now=6.0, lease=5.0)
            failure = Failure(claimed.id, 1, "boom", retry_at=9.0, delay=3.0)
            assert await s.settle([failure], now=6.0) == [True]
            assert (await s.get(claimed.id)).retry_delay == 3.0
            assert (await s.purge_totals()).version == 0

    trio.run(main)
    assert sql(url, f"SELECT version FROM {schema}.jobkit_version") == [
        (_schema.SCHEMA_VERSION,)
    ]


def test_processes_opening_a_new_schema_at_once_create_it_once(
    url: str, schema: str
) -> None:
    """Eight threads opening the same new schema at once all succeed; one created it."""
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            trio.run(PostgresStore(url, schema=schema).aclose)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sql(url, f"SELECT count(*) FROM {schema}.jobkit_version") == [(1,)]


def test_create_false_refuses_a_missing_schema(url: str, schema: str) -> None:
    """With create=False a missing store is an error, and no schema appears."""
    with pytest.raises(StoreError, match="holds no jobkit store"):
        PostgresStore(url, schema=schema, create=False)
    assert sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", schema) == []


def test_bad_arguments_are_refused() -> None:
    """A bad schema name, timeout or pool size is refused before connecting."""
    for kwargs, match in [
        ({"schema": "Robert'); DROP"}, "schema must be"),
        ({"timeout": 0}, "timeout must be"),
        ({"pool_size": 0}, "pool_size must be"),
        ({"synchronous": "off"}, "synchronous must be 'OFF', 'NORMAL' or 'FULL'"),
    ]:
        with pytest.raises(ValueError, match=match):
            PostgresStore("postgresql://nowhere.invalid/x", **kwargs)


def test_an_unreachable_server_is_a_store_error() -> None:
    """No server at the address: StoreError naming it, within the timeout."""
    with pytest.raises(
        StoreError, match=r"cannot connect to PostgreSQL 127\.0\.0\.1:1"
    ):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=1.0)


# -- failures --------------------------------------------------------------------------


def terminate(url: str, application: str) -> int:
    """End every server process serving connections named ``application``."""
    rows = sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = %s",
        application,
    )
    return len(rows)


async def test_killed_connections_are_retried_invisibly(
    url: str, schema: str, store: PostgresStore
) -> None:
    """After the server ends every connection of the pool, calls still succeed."""
    await store.enqueue([NewJob(task="t")] * 3, now=0.0)
    assert terminate(url, f"jobkit-{schema}") >= 1
    jobs = await store.claim(queues=None, limit=3, now=1.0, lease=5.0)
    assert len(jobs) == 3
    assert await store.settle([Success(j.id, 1) for j in jobs], now=2.0) == [True] * 3


def test_contention_is_retried_then_store_busy() -> None:
    """Serialization failures are retried; past the deadline they are StoreBusy."""
    runner = _run.Runner(_FakePool(), "PostgreSQL test", 0.3, 1)  # type: ignore[arg-type]
    failures = iter([psycopg.errors.SerializationFailure("x")] * 3)

    def flaky(conn: Any) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "done"

    assert runner.run(flaky, "a test", "") == "done"

    def always(conn: Any) -> None:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(StoreBusy, match=r"stayed busy for 0\.3 s.*deadlock detected"):
        runner.run(always, "a test", "")

    def broken(conn: Any) -> None:
        raise psycopg.errors.SyntaxError("syntax error at or near 'SELEC'")

    with pytest.raises(StoreError, match="refused a test: SyntaxError: syntax"):
        runner.run(broken, "a test", "")
    runner.close()


async def test_a_cancelled_call_returns_at_once_and_changes_nothing(
    url: str, schema: str, store: PostgresStore
) -> None:
    """A call stuck behind a lock is cancelled at once; its transaction rolls back."""
    [job_id] = await store.enqueue([NewJob(task="t")], now=0.0)
    with psycopg.connect(url) as other:  # holds the job's row until the end
        other.execute(
            f"SELECT * FROM {schema}.jobs WHERE id = %s FOR UPDATE", (job_id,)
        )
        begin = trio.current_time()
        with trio.move_on_after(0.3):
            await store.cancel(job_id, now=1.0)
        assert trio.current_time() - begin < 1.0
    assert (await store.get(job_id)).state.value == "queued"
    assert (await store.cancel(job_id, now=2.0)).state.value == "cancelled"


def test_a_call_past_its_deadline_is_a_store_busy(url: str, schema: str) -> None:
    """Waiting for another transaction's lock longer than timeout: StoreBusy."""

    async def main() -> None:
        async with PostgresStore(url, schema=schema, timeout=0.5) as s:
            [job_id] = await s.enqueue([NewJob(task="t")], now=0.0)
            with psycopg.connect(url) as other:
                other.execute(
                    f"SELECT * FROM {schema}.jobs WHERE id = %s FOR UPDATE", (job_id,)
                )
                with pytest.raises(StoreBusy, match=r"stayed busy for 0\.5 s"):
                    await s.cancel(job_id, now=1.0)

    trio.run(main)


class _FakeConn:
    broken = closed = False


class _FakePool:
    """Hands out a connection that is never used: the bodies above ignore it."""

    @contextlib.contextmanager
    def connection(self, timeout: float) -> Iterator[_FakeConn]:
        yield _FakeConn()

    def check(self) -> None:
        pass


@pytest.mark.parametrize("committed", [True, False])
async def test_a_lost_commit_is_applied_once(
    url: str,
    schema: str,
    store: PostgresStore,
    committed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops as COMMIT goes out: the store asks, and applies it once.

    Committed: the server did commit, so the call returns its result without
    running again. Not committed: the transaction was rolled back, so the
    call runs again. Either way exactly one job is stored.
    """
    real = _run.Runner._transaction
    lost = [False]

    def losing_commit(self: _run.Runner, conn: Any, body: Any, begin: Any) -> Any:
        if lost[0]:
            return real(self, conn, body, begin)
        lost[0] = True
        for statement in begin:
            conn.execute(statement)
        xid = conn.execute(_run._XID).fetchone()[0]
        result = body(conn)
        conn.execute("COMMIT" if committed else "ROLLBACK")
        conn.close()  # the answer never arrives
        raise _run._Gone(
            psycopg.OperationalError("server closed the connection"), xid, result
        )

    monkeypatch.setattr(_run.Runner, "_transaction", losing_commit)
    ids = await store.enqueue([NewJob(task="t")], now=0.0)
    assert lost[0]
    jobs = await store.list()
    assert [j.id for j in jobs] == ids and len(ids) == 1
    assert len(await store.events()) == 1


@pytest.mark.parametrize("committed", [True, False])
async def test_a_lost_claim_is_claimed_again_and_its_jobs_come_back(
    store: PostgresStore,
    committed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops before a claim's answer arrives: the claim runs again.

    A claim goes in one round trip with no commit check. Committed: the job
    it took stays RUNNING under a lease nobody renews, and goes back to the
    queue when the lease ends, as after a worker's crash. Not committed: the
    retry takes the same job. Either way no job is lost.
    """
    real = _run.Runner._in_one_trip
    lost = [False]

    def losing_answer(self: _run.Runner, conn: Any, send: Any, begin: Any) -> Any:
        if lost[0]:
            return real(self, conn, send, begin)
        lost[0] = True
        for statement in begin:
            conn.execute(statement)
        send(conn)
        conn.execute("COMMIT" if committed else "ROLLBACK")
        conn.close()  # the answer never arrives
        raise psycopg.OperationalError("server closed the connection")

    first, second = await store.enqueue([NewJob(task="t"), NewJob(task="t")], now=0.0)
    monkeypatch.setattr(_run.Runner, "_in_one_trip", losing_answer)
    claimed = await store.claim(queues=None, limit=1, now=1.0, lease=10.0)
    assert lost[0]
    assert [j.id for j in claimed] == [second if committed else first]
    stranded = await store.get(first)
    if committed:
        assert (stranded.state, stranded.attempts) == (jobkit.JobState.RUNNING, 1)
        assert await store.reap(now=10.5) == []
        # The retry's own job (second) ends its lease at the same instant.
        assert {j.id for j in await store.reap(now=11.5)} == {first, second}
        assert (await store.get(first)).state is not jobkit.JobState.RUNNING
    else:
        assert (await store.get(second)).state is jobkit.JobState.QUEUED


@pytest.mark.slow
def test_three_processes_enqueue_each_slot_once(url: str, schema: str) -> None:
    """Three processes firing one database at the same 200 instants: each slot once."""
    db = f"{url}?schema={schema}"

    async def declare() -> None:
        async with PostgresStore(url, schema=schema) as s:
            await s.put_schedule(
                Schedule.create(
                    "tick",
                    "t",
                    every=1.0,
                    start=0.0,
                    now=0.0,
                    misfire=MissedTickBehavior.BURST,
                )
            )
            await s.put_schedule(
                Schedule.create("other", "t", every=2.0, start=0.0, now=0.0)
            )

    trio.run(declare)
    fired = race(db, 3, 0.0, 99.5, 0.5)  # type: ignore[arg-type]
    slots = sorted((name, slot) for out in fired for name, slot, _ in out)
    assert slots == sorted(
        [("tick", float(k)) for k in range(100)]
        + [("other", 2.0 * k) for k in range(50)]
    )

    async def keys() -> list[str | None]:
        async with PostgresStore(url, schema=schema) as s:
            return [j.unique_key for j in await s.list(limit=None)]

    stored = trio.run(keys)
    assert len(stored) == 150 == len(set(stored))


# -- wake-ups --------------------------------------------------------------------------


async def test_an_enqueue_elsewhere_wakes_a_waiter(url: str, schema: str) -> None:
    """wait_for_jobs returns when another store (another process) enqueues."""
    async with (
        PostgresStore(url, schema=schema) as here,
        PostgresStore(url, schema=schema) as there,
    ):
        for queues, enqueued, wakes in [
            (None, "a", True),
            (["mail"], "mail", True),
            (["mail"], "other", False),
        ]:
            woke = trio.Event()

            async def wait(
                queues: list[str] | None = queues, woke: trio.Event = woke
            ) -> None:
                await here.wait_for_jobs(queues=queues)
                woke.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await here.start_listening()
                await there.enqueue([NewJob(task="t", queue=enqueued)], now=0.0)
                with trio.move_on_after(5 if wakes else 0.5):
                    await woke.wait()
                assert woke.is_set() == wakes
                nursery.cancel_scope.cancel()


async def test_a_retry_and_a_schedule_firing_wake_waiters(
    url: str, schema: str
) -> None:
    """A job that becomes QUEUED again, or a schedule's job, sends a hint too."""
    async with (
        PostgresStore(url, schema=schema) as here,
        PostgresStore(url, schema=schema) as there,
    ):
        await there.enqueue([NewJob(task="t", max_attempts=3)], now=0.0)
        [job] = await there.claim(queues=None, limit=1, now=0.0, lease=9.0)
        await there.put_schedule(
            Schedule.create("tick", "t", every=10, start=0.0, now=0.0)
        )

        async def woken_by(action: Any) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(action)
                with trio.fail_after(5):
                    await here.wait_for_jobs()
                nursery.cancel_scope.cancel()

        await here.start_listening()

        async def retry() -> None:
            await trio.sleep(0.05)
            await there.settle([Failure(job.id, 1, "boom", retry_at=60.0)], now=1.0)

        async def fire() -> None:
            await trio.sleep(0.05)
            await there.fire_schedules(now=0.0)

        await woken_by(retry)
        await woken_by(fire)


async def test_a_dropped_listener_reconnects_and_hints_once(
    url: str, schema: str
) -> None:
    """The server ends the listening connection: it is back, and waiters poll once."""
    async with (
        PostgresStore(url, schema=schema) as here,
        PostgresStore(url, schema=schema) as there,
    ):
        await here.start_listening()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def kill() -> None:
                    await trio.sleep(0.05)
                    assert terminate(url, f"jobkit-{schema}-listener") == 1

                nursery.start_soon(kill)
                await here.wait_for_jobs()  # the hint after the reconnect
        assert here._listener.reconnects == 1
        # LISTENing again: an enqueue elsewhere is heard.
        async with trio.open_nursery() as nursery:

            async def enqueue() -> None:
                await trio.sleep(0.05)
                await there.enqueue([NewJob(task="t")], now=0.0)

            nursery.start_soon(enqueue)
            with trio.fail_after(5):
                await here.wait_for_jobs()


@pytest.mark.slow
async def test_a_worker_starts_a_job_enqueued_elsewhere_at_once(
    url: str, schema: str
) -> None:
    """An idle worker polling once a minute runs another process's job within 1 s."""
    started = trio.Event()
    async with (
        PostgresStore(url, schema=schema) as here,
        PostgresStore(url, schema=schema) as there,
    ):
        queue = jobkit.Queue(here)

        @queue.task()
        async def ping() -> None:
            started.set()

        token = jobkit.CancellationToken()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    jobkit.run_worker, queue, poll_interval=60, shutdown=token
                )
            )
            await trio.sleep(0.3)  # the worker has polled and is idle
            begin = trio.current_time()
            await there.enqueue([NewJob(task="ping")], now=0.0)
            with trio.fail_after(5):
                await started.wait()
            assert trio.current_time() - begin < 1.0
            token.cancel()


# -- the command line ------------------------------------------------------------------


@pytest.mark.slow
def test_cli_works_on_postgres(url: str, schema: str, tmp_path: Path) -> None:
    """enqueue, worker, stats, dead, requeue and metrics take a postgresql:// --db."""
    (tmp_path / "app.py").write_text(APP)
    db = f"{url}?schema={schema}"
    for args in (["add", '{"a": 1, "b": 2}'], ["boom"]):
        done = run_cli("enqueue", *args, "--app", "app:queue", "--db", db, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    worker = [
        "worker",
        "app:queue",
        "--db",
        db,
        "--until-empty",
        "--poll-interval",
        "0.05",
    ]
    done = run_cli(*worker, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stats = json.loads(run_cli("stats", "--db", db, "--json", cwd=tmp_path).stdout)
    assert stats, stats
    dead = json.loads(run_cli("dead", "--db", db, "--json", cwd=tmp_path).stdout)
    assert [(j["id"], j["task"]) for j in dead] == [(2, "boom")]
    done = run_cli("requeue", "2", "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = json.loads(run_cli("jobs", "--db", db, "--json", cwd=tmp_path).stdout)
    assert {j["id"]: j["state"] for j in jobs} == {1: "succeeded", 2: "queued"}
    metrics = run_cli("metrics", "--db", db, cwd=tmp_path).stdout
    assert "jobkit_" in metrics
    # $JOBKIT_DB is the default of --db.
    from_env = subprocess.run(
        [sys.executable, "-m", "jobkit", "jobs", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env(), "JOBKIT_DB": db},
        timeout=30,
    )
    assert [j["id"] for j in json.loads(from_env.stdout)] == [1, 2], from_env.stderr
    # Read commands never create a store.
    missing = run_cli("stats", "--db", f"{url}?schema={schema}_none", cwd=tmp_path)
    assert missing.returncode == 1 and "holds no jobkit store" in missing.stderr
