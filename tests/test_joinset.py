"""jobkit.open_join_set: completion order, limits, aborts and failures, virtual time."""

from __future__ import annotations

import functools
import heapq
import logging
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import jobkit
from jobkit.testing import run_virtual

Clock = trio.testing.MockClock


async def nap(seconds: float, value: Any = None) -> Any:
    await trio.sleep(seconds)
    return seconds if value is None else value


async def fail_after(seconds: float, message: str = "boom") -> None:
    await trio.sleep(seconds)
    raise ValueError(message)


class Recorder:
    """Tasks that note when they start, finish and get cancelled."""

    def __init__(self) -> None:
        self.started: list[tuple[str, float]] = []
        self.finished: list[tuple[str, float]] = []
        self.cancelled: list[tuple[str, float]] = []
        self.running = 0
        self.most_running = 0

    async def task(self, name: str, seconds: float) -> str:
        self.started.append((name, trio.current_time()))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.cancelled.append((name, trio.current_time()))
            raise
        finally:
            self.running -= 1
        self.finished.append((name, trio.current_time()))
        return name


async def drain(js: jobkit.JoinSet[Any]) -> list[tuple[jobkit.TaskResult[Any], float]]:
    out = []
    while (result := await js.join_next()) is not None:
        out.append((result, trio.current_time()))
    return out


# Completion order and limits


async def test_join_next_yields_results_in_completion_order(
    autojump_clock: Clock,
) -> None:
    """join_next returns each task's result when it finishes, earliest first."""
    async with jobkit.open_join_set() as js:
        for seconds in (3, 1, 2):
            js.spawn(nap, seconds)
        seen = await drain(js)
    assert [(r.value, t) for r, t in seen] == [(1, 1.0), (2, 2.0), (3, 3.0)]


async def test_limit_caps_concurrency_and_starts_the_next_when_a_slot_frees(
    autojump_clock: Clock,
) -> None:
    """With limit=2, tasks of 1, 2 and 3 s finish at exactly 1, 2 and 4 s."""
    rec = Recorder()
    async with jobkit.open_join_set(limit=2) as js:
        for name, seconds in (("a", 1), ("b", 2), ("c", 3)):
            js.spawn(rec.task, name, seconds)
        seen = await drain(js)
    assert [(r.value, t) for r, t in seen] == [("a", 1.0), ("b", 2.0), ("c", 4.0)]
    assert sorted(rec.started) == [("a", 0.0), ("b", 0.0), ("c", 1.0)]
    assert rec.most_running == 2


async def test_waiting_tasks_start_in_spawn_order(autojump_clock: Clock) -> None:
    """Tasks waiting for a slot start first-spawned, first-started."""
    rec = Recorder()
    async with jobkit.open_join_set(limit=1) as js:
        for name in "abcde":
            js.spawn(rec.task, name, 1)
        values = await js.join_all()
    assert values == list("abcde")
    assert rec.started == [(n, float(i)) for i, n in enumerate("abcde")]


async def test_spawn_never_waits_even_at_the_limit(autojump_clock: Clock) -> None:
    """spawn returns at once and len counts the tasks waiting for a slot too."""
    async with jobkit.open_join_set(limit=1) as js:
        handles = [js.spawn(nap, 10) for _ in range(5)]
        assert len(js) == 5
        assert not any(h.done for h in handles)
        assert trio.current_time() == 0.0
        await js.shutdown()


async def test_len_counts_finished_tasks_until_they_are_joined(
    autojump_clock: Clock,
) -> None:
    """A finished task stays counted by len until join_next takes it."""
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 1)
        js.spawn(nap, 5)
        await trio.sleep(2)
        assert len(js) == 2
        first = js.try_join_next()
        assert first is not None and first.value == 1
        assert len(js) == 1
        await js.join_next()
        assert len(js) == 0


async def test_join_next_on_an_empty_set_returns_none_at_once(
    autojump_clock: Clock,
) -> None:
    """join_next on a set with no tasks returns None without waiting."""
    async with jobkit.open_join_set() as js:
        assert await js.join_next() is None
        js.spawn(nap, 1)
        await js.join_next()
        assert await js.join_next() is None
    assert trio.current_time() == 1.0


async def test_try_join_next_never_waits(autojump_clock: Clock) -> None:
    """try_join_next returns None while nothing has finished, then the result."""
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 1)
        assert js.try_join_next() is None
        await trio.sleep(1.5)
        result = js.try_join_next()
        assert result is not None and result.value == 1
        assert js.try_join_next() is None


async def test_tasks_may_spawn_into_their_own_set(autojump_clock: Clock) -> None:
    """A task can spawn follow-up work into the set it runs in."""
    async with jobkit.open_join_set() as js:

        async def parent() -> str:
            await trio.sleep(1)
            js.spawn(nap, 1, "child")
            return "parent"

        js.spawn(parent)
        seen = await drain(js)
    assert [(r.value, t) for r, t in seen] == [("parent", 1.0), ("child", 2.0)]


async def test_concurrent_join_next_callers_share_the_results(
    autojump_clock: Clock,
) -> None:
    """Two tasks waiting in join_next each get a result, and None once it is empty."""
    got: list[object] = []
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 1)

        async def consumer() -> None:
            result = await js.join_next()
            got.append(None if result is None else result.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            nursery.start_soon(consumer)
    assert sorted(got, key=str) == [1, None]


# join_all


async def test_join_all_returns_values_in_completion_order(
    autojump_clock: Clock,
) -> None:
    """join_all returns every value, earliest finished first."""
    async with jobkit.open_join_set() as js:
        for seconds in (2, 3, 1):
            js.spawn(nap, seconds)
        assert await js.join_all() == [1, 2, 3]
        assert len(js) == 0


async def test_join_all_aborts_the_rest_and_raises_the_first_failure(
    autojump_clock: Clock,
) -> None:
    """join_all raises the task's own error and the other tasks end as cancelled."""
    rec = Recorder()
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 0.5)
        js.spawn(fail_after, 1, "bad row")
        js.spawn(rec.task, "slow", 5)
        with pytest.raises(ValueError, match="bad row") as caught:
            await js.join_all()
        assert trio.current_time() == 1.0
        assert caught.value.__traceback__ is not None
        rest = await drain(js)
    assert [(r.name, r.cancelled, t) for r, t in rest] == [("Recorder.task", True, 1.0)]
    assert rec.cancelled == [("slow", 1.0)]


async def test_join_all_raises_task_cancelled_for_an_aborted_task(
    autojump_clock: Clock,
) -> None:
    """A cancelled task makes join_all raise TaskCancelled naming it."""
    async with jobkit.open_join_set() as js:
        handle = js.spawn(nap, 5, name="victim")
        js.spawn(nap, 10)
        handle.abort()
        with pytest.raises(jobkit.TaskCancelled, match="'victim'"):
            await js.join_all()


async def test_cancelled_join_all_puts_the_collected_values_back(
    autojump_clock: Clock,
) -> None:
    """Cancelling join_all loses nothing: collected values stay in the set."""
    async with jobkit.open_join_set() as js:
        for seconds in (1, 2, 10):
            js.spawn(nap, seconds)
        with trio.move_on_after(5):
            await js.join_all()
        assert len(js) == 3
        assert await js.join_all() == [1, 2, 10]


async def test_cancelled_join_next_loses_nothing(autojump_clock: Clock) -> None:
    """A join_next cancelled while waiting leaves the result for the next call."""
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 3)
        with trio.move_on_after(1):
            await js.join_next()
        result = await js.join_next()
        assert result is not None and result.value == 3
        assert trio.current_time() == 3.0


# Aborting


@pytest.mark.parametrize(
    "keep_handles", [True, False], ids=["handles-kept", "handles-dropped"]
)
async def test_abort_all_keeps_tasks_as_cancelled_results(
    autojump_clock: Clock, keep_handles: bool
) -> None:
    """After abort_all every task still comes out of join_next, as cancelled."""
    rec = Recorder()
    async with jobkit.open_join_set(limit=2) as js:
        handles = [js.spawn(rec.task, n, 10) for n in "abcd"]
        if not keep_handles:
            del handles
        await trio.sleep(1)
        js.abort_all()
        assert len(js) == 4
        seen = await drain(js)
    assert sorted((r.value, r.cancelled, t) for r, t in seen) == [(None, True, 1.0)] * 4
    # The two waiting for a slot never started.
    assert sorted(rec.started) == [("a", 0.0), ("b", 0.0)]
    assert sorted(rec.cancelled) == [("a", 1.0), ("b", 1.0)]


async def test_abort_all_of_tasks_not_yet_started_never_runs_them(
    autojump_clock: Clock,
) -> None:
    """Tasks spawned and aborted before they got to run never run at all."""
    ran: list[int] = []

    async def note(i: int) -> None:
        ran.append(i)

    async with jobkit.open_join_set() as js:
        for i in range(3):
            js.spawn(note, i)
        js.abort_all()
        seen = await drain(js)
    assert ran == []
    assert [r.cancelled for r, _ in seen] == [True] * 3


async def test_tasks_spawned_after_abort_all_run_normally(
    autojump_clock: Clock,
) -> None:
    """abort_all cancels the tasks in the set, not the set."""
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 10)
        js.abort_all()
        js.spawn(nap, 2)
        seen = await drain(js)
    assert [(r.cancelled, r.value, t) for r, t in seen] == [
        (True, None, 0.0),
        (False, 2, 2.0),
    ]


async def test_abort_all_does_not_cancel_the_block(autojump_clock: Clock) -> None:
    """Code in the async with block keeps running after abort_all."""
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 10)
        await trio.sleep(1)
        js.abort_all()
        await trio.sleep(1)
        assert trio.current_time() == 2.0


async def test_handle_abort_cancels_only_that_task(autojump_clock: Clock) -> None:
    """handle.abort() cancels one running task; the others finish."""
    async with jobkit.open_join_set() as js:
        doomed = js.spawn(nap, 10, name="doomed")
        js.spawn(nap, 2, name="fine")
        await trio.sleep(1)
        doomed.abort()
        seen = await drain(js)
    assert [(r.name, r.cancelled, t) for r, t in seen] == [
        ("doomed", True, 1.0),
        ("fine", False, 2.0),
    ]
    assert doomed.done and doomed.result is not None and doomed.result.cancelled


async def test_aborting_a_task_waiting_for_a_slot_finishes_it_at_once(
    autojump_clock: Clock,
) -> None:
    """A task aborted while waiting for a slot comes out at once and never starts."""
    rec = Recorder()
    async with jobkit.open_join_set(limit=1) as js:
        js.spawn(rec.task, "first", 5)
        waiting = js.spawn(rec.task, "second", 5)
        js.spawn(rec.task, "third", 5)
        await trio.sleep(1)
        waiting.abort()
        result = await js.join_next()
        assert result is not None and result.cancelled and trio.current_time() == 1.0
        rest = await drain(js)
    assert [(r.value, t) for r, t in rest] == [("first", 5.0), ("third", 10.0)]
    assert [name for name, _ in rec.started] == ["first", "third"]


async def test_abort_of_a_finished_task_changes_nothing(autojump_clock: Clock) -> None:
    """abort() after the task finished leaves its result as it was."""
    async with jobkit.open_join_set() as js:
        handle = js.spawn(nap, 1, "done")
        await trio.sleep(2)
        handle.abort()
        assert await handle.join() == "done"
        result = await js.join_next()
        assert result is not None and result.value == "done"


async def test_shutdown_aborts_and_drains(autojump_clock: Clock) -> None:
    """shutdown cancels everything, waits for it, and leaves an empty usable set."""
    rec = Recorder()
    async with jobkit.open_join_set() as js:
        for name in "abc":
            js.spawn(rec.task, name, 10)
        await trio.sleep(1)
        await js.shutdown()
        assert len(js) == 0 and trio.current_time() == 1.0
        js.spawn(nap, 1)
        assert await js.join_all() == [1]
    assert sorted(rec.cancelled) == [("a", 1.0), ("b", 1.0), ("c", 1.0)]


# Leaving the block


async def test_leaving_the_block_cancels_running_tasks(autojump_clock: Clock) -> None:
    """Tasks still running when the block ends are cancelled (abort on drop)."""
    rec = Recorder()
    async with jobkit.open_join_set(limit=1) as js:
        js.spawn(rec.task, "running", 10)
        js.spawn(rec.task, "waiting", 10)
        await trio.sleep(3)
    assert trio.current_time() == 3.0
    assert rec.cancelled == [("running", 3.0)]
    assert [name for name, _ in rec.started] == ["running"]


async def test_an_error_in_the_block_propagates_unchanged(
    autojump_clock: Clock,
) -> None:
    """An exception raised in the block comes out as itself; the tasks are cancelled."""
    rec = Recorder()
    with pytest.raises(KeyError, match="oops"):
        async with jobkit.open_join_set() as js:
            js.spawn(rec.task, "bg", 10)
            await trio.sleep(1)
            raise KeyError("oops")
    assert rec.cancelled == [("bg", 1.0)]


async def test_spawn_into_a_closed_set_raises(autojump_clock: Clock) -> None:
    """spawn after the block has ended raises RuntimeError saying the set is closed."""
    async with jobkit.open_join_set() as js:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        js.spawn(nap, 1)


# Failures


async def test_a_failing_task_does_not_disturb_the_block_or_its_siblings(
    autojump_clock: Clock,
) -> None:
    """A failure is captured in its TaskResult; other tasks and the block go on."""
    async with jobkit.open_join_set() as js:
        js.spawn(fail_after, 1, "broken")
        js.spawn(nap, 2)
        first, second = await js.join_next(), await js.join_next()
    assert first is not None and isinstance(first.error, ValueError)
    assert first.value is None and not first.cancelled
    with pytest.raises(ValueError, match="broken"):
        first.unwrap()
    assert second is not None and second.unwrap() == 2


async def test_unjoined_failure_is_logged_with_traceback_and_name(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure nobody joined is logged on "jobkit" at the end, with its traceback."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_join_set() as js:
        js.spawn(fail_after, 1, "lost", name="importer")
        js.spawn(fail_after, 2, "seen", name="joined")
        await trio.sleep(3)
        # Take the second result only; the first is never looked at.
        assert caplog.records == []  # nothing is logged while it may still be joined
        first = js.try_join_next()
    assert first is not None and first.name == "importer"
    del first
    caplog.clear()

    async with jobkit.open_join_set() as js:
        js.spawn(fail_after, 1, "lost", name="importer")
        seen = js.spawn(fail_after, 2, "seen", name="joined")
        with pytest.raises(ValueError, match="seen"):
            await seen.join()
    assert trio.current_time() == 5.0
    records = [r for r in caplog.records if r.name == "jobkit"]
    assert [r.task for r in records] == ["importer"]  # type: ignore[attr-defined]
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "'importer'" in record.getMessage() and "lost" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert "in fail_after" in caplog.text  # the traceback reaches into the task


async def test_failure_seen_through_the_handle_is_not_logged(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure observed with handle.join() is not reported again at the end."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_join_set() as js:
        handle = js.spawn(fail_after, 1)
        with pytest.raises(ValueError):
            await handle.join()
    assert caplog.records == []


async def test_shutdown_logs_the_failures_it_discards(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """shutdown discards results, but a failure nobody saw is logged, not lost."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_join_set() as js:
        js.spawn(fail_after, 1, name="quiet")
        js.spawn(nap, 10)
        await trio.sleep(2)
        await js.shutdown()
        assert [r.task for r in caplog.records] == ["quiet"]  # type: ignore[attr-defined]
    assert len(caplog.records) == 1


async def test_cancelled_tasks_are_not_logged(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancellation is not a failure: the block's end logs nothing for it."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    async with jobkit.open_join_set() as js:
        js.spawn(nap, 10)
        js.spawn(nap, 10).abort()
    assert caplog.records == []


# Handles and results


async def test_handle_join_returns_value_error_or_task_cancelled(
    autojump_clock: Clock,
) -> None:
    """join() gives the value, raises the task's error, or raises TaskCancelled."""
    async with jobkit.open_join_set() as js:
        ok = js.spawn(nap, 1, "v")
        bad = js.spawn(fail_after, 2, "e")
        gone = js.spawn(nap, 3, name="gone")
        gone.abort()
        assert await ok.join() == "v"
        with pytest.raises(ValueError, match="e"):
            await bad.join()
        with pytest.raises(jobkit.TaskCancelled, match="'gone'"):
            await gone.join()
        assert await ok.join() == "v"  # joining again gives the same answer
        assert len(js) == 3  # joining a handle does not take the result out


async def test_handle_describes_its_task(autojump_clock: Clock) -> None:
    """A handle knows its name, whether it is done, and its result once done."""
    async with jobkit.open_join_set() as js:
        handle = js.spawn(nap, 1, "x")
        assert handle.name == "nap" and not handle.done and handle.result is None
        assert repr(handle) == "<TaskHandle 'nap' running>"
        await trio.sleep(1.5)
        assert handle.done
        assert handle.result == jobkit.TaskResult(name="nap", value="x")
        assert repr(handle) == "<TaskHandle 'nap' succeeded>"


async def test_default_names_come_from_the_function(autojump_clock: Clock) -> None:
    """Unnamed tasks are named after their function, through functools.partial too."""
    async with jobkit.open_join_set() as js:
        js.spawn(functools.partial(nap, 1))
        js.spawn(Recorder().task, "r", 2)
        names = [r.name for r, _ in await drain(js)]
    assert names == ["nap", "Recorder.task"]


def test_task_result_unwrap_and_immutability() -> None:
    """TaskResult is frozen; unwrap returns the value or raises the right error."""
    ok = jobkit.TaskResult(name="t", value=5)
    assert ok.unwrap() == 5
    error = OSError("disk")
    with pytest.raises(OSError, match="disk") as caught:
        jobkit.TaskResult(name="t", error=error).unwrap()
    assert caught.value is error
    with pytest.raises(jobkit.TaskCancelled) as cancelled:
        jobkit.TaskResult(name="t", cancelled=True).unwrap()
    assert cancelled.value.name == "t"
    with pytest.raises(AttributeError):
        ok.value = 6  # type: ignore[misc]


# Bad input


@pytest.mark.parametrize("limit", [0, -3])
async def test_limit_below_one_is_refused(limit: int) -> None:
    """A limit below 1 raises ValueError naming the value."""
    with pytest.raises(ValueError, match=f"limit must be >= 1.*got {limit}"):
        async with jobkit.open_join_set(limit=limit):
            pass


@pytest.mark.parametrize("limit", [2.5, "2", True])
async def test_limit_of_the_wrong_type_is_refused(limit: object) -> None:
    """A limit that is not a whole number raises TypeError naming it."""
    with pytest.raises(TypeError, match="limit must be a whole number"):
        async with jobkit.open_join_set(limit=limit):  # type: ignore[arg-type]
            pass


async def test_spawning_a_non_callable_is_refused(autojump_clock: Clock) -> None:
    """spawn of something that is not a function raises TypeError naming it."""
    async with jobkit.open_join_set() as js:
        with pytest.raises(TypeError, match="expects an async function, got 42"):
            js.spawn(42)  # type: ignore[arg-type]
        assert len(js) == 0


async def test_spawning_a_coroutine_object_gets_a_hint(autojump_clock: Clock) -> None:
    """Passing fn(args) instead of fn, args raises TypeError that shows the fix."""
    async with jobkit.open_join_set() as js:
        with pytest.raises(
            TypeError, match=r"spawn\(nap, \*args\), not spawn\(nap\(\*args\)\)"
        ):
            js.spawn(nap(1))  # type: ignore[arg-type]


async def test_a_sync_function_fails_its_task_with_a_clear_error(
    autojump_clock: Clock,
) -> None:
    """A plain function spawned by mistake ends its task with a TypeError saying why."""

    def not_async(x: int) -> int:
        return x

    async with jobkit.open_join_set() as js:
        js.spawn(not_async, 1)  # type: ignore[arg-type]
        result = await js.join_next()
    assert result is not None and isinstance(result.error, TypeError)
    assert "async def" in str(result.error) and "not_async" in str(result.error)


async def test_a_type_error_inside_a_task_is_kept_as_is(autojump_clock: Clock) -> None:
    """A TypeError raised by the task itself is not mistaken for a non-async fn."""

    async def broken() -> None:
        await trio.lowlevel.checkpoint()
        raise TypeError("inside")

    async with jobkit.open_join_set() as js:
        js.spawn(broken)
        result = await js.join_next()
    assert result is not None and str(result.error) == "inside"


def test_join_set_is_not_constructed_directly() -> None:
    """The docs send users to open_join_set; the class itself needs a nursery."""
    assert "open_join_set" in (jobkit.JoinSet.__doc__ or "")


# Invariants


@given(
    durations=st.lists(
        st.integers(min_value=0, max_value=20).map(lambda n: n / 4),
        min_size=0,
        max_size=25,
    ),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=6)),
    keep_handles=st.booleans(),
)
def test_join_next_invariants(
    durations: list[float], limit: int | None, keep_handles: bool
) -> None:
    """For any durations and limit: finish order, the cap, each task exactly once."""

    async def main() -> tuple[list[tuple[int, float]], int, list[float]]:
        running = 0
        most = 0
        starts: list[float] = []

        async def work(i: int, seconds: float) -> int:
            nonlocal running, most
            starts.append(trio.current_time())
            running += 1
            most = max(most, running)
            await trio.sleep(seconds)
            running -= 1
            return i

        out = []
        async with jobkit.open_join_set(limit=limit) as js:
            handles = [js.spawn(work, i, d) for i, d in enumerate(durations)]
            if not keep_handles:
                del handles
            while (result := await js.join_next()) is not None:
                out.append((result.unwrap(), trio.current_time()))
        return out, most, starts

    out, most, starts = run_virtual(main)
    ids = [i for i, _ in out]
    times = [t for _, t in out]
    assert sorted(ids) == list(range(len(durations)))  # every task exactly once
    assert times == sorted(times)  # completion order
    assert most <= (limit or len(durations))
    # The schedule is the list schedule of the durations in spawn order: each
    # task starts when the earliest slot frees up, and ends exactly then + d.
    free = [0.0] * (limit or max(len(durations), 1))
    expected_starts, expected_ends = [], []
    for d in durations:
        start = heapq.heappop(free)
        expected_starts.append(start)
        expected_ends.append(start + d)
        heapq.heappush(free, start + d)
    assert starts == expected_starts
    assert sorted(times) == sorted(expected_ends)
    assert all(times[i] == expected_ends[ids[i]] for i in range(len(ids)))
