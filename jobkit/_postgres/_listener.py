"""Hearing other processes' enqueues: LISTEN on a connection of its own, no thread.

The listening connection is in autocommit mode and belongs to the listener
alone. Waiting costs no thread: trio waits for its socket to become readable
(``trio.lowlevel.wait_readable``), then psycopg reads what arrived without
blocking (``conn.notifies(timeout=0)``).

A NOTIFY is a hint. The connection may drop (a server restart, a network
cut) and notifications sent meanwhile are lost, so a drop is answered by a
reconnect, a new LISTEN and one hint for everyone (a poll makes up for what
was missed). A connection can also go silent without breaking (a partition:
the far end stops answering but nothing closes), which no read would ever
notice: after ``_PING_EVERY`` seconds without traffic the listener sends a
query, and treats the connection as lost if no answer comes in time.

One task at a time reads the connection; other waiters wait for what it
hears, and one of them takes over when the reader leaves.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Final

import attrs
import psycopg
import trio
from psycopg import sql

from ._run import shut_socket

__all__ = ["Listener"]

_PING_EVERY: Final = 10.0
_PING_TIMEOUT: Final = 5.0
_RECONNECT_FIRST: Final = 0.05
_RECONNECT_CAP: Final = 2.0

_ALL: Final = None  # a hint for every queue


@attrs.define(eq=False)
class _Hint:
    # The queues named by what the reader heard; None means all of them.
    heard: trio.Event = attrs.Factory(trio.Event)
    queues: set[str] | None = attrs.Factory(set)

    def concerns(self, queues: set[str] | None) -> bool:
        if self.queues is None or queues is None:
            return self.queues is None or bool(self.queues)
        return not self.queues.isdisjoint(queues)


class Listener:
    """One LISTENing connection, shared by every task that waits for a hint."""

    def __init__(self, url: str, channel: str, settings: dict[str, Any]) -> None:
        self._url = url
        self._channel = channel
        self._settings = settings
        self._conn: psycopg.Connection[Any] | None = None
        self._connecting = trio.Lock()
        self._reading = False
        self._hint = _Hint()
        self._ever_connected = False
        self.reconnects = 0
        """How many times the connection was made again after a drop."""

    async def wait(self, queues: set[str] | None) -> None:
        """Return after a hint that concerns ``queues`` (None: any queue)."""
        while True:
            hint = self._hint
            if self._reading:
                await hint.heard.wait()
            else:
                self._reading = True
                try:
                    hint.queues = await self._read()
                finally:
                    self._reading = False
                    # Wake the other waiters: with news, or (cancelled) with
                    # nothing, so that one of them reads from now on.
                    self._hint = _Hint()
                    hint.heard.set()
            if hint.concerns(queues):
                return

    async def _read(self) -> set[str] | None:
        if self._conn is None:
            reconnecting = self._ever_connected
            await self.connect()
            if reconnecting:
                return _ALL  # notifications sent while disconnected are lost
        conn = self._conn
        assert conn is not None
        last_traffic = time.monotonic()
        while True:
            try:
                heard = {n.payload for n in conn.notifies(timeout=0)}
                alive = not (conn.closed or conn.broken)
            except psycopg.Error:
                alive = False
            if not alive:
                await self._reconnect()
                return _ALL
            if heard:
                return heard
            with trio.move_on_after(_PING_EVERY) as quiet:
                await trio.lowlevel.wait_readable(conn.fileno())
            if not quiet.cancelled_caught:
                last_traffic = time.monotonic()
                continue
            # Silence is measured in real time: a virtual clock would rush.
            if time.monotonic() - last_traffic < _PING_EVERY:
                continue
            if not await self._ping(conn):
                await self._reconnect()
                return _ALL
            last_traffic = time.monotonic()

    async def _reconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)
        await self.connect()

    async def connect(self) -> None:
        """Connect and LISTEN, unless connected; retry until it works."""
        async with self._connecting:
            if self._conn is None:
                await self._connect()

    async def _connect(self) -> None:
        delay = _RECONNECT_FIRST
        while True:
            try:
                conn = await trio.to_thread.run_sync(self._open)
            except psycopg.Error:
                await trio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_CAP)
                continue
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self._conn = conn
            return

    def _open(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url, autocommit=True, **self._settings)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _ping(self, conn: psycopg.Connection[Any]) -> bool:
        done = trio.Event()
        answered = False

        def ping() -> None:
            nonlocal answered
            try:
                # Notifications arriving meanwhile wait in psycopg's backlog
                # for the next notifies().
                conn.execute("SELECT 1")
                answered = True
            except psycopg.Error:
                pass

        async def watchdog() -> None:
            with trio.move_on_after(_PING_TIMEOUT):
                await done.wait()
            if not done.is_set():
                shut_socket(conn)  # the thread's read fails at once

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            try:
                await trio.to_thread.run_sync(ping)
            finally:
                done.set()
        return answered

    async def aclose(self) -> None:
        """Close the listening connection (a waiter, if any, is woken first)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error, OSError):
                trio.lowlevel.notify_closing(conn.fileno())
            conn.close()
