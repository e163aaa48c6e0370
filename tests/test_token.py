"""CancellationToken and cancel_on_signals."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from types import FrameType

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import jobkit


async def cancel_at(token: jobkit.CancellationToken, instant: float) -> None:
    await trio.sleep_until(instant)
    token.cancel()


async def test_wait_returns_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """wait() blocks until cancel(), then every waiter returns at that instant."""
    token = jobkit.CancellationToken()
    woke: list[float] = []

    async def waiter() -> None:
        await token.wait()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(waiter)
        nursery.start_soon(cancel_at, token, 12.0)
    assert woke == [12.0, 12.0, 12.0]
    assert token.cancelled


async def test_wait_on_a_cancelled_token_returns_at_once_but_checkpoints() -> None:
    """wait() on a cancelled token returns without blocking, yet is a checkpoint."""
    token = jobkit.CancellationToken()
    token.cancel()
    await token.wait()
    with trio.CancelScope() as scope:
        scope.cancel()
        await token.wait()
        pytest.fail("wait() did not checkpoint")


async def test_cancel_is_idempotent_and_sticky() -> None:
    """cancel() twice is harmless and a token never becomes uncancelled."""
    token = jobkit.CancellationToken()
    assert not token.cancelled
    assert repr(token) == "<jobkit.CancellationToken active>"
    token.cancel()
    token.cancel()
    assert token.cancelled
    assert repr(token) == "<jobkit.CancellationToken cancelled>"


def test_children_follow_parents_never_the_reverse() -> None:
    """A parent cancels its whole subtree; a child cancels only its own."""
    root = jobkit.CancellationToken()
    a, b = root.child(), root.child()
    a1, a2 = a.child(), a.child()
    a1.cancel()
    assert [t.cancelled for t in (root, a, b, a1, a2)] == [
        False,
        False,
        False,
        True,
        False,
    ]
    a.cancel()
    assert [t.cancelled for t in (root, a, b, a1, a2)] == [
        False,
        True,
        False,
        True,
        True,
    ]
    root.cancel()
    assert all(t.cancelled for t in (root, a, b, a1, a2))


def test_child_of_cancelled_token_starts_cancelled() -> None:
    """child() of a cancelled token is born cancelled, and so are its children."""
    token = jobkit.CancellationToken()
    token.cancel()
    child = token.child()
    assert child.cancelled
    assert child.child().cancelled


def test_dropped_children_are_not_kept_alive() -> None:
    """A parent does not keep its children alive: dropped children are collected."""
    parent = jobkit.CancellationToken()
    refs = [weakref.ref(parent.child()) for _ in range(1000)]
    cancelled = parent.child()
    cancelled.cancel()
    refs.append(weakref.ref(cancelled))
    del cancelled
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_dropped_middle_token_still_links_grandchild() -> None:
    """Dropping an intermediate token does not cut a live grandchild off the root."""
    root = jobkit.CancellationToken()
    grandchild = root.child().child()
    gc.collect()
    root.cancel()
    assert grandchild.cancelled


def test_cancelled_child_releases_its_parent() -> None:
    """A cancelled child no longer holds its parent alive."""
    parent = jobkit.CancellationToken()
    child = parent.child()
    ref = weakref.ref(parent)
    child.cancel()
    del parent
    gc.collect()
    assert ref() is None


# A random forest of tokens and a random sequence of cancels: a token is
# cancelled exactly when it or one of its ancestors was cancelled.
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=30),
    st.lists(st.integers(0, 30), max_size=10),
)
def test_cancellation_is_exactly_the_ancestor_closure(
    parents: list[int], cancels: list[int]
) -> None:
    """A token is cancelled iff it or an ancestor was, whatever the tree and order."""
    tokens = [jobkit.CancellationToken()]
    parent_of: list[int | None] = [None]
    for p in parents:
        index = p % len(tokens)
        tokens.append(tokens[index].child())
        parent_of.append(index)
    chosen = {c % len(tokens) for c in cancels}
    for c in cancels:
        tokens[c % len(tokens)].cancel()

    def expected(i: int) -> bool:
        node: int | None = i
        while node is not None:
            if node in chosen:
                return True
            node = parent_of[node]
        return False

    assert [t.cancelled for t in tokens] == [expected(i) for i in range(len(tokens))]


async def test_cancel_scope_cancels_its_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cancel_scope() stops the block at the next checkpoint after cancel()."""
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_at, token, 4.0)
        with token.cancel_scope() as scope:
            await trio.sleep(100)
    assert scope.cancelled_caught
    assert trio.current_time() == 4.0


async def test_cancel_scope_takes_effect_synchronously() -> None:
    """After a sync cancel() inside trio, the very next checkpoint is cancelled."""
    token = jobkit.CancellationToken()
    with token.cancel_scope() as scope:
        token.cancel()
        assert scope.cancel_called
        await trio.lowlevel.checkpoint()
        pytest.fail("not cancelled")
    assert scope.cancelled_caught


async def test_cancel_scope_of_cancelled_token_starts_cancelled() -> None:
    """cancel_scope() on a cancelled token gives an already-cancelled scope."""
    token = jobkit.CancellationToken()
    token.cancel()
    with token.cancel_scope() as scope:
        assert scope.cancel_called
        await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_cancel_scope_through_a_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A scope tied to a child token is cancelled when the parent is."""
    parent = jobkit.CancellationToken()
    child = parent.child()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_at, parent, 2.5)
        with child.cancel_scope():
            await trio.sleep_forever()
    assert trio.current_time() == 2.5


async def test_cancel_scope_left_normally_is_not_affected_later() -> None:
    """Once its block is left, a scope is no longer tied to the token."""
    token = jobkit.CancellationToken()
    with token.cancel_scope() as scope:
        await trio.lowlevel.checkpoint()
    token.cancel()
    assert not scope.cancel_called


async def test_run_until_cancelled_returns_the_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """run_until_cancelled returns fn's value when fn finishes first."""
    token = jobkit.CancellationToken()

    async def work(x: int, y: int) -> int:
        await trio.sleep(3)
        return x + y

    assert await token.run_until_cancelled(work, 2, 3) == 5
    assert trio.current_time() == 3.0


async def test_run_until_cancelled_cancels_fn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """If the token is cancelled first, fn is cancelled and the result is None."""
    token = jobkit.CancellationToken()
    cleaned_up: list[float] = []

    async def work() -> str:
        try:
            await trio.sleep(10)
        finally:
            cleaned_up.append(trio.current_time())
        return "done"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_at, token, 4.0)
        assert await token.run_until_cancelled(work) is None
    assert cleaned_up == [4.0]


async def test_run_until_cancelled_on_cancelled_token_never_calls_fn() -> None:
    """With the token already cancelled, fn is not even started."""
    token = jobkit.CancellationToken()
    token.cancel()
    called = []

    async def work() -> int:
        called.append(1)
        return 1

    assert await token.run_until_cancelled(work) is None
    assert called == []


async def test_run_until_cancelled_lets_errors_through() -> None:
    """An error from fn propagates unchanged."""
    token = jobkit.CancellationToken()

    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await token.run_until_cancelled(boom)


@pytest.mark.parametrize(
    ("cancel_time", "runs_expected", "end", "next_deadline"),
    [
        # during the third run: it finishes, then the loop stops
        (22.0, [(0.0, 0.0), (10.0, 10.0), (20.0, 20.0)], 24.0, 30.0),
        # between ticks: the loop stops at once, the tick at 20 not consumed
        (15.0, [(0.0, 0.0), (10.0, 10.0)], 15.0, 20.0),
    ],
)
async def test_periodic_loop_stops_without_losing_a_tick(
    autojump_clock: trio.testing.MockClock,
    cancel_time: float,
    runs_expected: list[tuple[float, float]],
    end: float,
    next_deadline: float,
) -> None:
    """Racing a cancel-safe tick against the token: work in progress finishes."""
    token = jobkit.CancellationToken()
    ticker = jobkit.interval(10.0, missed_tick_behavior=jobkit.MissedTickBehavior.SKIP)
    runs: list[tuple[float, float]] = []

    async def periodic() -> None:
        while (instant := await token.run_until_cancelled(ticker.tick)) is not None:
            started = trio.current_time()
            await trio.sleep(4)  # the work, not interrupted by the token
            runs.append((instant, started))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(periodic)
        nursery.start_soon(cancel_at, token, cancel_time)
    assert runs == runs_expected
    assert trio.current_time() == end
    assert ticker.deadline == next_deadline


def test_token_made_outside_trio_works_in_several_runs() -> None:
    """A token is not bound to a run: made and cancelled outside trio, used in runs."""
    token = jobkit.CancellationToken()

    async def peek() -> bool:
        with trio.move_on_after(1):
            await token.wait()
        return token.cancelled

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(peek, clock=clock) is False
    token.cancel()
    assert trio.run(peek) is True
    assert trio.run(token.run_until_cancelled, trio.sleep_forever) is None


async def test_cancel_from_a_worker_thread_wakes_trio_waiters() -> None:
    """cancel() called in a thread wakes a waiter and a scope in the trio run."""
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(token.wait)
        with token.cancel_scope() as scope:
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(token.cancel)
            await trio.sleep_forever()
    assert scope.cancelled_caught


def test_cancel_from_another_thread_outside_trio() -> None:
    """A plain thread (no trio) can cancel a token that a trio run is waiting on."""
    token = jobkit.CancellationToken()
    started = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(token.wait)
            await trio.testing.wait_all_tasks_blocked()
            started.set()
            with token.cancel_scope():
                await trio.sleep_forever()

    def canceller() -> None:
        started.wait()
        token.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    trio.run(main)
    thread.join()
    assert token.cancelled


def test_cancel_from_another_trio_run() -> None:
    """cancel() inside one trio run wakes waiters in another run in another thread."""
    token = jobkit.CancellationToken()
    waiting = threading.Event()

    async def waiter() -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(token.wait)
            await trio.testing.wait_all_tasks_blocked()
            waiting.set()
        return "woken"

    async def canceller() -> None:
        await trio.to_thread.run_sync(waiting.wait)
        token.cancel()

    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(trio.run(waiter)))
    thread.start()
    trio.run(canceller)
    thread.join()
    assert result == ["woken"]


# --- signals ------------------------------------------------------------------


@pytest.fixture
def safety_net() -> Iterator[list[int]]:
    """Catch SIGINT/SIGTERM outside the receiver so a failure cannot kill pytest."""
    caught: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_cancels_the_token(
    safety_net: list[int], signum: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SIGTERM or SIGINT sent to the process cancels the token."""
    token = jobkit.CancellationToken()
    caplog.set_level(logging.INFO, logger="jobkit")
    with trio.fail_after(30):  # a guard against hanging, not a timing check
        async with jobkit.cancel_on_signals(token) as yielded:
            assert yielded is token
            os.kill(os.getpid(), signum)
            await token.wait()
    assert safety_net == []
    assert f"{signum.name} received" in caplog.text


async def test_second_sigint_raises_keyboard_interrupt(safety_net: list[int]) -> None:
    """A SIGINT while already cancelled stops the block and raises KeyboardInterrupt."""
    token = jobkit.CancellationToken()
    reached_cleanup = []
    with trio.fail_after(30), pytest.raises(KeyboardInterrupt):
        async with jobkit.cancel_on_signals(token):
            os.kill(os.getpid(), signal.SIGINT)
            await token.wait()
            try:
                os.kill(os.getpid(), signal.SIGINT)
                await trio.sleep_forever()
            finally:
                reached_cleanup.append(True)
    assert reached_cleanup == [True]
    assert safety_net == []


async def test_sigterm_during_shutdown_stops_at_once(
    safety_net: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGTERM while already cancelled stops the block at once."""
    caplog.set_level(logging.INFO, logger="jobkit")
    token = jobkit.CancellationToken()
    token.cancel()
    reached_cleanup = []
    with trio.fail_after(30), pytest.raises(KeyboardInterrupt):
        async with jobkit.cancel_on_signals(token):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                await trio.sleep_forever()
            finally:
                reached_cleanup.append(True)
    assert reached_cleanup == [True]
    assert "SIGTERM during shutdown: stopping now" in caplog.text
    assert safety_net == []


async def test_only_the_chosen_signals_are_handled(safety_net: list[int]) -> None:
    """signals= limits the handled set; others keep their previous handler."""
    token = jobkit.CancellationToken()
    async with jobkit.cancel_on_signals(token, signals=[signal.SIGTERM]):
        os.kill(os.getpid(), signal.SIGINT)
        await trio.lowlevel.checkpoint()
        assert not token.cancelled
        os.kill(os.getpid(), signal.SIGTERM)
        await token.wait()
    assert safety_net == [signal.SIGINT]


async def test_handlers_are_restored_after_the_block(safety_net: list[int]) -> None:
    """Leaving the block puts back the handlers that were there before."""
    before = signal.getsignal(signal.SIGTERM)
    async with jobkit.cancel_on_signals(jobkit.CancellationToken()):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


async def test_body_errors_come_out_unwrapped(safety_net: list[int]) -> None:
    """An error in the block propagates as itself, not inside an ExceptionGroup."""
    with pytest.raises(ValueError, match="boom"):
        async with jobkit.cancel_on_signals(jobkit.CancellationToken()):
            await trio.lowlevel.checkpoint()
            raise ValueError("boom")


async def test_outer_cancellation_passes_through(
    safety_net: list[int], autojump_clock: trio.testing.MockClock
) -> None:
    """A cancel scope around the block still cancels it and catches its Cancelled."""
    token = jobkit.CancellationToken()
    with trio.move_on_after(5) as scope:
        async with jobkit.cancel_on_signals(token):
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == 5.0
    assert not token.cancelled


async def test_no_signals_is_refused() -> None:
    """An empty signal list is a clear error."""
    with pytest.raises(ValueError, match="at least one signal"):
        async with jobkit.cancel_on_signals(jobkit.CancellationToken(), signals=()):
            pass  # pragma: no cover
