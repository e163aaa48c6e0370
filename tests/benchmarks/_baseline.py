"""The hand-written queue the benchmarks measure jobkit against.

It is the smallest SQLite job queue that is still at-least-once: one table,
one partial index for the claim, one ``INSERT`` per enqueue, a claim of one
``BEGIN IMMEDIATE`` + ``UPDATE … RETURNING`` that takes a lease, a completion
of one ``UPDATE`` that checks the attempt. WAL and ``synchronous=NORMAL``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def payload(i: int) -> dict[str, object]:
    return {"user_id": i, "template": "welcome"}


class Baseline:
    """A minimal, correct SQLite job queue, written by hand."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY, task TEXT NOT NULL, queue TEXT NOT NULL,
                payload TEXT NOT NULL, state TEXT NOT NULL,
                priority INTEGER NOT NULL, run_at REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, lease_until REAL, result TEXT
            );
            CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, priority DESC, run_at)
                WHERE state = 'queued';
            """
        )

    def enqueue(self, task: str, args: dict[str, object], now: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO jobs (task, queue, payload, state, priority, run_at) "
            "VALUES (?, 'default', ?, 'queued', 0, ?)",
            (task, json.dumps(args), now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def enqueue_many(
        self, jobs: list[tuple[str, dict[str, object]]], now: float
    ) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT INTO jobs (task, queue, payload, state, priority, run_at) "
            "VALUES (?, 'default', ?, 'queued', 0, ?)",
            [(task, json.dumps(args), now) for task, args in jobs],
        )
        self.db.execute("COMMIT")

    def claim(self, now: float, lease: float) -> tuple[int, int, object] | None:
        self.db.execute("BEGIN IMMEDIATE")
        row = self.db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
            "lease_until = ? WHERE id = (SELECT id FROM jobs WHERE state = 'queued' "
            "AND queue = 'default' AND run_at <= ? "
            "ORDER BY priority DESC, run_at, id LIMIT 1) "
            "RETURNING id, attempts, payload",
            (now + lease, now),
        ).fetchone()
        self.db.execute("COMMIT")
        if row is None:
            return None
        return row[0], row[1], json.loads(row[2])

    def claim_many(
        self, limit: int, now: float, lease: float
    ) -> list[tuple[int, int, object]]:
        self.db.execute("BEGIN IMMEDIATE")
        rows = self.db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
            "lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' "
            "AND queue = 'default' AND run_at <= ? "
            "ORDER BY priority DESC, run_at, id LIMIT ?) "
            "RETURNING id, attempts, payload",
            (now + lease, now, limit),
        ).fetchall()
        self.db.execute("COMMIT")
        return [(row[0], row[1], json.loads(row[2])) for row in rows]

    def complete_many(self, done: list[tuple[int, int, object]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "UPDATE jobs SET state = 'succeeded', result = ?, lease_until = NULL "
            "WHERE id = ? AND state = 'running' AND attempts = ?",
            [(json.dumps(result), job_id, attempt) for job_id, attempt, result in done],
        )
        self.db.execute("COMMIT")

    def complete(self, job_id: int, attempt: int, result: object) -> bool:
        cursor = self.db.execute(
            "UPDATE jobs SET state = 'succeeded', result = ?, lease_until = NULL "
            "WHERE id = ? AND state = 'running' AND attempts = ?",
            (json.dumps(result), job_id, attempt),
        )
        return cursor.rowcount == 1

    def close(self) -> None:
        self.db.close()
