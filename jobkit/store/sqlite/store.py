"""A durable job store in one SQLite file, shared safely by several processes.

The database keeps the queue's invariants itself, so every process that opens
the file gets them without trusting the others:

- a partial unique index over active jobs enforces unique keys;
- triggers append an event for every transition inside the transaction that
  makes it; the counts per queue and state are folded from those events
  every so many commits, and the events since are added up when read;
- partial indexes over QUEUED and RUNNING rows serve the claim, the next due
  time and the lease reaper, so their cost does not grow with the number of
  finished jobs.

Statements run inline on the trio thread: a whole single-row transaction costs
less than handing work to a thread and back. Only big batches run in a worker
thread, so that the event loop is never held for long. A busy database is
retried with jittered ``trio.sleep`` backoff, never by blocking the loop.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import itertools
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import attrs
import trio

from ...core import job as _job
from ...core.job import Event, Job, JobState, NewJob, Outcome
from ...core.schedule import FireResult, Schedule, check_schedule, warn_dropped
from .._group import GroupCommit
from ..protocol import (
    JobNotFound,
    PurgeTotals,
    QueueCounts,
    StoreBusy,
    StoreDamaged,
    StoreError,
    TallyKey,
    add_tallies,
    check_limit,
    check_list_cursor,
    check_new_jobs,
    check_tasks,
    check_time,
)
from ..tallies import tally_events
from . import schedules as _sqlite_schedules
from . import schema
from .opening import DAMAGE, is_busy, open_database, opening_error
from .schema import SCHEMA_VERSION

T = TypeVar("T")

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

# Batches larger than this run in a worker thread: the hop costs about as much
# as a few single-row transactions, negligible next to the batch, and keeps
# the event loop free while thousands of rows are written.
_THREAD_ROWS: Final = 1000

# Backoff while another connection holds the write lock: jittered, doubling
# from the first delay up to the cap.
_BUSY_FIRST: Final = 0.001
_BUSY_CAP: Final = 0.05

# Checkpoints copy the write-ahead log back into the database file and sync
# it, which takes milliseconds. SQLite would run one inside whichever commit
# crosses its threshold, stalling the event loop; instead a worker thread runs
# one on a connection of its own every so many commits, while writers carry
# on. SQLite's own threshold stays as a backstop, set high. Spacing them out
# pays: the pages every commit rewrites (the tails of the indexes and of the
# events, the counts) are copied back once per checkpoint, not once per
# commit, and each checkpoint opens a connection.
#
# A passive checkpoint never waits, so while other connections keep writing
# and reading it may never catch up with the log, and the log only starts
# over from its beginning once a checkpoint has caught up while no reader
# needs it. So once the log has grown past _WAL_LIMIT_BYTES, the store makes
# no further call until a RESTART checkpoint on its own connection (in a
# thread) has emptied it: that waits, up to _RESTART_WAIT seconds, for
# readers to move on and holds off other connections' writers meanwhile
# (they retry, as with any busy database). Every process sharing the file
# does the same, so together they stop writing until the log is empty.
#
# The log starts over in place, overwriting the file rather than growing a
# new one (extending a file costs the filesystem far more than rewriting it:
# truncating to zero each time made single enqueues a third slower), and
# journal_size_limit cuts it back to _WAL_LIMIT_BYTES whenever it starts
# over. So the file's size passes _WAL_LIMIT_BYTES only when the log itself
# does, and a stat tells when.
_CHECKPOINT_EVERY: Final = 250
_WAL_CHECK_EVERY: Final = 10
_AUTOCHECKPOINT_PAGES: Final = 10_000
_WAL_LIMIT_BYTES: Final = 4 << 20
_RESTART_WAIT: Final = 1.0
_RESTART: Final = "PRAGMA wal_checkpoint(RESTART)"


# A fold in two steps: the sums of the events after ``counted.seq`` (its
# first number) up to the second, then adding them under the write lock.
Fold = tuple[int, int, list[schema.Row]]


def _fold_sums(conn: sqlite3.Connection) -> Fold | None:
    """Add up the events since the last fold, in a read transaction: no lock."""
    conn.execute("BEGIN")
    try:
        after, upto = conn.execute(schema.FOLD_RANGE).fetchone()
        if upto == after:
            return None
        return after, upto, conn.execute(schema.FOLD_DELTA, (after, upto)).fetchall()
    finally:
        conn.execute("COMMIT")


def _fold_add(conn: sqlite3.Connection, fold: Fold, *, begun: bool = False) -> None:
    """Add ``fold`` to ``counts``, unless another fold (or a purge) came first."""
    after, upto, sums = fold
    if not begun:
        conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT seq FROM counted").fetchone()[0] == after:
            conn.executemany(schema.FOLD_ADD, sums)
            conn.execute("UPDATE counted SET seq = ?", (upto,))
        if not begun:
            conn.execute("COMMIT")
    except BaseException:
        if not begun and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _fold(conn: sqlite3.Connection, *, begun: bool = False) -> None:
    """Fold the events since the last fold into ``counts``.

    ``begun``: inside a write transaction, which the fold joins.
    """
    if begun:
        after, upto = conn.execute(schema.FOLD_RANGE).fetchone()
        if upto > after:
            sums = conn.execute(schema.FOLD_DELTA, (after, upto)).fetchall()
            _fold_add(conn, (after, upto, sums), begun=True)
        return
    fold = _fold_sums(conn)
    if fold is not None:
        _fold_add(conn, fold)


def _check_queues(queues: Sequence[str] | None) -> list[str] | None:
    if queues is None:
        return None
    if isinstance(queues, str):
        raise TypeError(f"queues must be a list of names, not the string {queues!r}")
    return list(dict.fromkeys(queues))


#: The most levels (a queue's priority) one claim statement reads: SQLite
#: refuses a compound SELECT of more than 500 terms.
_LEVELS_PER_STATEMENT = 200


def _level_groups(
    levels: list[tuple[str, int]],
) -> list[list[tuple[str, int]]]:
    """``levels`` in groups for one statement each, highest priorities first.

    A priority is never split between two groups, so that each group's jobs
    all come before the next group's in claim order (one priority in more
    queues than a statement can read is its own group, and may fail).
    """
    ordered = sorted(levels, key=lambda level: -level[1])
    groups: list[list[tuple[str, int]]] = []
    for _, same in itertools.groupby(ordered, key=lambda level: level[1]):
        members = list(same)
        if groups and len(groups[-1]) + len(members) <= _LEVELS_PER_STATEMENT:
            groups[-1] += members
        else:
            groups.append(members)
    return groups


class SQLiteStore:
    """A durable job store kept in one SQLite file.

    Several processes, and several ``SQLiteStore`` objects in one process,
    may open the same file: claims are atomic (``BEGIN IMMEDIATE`` and one
    ``UPDATE … RETURNING``), so no job is handed out twice, and a busy
    database is retried with jittered backoff for up to ``busy_timeout``
    seconds before :class:`~jobkit.StoreBusy` is raised.

    A new or empty file gets jobkit's schema. A file holding a newer jobkit
    schema, another application's database, or something that is not an
    SQLite database is refused with :class:`~jobkit.IncompatibleStore` and
    left exactly as it was.

    ``synchronous`` is SQLite's durability setting. With the default
    ``"NORMAL"`` (in WAL mode) a crash of the process loses nothing, while a
    power cut may lose the last transactions; ``"FULL"`` syncs every commit
    to disk, at several times the cost per transaction.

    Opening blocks briefly (it may create the schema), so do it before the
    event loop is busy, or in a thread. A new file gets 2 KB pages, which
    halve what each commit writes to the log; an existing file keeps its
    own page size.

    The write-ahead log (``<file>-wal``) stays small under sustained load:
    once it passes 4 MB, each process sharing the file stops writing until a
    checkpoint has emptied it, and the log then starts over in the same
    file, cut back to 4 MB. Two processes each running single-job
    enqueue/claim/settle cycles flat out for 5 s kept it at 5.7-7.2 MB at
    its peak, over five runs; without this it reached 40-100 MB.
    :meth:`aclose` returns only once no thread of the store has the file
    open, so the file can be copied right after it.

    Example::

        >>> import tempfile, os, trio
        >>> from jobkit import NewJob, SQLiteStore
        >>> path = os.path.join(tempfile.mkdtemp(), "jobs.db")
        >>> async def main():
        ...     async with SQLiteStore(path) as store:
        ...         await store.enqueue([NewJob(task="resize", payload={"w": 64})],
        ...                             now=0.0)
        ...         [job] = await store.claim(queues=None, limit=1, now=0.0,
        ...                                   lease=30.0)
        ...         return job.task, job.payload, job.state.value
        >>> trio.run(main)
        ('resize', {'w': 64}, 'running')
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(
                f"SQLiteStore needs SQLite 3.35 or later (for UPDATE ... "
                f"RETURNING); this Python uses SQLite {sqlite3.sqlite_version}"
            )
        self._path = os.fspath(path)
        self._busy_timeout = float(busy_timeout)
        self._rng = random.Random()
        # Held only while a big batch runs in a worker thread.
        self._thread_lock = trio.Lock()
        self._closed = False
        self._wal = False
        self._commits = 0
        self._checkpointing = False
        # Enqueues made in the same scheduling pass share one transaction.
        self._enqueues = GroupCommit(self._write_rows)
        # Set while no checkpoint thread has the file open: aclose waits for it.
        self._checkpoint_idle = threading.Event()
        self._checkpoint_idle.set()
        self._wal_path = self._path + "-wal"
        self._wal_full = False
        # Counts a checkpoint's thread added up, for the store to write.
        self._fold_ready: Fold | None = None
        # The queues with QUEUED jobs, and the priorities of each queue's,
        # as last read (see _queue_names and _levels_of).
        self._names: list[str] | None = None
        self._levels: dict[str, list[int]] = {}
        self._names_version = 0
        self._conn = self._open(synchronous)

    # -- opening -----------------------------------------------------------------

    def _open(self, synchronous: str) -> sqlite3.Connection:
        conn = open_database(self._path, self._busy_timeout)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.Error as exc:
                # Turning a new file to WAL needs it to itself: when another
                # opener holds it, SQLite says busy at once, without waiting.
                if not is_busy(exc) or time.monotonic() >= deadline:
                    conn.close()
                    raise opening_error(self._path, self._busy_timeout, exc) from None
                time.sleep(_BUSY_FIRST * (1 + self._rng.random()))
        try:
            self._wal = mode == "wal"  # not for ":memory:"
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            # From here on a busy database is retried by trio.sleep, not by
            # SQLite sleeping on the event loop's thread.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise opening_error(self._path, self._busy_timeout, exc) from None
        return conn

    # -- running statements ------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file's path, as given."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteStore {self._path!r} ({state})>"

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._committed()
        return result

    def _committed(self) -> None:
        self._commits += 1
        if not self._wal:
            # No checkpoint thread (":memory:"): fold inline, as seldom.
            if self._commits >= _CHECKPOINT_EVERY and not self._conn.in_transaction:
                self._commits = 0
                with contextlib.suppress(sqlite3.OperationalError):
                    _fold(self._conn)
            return
        fold = self._fold_ready
        if fold is not None and not self._conn.in_transaction:
            # A moment under the lock; if another process holds it, the next
            # checkpoint adds the events up again.
            self._fold_ready = None
            with contextlib.suppress(sqlite3.OperationalError):
                _fold_add(self._conn, fold)
        if self._commits % _WAL_CHECK_EVERY or self._checkpointing:
            return
        # A stat every so many commits: under heavy writing from several
        # processes the log can grow by megabytes between two checkpoints.
        with contextlib.suppress(OSError):
            self._wal_full = os.path.getsize(self._wal_path) > _WAL_LIMIT_BYTES
        if self._commits >= _CHECKPOINT_EVERY and not self._wal_full:
            self._commits = 0
            self._checkpointing = True
            self._checkpoint_idle.clear()
            trio.lowlevel.start_thread_soon(self._checkpoint, self._checkpointed)

    def _checkpoint(self) -> None:
        # mode=rw: never create a file, should the database be gone by now.
        uri = f"file:{urllib.parse.quote(self._path)}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
        try:
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            # Off the event loop, the events since the last fold are added up
            # (a read: no lock); the store writes the sums after its next
            # commit (_committed). Taking the write lock here instead would
            # make the store's own writers back off in the meantime.
            with contextlib.suppress(sqlite3.OperationalError):
                self._fold_ready = _fold_sums(conn)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def _restart_wal(self) -> None:
        # In a worker thread, holding the connection. SQLite's busy handler
        # covers readers and writers, but another connection's checkpoint
        # makes this one give up at once: so try again until the deadline.
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(_RESTART_WAIT * 1000)}")
        try:
            deadline = time.monotonic() + _RESTART_WAIT
            while True:
                [(busy, _, _)] = conn.execute(_RESTART)
                if not busy or time.monotonic() >= deadline:
                    return
                time.sleep(_BUSY_FIRST * 5)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def _checkpointed(self, result: object) -> None:
        # Runs in the checkpoint's thread once its connection is closed. A
        # failed checkpoint (busy, or the file removed) is simply tried again
        # after the next commits; SQLite's backstop bounds the log.
        self._checkpointing = False
        self._checkpoint_idle.set()

    async def _run(
        self, attempt: Callable[[], T], *, rows: int = 1, yielded: bool = False
    ) -> T:
        """Run ``attempt`` (a whole transaction, or one statement) until not busy."""
        try:
            if not yielded:
                await trio.lowlevel.checkpoint()
            self._check_open()
            if self._wal_full:
                # Back-pressure: write nothing more until the log is emptied.
                async with self._thread_lock:
                    if self._wal_full:
                        self._check_open()
                        # Inline first: with no other connection in the way it
                        # takes a few milliseconds, once per _WAL_LIMIT_BYTES.
                        [(busy, _, _)] = self._conn.execute(_RESTART)
                        if busy:
                            await trio.to_thread.run_sync(self._restart_wal)
                        self._wal_full = False
            if rows <= _THREAD_ROWS and not self._thread_lock.locked():
                try:
                    return attempt()
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                return await self._run_slowly(attempt, rows, busy=True)
            return await self._run_slowly(attempt, rows, busy=False)
        except sqlite3.DatabaseError as exc:
            # A damaged file fails the same way every time: say so, once,
            # instead of letting callers retry it forever.
            if getattr(exc, "sqlite_errorname", "") in DAMAGE:
                raise StoreDamaged(
                    f"{self._path!r} is damaged ({exc}): restore it from a "
                    "backup, or try the sqlite3 shell's .recover"
                ) from exc
            raise

    async def _run_slowly(
        self, attempt: Callable[[], T], rows: int, *, busy: bool
    ) -> T:
        # The clock that matters is the other processes': real time.
        deadline = time.monotonic() + self._busy_timeout
        delay = _BUSY_FIRST
        while True:
            if busy:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{self._path!r} stayed locked by other connections for "
                        f"{self._busy_timeout:g} s; gave up without changing "
                        "anything"
                    ) from None
                await trio.sleep(delay * (0.5 + self._rng.random() / 2))
                delay = min(delay * 2, _BUSY_CAP)
            try:
                # The lock keeps the connection to one thread at a time. Held
                # across the inline call too: waiting for it to be free and
                # then running unlocked would let waiters hand it on to each
                # other forever, none ever seeing it free.
                async with self._thread_lock:
                    self._check_open()
                    if rows > _THREAD_ROWS:
                        return await trio.to_thread.run_sync(attempt)
                    return attempt()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                busy = True

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} is closed")

    def _queue_names(self, conn: sqlite3.Connection) -> list[str]:
        # Claims of all queues need their names, and finding them walks the
        # claim index: a fifth of a single claim; claims read each queue's
        # priorities, a seek each. So both are read again only once another
        # connection has committed (data_version moves) or this one may have
        # made a job QUEUED in a queue or at a priority not listed (the
        # writes that can say so call _forget_queued or _queued_in). A queue
        # or priority emptied since stays listed, which costs one seek that
        # finds nothing.
        self._check_version(conn)
        if self._names is None:
            self._names = [name for (name,) in conn.execute(schema.QUEUE_NAMES)]
        return self._names

    def _check_version(self, conn: sqlite3.Connection) -> None:
        """Forget the queues and priorities read once another connection committed."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._names_version:
            self._forget_queued()
            self._names_version = version

    def _levels_of(self, conn: sqlite3.Connection, queue: str) -> list[int]:
        """The priorities of ``queue``'s QUEUED jobs, highest first."""
        levels = self._levels.get(queue)
        if levels is None:
            levels = [level for (level,) in conn.execute(schema.LEVELS, (queue,))]
            self._levels[queue] = levels
        return levels

    def _queued_in(self, queue: str, priority: int) -> None:
        """Note that this connection is making a job of ``queue`` QUEUED."""
        if self._names is not None and queue not in self._names:
            self._names = None
        levels = self._levels.get(queue)
        if levels is not None and priority not in levels:
            del self._levels[queue]

    def _forget_queued(self) -> None:
        """Forget which queues and priorities have QUEUED jobs: read them again."""
        self._names = None
        self._levels.clear()

    # -- the contract ------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        """Store new QUEUED jobs in one transaction and return their ids in order.

        A job whose unique key an active job holds is not stored; the
        holder's id is returned in its place.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         a = await store.enqueue([NewJob(task="t", unique_key="k")],
            ...                                 now=0.0)
            ...         b = await store.enqueue([NewJob(task="t", unique_key="k"),
            ...                                  NewJob(task="u")], now=1.0)
            ...         return a, b
            >>> trio.run(main)
            ([1], [1, 2])
        """
        check_new_jobs(jobs)
        rows = [
            (
                spec.task,
                spec.queue,
                schema.encode(spec.payload),  # check_new_jobs vetted it
                spec.max_attempts or 0,  # 0: decided by the first claim
                spec.priority,
                now if spec.run_at is None else spec.run_at,
                now,
                spec.unique_key,
            )
            for spec in jobs
        ]
        if not rows:
            await trio.lowlevel.checkpoint()
            return []
        return await self._enqueues.submit(rows)

    async def _write_rows(self, rows: list[schema.Row]) -> list[int]:
        # The group's leader has just yielded: no second checkpoint.
        if len(rows) == 1 and rows[0][7] is None:
            # One statement is its own transaction, trigger included.
            row = rows[0]
            return await self._run(lambda: [self._insert_one(row)], yielded=True)
        return await self._run(
            lambda: self._transaction(lambda conn: self._insert(conn, rows)),
            rows=len(rows),
            yielded=True,
        )

    def _insert_one(self, row: schema.Row) -> int:
        self._queued_in(row[1], row[4])
        job_id = self._conn.execute(schema.INSERT, row).lastrowid
        assert job_id is not None
        if not self._conn.in_transaction:
            self._committed()
        return job_id

    def _insert(self, conn: sqlite3.Connection, rows: list[schema.Row]) -> list[int]:
        for queue, priority in {(row[1], row[4]) for row in rows}:
            self._queued_in(queue, priority)
        ids: list[int] = []
        start = 0
        while start < len(rows):
            if rows[start][7] is not None:
                key = rows[start][7]
                holder = conn.execute(schema.HOLDER, (key,)).fetchone()
                if holder is None:
                    ids.append(self._insert_one(rows[start]))
                else:
                    ids.append(holder[0])
                start += 1
                continue
            end = start
            while end < len(rows) and rows[end][7] is None:
                end += 1
            conn.executemany(schema.INSERT, rows[start:end])
            # Ids are consecutive: this transaction holds the write lock.
            (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
            ids.extend(range(last - (end - start) + 1, last + 1))
            start = end
        return ids

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
        """Start up to ``limit`` due jobs in claim order, in one ``BEGIN IMMEDIATE``.

        With ``tasks``, jobs of other tasks stay QUEUED; the claim index
        still gives the order, and due jobs of other tasks ahead of the
        first claimable one are stepped over.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="a"), NewJob(task="b",
            ...                              priority=5)], now=0.0)
            ...         jobs = await store.claim(queues=["default"], limit=10,
            ...                                  now=0.0, lease=60.0)
            ...         return [(j.task, j.attempts, j.lease_until) for j in jobs]
            >>> trio.run(main)
            [('b', 1, 60.0), ('a', 1, 60.0)]
        """
        body = self._claimer(queues, limit, now, lease, tasks, max_attempts)
        if body is None:
            await trio.lowlevel.checkpoint()
            return []
        return await self._run(lambda: self._transaction(body), rows=limit)

    def _claimer(
        self,
        queues: Sequence[str] | None,
        limit: int,
        now: float,
        lease: float,
        tasks: Sequence[str] | None,
        max_attempts: Mapping[str, int] | None,
    ) -> Callable[[sqlite3.Connection], list[Job]] | None:
        """Check a claim's arguments; return its body, or None if it takes nothing."""
        check_limit(limit)
        names = _check_queues(queues)
        only = check_tasks(tasks)
        if names == [] or only == []:
            return None
        lease_until = now + lease
        due = schema.DUE if only is None else schema.due(len(only))
        chosen_tasks = only or []
        defaults = {} if max_attempts is None else max_attempts

        # One row: its statement numbers its event (see schema.NEXT_SEQ).
        start = schema.START_ONE if limit == 1 else schema.START
        columns = schema.COLUMNS
        one_queue = (
            (schema.CLAIM_FIRST if limit == 1 else schema.CLAIM_ONE)
            if due is schema.DUE
            else f"{start} IN (SELECT id {due}) RETURNING {columns}"
        )

        def claim_levels(
            conn: sqlite3.Connection, levels: list[tuple[str, int]], n: int
        ) -> list[tuple[Any, ...]]:
            # Each level yields its own best ``n``; the merge is small.
            parts = " UNION ALL ".join(
                f"SELECT * FROM (SELECT id, priority, run_at {due})" for _ in levels
            )
            sql = (
                f"{start} IN (SELECT id FROM "
                f"({parts}) ORDER BY priority DESC, run_at, id LIMIT ?) "
                f"RETURNING {columns}"
            )
            flat: list[Any] = [lease_until, now]
            for level in levels:
                flat += (*level, now, *chosen_tasks, n)
            flat.append(n)
            return conn.execute(sql, flat).fetchall()

        def body(conn: sqlite3.Connection) -> list[Job]:
            if names is None:
                chosen = self._queue_names(conn)
            else:
                self._check_version(conn)
                chosen = names
            # Read one priority at a time, each up to its first job not yet
            # due: one pass down the whole claim index would also read every
            # job that waits for later, when fewer than ``limit`` are due.
            levels = [
                (name, priority)
                for name in chosen
                for priority in self._levels_of(conn, name)
            ]
            if len(levels) == 1:
                params: tuple[Any, ...] = (
                    lease_until, now, *levels[0], now, *chosen_tasks, limit
                )  # fmt: skip
                rows = conn.execute(one_queue, params).fetchall()
            else:
                rows = []
                for group in _level_groups(levels):
                    rows += claim_levels(conn, group, limit - len(rows))
                    if len(rows) == limit:
                        break
            jobs = [schema.to_job(row) for row in rows]
            for i, job in enumerate(jobs):
                if job.max_attempts is None:
                    # Enqueued without a limit: this claim decides it, once.
                    decided = defaults.get(job.task) or 1
                    conn.execute(
                        "UPDATE jobs SET max_attempts = ? WHERE id = ?",
                        (decided, job.id),
                    )
                    jobs[i] = attrs.evolve(job, max_attempts=decided)
            if len(jobs) > 1:
                jobs.sort(key=_job.claim_order)
            return jobs

        return body

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        """Apply attempt outcomes in one transaction; stale ones are ignored (False).

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> from jobkit.core.job import Failure, Success
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t", max_attempts=3)] * 2,
            ...                             now=0.0)
            ...         a, b = await store.claim(queues=None, limit=2, now=0.0,
            ...                                  lease=60.0)
            ...         done = await store.settle(
            ...             [Success(a.id, 1, {"ok": True}),
            ...              Failure(b.id, 1, "boom", retry_at=30.0),
            ...              ], now=1.0)
            ...         late = await store.settle([Success(a.id, 1)], now=2.0)
            ...         return done, late, (await store.get(b.id)).state.value
            >>> trio.run(main)
            ([True, True], [False], 'queued')
        """
        statements = schema.settle_statements(outcomes, now)
        if not statements:
            await trio.lowlevel.checkpoint()
            return []
        if len(statements) == 1:
            return await self._run(lambda: self._apply(self._conn, statements))
        return await self._run(
            lambda: self._transaction(lambda conn: self._apply(conn, statements)),
            rows=len(statements),
        )

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

        See :class:`jobkit.store.SettleClaimStore`.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> from jobkit.core.job import Success
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")] * 2, now=0.0)
            ...         [a] = await store.claim(queues=None, limit=1, now=0.0,
            ...                                 lease=30.0)
            ...         applied, [b] = await store.settle_and_claim(
            ...             [Success(a.id, 1)], now=1.0, queues=None, limit=1,
            ...             lease=30.0)
            ...         return applied, b.id, b.lease_until
            >>> trio.run(main)
            ([True], 2, 31.0)
        """
        statements = schema.settle_statements(outcomes, now)
        claim = self._claimer(queues, limit, now, lease, tasks, max_attempts)

        def body(conn: sqlite3.Connection) -> tuple[list[bool], list[Job]]:
            applied = self._apply(conn, statements)
            return applied, [] if claim is None else claim(conn)

        return await self._run(
            lambda: self._transaction(body), rows=len(statements) + limit
        )

    def _apply(
        self,
        conn: sqlite3.Connection,
        statements: Sequence[tuple[int, str, tuple[Any, ...]]],
    ) -> list[bool]:
        applied = []
        for job_id, sql, params in statements:
            if sql is not schema.SUCCEED:
                # A release or a retry makes the job QUEUED again.
                self._forget_queued()
            changed = conn.execute(sql, params).rowcount == 1
            if not changed and self._never_issued(conn, job_id):
                raise JobNotFound(job_id)
            applied.append(changed)
        if not conn.in_transaction:
            self._committed()
        return applied

    def _never_issued(self, conn: sqlite3.Connection, job_id: int) -> bool:
        # Ids only grow and the newest job is never purged, so an id up to the
        # highest was issued; if its row is gone, a purge took the finished
        # job, and a late report on it is simply not applied.
        (highest,) = conn.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()
        return not 1 <= job_id <= highest

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        """Extend the leases of attempts that still own their jobs (no event).

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")], now=0.0)
            ...         [job] = await store.claim(queues=None, limit=1, now=0.0,
            ...                                   lease=10.0)
            ...         ok = await store.renew([(job.id, 1), (job.id, 2)], now=8.0,
            ...                                lease=10.0)
            ...         return ok, (await store.get(job.id)).lease_until
            >>> trio.run(main)
            ([True, False], 18.0)
        """
        lease_until = now + lease
        statements = [
            (job_id, schema.RENEW, (lease_until, now, job_id, attempt))
            for job_id, attempt in leases
        ]
        if not statements:
            await trio.lowlevel.checkpoint()
            return []
        if len(statements) == 1:
            return await self._run(lambda: self._apply(self._conn, statements))
        return await self._run(
            lambda: self._transaction(lambda conn: self._apply(conn, statements)),
            rows=len(statements),
        )

    async def reap(self, *, now: float) -> list[Job]:
        """Recover RUNNING jobs whose lease ended before ``now``, oldest id first.

        Each is QUEUED again at ``now`` (event EXPIRED) or, when it has no
        attempts left, DEAD (event DEAD); the crashed attempt counts.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t", max_attempts=2)],
            ...                             now=0.0)
            ...         await store.claim(queues=None, limit=1, now=0.0, lease=10.0)
            ...         [job] = await store.reap(now=11.0)
            ...         return job.state.value, job.attempts, job.run_at
            >>> trio.run(main)
            ('queued', 1, 11.0)
        """
        probe = "SELECT 1 FROM jobs WHERE state = 'running' AND lease_until < ? LIMIT 1"

        def attempt() -> list[Job]:
            # Most calls find nothing: answer those without the write lock.
            if self._conn.execute(probe, (now,)).fetchone() is None:
                return []
            self._forget_queued()  # expired jobs are QUEUED again
            return self._transaction(
                lambda conn: [
                    schema.to_job(row)
                    for row in conn.execute(
                        schema.EXPIRE, (now, _job.EXPIRED_ERROR)
                    ).fetchall()
                ]
            )

        jobs = await self._run(attempt)
        jobs.sort(key=lambda job: job.id)
        return jobs

    async def get(self, job_id: int) -> Job:
        """Return the job with ``job_id`` or raise :class:`~jobkit.JobNotFound`.

        Example::

            >>> import trio
            >>> from jobkit import SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.get(1)
            >>> trio.run(main)
            Traceback (most recent call last):
            ...
            jobkit.JobNotFound: no job with id 1
        """

        def attempt() -> Job:
            row = self._conn.execute(
                f"SELECT {schema.COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            return schema.to_job(row)

        return await self._run(attempt)

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

        ``after_id``/``before_id`` bound the ids, so a page of a listing
        without a state starts from a seek on the primary key.

        Example::

            >>> import trio
            >>> from jobkit import JobState, NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="a"), NewJob(task="b",
            ...                              queue="mail")], now=0.0)
            ...         jobs = await store.list(state=JobState.QUEUED, queue="mail")
            ...         return [j.task for j in jobs]
            >>> trio.run(main)
            ['b']
        """
        check_limit(limit)
        check_list_cursor(after_id, before_id)
        where = []
        params: builtins.list[Any] = []
        sql = f"SELECT {schema.COLUMNS} FROM jobs"
        if state is not None:
            state = JobState(state)
            # A literal, not a parameter, so that the partial index of the
            # state applies; without statistics SQLite would rather walk the
            # whole table in id order, finished jobs and all.
            where.append(f"state = '{state.value}'")
            if state in schema.STATE_INDEX:
                sql += f" INDEXED BY {schema.STATE_INDEX[state]}"
        for column, op, value in (
            ("queue", "=", queue),
            ("task", "=", task),
            ("id", ">", after_id),
            ("id", "<", before_id),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?" if newest_first else " ORDER BY id LIMIT ?"
        params.append(-1 if limit is None else limit)
        return await self._run(
            lambda: [schema.to_job(row) for row in self._conn.execute(sql, params)]
        )

    async def _change(
        self,
        job_id: int,
        change: Callable[[Job], tuple[Job, Event]],
        check: Callable[[sqlite3.Connection, Job], None] | None = None,
    ) -> Job:
        # Read the row, apply the pure transition (which raises the same
        # TransitionError as every other store), write it back.
        def body(conn: sqlite3.Connection) -> Job:
            self._forget_queued()  # a requeue makes the job QUEUED again
            row = conn.execute(
                f"SELECT {schema.COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            job, event = change(schema.to_job(row))
            if check is not None:
                check(conn, job)
            conn.execute(
                schema.REWRITE,
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

        return await self._run(lambda: self._transaction(body))

    async def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a QUEUED job; raise ``TransitionError`` otherwise.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         [job_id] = await store.enqueue([NewJob(task="t")], now=0.0)
            ...         return (await store.cancel(job_id, now=1.0)).state.value
            >>> trio.run(main)
            'cancelled'
        """
        return await self._change(job_id, lambda job: _job.cancel(job, now=now))

    async def requeue(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job back to QUEUED with its attempts reset.

        Refused with ``TransitionError`` if the job is not DEAD, or if another
        active job holds its unique key.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> from jobkit.core.job import Failure
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         [job_id] = await store.enqueue([NewJob(task="t")], now=0.0)
            ...         await store.claim(queues=None, limit=1, now=0.0, lease=9.0)
            ...         await store.settle([Failure(job_id, 1, "boom", None)],
            ...                            now=1.0)
            ...         job = await store.requeue(job_id, now=2.0)
            ...         return job.state.value, job.attempts
            >>> trio.run(main)
            ('queued', 0)
        """

        def check(conn: sqlite3.Connection, job: Job) -> None:
            if job.unique_key is None:
                return
            holder = conn.execute(schema.HOLDER, (job.unique_key,)).fetchone()
            if holder is not None:
                raise _job.TransitionError(
                    f"cannot requeue job {job_id}: job {holder[0]} "
                    f"already holds its unique key {job.unique_key!r}"
                )

        return await self._change(job_id, lambda job: _job.requeue(job, now=now), check)

    async def discard(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job to CANCELLED for good.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         [job_id] = await store.enqueue([NewJob(task="t")], now=0.0)
            ...         await store.discard(job_id, now=1.0)
            >>> trio.run(main)
            Traceback (most recent call last):
            ...
            jobkit.TransitionError: cannot discard job 1: it is queued, not dead
        """
        return await self._change(job_id, lambda job: _job.discard(job, now=now))

    async def counts(self) -> QueueCounts:
        """Return the number of jobs per queue and state, as of the last commit.

        Example::

            >>> import trio
            >>> from jobkit import JobState, NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")] * 3, now=0.0)
            ...         return (await store.counts()).get("default", JobState.QUEUED)
            >>> trio.run(main)
            3
        """
        rows = await self._run(lambda: self._conn.execute(schema.COUNTS).fetchall())
        return QueueCounts(
            {(queue, schema.STATES[state]): n for queue, state, n in rows}
        )

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        """Return the earliest ``run_at`` among QUEUED jobs of ``queues``, or None.

        With ``tasks``, each priority level of the claim index is read in
        ``run_at`` order up to its first job of one of them.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t", run_at=40.0)], now=0.0)
            ...         return await store.next_run_at(queues=None)
            >>> trio.run(main)
            40.0
        """
        names = _check_queues(queues)
        only = check_tasks(tasks)
        if only == []:
            await trio.lowlevel.checkpoint()
            return None
        sql = schema.NEXT_RUN_AT if only is None else schema.next_run_at(len(only))
        extra = tuple(only or ())

        def attempt() -> float | None:
            conn = self._conn
            earliest: float | None = None
            for name in self._queue_names(conn) if names is None else names:
                (run_at,) = conn.execute(sql, (name, *extra)).fetchone()
                if run_at is not None and (earliest is None or run_at < earliest):
                    earliest = float(run_at)
            return earliest

        return await self._run(attempt)

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        """Return the number of QUEUED jobs per ``(queue, task)``, off the claim index.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")] * 2, now=0.0)
            ...         return await store.queued_tasks()
            >>> trio.run(main)
            {('default', 't'): 2}
        """
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT queue, task, count(*) FROM jobs INDEXED BY jobs_claim "
                "WHERE state = 'queued' GROUP BY queue, task"
            ).fetchall()
        )
        return {(queue, task): n for queue, task, n in rows}

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        """Return ``(sequence, event)`` pairs after ``after``, oldest first.

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")], now=0.0)
            ...         await store.claim(queues=None, limit=1, now=1.0, lease=9.0)
            ...         return [(seq, e.kind.value) for seq, e in await store.events()]
            >>> trio.run(main)
            [(1, 'enqueued'), (2, 'started')]
        """
        check_limit(limit)
        most = -1 if limit is None else limit
        if job_id is None:
            sql = (
                "SELECT seq, job_id, kind, at, attempt, error FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?"
            )
            params: tuple[Any, ...] = (after, most)
        else:
            sql, params = schema.JOB_EVENTS, (job_id, after, most)
        rows = await self._run(lambda: self._conn.execute(sql, params).fetchall())
        return [
            (seq, Event(job, schema.KINDS[kind], float(at), attempt, error))
            for seq, job, kind, at, attempt, error in rows
        ]

    async def purge(self, *, before: float) -> int:
        """Delete finished jobs last changed before ``before``, with their events.

        Finished means SUCCEEDED or CANCELLED: DEAD, QUEUED and RUNNING jobs
        stay, and so do the newest job and the job of the newest event (their
        numbers are where the next ones count from). Each transaction folds
        the events it deletes into the ``purged`` totals
        (:meth:`purge_totals`). The candidates are found in one
        read, which blocks no writer, then deleted a few hundred per
        transaction. The file keeps its size: new jobs reuse the freed pages
        (``VACUUM`` would shrink it).

        Example::

            >>> import trio
            >>> from jobkit import NewJob, SQLiteStore
            >>> from jobkit.core.job import Success
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.enqueue([NewJob(task="t")] * 3, now=0.0)
            ...         jobs = await store.claim(queues=None, limit=3, now=0.0,
            ...                                  lease=9.0)
            ...         await store.settle([Success(j.id, 1) for j in jobs], now=1.0)
            ...         deleted = await store.purge(before=2.0)
            ...         return deleted, [j.id for j in await store.list()]
            >>> trio.run(main)
            (2, [3])
        """
        check_time(before, "before")
        rows = await self._run(
            lambda: self._conn.execute(schema.PURGEABLE, (before,)).fetchall(),
            rows=_THREAD_ROWS + 1,  # a scan of the whole table: off the event loop
        )
        ids = [job_id for (job_id,) in rows]
        deleted = 0
        for start in range(0, len(ids), schema.PURGE_BATCH):
            batch = ids[start : start + schema.PURGE_BATCH]
            delete = functools.partial(self._delete, batch)
            deleted += await self._run(functools.partial(self._transaction, delete))
        return deleted

    def _delete(self, ids: Sequence[int], conn: sqlite3.Connection) -> int:
        # The counts must hold the events about to be deleted.
        _fold(conn, begun=True)
        marks = ", ".join("?" * len(ids))
        # Each job's events hang on a chain from jobs.last_seq back along
        # events.prev: followed by primary key, no scan of the log.
        chain = f"""
            WITH RECURSIVE chain (seq) AS (
                SELECT last_seq FROM jobs WHERE id IN ({marks})
                UNION ALL
                SELECT events.prev FROM events JOIN chain ON events.seq = chain.seq
                WHERE events.prev IS NOT NULL
            )
        """
        history: dict[int, builtins.list[Event]] = {job_id: [] for job_id in ids}
        for job_id, kind, at, attempt, error in conn.execute(
            f"{chain} SELECT job_id, kind, at, attempt, error FROM events "
            "WHERE seq IN chain ORDER BY seq",
            ids,
        ):
            history[job_id].append(
                Event(job_id, schema.KINDS[kind], float(at), attempt, error)
            )
        tallies: dict[TallyKey, tuple[int, float]] = {}
        for job_id, task, queue in conn.execute(
            f"SELECT id, task, queue FROM jobs WHERE id IN ({marks})", ids
        ):
            add_tallies(tallies, tally_events(task, queue, history[job_id]))
        tallies[("", "", "version", 0)] = (1, 0.0)
        conn.executemany(
            "INSERT INTO purged (task, queue, series, key, n, total) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task, queue, series, key) "
            "DO UPDATE SET n = n + excluded.n, total = total + excluded.total",
            [(*key, n, total) for key, (n, total) in tallies.items()],
        )
        conn.execute(
            f"{chain} DELETE FROM events WHERE seq IN chain "
            "AND seq < (SELECT max(seq) FROM events)",
            ids,
        )
        conn.execute(
            f"""
            INSERT INTO counts (queue, state, n)
                SELECT queue, state, -count(*) FROM jobs WHERE id IN ({marks})
                GROUP BY queue, state
            ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n
            """,
            ids,
        )
        return conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids).rowcount

    async def purge_totals(self) -> PurgeTotals:
        """Return what the events of purged jobs added up to.

        Example::

            >>> import trio
            >>> from jobkit import SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         return (await store.purge_totals()).version
            >>> trio.run(main)
            0
        """
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT task, queue, series, key, n, total FROM purged"
            ).fetchall()
        )
        version = 0
        tallies: dict[TallyKey, tuple[int, float]] = {}
        for task, queue, series, key, n, total in rows:
            if task == "" and series == "version":
                version = n
            else:
                tallies[(task, queue, series, key)] = (n, float(total))
        return PurgeTotals(version, tallies)

    async def aclose(self) -> None:
        """Close the connection; the data stays in the file. Closing twice is fine.

        Example::

            >>> import trio
            >>> from jobkit import SQLiteStore
            >>> async def main():
            ...     store = SQLiteStore(":memory:")
            ...     await store.aclose()
            ...     return repr(store)
            >>> trio.run(main)
            "<SQLiteStore ':memory:' (closed)>"
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        async with self._thread_lock:
            self._closed = True
            self._conn.close()
        # Return only once no thread of ours has the file open, so that a
        # copy of the file made next has every committed transaction.
        if not self._checkpoint_idle.is_set():
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._checkpoint_idle.wait)

    # -- schedules (the ScheduleStore part) --------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store a schedule; one with the same name and definition is kept as is.

        Example::

            >>> import trio
            >>> from jobkit import Schedule, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         first = Schedule.create("tick", "t", every=60, now=0.0)
            ...         await store.put_schedule(first)
            ...         again = Schedule.create("tick", "t", every=60, now=500.0)
            ...         return (await store.put_schedule(again)).next_slot
            >>> trio.run(main)
            0.0
        """
        check_schedule(schedule)
        _job.dump_json(schedule.payload)
        return await self._run(
            lambda: self._transaction(
                lambda conn: _sqlite_schedules.put(conn, schedule)
            )
        )

    async def schedules(self) -> builtins.list[Schedule]:
        """Return every schedule, by name.

        Example::

            >>> import trio
            >>> from jobkit import SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         return await store.schedules()
            >>> trio.run(main)
            []
        """
        return await self._run(lambda: _sqlite_schedules.get_all(self._conn))

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule (its jobs stay); return whether it existed.

        Example::

            >>> import trio
            >>> from jobkit import SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         return await store.remove_schedule("nightly")
            >>> trio.run(main)
            False
        """
        return await self._run(
            lambda: self._transaction(lambda conn: _sqlite_schedules.remove(conn, name))
        )

    async def fire_schedules(self, *, now: float) -> FireResult:
        """Enqueue due slots and advance their schedules in one ``BEGIN IMMEDIATE``.

        When nothing is due, one read answers without taking the write lock.

        Example::

            >>> import trio
            >>> from jobkit import Schedule, SQLiteStore
            >>> async def main():
            ...     async with SQLiteStore(":memory:") as store:
            ...         await store.put_schedule(
            ...             Schedule.create("tick", "t", every=60, start=0.0, now=0.0))
            ...         fired = await store.fire_schedules(now=60.0)
            ...         job = await store.get(fired.firings[0].job_id)
            ...         return [f.slot for f in fired.firings], job.unique_key
            >>> trio.run(main)
            ([60.0], 'schedule:tick:60.0')
        """

        def insert(conn: sqlite3.Connection, jobs: list[NewJob]) -> list[int]:
            check_new_jobs(jobs)
            rows = [
                (
                    spec.task,
                    spec.queue,
                    _job.dump_json(spec.payload),
                    spec.max_attempts or 0,
                    spec.priority,
                    now if spec.run_at is None else spec.run_at,
                    now,
                    spec.unique_key,
                )
                for spec in jobs
            ]
            return self._insert(conn, rows)

        def attempt() -> tuple[FireResult, builtins.list[Any]]:
            earliest = _sqlite_schedules.next_slot(self._conn)
            if earliest is None or earliest > now:
                return FireResult([], earliest), []
            return self._transaction(
                lambda conn: _sqlite_schedules.fire(
                    conn, now, lambda jobs: insert(conn, jobs)
                )
            )

        result, plans = await self._run(attempt)
        for old, due in plans:
            warn_dropped(old, due.dropped)
        return result
