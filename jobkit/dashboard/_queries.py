"""The dashboard's reads that could grow with the store, each kept bounded.

- a page of jobs: the store's keyset cursor, or, for a filter no index
  serves, a walk over a bounded range of ids (:func:`list_jobs`);
- how long each queue's oldest due job has waited: a seek for the earliest
  due job (:func:`queue_rows`);
- the tasks left waiting: only in queues whose oldest due job is late
  (:func:`stuck_tasks`);
- the event log, followed incrementally (:class:`Activity`) from a position
  found by bisection, so a dashboard opened on a long log does not read it.

The pages' other reads are small by nature: one job and its event chain,
the counts the store keeps current, at most a page of leases.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Sequence

import attrs

from .._job import Event, EventKind, Job, JobState
from .._sqlite import SQLiteStore
from .._store import QueueCounts, Store

__all__ = [
    "Activity",
    "JobPage",
    "QueueRow",
    "Stuck",
    "list_jobs",
    "queue_rows",
    "stuck_tasks",
]

PAGE_SIZES = (20, 50, 100)


@attrs.frozen
class JobPage:
    """One page of a job listing, and the cursor of the next one (if any)."""

    jobs: builtins.list[Job]
    next_cursor: int | None
    searched_to: int | None = None
    """Set when the page stopped at its budget of ids, not because it was full."""


# States every store keeps an index of; listing one costs what its jobs do.
_INDEXED_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.DEAD})
# A filter no index serves looks at the ids a window at a time, and at no
# more than this many ids per page.
_WINDOW = 10_000
_WINDOWS = 10


async def list_jobs(
    store: Store,
    *,
    state: JobState | None = None,
    queue: str | None = None,
    task: str | None = None,
    newest_first: bool = True,
    cursor: int | None = None,
    limit: int = 50,
    window: int = _WINDOW,
    windows: int = _WINDOWS,
) -> JobPage:
    """Return a page of jobs, newest or oldest first, after the id ``cursor``.

    ``cursor`` is the id the previous page ended at (exclusive). Every page
    costs a bounded read: a seek on the primary key when nothing is
    filtered, the state's own index for queued, running and dead jobs, and
    otherwise a walk over at most ``windows`` ranges of ``window`` ids.
    """

    async def fetch(after: int | None, before: int | None, n: int) -> list[Job]:
        return await store.list(
            state=state,
            queue=queue,
            task=task,
            newest_first=newest_first,
            after_id=after,
            before_id=before,
            limit=n,
        )

    if (state is None and queue is None and task is None) or state in _INDEXED_STATES:
        jobs = await fetch(
            None if newest_first else cursor,
            cursor if newest_first else None,
            limit + 1,
        )
        more = len(jobs) > limit
        return JobPage(jobs[:limit], jobs[limit - 1].id if more else None)
    newest = await store.list(newest_first=True, limit=1)
    if not newest:
        return JobPage([], None)
    top = newest[0].id
    found: builtins.list[Job] = []
    # The open interval of ids the next window covers: (low, high).
    high = (top + 1 if cursor is None else cursor) if newest_first else None
    low = None if newest_first else (0 if cursor is None else cursor)
    for _ in range(windows):
        if newest_first:
            assert high is not None
            low = max(0, high - 1 - window)
        else:
            assert low is not None
            high = low + 1 + window
        found += await fetch(low, high, limit + 1 - len(found))
        if len(found) > limit:
            return JobPage(found[:limit], found[limit - 1].id)
        done = low == 0 if newest_first else high > top
        if done:
            return JobPage(found, None)
        if newest_first:
            high = low + 1
        else:
            low = high - 1
    # The budget ran out before the page filled: the next page goes on
    # from where this one stopped looking.
    edge = high if newest_first else low
    return JobPage(found, edge, searched_to=edge)


@attrs.frozen
class QueueRow:
    """What the overview shows for one queue."""

    name: str
    counts: dict[JobState, int]
    oldest_due: float | None
    """The ``run_at`` of the job that has been due the longest, if one is due."""


async def queue_rows(store: Store, counts: QueueCounts, now: float) -> list[QueueRow]:
    """Per queue: its counts, and since when its longest-waiting due job waits."""
    rows = []
    for name in counts.queues:
        oldest = None
        if counts.get(name, JobState.QUEUED):
            first = await store.next_run_at(queues=[name])
            if first is not None and first <= now:
                oldest = first
        rows.append(
            QueueRow(
                name, {state: counts.get(name, state) for state in JobState}, oldest
            )
        )
    return rows


@attrs.frozen
class Stuck:
    """A task whose due jobs have waited longer than the overview's threshold."""

    task: str
    queue: str
    waiting: int
    oldest_due: float
    registered: bool | None
    """Whether the dashboard's queue has a handler for it; None if unknown."""


async def stuck_tasks(
    store: Store,
    queues: Sequence[QueueRow],
    *,
    now: float,
    threshold: float,
    known_tasks: Sequence[str] | None,
    sample: int = 200,
) -> list[Stuck]:
    """Tasks with due jobs waiting longer than ``threshold`` seconds.

    The store does not know which tasks the running workers serve; a task
    whose jobs wait long while others run is the sign it leaves. Only the
    queues whose longest-waiting due job is that late are looked at (their
    oldest ``sample`` queued jobs): while workers keep up this reads nothing.
    """
    found: dict[tuple[str, str], tuple[int, float]] = {}
    for row in queues:
        if row.oldest_due is None or row.oldest_due > now - threshold:
            continue
        for job in await store.list(
            state=JobState.QUEUED, queue=row.name, limit=sample
        ):
            if job.run_at <= now - threshold:
                n, oldest = found.get((job.task, row.name), (0, job.run_at))
                found[(job.task, row.name)] = (n + 1, min(oldest, job.run_at))
    known = None if known_tasks is None else set(known_tasks)
    return [
        Stuck(task, queue, n, oldest, None if known is None else task in known)
        for (task, queue), (n, oldest) in sorted(found.items())
    ]


async def _first_after(store: Store, after: int) -> tuple[int, Event] | None:
    found = await store.events(after=after, limit=1)
    return found[0] if found else None


async def seq_before(store: Store, t: float) -> int:
    """A sequence number whose events after it are (about) those at or after ``t``.

    Found by probing the log with single-event reads, doubling then
    bisecting: a few dozen reads by primary key, however long the log.
    Events are in time order closely enough for a chart (each process
    stamps its own).
    """
    first = await _first_after(store, 0)
    if first is None or first[1].at >= t:
        return 0
    lo, step = first[0], 1  # every event up to lo is before t
    while True:
        probe = lo + step
        found = await _first_after(store, probe - 1)
        if found is None or found[1].at >= t:
            hi = probe
            break
        lo, step = found[0], step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = await _first_after(store, mid - 1)
        if found is None or found[0] >= hi or found[1].at >= t:
            hi = mid
        else:
            lo = found[0]
    return lo


# Events read per call while following the log.
_BATCH = 5000

# Events per bucket of time and kind, over a range of sequence numbers;
# buckets are floor(at / ?1), negative times included.
_BUCKET_COUNTS = """
    SELECT CAST(at / ?1 AS INTEGER) - (at < 0 AND at / ?1 != CAST(at / ?1 AS INTEGER)),
           kind, count(*), max(at)
    FROM events WHERE seq > ?2 AND seq <= ?3 GROUP BY 1, 2
"""

_FAILED = frozenset({EventKind.RETRIED, EventKind.DEAD, EventKind.EXPIRED})


@attrs.frozen
class Bucket:
    """Attempts that ended within one bucket of time."""

    start: float
    succeeded: int
    failed: int

    @property
    def failure_rate(self) -> float | None:
        """The share of ended attempts that failed; None if none ended."""
        total = self.succeeded + self.failed
        return None if total == 0 else self.failed / total


class Activity:
    """Follows the event log into per-bucket counts of the last ``window`` seconds.

    Each :meth:`update` reads only the events recorded since the last one,
    at most ``max_read`` of them (a dashboard falls behind a very busy queue
    rather than slowing it down), starting the first time from the events of
    the window alone.
    """

    def __init__(
        self, *, window: float = 900.0, bucket: float = 30.0, max_read: int = 100_000
    ) -> None:
        self.window = window
        self.bucket = bucket
        self.max_read = max_read
        self.seq: int | None = None
        self.behind = False
        """True if the last update stopped at ``max_read`` before the log's end."""
        self.last_event_at: float | None = None
        self._counts: dict[int, Counter[EventKind]] = {}

    async def update(self, store: Store, now: float) -> None:
        """Fold in the events since the last update."""
        if self.seq is None:
            self.seq = await seq_before(store, now - self.window)
            # The last event before the window still says when work last
            # happened, should nothing have happened since.
            before = await _first_after(store, self.seq - 1) if self.seq else None
            self.last_event_at = None if before is None else before[1].at
        if isinstance(store, SQLiteStore):
            await self._fold_sqlite(store)
        else:
            await self._fold(store)
        oldest = int((now - self.window) // self.bucket)
        for key in [k for k in self._counts if k < oldest]:
            del self._counts[key]

    async def _fold(self, store: Store) -> None:
        assert self.seq is not None
        read = 0
        while read < self.max_read:
            want = min(_BATCH, self.max_read - read)
            batch = await store.events(after=self.seq, limit=want)
            for seq, event in batch:
                self.seq = seq
                self.last_event_at = event.at
                key = int(event.at // self.bucket)
                self._counts.setdefault(key, Counter())[event.kind] += 1
            read += len(batch)
            if len(batch) < want:
                self.behind = False
                return
        self.behind = bool(await store.events(after=self.seq, limit=1))

    async def _fold_sqlite(self, store: SQLiteStore) -> None:
        # The same counts, added up by SQLite over a range of the primary
        # key: no Python object per event, so a page costs a few
        # milliseconds even while a worker records thousands of events a
        # second. Statements run inline, as all of SQLiteStore's do.
        after = self.seq
        assert after is not None

        def attempt() -> tuple[int, list[tuple[int, str, int, float]]]:
            conn = store._conn
            (last,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM events"
            ).fetchone()
            upto = min(last, after + self.max_read)
            rows = conn.execute(_BUCKET_COUNTS, (self.bucket, after, upto)).fetchall()
            return last, [(int(k), kind, n, float(at)) for k, kind, n, at in rows]

        last, rows = await store._run(attempt)
        upto = min(last, after + self.max_read)
        for key, kind, n, at in rows:
            self._counts.setdefault(key, Counter())[EventKind(kind)] += n
            if self.last_event_at is None or at > self.last_event_at:
                self.last_event_at = at
        self.seq = max(after, upto)
        self.behind = last > upto

    def buckets(self, now: float) -> list[Bucket]:
        """The window's buckets, oldest first, the current (partial) one last."""
        last = int(now // self.bucket)
        first = last - int(self.window // self.bucket) + 1
        out = []
        for key in range(first, last + 1):
            counts = self._counts.get(key, Counter())
            failed = sum(counts[kind] for kind in _FAILED)
            out.append(Bucket(key * self.bucket, counts[EventKind.SUCCEEDED], failed))
        return out
