"""The Queue facade: tasks, enqueue options, bad input and dead-letter operations."""

from __future__ import annotations

import functools
import inspect
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from helpers.stores import WatchedStore
from hypothesis import given
from hypothesis import strategies as st

import jobkit
from jobkit import Backoff, JobState, PreparedJob, Queue, RetryPolicy
from jobkit.core.job import Failure, TransitionError


def make_queue(now: float = 100.0) -> tuple[Queue, WatchedStore]:
    store = WatchedStore()
    return Queue(store, clock=lambda: now), store


async def test_enqueue_stores_payload_and_task_defaults() -> None:
    """Task.enqueue stores its arguments as the payload, with the task's defaults."""
    queue, _ = make_queue()

    @queue.task(retry=RetryPolicy(7, Backoff.constant(1)), queue="emails", priority=3)
    async def send(to: str, subject: str = "hi") -> None: ...

    job_id = await send.enqueue(to="ada@example.com")
    job = await queue.get(job_id)
    assert (job.task, job.payload) == ("send", {"to": "ada@example.com"})
    assert (job.queue, job.priority, job.max_attempts) == ("emails", 3, 7)
    assert (job.state, job.run_at, job.created_at) == (JobState.QUEUED, 100.0, 100.0)


async def test_positional_arguments_are_stored_by_name() -> None:
    """Positional arguments land in the payload under their parameter names."""
    queue, _ = make_queue()

    @queue.task()
    def resize(path: str, width: int = 800, **extra: Any) -> None: ...

    job_id = await resize.enqueue("a.png", 64, format="webp")
    assert (await queue.get(job_id)).payload == {
        "path": "a.png",
        "width": 64,
        "format": "webp",
    }


async def test_default_retry_policy_gives_max_attempts() -> None:
    """Without a policy of its own a task uses the queue's default_retry."""
    store = WatchedStore()
    queue = Queue(store, default_retry=RetryPolicy(2, Backoff.constant(1)))

    @queue.task()
    async def noop() -> None: ...

    assert noop.retry.max_attempts == 2
    assert (await queue.get(await noop.enqueue())).max_attempts == 2
    assert Queue().default_retry == RetryPolicy.default()


async def test_options_override_the_defaults() -> None:
    """options() sets delay, priority, queue and max_attempts of its jobs."""
    queue, _ = make_queue()

    @queue.task(queue="a", priority=1)
    async def work(n: int) -> None: ...

    job_id = await work.options(
        delay=timedelta(minutes=1), priority=9, queue="b", max_attempts=2
    ).enqueue(n=1)
    job = await queue.get(job_id)
    assert (job.run_at, job.priority, job.queue, job.max_attempts) == (
        160.0,
        9,
        "b",
        2,
    )
    aware = datetime(2030, 1, 1, tzinfo=UTC)
    at = await queue.enqueue(work, {"n": 2}, run_at=aware)
    assert (await queue.get(at)).run_at == aware.timestamp()


async def test_enqueue_by_name_and_by_task_agree() -> None:
    """queue.enqueue takes a Task or its name and stores the same job."""
    queue, _ = make_queue()

    @queue.task("reports.daily")
    async def daily(day: str) -> None: ...

    a = await queue.enqueue("reports.daily", {"day": "mon"})
    b = await queue.enqueue(daily, {"day": "mon"})
    ja, jb = await queue.get(a), await queue.get(b)
    assert (
        (ja.task, ja.payload)
        == (jb.task, jb.payload)
        == ("reports.daily", {"day": "mon"})
    )


async def test_unique_key_returns_the_active_job() -> None:
    """A held unique_key returns the active job's id; once done, a new job is made."""
    queue, _ = make_queue()

    @queue.task()
    async def sync_account(account: str) -> None: ...

    once = sync_account.options(unique_key="sync:acme")
    first = await once.enqueue(account="acme")
    assert await once.enqueue(account="acme") == first
    await queue.cancel(first)
    assert await once.enqueue(account="acme") != first


async def test_enqueue_many_is_one_atomic_call() -> None:
    """enqueue_many stores every job in one store call, or none if one is bad."""
    queue, store = make_queue()

    @queue.task()
    async def work(n: int) -> None: ...

    ids = await queue.enqueue_many(
        [
            work.prepare(n=1),
            work.options(priority=5).prepare(n=2),
            PreparedJob("work", {"n": 3}),
        ]
    )
    assert ids == [1, 2, 3]
    assert store.sizes("enqueue") == [3]
    assert [(await queue.get(i)).priority for i in ids] == [0, 5, 0]
    with pytest.raises(ValueError, match="unknown task 'wrok'"):
        await queue.enqueue_many([work.prepare(n=4), PreparedJob("wrok")])
    with pytest.raises(TypeError, match="takes PreparedJob records"):
        await queue.enqueue_many([("work", {"n": 5})])  # type: ignore[list-item]
    assert len(await queue.list()) == 3
    assert store.sizes("enqueue") == [3]


async def test_enqueue_wakes_listeners_for_the_job_queue() -> None:
    """Enqueueing tells the local listeners which queue got work."""
    queue, _ = make_queue()
    heard: list[str] = []
    queue.subscribe(ready=heard.append)

    @queue.task(queue="emails")
    async def send() -> None: ...

    await send.enqueue()
    await send.options(queue="bulk").enqueue()
    assert heard == ["emails", "bulk"]


async def test_bad_input_is_refused_with_a_clear_error() -> None:
    """Unknown task, non-JSON payload, bad arguments and bad options are refused."""
    queue, _ = make_queue()

    @queue.task()
    async def send(to: str) -> None: ...

    @queue.task()
    async def report() -> None: ...

    with pytest.raises(ValueError) as info:
        await queue.enqueue("sned", {"to": "x"})
    assert str(info.value) == (
        "unknown task 'sned'; tasks registered on this queue: 'report', 'send'"
    )
    with pytest.raises(TypeError, match=r"payload\['to'\] is a set"):
        await send.enqueue(to={"a"})  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"task 'send': missing a required argument: 'to'"
    ):
        await send.enqueue()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'too'"):
        await queue.enqueue("send", {"to": "x", "too": "y"})
    with pytest.raises(TypeError, match="payload must be a mapping"):
        await queue.enqueue("send", ["x"])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"delay must be finite and >= 0 seconds, got -1"
    ):
        await send.options(delay=-1).enqueue(to="x")
    with pytest.raises(ValueError, match="either delay or run_at, not both"):
        await queue.enqueue("send", {"to": "x"}, delay=1, run_at=5.0)
    with pytest.raises(ValueError, match="must be timezone-aware"):
        await queue.enqueue("send", {"to": "x"}, run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="max_attempts must be >= 1, got 0"):
        await queue.enqueue("send", {"to": "x"}, max_attempts=0)
    with pytest.raises(TypeError, match="priority must be an int"):
        await queue.enqueue("send", {"to": "x"}, priority=1.5)  # type: ignore[arg-type]
    assert await queue.list() == []


def test_task_registration_rules() -> None:
    """Duplicate names, positional-only parameters and bad options are refused."""
    queue = Queue()

    @queue.task
    async def send(to: str) -> str:
        return to

    assert isinstance(send, jobkit.Task) and queue.tasks["send"] is send
    with pytest.raises(ValueError, match="a task named 'send' is already registered"):

        @queue.task()
        async def send(to: str) -> None: ...  # type: ignore[no-redef]

    with pytest.raises(ValueError, match="parameter 'x' cannot be positional-only"):

        @queue.task()
        def bad(x: int, /) -> None: ...

    with pytest.raises(ValueError, match="timeout must be > 0"):
        queue.task(timeout=0)
    with pytest.raises(TypeError, match="retry must be a RetryPolicy"):
        queue.task(retry=3)  # type: ignore[call-overload]
    other = Queue()

    @other.task()
    async def elsewhere() -> None: ...

    with pytest.raises(ValueError, match="registered on another Queue"):
        queue._task_named(elsewhere)


async def test_calling_a_task_calls_the_function() -> None:
    """A Task is still the plain function when called directly."""
    queue = Queue()

    @queue.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @queue.task()
    def mul(a: int, b: int) -> int:
        return a * b

    assert await add(2, 3) == 5
    assert mul(2, 3) == 6
    assert (add.is_async, mul.is_async) == (True, False)


async def test_queue_without_store_says_how_to_give_one() -> None:
    """A queue with no store raises RuntimeError; the store can be set later."""
    queue = Queue()

    @queue.task()
    async def noop() -> None: ...

    assert not queue.has_store
    with pytest.raises(RuntimeError, match=r"Queue\(jobkit.SQLiteStore\('jobs.db'\)\)"):
        await noop.enqueue()
    with pytest.raises(TypeError, match=r"store must implement jobkit\.Store"):
        queue.store = "jobs.db"  # type: ignore[assignment]
    queue.store = WatchedStore()
    assert await noop.enqueue() == 1


async def test_dead_letters_are_listed_requeued_and_discarded() -> None:
    """dead() lists failed jobs; requeue gives fresh attempts; discard ends them."""
    queue, store = make_queue()

    @queue.task()
    async def fragile(n: int) -> None: ...

    ids = await queue.enqueue_many([fragile.prepare(n=i) for i in range(3)])
    for job in await store.claim(queues=None, limit=3, now=100.0, lease=30.0):
        await store.settle([Failure(job.id, 1, "boom", retry_at=None)], now=101.0)
    dead = await queue.dead()
    assert [(j.id, j.last_error) for j in dead] == [(i, "boom") for i in ids]
    assert [j.id for j in await queue.list(state="dead", limit=2)] == ids[:2]
    requeued = await queue.requeue(ids[0])
    assert (requeued.state, requeued.attempts, requeued.run_at) == (
        JobState.QUEUED,
        0,
        100.0,
    )
    assert (await queue.discard(ids[1])).state is JobState.CANCELLED
    assert [j.id for j in await queue.dead()] == [ids[2]]
    stats = await queue.counts()
    assert (stats.get("default", JobState.QUEUED), stats.total(JobState.DEAD)) == (1, 1)
    kinds = [e.kind for _, e in await queue.events(job_id=ids[0])]
    assert kinds[-1] is jobkit.EventKind.REQUEUED
    with pytest.raises(TransitionError):
        await queue.requeue(ids[0])
    with pytest.raises(ValueError, match="unknown job state 'deadd'"):
        await queue.list(state="deadd")


async def test_cancel_only_touches_queued_jobs() -> None:
    """cancel() cancels a queued job and refuses a missing one."""
    queue, _ = make_queue()

    @queue.task()
    async def noop() -> None: ...

    job_id = await noop.enqueue()
    assert (await queue.cancel(job_id)).state is JobState.CANCELLED
    with pytest.raises(jobkit.JobNotFound):
        await queue.cancel(999)


def test_queue_created_outside_trio_works_in_several_runs() -> None:
    """A Queue made at import time serves workers and producers in later trio runs."""
    queue = Queue(WatchedStore(), clock=trio.current_time)

    @queue.task()
    async def noop() -> int:
        return 1

    async def one_round() -> JobState:
        token = jobkit.CancellationToken()
        async with trio.open_nursery() as nursery:
            await nursery.start(jobkit.Worker(queue, shutdown=token).run)
            job_id = await noop.enqueue()
            await trio.sleep(1)
            token.cancel()
        return (await queue.get(job_id)).state

    import jobkit.testing

    assert jobkit.testing.run_virtual(one_round) is JobState.SUCCEEDED
    assert jobkit.testing.run_virtual(one_round) is JobState.SUCCEEDED


@given(
    payloads=st.lists(
        st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                ),
                max_leaves=5,
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_payloads_round_trip_in_order(payloads: list[dict[str, Any]]) -> None:
    """Any JSON payloads enqueued together come back unchanged, with ids in order."""
    import jobkit.testing

    async def main() -> list[dict[str, Any]]:
        queue, _ = make_queue()

        @queue.task()
        async def anything(**kwargs: Any) -> None: ...

        ids = await queue.enqueue_many([PreparedJob("anything", p) for p in payloads])
        assert ids == sorted(ids)
        return [(await queue.get(i)).payload for i in ids]

    assert jobkit.testing.run_virtual(main) == payloads


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "extra"]), unique=True),
    st.booleans(),
)
def test_prepare_agrees_with_signature_binding(keys: list[str], by_name: bool) -> None:
    """prepare and enqueue_many accept, order and refuse as Signature.bind does."""
    queue = Queue()

    @queue.task()
    async def work(a: int, b: int = 0, *, c: int, d: int = 1) -> None: ...

    kwargs = {key: i for i, key in enumerate(keys)}
    try:
        bound = inspect.signature(work.fn).bind(**kwargs)
    except TypeError as exc:
        expected: dict[str, Any] | str = f"task 'work': {exc}"
    else:
        expected = dict(bound.arguments)
    try:
        if by_name:
            # By name the payload is stored as given; only the check applies.
            queue._resolve(PreparedJob("work", kwargs), 0.0)
            payload = {key: kwargs[key] for key in expected}
        else:
            payload = work.prepare(**kwargs).payload
    except TypeError as exc:
        assert str(exc) == expected
    else:
        assert isinstance(expected, dict)
        assert list(payload.items()) == list(expected.items())


# -- waiting for a job -------------------------------------------------------------


def virtual_queue() -> Queue:
    return Queue(jobkit.MemoryStore(), clock=trio.current_time)


async def test_wait_returns_at_the_instant_the_worker_finishes_the_job(
    autojump_clock: Any,
) -> None:
    """A job run by a worker of this process ends the wait at once, not at a poll."""
    queue = virtual_queue()

    @queue.task()
    async def slow(n: int) -> int:
        await trio.sleep(2.5)
        return n * 2

    async with trio.open_nursery() as nursery:
        await nursery.start(jobkit.run_worker, queue)
        job_id = await slow.enqueue(n=21)
        job = await queue.wait(job_id, poll_interval=100)
        assert (job.state, job.result, trio.current_time()) == (
            JobState.SUCCEEDED,
            42,
            2.5,
        )
        nursery.cancel_scope.cancel()
    assert queue._wakeups.jobs._events == {}


async def test_wait_returns_a_dead_job_with_its_error(autojump_clock: Any) -> None:
    """A job that fails for good ends the wait too; the caller reads its error."""
    queue = virtual_queue()

    @queue.task(retry=RetryPolicy(2, Backoff.constant(3)))
    async def broken() -> None:
        raise ValueError("no such user")

    async with trio.open_nursery() as nursery:
        await nursery.start(jobkit.run_worker, queue)
        job = await queue.wait(await broken.enqueue(), poll_interval=100)
        nursery.cancel_scope.cancel()
    assert (job.state, job.attempts, trio.current_time()) == (JobState.DEAD, 2, 3.0)
    assert job.last_error is not None
    assert job.last_error.startswith("ValueError: no such user")


async def test_wait_is_woken_by_a_cancel_from_this_process(autojump_clock: Any) -> None:
    """Queue.cancel wakes a waiter on that job at the instant it cancels."""
    queue = virtual_queue()

    @queue.task()
    async def later() -> None: ...

    job_id = await queue.enqueue("later", {}, delay=60)
    results: list[tuple[JobState, float]] = []

    async def waiter() -> None:
        job = await queue.wait(job_id, poll_interval=100)
        results.append((job.state, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)  # two waiters on one job both wake
        await trio.sleep(7)
        await queue.cancel(job_id)
    assert results == [(JobState.CANCELLED, 7.0)] * 2


async def test_wait_sees_another_process_finish_the_job_at_its_next_poll(
    autojump_clock: Any,
) -> None:
    """A change made through another Queue (another process) is seen by polling."""
    store = jobkit.MemoryStore()
    here = Queue(store, clock=trio.current_time)
    elsewhere = Queue(store, clock=trio.current_time)

    @here.task()
    async def t() -> None: ...

    job_id = await t.enqueue()
    seen: list[float] = []

    async def waiter() -> None:
        await here.wait(job_id, poll_interval=2)
        seen.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        await elsewhere.cancel(job_id)  # its own watchers, not ``here``'s
    assert seen == [6.0]  # polls at 0, 2, 4: the one at 6 finds it


async def test_wait_returns_at_once_for_a_finished_job() -> None:
    """A job that has already finished is returned without waiting."""
    queue = virtual_queue()

    @queue.task()
    async def t() -> None: ...

    job_id = await t.enqueue()
    await queue.cancel(job_id)
    with trio.fail_after(1):
        assert (await queue.wait(job_id)).state is JobState.CANCELLED


async def test_wait_for_an_unknown_job_raises_job_not_found() -> None:
    """Waiting for an id no job has raises JobNotFound, and leaves no watcher."""
    queue = virtual_queue()
    with pytest.raises(jobkit.JobNotFound):
        await queue.wait(99)
    assert queue._wakeups.jobs._events == {}


async def test_wait_under_a_timeout_leaves_no_watcher(autojump_clock: Any) -> None:
    """A wait cut short by trio's move_on_after returns nothing and cleans up."""
    queue = virtual_queue()

    @queue.task()
    async def t() -> None: ...

    job_id = await t.enqueue()
    with trio.move_on_after(3) as scope:
        await queue.wait(job_id, poll_interval=1)
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0
    assert queue._wakeups.jobs._events == {}


@pytest.mark.parametrize(
    ("interval", "error"),
    [(0, ValueError), (-1, ValueError), ("1s", TypeError), (float("nan"), ValueError)],
)
async def test_wait_refuses_a_bad_poll_interval(interval: Any, error: type) -> None:
    """poll_interval must be a positive number of seconds or a timedelta."""
    queue = virtual_queue()
    with pytest.raises(error, match="poll_interval"):
        await queue.wait(1, poll_interval=interval)


async def test_wait_is_woken_when_a_worker_reaps_the_job(autojump_clock: Any) -> None:
    """A job whose worker died ends DEAD when reaped, and the wait ends then."""
    queue = virtual_queue()

    @queue.task(retry=RetryPolicy(1, Backoff.constant(1)))
    async def t() -> None: ...

    job_id = await t.enqueue()
    # Claimed by a worker that dies at once: its 30 s lease runs out unrenewed.
    await queue.store.claim(queues=None, limit=1, now=0.0, lease=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(jobkit.run_worker, queue, lease=30))
        job = await queue.wait(job_id, poll_interval=1000)
        nursery.cancel_scope.cancel()
    # The survivor reaps every lease / 3 = 10 s; at 30 the lease is not yet past.
    assert (job.state, trio.current_time()) == (JobState.DEAD, 40.0)


# -- purging ----------------------------------------------------------------------


async def test_purge_removes_finished_jobs_older_than_the_age(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Queue.purge takes an age (seconds or timedelta) counted back from its clock."""
    queue = virtual_queue()

    @queue.task()
    async def t() -> None: ...

    old = await t.enqueue()
    await queue.cancel(old)
    await trio.sleep(3600)
    young = await t.enqueue()
    await queue.cancel(young)
    await t.enqueue()
    await trio.sleep(600)
    caplog.set_level("INFO", logger="jobkit")
    # Now t=4200: ``old`` changed at 0, ``young`` at 3600.
    assert await queue.purge(4200) == 0  # before t=0: ``old`` is not older
    assert await queue.purge(timedelta(hours=1)) == 1  # before t=600
    assert "purged 1 finished job last changed over 3600s ago" in caplog.text
    assert [job.id for job in await queue.list()] == [young, young + 1]
    assert await queue.purge(0) == 1  # the queued newest job stays
    assert [job.id for job in await queue.list()] == [young + 1]


@pytest.mark.parametrize(
    ("age", "error"), [(-1, ValueError), ("7d", TypeError), (math.nan, ValueError)]
)
async def test_purge_refuses_a_bad_age(age: Any, error: type[Exception]) -> None:
    """older_than must be seconds >= 0 or a timedelta."""
    with pytest.raises(error, match="older_than"):
        await virtual_queue().purge(age)
