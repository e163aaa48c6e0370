"""Running one store call against PostgreSQL: retries, deadlines, unknown commits.

A store call is one function of a psycopg connection, run in a worker thread
(one trio-to-thread hop per call) by :class:`Runner`. In that thread it
takes a pooled connection, runs the function (in one transaction for a
write), and retries with jittered backoff on what passes: a lost connection,
a server restart, a serialization failure, a deadlock, a unique key taken by
a concurrent transaction. Every other database error, and retries that run
past the call's deadline, come out as :class:`~jobkit.StoreError` or
:class:`~jobkit.StoreBusy`, never as a psycopg exception.

A connection lost while COMMIT was on its way leaves the outcome unknown.
The runner noted the transaction's id before committing; it asks the server
(``pg_xact_status``) on another connection whether that transaction
committed, and returns the call's result if it did, retries it if it did not.
So a call is applied once, even across a lost commit, unless the server
cannot be reached to ask before the deadline: then the error says the
outcome is unknown.

A claim needs none of that: a claim whose answer was lost leaves its jobs
RUNNING under a lease that nobody renews, and they go back to the queue when
it expires, as if the claiming worker had crashed. So a lost claim is simply
tried again, and its BEGIN, statement and COMMIT travel in one round trip
(:meth:`Runner.call_repeatable`): the shortest path from a wake-up to a
running handler.

Deadlines are kept in real time (``time.monotonic``), never on trio's clock,
which a test may run virtually. A watchdog thread shuts down the socket of a
connection whose call overran its deadline, so that a thread stuck on a
silent network (a partition: the far end never answers) gets an error and
returns, instead of holding the call forever.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

import psycopg
import psycopg.errors
import psycopg_pool
import trio

from ...runtime.tasks import first_line
from ..protocol import StoreBusy, StoreError

T = TypeVar("T")

__all__ = ["Runner"]

# Backoff between attempts: jittered, doubling from the first delay to the cap.
_FIRST_DELAY: Final = 0.002
_MAX_DELAY: Final = 0.5

# How often the watchdog looks for calls past their deadline, and how long
# past it a call may still be in a network wait before its socket is shut.
_WATCH_EVERY: Final = 0.2
_WATCH_GRACE: Final = 0.5

# Errors that say "try again": the transaction was rolled back as a whole.
_CONTENTION: Final = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,  # statement_timeout: waited for locks too long
    psycopg.errors.UniqueViolation,
)


_BEGIN: Final = {
    "sync": (b"BEGIN",),
    "async": (b"BEGIN", b"SET LOCAL synchronous_commit = off"),
}
_XID: Final = b"SELECT pg_current_xact_id()::text"


class _Retry(Exception):
    """Raised by a call's body to have the whole call run again (after backoff)."""


class _Gone(Exception):
    """The connection broke while COMMIT was on its way: the outcome is unknown.

    ``xid`` is the transaction's id (None if it wrote nothing), ``result``
    what the call returns if it committed.
    """

    def __init__(self, error: BaseException, xid: str | None, result: object):
        super().__init__(str(error))
        self.error = error
        self.xid = xid
        self.result = result


def shut_socket(conn: psycopg.Connection[object]) -> None:
    """Shut down ``conn``'s socket so a thread blocked reading it gets an error.

    Safe to call from any thread: it acts on a duplicate of the descriptor,
    and shutting down a socket (unlike closing one) is seen by every user of
    it at once.
    """
    try:
        fd = conn.fileno()
    except Exception:
        return
    try:
        dup = os.dup(fd)
    except OSError:
        return
    sock = socket.socket(fileno=dup)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Call:
    """One store call in flight: its deadline and the connection it is using.

    Abandoning it (the caller was cancelled, or the deadline passed long
    ago) shuts that connection's socket, so that the thread's wait ends at
    once and its transaction is rolled back by the server, unless COMMIT
    was already on its way; and the thread starts no further attempt.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.abandoned = False
        self._conn: psycopg.Connection[object] | None = None
        # Taken by the call's thread and by whoever abandons it, so that a
        # connection is never shut after it went back to the pool.
        self._lock = threading.Lock()

    def use(self, conn: psycopg.Connection[object] | None) -> None:
        with self._lock:
            if self.abandoned and conn is not None:
                raise _Abandoned
            self._conn = conn

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if self._conn is not None:
                shut_socket(self._conn)


class _Abandoned(Exception):
    """The call was abandoned before it could take a connection."""


class Runner:
    """Runs store calls in threads on a connection pool, within a deadline each."""

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool,
        where: str,
        timeout: float,
        writers_lock: int,
    ):
        self.pool = pool
        # Every write transaction holds this advisory lock, shared, from its
        # start: a reader of the event log takes it exclusively for a moment
        # to learn which sequence numbers no transaction in flight can still
        # commit (see PostgresStore.events).
        self._writing = (b"SELECT pg_advisory_xact_lock_shared(%s)", (writers_lock,))
        self.where = where
        self.timeout = timeout
        self._rng = random.Random()
        # The calls in flight (a dict used as an ordered set).
        self._active: dict[_Call, None] = {}
        self._stop = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, name=f"jobkit watchdog {where}", daemon=True
        )
        self._watchdog.start()

    def close(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_EVERY):
            now = time.monotonic()
            for call in list(self._active):
                if now > call.deadline + _WATCH_GRACE and not call.abandoned:
                    call.abandon()

    async def call(
        self, body: Callable[[psycopg.Connection[object]], T], *, what: str, write: str
    ) -> T:
        """Run ``body`` until done or past the deadline.

        ``write`` is ``""`` for a read, outside any transaction; ``"sync"`` for
        a transaction whose COMMIT waits until the server has flushed it to
        disk; ``"async"`` for one whose COMMIT does not wait (a server crash
        may forget it, never half of it).

        A cancelled caller returns at once: the call is abandoned (see
        :class:`_Call`); it may still have committed if COMMIT was on its way.
        """
        call = _Call(time.monotonic() + self.timeout)
        try:
            return await trio.to_thread.run_sync(
                self.run, body, what, write, call, abandon_on_cancel=True
            )
        except trio.Cancelled:
            call.abandon()
            raise

    async def call_repeatable(
        self,
        send: Callable[[psycopg.Connection[object]], Callable[[], T]],
        *,
        what: str,
        write: str,
    ) -> T:
        """Run a write that may be applied twice harmlessly, in one round trip.

        ``send`` only sends its statements and returns a function that reads
        their results, so that COMMIT goes in the same round trip. A
        connection lost on the way is retried like any other loss, whether
        or not the transaction committed.
        """
        begin = _BEGIN[write]
        return await self.call(
            lambda conn: self._in_one_trip(conn, send, begin), what=what, write=""
        )

    def run(
        self,
        body: Callable[[psycopg.Connection[object]], T],
        what: str,
        write: str,
        call: _Call | None = None,
    ) -> T:
        """The blocking part of :meth:`call`, on the calling thread."""
        if call is None:
            call = _Call(time.monotonic() + self.timeout)
        self._active[call] = None
        try:
            return self._run(body, what, write, call)
        finally:
            del self._active[call]

    def _run(
        self,
        body: Callable[[psycopg.Connection[object]], T],
        what: str,
        write: str,
        call: _Call,
    ) -> T:
        deadline = call.deadline
        delay = _FIRST_DELAY
        busy = False
        last: BaseException | None = None
        while True:
            try:
                return self._attempt(body, write, call)
            except _Gone as gone:
                if call.abandoned:
                    raise self._overran(what, gone.error) from None
                last, busy = gone.error, False
                self._discard_broken()
                committed = (
                    True if gone.xid is None else self._committed(gone.xid, deadline)
                )
                if committed is None:
                    raise StoreError(
                        f"{self.where}: the connection was lost while committing "
                        f"{what}, and the server could not be asked within "
                        f"{self.timeout:g} s whether it was applied "
                        f"({first_line(str(gone.error))})"
                    ) from None
                if committed:
                    return gone.result  # type: ignore[return-value]
            except _CONTENTION as exc:
                last, busy = exc, True
            except _Retry as exc:
                last, busy = exc, True
            except psycopg_pool.PoolTimeout as exc:
                last, busy = exc, self._pool_busy()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if call.abandoned:
                    raise self._overran(what, exc) from None
                last, busy = exc, False
                self._discard_broken()
            except _Abandoned:
                raise self._overran(what, last) from None
            except psycopg.Error as exc:
                raise StoreError(
                    f"{self.where}: PostgreSQL refused {what}: "
                    f"{type(exc).__name__}: {first_line(str(exc))}"
                ) from None
            pause = delay * (0.5 + self._rng.random() / 2)
            if time.monotonic() + pause >= deadline:
                raise self._gave_up(what, last, busy)
            time.sleep(pause)
            delay = min(delay * 2, _MAX_DELAY)

    def _attempt(
        self,
        body: Callable[[psycopg.Connection[object]], T],
        write: str,
        call: _Call,
    ) -> T:
        remaining = max(0.001, call.deadline - time.monotonic())
        with self.pool.connection(timeout=remaining) as conn:
            call.use(conn)
            try:
                if not write:
                    return body(conn)
                return self._transaction(conn, body, _BEGIN[write])
            finally:
                call.use(None)

    def _begin(
        self, conn: psycopg.Connection[object], begin: tuple[bytes, ...]
    ) -> None:
        for statement in begin:
            conn.execute(statement)
        conn.execute(*self._writing)

    def _transaction(
        self,
        conn: psycopg.Connection[object],
        body: Callable[[psycopg.Connection[object]], T],
        begin: tuple[bytes, ...],
    ) -> T:
        try:
            # Pipelined: BEGIN, the transaction's id and the body's first
            # statement travel in one round trip. The id is known before
            # COMMIT is sent, so if the connection is lost while COMMIT is on
            # its way, the server can still say whether it committed.
            with conn.pipeline():
                self._begin(conn, begin)
                ids = conn.execute(_XID)
                result = body(conn)
            xid: str = ids.fetchone()[0]  # type: ignore[index]
        except BaseException:
            self._rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if conn.broken or conn.closed:
                raise _Gone(exc, xid, result) from None
            self._rollback(conn)
            raise
        return result

    def _in_one_trip(
        self,
        conn: psycopg.Connection[object],
        send: Callable[[psycopg.Connection[object]], Callable[[], T]],
        begin: tuple[bytes, ...],
    ) -> T:
        try:
            with conn.pipeline():
                self._begin(conn, begin)
                read = send(conn)
                conn.execute(b"COMMIT")
        except BaseException:
            # A statement failed, and the pipeline skipped the COMMIT after it.
            self._rollback(conn)
            raise
        return read()

    @staticmethod
    def _rollback(conn: psycopg.Connection[object]) -> None:
        if conn.broken or conn.closed:
            return
        # If this fails the connection is broken, and the pool drops it.
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")

    def _committed(self, xid: str, deadline: float) -> bool | None:
        """Whether transaction ``xid`` committed; None if the server cannot say."""
        delay = _FIRST_DELAY
        while time.monotonic() < deadline:
            try:
                with self.pool.connection(
                    timeout=max(0.001, deadline - time.monotonic())
                ) as conn:
                    row = conn.execute(
                        "SELECT pg_xact_status(%s::xid8)", (xid,)
                    ).fetchone()
                status = None if row is None else row[0]
                if status == "committed":
                    return True
                if status == "aborted":
                    return False
                # "in progress": the old session has not yet noticed the lost
                # connection, or is still writing the commit; ask again.
            except (psycopg.Error, psycopg_pool.PoolTimeout):
                self._discard_broken()
            time.sleep(delay * (0.5 + self._rng.random() / 2))
            delay = min(delay * 2, _MAX_DELAY)
        return None

    def _discard_broken(self) -> None:
        # After a server restart every idle connection in the pool is dead:
        # have the pool test them now rather than hand them out one by one.
        with contextlib.suppress(Exception):
            self.pool.check()

    def _pool_busy(self) -> bool:
        # The pool timed out: either every connection is in use (busy) or
        # none can be made (the server is unreachable).
        return int(self.pool.get_stats().get("pool_size", 0)) > 0

    def _overran(self, what: str, last: BaseException | None) -> StoreError:
        reason = "" if last is None else f" ({first_line(str(last))})"
        return StoreError(
            f"{self.where} did not answer {what} within {self.timeout:g} s; its "
            f"connection was closed, and the call rolled back unless it was "
            f"committing{reason}"
        )

    def _gave_up(self, what: str, last: BaseException | None, busy: bool) -> StoreError:
        reason = "" if last is None else f" (last error: {first_line(str(last))})"
        if busy:
            return StoreBusy(
                f"{self.where} stayed busy for {self.timeout:g} s; gave up "
                f"{what} without changing anything{reason}"
            )
        return StoreError(
            f"{self.where} could not be reached for {self.timeout:g} s; gave up "
            f"{what} without changing anything{reason}"
        )
