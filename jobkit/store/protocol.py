"""The storage contract every job store implements.

A store keeps jobs and their events and applies the transitions of
:mod:`jobkit.core.job` atomically. It never reads a clock: every call that changes
something takes ``now`` from its caller, so the same store runs on wall time in
production and on virtual time in tests and simulations.

The contract assumes nothing about where the store lives: every primitive is a
coroutine, and the ones a busy worker calls often (``claim``, ``settle``,
``renew``) take or return batches so that a remote store (PostgreSQL) pays one
round trip for many jobs.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import attrs

from .. import _html
from .._checks import INT64_MAX, INT64_MIN
from ..core.job import (
    Event,
    Job,
    JobState,
    NewJob,
    Outcome,
    check_job_fields,
    check_json,
)
from ..core.schedule import FireResult, Schedule


class JobNotFound(LookupError):
    """No job has the given id.

    Example::

        >>> raise JobNotFound(42)
        Traceback (most recent call last):
        ...
        jobkit.JobNotFound: no job with id 42
    """

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class StoreError(Exception):
    """A store could not carry out a call; the call changed nothing.

    Example::

        >>> isinstance(StoreBusy("jobs.db stayed busy"), StoreError)
        True
    """


class StoreBusy(StoreError):
    """Other connections held the store's write lock for longer than allowed.

    Stores retry a busy database with jittered backoff and raise this only
    once their deadline has passed, so a caller never sees a bare locking
    error from the database driver.

    Example::

        >>> raise StoreBusy("jobs.db stayed busy for 30 s")
        Traceback (most recent call last):
        ...
        jobkit.StoreBusy: jobs.db stayed busy for 30 s
    """


class IncompatibleStore(StoreError):
    """The store's file or database belongs to something else, or to a newer jobkit.

    The store refuses it without changing a byte.

    Example::

        >>> raise IncompatibleStore("jobs.db is not a jobkit database")
        Traceback (most recent call last):
        ...
        jobkit.IncompatibleStore: jobs.db is not a jobkit database
    """


class StoreDamaged(IncompatibleStore):
    """The store's data is damaged: no retry can help, so nobody retries.

    A worker stops with this error instead of retrying it, so that a person
    restores the database from a backup.

    Example::

        >>> raise StoreDamaged("jobs.db is damaged (database disk image is malformed)")
        Traceback (most recent call last):
        ...
        jobkit.StoreDamaged: jobs.db is damaged (database disk image is malformed)
    """


@attrs.frozen
class QueueCounts:
    """How many jobs are in each state, per queue.

    Example::

        >>> c = QueueCounts({("default", JobState.QUEUED): 3})
        >>> c.get("default", JobState.QUEUED), c.get("default", JobState.DEAD)
        (3, 0)
        >>> c.total(JobState.QUEUED)
        3
    """

    counts: dict[tuple[str, JobState], int]

    def get(self, queue: str, state: JobState) -> int:
        """Return the number of jobs of ``queue`` in ``state``."""
        return self.counts.get((queue, state), 0)

    def total(self, state: JobState) -> int:
        """Return the number of jobs in ``state`` across all queues."""
        return sum(n for (_, s), n in self.counts.items() if s is state)

    @property
    def queues(self) -> list[str]:
        """The queue names that have at least one job, sorted."""
        return sorted({q for q, _ in self.counts})

    def _repr_html_(self) -> str:
        rows = [[q, *(self.get(q, s) for s in JobState)] for q in self.queues]
        if len(self.queues) > 1:
            rows.append(["all queues", *(self.total(s) for s in JobState)])
        head = ["queue", *(s.value for s in JobState)]
        return _html.table(rows, head=head, title="jobs per queue and state")


TallyKey: TypeAlias = tuple[str, str, str, int]
"""``(task, queue, series, key)``: one line of :attr:`PurgeTotals.tallies`."""


@attrs.frozen
class PurgeTotals:
    """What the events of purged jobs added up to, kept so metrics never go back.

    :meth:`Store.purge` folds the events of the jobs it deletes into these
    totals in the same transaction (with :func:`jobkit.store.tallies.tally_events`),
    and :meth:`Store.purge_totals` returns them; :class:`~jobkit.Metrics`
    starts from them and folds the remaining log on top. A store keeps the
    tallies as opaque rows, adding ``(n, total)`` pairwise per key, and
    increases ``version`` with every transaction that deletes jobs, so that a
    reader can tell whether the log it folded was purged meanwhile.

    Example::

        >>> PurgeTotals().version, dict(PurgeTotals().tallies)
        (0, {})
    """

    version: int = 0
    tallies: Mapping[TallyKey, tuple[int, float]] = attrs.field(factory=dict)


def add_tallies(
    into: dict[TallyKey, tuple[int, float]],
    more: Mapping[TallyKey, tuple[int, float]],
) -> None:
    """Add ``more`` into ``into``, key by key."""
    for key, (n, total) in more.items():
        old_n, old_total = into.get(key, (0, 0.0))
        into[key] = (old_n + n, old_total + total)


@runtime_checkable
class Store(Protocol):
    """The primitives a job store provides; :class:`MemoryStore` and
    :class:`SQLiteStore` implement them and pass one shared contract suite.

    Example::

        >>> import trio
        >>> from jobkit import MemoryStore, NewJob
        >>> async def main():
        ...     store = MemoryStore()
        ...     [job_id] = await store.enqueue([NewJob(task="t")], now=0.0)
        ...     [job] = await store.claim(queues=None, limit=1, now=0.0, lease=30.0)
        ...     return job.id == job_id, job.state.value
        >>> trio.run(main)
        (True, 'running')
    """

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        """Store new QUEUED jobs atomically and return their ids, in order.

        A job whose ``unique_key`` is held by an active (QUEUED or RUNNING)
        job is not stored; the id of the job holding the key is returned.
        """
        ...

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
        """Start up to ``limit`` due jobs, in claim order, and return them RUNNING.

        Due means QUEUED with ``run_at <= now``; ``queues=None`` means any
        queue and ``tasks=None`` any task, while a list of task names
        leaves jobs of other tasks QUEUED (a worker claims only what it can
        run). A claimed job whose ``max_attempts`` is None gets
        ``max_attempts[job.task]``, or 1 if that names no such task, stored
        for good (:func:`jobkit.core.job.start`). No job is handed to two
        callers, across processes too.
        """
        ...

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        """Apply each attempt's outcome; return for each whether it was applied.

        An outcome for an attempt that is no longer current (the lease expired
        and the job moved on, or the finished job was purged since) is
        ignored and reported as ``False``. An id no job ever had raises
        :class:`JobNotFound`, and then nothing of the batch is applied.
        """
        ...

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        """Extend the leases of running ``(job_id, attempt)`` pairs to ``now + lease``.

        Returns for each whether the attempt still owned the job (``False``
        for a job purged since). An id no job ever had raises
        :class:`JobNotFound`, and then no lease is extended.
        """
        ...

    async def reap(self, *, now: float) -> list[Job]:
        """Recover every RUNNING job whose lease ended before ``now``; return them."""
        ...

    async def get(self, job_id: int) -> Job:
        """Return the job with ``job_id``, or raise :class:`JobNotFound`."""
        ...

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
        """Return jobs filtered by state, queue and task, oldest id first.

        ``newest_first`` reverses the order. ``after_id`` and ``before_id``
        keep only ids above, respectively below, the given one: a keyset
        cursor, so a page costs the same however deep it is (pass the last
        id of a page to get the next one).
        """
        ...

    async def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a QUEUED job; raise ``TransitionError`` otherwise."""
        ...

    async def requeue(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job back to QUEUED with its attempts reset."""
        ...

    async def discard(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job to CANCELLED for good."""
        ...

    async def counts(self) -> QueueCounts:
        """Return the number of jobs per queue and state."""
        ...

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        """Return the earliest ``run_at`` of a QUEUED job, or None if there is none.

        ``queues`` and ``tasks`` filter as in :meth:`claim`.
        """
        ...

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        """Return the number of QUEUED jobs per ``(queue, task)``.

        Shows jobs that wait for a worker that knows their task.
        """
        ...

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        """Return ``(sequence, event)`` pairs with ``sequence > after``, oldest first.

        Sequences increase with every recorded event, so a reader can follow
        the log by passing the last sequence it saw. The events of one job
        are in the order of its transitions; events that one call records
        for several jobs (a batch claim, a reap) may be in any order among
        themselves.
        """
        ...

    async def purge(self, *, before: float) -> int:
        """Delete finished jobs last changed before ``before``, with their events.

        Only SUCCEEDED and CANCELLED jobs go; DEAD jobs wait for a person
        (discard one to make it purgeable), QUEUED and RUNNING ones are
        untouched. The job with the highest id and the job of the event with
        the highest sequence are always kept (with all their events), so
        neither number is ever handed out again. The deleted jobs' events are
        folded into :meth:`purge_totals` in the transaction that deletes them.
        Returns how many jobs were deleted.
        """
        ...

    async def purge_totals(self) -> PurgeTotals:
        """Return the totals that purges folded the deleted events into."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources; the data stays."""
        ...


__all__ = [
    "IncompatibleStore",
    "JobNotFound",
    "PurgeTotals",
    "QueueCounts",
    "Store",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
]


def check_limit(limit: int | None, what: str = "limit") -> None:
    """Refuse a limit that is not a positive whole number (None means no limit)."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{what} must be a positive integer or None, got {limit!r}")


def check_time(value: float, what: str) -> None:
    """Refuse a time that is not a finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a time in seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite time, got {value!r}")


def check_list_cursor(after_id: int | None, before_id: int | None) -> None:
    """Refuse a list cursor that is not a whole number."""
    for name, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int)
        ):
            raise TypeError(f"{name} must be a job id or None, got {value!r}")


def check_tasks(tasks: Sequence[str] | None) -> list[str] | None:
    """Return the task names, deduplicated; refuse a bare string."""
    if tasks is None:
        return None
    if isinstance(tasks, str):
        raise TypeError(f"tasks must be a list of names, not the string {tasks!r}")
    return list(dict.fromkeys(tasks))


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    """Refuse a batch that reports on the same job twice."""
    seen: set[int] = set()
    for outcome in outcomes:
        if outcome.job_id in seen:
            raise ValueError(f"settle() got two outcomes for job {outcome.job_id}")
        seen.add(outcome.job_id)


def check_new_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse new jobs with settings no store can honour."""
    for spec in jobs:
        if type(spec) is NewJob and _plainly_valid(spec):
            continue
        if not isinstance(spec, NewJob):
            raise TypeError(f"enqueue() takes NewJob records, got {spec!r}")
        check_job_fields(
            task=spec.task,
            queue=spec.queue,
            payload=spec.payload,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
        )
        if spec.run_at is not None and not math.isfinite(spec.run_at):
            raise ValueError(f"run_at must be a finite time, got {spec.run_at!r}")


def _plainly_valid(spec: NewJob) -> bool:
    # What check_job_fields accepts, for the usual exact types, in one
    # expression: every enqueue pays for this check. Anything else (a
    # subclass, a refusal to word) takes the long way.
    task, queue, priority, limit, run_at = (
        spec.task, spec.queue, spec.priority, spec.max_attempts, spec.run_at
    )  # fmt: skip
    if not (
        type(task) is str
        and task
        and type(queue) is str
        and queue
        and type(priority) is int
        and INT64_MIN <= priority <= INT64_MAX
        and (limit is None or (type(limit) is int and 1 <= limit <= INT64_MAX))
        and (run_at is None or (type(run_at) is float and math.isfinite(run_at)))
        and type(spec.payload) is dict
    ):
        return False
    check_json(spec.payload)
    return True


# -- the schedule part of the contract ---------------------------------------------


@runtime_checkable
class ScheduleStore(Protocol):
    """The schedule primitives a store adds to :class:`Store` to keep schedules.

    A separate protocol, so that a store (or a wrapper around one) that
    implements only the job primitives stays a :class:`Store`; a worker fires
    schedules when its store is also a ``ScheduleStore``. :class:`MemoryStore`
    and :class:`SQLiteStore` implement both.

    Exactly-once per slot rests on :meth:`fire_schedules`: it enqueues the
    jobs of the due slots and saves the advanced schedules in one atomic
    step, so two workers (or processes) firing at once cannot both enqueue a
    slot. Each job also carries the unique key ``schedule:<name>:<slot>``.

    Example::

        >>> import trio
        >>> from jobkit import MemoryStore, Schedule
        >>> async def main():
        ...     store = MemoryStore()
        ...     await store.put_schedule(
        ...         Schedule.create("tick", "t", every=10, start=0.0, now=0.0))
        ...     fired = await store.fire_schedules(now=25.0)
        ...     return [f.slot for f in fired.firings], fired.next_slot
        >>> trio.run(main)
        ([20.0], 30.0)
    """

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store ``schedule`` under its name and return the stored version.

        If a schedule of that name exists with the same
        :attr:`~Schedule.definition`, it is kept as it is (its next slot
        included) and returned; otherwise ``schedule`` replaces it.
        """
        ...

    async def schedules(self) -> builtins.list[Schedule]:
        """Return every stored schedule, by name."""
        ...

    async def remove_schedule(self, name: str) -> bool:
        """Delete the schedule ``name``; return whether there was one.

        Jobs it already enqueued stay.
        """
        ...

    async def fire_schedules(self, *, now: float) -> FireResult:
        """Enqueue the due slots of every schedule and advance them, atomically.

        Each schedule whose ``next_slot <= now`` goes through
        :meth:`Schedule.due` (its misfire policy included); the jobs
        and the advanced schedules are written together, or not at all.
        """
        ...


__all__ += ["ScheduleStore"]


# -- an optional shortcut ----------------------------------------------------------


@runtime_checkable
class SettleClaimStore(Protocol):
    """A store that settles finished attempts and claims the next jobs in one step.

    A worker whose slots are all busy hands its finished attempts' outcomes
    and the claim for the slots they free to one call, so that a job costs
    one transaction instead of two. The result must be exactly that of
    :meth:`Store.settle` followed by :meth:`Store.claim` at the same ``now``,
    applied atomically: if the settle part raises, nothing is applied and
    nothing is claimed. A worker uses it when its store has it, and makes the
    two calls otherwise. :class:`MemoryStore`, :class:`SQLiteStore` and
    ``PostgresStore`` implement it.

    Example::

        >>> import trio
        >>> from jobkit import MemoryStore, NewJob
        >>> from jobkit.core.job import Success
        >>> async def main():
        ...     store = MemoryStore()
        ...     await store.enqueue([NewJob(task="t"), NewJob(task="t")], now=0.0)
        ...     [first] = await store.claim(queues=None, limit=1, now=0.0, lease=30)
        ...     applied, [second] = await store.settle_and_claim(
        ...         [Success(first.id, 1)], now=1.0, queues=None, limit=1, lease=30)
        ...     return applied, second.id
        >>> trio.run(main)
        ([True], 2)
    """

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
        """Apply ``outcomes``, then start up to ``limit`` due jobs; return both."""
        ...


__all__ += ["SettleClaimStore"]
