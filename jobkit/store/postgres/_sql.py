"""PostgresStore's statements, and the rows they return as jobkit's values.

:class:`Statements` holds every statement a store call runs, with the store's
schema name filled in once; the tables they read are in :mod:`._schema`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Final

from psycopg import sql

from ...core.job import EventKind, Job, JobState

__all__ = ["COLUMNS", "KINDS", "STATES", "Statements", "decode", "encode", "to_job"]

COLUMNS: Final = (
    "id, task, queue, payload, state, attempts, max_attempts, priority, run_at, "
    "created_at, updated_at, lease_until, unique_key, last_error, result, "
    "retry_delay"
)

SCHEDULE_FIELDS: Final = (
    "name, task, payload, queue, priority, max_attempts, every, cron, tz, "
    "misfire, max_burst, start, anchor, next_slot, last_slot, created_at, "
    "updated_at"
)

encode: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
decode: Final = json.JSONDecoder().decode

STATES: Final = {state.value: state for state in JobState}
KINDS: Final = {kind.value: kind for kind in EventKind}


def to_job(row: tuple[Any, ...]) -> Job:
    (
        job_id,
        task,
        queue,
        payload,
        state,
        attempts,
        max_attempts,
        priority,
        run_at,
        created_at,
        updated_at,
        lease_until,
        unique_key,
        last_error,
        result,
        retry_delay,
    ) = row
    return Job(
        job_id,
        task,
        queue,
        decode(payload),
        STATES[state],
        attempts,
        max_attempts,
        priority,
        run_at,
        created_at,
        updated_at,
        lease_until,
        unique_key,
        last_error,
        None if result is None else decode(result),
        retry_delay,
    )


class Statements:
    """The store's SQL, with its schema name filled in once."""

    def __init__(self, schema: str) -> None:
        self._s = sql.Identifier(schema).as_string(None)
        self._channel = sql.Literal(f"jobkit.{schema}").as_string(None)
        f = self.format
        self.holders = f(
            "SELECT unique_key, id FROM {s}.jobs WHERE unique_key = ANY(%s) "
            "AND state IN ('queued', 'running')"
        )
        # Ids come from the identity in the order the rows are inserted,
        # which is the order of the batch.
        self.insert = f(
            "WITH new AS (INSERT INTO {s}.jobs (task, queue, payload, state, "
            "attempts, max_attempts, priority, run_at, created_at, updated_at, "
            "unique_key, event) "
            "SELECT task, queue, payload, 'queued', 0, max_attempts, priority, "
            "run_at, %s, %s, unique_key, 'enqueued' FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], "
            "%s::float8[], %s::text[]) WITH ORDINALITY AS t(task, queue, payload, "
            "max_attempts, priority, run_at, unique_key, n) ORDER BY n "
            "RETURNING id) SELECT id FROM new ORDER BY id"
        )
        # A job without max_attempts gets its task's default, or 1. The
        # picked ids go in as an array, so that the update finds each row by
        # primary key whatever plan the statement gets once prepared (a
        # generic plan may otherwise join against a scan of the table).
        # Each priority is read from its first job up to its first not yet
        # due: one pass down the claim index would also read every job that
        # waits for later whenever fewer than the limit are due. A priority
        # may lock up to the limit of rows it does not take (when several
        # have due jobs) until the statement commits.
        self.claim = f(
            f"WITH RECURSIVE levels (p) AS ("
            f"(SELECT priority FROM {{s}}.jobs WHERE state = 'queued' "
            f"ORDER BY priority DESC LIMIT 1) "
            f"UNION ALL SELECT (SELECT priority FROM {{s}}.jobs "
            f"WHERE state = 'queued' AND priority < levels.p "
            f"ORDER BY priority DESC LIMIT 1) FROM levels WHERE levels.p IS NOT NULL) "
            f"UPDATE {{s}}.jobs AS j SET state = 'running', event = 'started', "
            f"attempts = j.attempts + 1, lease_until = %(until)s, "
            f"updated_at = %(now)s, max_attempts = coalesce(j.max_attempts, "
            f"(SELECT d.n FROM unnest(%(default_tasks)s::text[], "
            f"%(defaults)s::bigint[]) AS d(task, n) WHERE d.task = j.task), 1) "
            f"WHERE j.id = ANY(ARRAY(SELECT c.id FROM levels CROSS JOIN LATERAL ("
            f"SELECT id, priority, run_at FROM {{s}}.jobs "
            f"WHERE state = 'queued' AND priority = levels.p AND run_at <= %(now)s "
            f"AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[])) "
            f"AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[])) "
            f"ORDER BY run_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS c "
            f"ORDER BY c.priority DESC, c.run_at, c.id LIMIT %(limit)s)) "
            f"RETURNING {', '.join('j.' + c for c in COLUMNS.split(', '))}"
        )
        self.settle = f(
            "UPDATE {s}.jobs AS j SET "
            "state = CASE WHEN o.kind = 'success' THEN 'succeeded' "
            "  WHEN o.kind = 'release' THEN 'queued' "
            "  WHEN o.retry_at IS NULL OR j.attempts >= coalesce(j.max_attempts, 1) "
            "    THEN 'dead' "
            "  ELSE 'queued' END, "
            "event = CASE WHEN o.kind = 'success' THEN 'succeeded' "
            "  WHEN o.kind = 'release' THEN 'released' "
            "  WHEN o.retry_at IS NULL OR j.attempts >= coalesce(j.max_attempts, 1) "
            "    THEN 'dead' "
            "  ELSE 'retried' END, "
            "attempts = CASE WHEN o.kind = 'release' THEN j.attempts - 1 "
            "  ELSE j.attempts END, "
            "run_at = CASE WHEN o.kind = 'release' THEN o.now "
            "  WHEN o.kind = 'failure' AND o.retry_at IS NOT NULL "
            "    AND j.attempts < coalesce(j.max_attempts, 1) THEN o.retry_at "
            "  ELSE j.run_at END, "
            "retry_delay = CASE WHEN o.kind = 'failure' AND o.retry_at IS NOT NULL "
            "    AND j.attempts < coalesce(j.max_attempts, 1) THEN o.delay "
            "  ELSE j.retry_delay END, "
            "result = CASE WHEN o.kind = 'success' THEN o.result ELSE j.result END, "
            "last_error = CASE WHEN o.kind = 'failure' THEN o.error "
            "  ELSE j.last_error END, "
            "lease_until = NULL, updated_at = o.now "
            "FROM (SELECT *, %s::float8 AS now FROM unnest(%s::bigint[], "
            "%s::bigint[], %s::text[], %s::text[], %s::text[], %s::float8[], "
            "%s::float8[]) AS t(id, attempt, kind, result, error, retry_at, delay)) "
            "AS o "
            "WHERE j.id = o.id AND j.state = 'running' AND j.attempts = o.attempt "
            "RETURNING j.id, o.attempt"
        )
        self.highest = f("SELECT coalesce(max(id), 0) FROM {s}.jobs")
        self.renew = f(
            "UPDATE {s}.jobs AS j SET lease_until = %s, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS o(id, attempt) "
            "WHERE j.id = o.id AND j.state = 'running' AND j.attempts = o.attempt "
            "RETURNING j.id, j.attempts"
        )
        self.reap = f(
            f"UPDATE {{s}}.jobs AS j SET "
            f"state = CASE WHEN attempts >= coalesce(max_attempts, 1) THEN 'dead' "
            f"  ELSE 'queued' END, "
            f"event = CASE WHEN attempts >= coalesce(max_attempts, 1) THEN 'dead' "
            f"  ELSE 'expired' END, "
            f"run_at = CASE WHEN attempts >= coalesce(max_attempts, 1) THEN run_at "
            f"  ELSE %(now)s END, "
            f"last_error = %(error)s, lease_until = NULL, updated_at = %(now)s "
            f"WHERE id IN (SELECT id FROM {{s}}.jobs WHERE state = 'running' "
            f"AND lease_until < %(now)s FOR UPDATE SKIP LOCKED) "
            f"RETURNING {COLUMNS}"
        )
        self.get = f(f"SELECT {COLUMNS} FROM {{s}}.jobs WHERE id = %s")
        self.get_for_update = f(
            f"SELECT {COLUMNS} FROM {{s}}.jobs WHERE id = %s FOR UPDATE"
        )
        self.rewrite = f(
            "UPDATE {s}.jobs SET state = %s, event = %s, attempts = %s, run_at = %s, "
            "lease_until = %s, last_error = %s, updated_at = %s, retry_delay = %s "
            "WHERE id = %s"
        )
        self.counts = f(
            "SELECT queue, state, sum(n)::bigint FROM {s}.counts "
            "GROUP BY queue, state HAVING sum(n) > 0"
        )
        self.next_run_at = f(
            "SELECT min(run_at) FROM {s}.jobs WHERE state = 'queued' "
            "AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[])) "
            "AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))"
        )
        self.queued_tasks = f(
            "SELECT queue, task, count(*) FROM {s}.jobs WHERE state = 'queued' "
            "GROUP BY queue, task"
        )
        self.events = f(
            "SELECT seq, job_id, kind, at, attempt, error FROM {s}.events "
            "WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
        )
        self.writers_lock = zlib.crc32(f"jobkit writers {schema}".encode())
        self.wait_for_writers = b"SELECT pg_advisory_xact_lock(%s)"
        self.highest_event = f("SELECT coalesce(max(seq), 0) FROM {s}.events")
        self.job_events = f(
            "SELECT seq, job_id, kind, at, attempt, error FROM {s}.events "
            "WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        # The newest job and the job of the newest event stay: their numbers
        # are where the next ones count from. Locked, so that a concurrent
        # purge takes other jobs (or waits, and finds these gone).
        self.purgeable = f(
            "SELECT id FROM {s}.jobs WHERE state IN ('succeeded', 'cancelled') "
            "AND updated_at < %s AND id < (SELECT max(id) FROM {s}.jobs) "
            "AND id IS DISTINCT FROM "
            "  (SELECT job_id FROM {s}.events ORDER BY seq DESC LIMIT 1) "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.purged_events = f(
            "SELECT job_id, kind, at, attempt, error FROM {s}.events "
            "WHERE job_id = ANY(%s::bigint[]) ORDER BY seq"
        )
        self.purged_jobs = f(
            "SELECT id, task, queue FROM {s}.jobs WHERE id = ANY(%s::bigint[])"
        )
        self.add_purged = f(
            "INSERT INTO {s}.purged AS p (task, queue, series, key, n, total) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (task, queue, series, key) "
            "DO UPDATE SET n = p.n + excluded.n, total = p.total + excluded.total"
        )
        self.delete_events = f(
            "DELETE FROM {s}.events WHERE job_id = ANY(%s::bigint[])"
        )
        self.delete_jobs = f(
            "DELETE FROM {s}.jobs WHERE id = ANY(%s::bigint[]) RETURNING id"
        )
        self.purge_totals = f(
            "SELECT task, queue, series, key, n, total FROM {s}.purged"
        )
        self.schedule_for_update = f(
            f"SELECT {SCHEDULE_FIELDS} FROM {{s}}.schedules WHERE name = %s FOR UPDATE"
        )
        self.insert_schedule = f(
            f"INSERT INTO {{s}}.schedules ({SCHEDULE_FIELDS}) VALUES "
            f"({', '.join(['%s'] * 17)}) ON CONFLICT (name) DO NOTHING RETURNING 1"
        )
        self.remove_schedule = f(
            "DELETE FROM {s}.schedules WHERE name = %s RETURNING 1"
        )
        self.all_schedules = f(
            f"SELECT {SCHEDULE_FIELDS} FROM {{s}}.schedules ORDER BY name"
        )
        # Locked in name order, so that firers never deadlock; a second firer
        # waits, then sees the advanced next_slot and skips the row.
        self.due_schedules = f(
            f"SELECT {SCHEDULE_FIELDS} FROM {{s}}.schedules WHERE next_slot <= %s "
            f"ORDER BY name FOR UPDATE"
        )
        self.advance_schedule = f(
            "UPDATE {s}.schedules SET anchor = %s, next_slot = %s, last_slot = %s, "
            "updated_at = %s WHERE name = %s"
        )
        self.next_slot = f("SELECT min(next_slot) FROM {s}.schedules")

    def format(self, text: str) -> bytes:
        """Fill in the schema name and the NOTIFY channel."""
        # bytes: psycopg takes a query built at run time in that form.
        return text.replace("{s}", self._s).replace("{channel}", self._channel).encode()
