"""The layout of a jobkit SQLite file and the statements that read and change it.

The store (:mod:`.store`) decides when each statement runs and in which
transaction; this module holds what the file looks like: the tables,
indexes and triggers, the migrations between versions, and the SQL of each
step of a job's life, with the decoding of a row into a :class:`Job`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from ...core import job as _job
from ...core.job import EventKind, Job, JobState, Outcome
from ..protocol import check_outcomes
from . import schedules as _sqlite_schedules

SCHEMA_VERSION: Final = 4
"""The layout this jobkit writes, kept in ``PRAGMA user_version``.

Version 2 added the ``schedules`` table; version 3 the ``jobs.retry_delay``
column and the ``purged`` table (the totals purges fold deleted events into),
and lets ``jobs.max_attempts`` be 0: not decided until the first claim.
Version 4 keeps ``counts`` up to the ``counted`` event instead of in every
transition's trigger, and lets a transition's statement number its event.
Opening an older file upgrades it in place (see ``MIGRATIONS``); no row is
dropped or rewritten.
"""

APPLICATION_ID: Final = 0x4A4F424B
"""``PRAGMA application_id`` of a jobkit database: the ASCII bytes ``JOBK``."""

PAGE_SIZE: Final = 2048
"""The page size of a new jobkit file, in bytes (SQLite's default is 4096).

A commit writes every page it changed, whole, to the write-ahead log, and a
checkpoint writes the log to disk; a transition changes a few rows of a few
dozen bytes each, one per page, so half-size pages halve the bytes behind a
commit. Measured against 4096: single enqueues, single claims and a 1-slot
worker ran about a fifth faster, a 10-slot worker and ``enqueue_many``
about a tenth. Rows up to about 2,000 bytes still fit a page. A file keeps
the page size it was created with.
"""

# Every row and index page a transaction touches is one more page written to
# the write-ahead log, and that, more than anything else, sets the cost of a
# transaction. So the schema keeps exactly one index per query that must not
# scan (claim, lease reaping, dead letters, unique keys) and no more:
#
# - A job's events form a chain (``jobs.last_seq`` -> ``events.prev``) instead
#   of an index on ``events.job_id``: reading one job's history follows the
#   chain by primary key, and writing an event touches no index.
# - The next due time is found by skipping through ``jobs_claim`` one priority
#   at a time, instead of from an index of its own; claims read each priority
#   up to its first job not yet due, so jobs waiting for later are not read.
# - Rows are never deleted, so ``INTEGER PRIMARY KEY`` alone never reuses an
#   id or a sequence number (AUTOINCREMENT would write one more page per
#   transaction). Whatever deletes rows one day must keep the newest of each
#   table, or move to AUTOINCREMENT in a new schema version.
# Expressions evaluated for every row written (the CHECK, partial index
# conditions, trigger bodies) avoid ``x IN (...)`` lists: SQLite builds a
# temporary table for each evaluation, several microseconds per row.
# What purges folded the deleted events into (PurgeTotals.tallies), plus the
# purge version in the row ('', '', 'version', 0): no task has an empty name.
PURGED: Final = """
    CREATE TABLE purged (
        task   TEXT    NOT NULL,
        queue  TEXT    NOT NULL,
        series TEXT    NOT NULL,
        key    INTEGER NOT NULL,
        n      INTEGER NOT NULL,
        total  REAL    NOT NULL,
        PRIMARY KEY (task, queue, series, key)
    ) WITHOUT ROWID
"""

# Every transition is one more event, and every event one more row on the
# last page of ``events``; the counts per queue and state are not written per
# transition (that was one more page per transaction), but folded from the
# events now and then: ``counts`` holds them up to the event ``counted.seq``,
# and what came after is added up when read (see count_delta).
COUNTED: Final = "CREATE TABLE counted (seq INTEGER NOT NULL)"

TRIGGERS: Final = (
    # INSERT gives a new job the sequence number its first event will have,
    # which spares rewriting the row; a row inserted some other way gets its
    # chain head afterwards. Inside a trigger, last_insert_rowid() is the
    # event just inserted.
    """
    CREATE TRIGGER jobs_enqueued AFTER INSERT ON jobs BEGIN
        INSERT INTO events (seq, job_id, kind, at, attempt)
            VALUES (NEW.last_seq, NEW.id, NEW.event, NEW.created_at, NEW.attempts);
        UPDATE jobs SET last_seq = last_insert_rowid()
            WHERE id = NEW.id AND NEW.last_seq IS NULL;
    END
    """,
    # jobkit's own transitions set last_seq to the number of the event they
    # make (NEXT_SEQ), sparing the trigger a second write of the row; an
    # UPDATE of ``event`` that leaves last_seq alone still gets its event
    # and chain head. A released attempt gives its number back, but its
    # event names it.
    """
    CREATE TRIGGER jobs_transition AFTER UPDATE OF event ON jobs BEGIN
        INSERT INTO events (seq, job_id, kind, at, attempt, error, prev) VALUES (
            nullif(NEW.last_seq, OLD.last_seq), NEW.id, NEW.event, NEW.updated_at,
            CASE NEW.event WHEN 'released' THEN OLD.attempts ELSE NEW.attempts END,
            CASE NEW.event WHEN 'retried' THEN NEW.last_error
                WHEN 'expired' THEN NEW.last_error WHEN 'dead' THEN NEW.last_error END,
            OLD.last_seq
        );
        UPDATE jobs SET last_seq = last_insert_rowid()
            WHERE id = NEW.id AND NEW.last_seq IS OLD.last_seq;
    END
    """,
)

SCHEMA: Final = (
    """
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,
        task         TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        payload      TEXT    NOT NULL,
        state        TEXT    NOT NULL CHECK (
                         state = 'queued' OR state = 'running' OR state = 'succeeded'
                         OR state = 'dead' OR state = 'cancelled'),
        attempts     INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        priority     INTEGER NOT NULL,
        run_at       REAL    NOT NULL,
        created_at   REAL    NOT NULL,
        updated_at   REAL    NOT NULL,
        lease_until  REAL,
        unique_key   TEXT,
        last_error   TEXT,
        result       TEXT,
        event        TEXT    NOT NULL,
        last_seq     INTEGER,
        retry_delay  REAL
    )
    """,
    # ``jobs.event`` names the transition that made the row's current version;
    # writing it is what makes the trigger jobs_transition record the event,
    # so a transition and its event share one statement and one transaction.
    """
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        job_id  INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        at      REAL    NOT NULL,
        attempt INTEGER NOT NULL,
        error   TEXT,
        prev    INTEGER
    )
    """,
    """
    CREATE TABLE counts (
        queue TEXT    NOT NULL,
        state TEXT    NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID
    """,
    # Claim order within one queue; the rowid (the job id) is the last key.
    """
    CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at)
        WHERE state = 'queued'
    """,
    "CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running'",
    "CREATE INDEX jobs_dead ON jobs (queue) WHERE state = 'dead'",
    """
    CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
        WHERE unique_key IS NOT NULL AND (state = 'queued' OR state = 'running')
    """,
    *TRIGGERS,
    *_sqlite_schedules.TABLES,
    PURGED,
    COUNTED,
    "INSERT INTO counted (seq) VALUES (0)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# The statements that take a file from version N to N + 1, keyed by N. Each
# step only adds tables and columns, or replaces triggers: an older jobkit's
# rows stay exactly as they were. Version 3's counts are exact, so they are
# counted up to the newest event.
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: _sqlite_schedules.TABLES,
    2: ("ALTER TABLE jobs ADD COLUMN retry_delay REAL", PURGED),
    3: (
        "DROP TRIGGER jobs_enqueued",
        "DROP TRIGGER jobs_transition",
        *TRIGGERS,
        COUNTED,
        "INSERT INTO counted (seq) SELECT coalesce(max(seq), 0) FROM events",
    ),
}

COLUMNS: Final = (
    "id, task, queue, payload, state, attempts, max_attempts, priority, run_at, "
    "created_at, updated_at, lease_until, unique_key, last_error, result, "
    "retry_delay"
)

# One row per execution, so the subquery sees the events of the rows before.
INSERT: Final = (
    "INSERT INTO jobs (task, queue, payload, state, attempts, max_attempts, "
    "priority, run_at, created_at, updated_at, unique_key, event, last_seq) "
    "VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?6, ?7, ?7, ?8, 'enqueued', "
    "(SELECT coalesce(max(seq), 0) + 1 FROM events))"
)

# The number the event of the row being changed will have, for statements
# that change one row: in an UPDATE of several rows it would be worked out
# once, for all of them, so those leave the numbering to the trigger.
NEXT_SEQ: Final = "last_seq = (SELECT coalesce(max(seq), 0) + 1 FROM events)"

HOLDER: Final = (
    "SELECT id FROM jobs INDEXED BY jobs_unique "
    "WHERE unique_key = ? AND (state = 'queued' OR state = 'running')"
)

START: Final = (
    "UPDATE jobs SET state = 'running', event = 'started', "
    "attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE id "
)
# START for a claim of one job.
START_ONE: Final = START.replace("updated_at = ?", f"updated_at = ?, {NEXT_SEQ}")


def due(tasks: int) -> str:
    # Due jobs of one queue and priority in claim order, read straight off
    # ``jobs_claim`` from its first entry to the first not yet due: no sort,
    # finished jobs are not in the index at all, and jobs waiting for later
    # (retries in backoff, jobs scheduled ahead) are not read. A task filter
    # is checked row by row along the index: due jobs of other tasks ahead
    # in claim order are stepped over, each claim.
    only = f"AND task IN ({', '.join('?' * tasks)}) " if tasks else ""
    return (
        "FROM jobs INDEXED BY jobs_claim WHERE state = 'queued' AND queue = ? "
        f"AND priority = ? AND run_at <= ? {only}ORDER BY run_at, id LIMIT ?"
    )


DUE: Final = due(0)

# The claim from one queue and priority, the common case, as one constant
# statement; and of one job.
CLAIM_ONE: Final = f"{START} IN (SELECT id {DUE}) RETURNING {COLUMNS}"
CLAIM_FIRST: Final = f"{START_ONE} IN (SELECT id {DUE}) RETURNING {COLUMNS}"

# The priorities of queue ?1's QUEUED jobs, highest first (and a last NULL):
# a seek each in ``jobs_claim``.
_LEVELS_OF = """
    WITH RECURSIVE levels (priority) AS (
        SELECT max(priority) FROM jobs WHERE state = 'queued' AND queue = ?1
        UNION ALL
        SELECT (
            SELECT max(priority) FROM jobs
            WHERE state = 'queued' AND queue = ?1 AND priority < levels.priority
        ) FROM levels WHERE levels.priority IS NOT NULL
    )
"""

LEVELS: Final = f"{_LEVELS_OF} SELECT priority FROM levels WHERE priority IS NOT NULL"


# The earliest run_at in one queue: a seek per distinct priority in
# ``jobs_claim`` (highest first), then the first run_at under each (of one of
# the tasks ?2, ?3, ..., read along the index until one is found).
def next_run_at(tasks: int) -> str:
    first = "SELECT min(run_at) FROM jobs"
    if tasks:
        marks = ", ".join(f"?{i}" for i in range(2, tasks + 2))
        first = "SELECT run_at FROM jobs INDEXED BY jobs_claim"
        only = f"AND task IN ({marks}) ORDER BY run_at LIMIT 1"
    else:
        only = ""
    return f"""{_LEVELS_OF}
    SELECT min((
        {first}
        WHERE state = 'queued' AND queue = ?1 AND priority = levels.priority {only}
    )) FROM levels WHERE levels.priority IS NOT NULL
"""


NEXT_RUN_AT: Final = next_run_at(0)

# Finished jobs a purge may delete: final states never change, so the list
# stays true until the rows are gone. The newest job always stays: its id is
# where the next one's is counted from; so does the job of the newest event,
# whose sequence number is where the next event's is counted from (a finished
# job gets no new events, so no other candidate's event becomes the newest).
PURGEABLE: Final = """
    SELECT id FROM jobs
    WHERE (state = 'succeeded' OR state = 'cancelled') AND updated_at < ?
        AND id < (SELECT max(id) FROM jobs)
        AND id IS NOT (SELECT job_id FROM events ORDER BY seq DESC LIMIT 1)
    ORDER BY id
"""

# Jobs deleted per write transaction, so that a long purge holds the write
# lock for short stretches and workers go on between them.
PURGE_BATCH: Final = 500

# One job's events, newest first along the chain, down to ``after``.
JOB_EVENTS: Final = """
    WITH RECURSIVE chain (seq) AS (
        SELECT last_seq FROM jobs WHERE id = ?1
        UNION ALL
        SELECT events.prev FROM events JOIN chain ON events.seq = chain.seq
        WHERE events.prev > ?2
    )
    SELECT events.seq, job_id, kind, at, attempt, error
    FROM chain JOIN events ON events.seq = chain.seq
    WHERE events.seq > ?2 ORDER BY events.seq LIMIT ?3
"""

SUCCEED: Final = (
    "UPDATE jobs SET state = 'succeeded', event = 'succeeded', result = ?, "
    f"lease_until = NULL, updated_at = ?, {NEXT_SEQ} "
    "WHERE id = ? AND state = 'running' AND attempts = ?"
)

RELEASE: Final = (
    "UPDATE jobs SET state = 'queued', event = 'released', "
    "attempts = attempts - 1, run_at = ?2, lease_until = NULL, updated_at = ?2, "
    f"{NEXT_SEQ} WHERE id = ?3 AND state = 'running' AND attempts = ?4"
)

# ?1 retry_at (NULL for a permanent error), ?2 error, ?3 now, ?4 id, ?5 attempt,
# ?6 the delay that gave retry_at.
FAIL: Final = f"""
    UPDATE jobs SET {NEXT_SEQ},
        state = CASE WHEN ?1 IS NULL OR attempts >= max_attempts
                     THEN 'dead' ELSE 'queued' END,
        event = CASE WHEN ?1 IS NULL OR attempts >= max_attempts
                     THEN 'dead' ELSE 'retried' END,
        run_at = CASE WHEN ?1 IS NULL OR attempts >= max_attempts
                      THEN run_at ELSE ?1 END,
        retry_delay = CASE WHEN ?1 IS NULL OR attempts >= max_attempts
                      THEN retry_delay ELSE ?6 END,
        last_error = ?2, lease_until = NULL, updated_at = ?3
    WHERE id = ?4 AND state = 'running' AND attempts = ?5
"""

RENEW: Final = (
    "UPDATE jobs SET lease_until = ?, updated_at = ? "
    "WHERE id = ? AND state = 'running' AND attempts = ?"
)

EXPIRE: Final = f"""
    UPDATE jobs SET
        state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
        event = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'expired' END,
        run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE ?1 END,
        last_error = ?2, lease_until = NULL, updated_at = ?1
    WHERE state = 'running' AND lease_until < ?1
    RETURNING {COLUMNS}
"""

REWRITE: Final = (
    "UPDATE jobs SET state = ?, event = ?, attempts = ?, run_at = ?, "
    f"lease_until = ?, last_error = ?, updated_at = ?, retry_delay = ?, {NEXT_SEQ} "
    "WHERE id = ?"
)

# What each kind of event moves a job to and, unless it is the job's first
# event, from: the events after ``counted.seq`` as changes to ``counts``,
# read in one pass (events first, each job by its key).
_MOVES: Final = (
    ("enqueued", "queued", None),
    ("started", "running", "queued"),
    ("succeeded", "succeeded", "running"),
    ("retried", "queued", "running"),
    ("expired", "queued", "running"),
    ("dead", "dead", "running"),
    ("released", "queued", "running"),
    ("requeued", "queued", "dead"),
    ("cancelled", "cancelled", "queued"),
    ("discarded", "cancelled", "dead"),
)
_DEST: Final = " ".join(f"WHEN '{kind}' THEN '{to}'" for kind, to, _ in _MOVES)
_SOURCE: Final = " ".join(
    f"WHEN '{kind}' THEN '{source}'" for kind, _, source in _MOVES if source
)


def count_delta(after: str, upto: str | None = None) -> str:
    """The CTEs whose ``delta`` is the events after ``after`` as count changes."""
    until = "" if upto is None else f" AND events.seq <= {upto}"
    return f"""
    moved (queue, dest, source) AS MATERIALIZED (
        SELECT jobs.queue, CASE events.kind {_DEST} END,
               CASE WHEN events.prev IS NOT NULL THEN
                   CASE events.kind {_SOURCE} END END
        FROM events JOIN jobs ON jobs.id = events.job_id
        WHERE events.seq > {after}{until}
    ),
    delta (queue, state, n) AS (
        SELECT queue, dest, 1 FROM moved
        UNION ALL
        SELECT queue, source, -1 FROM moved WHERE source IS NOT NULL
    )
"""


# The counts as of now: the folded ones plus the events since.
COUNTS: Final = f"""
    WITH {count_delta("(SELECT seq FROM counted)")}
    SELECT queue, state, sum(n) FROM (
        SELECT queue, state, n FROM counts UNION ALL SELECT queue, state, n FROM delta
    ) GROUP BY queue, state HAVING sum(n) > 0
"""

# A fold adds up the events after ``counted.seq`` (?1) up to ?2 (see
# store._fold), then adds that to ``counts`` and moves ``counted`` on.
FOLD_DELTA: Final = f"""
    WITH {count_delta("?1", "?2")}
    SELECT queue, state, sum(n) FROM delta GROUP BY queue, state
"""
FOLD_ADD: Final = (
    "INSERT INTO counts (queue, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n"
)
FOLD_RANGE: Final = (
    "SELECT seq, (SELECT coalesce(max(seq), counted.seq) FROM events) FROM counted"
)

# The queues with QUEUED jobs, in name order: a seek per queue along
# ``jobs_claim``.
QUEUE_NAMES: Final = """
    WITH RECURSIVE names (queue) AS (
        SELECT min(queue) FROM jobs WHERE state = 'queued'
        UNION ALL
        SELECT (
            SELECT min(queue) FROM jobs
            WHERE state = 'queued' AND queue > names.queue
        ) FROM names WHERE names.queue IS NOT NULL
    )
    SELECT queue FROM names WHERE queue IS NOT NULL
"""

# Compact, and made once: json.dumps builds an encoder per call otherwise.
encode: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode

# json.loads checks its argument's type and builds nothing else; the columns
# read back are always text, so the decoder is called directly.
decode: Final = json.JSONDecoder().decode

STATES: Final = {state.value: state for state in JobState}
# The partial index that holds every job in a state, where there is one.
STATE_INDEX: Final = {
    JobState.QUEUED: "jobs_claim",
    JobState.RUNNING: "jobs_lease",
    JobState.DEAD: "jobs_dead",
}
KINDS: Final = {kind.value: kind for kind in EventKind}

Row = tuple[Any, ...]


def to_job(row: Row) -> Job:
    # Positional, in the order of Job's fields: this runs for every row read.
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
    # RETURNING hands back a whole REAL as an integer; times are floats.
    # The values are a stored job's, checked when it was written.
    return _job._make_job(
        job_id,
        task,
        queue,
        decode(payload),
        STATES[state],
        attempts,
        max_attempts or None,  # 0: the task's default, not decided yet
        priority,
        float(run_at),
        float(created_at),
        float(updated_at),
        None if lease_until is None else float(lease_until),
        unique_key,
        last_error,
        None if result is None else decode(result),
        None if retry_delay is None else float(retry_delay),
    )


def settle_statements(
    outcomes: Sequence[Outcome], now: float
) -> list[tuple[int, str, tuple[Any, ...]]]:
    """The UPDATE that applies each outcome, after checking them all."""
    check_outcomes(outcomes)
    statements: list[tuple[int, str, tuple[Any, ...]]] = []
    for outcome in outcomes:
        job_id, attempt = outcome.job_id, outcome.attempt
        if isinstance(outcome, _job.Success):
            result = (
                None
                if outcome.result is None
                else _job.dump_json(outcome.result, "result")
            )
            statements.append((job_id, SUCCEED, (result, now, job_id, attempt)))
        elif isinstance(outcome, _job.Release):
            statements.append((job_id, RELEASE, (None, now, job_id, attempt)))
        elif isinstance(outcome, _job.Failure):
            params = (
                outcome.retry_at, outcome.error, now, job_id, attempt,
                outcome.delay,
            )  # fmt: skip
            statements.append((job_id, FAIL, params))
        else:
            raise TypeError(
                f"settle() takes Success, Failure or Release records, got {outcome!r}"
            )
    return statements
