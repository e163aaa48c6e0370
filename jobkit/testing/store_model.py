"""The stateful model test: a store and a small model of the queue must agree.

:func:`run_store_model` drives a random sequence of enqueues (with delays,
priorities and unique keys), claims, settles (success, retry, permanent
failure, release, and stale attempts), lease renewals, clock advances, reaps,
cancels, requeues, discards and purges, with claims filtered by task and jobs
enqueued without ``max_attempts``, on a store and on a model of the queue
written out plainly (not with the transition functions jobkit's stores
share, so that it checks them rather than repeating them). After every step
the store and the model must hold the same jobs, field for field, the same
events per job, the same counts, the same next due times, the same pages of
listings and the same purge totals (per event kind), and the queue's
invariants must hold. Hypothesis shrinks a failure to a short sequence of
steps and prints it.

To run it on a store of your own, call it in a test with a function that
opens a fresh, empty store::

    # test_mystore.py
    from jobkit.testing.store_model import run_store_model

    def test_my_store_agrees_with_the_model():
        run_store_model(lambda directory: MyStore(directory / "jobs"))

Each example opens a store of its own, given a fresh empty directory
(deleted afterwards), and closes it with ``dispose`` (``aclose`` by default).
The test is a plain function, not a trio one: the model test runs each store
call with ``trio.run``. It needs hypothesis (``pip install 'jobkit[test]'``);
the number of examples follows the loaded hypothesis profile unless
``max_examples`` says otherwise. jobkit runs it this way on each of its own
stores, with :mod:`jobkit.testing.store_contract` beside it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobkit import (
    EventKind,
    Job,
    JobEvent,
    JobNotFound,
    JobState,
    NewJob,
    Store,
    TransitionError,
)
from jobkit.core.job import EXPIRED_ERROR
from jobkit.store import Failure, Outcome, Release, Success

__all__ = ["run_store_model"]

_QUEUES = ["a", "b"]
Q, R = JobState.QUEUED, JobState.RUNNING


class _Model:
    """The job queue's rules, stated directly over a dict of jobs."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.events: list[JobEvent] = []
        self.next_id = 1
        self.purged: set[int] = set()
        # Events of purged jobs, per (task, queue, kind value).
        self.purged_events: Counter[tuple[str, str, str]] = Counter()
        # Why each DEAD job died: "exhausted" or "permanent".
        self.dead_because: dict[int, str] = {}

    def _set(self, job: Job, kind: EventKind, attempt: int, error: Any = None) -> None:
        self.jobs[job.id] = job
        self.events.append(JobEvent(job.id, kind, job.updated_at, attempt, error))

    def _holder(self, key: str | None) -> int | None:
        for job in self.jobs.values():
            if key is not None and job.unique_key == key and job.state in (Q, R):
                return job.id
        return None

    def enqueue(self, _SPECS: list[NewJob], now: float) -> list[int]:
        ids = []
        for spec in _SPECS:
            holder = self._holder(spec.unique_key)
            if holder is not None:
                ids.append(holder)
                continue
            job = Job(
                id=self.next_id,
                task=spec.task,
                queue=spec.queue,
                payload=spec.payload,
                state=Q,
                attempts=0,
                max_attempts=spec.max_attempts,
                priority=spec.priority,
                run_at=now if spec.run_at is None else spec.run_at,
                created_at=now,
                updated_at=now,
                unique_key=spec.unique_key,
            )
            self._set(job, EventKind.ENQUEUED, 0)
            self.next_id += 1
            ids.append(job.id)
        return ids

    def claim(
        self,
        queues: list[str] | None,
        limit: int,
        now: float,
        lease: float,
        tasks: list[str] | None = None,
        max_attempts: dict[str, int] | None = None,
    ) -> list[Job]:
        due = [
            j
            for j in self.jobs.values()
            if j.state is Q
            and j.run_at <= now
            and (queues is None or j.queue in queues)
            and (tasks is None or j.task in tasks)
        ]
        due.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        claimed = []
        for job in due[:limit]:
            limit_ = job.max_attempts
            if limit_ is None:
                limit_ = (max_attempts or {}).get(job.task, 1)
            job = attrs.evolve(
                job,
                state=R,
                attempts=job.attempts + 1,
                max_attempts=limit_,
                lease_until=now + lease,
                updated_at=now,
            )
            self._set(job, EventKind.STARTED, job.attempts)
            claimed.append(job)
        return claimed

    def _owns(self, job_id: int, attempt: int) -> bool:
        job = self.jobs.get(job_id)  # None once purged
        return job is not None and job.state is R and job.attempts == attempt

    def settle(self, outcomes: list[Outcome], now: float) -> list[bool]:
        applied = []
        for o in outcomes:
            if not self._owns(o.job_id, o.attempt):
                applied.append(False)
                continue
            job = attrs.evolve(self.jobs[o.job_id], lease_until=None, updated_at=now)
            if isinstance(o, Success):
                self._set(
                    attrs.evolve(job, state=JobState.SUCCEEDED, result=o.result),
                    EventKind.SUCCEEDED,
                    job.attempts,
                )
            elif isinstance(o, Release):
                released = attrs.evolve(
                    job, state=Q, attempts=job.attempts - 1, run_at=now
                )
                self._set(released, EventKind.RELEASED, job.attempts)
            elif o.retry_at is None or job.attempts >= (job.max_attempts or 1):
                why = "permanent" if o.retry_at is None else "exhausted"
                self.dead_because[job.id] = why
                dead = attrs.evolve(job, state=JobState.DEAD, last_error=o.error)
                self._set(dead, EventKind.DEAD, job.attempts, o.error)
            else:
                retry = attrs.evolve(
                    job,
                    state=Q,
                    last_error=o.error,
                    run_at=o.retry_at,
                    retry_delay=o.delay,
                )
                self._set(retry, EventKind.RETRIED, job.attempts, o.error)
            applied.append(True)
        return applied

    def renew(
        self, pairs: list[tuple[int, int]], now: float, lease: float
    ) -> list[bool]:
        renewed = []
        for job_id, attempt in pairs:
            owned = self._owns(job_id, attempt)
            if owned:
                self.jobs[job_id] = attrs.evolve(
                    self.jobs[job_id], lease_until=now + lease, updated_at=now
                )
            renewed.append(owned)
        return renewed

    def reap(self, now: float) -> list[Job]:
        reaped = []
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.state is not R or job.lease_until is None or job.lease_until >= now:
                continue
            job = attrs.evolve(
                job, lease_until=None, updated_at=now, last_error=EXPIRED_ERROR
            )
            if job.attempts >= (job.max_attempts or 1):
                self.dead_because[job.id] = "exhausted"
                job = attrs.evolve(job, state=JobState.DEAD)
                self._set(job, EventKind.DEAD, job.attempts, EXPIRED_ERROR)
            else:
                job = attrs.evolve(job, state=Q, run_at=now)
                self._set(job, EventKind.EXPIRED, job.attempts, EXPIRED_ERROR)
            reaped.append(job)
        return reaped

    def purge(self, before: float) -> int:
        # The newest job stays, and so does the job of the newest event (only
        # a settle, cancel or discard makes a job purgeable, and those record
        # their events in the order of the call).
        kept = {max(self.jobs, default=None)}
        if self.events:
            kept.add(self.events[-1].job_id)
        doomed = {
            job.id
            for job in self.jobs.values()
            if job.state in (JobState.SUCCEEDED, JobState.CANCELLED)
            and job.updated_at < before
            and job.id not in kept
        }
        for e in self.events:
            if e.job_id in doomed:
                job = self.jobs[e.job_id]
                self.purged_events[(job.task, job.queue, e.kind.value)] += 1
        for job_id in doomed:
            del self.jobs[job_id]
        self.purged |= doomed
        self.events = [e for e in self.events if e.job_id not in doomed]
        return len(doomed)

    def _get(self, job_id: int) -> Job:
        if job_id not in self.jobs:
            raise JobNotFound(job_id)
        return self.jobs[job_id]

    def _refuse(self, job: Job, action: str, allowed: str) -> TransitionError:
        return TransitionError(
            f"cannot {action} job {job.id}: it is {job.state.value}, not {allowed}"
        )

    def cancel(self, job_id: int, now: float) -> Job:
        job = self._get(job_id)
        if job.state is not Q:
            raise self._refuse(job, "cancel", "queued")
        job = attrs.evolve(job, state=JobState.CANCELLED, updated_at=now)
        self._set(job, EventKind.CANCELLED, job.attempts)
        return job

    def requeue(self, job_id: int, now: float) -> Job:
        job = self._get(job_id)
        if job.state is not JobState.DEAD:
            raise self._refuse(job, "requeue", "dead")
        holder = self._holder(job.unique_key)
        if holder is not None:
            raise TransitionError(
                f"cannot requeue job {job_id}: job {holder} already holds "
                f"its unique key {job.unique_key!r}"
            )
        job = attrs.evolve(
            job, state=Q, attempts=0, run_at=now, updated_at=now, retry_delay=None
        )
        self.dead_because.pop(job_id)
        self._set(job, EventKind.REQUEUED, 0)
        return job

    def discard(self, job_id: int, now: float) -> Job:
        job = self._get(job_id)
        if job.state is not JobState.DEAD:
            raise self._refuse(job, "discard", "dead")
        job = attrs.evolve(job, state=JobState.CANCELLED, updated_at=now)
        self._set(job, EventKind.DISCARDED, job.attempts)
        return job


def _result_of(call: Callable[[], Any]) -> tuple[str, Any]:
    """Call and return ("ok", value) or ("error", its type name and message)."""
    try:
        return ("ok", call())
    except (TransitionError, JobNotFound) as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


def _run(fn: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
    return _result_of(lambda: trio.run(fn))


_SPECS = st.builds(
    NewJob,
    task=st.sampled_from(["mail", "resize"]),
    payload=st.fixed_dictionaries({"n": st.integers(0, 9)}),
    queue=st.sampled_from(_QUEUES),
    priority=st.sampled_from([-1, 0, 0, 3]),
    max_attempts=st.sampled_from([None, 1, 2, 3]),
    unique_key=st.sampled_from([None, None, None, "k1", "k2"]),
)
_DELAYS = st.sampled_from([None, None, 0.0, 1.5, 4.0])


class _StoreMachine(RuleBasedStateMachine):
    """Random operations on a store and on the model; the two must agree."""

    # Set by run_store_model on a subclass of its own (as static methods).
    open_store: Callable[[Path], Store]
    dispose: Callable[[Store], Awaitable[None]]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="jobkit-model-")
        self.stores: dict[str, Store] = {"store": self.open_store(Path(self.dir))}
        self.model = _Model()
        self.now = 0.0
        # Every (job, attempt) ever claimed: reports on old ones are stale.
        self.pairs: list[tuple[int, int]] = []
        self.seen_seq = dict.fromkeys(self.stores, 0)
        self.seen_events = 0

    def teardown(self) -> None:
        for store in self.stores.values():
            trio.run(self.dispose, store)
        shutil.rmtree(self.dir, ignore_errors=True)

    def agree(self, name: str, expected: tuple[str, Any], **calls: Any) -> None:
        """Run ``name`` with ``calls`` on every store; each must give ``expected``."""
        for label, store in self.stores.items():
            got = _run(partial(getattr(store, name), **calls))
            assert got == expected, (label, name, calls, got, expected)

    # -- operations ------------------------------------------------------------------

    @rule(batch=st.lists(st.tuples(_SPECS, _DELAYS), min_size=1, max_size=3))
    def enqueue(self, batch: list[tuple[NewJob, float | None]]) -> None:
        jobs = [
            attrs.evolve(spec, run_at=None if d is None else self.now + d)
            for spec, d in batch
        ]
        expected = _result_of(lambda: self.model.enqueue(jobs, self.now))
        self.agree("enqueue", expected, jobs=jobs, now=self.now)

    @rule(
        queues=st.sampled_from([None, ["a"], ["b"], ["b", "a"]]),
        limit=st.integers(1, 3),
        lease=st.sampled_from([1.0, 5.0]),
        tasks=st.sampled_from([None, None, ["mail"], ["resize", "mail"], []]),
        max_attempts=st.sampled_from([None, {"mail": 3}, {"resize": 2, "mail": 1}]),
    )
    def claim(
        self,
        queues: list[str] | None,
        limit: int,
        lease: float,
        tasks: list[str] | None,
        max_attempts: dict[str, int] | None,
    ) -> None:
        expected = _result_of(
            lambda: self.model.claim(
                queues, limit, self.now, lease, tasks, max_attempts
            )
        )
        self.pairs += [(job.id, job.attempts) for job in expected[1]]
        self.agree(
            "claim",
            expected,
            queues=queues,
            limit=limit,
            now=self.now,
            lease=lease,
            tasks=tasks,
            max_attempts=max_attempts,
        )

    @precondition(lambda self: self.pairs)
    @rule(
        data=st.data(),
        kinds=st.lists(
            st.sampled_from(["success", "retry", "permanent", "release"]),
            min_size=1,
            max_size=3,
        ),
    )
    def settle(self, data: st.DataObject, kinds: list[str]) -> None:
        chosen: dict[int, int] = {}
        for _ in kinds:
            job_id, attempt = data.draw(st.sampled_from(self.pairs))
            chosen.setdefault(job_id, attempt)
        outcomes: list[Outcome] = []
        for (job_id, attempt), kind in zip(chosen.items(), kinds, strict=False):
            if kind == "success":
                outcomes.append(Success(job_id, attempt, {"by": attempt}))
            elif kind == "release":
                outcomes.append(Release(job_id, attempt))
            else:
                retry_at = self.now + 2.0 if kind == "retry" else None
                failure = Failure(job_id, attempt, f"{kind} {attempt}", retry_at, 2.0)
                outcomes.append(failure)
        expected = _result_of(lambda: self.model.settle(outcomes, self.now))
        self.agree("settle", expected, outcomes=outcomes, now=self.now)

    @precondition(lambda self: self.pairs)
    @rule(data=st.data(), lease=st.sampled_from([1.0, 5.0]))
    def renew(self, data: st.DataObject, lease: float) -> None:
        pairs = data.draw(st.lists(st.sampled_from(self.pairs), min_size=1, max_size=2))
        expected = _result_of(lambda: self.model.renew(pairs, self.now, lease))
        self.agree("renew", expected, leases=pairs, now=self.now, lease=lease)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 6.0]))
    def advance_the_clock(self, dt: float) -> None:
        self.now += dt

    def _ahead(self, state: JobState, field: str) -> list[float]:
        values = (
            getattr(j, field) for j in self.model.jobs.values() if j.state is state
        )
        return [v for v in values if v >= self.now]

    @precondition(lambda self: self._ahead(R, "lease_until"))
    @rule(past=st.booleans())
    def advance_to_a_lease_end(self, past: bool) -> None:
        """Land exactly on (or just past) the next lease end: a boundary."""
        self.now = min(self._ahead(R, "lease_until")) + past * 0.25

    @precondition(lambda self: self._ahead(Q, "run_at"))
    @rule()
    def advance_to_the_next_run_at(self) -> None:
        """Land exactly on the next run_at: a job is due at run_at itself."""
        self.now = min(self._ahead(Q, "run_at"))

    @rule()
    def reap(self) -> None:
        expected = _result_of(lambda: self.model.reap(self.now))
        self.agree("reap", expected, now=self.now)

    @rule(action=st.sampled_from(["cancel", "requeue", "discard"]), data=st.data())
    def act_on_a_job(self, action: str, data: st.DataObject) -> None:
        job_id = data.draw(st.integers(1, self.model.next_id))
        expected = _result_of(lambda: getattr(self.model, action)(job_id, self.now))
        self.agree(action, expected, job_id=job_id, now=self.now)

    @rule(age=st.sampled_from([-1.0, 0.0, 2.0]))  # -1: all finished so far
    def purge(self, age: float) -> None:
        before = self.now - age
        expected = _result_of(lambda: self.model.purge(before))
        self.agree("purge", expected, before=before)
        for store in self.stores.values():
            log = _run(partial(store.events, limit=None))[1]
            # No event outlives its job.
            assert {e.job_id for _, e in log} <= set(self.model.jobs), (
                "an event outlived its job"
            )
            totals = _run(store.purge_totals)[1]
            kinds = {kind.value for kind in EventKind}
            events: Counter[tuple[str, str, str]] = Counter()
            for (task, queue, series, _), (n, _) in totals.tallies.items():
                if series in kinds:
                    events[(task, queue, series)] += n
            assert events == self.model.purged_events, "purge_totals()"

    # -- agreement and invariants --------------------------------------------------

    async def _snapshot(self, label: str) -> tuple[Any, ...]:
        store = self.stores[label]
        jobs = await store.list(limit=None)
        fresh = await store.events(after=self.seen_seq[label])
        counts = await store.counts()
        due = [await store.next_run_at(queues=q) for q in (None, ["a"], ["b"])]
        due.append(await store.next_run_at(queues=None, tasks=["mail"]))
        page = await store.list(
            task="mail", newest_first=True, before_id=self.model.next_id - 1, limit=2
        )
        return jobs, fresh, counts.counts, due, page

    @invariant()
    def stores_agree_with_the_model(self) -> None:
        model = self.model
        jobs = sorted(model.jobs.values(), key=lambda j: j.id)
        new_events = model.events[self.seen_events :]
        self.seen_events = len(model.events)
        counts = Counter((j.queue, j.state) for j in jobs)
        due = [
            min(
                (
                    j.run_at
                    for j in jobs
                    if j.state is Q and (q is None or j.queue in q)
                ),
                default=None,
            )
            for q in (None, ["a"], ["b"])
        ]
        due.append(
            min(
                (j.run_at for j in jobs if j.state is Q and j.task == "mail"),
                default=None,
            )
        )
        page = [
            j for j in reversed(jobs) if j.task == "mail" and j.id < model.next_id - 1
        ][:2]
        for label in self.stores:
            got_jobs, fresh, got_counts, got_due, got_page = trio.run(
                self._snapshot, label
            )
            assert got_jobs == jobs, "list(limit=None)"
            assert got_page == page, "a page of list()"
            # Events one call records may come in any order among themselves.
            key = lambda e: (e.job_id, e.kind.value)  # noqa: E731
            assert sorted((e for _, e in fresh), key=key) == sorted(new_events, key=key)
            seqs = [seq for seq, _ in fresh]
            assert seqs == sorted(seqs) and all(s > self.seen_seq[label] for s in seqs)
            if fresh:
                self.seen_seq[label] = fresh[-1][0]
            assert got_counts == dict(counts), "counts()"
            assert got_due == due, "next_run_at()"

    @invariant()
    def each_job_keeps_its_events_in_order(self) -> None:
        by_job: dict[int, list[JobEvent]] = {}
        for event in self.model.events:
            if event.job_id in self.model.jobs:
                by_job.setdefault(event.job_id, []).append(event)
        for job_id in list(by_job)[-3:]:  # the newest few, to stay quick
            for store in self.stores.values():
                got = trio.run(partial(store.events, job_id=job_id))
                assert [e for _, e in got] == by_job[job_id], "events(job_id=...)"

    @invariant()
    def queue_invariants_hold(self) -> None:
        model = self.model
        # No job lost: every id ever handed out is still there, in one state,
        # or was purged when finished; none was handed out twice.
        assert sorted([*model.jobs, *model.purged]) == list(range(1, model.next_id))
        for job in model.jobs.values():
            assert 0 <= job.attempts <= (job.max_attempts or 0)
            assert (job.lease_until is not None) == (job.state is R)
            if job.state is JobState.DEAD:
                why = model.dead_because[job.id]
                assert why == "permanent" or job.attempts == job.max_attempts
        holders = Counter(
            j.unique_key
            for j in model.jobs.values()
            if j.unique_key and j.state in (Q, R)
        )
        assert all(n == 1 for n in holders.values())


async def _close(store: Store) -> None:
    await store.aclose()


def run_store_model(
    open_store: Callable[[Path], Store],
    *,
    dispose: Callable[[Store], Awaitable[None]] = _close,
    max_examples: int | None = None,
    steps: int = 30,
) -> None:
    """Check that stores made by ``open_store`` agree with a model of the queue.

    ``open_store(directory)`` returns a fresh, empty store for one example
    (``directory`` is new and empty, and deleted afterwards);
    ``dispose(store)`` closes it and deletes what it left elsewhere.
    ``max_examples`` random runs (the hypothesis profile's number by
    default) of up to ``steps`` operations each; a disagreement raises
    ``AssertionError`` with the shrunk sequence of steps.

    Example::

        >>> from jobkit.store import MemoryStore
        >>> from jobkit.testing.store_model import run_store_model
        >>> run_store_model(lambda directory: MemoryStore(), max_examples=3)
    """
    machine = type(
        "StoreModel",
        (_StoreMachine,),
        {"open_store": staticmethod(open_store), "dispose": staticmethod(dispose)},
    )
    chosen = settings(stateful_step_count=steps, deadline=None)
    if max_examples is not None:
        chosen = settings(chosen, max_examples=max_examples)
    run_state_machine_as_test(machine, settings=chosen)
