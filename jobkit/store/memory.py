"""An in-memory job store for tests, notebooks and the simulator."""

from __future__ import annotations

import bisect
import builtins
import heapq
import json
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeAlias

import attrs
import trio

from ..core import job as _job
from ..core import schedule as _schedule
from ..core.job import Event, EventKind, Job, JobState, NewJob, Outcome
from ..core.schedule import FireResult, Firing, Schedule, check_schedule
from .protocol import (
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
from .tallies import tally_events


def _copy(value: _job.JSON, where: str = "payload") -> _job.JSON:
    # Stored data must not change when the caller later mutates its own dict,
    # exactly as with a store that serializes; and what a serializing store
    # refuses (tuples, NaN) is refused here too. The result is what a JSON
    # round trip gives. Plain data is copied directly, which for the small
    # payloads and results of most jobs costs a fraction of encoding and
    # decoding it; anything else takes the round trip itself, which converts
    # what it can (subclasses) and names what it cannot.
    try:
        return _copy_plain(value)
    except _NotPlain:
        return json.loads(_job.dump_json(value, where))


class _NotPlain(Exception):
    pass


# ``json`` refuses ints of very many digits; those take the round trip.
_BIG_INT = 1 << 64


def _copy_plain(value: _job.JSON) -> _job.JSON:
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        if -_BIG_INT < value < _BIG_INT:
            return value
    elif kind is float:
        if value - value == 0.0:  # finite
            return value
    elif kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            copy[key] = _copy_plain(item)
        return copy
    elif kind is list:
        return [_copy_plain(item) for item in value]
    raise _NotPlain


# An event as MemoryStore keeps it: (job_id, kind value, at, attempt, error).
_EventRow: TypeAlias = tuple[int, str, float, int, "str | None"]
_KINDS = {kind.value: kind for kind in EventKind}
_PURGEABLE = frozenset({JobState.SUCCEEDED, JobState.CANCELLED})
_STATES = {state.value: state for state in JobState}
# Read on every transition: a module global is found several times faster
# than an attribute of the enum class.
_QUEUED = JobState.QUEUED
_RUNNING = JobState.RUNNING
_Success = _job.Success


class _Change(Protocol):
    def __call__(self, job: Job, *, now: float) -> tuple[Job, Event]: ...


# A waiting job as its queue's index keeps it: (run_at, id).
_Entry: TypeAlias = tuple[float, int]


class _Lane:
    """The QUEUED jobs of one queue and priority, in claim order: by (run_at, id).

    An entry that comes after every entry so far (a job enqueued to run
    now, on a clock that only goes forward) is appended to a deque, which
    gives it back in constant time; any other goes to a heap. The first
    entry is the smaller of their two fronts. Entries of jobs that have
    moved on, or been purged, stay until they come first.
    """

    __slots__ = ("fifo", "heap")

    def __init__(self) -> None:
        self.fifo: deque[_Entry] = deque()
        self.heap: list[_Entry] = []

    def push(self, entry: _Entry) -> None:
        fifo = self.fifo
        if not fifo or entry >= fifo[-1]:
            fifo.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def first(self) -> _Entry | None:
        fifo, heap = self.fifo, self.heap
        if heap and (not fifo or heap[0] < fifo[0]):
            return heap[0]
        return fifo[0] if fifo else None

    def pop(self) -> None:
        """Drop the first entry."""
        fifo, heap = self.fifo, self.heap
        if heap and (not fifo or heap[0] < fifo[0]):
            heapq.heappop(heap)
        else:
            fifo.popleft()

    def first_where(self, ok: Callable[[_Entry], bool]) -> _Entry | None:
        """The first entry in claim order that ``ok`` accepts, or None.

        Entries are looked at in order, up to the one found: the deque's
        from its front, the heap's down its tree, smallest first.
        """
        found = next((entry for entry in self.fifo if ok(entry)), None)
        heap = self.heap
        frontier = [(heap[0], 0)] if heap else []
        while frontier:
            entry, i = heapq.heappop(frontier)
            if found is not None and entry >= found:
                break
            if ok(entry):
                return entry
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return found


@attrs.define
class _QueueIndex:
    """The QUEUED jobs of one queue, a lane per priority.

    Claim order is (-priority, run_at, id): the first due job is the first
    entry of the highest priority's lane whose first entry is due.
    """

    lanes: dict[int, _Lane] = attrs.Factory(dict)
    priorities: list[int] = attrs.Factory(list)  # of the lanes, highest first

    def lane(self, priority: int) -> _Lane:
        lane = self.lanes.get(priority)
        if lane is None:
            lane = self.lanes[priority] = _Lane()
            bisect.insort(self.priorities, priority, key=operator.neg)
        return lane

    def drop(self, priority: int) -> None:
        """Forget an empty lane: priorities come and go, lookups stay short."""
        del self.lanes[priority]
        self.priorities.remove(priority)


class MemoryStore:
    """A job store that keeps everything in this process's memory.

    It applies the same transitions as :class:`SQLiteStore` and passes the
    same contract suite, in the same claim order, so tests and simulations
    written against it hold for the durable store. Claims, lease expiry and
    the next due time are served from heaps, so a simulation with a large
    backlog stays fast. Nothing survives the process.

    Example::

        >>> import trio
        >>> from jobkit import MemoryStore, NewJob
        >>> async def main():
        ...     store = MemoryStore()
        ...     await store.enqueue([NewJob(task="a"), NewJob(task="b", priority=9)],
        ...                         now=0.0)
        ...     jobs = await store.claim(queues=None, limit=5, now=0.0, lease=30.0)
        ...     return [job.task for job in jobs]
        >>> trio.run(main)
        ['b', 'a']
    """

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        # Each event as a tuple of plain values, its sequence number being its
        # position + 1. Python's cycle collector stops tracking such a tuple,
        # whereas every Event object would be walked by each full collection:
        # a simulation logs hundreds of thousands of events, and walking them
        # over and over took a quarter of its time.
        self._events: list[_EventRow | None] = []  # None: purged
        self._unique: dict[str, int] = {}
        self._queues: dict[str, _QueueIndex] = {}
        self._leases: list[tuple[float, int, int]] = []
        # Jobs per (queue, state value). Keyed by the value, a str whose hash
        # is cached, rather than by the enum member, whose hash runs Python
        # code: every transition moves a job between two keys.
        self._counts: dict[tuple[str, str], int] = {}
        self._next_id = 1
        self._schedules: dict[str, Schedule] = {}
        self._tallies: dict[TallyKey, tuple[int, float]] = {}
        self._purges = 0
        self._tasks_asked: tuple[object, frozenset[str]] = ((), frozenset())

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._jobs)} jobs>"

    # -- bookkeeping -----------------------------------------------------------

    def _record(self, job: Job, event: Event | None) -> None:
        counts = self._counts
        old = self._jobs.get(job.id)
        if old is not None:
            counts[(old.queue, old.state._value_)] -= 1
            if (
                old.unique_key is not None
                and old.state in _job.ACTIVE_STATES
                and job.state not in _job.ACTIVE_STATES
            ):
                del self._unique[old.unique_key]
        key = (job.queue, job.state._value_)
        counts[key] = counts.get(key, 0) + 1
        self._jobs[job.id] = job
        state = job.state
        if state is _QUEUED:
            index = self._queues.get(job.queue)
            if index is None:
                # Not setdefault: that would build a throwaway index per call.
                index = self._queues[job.queue] = _QueueIndex()
            index.lane(job.priority).push((job.run_at, job.id))
        elif state is _RUNNING:
            assert job.lease_until is not None
            heapq.heappush(self._leases, (job.lease_until, job.id, job.attempts))
        if event is not None:
            self._events.append(
                (event.job_id, event.kind._value_, event.at, event.attempt, event.error)
            )

    def _lookup(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def _reported_on(self, job_id: int) -> Job | None:
        # A report may name a job purged since (None: not applied), never
        # one that was not issued.
        job = self._jobs.get(job_id)
        if job is None and not 0 < job_id < self._next_id:
            raise JobNotFound(job_id)
        return job

    def _is_waiting(self, job_id: int, run_at: float) -> bool:
        # The lanes keep entries of jobs that have moved on, or been purged.
        job = self._jobs.get(job_id)
        return job is not None and job.state is _QUEUED and job.run_at == run_at

    def _head(
        self,
        index: _QueueIndex,
        now: float,
        wanted: frozenset[str] | None,
        skipped: list[tuple[_QueueIndex, int, _Entry]],
    ) -> tuple[tuple[int, float, int], _Lane] | None:
        """The claim key of the queue's first due job of a wanted task, and its lane.

        Entries of jobs that moved on are dropped on the way; those of
        waiting jobs of other tasks are moved to ``skipped``.
        """
        jobs = self._jobs
        empty = []
        head = None
        entry: _Entry | None
        for priority in index.priorities:
            lane = index.lanes[priority]
            fifo, heap = lane.fifo, lane.heap
            while True:
                # lane.first() and _is_waiting, inlined: this runs for every
                # claimed job.
                if heap and (not fifo or heap[0] < fifo[0]):
                    entry = heap[0]
                elif fifo:
                    entry = fifo[0]
                else:
                    entry = None
                    break
                job = jobs.get(entry[1])
                if job is not None and job.state is _QUEUED and job.run_at == entry[0]:
                    if wanted is None or job.task in wanted:
                        break
                    skipped.append((index, priority, entry))
                lane.pop()
            if entry is None:
                empty.append(priority)
            elif entry[0] <= now:
                head = (-priority, entry[0], entry[1]), lane
                break
        for priority in empty:
            index.drop(priority)
        return head

    def _names(self, queues: Sequence[str] | None) -> list[str]:
        if queues is None:
            return list(self._queues)
        if isinstance(queues, str):
            raise TypeError(
                f"queues must be a list of names, not the string {queues!r}"
            )
        return [q for q in queues if q in self._queues]

    # -- the contract ------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: float) -> list[int]:
        """Store new QUEUED jobs; a held unique key returns the holder's id."""
        await trio.lowlevel.checkpoint()
        check_new_jobs(jobs)
        payloads = [_copy(spec.payload) for spec in jobs]
        ids = []
        for spec, payload in zip(jobs, payloads, strict=True):
            key = spec.unique_key
            if key is not None and key in self._unique:
                ids.append(self._unique[key])
                continue
            job, event = _job.create(
                spec, job_id=self._next_id, now=now, payload=payload
            )
            self._next_id += 1
            if key is not None:
                self._unique[key] = job.id
            self._record(job, event)
            ids.append(job.id)
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
        """Start up to ``limit`` due jobs of ``tasks`` (None: any) in claim order."""
        await trio.lowlevel.checkpoint()
        plan = self._claim_plan(queues, limit, tasks)
        return self._claim(*plan, limit, now, lease, max_attempts)

    def _claim_plan(
        self, queues: Sequence[str] | None, limit: int, tasks: Sequence[str] | None
    ) -> tuple[list[_QueueIndex], frozenset[str] | None]:
        """Check a claim's arguments: the queues to look in and the tasks wanted."""
        check_limit(limit)
        return [self._queues[name] for name in self._names(queues)], self._wanted(tasks)

    def _wanted(self, tasks: Sequence[str] | None) -> frozenset[str] | None:
        """The set of task names asked for (None: any)."""
        if tasks is None:
            return None
        if tasks is not self._tasks_asked[0] or type(tasks) is not tuple:
            names = check_tasks(tasks)
            assert names is not None
            # A worker asks with the same tuple every time.
            self._tasks_asked = (tasks, frozenset(names))
        return self._tasks_asked[1]

    def _claim(
        self,
        indexes: list[_QueueIndex],
        wanted: frozenset[str] | None,
        limit: int,
        now: float,
        lease: float,
        max_attempts: Mapping[str, int] | None,
    ) -> list[Job]:
        defaults = {} if max_attempts is None else max_attempts
        jobs = self._jobs
        counts = self._counts
        leases = self._leases
        events = self._events
        until = now + lease  # as _started computes it
        claimed: list[Job] = []
        # Waiting jobs of other tasks, taken off the lanes while looking past
        # them and put back afterwards.
        skipped: list[tuple[_QueueIndex, int, _Entry]] = []
        while len(claimed) < limit:
            best = None
            for index in indexes:
                head = self._head(index, now, wanted, skipped)
                if head is not None and (best is None or head[0] < best[0]):
                    best = head
            if best is None:
                break
            order, lane = best
            lane.pop()
            queued = jobs[order[2]]
            # start() and _record(), for the one transition every claim
            # makes: the job stays on its queue and keeps its unique key.
            job = _job._started(queued, now, lease, defaults.get(queued.task))
            name = job.queue
            counts[(name, "queued")] -= 1
            key = (name, "running")
            counts[key] = counts.get(key, 0) + 1
            jobs[job.id] = job
            heapq.heappush(leases, (until, job.id, job.attempts))
            events.append((job.id, "started", now, job.attempts, None))
            claimed.append(job)
        for index, priority, entry in skipped:
            index.lane(priority).push(entry)
        return claimed

    async def settle(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        """Apply attempt outcomes; stale ones are ignored and reported False."""
        await trio.lowlevel.checkpoint()
        return self._settle(outcomes, now)

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
        """Apply ``outcomes``, then claim up to ``limit`` jobs, in one step."""
        await trio.lowlevel.checkpoint()
        plan = self._claim_plan(queues, limit, tasks)  # refuse before changing
        applied = self._settle(outcomes, now)
        return applied, self._claim(*plan, limit, now, lease, max_attempts)

    def _settle(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        check_outcomes(outcomes)
        jobs = self._jobs
        prepared = []
        for outcome in outcomes:
            if type(outcome) is _Success and outcome.result is not None:
                result = _copy(outcome.result, "result")
                if result is not outcome.result:  # numbers, str: kept as is
                    outcome = _Success(outcome.job_id, outcome.attempt, result)
            # An unknown id refuses the whole batch before anything changes.
            # Each job appears once, so it is as found until its own turn.
            job = jobs.get(outcome.job_id)
            if job is None:
                job = self._reported_on(outcome.job_id)
            prepared.append((outcome, job))
        counts = self._counts
        applied = []
        for outcome, job in prepared:
            if (
                job is None
                or job.state is not _RUNNING
                or job.attempts != (outcome.attempt)
            ):  # not _job.owns(): another attempt's, or the job moved on
                applied.append(False)
                continue
            if type(outcome) is _Success:
                # settle() and _record() for a success, the outcome of
                # nearly every attempt.
                new = _job._succeeded(job, outcome.result, now)
                name = new.queue
                counts[(name, "running")] -= 1
                key = (name, "succeeded")
                counts[key] = counts.get(key, 0) + 1
                if new.unique_key is not None:
                    del self._unique[new.unique_key]
                jobs[new.id] = new
                self._events.append((new.id, "succeeded", now, new.attempts, None))
            else:
                self._record(*_job.settle(job, outcome, now=now))
            applied.append(True)
        return applied

    async def renew(
        self, leases: Sequence[tuple[int, int]], *, now: float, lease: float
    ) -> list[bool]:
        """Extend the leases of attempts that still own their jobs."""
        await trio.lowlevel.checkpoint()
        for job_id, _ in leases:
            self._reported_on(job_id)
        renewed = []
        for job_id, attempt in leases:
            job = self._jobs.get(job_id)
            if job is None or not _job.owns(job, attempt):
                renewed.append(False)
                continue
            self._record(_job.renew(job, now=now, lease=lease), None)
            renewed.append(True)
        return renewed

    async def reap(self, *, now: float) -> list[Job]:
        """Recover RUNNING jobs whose lease ended before ``now``."""
        await trio.lowlevel.checkpoint()
        reaped = []
        leases = self._leases
        while leases and leases[0][0] < now:
            lease_until, job_id, attempt = heapq.heappop(leases)
            job = self._jobs.get(job_id)
            if (
                job is None
                or job.lease_until != lease_until
                or not _job.owns(job, attempt)
            ):
                continue
            job, event = _job.expire(job, now=now)
            self._record(job, event)
            reaped.append(job)
        reaped.sort(key=lambda j: j.id)
        return reaped

    async def get(self, job_id: int) -> Job:
        """Return the job with ``job_id`` or raise :class:`JobNotFound`."""
        await trio.lowlevel.checkpoint()
        return self._lookup(job_id)

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
        """Return jobs by state, queue and task, oldest id first (or newest)."""
        await trio.lowlevel.checkpoint()
        check_limit(limit)
        check_list_cursor(after_id, before_id)
        found = []
        # Ids are handed out in increasing order, so the dict is in id order.
        jobs = self._jobs.values()
        for job in reversed(jobs) if newest_first else jobs:
            if (
                (state is None or job.state is state)
                and (queue is None or job.queue == queue)
                and (task is None or job.task == task)
                and (after_id is None or job.id > after_id)
                and (before_id is None or job.id < before_id)
            ):
                found.append(job)
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def _apply(self, job_id: int, change: _Change, now: float) -> Job:
        await trio.lowlevel.checkpoint()
        job, event = change(self._lookup(job_id), now=now)
        self._record(job, event)
        return job

    async def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a QUEUED job."""
        return await self._apply(job_id, _job.cancel, now)

    async def requeue(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job back to QUEUED with attempts reset."""
        # Check and change with no checkpoint in between, so no other task
        # can take the unique key after it was found free.
        await trio.lowlevel.checkpoint()
        job = self._lookup(job_id)
        if (
            job.state is JobState.DEAD
            and job.unique_key is not None
            and job.unique_key in self._unique
        ):
            raise _job.TransitionError(
                f"cannot requeue job {job_id}: job {self._unique[job.unique_key]} "
                f"already holds its unique key {job.unique_key!r}"
            )
        job, event = _job.requeue(job, now=now)
        self._record(job, event)
        if job.unique_key is not None:
            self._unique[job.unique_key] = job.id
        return job

    async def discard(self, job_id: int, *, now: float) -> Job:
        """Move a DEAD job to CANCELLED."""
        return await self._apply(job_id, _job.discard, now)

    async def counts(self) -> QueueCounts:
        """Return the number of jobs per queue and state."""
        await trio.lowlevel.checkpoint()
        return QueueCounts(
            {
                (queue, _STATES[state]): n
                for (queue, state), n in self._counts.items()
                if n
            }
        )

    async def next_run_at(
        self, *, queues: Sequence[str] | None, tasks: Sequence[str] | None = None
    ) -> float | None:
        """Return the earliest ``run_at`` among QUEUED jobs of ``tasks``, or None."""
        await trio.lowlevel.checkpoint()
        wanted = self._wanted(tasks)
        earliest: float | None = None
        for name in self._names(queues):
            index = self._queues[name]
            for lane in index.lanes.values():
                if wanted is None:
                    while (entry := lane.first()) is not None and not (
                        self._is_waiting(entry[1], entry[0])
                    ):
                        lane.pop()
                else:
                    # Jobs of other tasks stay: another worker wants them.
                    entry = lane.first_where(
                        lambda entry: (
                            self._is_waiting(entry[1], entry[0])
                            and self._jobs[entry[1]].task in wanted
                        )
                    )
                if entry is not None and (earliest is None or entry[0] < earliest):
                    earliest = entry[0]
        return earliest

    async def queued_tasks(self) -> dict[tuple[str, str], int]:
        """Return the number of QUEUED jobs per ``(queue, task)``."""
        await trio.lowlevel.checkpoint()
        found: dict[tuple[str, str], int] = {}
        for job in self._jobs.values():
            if job.state is _QUEUED:
                found[(job.queue, job.task)] = found.get((job.queue, job.task), 0) + 1
        return found

    async def events(
        self, *, job_id: int | None = None, after: int = 0, limit: int | None = None
    ) -> builtins.list[tuple[int, Event]]:
        """Return ``(sequence, event)`` pairs after ``after``, oldest first."""
        await trio.lowlevel.checkpoint()
        check_limit(limit)
        found = []
        rows = self._events
        # Indexes sliced like the log itself, so ``after`` means the same.
        for i in range(len(rows))[after:]:
            row = rows[i]
            if row is not None and (job_id is None or row[0] == job_id):
                found.append((i + 1, Event(row[0], _KINDS[row[1]], *row[2:])))
                if limit is not None and len(found) >= limit:
                    break
        return found

    def _event_rows(self) -> builtins.list[tuple[int, _EventRow]]:
        # ``(sequence, row)`` for every event kept, oldest first. The
        # simulator reads a whole run's log into its trace; building an Event
        # per row, as events() must, took a third of that time.
        return [(i, row) for i, row in enumerate(self._events, 1) if row is not None]

    async def purge(self, *, before: float) -> int:
        """Delete finished jobs changed before ``before``, with their events.

        As in :class:`SQLiteStore`: SUCCEEDED and CANCELLED jobs go, the newest
        job and the job of the newest event stay, and the purged events are
        added to :meth:`purge_totals`. A purged event leaves a gap in the
        sequence numbers.
        """
        await trio.lowlevel.checkpoint()
        check_time(before, "before")
        events = self._events
        kept = {max(self._jobs, default=None)}
        if events and events[-1] is not None:
            kept.add(events[-1][0])
        doomed = {
            job.id
            for job in self._jobs.values()
            if job.state in _PURGEABLE
            and job.updated_at < before
            and job.id not in kept
        }
        if not doomed:
            return 0
        history: dict[int, builtins.list[Event]] = {job_id: [] for job_id in doomed}
        for i, row in enumerate(events):
            if row is not None and row[0] in doomed:
                history[row[0]].append(Event(row[0], _KINDS[row[1]], *row[2:]))
                events[i] = None
        for job_id in doomed:
            job = self._jobs.pop(job_id)
            self._counts[(job.queue, job.state._value_)] -= 1
            add_tallies(
                self._tallies,
                tally_events(job.task, job.queue, history[job_id]),
            )
        self._purges += 1
        return len(doomed)

    async def purge_totals(self) -> PurgeTotals:
        """Return what the purged jobs' events added up to."""
        await trio.lowlevel.checkpoint()
        return PurgeTotals(self._purges, dict(self._tallies))

    async def aclose(self) -> None:
        """Nothing to release; provided for the contract."""
        await trio.lowlevel.checkpoint()

    # -- schedules (the ScheduleStore part) --------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store a schedule; one with the same name and definition is kept as is."""
        await trio.lowlevel.checkpoint()
        check_schedule(schedule)
        old = self._schedules.get(schedule.name)
        if old is not None and old.definition == schedule.definition:
            return old
        stored = attrs.evolve(schedule, payload=_copy(schedule.payload))
        self._schedules[stored.name] = stored
        return stored

    async def schedules(self) -> builtins.list[Schedule]:
        """Return every schedule, by name."""
        await trio.lowlevel.checkpoint()
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; return whether it existed."""
        await trio.lowlevel.checkpoint()
        return self._schedules.pop(name, None) is not None

    async def fire_schedules(self, *, now: float) -> FireResult:
        """Enqueue the due slots of every schedule and advance the schedules."""
        await trio.lowlevel.checkpoint()
        plans = _schedule.fire_all(list(self._schedules.values()), now)
        jobs = [job for _, due in plans for job in due.jobs()]
        check_new_jobs(jobs)
        # Advanced before the first checkpoint since reading them, so a
        # concurrent call finds these slots taken; the shield keeps a
        # cancellation from leaving a slot advanced but not enqueued.
        for _, due in plans:
            self._schedules[due.schedule.name] = due.schedule
        with trio.CancelScope(shield=True):
            ids = await self.enqueue(jobs, now=now)
        firings = []
        pairs = iter(ids)
        for old, due in plans:
            _schedule.warn_dropped(old, due.dropped)
            for slot, run_at in due.slots:
                firings.append(
                    Firing(old.name, old.task, old.queue, slot, run_at, next(pairs))
                )
        slots = [s.next_slot for s in self._schedules.values()]
        return FireResult(firings, min(slots) if slots else None)
