"""The claim loop: take due jobs for the free slots, then sleep until one may be due."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import trio

from ..core.job import (
    Job,
    JobState,
)
from .base import _WorkerState
from .state import _Attempt

logger = logging.getLogger("jobkit")

#: How often a worker run with ``until_empty`` looks at the store while only
#: jobs running in other workers keep it going (a power of two, so that its
#: instants add up exactly).
TAIL_CHECK = 1 / 16


class _Timer:
    """A deadline kept as a clock's timer that calls ``callback`` (see JumpingClock)."""

    def __init__(
        self,
        call_at: Callable[[float, Callable[[], object]], Callable[[], None]],
        deadline: float,
        callback: Callable[[], object],
    ) -> None:
        self._call_at = call_at
        self._callback = callback
        self.fired = False
        self._deadline = math.inf
        self.cancel: Callable[[], None] = _nothing
        self.deadline = deadline

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, at: float) -> None:
        if at == self._deadline:
            return
        self.cancel()
        self._deadline = at
        if at <= trio.current_time():
            # As a scope's deadline: passed at the loop's next turn, even
            # while tasks are runnable (the clock's timers wait for them).
            self.cancel = _nothing
            self._fire()
        else:
            self.cancel = self._call_at(at, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self._callback()


def _nothing() -> None:
    pass


class _Claims(_WorkerState):
    """The claim loop and what it asks the store."""

    async def _claim_loop(self, attempts: trio.Nursery) -> None:
        # One scope to shield each claim in: entering a new one per claim
        # costs more than a MemoryStore claim.
        with trio.CancelScope() as shield:
            await self._claims(attempts, shield)

    async def _claims(self, attempts: trio.Nursery, shield: trio.CancelScope) -> None:
        while not self._stopping and not (
            self._shutdown is not None and self._shutdown.cancelled
        ):
            # A fresh event before looking at the store, so that an enqueue
            # landing while we look is not missed.
            self._poked = trio.Event()
            free = self._concurrency - len(self._running)
            deadline = math.inf
            if free > 0:
                self._heard = []
                jobs = await self._caller.call(
                    "claim",
                    functools.partial(self._claim, free),
                    shield=True,
                    scope=shield,
                )
                heard, self._heard = self._heard, None
                for job in jobs:
                    self._start(attempts, job)
                if len(jobs) == free:
                    continue
                if self._poked.is_set():
                    if heard is None or not {j.id for j in jobs}.issuperset(heard):
                        # A poke during the claim may announce a job it did
                        # not see: look again before asking when one is due.
                        continue
                    # It took the last job of every enqueue it was told of:
                    # it saw those enqueues whole.
                    self._poked = trio.Event()
                next_deadline = await self._next_deadline()
                if next_deadline is None:
                    continue
                deadline = next_deadline
                if self._until_empty and not self._running:
                    queued, running = await self._left()
                    if not queued and not running:
                        logger.info("worker stopping: nothing queued or running")
                        self._stopping = True
                        break
                    if not queued:
                        # Only jobs running in other workers keep it going, and
                        # their end reaches no one in this process: look again
                        # soon rather than at the next poll.
                        deadline = min(deadline, trio.current_time() + TAIL_CHECK)
            # With a slot free and nothing due before ``deadline``, an attempt
            # that ends makes no job due unless it retries it (a release
            # notifies like an enqueue): looking again would find nothing.
            self._slot_free = free > 0
            if deadline == math.inf:
                # Every slot busy: only a poke can change anything, and a
                # cancel scope would cost as much as the wait (once per attempt).
                # Meanwhile the settler may claim for the slots it frees.
                self._full = True
                await self._poked.wait()
                self._full = False
            elif not await self._nap(self._poked, deadline):
                # A poll: let the tasks that wake at this same instant (an
                # enqueue on the same beat) go first, so one claim sees them.
                await trio.lowlevel.cancel_shielded_checkpoint()
            self._slot_free = False

    async def _nap(self, poked: trio.Event, deadline: float) -> bool:
        """Wait for a poke, or until ``deadline`` (which _retire may bring forward).

        Return whether it was poked.
        """
        call_at = getattr(trio.lowlevel.current_clock(), "call_at", None)
        if call_at is None:
            with trio.move_on_at(deadline) as scope:
                self._waiting = scope
                await poked.wait()
            self._waiting = None
            return not scope.cancelled_caught
        # A virtual clock's timer: it pokes at the deadline, sparing the
        # Cancelled exception a scope raises and catches (the simulator
        # waits this way once per job, a tenth of its time).
        self._waiting = timer = _Timer(call_at, deadline, poked.set)
        try:
            await poked.wait()
        finally:
            timer.cancel()
            self._waiting = None
        return not timer.fired

    async def _listen(self, wait_for_jobs: Callable[..., Awaitable[object]]) -> None:
        # Each hint wakes the claim loop, which polls all the same.
        while True:
            await wait_for_jobs(queues=self._queues)
            self._poke()

    async def _left(self) -> tuple[int, int]:
        """How many jobs of the served queues are QUEUED (due or not), and RUNNING."""
        await self._schedules_fired.wait()
        store = self._queue.store
        counts = await self._caller.call("counts", store.counts)
        left = {JobState.QUEUED: 0, JobState.RUNNING: 0}
        for (name, state), n in counts.counts.items():
            if state in left and (self._queues is None or name in self._queues):
                left[state] += n
        if left[JobState.QUEUED]:
            # Queued jobs of tasks this worker does not know wait for another.
            queued = await self._caller.call("queued_tasks", store.queued_tasks)
            left[JobState.QUEUED] = sum(
                n
                for (name, task), n in queued.items()
                if task in self._queue.tasks
                and (self._queues is None or name in self._queues)
            )
        return left[JobState.QUEUED], left[JobState.RUNNING]

    async def _claim(self, limit: int) -> list[Job]:
        return await self._queue.store.claim(
            now=self._queue.clock(), **self._claim_args(limit)
        )

    def _claim_args(self, limit: int) -> dict[str, Any]:
        # Only jobs of tasks this worker can run: a job of a task that only a
        # newer deploy knows waits QUEUED for a worker that knows it. A job
        # enqueued without max_attempts gets its task's policy's here.
        names, max_attempts = self._known_tasks()
        return {
            "queues": self._queues,
            "limit": limit,
            "lease": self._lease,
            "tasks": names,
            "max_attempts": max_attempts,
        }

    def _known_tasks(self) -> tuple[tuple[str, ...], Mapping[str, int]]:
        """The names of the queue's tasks, and their retry policies' max_attempts."""
        tasks = self._queue.tasks
        # Tasks are only ever added, under new names: the count tells.
        if self._tasks_seen[0] != len(tasks):
            self._tasks_seen = (
                len(tasks),
                tuple(tasks),
                MappingProxyType(
                    {name: task.retry.max_attempts for name, task in tasks.items()}
                ),
            )
        return self._tasks_seen[1], self._tasks_seen[2]

    def _refill_limit(self, finishing: int) -> int:
        """How many jobs to claim along with the outcomes of ``finishing`` attempts.

        Only while the claim loop waits for a slot to free up (and has not
        been woken yet): it would claim exactly that many itself.
        """
        if (
            not self._full
            or self._stopping
            or (self._poked is not None and self._poked.is_set())
            or (self._shutdown is not None and self._shutdown.cancelled)
        ):
            return 0
        return finishing

    def _refill(self, jobs: list[Job]) -> None:
        """Start the jobs claimed with the outcomes of attempts that finished."""
        if self._attempts is None:
            # The worker was cancelled while the settle that claimed them was
            # on its way: no slot can start now, so they are handed back
            # with the running ones as it exits (see _hand_back).
            for job in jobs:
                attempt = _Attempt(job)
                if job.lease_until is not None:
                    attempt.lease_until = job.lease_until
                self._running[job.id] = attempt
                self._counters.claimed += 1
            return
        for job in jobs:
            self._start(self._attempts, job)

    async def _next_deadline(self) -> float | None:
        """Return the trio time to look again, or None if a job is due already."""
        store = self._queue.store
        clock = self._queue.clock
        next_due = await self._caller.call(
            "next_run_at",
            lambda: store.next_run_at(
                queues=self._queues, tasks=self._known_tasks()[0]
            ),
        )
        poll = trio.current_time() + self._poll_interval
        if next_due is None:
            return poll
        if next_due <= clock():
            return None
        return min(poll, self._trio_time(next_due))
