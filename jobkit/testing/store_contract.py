"""The store contract as a test suite: every store, jobkit's or yours, passes it.

:class:`StoreContract` holds the tests every :class:`jobkit.store.Store` must
pass. To run them on a store of your own, subclass it in a test module and give
it a ``store`` fixture that yields a fresh, empty store and closes it
afterwards::

    # test_mystore.py
    import pytest
    from jobkit.testing.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self):
            store = MyStore(...)
            yield store
            await store.aclose()

A store that also keeps schedules (a :class:`~jobkit.store.ScheduleStore`)
adds :class:`ScheduleStoreContract` beside it, with the same fixture:
``class TestMyStore(StoreContract, ScheduleStoreContract)``.

The suite needs pytest and pytest-trio (``pip install 'jobkit[test]'``); the
class marks its tests as trio tests, so no ``trio_mode`` setting is needed.
Parametrize the fixture to run the suite on several stores. jobkit runs it
this way on each of its own stores.

The tests use only the :class:`~jobkit.store.Store` protocol, pass every time
as ``now=...`` (stores never read a clock), and check results through the
store's own read primitives, so they hold for a store in another process too.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import attrs
import pytest

from jobkit import (
    EventKind,
    Job,
    JobEvent,
    JobNotFound,
    JobState,
    MissedTickBehavior,
    NewJob,
    PurgeTotals,
    Schedule,
    ScheduleStore,
    Store,
    TransitionError,
)
from jobkit.core.job import EXPIRED_ERROR
from jobkit.store import Failure, Outcome, Release, SettleClaimStore, Success

__all__ = ["ScheduleStoreContract", "StoreContract"]


async def _put(store: Store, now: float = 0.0, **fields: object) -> int:
    """Enqueue one job built from ``fields`` and return its id."""
    fields.setdefault("task", "t")
    [job_id] = await store.enqueue([NewJob(**fields)], now=now)  # type: ignore[arg-type]
    return job_id


async def _claim_one(store: Store, now: float = 0.0, lease: float = 10.0) -> Job:
    [job] = await store.claim(queues=None, limit=1, now=now, lease=lease)
    return job


async def _kinds(store: Store, job_id: int) -> list[str]:
    return [e.kind.value for _, e in await store.events(job_id=job_id)]


async def _make_dead(store: Store, now: float = 0.0, **fields: object) -> int:
    job_id = await _put(store, now, **fields)
    job = await _claim_one(store, now)
    assert job.id == job_id
    assert await store.settle([Failure(job_id, 1, "boom", retry_at=None)], now=now)
    return job_id


async def _finish(store: Store, now: float, **fields: object) -> int:
    """Enqueue, claim and succeed one job at ``now``; return its id."""
    job_id = await _put(store, now, **fields)
    job = await _claim_one(store, now)
    assert job.id == job_id
    assert await store.settle([Success(job_id, 1, "ok")], now=now)
    return job_id


class StoreContract:
    """The tests every store passes; subclass it and define a ``store`` fixture.

    Example::

        class TestMyStore(StoreContract):
            @pytest.fixture
            async def store(self):
                store = MyStore()
                yield store
                await store.aclose()
    """

    pytestmark = pytest.mark.trio

    @pytest.fixture
    def store(self) -> Store:
        """Override in a subclass: yield a fresh, empty store, then close it."""
        raise TypeError(
            f"{type(self).__name__} must define a `store` fixture that yields "
            "a fresh, empty store (see jobkit.testing.store_contract)"
        )

    # -- the protocol and ids ------------------------------------------------------

    async def test_store_implements_the_protocol(self, store: Store) -> None:
        """Every store is recognized as a jobkit.Store."""
        assert isinstance(store, Store)

    async def test_enqueue_returns_increasing_ids_in_order(self, store: Store) -> None:
        """Ids start at 1, follow the order of the batch and keep growing across
        calls."""
        ids = await store.enqueue([NewJob(task="a"), NewJob(task="b")], now=0.0)
        assert ids == [1, 2]
        assert await store.enqueue([NewJob(task="c")], now=0.0) == [3]
        assert await store.enqueue([], now=0.0) == []
        assert [j.task for j in await store.list()] == ["a", "b", "c"]

    async def test_enqueued_job_has_every_field(self, store: Store) -> None:
        """get() returns the new job QUEUED, with defaults filled in from ``now``."""
        job_id = await _put(
            store,
            now=5.0,
            task="mail",
            queue="q",
            payload={"to": "ada"},
            priority=3,
            max_attempts=4,
            unique_key="k",
        )
        assert await store.get(job_id) == Job(
            id=job_id,
            task="mail",
            queue="q",
            payload={"to": "ada"},
            state=JobState.QUEUED,
            attempts=0,
            max_attempts=4,
            priority=3,
            run_at=5.0,
            created_at=5.0,
            updated_at=5.0,
            unique_key="k",
        )
        assert (await store.get(await _put(store, now=5.0, run_at=9.5))).run_at == 9.5

    async def test_get_unknown_id_raises_job_not_found(self, store: Store) -> None:
        """get() of an id that was never issued raises JobNotFound naming it."""
        with pytest.raises(JobNotFound, match="no job with id 7"):
            await store.get(7)

    # -- claiming ------------------------------------------------------------------

    async def test_claim_starts_an_attempt_with_a_lease(self, store: Store) -> None:
        """A claimed job is RUNNING, on attempt 1, leased until now + lease."""
        job_id = await _put(store)
        job = await _claim_one(store, now=2.0, lease=30.0)
        assert (job.id, job.state, job.attempts) == (job_id, JobState.RUNNING, 1)
        assert (job.lease_until, job.updated_at) == (32.0, 2.0)
        assert await store.get(job_id) == job

    async def test_claim_order_is_priority_then_run_at_then_id(
        self, store: Store
    ) -> None:
        """Due jobs come out by priority (high first), then run_at, then id."""
        specs = [
            NewJob(task="p0-late", run_at=3.0),
            NewJob(task="p0-early", run_at=1.0),
            NewJob(task="p5-late", priority=5, run_at=2.0),
            NewJob(task="p5-early", priority=5, run_at=1.0),
            NewJob(task="p0-early-2", run_at=1.0),
            NewJob(task="neg", priority=-1, run_at=0.0),
        ]
        await store.enqueue(specs, now=0.0)
        jobs = await store.claim(queues=None, limit=10, now=5.0, lease=1.0)
        assert [j.task for j in jobs] == [
            "p5-early",
            "p5-late",
            "p0-early",
            "p0-early-2",
            "p0-late",
            "neg",
        ]

    async def test_claim_takes_only_due_jobs(self, store: Store) -> None:
        """A job is due once run_at <= now; a future high-priority job blocks
        nothing."""
        later = await _put(store, run_at=10.0, priority=9)
        now_id = await _put(store)
        assert [
            j.id for j in await store.claim(queues=None, limit=5, now=9.0, lease=1)
        ] == [now_id]
        assert await store.claim(queues=None, limit=5, now=9.99, lease=1) == []
        [job] = await store.claim(queues=None, limit=5, now=10.0, lease=1)
        assert job.id == later

    async def test_claim_respects_limit_and_hands_out_each_job_once(
        self, store: Store
    ) -> None:
        """limit caps a claim; claimed jobs are not claimed again."""
        await store.enqueue([NewJob(task="t")] * 5, now=0.0)
        first = await store.claim(queues=None, limit=2, now=0.0, lease=9.0)
        rest = await store.claim(queues=None, limit=10, now=0.0, lease=9.0)
        assert [j.id for j in first] == [1, 2]
        assert [j.id for j in rest] == [3, 4, 5]
        assert await store.claim(queues=None, limit=10, now=0.0, lease=9.0) == []

    @pytest.mark.parametrize("limit", [0, -1, True, 1.5])
    async def test_claim_refuses_a_bad_limit(self, store: Store, limit: object) -> None:
        """claim() with a limit that is not a positive integer raises ValueError."""
        await _put(store)
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            await store.claim(queues=None, limit=limit, now=0.0, lease=1.0)  # type: ignore[arg-type]
        assert (await store.get(1)).state is JobState.QUEUED

    async def test_claim_filters_by_queue(self, store: Store) -> None:
        """Only the named queues are served; an unknown or empty list serves nothing."""
        await store.enqueue(
            [NewJob(task="a1", queue="a"), NewJob(task="b1", queue="b")], now=0.0
        )
        assert await store.claim(queues=[], limit=5, now=0.0, lease=1) == []
        assert await store.claim(queues=["nope"], limit=5, now=0.0, lease=1) == []
        [job] = await store.claim(queues=["b"], limit=5, now=0.0, lease=1)
        assert job.task == "b1"
        [job] = await store.claim(queues=["b", "a"], limit=5, now=0.0, lease=1)
        assert job.task == "a1"

    async def test_claim_over_several_queues_keeps_one_order(
        self, store: Store
    ) -> None:
        """Across queues the claim order is global, and limit applies to the total."""
        await store.enqueue(
            [
                NewJob(task="a-low", queue="a"),
                NewJob(task="b-high", queue="b", priority=2),
                NewJob(task="c-mid", queue="c", priority=1),
                NewJob(task="a-high", queue="a", priority=2),
                NewJob(task="b-low", queue="b"),
            ],
            now=0.0,
        )
        jobs = await store.claim(queues=["a", "b", "c"], limit=4, now=0.0, lease=1)
        assert [j.task for j in jobs] == ["b-high", "a-high", "c-mid", "a-low"]
        jobs = await store.claim(queues=None, limit=4, now=0.0, lease=1)
        assert [j.task for j in jobs] == ["b-low"]

    async def test_claim_refuses_a_string_for_queues(self, store: Store) -> None:
        """queues="mail" is a mistake for ["mail"] and raises TypeError."""
        await _put(store, queue="mail")
        with pytest.raises(TypeError, match="not the string 'mail'"):
            await store.claim(queues="mail", limit=1, now=0.0, lease=1.0)
        with pytest.raises(TypeError, match="not the string 'mail'"):
            await store.next_run_at(queues="mail")

    # -- settling ------------------------------------------------------------------

    async def test_success_stores_the_result(self, store: Store) -> None:
        """Success makes the job SUCCEEDED with its result and no lease."""
        job_id = await _put(store)
        await _claim_one(store)
        assert await store.settle([Success(job_id, 1, {"n": [1, 2]})], now=3.0) == [
            True
        ]
        job = await store.get(job_id)
        assert (job.state, job.result, job.lease_until) == (
            JobState.SUCCEEDED,
            {"n": [1, 2]},
            None,
        )
        assert job.updated_at == 3.0

    async def test_failure_with_attempts_left_retries_at_retry_at(
        self, store: Store
    ) -> None:
        """A failure with attempts left requeues the job for retry_at, keeping the
        error."""
        job_id = await _put(store, max_attempts=3)
        await _claim_one(store)
        assert await store.settle([Failure(job_id, 1, "boom", retry_at=7.0)], now=2.0)
        job = await store.get(job_id)
        assert (job.state, job.attempts, job.run_at, job.last_error) == (
            JobState.QUEUED,
            1,
            7.0,
            "boom",
        )
        assert await store.claim(queues=None, limit=1, now=6.9, lease=1) == []
        job = await _claim_one(store, now=7.0)
        assert job.attempts == 2

    async def test_failure_on_the_last_attempt_is_dead(self, store: Store) -> None:
        """A failure on the last allowed attempt makes the job DEAD despite retry_at."""
        job_id = await _put(store, max_attempts=2)
        for attempt in (1, 2):
            job = await _claim_one(store, now=float(attempt))
            assert job.attempts == attempt
            await store.settle([Failure(job_id, attempt, f"e{attempt}", 0.0)], now=9.0)
        job = await store.get(job_id)
        assert (job.state, job.attempts, job.last_error) == (JobState.DEAD, 2, "e2")

    async def test_permanent_failure_is_dead_at_once(self, store: Store) -> None:
        """A failure with retry_at=None makes the job DEAD whatever attempts remain."""
        job_id = await _put(store, max_attempts=5, run_at=1.0)
        await _claim_one(store, now=1.0)
        await store.settle([Failure(job_id, 1, "bad input", retry_at=None)], now=2.0)
        job = await store.get(job_id)
        assert (job.state, job.attempts, job.run_at) == (JobState.DEAD, 1, 1.0)

    async def test_release_gives_the_attempt_back(self, store: Store) -> None:
        """Release requeues the job at once and does not count the attempt."""
        job_id = await _put(store, max_attempts=1)
        await _claim_one(store)
        assert await store.settle([Release(job_id, 1)], now=4.0) == [True]
        job = await store.get(job_id)
        assert (job.state, job.attempts, job.run_at, job.lease_until) == (
            JobState.QUEUED,
            0,
            4.0,
            None,
        )
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.RELEASED, 4.0, 1)
        assert (await _claim_one(store, now=4.0)).attempts == 1

    async def test_settle_a_batch_reports_each_outcome(self, store: Store) -> None:
        """A batch applies every outcome and reports each, stale ones as False."""
        ids = await store.enqueue([NewJob(task="t", max_attempts=2)] * 4, now=0.0)
        await store.claim(queues=None, limit=3, now=0.0, lease=5.0)
        outcomes: list[Outcome] = [
            Success(ids[0], 1, "ok"),
            Failure(ids[1], 1, "x", retry_at=1.0),
            Release(ids[2], 1),
            Success(ids[3], 1),  # never claimed
        ]
        assert await store.settle(outcomes, now=1.0) == [True, True, True, False]
        jobs = [await store.get(i) for i in ids]
        assert [(j.state, j.attempts, j.run_at) for j in jobs] == [
            (JobState.SUCCEEDED, 1, 0.0),
            (JobState.QUEUED, 1, 1.0),
            (JobState.QUEUED, 0, 1.0),
            (JobState.QUEUED, 0, 0.0),
        ]
        assert await store.settle([], now=1.0) == []

    async def test_settle_refuses_two_outcomes_for_one_job(self, store: Store) -> None:
        """A batch reporting twice on one job raises ValueError and changes nothing."""
        job_id = await _put(store)
        await _claim_one(store)
        with pytest.raises(ValueError, match=f"two outcomes for job {job_id}"):
            await store.settle([Success(job_id, 1), Release(job_id, 1)], now=1.0)
        assert (await store.get(job_id)).state is JobState.RUNNING

    async def test_settle_with_an_unknown_job_changes_nothing(
        self, store: Store
    ) -> None:
        """An outcome for an unknown id raises JobNotFound and the batch is not
        applied."""
        job_id = await _put(store)
        await _claim_one(store)
        with pytest.raises(JobNotFound):
            await store.settle([Success(job_id, 1), Success(99, 1)], now=1.0)
        assert (await store.get(job_id)).state is JobState.RUNNING
        assert await _kinds(store, job_id) == ["enqueued", "started"]

    async def test_settle_refuses_a_result_that_is_not_json(self, store: Store) -> None:
        """A result JSON cannot hold raises TypeError naming it, and nothing changes."""
        job_id = await _put(store)
        await _claim_one(store)
        with pytest.raises(TypeError, match=r"result\['s'\] is a set"):
            await store.settle([Success(job_id, 1, {"s": {1}})], now=1.0)
        with pytest.raises(TypeError, match="result is a tuple"):
            await store.settle([Success(job_id, 1, (1, 2))], now=1.0)
        assert (await store.get(job_id)).state is JobState.RUNNING

    # -- settling and claiming in one step (SettleClaimStore) ----------------------

    async def test_settle_and_claim_is_settle_then_claim(self, store: Store) -> None:
        """The settled attempts' jobs move on and the next due jobs start, with
        the same events and order as a settle followed by a claim."""
        if not isinstance(store, SettleClaimStore):
            pytest.skip("the store settles and claims in separate calls only")
        ids = await store.enqueue([NewJob(task="t", max_attempts=2)] * 2, now=0.0)
        await store.claim(queues=None, limit=2, now=0.0, lease=5.0, tasks=["t"])
        ids += await store.enqueue(
            [NewJob(task="t", priority=p) for p in (0, 5, 0)], now=0.5
        )
        applied, claimed = await store.settle_and_claim(
            [Success(ids[0], 1, "ok"), Failure(ids[1], 1, "x", retry_at=9.0)],
            now=1.0,
            queues=None,
            limit=2,
            lease=5.0,
            tasks=["t"],
        )
        assert applied == [True, True]
        assert [(j.id, j.attempts, j.lease_until) for j in claimed] == [
            (ids[3], 1, 6.0),
            (ids[2], 1, 6.0),
        ]
        assert await _kinds(store, ids[0]) == ["enqueued", "started", "succeeded"]
        assert await _kinds(store, ids[1]) == ["enqueued", "started", "retried"]
        # Nothing due but the retried job at 9.0, and the last one waiting.
        applied, claimed = await store.settle_and_claim(
            [], now=1.0, queues=None, limit=5, lease=5.0
        )
        assert (applied, [j.id for j in claimed]) == ([], [ids[4]])

    async def test_settle_and_claim_applies_nothing_when_refused(
        self, store: Store
    ) -> None:
        """An outcome for an unknown id raises JobNotFound: nothing is settled
        and nothing claimed."""
        if not isinstance(store, SettleClaimStore):
            pytest.skip("the store settles and claims in separate calls only")
        job_id = await _put(store)
        await _put(store)
        await _claim_one(store)
        with pytest.raises(JobNotFound):
            await store.settle_and_claim(
                [Success(job_id, 1), Success(99, 1)],
                now=1.0,
                queues=None,
                limit=1,
                lease=5.0,
            )
        assert (await store.get(job_id)).state is JobState.RUNNING
        counts = (await store.counts()).counts
        assert counts.get(("default", JobState.QUEUED)) == 1

    # -- leases, expiry and fencing ------------------------------------------------

    async def test_reap_recovers_expired_leases_only(self, store: Store) -> None:
        """reap() requeues jobs whose lease ended before now, counting the attempt."""
        job_id = await _put(store, max_attempts=3)
        await _claim_one(store, now=0.0, lease=10.0)
        assert await store.reap(now=10.0) == []  # the lease ends at 10: not yet over
        [job] = await store.reap(now=10.5)
        assert (job.id, job.state, job.attempts, job.run_at, job.last_error) == (
            job_id,
            JobState.QUEUED,
            1,
            10.5,
            EXPIRED_ERROR,
        )
        assert job.lease_until is None
        assert await store.get(job_id) == job
        assert await store.reap(now=99.0) == []
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.EXPIRED, 10.5, 1, EXPIRED_ERROR)

    async def test_reap_makes_an_exhausted_job_dead(self, store: Store) -> None:
        """A job whose expired attempt was its last becomes DEAD (a poison job)."""
        job_id = await _put(store, max_attempts=1)
        await _claim_one(store, now=0.0, lease=1.0)
        [job] = await store.reap(now=5.0)
        assert (job.state, job.run_at, job.last_error) == (
            JobState.DEAD,
            0.0,
            EXPIRED_ERROR,
        )
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.DEAD, 5.0, 1, EXPIRED_ERROR)

    async def test_reap_returns_jobs_by_id(self, store: Store) -> None:
        """reap() returns every expired job, oldest id first."""
        await store.enqueue([NewJob(task="t", max_attempts=2)] * 3, now=0.0)
        for lease in (30.0, 10.0, 20.0):
            await _claim_one(store, now=0.0, lease=lease)
        assert [j.id for j in await store.reap(now=40.0)] == [1, 2, 3]

    async def test_stale_attempt_is_fenced_off(self, store: Store) -> None:
        """Once an expired job is claimed again, the old attempt's reports are
        ignored."""
        job_id = await _put(store, max_attempts=3)
        await _claim_one(store, now=0.0, lease=1.0)
        await store.reap(now=2.0)
        second = await _claim_one(store, now=2.0, lease=10.0)
        assert second.attempts == 2
        assert await store.settle([Success(job_id, 1, "late")], now=3.0) == [False]
        assert await store.renew([(job_id, 1)], now=3.0, lease=10.0) == [False]
        assert await store.get(job_id) == second
        assert await store.settle([Success(job_id, 2, "ok")], now=4.0) == [True]
        assert (await store.get(job_id)).result == "ok"
        assert await store.settle([Failure(job_id, 2, "x", 9.0)], now=5.0) == [False]

    async def test_renew_extends_the_lease(self, store: Store) -> None:
        """renew() moves lease_until to now + lease and records no event."""
        job_id = await _put(store)
        await _claim_one(store, now=0.0, lease=10.0)
        assert await store.renew([(job_id, 1)], now=8.0, lease=10.0) == [True]
        job = await store.get(job_id)
        assert (job.lease_until, job.updated_at) == (18.0, 8.0)
        assert await store.reap(now=17.0) == []
        assert await _kinds(store, job_id) == ["enqueued", "started"]
        assert await store.renew([], now=8.0, lease=1.0) == []

    async def test_renew_reports_each_pair(self, store: Store) -> None:
        """renew() answers per (job, attempt); a job that is not running is not
        renewed."""
        a, b = await store.enqueue([NewJob(task="t")] * 2, now=0.0)
        await _claim_one(store)
        assert await store.renew([(a, 1), (b, 1), (a, 2)], now=1.0, lease=5.0) == [
            True,
            False,
            False,
        ]
        with pytest.raises(JobNotFound):
            await store.renew([(a, 1), (42, 1)], now=1.0, lease=5.0)

    # -- unique keys ---------------------------------------------------------------

    async def test_unique_key_dedupes_while_active(self, store: Store) -> None:
        """Enqueueing a key held by a QUEUED or RUNNING job returns the holder's id."""
        first = await _put(store, unique_key="k")
        assert await _put(store, unique_key="k", task="other") == first
        await _claim_one(store)
        assert await _put(store, unique_key="k") == first
        assert len(await store.list()) == 1
        assert [e.kind for _, e in await store.events()] == [
            EventKind.ENQUEUED,
            EventKind.STARTED,
        ]

    async def test_unique_key_dedupes_within_one_batch(self, store: Store) -> None:
        """Within a batch a repeated key maps to the first job holding it."""
        ids = await store.enqueue(
            [
                NewJob(task="a", unique_key="k"),
                NewJob(task="b"),
                NewJob(task="c", unique_key="k"),
                NewJob(task="d", unique_key="j"),
            ],
            now=0.0,
        )
        assert ids == [1, 2, 1, 3]

    @pytest.mark.parametrize("ending", ["success", "dead", "cancel"])
    async def test_unique_key_is_free_after_the_holder_ends(
        self, store: Store, ending: str
    ) -> None:
        """Once the holder is SUCCEEDED, DEAD or CANCELLED, the key makes a new job."""
        first = await _put(store, unique_key="k")
        if ending == "cancel":
            await store.cancel(first, now=1.0)
        else:
            await _claim_one(store)
            outcome = (
                Success(first, 1)
                if ending == "success"
                else Failure(first, 1, "x", None)
            )
            await store.settle([outcome], now=1.0)
        second = await _put(store, unique_key="k", now=2.0)
        assert second != first
        assert await _put(store, unique_key="k", now=3.0) == second

    async def test_requeue_refused_while_another_job_holds_the_key(
        self, store: Store
    ) -> None:
        """A dead job cannot be requeued while a newer job holds its unique key."""
        dead = await _make_dead(store, unique_key="k")
        holder = await _put(store, unique_key="k")
        with pytest.raises(
            TransitionError,
            match=f"cannot requeue job {dead}: job {holder} already holds "
            "its unique key 'k'",
        ):
            await store.requeue(dead, now=1.0)
        assert (await store.get(dead)).state is JobState.DEAD
        await store.cancel(holder, now=2.0)
        assert (await store.requeue(dead, now=3.0)).state is JobState.QUEUED
        assert await _put(store, unique_key="k") == dead

    # -- transitions by a person ---------------------------------------------------

    async def test_cancel_a_queued_job(self, store: Store) -> None:
        """cancel() moves a QUEUED job to CANCELLED; it is never claimed."""
        job_id = await _put(store)
        job = await store.cancel(job_id, now=2.0)
        assert (job.state, job.updated_at) == (JobState.CANCELLED, 2.0)
        assert await store.get(job_id) == job
        assert await store.claim(queues=None, limit=1, now=3.0, lease=1) == []

    async def test_requeue_a_dead_job_resets_attempts(self, store: Store) -> None:
        """requeue() makes a DEAD job QUEUED at now with attempts 0; last_error
        stays."""
        job_id = await _make_dead(store, max_attempts=2)
        job = await store.requeue(job_id, now=6.0)
        assert (job.state, job.attempts, job.run_at, job.last_error) == (
            JobState.QUEUED,
            0,
            6.0,
            "boom",
        )
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.REQUEUED, 6.0, 0)
        assert (await _claim_one(store, now=6.0)).attempts == 1

    async def test_discard_a_dead_job(self, store: Store) -> None:
        """discard() moves a DEAD job to CANCELLED with a DISCARDED event."""
        job_id = await _make_dead(store)
        job = await store.discard(job_id, now=3.0)
        assert job.state is JobState.CANCELLED
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.DISCARDED, 3.0, 1)

    @pytest.mark.parametrize(
        ("action", "setup", "message"),
        [
            ("cancel", "running", "cannot cancel job 1: it is running, not queued"),
            ("cancel", "dead", "cannot cancel job 1: it is dead, not queued"),
            ("requeue", "queued", "cannot requeue job 1: it is queued, not dead"),
            ("requeue", "running", "cannot requeue job 1: it is running, not dead"),
            ("discard", "queued", "cannot discard job 1: it is queued, not dead"),
            ("discard", "succeeded", "cannot discard job 1: it is succeeded, not dead"),
        ],
    )
    async def test_transitions_refuse_the_wrong_state(
        self, store: Store, action: str, setup: str, message: str
    ) -> None:
        """cancel/requeue/discard raise TransitionError naming the job and its state."""
        job_id = await _put(store, unique_key="k")
        if setup != "queued":
            await _claim_one(store)
        if setup == "dead":
            await store.settle([Failure(job_id, 1, "x", None)], now=0.0)
        if setup == "succeeded":
            await store.settle([Success(job_id, 1)], now=0.0)
        before = await store.get(job_id)
        with pytest.raises(TransitionError) as info:
            await getattr(store, action)(job_id, now=1.0)
        assert str(info.value) == message
        assert await store.get(job_id) == before

    @pytest.mark.parametrize("action", ["cancel", "requeue", "discard"])
    async def test_transitions_on_an_unknown_job(
        self, store: Store, action: str
    ) -> None:
        """cancel/requeue/discard of an unknown id raise JobNotFound."""
        with pytest.raises(JobNotFound, match="no job with id 3"):
            await getattr(store, action)(3, now=1.0)

    # -- events --------------------------------------------------------------------

    async def test_every_transition_is_recorded_in_order(self, store: Store) -> None:
        """A job's life appears in events() as one event per transition, in order."""
        job_id = await _put(store, max_attempts=3, now=1.0)
        await _claim_one(store, now=2.0, lease=5.0)
        await store.settle([Failure(job_id, 1, "e1", retry_at=4.0)], now=3.0)
        await _claim_one(store, now=4.0, lease=5.0)
        await store.reap(now=10.0)
        await _claim_one(store, now=10.0, lease=5.0)
        await store.settle([Failure(job_id, 3, "e3", retry_at=20.0)], now=11.0)
        await store.requeue(job_id, now=12.0)
        await _claim_one(store, now=12.0, lease=5.0)
        await store.settle([Release(job_id, 1)], now=13.0)
        await store.cancel(job_id, now=14.0)
        events = await store.events(job_id=job_id)
        assert [e for _, e in events] == [
            JobEvent(job_id, EventKind.ENQUEUED, 1.0, 0),
            JobEvent(job_id, EventKind.STARTED, 2.0, 1),
            JobEvent(job_id, EventKind.RETRIED, 3.0, 1, "e1"),
            JobEvent(job_id, EventKind.STARTED, 4.0, 2),
            JobEvent(job_id, EventKind.EXPIRED, 10.0, 2, EXPIRED_ERROR),
            JobEvent(job_id, EventKind.STARTED, 10.0, 3),
            JobEvent(job_id, EventKind.DEAD, 11.0, 3, "e3"),
            JobEvent(job_id, EventKind.REQUEUED, 12.0, 0),
            JobEvent(job_id, EventKind.STARTED, 12.0, 1),
            JobEvent(job_id, EventKind.RELEASED, 13.0, 1),
            JobEvent(job_id, EventKind.CANCELLED, 14.0, 0),
        ]
        seqs = [seq for seq, _ in events]
        assert seqs == sorted(set(seqs))

    async def test_success_event(self, store: Store) -> None:
        """Success records a SUCCEEDED event with the attempt and no error."""
        job_id = await _put(store)
        await _claim_one(store, now=1.0)
        await store.settle([Success(job_id, 1, 5)], now=2.0)
        (_, event) = (await store.events(job_id=job_id))[-1]
        assert event == JobEvent(job_id, EventKind.SUCCEEDED, 2.0, 1)

    async def test_events_can_be_followed_by_sequence(self, store: Store) -> None:
        """events(after=seq) returns only later events; limit and job_id filter them."""
        a = await _put(store)
        b = await _put(store)
        first = await store.events()
        assert [(e.job_id, e.kind) for _, e in first] == [
            (a, EventKind.ENQUEUED),
            (b, EventKind.ENQUEUED),
        ]
        last_seen = first[-1][0]
        assert await store.events(after=last_seen) == []
        await store.claim(queues=None, limit=2, now=0.0, lease=1.0)
        later = await store.events(after=last_seen)
        assert sorted(e.job_id for _, e in later) == [a, b]
        assert all(seq > last_seen for seq, _ in later)
        assert len(await store.events(limit=3)) == 3
        assert [e.kind for _, e in await store.events(job_id=b)] == [
            EventKind.ENQUEUED,
            EventKind.STARTED,
        ]
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            await store.events(limit=0)

    # -- reading -------------------------------------------------------------------

    async def test_counts_follow_every_transition(self, store: Store) -> None:
        """counts() gives the jobs per queue and state, and omits empty pairs."""
        assert (await store.counts()).counts == {}
        await store.enqueue(
            [NewJob(task="t", queue="a")] * 3 + [NewJob(task="t", queue="b")], now=0.0
        )
        [job] = await store.claim(queues=["a"], limit=1, now=0.0, lease=1.0)
        await store.settle([Failure(job.id, 1, "x", None)], now=0.0)
        await store.cancel(2, now=0.0)
        await _claim_one(store)
        counts = await store.counts()
        assert counts.counts == {
            ("a", JobState.DEAD): 1,
            ("a", JobState.CANCELLED): 1,
            ("a", JobState.RUNNING): 1,
            ("b", JobState.QUEUED): 1,
        }
        assert counts.queues == ["a", "b"]
        assert counts.total(JobState.QUEUED) == 1

    async def test_next_run_at(self, store: Store) -> None:
        """next_run_at() is the earliest run_at of QUEUED jobs in the given queues."""
        assert await store.next_run_at(queues=None) is None
        await store.enqueue(
            [
                NewJob(task="t", queue="a", run_at=30.0),
                NewJob(task="t", queue="b", run_at=20.0, priority=5),
                NewJob(task="t", queue="a", run_at=25.0, priority=-5),
            ],
            now=0.0,
        )
        assert await store.next_run_at(queues=None) == 20.0
        assert await store.next_run_at(queues=["a"]) == 25.0
        assert await store.next_run_at(queues=["a", "b"]) == 20.0
        assert await store.next_run_at(queues=["zzz"]) is None
        assert await store.next_run_at(queues=[]) is None
        await _claim_one(store, now=20.0)  # RUNNING jobs no longer count
        assert await store.next_run_at(queues=None) == 25.0

    async def test_next_run_at_includes_due_jobs(self, store: Store) -> None:
        """A job that is already due counts too, so next_run_at may be in the past."""
        await _put(store, run_at=1.0)
        await _put(store, run_at=50.0)
        await store.claim(queues=None, limit=1, now=60.0, lease=1.0)
        await _put(store, run_at=3.0)
        assert await store.next_run_at(queues=None) == 3.0

    async def test_list_filters_and_orders_by_id(self, store: Store) -> None:
        """list() filters by state and queue, oldest id first, up to limit."""
        await store.enqueue(
            [NewJob(task=str(i), queue="ab"[i % 2], priority=i) for i in range(6)],
            now=0.0,
        )
        await store.claim(queues=None, limit=2, now=0.0, lease=1.0)  # ids 6 and 5
        assert [j.id for j in await store.list()] == [1, 2, 3, 4, 5, 6]
        assert [j.id for j in await store.list(state=JobState.QUEUED)] == [1, 2, 3, 4]
        assert [j.id for j in await store.list(queue="a")] == [1, 3, 5]
        assert [j.id for j in await store.list(state=JobState.RUNNING, queue="b")] == [
            6
        ]
        assert [j.id for j in await store.list(limit=2)] == [1, 2]
        assert [j.id for j in await store.list(limit=None)] == [1, 2, 3, 4, 5, 6]
        assert await store.list(state=JobState.DEAD) == []
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            await store.list(limit=0)

    # -- payloads and bad input ----------------------------------------------------

    async def test_payload_and_result_round_trip_as_json(self, store: Store) -> None:
        """Payloads and results come back equal after a round trip, types included."""
        value = {
            "s": "héllo ✓",
            "i": 2**60,
            "f": 0.1,
            "neg": -1.5e-300,
            "b": [True, False, None],
            "nested": {"list": [{"x": []}], "empty": {}},
        }
        job_id = await _put(store, payload=value)
        job = await _claim_one(store)
        assert job.payload == value
        assert type(job.payload["i"]) is int
        await store.settle([Success(job_id, 1, [value, 3, "x"])], now=1.0)
        assert (await store.get(job_id)).result == [value, 3, "x"]

    async def test_stored_data_is_isolated_from_the_caller(self, store: Store) -> None:
        """Mutating a payload or result after handing it over changes nothing stored."""
        payload = {"items": [1, 2]}
        job_id = await _put(store, payload=payload)
        payload["items"].append(3)
        result = {"done": ["a"]}
        await _claim_one(store)
        await store.settle([Success(job_id, 1, result)], now=1.0)
        result["done"].append("b")
        job = await store.get(job_id)
        assert (job.payload, job.result) == ({"items": [1, 2]}, {"done": ["a"]})

    @pytest.mark.parametrize(
        ("spec", "error", "match"),
        [
            (
                NewJob(task="t", payload={"when": {1, 2}}),
                TypeError,
                r"payload\['when'\] is a set",
            ),
            (
                NewJob(task="t", payload={"t": (1, 2)}),
                TypeError,
                r"payload\['t'\] is a tuple",
            ),
            (
                NewJob(task="t", payload={"x": math.nan}),
                TypeError,
                "JSON cannot represent",
            ),
            (NewJob(task="t", payload={1: "a"}), TypeError, "keys must be strings"),  # type: ignore[dict-item]
            (NewJob(task="t", payload=[1, 2]), TypeError, "payload must be a dict"),  # type: ignore[arg-type]
            (
                NewJob(task="t", max_attempts=0),
                ValueError,
                "max_attempts must be >= 1",
            ),
            (NewJob(task=""), ValueError, "task name must be a non-empty string"),
            (
                NewJob(task="t", queue=""),
                ValueError,
                "queue must be a non-empty string",
            ),
            (NewJob(task="t", run_at=math.inf), ValueError, "run_at must be a finite"),
            ("t", TypeError, "enqueue\\(\\) takes NewJob records"),
        ],
    )
    async def test_enqueue_refuses_bad_jobs_and_stores_none(
        self, store: Store, spec: object, error: type[Exception], match: str
    ) -> None:
        """A bad job in a batch raises a clear error and no job of the batch is
        stored."""
        with pytest.raises(error, match=match):
            await store.enqueue([NewJob(task="fine"), spec], now=0.0)  # type: ignore[list-item]
        assert await store.list() == []
        assert await store.events() == []
        assert await _put(store) == 1

    # -- purge ---------------------------------------------------------------------

    async def test_purge_deletes_old_finished_jobs_and_their_events(
        self, store: Store
    ) -> None:
        """Old SUCCEEDED and CANCELLED jobs go with their events; the rest stay."""
        done = await _finish(store, 1.0)
        cancelled = await _put(store, 1.0)
        await store.cancel(cancelled, now=2.0)
        dead = await _make_dead(store, 2.0)
        waiting = await _put(store, 2.0, run_at=500.0)
        running = await _put(store, 2.0)
        await _claim_one(store, 2.0, lease=1000.0)
        recent = await _finish(store, 50.0)
        newest = await _put(store, 50.0)
        assert await store.purge(before=10.0) == 2
        left = [job.id for job in await store.list(limit=None)]
        assert left == [dead, waiting, running, recent, newest]
        for gone in (done, cancelled):
            with pytest.raises(JobNotFound):
                await store.get(gone)
            assert await store.events(job_id=gone) == []
        assert {e.job_id for _, e in await store.events()} == set(left)
        assert await _kinds(store, recent) == ["enqueued", "started", "succeeded"]
        counts = (await store.counts()).counts
        assert counts == {
            ("default", JobState.DEAD): 1,
            ("default", JobState.QUEUED): 2,
            ("default", JobState.RUNNING): 1,
            ("default", JobState.SUCCEEDED): 1,
        }

    async def test_purge_never_lets_an_id_or_a_sequence_number_come_back(
        self,
        store: Store,
    ) -> None:
        """The newest job and the newest event survive, so numbers keep rising."""
        first = await _finish(store, 1.0)
        last = await _finish(store, 1.0)
        [(newest_seq, _)] = (await store.events())[-1:]
        assert await store.purge(before=10.0) == 1  # ``last`` is the newest job
        assert [job.id for job in await store.list()] == [last]
        job_id = await _put(store, 20.0)
        assert job_id > last > first
        later = await store.events(after=newest_seq)
        assert [(e.job_id, e.kind) for _, e in later] == [(job_id, EventKind.ENQUEUED)]

    async def test_purge_keeps_dead_letters_until_discarded(self, store: Store) -> None:
        """A dead letter is purged only once discarded (CANCELLED)."""
        dead = await _make_dead(store, 1.0)
        await _put(store, 1.0)  # the newest job, which always stays
        assert await store.purge(before=10.0) == 0
        await store.discard(dead, now=2.0)
        await _put(store, 3.0)  # its event is the newest: the discard's is not
        assert await store.purge(before=10.0) == 1
        with pytest.raises(JobNotFound):
            await store.get(dead)

    async def test_purge_uses_the_time_of_the_last_change(self, store: Store) -> None:
        """Age counts from when the job finished, not from when it was created."""
        job_id = await _put(store, 1.0)
        await _put(store, 1.0)
        await _claim_one(store, 90.0)
        await store.settle([Success(job_id, 1)], now=100.0)
        await _put(store, 100.0)  # the newest event's job stays
        assert await store.purge(before=100.0) == 0  # changed at 100: not before
        assert await store.purge(before=100.5) == 1

    @pytest.mark.parametrize(
        ("before", "error"),
        [(math.nan, ValueError), (math.inf, ValueError), ("1", TypeError)],
    )
    async def test_purge_refuses_a_bad_time_and_deletes_nothing(
        self, store: Store, before: object, error: type[Exception]
    ) -> None:
        """A time that is not a finite number is refused, naming ``before``."""
        await _finish(store, 1.0)
        await _put(store, 1.0)
        with pytest.raises(error, match="before"):
            await store.purge(before=before)  # type: ignore[arg-type]
        assert len(await store.list()) == 2

    async def test_late_reports_on_a_purged_job_are_not_applied(
        self, store: Store
    ) -> None:
        """A settle or renew naming a job purged since answers False; the rest
        applies."""
        purged = await _put(store, 0.0, max_attempts=3)
        stale = await _claim_one(store, 0.0, lease=1.0)  # this attempt stalls
        assert [j.id for j in await store.reap(now=2.0)] == [purged]
        again = await _claim_one(store, 2.0)
        assert await store.settle([Success(purged, again.attempts)], now=3.0) == [True]
        other = await _put(store, 3.0)
        await _claim_one(store, 3.0)
        assert await store.purge(before=10.0) == 1
        assert await store.renew(
            [(purged, stale.attempts), (other, 1)], now=4.0, lease=9.0
        ) == [
            False,
            True,
        ]
        late = [Success(purged, stale.attempts), Success(other, 1, "ok")]
        assert await store.settle(late, now=5.0) == [False, True]
        assert (await store.get(other)).result == "ok"
        with pytest.raises(JobNotFound):  # an id no job ever had is still an error
            await store.settle([Success(other + 1, 1)], now=6.0)
        with pytest.raises(JobNotFound):
            await store.renew([(0, 1)], now=6.0, lease=9.0)

    # -- the delay recorded at a retry ---------------------------------------------

    async def test_a_retry_records_its_delay_and_a_requeue_clears_it(
        self, store: Store
    ) -> None:
        """retry_delay is the Failure's delay; kept when dead, reset by a requeue."""
        job_id = await _put(store, max_attempts=2)
        assert (await store.get(job_id)).retry_delay is None
        await _claim_one(store, 0.0)
        await store.settle(
            [Failure(job_id, 1, "boom", retry_at=2.5, delay=2.5)], now=0.0
        )
        assert (await store.get(job_id)).retry_delay == 2.5
        [job] = await store.claim(queues=None, limit=1, now=3.0, lease=10.0)
        assert job.retry_delay == 2.5  # the worker reads it off the claimed job
        await store.settle(
            [Failure(job_id, 2, "boom", retry_at=9.0, delay=6.0)], now=3.0
        )
        dead = await store.get(job_id)
        assert (dead.state, dead.retry_delay) == (JobState.DEAD, 2.5)
        assert (await store.requeue(job_id, now=4.0)).retry_delay is None
        assert (await store.get(job_id)).retry_delay is None

    async def test_a_lost_lease_keeps_the_recorded_delay(self, store: Store) -> None:
        """An expired attempt's late failure changes nothing, its delay included."""
        job_id = await _put(store, max_attempts=3)
        await _claim_one(store, 0.0, lease=1.0)
        await store.reap(now=2.0)
        late = Failure(job_id, 1, "late", retry_at=9.0, delay=7.0)
        assert await store.settle([late], now=3.0) == [False]
        assert (await store.get(job_id)).retry_delay is None

    # -- tasks a claimer knows -----------------------------------------------------

    async def test_claim_takes_only_the_named_tasks(self, store: Store) -> None:
        """Jobs of other tasks stay QUEUED, in place, for a claimer that knows them."""
        other = await _put(store, task="new", priority=9)
        mine = [
            await _put(store, task="old"),
            await _put(store, task="older", queue="b"),
        ]
        got = await store.claim(
            queues=None, limit=5, now=0.0, lease=10.0, tasks=["old", "older"]
        )
        assert sorted(j.id for j in got) == mine
        assert (await store.get(other)).state is JobState.QUEUED
        assert (
            await store.claim(queues=None, limit=5, now=0.0, lease=9.0, tasks=[]) == []
        )
        [job] = await store.claim(queues=["default"], limit=5, now=0.0, lease=9.0)
        assert job.id == other

    async def test_claim_refuses_a_string_for_tasks(self, store: Store) -> None:
        """tasks="x" would mean the tasks "x" one letter each; refused."""
        with pytest.raises(TypeError, match="tasks must be a list"):
            await store.claim(queues=None, limit=1, now=0.0, lease=1.0, tasks="old")

    async def test_next_run_at_sees_only_the_named_tasks(self, store: Store) -> None:
        """The earliest run_at among jobs of the given tasks, at any priority."""
        await _put(store, task="new", run_at=1.0, priority=5)
        await _put(store, task="old", run_at=7.0, priority=5)
        await _put(store, task="old", run_at=4.0)
        assert await store.next_run_at(queues=None) == 1.0
        assert await store.next_run_at(queues=None, tasks=["old"]) == 4.0
        assert await store.next_run_at(queues=["default"], tasks=["gone"]) is None
        assert await store.next_run_at(queues=None, tasks=[]) is None

    async def test_queued_tasks_counts_queued_jobs_per_queue_and_task(
        self, store: Store
    ) -> None:
        """Only QUEUED jobs count, due or not."""
        await _make_dead(store, task="c")
        await _put(store, task="a")
        await _put(store, task="a", run_at=50.0)
        await _put(store, task="b", queue="mail")
        await _put(store, task="d")
        await _claim_one(store)  # the first "a"
        assert await store.queued_tasks() == {
            ("default", "a"): 1,
            ("mail", "b"): 1,
            ("default", "d"): 1,
        }

    async def test_a_job_without_max_attempts_gets_it_at_its_first_claim(
        self,
        store: Store,
    ) -> None:
        """max_attempts=None is the task's default: the claimer's, or 1, for good."""
        known = await _put(store, task="known", max_attempts=None)
        other = await _put(store, task="other", max_attempts=None)
        assert (await store.get(known)).max_attempts is None
        jobs = await store.claim(
            queues=None, limit=5, now=0.0, lease=10.0, max_attempts={"known": 4}
        )
        assert [(j.id, j.max_attempts) for j in jobs] == [(known, 4), (other, 1)]
        assert (await store.get(known)).max_attempts == 4
        failure = Failure(known, 1, "boom", retry_at=1.0, delay=1.0)
        await store.settle([failure], now=0.0)
        [again] = await store.claim(
            queues=None, limit=1, now=1.0, lease=10.0, max_attempts={"known": 9}
        )
        assert again.max_attempts == 4  # decided once

    # -- listing -------------------------------------------------------------------

    async def test_list_filters_by_task_and_pages_by_id(self, store: Store) -> None:
        """A keyset cursor pages through a listing, oldest or newest first."""
        ids = [await _put(store, task="a" if i % 2 else "b") for i in range(7)]
        a_ids = [i for n, i in enumerate(ids) if n % 2]
        assert [j.id for j in await store.list(task="a")] == a_ids
        assert [j.id for j in await store.list(newest_first=True, limit=3)] == ids[
            :-4:-1
        ]
        page = await store.list(limit=3)
        rest = await store.list(limit=3, after_id=page[-1].id)
        assert [j.id for j in page + rest] == ids[:6]
        back = await store.list(newest_first=True, before_id=ids[4], limit=2)
        assert [j.id for j in back] == [ids[3], ids[2]]
        both = await store.list(after_id=ids[1], before_id=ids[5], task="b")
        assert [j.id for j in both] == [ids[2], ids[4]]
        queued = await store.list(state=JobState.QUEUED, newest_first=True, limit=1)
        assert [j.id for j in queued] == [ids[-1]]

    async def test_list_refuses_a_cursor_that_is_not_an_id(self, store: Store) -> None:
        """A cursor must be a whole number."""
        with pytest.raises(TypeError, match="after_id"):
            await store.list(after_id="3")  # type: ignore[arg-type]

    # -- what purges leave behind --------------------------------------------------

    async def test_purge_folds_the_deleted_events_into_kept_totals(
        self, store: Store
    ) -> None:
        """Every event of every purged job is counted once in purge_totals()."""
        assert await store.purge_totals() == PurgeTotals()
        first = await _put(store, task="t", queue="q")
        await _put(store, task="t", queue="q")
        await store.claim(queues=None, limit=2, now=1.0, lease=10.0)
        await store.settle([Success(first, 1)], now=3.0)
        await store.cancel(await _put(store, task="u"), now=3.0)
        await _put(store)  # the newest job and event: kept
        assert await store.purge(before=10.0) == 2
        totals = await store.purge_totals()
        assert totals.version > 0
        assert dict(totals.tallies) == {
            ("t", "q", "enqueued", 0): (1, 0.0),
            ("t", "q", "started", 0): (1, 0.0),
            ("t", "q", "succeeded", 0): (1, 0.0),
            ("t", "q", "duration:succeeded", 8): (1, 2.0),
            ("t", "q", "attempts", 1): (1, 1.0),
            ("u", "default", "enqueued", 0): (1, 0.0),
            ("u", "default", "cancelled", 0): (1, 0.0),
        }
        assert {e.job_id for _, e in await store.events()}.isdisjoint({first})
        version = totals.version
        assert await store.purge(before=10.0) == 0
        assert (await store.purge_totals()).version == version  # nothing deleted

    async def test_purge_keeps_the_job_of_the_newest_event(self, store: Store) -> None:
        """No event of a purged job outlives it, so none is left without its job."""
        first = await _put(store)
        await _put(store)
        await _claim_one(store, 1.0)
        await store.settle([Success(first, 1)], now=2.0)  # the newest event
        assert await store.purge(before=10.0) == 0
        await _put(store, 3.0)
        assert await store.purge(before=10.0) == 1
        jobs = {job.id for job in await store.list(limit=None)}
        assert {e.job_id for _, e in await store.events()} <= jobs


class _SchedulingStore(Store, ScheduleStore, Protocol):
    """A store that keeps schedules too."""


def _every(
    *, misfire: MissedTickBehavior = MissedTickBehavior.SKIP, max_burst: int = 100
) -> Schedule:
    """A schedule "tick" of task "t", every 10 s from 0."""
    return Schedule.create(
        "tick",
        "t",
        every=10.0,
        misfire=misfire,
        start=0.0,
        max_burst=max_burst,
        now=0.0,
    )


class ScheduleStoreContract:
    """The tests every store that keeps schedules passes (a ScheduleStore).

    Subclass it beside :class:`StoreContract`, with the same ``store``
    fixture. Example::

        class TestMyStore(StoreContract, ScheduleStoreContract):
            @pytest.fixture
            async def store(self):
                store = MyStore()
                yield store
                await store.aclose()
    """

    pytestmark = pytest.mark.trio

    @pytest.fixture
    def store(self) -> _SchedulingStore:
        """Override in a subclass: yield a fresh, empty store, then close it."""
        raise TypeError(
            f"{type(self).__name__} must define a `store` fixture that yields "
            "a fresh, empty store (see jobkit.testing.store_contract)"
        )

    async def test_store_fires_jobs_with_the_schedule_s_fields(
        self, store: _SchedulingStore
    ) -> None:
        """fire_schedules enqueues a job per slot with the schedule's payload and
        options."""
        s = Schedule.create(
            "nightly",
            "report",
            every=10,
            start=0.0,
            now=0.0,
            payload={"n": 1},
            queue="reports",
            priority=3,
            max_attempts=4,
            misfire=MissedTickBehavior.BURST,
        )
        await store.put_schedule(s)
        fired = await store.fire_schedules(now=25.0)
        assert [
            (f.schedule, f.task, f.queue, f.slot, f.run_at) for f in fired.firings
        ] == [
            ("nightly", "report", "reports", slot, slot) for slot in (0.0, 10.0, 20.0)
        ]
        assert fired.next_slot == 30.0
        jobs = [await store.get(f.job_id) for f in fired.firings]
        assert [
            (j.unique_key, j.payload, j.priority, j.max_attempts, j.created_at)
            for j in jobs
        ] == [
            (f"schedule:nightly:{slot!r}", {"n": 1}, 3, 4, 25.0)
            for slot in (0.0, 10.0, 20.0)
        ]
        [stored] = await store.schedules()
        assert (stored.next_slot, stored.last_slot, stored.updated_at) == (
            30.0,
            20.0,
            25.0,
        )
        again = await store.fire_schedules(now=25.0)
        assert again.firings == [] and again.next_slot == 30.0

    async def test_same_definition_keeps_the_next_slot_and_a_change_replaces(
        self,
        store: _SchedulingStore,
    ) -> None:
        """Re-declaring unchanged keeps the stored state; a changed one starts
        afresh."""
        await store.put_schedule(_every())
        await store.fire_schedules(now=15.0)
        kept = await store.put_schedule(
            Schedule.create("tick", "t", every=10, start=0.0, now=99.0)
        )
        assert (kept.next_slot, kept.last_slot, kept.created_at) == (20.0, 10.0, 0.0)
        changed = Schedule.create("tick", "t", every=20, start=0.0, now=99.0)
        assert await store.put_schedule(changed) == changed
        assert [
            (s.every, s.next_slot, s.last_slot) for s in await store.schedules()
        ] == [(20.0, 0.0, None)]

    async def test_schedules_are_listed_by_name_and_removed(
        self, store: _SchedulingStore
    ) -> None:
        """schedules() lists by name; remove_schedule deletes one and leaves its
        jobs."""
        for name in ("b", "a"):
            await store.put_schedule(Schedule.create(name, "t", every=5, now=0.0))
        fired = await store.fire_schedules(now=0.0)
        assert [f.schedule for f in fired.firings] == ["a", "b"]
        assert [s.name for s in await store.schedules()] == ["a", "b"]
        assert await store.remove_schedule("a") is True
        assert await store.remove_schedule("a") is False
        assert [s.name for s in await store.schedules()] == ["b"]
        assert len(await store.list()) == 2
        assert (await store.fire_schedules(now=1.0)).next_slot == 5.0

    async def test_stores_refuse_what_is_not_a_schedule(
        self, store: _SchedulingStore
    ) -> None:
        """put_schedule refuses a non-Schedule and a broken one, storing nothing."""
        with pytest.raises(TypeError, match=r"expected a jobkit\.Schedule"):
            await store.put_schedule({"name": "x"})  # type: ignore[arg-type]
        broken = attrs.evolve(_every(), cron="* * * * *")
        with pytest.raises(ValueError, match="exactly one of every and cron"):
            await store.put_schedule(broken)
        assert await store.schedules() == []

    async def test_a_capped_burst_is_logged(
        self, store: _SchedulingStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When BURST drops slots past max_burst, a warning names the schedule and
        the range."""
        await store.put_schedule(_every(misfire=MissedTickBehavior.BURST, max_burst=2))
        with caplog.at_level(logging.WARNING, logger="jobkit"):
            fired = await store.fire_schedules(now=1000.0)
        assert [f.slot for f in fired.firings] == [990.0, 1000.0]
        [record] = [r for r in caplog.records if r.name == "jobkit"]
        assert (
            "schedule 'tick' missed more than max_burst=2 slots" in record.getMessage()
        )
        dropped = (record.__dict__["dropped_from"], record.__dict__["dropped_to"])
        assert dropped == (0.0, 980.0)
