"""PostgresStore: the job store for many worker machines sharing one database.

The class says what each store call does; the rest is beside it: the
statements and row decoding in ``_sql``, the tables and their opening in
``_schema``, the sessions in ``_connect``, running a call (retries, deadlines,
unknown commits) in ``_run``, and LISTEN in ``_listener``.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import psycopg
import psycopg.errors
import trio
from psycopg import sql

from ...core import job as _job
from ...core import schedule as _schedule
from ...core.job import Event, Job, JobState, NewJob, Outcome
from ...core.schedule import FireResult, Firing, Schedule, check_schedule, warn_dropped
from ..protocol import (
    JobNotFound,
    PurgeTotals,
    QueueCounts,
    TallyKey,
    add_tallies,
    check_limit,
    check_list_cursor,
    check_new_jobs,
    check_outcomes,
    check_tasks,
    check_time,
)
from ..sqlite.schedules import _to_row as _schedule_row
from ..sqlite.schedules import _to_schedule
from ..tallies import tally_events
from . import _schema
from ._connect import open_pool, session_settings, where
from ._listener import Listener
from ._run import Runner, _Retry
from ._sql import COLUMNS, KINDS, STATES, Statements, encode, to_job

T = TypeVar("T")

__all__ = ["PostgresStore"]

_Conn = psycopg.Connection[Any]

_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Purged jobs per transaction: short transactions, and workers go on between.
_PURGE_BATCH: Final = 1000


def _check_queues(queues: Sequence[str] | None) -> list[str] | None:
    if queues is None:
        return None
    if isinstance(queues, str):
        raise TypeError(f"queues must be a list of names, not the string {queues!r}")
    return list(dict.fromkeys(queues))


class PostgresStore:
    """A job store in a PostgreSQL database, shared by workers on many machines.

    The store keeps its tables in a schema of its own (``schema``, default
    ``jobkit``), created on first use; a schema that holds something else,
    or a newer jobkit's tables, is refused with
    :class:`~jobkit.IncompatibleStore` and left unchanged, and an older
    jobkit's schema is upgraded in place. Claims take due jobs in claim order
    with one ``UPDATE`` over ``SELECT … FOR UPDATE SKIP LOCKED``, so workers
    on different machines never wait for each other or get the same job.

    ``synchronous`` is the durability of commits, as for
    :class:`~jobkit.SQLiteStore`. With ``"NORMAL"``, what would lose work if
    it were lost (an enqueue, a schedule firing, a person's requeue or
    cancel) waits until the server has flushed it to disk, while what a
    worker writes for every attempt (claims, settles, renewals, reaps) does
    not: a crash of the server may forget the last fraction of a second of
    those (``synchronous_commit = off``), and the jobs concerned run again
    once their leases expire, which at-least-once delivery allows. ``"FULL"``
    makes every commit wait, at several times the cost on a slow disk.
    ``"OFF"`` makes none wait, enqueues included: an enqueue returns one
    disk flush sooner (milliseconds, the larger part of an idle worker's
    wake-up), and a crash of the server, not of a client, may forget the
    enqueues of its last fraction of a second (up to three times its
    ``wal_writer_delay``), never part of one and never corrupting anything:
    the same window as SQLite's ``NORMAL``, where a power cut may lose the
    last commits. A commit that waits follows the server's own
    ``synchronous_commit`` (``on`` unless configured otherwise, e.g.
    ``remote_apply`` for a synchronous replica). :func:`~jobkit.store_from_url`
    takes the setting as a query parameter, ``?synchronous=off``; libpq's
    ``options`` in ``url`` are kept too.

    Each call is one transaction, run in a worker thread on a connection of
    a pool of ``pool_size``. A lost connection, a server restart, a
    serialization failure or a deadlock is retried with jittered backoff for
    up to ``timeout`` seconds (real time), after which
    :class:`~jobkit.StoreError` (or :class:`~jobkit.StoreBusy`, when other
    transactions held the rows) is raised and the call changed nothing. A
    cancelled call returns at once and is rolled back the same way.

    A connection lost while COMMIT was on its way leaves the outcome unknown
    to the client. The store noted the transaction's id beforehand and asks
    the server (``pg_xact_status``) whether it committed: if so the call
    returns its result, if not it runs again, so no call is applied twice.
    Only when the server cannot be asked before the deadline (or the caller
    was cancelled at that moment) does the outcome stay unknown, and the
    error says so. What a repeat would then do: an enqueue could store the
    job twice unless it has a ``unique_key``; a settle or renewal is fenced
    by the attempt number and answers ``False`` the second time; a claim that
    did commit leaves its jobs RUNNING under a lease nobody renews, so they
    run again once it expires (that attempt counts); cancel, requeue and
    discard raise ``TransitionError`` the second time.

    Enqueues, and jobs becoming QUEUED again (a retry, a release, a
    requeue), send a NOTIFY that :meth:`wait_for_jobs` hears, which wakes
    idle workers in every process at once; it is a hint, and workers still
    poll.

    With ``create=False`` a missing schema is an error rather than created.
    Opening blocks briefly (it connects and may create the schema), so do it
    before the event loop is busy, or in a thread. Needs the ``postgres``
    extra: ``pip install 'jobkit[postgres]'``.

    Example::

        >>> import trio
        >>> from jobkit import NewJob, PostgresStore
        >>> async def main(url):
        ...     async with PostgresStore(url, schema="doc_example") as store:
        ...         await store.enqueue([NewJob(task="resize", payload={"w": 64})],
        ...                             now=0.0)
        ...         [job] = await store.claim(queues=None, limit=1, now=0.0,
        ...                                   lease=30.0)
        ...         await store.drop_schema()
        ...         return job.task, job.payload, job.state.value
        >>> trio.run(main, POSTGRES_URL)  # doctest: +SKIP
        ('resize', {'w': 64}, 'running')
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "jobkit",
        timeout: float = 30.0,
        pool_size: int = 10,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
        create: bool = True,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case PostgreSQL name (letters, digits, "
                f"underscores, at most 63), got {schema!r}"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, got {pool_size!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ValueError(
                f"synchronous must be 'OFF', 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        # What a worker writes for every attempt, and what would lose work if
        # it were lost; see the class's docstring.
        self._attempt_writes = "sync" if synchronous == "FULL" else "async"
        self._work_writes = "async" if synchronous == "OFF" else "sync"
        self._url = url
        self._schema = schema
        self._where = f"{where(url)} schema {schema!r}"
        self._channel = f"jobkit.{schema}"
        self._closed = False
        self._sql = Statements(schema)
        settings = session_settings(url, timeout)
        pool = open_pool(url, f"jobkit-{schema}", timeout, pool_size, settings)
        self._runner = Runner(pool, self._where, timeout, self._sql.writers_lock)
        self._listener = Listener(
            url,
            self._channel,
            {"application_name": f"jobkit-{schema}-listener", **settings},
        )
        try:
            self._runner.run(
                lambda conn: _schema.prepare(
                    conn, schema, self._sql, self._where, create=create
                ),
                "opening the store",
                "sync",
            )
        except BaseException:
            self._runner.close()
            pool.close()
            raise

    # -- plumbing ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The connection URL, as given."""
        return self._url

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds this store's tables."""
        return self._schema

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PostgresStore {self._where} ({state})>"

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _read(self, body: Callable[[_Conn], T], what: str) -> T:
        self._check_open()
        return await self._runner.call(body, what=what, write="")

    async def _write(
        self, body: Callable[[_Conn], T], what: str, write: str | None = None
    ) -> T:
        self._check_open()
        write = self._work_writes if write is None else write
        return await self._runner.call(body, what=what, write=write)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} is closed")

    # -- the contract ------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        """Store new QUEUED jobs in one transaction and return their ids in order.

        A job whose unique key an active job holds is not stored; the
        holder's id is returned in its place. Every process's idle workers
        are notified at commit.
        """
        check_new_jobs(jobs)
        check_time(now, "now")
        if not jobs:
            await trio.lowlevel.checkpoint()
            return []
        return await self._write(lambda conn: self._insert(conn, jobs, now), "enqueue")

    def _insert(self, conn: _Conn, jobs: Sequence[NewJob], now: float) -> list[int]:
        keys = [spec.unique_key for spec in jobs if spec.unique_key is not None]
        holders: dict[str, int] = {}
        if keys:
            holders = dict(conn.execute(self._sql.holders, (keys,)).fetchall())
        # Each spec: the id of the job holding its key, or its row's position.
        places: list[tuple[bool, int | str | None]] = []
        rows: list[tuple[Any, ...]] = []
        for spec in jobs:
            key = spec.unique_key
            if key is not None and key in holders:
                places.append((True, key))
                continue
            if key is not None:
                holders[key] = -1 - len(rows)  # filled in once inserted
            places.append((False, len(rows)))
            rows.append(
                (
                    spec.task,
                    spec.queue,
                    encode(spec.payload),
                    spec.max_attempts,
                    spec.priority,
                    now if spec.run_at is None else spec.run_at,
                    key,
                )
            )
        ids: list[int] = []
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            ids = [
                job_id
                for (job_id,) in conn.execute(
                    self._sql.insert, (now, now, *columns)
                ).fetchall()
            ]
        result = []
        for held, place in places:
            if held:
                assert isinstance(place, str)
                holder = holders[place]
                result.append(ids[-1 - holder] if holder < 0 else holder)
            else:
                assert isinstance(place, int)
                result.append(ids[place])
        return result

    async def claim(
        self,
        *,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        lease: float,
        tasks: Sequence[str] | None = None,
        max_attempts: Mapping[str, int] | None = None,
    ) -> list[Job]:
        """Start up to ``limit`` due jobs in claim order, with one statement.

        The statement picks the jobs with ``FOR UPDATE SKIP LOCKED`` off the
        partial index of QUEUED jobs: jobs another worker is claiming at the
        same moment are passed over, not waited for. With ``tasks``, jobs of
        other tasks stay QUEUED; a job enqueued without ``max_attempts`` gets
        ``max_attempts[task]`` (or 1) in the same statement, for good.
        """
        send = self._claimer(queues, limit, now, lease, tasks, max_attempts)
        if send is None:
            await trio.lowlevel.checkpoint()
            return []
        self._check_open()
        # Repeatable: a claim whose answer is lost strands its jobs only
        # until their lease expires, so it needs no commit check.
        return await self._runner.call_repeatable(
            send, what="claim", write=self._attempt_writes
        )

    def _claimer(
        self,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        lease: float,
        tasks: Sequence[str] | None,
        max_attempts: Mapping[str, int] | None,
    ) -> Callable[[_Conn], Callable[[], list[Job]]] | None:
        """Check a claim's arguments; return what sends it, or None if it takes nothing.

        What sends it returns what reads the claimed jobs once the server
        has answered.
        """
        check_limit(limit)
        names = _check_queues(queues)
        only = check_tasks(tasks)
        if names == [] or only == []:
            return None
        defaults = dict(max_attempts or {})
        params = {
            "now": now,
            "queues": names,
            "tasks": only,
            "limit": limit,
            "until": now + lease,
            "default_tasks": list(defaults),
            "defaults": list(defaults.values()),
        }

        def send(conn: _Conn) -> Callable[[], list[Job]]:
            cursor = conn.execute(self._sql.claim, params)

            def read() -> list[Job]:
                jobs = [to_job(row) for row in cursor.fetchall()]
                jobs.sort(key=_job.claim_order)
                return jobs

            return read

        return send

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        """Apply attempt outcomes in one statement; stale ones are ignored (False).

        An outcome applies only while its attempt is the job's current one
        (the attempt number is the fence), so settling again after a lost
        connection cannot apply anything twice.
        """
        body = self._settler(outcomes, now)
        if body is None:
            await trio.lowlevel.checkpoint()
            return []
        return await self._write(body, "settle", self._attempt_writes)

    async def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        tasks: Sequence[str] | None = None,
        max_attempts: Mapping[str, int] | None = None,
    ) -> tuple[list[bool], list[Job]]:
        """Apply ``outcomes`` and claim up to ``limit`` jobs in one transaction.

        One round trip (and one thread hop) instead of two; see
        :class:`jobkit.store.SettleClaimStore`.
        """
        settle = self._settler(outcomes, now)
        claim = self._claimer(queues, limit, now, lease, tasks, max_attempts)

        def body(conn: _Conn) -> tuple[list[bool], list[Job]]:
            applied = [] if settle is None else settle(conn)
            return applied, [] if claim is None else claim(conn)()

        return await self._write(body, "settle and claim", self._attempt_writes)

    def _settler(
        self, outcomes: Sequence[Outcome], now: float
    ) -> Callable[[_Conn], list[bool]] | None:
        """Check outcomes; return the body that applies them, or None if none."""
        check_outcomes(outcomes)
        ids, attempts, kinds, results, errors, retry_ats = [], [], [], [], [], []
        delays: list[float | None] = []
        for outcome in outcomes:
            delay = None
            if isinstance(outcome, _job.Success):
                kind = "success"
                result = (
                    None
                    if outcome.result is None
                    else _job.dump_json(outcome.result, "result")
                )
                error, retry_at = None, None
            elif isinstance(outcome, _job.Release):
                kind, result, error, retry_at = "release", None, None, None
            elif isinstance(outcome, _job.Failure):
                kind, result = "failure", None
                error, retry_at = outcome.error, outcome.retry_at
                delay = outcome.delay
            else:
                raise TypeError(
                    f"settle() takes Success, Failure or Release records, "
                    f"got {outcome!r}"
                )
            ids.append(outcome.job_id)
            attempts.append(outcome.attempt)
            kinds.append(kind)
            results.append(result)
            errors.append(error)
            retry_ats.append(retry_at)
            delays.append(delay)
        if not ids:
            return None
        params = (now, ids, attempts, kinds, results, errors, retry_ats, delays)
        pairs = list(zip(ids, attempts, strict=True))

        def body(conn: _Conn) -> list[bool]:
            done = set(conn.execute(self._sql.settle, params).fetchall())
            return self._applied(conn, pairs, done)

        return body

    def _applied(
        self, conn: _Conn, pairs: Sequence[tuple[int, int]], done: set[tuple[int, int]]
    ) -> list[bool]:
        # ``done``: the (job, attempt) pairs the statement changed.
        if len(done) < len(pairs):
            # Ids only grow and the newest job is never purged, so an id up
            # to the highest was issued: a missing row was purged, finished.
            (highest,) = conn.execute(self._sql.highest).fetchone()  # type: ignore[misc]
            for pair in pairs:
                if pair not in done and not 1 <= pair[0] <= highest:
                    raise JobNotFound(pair[0])
        return [pair in done for pair in pairs]

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        """Extend the leases of attempts that still own their jobs (no event)."""
        if not leases:
            await trio.lowlevel.checkpoint()
            return []
        ids = [job_id for job_id, _ in leases]
        attempts = [attempt for _, attempt in leases]
        params = (now + lease, now, ids, attempts)

        def body(conn: _Conn) -> list[bool]:
            done = set(conn.execute(self._sql.renew, params).fetchall())
            return self._applied(conn, leases, done)

        return await self._write(body, "renew", self._attempt_writes)

    async def reap(self, *, now: float) -> list[Job]:
        """Recover RUNNING jobs whose lease ended before ``now``, oldest id first.

        Jobs whose rows another transaction holds (a worker settling or
        renewing them right now) are left for the next reap.
        """

        def body(conn: _Conn) -> list[Job]:
            rows = conn.execute(
                self._sql.reap, {"now": now, "error": _job.EXPIRED_ERROR}
            ).fetchall()
            return sorted((to_job(row) for row in rows), key=lambda job: job.id)

        return await self._write(body, "reap", self._attempt_writes)

    async def get(self, job_id: int) -> Job:
        """Return the job with ``job_id`` or raise :class:`~jobkit.JobNotFound`."""

        def body(conn: _Conn) -> Job:
            row = conn.execute(self._sql.get, (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            return to_job(row)

        return await self._read(body, "get")

    async def list(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        limit: int | None = 100,
        task: str | None = None,
        newest_first: bool = False,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> builtins.list[Job]:
        """Return jobs by state, queue and task, oldest id first (or newest).

        ``after_id``/``before_id`` bound the ids: a keyset cursor, so a page
        starts from a seek on the primary key however deep it is.
        """
        check_limit(limit)
        check_list_cursor(after_id, before_id)
        where = []
        params: builtins.list[Any] = []
        if state is not None:
            # A literal (from the enum), so the state's partial index applies.
            where.append(f"state = '{JobState(state).value}'")
        for column, op, value in (
            ("queue", "=", queue),
            ("task", "=", task),
            ("id", ">", after_id),
            ("id", "<", before_id),
        ):
            if value is not None:
                where.append(f"{column} {op} %s")
                params.append(value)
        text = f"SELECT {COLUMNS} FROM {{s}}.jobs"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += (
            " ORDER BY id DESC LIMIT %s" if newest_first else " ORDER BY id LIMIT %s"
        )
        params.append(limit)
        statement = self._sql.format(text)
        return await self._read(
            lambda conn: [to_job(r) for r in conn.execute(statement, params)], "list"
        )

    async def _change(
        self,
        job_id: int,
        change: Callable[[Job], tuple[Job, Event]],
        what: str,
        check: Callable[[_Conn, Job], None] | None = None,
    ) -> Job:
        # Read and lock the row, apply the pure transition (which raises the
        # same TransitionError as every other store), write it back.
        def body(conn: _Conn) -> Job:
            row = conn.execute(self._sql.get_for_update, (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            job, event = change(to_job(row))
            if check is not None:
                check(conn, job)
            conn.execute(
                self._sql.rewrite,
                (
                    job.state.value,
                    event.kind.value,
                    job.attempts,
                    job.run_at,
                    job.lease_until,
                    job.last_error,
                    job.updated_at,
                    job.retry_delay,
                    job.id,
                ),
            )
            return job

        return await self._write(body, what)

    async def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a QUEUED job; raise ``TransitionError`` otherwise."""
        return await self._change(
            job_id, lambda job: _job.cancel(job, now=now), "cancel"
        )

    async def requeue(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job back to QUEUED with its attempts reset.

        Refused with ``TransitionError`` if the job is not DEAD, or if another
        active job holds its unique key.
        """

        def check(conn: _Conn, job: Job) -> None:
            if job.unique_key is None:
                return
            holder = conn.execute(self._sql.holders, ([job.unique_key],)).fetchone()
            if holder is not None:
                raise _job.TransitionError(
                    f"cannot requeue job {job_id}: job {holder[1]} "
                    f"already holds its unique key {job.unique_key!r}"
                )

        return await self._change(
            job_id, lambda job: _job.requeue(job, now=now), "requeue", check
        )

    async def discard(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job to CANCELLED for good."""
        return await self._change(
            job_id, lambda job: _job.discard(job, now=now), "discard"
        )

    async def counts(self) -> QueueCounts:
        """Return the number of jobs per queue and state, kept current by triggers."""
        rows = await self._read(
            lambda conn: conn.execute(self._sql.counts).fetchall(), "counts"
        )
        return QueueCounts({(queue, STATES[state]): n for queue, state, n in rows})

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        """Return the earliest ``run_at`` among QUEUED jobs of ``queues``, or None.

        ``queues`` and ``tasks`` filter as in :meth:`claim`.
        """
        names = _check_queues(queues)
        only = check_tasks(tasks)
        if names == [] or only == []:
            await trio.lowlevel.checkpoint()
            return None
        params = {"queues": names, "tasks": only}

        def body(conn: _Conn) -> float | None:
            (run_at,) = conn.execute(self._sql.next_run_at, params).fetchone()  # type: ignore[misc]
            return run_at  # type: ignore[no-any-return]

        return await self._read(body, "next_run_at")

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        """Return the number of QUEUED jobs per ``(queue, task)``."""
        rows = await self._read(
            lambda conn: conn.execute(self._sql.queued_tasks).fetchall(), "queued_tasks"
        )
        return {(queue, task): n for queue, task, n in rows}

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        """Return ``(sequence, event)`` pairs after ``after``, oldest first.

        Transactions in different connections take their sequence numbers
        as they go and commit in another order, so the log as a whole is
        read only up to a number that no transaction in flight can still
        fill in below: that is what makes following it with ``after`` lose
        nothing. To learn it, the reader waits (at most a tenth of a second)
        for the write transactions in flight to end, holding new ones back
        meanwhile; if one does not end in time, this returns no events and
        the follower asks again later. One job's events need no such wait.
        """
        check_limit(limit)
        if job_id is not None:
            params = (job_id, after, limit)
            rows = await self._read(
                lambda conn: conn.execute(self._sql.job_events, params).fetchall(),
                "events",
            )
        else:
            rows = await self._read(
                lambda conn: self._settled_events(conn, after, limit), "events"
            )
        return [
            (seq, Event(job, KINDS[kind], at, attempt, error))
            for seq, job, kind, at, attempt, error in rows
        ]

    def _settled_events(
        self, conn: _Conn, after: int, limit: int | None
    ) -> builtins.list[tuple[Any, ...]]:
        try:
            with conn.transaction(), conn.pipeline():
                conn.execute(b"SET LOCAL lock_timeout = '100ms'")
                conn.execute(self._sql.wait_for_writers, (self._sql.writers_lock,))
                row = conn.execute(self._sql.highest_event).fetchone()
        except psycopg.errors.LockNotAvailable:
            return []  # a writer is slow to finish: nothing is certain yet
        assert row is not None
        return conn.execute(self._sql.events, (after, row[0], limit)).fetchall()

    async def purge(self, *, before: float) -> int:
        """Delete finished jobs last changed before ``before``, with their events.

        Finished means SUCCEEDED or CANCELLED; the newest job and the job of
        the newest event always stay (their numbers are where the next ones
        count from). The jobs go a thousand per transaction, so that a long
        purge holds no lock for long; each transaction folds the events it
        deletes into :meth:`purge_totals`.
        """
        check_time(before, "before")

        def batch(conn: _Conn) -> int:
            ids = [
                i for (i,) in conn.execute(self._sql.purgeable, (before, _PURGE_BATCH))
            ]
            if not ids:
                return 0
            history: dict[int, builtins.list[Event]] = {i: [] for i in ids}
            for job_id, kind, at, attempt, error in conn.execute(
                self._sql.purged_events, (ids,)
            ):
                history[job_id].append(Event(job_id, KINDS[kind], at, attempt, error))
            tallies: dict[TallyKey, tuple[int, float]] = {}
            for job_id, task, queue in conn.execute(self._sql.purged_jobs, (ids,)):
                add_tallies(tallies, tally_events(task, queue, history[job_id]))
            tallies[("", "", "version", 0)] = (1, 0.0)
            with conn.cursor() as cur:
                cur.executemany(
                    self._sql.add_purged,
                    [(*key, n, total) for key, (n, total) in tallies.items()],
                )
            conn.execute(self._sql.delete_events, (ids,))
            return len(conn.execute(self._sql.delete_jobs, (ids,)).fetchall())

        deleted = 0
        while True:
            n = await self._write(batch, "purge")
            deleted += n
            if n < _PURGE_BATCH:
                return deleted

    async def purge_totals(self) -> PurgeTotals:
        """Return what the events of purged jobs added up to."""
        rows = await self._read(
            lambda conn: conn.execute(self._sql.purge_totals).fetchall(),
            "purge_totals",
        )
        version = 0
        tallies: dict[TallyKey, tuple[int, float]] = {}
        for task, queue, series, key, n, total in rows:
            if task == "" and series == "version":
                version = n
            else:
                tallies[(task, queue, series, key)] = (n, total)
        return PurgeTotals(version, tallies)

    async def aclose(self) -> None:
        """Close the pool and the listener; the data stays. Closing twice is fine."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        self._closed = True
        await self._listener.aclose()
        self._runner.close()
        await trio.to_thread.run_sync(self._runner.pool.close)

    async def drop_schema(self) -> None:
        """Delete this store's schema with every job, event and schedule in it.

        For tests and throwaway stores; the store is closed afterwards.
        """
        statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
            sql.Identifier(self._schema)
        )
        await self._write(lambda conn: conn.execute(statement), "drop_schema")
        await self.aclose()

    # -- wake-ups ------------------------------------------------------------------

    async def wait_for_jobs(self, *, queues: Sequence[str] | None = None) -> None:
        """Return when a job of ``queues`` may have become QUEUED, in any process.

        A hint, not a promise: it comes from PostgreSQL's LISTEN/NOTIFY,
        received on a connection of its own without a thread. When that
        connection drops, it is reconnected and LISTENs again, and this
        returns once, since notifications sent in the gap are lost. Cancel it
        (a cancel scope) to stop waiting.
        """
        self._check_open()
        await self._listener.wait(None if queues is None else set(queues))

    async def start_listening(self) -> None:
        """Open the listening connection now, rather than on the first wait.

        Once this returns, every later enqueue wakes :meth:`wait_for_jobs`.
        """
        self._check_open()
        await self._listener.connect()

    # -- schedules (the ScheduleStore part) --------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store a schedule; one with the same name and definition is kept as is."""
        check_schedule(schedule)
        row = _schedule_row(schedule)

        def body(conn: _Conn) -> Schedule:
            found = conn.execute(
                self._sql.schedule_for_update, (schedule.name,)
            ).fetchone()
            if found is not None:
                old = _to_schedule(found)
                if old.definition == schedule.definition:
                    return old
                conn.execute(self._sql.remove_schedule, (schedule.name,)).fetchall()
            if conn.execute(self._sql.insert_schedule, row).fetchone() is None:
                raise _Retry("another process stored the schedule at the same time")
            return schedule

        return await self._write(body, "put_schedule")

    async def schedules(self) -> builtins.list[Schedule]:
        """Return every schedule, by name."""
        rows = await self._read(
            lambda conn: conn.execute(self._sql.all_schedules).fetchall(), "schedules"
        )
        return [_to_schedule(row) for row in rows]

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule (its jobs stay); return whether it existed."""
        return await self._write(
            lambda conn: (
                conn.execute(self._sql.remove_schedule, (name,)).fetchone() is not None
            ),
            "remove_schedule",
        )

    async def fire_schedules(self, *, now: float) -> FireResult:
        """Enqueue due slots and advance their schedules in one transaction.

        The due schedules' rows are locked (``FOR UPDATE``) while their slots
        are enqueued, so processes firing at once, on any machine, enqueue
        each slot once: the second waits, then finds the slot taken. When
        nothing is due, one read answers.
        """
        check_time(now, "now")

        def fire(conn: _Conn) -> tuple[FireResult, builtins.list[Any]]:
            rows = conn.execute(self._sql.due_schedules, (now,)).fetchall()
            plans = _schedule.fire_all([_to_schedule(row) for row in rows], now)
            jobs = [job for _, due in plans for job in due.jobs()]
            check_new_jobs(jobs)
            ids = self._insert(conn, jobs, now) if jobs else []
            if plans:
                with conn.cursor() as cur:
                    cur.executemany(
                        self._sql.advance_schedule,
                        [
                            (
                                due.schedule.anchor,
                                due.schedule.next_slot,
                                due.schedule.last_slot,
                                now,
                                old.name,
                            )
                            for old, due in plans
                        ],
                    )
            firings = []
            pairs = iter(ids)
            for old, due in plans:
                for slot, run_at in due.slots:
                    firings.append(
                        Firing(old.name, old.task, old.queue, slot, run_at, next(pairs))
                    )
            (earliest,) = conn.execute(self._sql.next_slot).fetchone()  # type: ignore[misc]
            return FireResult(firings, earliest), plans

        def body(conn: _Conn) -> tuple[FireResult, builtins.list[Any]] | None:
            (earliest,) = conn.execute(self._sql.next_slot).fetchone()  # type: ignore[misc]
            if earliest is None or earliest > now:
                return FireResult([], earliest), []
            return None

        quick = await self._read(body, "fire_schedules")
        if quick is not None:
            return quick[0]
        result, plans = await self._write(fire, "fire_schedules")
        for old, due in plans:
            warn_dropped(old, due.dropped)
        return result
