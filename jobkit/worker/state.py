"""The records a worker's parts share: attempts, slots, counters, statistics."""

from __future__ import annotations

import math

import attrs
import trio

from ..core.job import (
    Job,
    Outcome,
)

__all__ = ["WorkerStatistics"]


@attrs.frozen
class WorkerStatistics:
    """Counts of what a :class:`Worker` has done since it started.

    ``failed`` counts attempts that raised or timed out; each of them is
    then either ``retried`` or ``dead`` (unless its lease was lost).
    ``released`` counts attempts handed back unfinished at shutdown, and
    ``lost`` those whose lease another worker had already reaped, so their
    outcome was discarded. ``fenced`` counts attempts stopped because their
    leases could not be renewed in time (each is also a failed attempt).

    Example::

        >>> import jobkit
        >>> stats = jobkit.Worker(jobkit.Queue()).statistics()
        >>> stats.claimed, stats.running
        (0, 0)
    """

    claimed: int
    running: int
    succeeded: int
    failed: int
    retried: int
    dead: int
    released: int
    lost: int
    fenced: int = 0


@attrs.define
class _Counters:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    lost: int = 0
    fenced: int = 0


@attrs.define(eq=False)
class _Attempt:
    """One claimed job while this worker runs it."""

    job: Job
    started: float = 0.0
    error: Exception | None = None
    outcome: Outcome | None = None
    lost: bool = False
    """Another worker reaped the lease: the result must not be reported."""
    stopped: bool = False
    """Asked to stop: its lease was lost, or the shutdown grace ran out."""
    lease_until: float = math.inf
    """When its lease ends, as far as this worker knows (the queue's clock)."""
    fenced: bool = False
    """Stopped because its lease could not be renewed before it ran out."""
    scope: trio.CancelScope | None = None
    """Its slot's cancel scope, while the handler runs."""
    armed: bool = False
    """A fence deadline was set on its scope, which may have cancelled it."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.job.id, self.job.attempts)

    def stop(self) -> None:
        """Cancel the handler if it runs, or as soon as it starts."""
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()


@attrs.define(eq=False)
class _Slot:
    """A task that runs attempts one after another, parked in between."""

    task: trio.lowlevel.Task
    idle: list[_Slot]
    attempt: _Attempt | None = None

    def abort(self, _: object) -> trio.lowlevel.Abort:
        """Leave the idle slots: the parked task was cancelled."""
        self.idle.remove(self)
        return trio.lowlevel.Abort.SUCCEEDED


def _log_fields(job: Job, **more: object) -> dict[str, object]:
    return {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
        "max_attempts": job.max_attempts,
        **more,
    }
