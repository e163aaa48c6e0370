"""jobkit.open_supervisor: isolation, failure reporting, restarts and shutdown."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing

import jobkit

Clock = trio.testing.MockClock


async def nap(seconds: float, value: Any = "done") -> Any:
    await trio.sleep(seconds)
    return value


async def fail_after(seconds: float, message: str = "boom") -> None:
    await trio.sleep(seconds)
    raise ValueError(message)


def jobkit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jobkit"]


# Spawning and waiting


async def test_spawn_returns_at_once_and_the_block_waits(autojump_clock: Clock) -> None:
    """spawn does not wait; leaving the block waits for the slowest task."""
    async with jobkit.open_supervisor() as sup:
        handles = [sup.spawn(nap, s) for s in (3, 1, 2)]
        assert trio.current_time() == 0.0
        assert not any(h.done for h in handles)
    assert trio.current_time() == 3.0
    assert all(h.done for h in handles)


async def test_join_returns_the_value(autojump_clock: Clock) -> None:
    """handle.join() waits for the task and returns what it returned."""
    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(nap, 2, "answer")
        assert await handle.join() == "answer"
        assert trio.current_time() == 2.0


async def test_tasks_spawned_while_the_block_exits_are_waited_for(
    autojump_clock: Clock,
) -> None:
    """A task may spawn more work as the block ends; the block waits for it too."""
    async with jobkit.open_supervisor() as sup:

        async def parent() -> None:
            await trio.sleep(1)
            sup.spawn(nap, 5)

        sup.spawn(parent)
    assert trio.current_time() == 6.0
    assert sup.statistics().succeeded == 2


# Failures


async def test_unjoined_failure_is_logged_counted_and_passed_to_on_error(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure nobody waits for is logged with its traceback, counted, and hooked."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    hooked: list[tuple[jobkit.TaskHandle[Any], Exception, float]] = []
    async with jobkit.open_supervisor(
        name="mailer",
        on_error=lambda h, e: hooked.append((h, e, trio.current_time())),
    ) as sup:
        failing = sup.spawn(fail_after, 1, "smtp down", name="send-welcome")
        sibling = sup.spawn(nap, 5)
    # The sibling and the block carried on after the failure.
    assert trio.current_time() == 5.0 and sibling.result is not None
    assert sibling.result.value == "done"
    [(handle, error, when)] = hooked
    assert handle is failing and when == 1.0
    assert isinstance(error, ValueError) and str(error) == "smtp down"
    [record] = jobkit_records(caplog)
    assert record.levelno == logging.ERROR
    assert "'send-welcome'" in record.getMessage()
    assert "smtp down" in record.getMessage()
    assert record.task == "send-welcome"  # type: ignore[attr-defined]
    assert record.supervisor == "mailer"  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "in fail_after" in caplog.text  # the traceback reaches into the task
    stats = sup.statistics()
    assert (stats.failed, stats.unjoined_failures, stats.succeeded) == (1, 1, 1)


async def test_joined_failure_is_raised_and_not_reported(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone waiting in join() gets the error; it is not logged or hooked as well."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    hooked: list[object] = []
    async with jobkit.open_supervisor(on_error=lambda h, e: hooked.append(e)) as sup:
        handle = sup.spawn(fail_after, 1, "bad")
        with pytest.raises(ValueError, match="bad"):
            await handle.join()
    assert hooked == [] and jobkit_records(caplog) == []
    stats = sup.statistics()
    assert (stats.failed, stats.unjoined_failures) == (1, 0)


async def test_join_after_the_failure_was_reported_still_raises(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure that ended before anyone joined is reported; join() still raises it."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(fail_after, 1, "early")
        await trio.sleep(2)
        assert len(jobkit_records(caplog)) == 1
        with pytest.raises(ValueError, match="early"):
            await handle.join()
    assert sup.statistics().unjoined_failures == 1


async def test_a_cancelled_join_leaves_the_failure_to_be_reported(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """If the only joiner gave up before the failure, the failure is reported."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(fail_after, 3)
        with trio.move_on_after(1):
            await handle.join()
    assert [r.task for r in jobkit_records(caplog)] == ["fail_after"]  # type: ignore[attr-defined]


async def test_a_failing_on_error_hook_is_logged_and_does_not_stop_anything(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_error is logged; the supervisor and its tasks go on."""
    caplog.set_level(logging.ERROR, logger="jobkit")

    def broken_hook(handle: jobkit.TaskHandle[Any], error: Exception) -> None:
        raise RuntimeError("hook bug")

    async with jobkit.open_supervisor(on_error=broken_hook) as sup:
        sup.spawn(fail_after, 1)
        later = sup.spawn(nap, 3)
    assert later.result is not None and later.result.value == "done"
    messages = [r.getMessage() for r in jobkit_records(caplog)]
    assert len(messages) == 2 and "on_error hook" in messages[1]


async def test_an_error_in_the_block_cancels_the_tasks_and_propagates(
    autojump_clock: Clock,
) -> None:
    """An exception raised in the block comes out as itself; the tasks are cancelled."""
    with pytest.raises(KeyError, match="oops"):
        async with jobkit.open_supervisor() as sup:
            handle = sup.spawn(nap, 10)
            await trio.sleep(1)
            raise KeyError("oops")
    assert trio.current_time() == 1.0
    assert handle.result is not None and handle.result.cancelled


# Restarts


async def test_restart_delays_and_instants_are_exact(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A crashing task restarts after backoff(n) seconds, then fails for good."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    starts: list[float] = []

    async def crashy() -> None:
        starts.append(trio.current_time())
        await trio.sleep(1)
        raise ConnectionError("lost")

    policy = jobkit.Restart(max_restarts=3, backoff=lambda n: 2.0**n)
    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(crashy, restart=policy)
    # Runs 1 s, waits 2, 4, 8 s between runs.
    assert starts == [0.0, 3.0, 8.0, 17.0]
    assert trio.current_time() == 18.0
    assert handle.result is not None
    assert isinstance(handle.result.error, ConnectionError)
    stats = sup.statistics()
    assert (stats.restarted, stats.failed, stats.unjoined_failures) == (3, 1, 1)
    records = jobkit_records(caplog)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert [(r.restart, r.delay) for r in warnings] == [(1, 2.0), (2, 4.0), (3, 8.0)]  # type: ignore[attr-defined]
    assert all(r.exc_info is not None for r in warnings)
    assert [r.levelno for r in records] == [logging.WARNING] * 3 + [logging.ERROR]


async def test_restarted_task_that_recovers_returns_its_value(
    autojump_clock: Clock,
) -> None:
    """join() waits across restarts and returns the value of the run that succeeds."""
    runs = 0

    async def flaky() -> int:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"run {runs}")
        return runs

    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(flaky, restart=jobkit.Restart(max_restarts=5, backoff=1))
        assert await handle.join() == 3
        assert trio.current_time() == 2.0
    stats = sup.statistics()
    assert (stats.restarted, stats.succeeded, stats.failed) == (2, 1, 0)


async def test_restart_window_forgets_old_crashes(autojump_clock: Clock) -> None:
    """With `within`, only crashes inside the window count against max_restarts."""
    starts: list[float] = []

    async def crashes_on_schedule() -> None:
        starts.append(now := trio.current_time())
        # Long runs first (crashes far apart), then a quick crash.
        await trio.sleep(20 if now < 50 else 0.5)
        raise RuntimeError("crash")

    policy = jobkit.Restart(max_restarts=1, backoff=1, within=timedelta(seconds=10))
    async with jobkit.open_supervisor() as sup:
        sup.spawn(crashes_on_schedule, restart=policy)
    # Crashes at 20, 41 and 62 are each alone in their 10 s window; the crash
    # at 63.5 comes 1.5 s after the one at 62 and exhausts the window.
    assert starts == [0.0, 21.0, 42.0, 63.0]
    assert sup.statistics().restarted == 3


async def test_a_task_that_returns_or_is_cancelled_is_not_restarted(
    autojump_clock: Clock,
) -> None:
    """Restart applies to crashes only: returning or being aborted ends the task."""
    policy = jobkit.Restart(max_restarts=5)
    async with jobkit.open_supervisor() as sup:
        sup.spawn(nap, 1, restart=policy)
        aborted = sup.spawn(nap, 10, restart=policy)
        await trio.sleep(2)
        aborted.abort()
    stats = sup.statistics()
    assert (stats.restarted, stats.succeeded, stats.cancelled) == (0, 1, 1)


async def test_a_broken_backoff_function_fails_the_task_clearly(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A backoff function returning a negative delay fails the task with ValueError."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_supervisor() as sup:
        handle = sup.spawn(
            fail_after, 1, restart=jobkit.Restart(max_restarts=2, backoff=lambda n: -n)
        )
    assert handle.result is not None and isinstance(handle.result.error, ValueError)
    assert "Restart backoff(1) must be >= 0 seconds, got -1" in str(handle.result.error)
    assert isinstance(handle.result.error.__context__, ValueError)  # the crash itself


def test_restart_policy_validates_its_fields() -> None:
    """Restart refuses negative counts and delays and a zero window, naming them."""
    with pytest.raises(ValueError, match="max_restarts must be >= 0, got -1"):
        jobkit.Restart(max_restarts=-1)
    with pytest.raises(TypeError, match="max_restarts must be a whole number"):
        jobkit.Restart(max_restarts=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backoff must be >= 0 seconds, got -1"):
        jobkit.Restart(max_restarts=1, backoff=-1)
    with pytest.raises(ValueError, match="within must be > 0 seconds"):
        jobkit.Restart(max_restarts=1, within=0)
    assert jobkit.Restart(max_restarts=1, backoff=timedelta(minutes=1)).delay(1) == 60.0


# Aborting, cancelling, grace


async def test_abort_cancels_one_task(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """handle.abort() cancels that task alone; cancellation is not logged as failure."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    async with jobkit.open_supervisor() as sup:
        doomed = sup.spawn(nap, 10)
        other = sup.spawn(nap, 3)
        await trio.sleep(1)
        doomed.abort()
        with pytest.raises(jobkit.TaskCancelled):
            await doomed.join()
        assert trio.current_time() == 1.0
    assert other.result is not None and other.result.value == "done"
    assert jobkit_records(caplog) == []
    stats = sup.statistics()
    assert (stats.cancelled, stats.succeeded, stats.running) == (1, 1, 0)


async def test_a_task_aborted_before_it_starts_never_runs(
    autojump_clock: Clock,
) -> None:
    """abort() right after spawn means the function is never called."""
    ran: list[int] = []

    async def note() -> None:
        ran.append(1)

    async with jobkit.open_supervisor() as sup:
        sup.spawn(note).abort()
    assert ran == [] and sup.statistics().cancelled == 1


async def test_cancel_stops_all_tasks_at_once_and_closes(autojump_clock: Clock) -> None:
    """cancel() without grace cancels every task at that instant, refuses new ones."""
    async with jobkit.open_supervisor() as sup:
        for s in (5, 10, 20):
            sup.spawn(nap, s)
        await trio.sleep(2)
        sup.cancel()
        assert sup.cancel_called
        with pytest.raises(RuntimeError, match="'supervisor' is closed"):
            sup.spawn(nap, 1)
    assert trio.current_time() == 2.0
    assert sup.statistics().cancelled == 3


async def test_grace_lets_short_work_finish_then_cancels_the_rest(
    autojump_clock: Clock,
) -> None:
    """With grace, running tasks get that long to finish before being cancelled."""
    async with jobkit.open_supervisor(grace=10) as sup:
        quick = sup.spawn(nap, 5)
        slow = sup.spawn(nap, 20)
        await sup.shutdown()
        assert trio.current_time() == 10.0
    assert quick.result is not None and quick.result.value == "done"
    assert slow.result is not None and slow.result.cancelled


async def test_shutdown_returns_as_soon_as_the_tasks_are_done(
    autojump_clock: Clock,
) -> None:
    """A grace period is a limit, not a wait: shutdown ends when the last task does."""
    async with jobkit.open_supervisor() as sup:
        sup.spawn(nap, 3)
        await sup.shutdown(grace=timedelta(seconds=60))
        assert trio.current_time() == 3.0
    assert trio.current_time() == 3.0


async def test_workers_can_see_cancel_called_and_stop_on_their_own(
    autojump_clock: Clock,
) -> None:
    """During the grace period a worker loop sees cancel_called and returns."""
    jobs: list[float] = []

    async def worker(sup: jobkit.Supervisor) -> int:
        while not sup.cancel_called:
            await trio.sleep(3)  # one unit of work
            jobs.append(trio.current_time())
        return len(jobs)

    async with jobkit.open_supervisor(grace=10) as sup:
        handle = sup.spawn(worker, sup)
        await trio.sleep(7)
        sup.cancel()
    # Cancel at 7 lets the job in hand (6..9) finish; the worker then returns.
    assert jobs == [3.0, 6.0, 9.0] and trio.current_time() == 9.0
    assert handle.result is not None and handle.result.value == 3


async def test_tasks_waiting_to_restart_are_cancelled_at_once(
    autojump_clock: Clock,
) -> None:
    """cancel() with grace does not wait out a restart delay: no work is in hand."""
    async with jobkit.open_supervisor(grace=30) as sup:
        handle = sup.spawn(
            fail_after, 1, restart=jobkit.Restart(max_restarts=3, backoff=20)
        )
        await trio.sleep(2)
        sup.cancel()
    assert trio.current_time() == 2.0
    assert handle.result is not None and handle.result.cancelled


async def test_a_crash_during_the_grace_period_is_not_restarted(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Once cancel() was called, a crash is final and reported, not restarted."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    async with jobkit.open_supervisor(grace=10) as sup:
        sup.spawn(fail_after, 3, restart=jobkit.Restart(max_restarts=3))
        await trio.sleep(1)
        sup.cancel()
    assert trio.current_time() == 3.0
    stats = sup.statistics()
    assert (stats.restarted, stats.failed, stats.unjoined_failures) == (0, 1, 1)


async def test_a_token_cancels_the_supervisor(autojump_clock: Clock) -> None:
    """Anything with `await token.wait()` can trigger cancel()."""
    token = trio.Event()
    async with jobkit.open_supervisor(token=token) as sup:
        handle = sup.spawn(nap, 100)
        await trio.sleep(4)
        token.set()
    assert trio.current_time() == 4.0
    assert handle.result is not None and handle.result.cancelled


async def test_an_unused_token_does_not_keep_the_block_open(
    autojump_clock: Clock,
) -> None:
    """The block ends when its tasks do, even if the token never fires."""
    async with jobkit.open_supervisor(token=trio.Event()) as sup:
        sup.spawn(nap, 2)
    assert trio.current_time() == 2.0


async def test_spawn_after_the_block_raises(autojump_clock: Clock) -> None:
    """A supervisor whose block has ended refuses new tasks, saying it is closed."""
    async with jobkit.open_supervisor(name="jobs") as sup:
        pass
    with pytest.raises(RuntimeError, match="'jobs' is closed"):
        sup.spawn(nap, 1)


# Statistics


async def test_statistics_count_every_outcome(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """spawned, running, succeeded, failed, cancelled and restarted add up."""
    caplog.set_level(logging.CRITICAL, logger="jobkit")
    async with jobkit.open_supervisor() as sup:
        sup.spawn(nap, 1)
        sup.spawn(nap, 2)
        sup.spawn(fail_after, 1, restart=jobkit.Restart(max_restarts=1, backoff=1))
        aborted = sup.spawn(nap, 10)
        await trio.sleep(0.5)
        assert sup.statistics() == jobkit.SupervisorStatistics(
            spawned=4,
            running=4,
            succeeded=0,
            failed=0,
            cancelled=0,
            restarted=0,
            unjoined_failures=0,
        )
        aborted.abort()
    assert sup.statistics() == jobkit.SupervisorStatistics(
        spawned=4,
        running=0,
        succeeded=2,
        failed=1,
        cancelled=1,
        restarted=1,
        unjoined_failures=1,
    )


# Bad input


async def test_bad_spawn_arguments_are_refused(autojump_clock: Clock) -> None:
    """spawn names what is wrong: not callable, a coroutine object, a bad restart."""
    async with jobkit.open_supervisor() as sup:
        with pytest.raises(TypeError, match="expects an async function, got 'nope'"):
            sup.spawn("nope")  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match=r"spawn\(nap, \*args\), not spawn\(nap\(\*args\)\)"
        ):
            sup.spawn(nap(1))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"restart must be a jobkit\.Restart"):
            sup.spawn(nap, 1, restart=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="task name must be a string"):
            sup.spawn(nap, 1, name=7)  # type: ignore[arg-type]
    assert sup.statistics().spawned == 0


async def test_bad_supervisor_options_are_refused() -> None:
    """open_supervisor refuses a negative grace and a non-callable hook."""
    with pytest.raises(ValueError, match="grace must be >= 0 seconds, got -1"):
        async with jobkit.open_supervisor(grace=-1):
            pass
    with pytest.raises(TypeError, match="on_error must be callable"):
        async with jobkit.open_supervisor(on_error="log"):  # type: ignore[arg-type]
            pass


async def test_a_sync_function_fails_with_a_clear_error(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain function spawned by mistake fails its task with a TypeError: why."""
    caplog.set_level(logging.CRITICAL, logger="jobkit")

    def not_async() -> int:
        return 1

    async with jobkit.open_supervisor() as sup:
        handle: jobkit.TaskHandle[Any] = sup.spawn(not_async)  # type: ignore[arg-type]
    assert handle.result is not None and "async def" in str(handle.result.error)
