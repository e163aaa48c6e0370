"""The state a worker's parts share, declared once.

:class:`~jobkit.Worker` is assembled from parts, one module each: slot
tasks (:mod:`.slots`), lease upkeep (:mod:`.leases`), schedule firing
(:mod:`.schedules`) and shutdown (:mod:`.shutdown`), on top of the claim loop
in :mod:`.worker`. Each part reads and writes the attributes declared here,
which ``Worker.__init__`` sets, and calls the few methods declared here,
which another part defines.
"""

from __future__ import annotations

import contextvars
import random
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.job import Job
    from ..queue.facade import Queue, Task
    from ..runtime.token import CancellationToken
    from .settle import _Settler
    from .state import _Attempt, _Counters, _Slot
    from .storecalls import _StoreCaller


class _Deadline(Protocol):
    """What the claim loop waits until: a cancel scope, or a clock's timer."""

    deadline: float


class _WorkerState:
    _queue: Queue
    _tasks: Mapping[str, Task[Any, Any]]
    _concurrency: int
    _queues: tuple[str, ...] | None
    _lease: float
    _poll_interval: float
    _grace: float
    _shutdown: CancellationToken | None
    _until_empty: bool
    _schedules_fired: trio.Event
    _rng: random.Random
    _caller: _StoreCaller
    _settler: _Settler
    _limiter: trio.CapacityLimiter | None
    _running: dict[int, _Attempt]
    _idle: list[_Slot]
    _counters: _Counters
    _poked: trio.Event | None
    _heard: list[int] | None
    _margin: float
    _renewing: bool
    _renew_failed: bool
    _slot_free: bool
    _full: bool
    _attempts: trio.Nursery | None
    _base_context: contextvars.Context
    _waiting: _Deadline | None
    # (how many tasks the queue had, their names, their max_attempts)
    _tasks_seen: tuple[int, tuple[str, ...], Mapping[str, int]]
    _claiming: trio.CancelScope
    _stopping: bool
    _started: bool

    # Defined by one part, called by others.
    def _poke(self) -> None:
        raise NotImplementedError

    def _trio_time(self, at: float) -> float:
        raise NotImplementedError

    def _report(self, attempt: _Attempt, applied: bool, now: float) -> None:
        raise NotImplementedError

    def _start(self, nursery: trio.Nursery, job: Job) -> None:
        raise NotImplementedError

    def _arm_fence(self, attempt: _Attempt) -> None:
        raise NotImplementedError

    def _fenced(self, attempt: _Attempt) -> None:
        raise NotImplementedError
