"""The simulation's clock: virtual time that jumps to the next deadline at once.

It also keeps timers of its own for the simulation's sleeps (latencies, the
producer's arrivals), which cost a fraction of a ``trio.sleep``: trio sleeps
by entering a cancel scope with a deadline and waking the task by cancelling
it, an exception raised and caught at every wake-up.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

__all__ = ["JumpingClock", "new_clock", "sleep", "sleep_until"]

# What trio's MockClock answers when nothing has a deadline: sleep "forever"
# (trio caps every wait at a day and asks again).
_FOREVER = 999_999_999.0

# A timer woken into a task that a deadline cancelled at the same instant
# must raise Cancelled as trio.sleep would there, without another
# checkpoint. trio has no public way to make one: without it, no timers.
_new_cancelled: Any = getattr(trio.Cancelled, "_create", None)

# The run, to ask whether a task waits in wait_all_tasks_blocked: also not
# public. A trio that moved any of these gets MockClock, which is slower.
_run_context: Any = getattr(
    getattr(trio._core, "_run", None), "GLOBAL_RUN_CONTEXT", None
)


def new_clock() -> trio.abc.Clock:
    """A clock for one simulated run: a JumpingClock where this trio allows it."""
    if _new_cancelled is None or _run_context is None:  # pragma: no cover
        return trio.testing.MockClock(autojump_threshold=0)
    return JumpingClock()


class JumpingClock(trio.abc.Clock):
    """Virtual time for one trio run, moved only by jumping to the next deadline.

    It behaves as ``trio.testing.MockClock(autojump_threshold=0)``, at less
    cost. trio asks a clock how long to sleep only when no task can run.
    MockClock answers with its threshold; trio then polls for I/O, finds
    none, jumps the clock, and runs the tasks whose deadlines came in the
    next pass of its loop, so every jump costs a whole idle pass. This clock
    jumps as it answers, and trio wakes those tasks in the same pass. The
    tasks that wake, and the order trio runs them in, are the same: the
    idle pass ran none, so it drew nothing from trio's scheduler random
    generator. The jump is computed as MockClock's is (the time to the
    deadline, added), so every time read is the same to the last bit.

    Its timers (:func:`sleep`) join trio's deadlines: the clock jumps to
    whichever comes first, and wakes the tasks of the timers due in the
    same pass as trio wakes those of its deadlines.

    Like MockClock at threshold 0, it jumps even while a thread runs (a
    SQLite store hands large transactions to one): time read by the thread's
    caller when it returns may lie past the deadline.

    Example::

        >>> import trio
        >>> from jobkit.sim._clock import JumpingClock, sleep
        >>> async def nap() -> float:
        ...     await sleep(3600)
        ...     await trio.sleep(60)
        ...     return trio.current_time()
        >>> trio.run(nap, clock=JumpingClock())
        3660.0
    """

    __slots__ = ("_now", "_runner", "_seq", "_timers")

    def __init__(self) -> None:
        self._now = 0.0
        # (deadline, sequence, [callback, or None once cancelled])
        self._timers: list[tuple[float, int, list[Callable[[], object] | None]]] = []
        self._seq = 0
        self._runner: Any = None

    def __repr__(self) -> str:
        return f"<JumpingClock, time={self._now:.7f}>"

    def start_clock(self) -> None:
        # The run this clock drives: whether some task waits for it to go
        # idle is asked at every jump.
        self._runner = getattr(_run_context, "runner", None)

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # trio calls this only when no task can run, before it wakes the
        # tasks whose deadlines have come: the moment to jump, and to wake
        # the tasks of the timers due.
        timers = self._timers
        while timers and timers[0][2][0] is None:
            # A cancelled sleeper's timer: no reason to jump to its deadline.
            heapq.heappop(timers)
        if timers and timers[0][0] < deadline:
            deadline = timers[0][0]
        jump = deadline - self._now
        if jump > 0:
            if jump == math.inf or getattr(self._runner, "waiting_for_idle", None):
                # Nothing to jump to; or, as with MockClock, the callers of
                # trio.testing.wait_all_tasks_blocked wake before time moves.
                return _FOREVER
            self._now += jump
        now = self._now
        while timers and timers[0][0] <= now:
            callback = heapq.heappop(timers)[2][0]
            if callback is not None:
                callback()
        return 0.0

    def call_at(
        self, deadline: float, callback: Callable[[], object]
    ) -> Callable[[], None]:
        """Call ``callback`` when the clock reaches ``deadline``; return the canceller.

        It runs in trio's run loop, outside any task, in the pass that wakes
        the tasks whose deadlines come at the same instant: it must not
        block or raise (setting a ``trio.Event`` is what it is for). A
        worker waits for its next poll this way where the clock offers
        it, instead of in a cancel scope whose deadline raises Cancelled.

        Example::

            >>> import trio
            >>> async def main() -> float:
            ...     clock = trio.lowlevel.current_clock()
            ...     rung = trio.Event()
            ...     clock.call_at(5.0, rung.set)
            ...     clock.call_at(2.0, print)()  # cancelled at once
            ...     await rung.wait()
            ...     return trio.current_time()
            >>> trio.run(main, clock=JumpingClock())
            5.0
        """
        box: list[Callable[[], object] | None] = [callback]
        self._seq += 1
        heapq.heappush(self._timers, (deadline, self._seq, box))

        def cancel() -> None:
            box[0] = None

        return cancel

    def _arm(
        self, deadline: float, task: trio.lowlevel.Task
    ) -> Callable[[object], trio.lowlevel.Abort]:
        """Set a timer to wake ``task`` at ``deadline``; return its abort callback."""
        cancel = self.call_at(
            deadline, functools.partial(trio.lowlevel.reschedule, task)
        )

        def abort(_: object) -> trio.lowlevel.Abort:
            cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        return abort


def _effectively_cancelled(task: trio.lowlevel.Task) -> bool:
    # Asked by a sleeper its timer woke. trio.sleep wakes by a cancellation
    # of its own scope; if a scope around it was cancelled by then too (a
    # deadline at the same instant), the Cancelled it raises goes on out to
    # that scope, and so must the timer's.
    try:
        # What trio.current_effective_deadline() == -inf says, without
        # walking up every enclosing scope.
        return bool(task._cancel_status.effectively_cancelled)
    except AttributeError:  # pragma: no cover - a trio that moved it
        return trio.current_effective_deadline() == -math.inf


async def sleep_until(deadline: float) -> None:
    """``trio.sleep_until``, on the simulation clock's timers when it runs."""
    clock = trio.lowlevel.current_clock()
    if (
        type(clock) is JumpingClock
        and _new_cancelled is not None
        and clock._now < deadline < math.inf
    ):
        task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(clock._arm(deadline, task))
        if _effectively_cancelled(task):
            raise _new_cancelled()
    else:
        await trio.sleep_until(deadline)


async def sleep(seconds: float) -> None:
    """``trio.sleep``, on the simulation clock's timers when it runs."""
    clock = trio.lowlevel.current_clock()
    if type(clock) is JumpingClock and _new_cancelled is not None and seconds > 0:
        # The deadline trio.sleep would set, to the last bit.
        deadline = clock._now + seconds
        if clock._now < deadline < math.inf:
            # Inline rather than in a coroutine of its own: one frame less
            # to create and resume for every latency of every attempt.
            task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(clock._arm(deadline, task))
            if _effectively_cancelled(task):
                raise _new_cancelled()
            return
    await trio.sleep(seconds)
