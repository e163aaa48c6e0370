"""The schedules table of :class:`~jobkit.SQLiteStore`: its schema and statements.

Schedules arrived in schema version 2. A version 1 file is upgraded in place
by creating the table (:data:`TABLES`); nothing else changes and no data is
touched. The statements here run on the store's connection, inside the
store's transactions: :func:`fire` reads the due schedules, lets the caller
insert their jobs, and writes the advanced schedules back, all under the one
``BEGIN IMMEDIATE`` that makes a slot's job and the schedule's advance
commit together.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Final

from ...core import schedule as _schedule
from ...core.job import NewJob, dump_json
from ...core.schedule import FireResult, Firing, Schedule
from ...runtime.interval import MissedTickBehavior

__all__ = ["TABLES", "fire", "get_all", "put", "remove"]

TABLES: Final = (
    """
    CREATE TABLE schedules (
        name         TEXT    PRIMARY KEY,
        task         TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        priority     INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        every        REAL,
        cron         TEXT,
        tz           TEXT    NOT NULL,
        misfire      TEXT    NOT NULL CHECK (misfire IN ('burst', 'delay', 'skip')),
        max_burst    INTEGER NOT NULL,
        start        REAL,
        anchor       REAL    NOT NULL,
        next_slot    REAL    NOT NULL,
        last_slot    REAL,
        created_at   REAL    NOT NULL,
        updated_at   REAL    NOT NULL,
        CHECK ((every IS NULL) <> (cron IS NULL))
    ) WITHOUT ROWID
    """,
    # Workers ask "is anything due?" every poll: one seek, no write lock.
    "CREATE INDEX schedules_next ON schedules (next_slot)",
)
"""Creates the schedules table: the whole of the step from version 1 to 2."""

_FIELDS: Final = (
    "name, task, payload, queue, priority, max_attempts, every, cron, tz, "
    "misfire, max_burst, start, anchor, next_slot, last_slot, created_at, "
    "updated_at"
)

_UPSERT: Final = (
    f"INSERT OR REPLACE INTO schedules ({_FIELDS}) VALUES ({', '.join('?' * 17)})"
)

_ADVANCE: Final = (
    "UPDATE schedules SET anchor = ?, next_slot = ?, last_slot = ?, "
    "updated_at = ? WHERE name = ?"
)

_MISFIRES: Final = {m.value: m for m in MissedTickBehavior}


def _to_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.name,
        s.task,
        dump_json(s.payload),
        s.queue,
        s.priority,
        s.max_attempts,
        s.every,
        s.cron,
        s.tz,
        s.misfire.value,
        s.max_burst,
        s.start,
        s.anchor,
        s.next_slot,
        s.last_slot,
        s.created_at,
        s.updated_at,
    )


def _float(value: Any) -> float | None:
    # SQLite hands back a whole REAL as an integer; times are floats.
    return None if value is None else float(value)


def _to_schedule(row: tuple[Any, ...]) -> Schedule:
    (
        name,
        task,
        payload,
        queue,
        priority,
        max_attempts,
        every,
        cron,
        tz,
        misfire,
        max_burst,
        start,
        anchor,
        next_slot,
        last_slot,
        created_at,
        updated_at,
    ) = row
    return Schedule(
        name=name,
        task=task,
        payload=json.loads(payload),
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        every=_float(every),
        cron=cron,
        tz=tz,
        misfire=_MISFIRES[misfire],
        max_burst=max_burst,
        start=_float(start),
        anchor=float(anchor),
        next_slot=float(next_slot),
        last_slot=_float(last_slot),
        created_at=float(created_at),
        updated_at=float(updated_at),
    )


def _one(conn: sqlite3.Connection, name: str) -> Schedule | None:
    row = conn.execute(
        f"SELECT {_FIELDS} FROM schedules WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else _to_schedule(row)


def put(conn: sqlite3.Connection, schedule: Schedule) -> Schedule:
    """Keep the stored schedule of the same definition, or write ``schedule``."""
    old = _one(conn, schedule.name)
    if old is not None and old.definition == schedule.definition:
        return old
    conn.execute(_UPSERT, _to_row(schedule))
    return schedule


def get_all(conn: sqlite3.Connection) -> list[Schedule]:
    """Every schedule, by name."""
    rows = conn.execute(f"SELECT {_FIELDS} FROM schedules ORDER BY name").fetchall()
    return [_to_schedule(row) for row in rows]


def remove(conn: sqlite3.Connection, name: str) -> bool:
    """Delete one schedule; whether it was there."""
    return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1


def next_slot(conn: sqlite3.Connection) -> float | None:
    """The earliest next slot of all schedules, or None when there are none."""
    (earliest,) = conn.execute("SELECT min(next_slot) FROM schedules").fetchone()
    return _float(earliest)


def fire(
    conn: sqlite3.Connection,
    now: float,
    insert: Callable[[list[NewJob]], list[int]],
) -> tuple[FireResult, list[tuple[Schedule, _schedule.Due]]]:
    """Enqueue (with ``insert``) and advance every due schedule; run in a transaction.

    Returns what was fired, and the plans, for the caller to log once the
    transaction has committed.
    """
    rows = conn.execute(
        f"SELECT {_FIELDS} FROM schedules WHERE next_slot <= ? ORDER BY name", (now,)
    ).fetchall()
    plans = _schedule.fire_all([_to_schedule(row) for row in rows], now)
    jobs = [job for _, due in plans for job in due.jobs()]
    ids = insert(jobs) if jobs else []
    conn.executemany(
        _ADVANCE,
        [
            (
                d.schedule.anchor,
                d.schedule.next_slot,
                d.schedule.last_slot,
                now,
                old.name,
            )
            for old, d in plans
        ],
    )
    firings = []
    pairs = iter(ids)
    for old, due in plans:
        for slot, run_at in due.slots:
            firings.append(
                Firing(old.name, old.task, old.queue, slot, run_at, next(pairs))
            )
    return FireResult(firings, next_slot(conn)), plans
