"""Lease upkeep: every ``lease / 3``, one call renews the running attempts' leases,
and another reaps the leases that ran out (a crashed worker's jobs).
"""

from __future__ import annotations

import logging
import math

from ..core.job import (
    EXPIRED_ERROR,
    Event,
    EventKind,
    JobState,
)
from ..observe.logs import log_job_event
from ..runtime.interval import MissedTickBehavior, interval
from .base import _WorkerState
from .state import _Attempt, _log_fields

logger = logging.getLogger("jobkit")

#: The share of a lease before its end at which an attempt that could not
#: renew it is stopped: time for the cancellation to land, and for the
#: clocks of the worker hosts to disagree, before another worker may reap it.
FENCE_MARGIN = 1 / 6

#: The error stored on an attempt stopped because its lease could not be renewed.
FENCED_ERROR = (
    "lease not renewed: the worker could not reach the store and stopped the "
    "attempt before its lease ran out"
)


class _Leases(_WorkerState):
    """Lease upkeep: renew the running attempts' leases, reap expired ones."""

    async def _maintain(self) -> None:
        ticker = interval(
            self._lease / 3, missed_tick_behavior=MissedTickBehavior.DELAY
        )
        async for _ in ticker:
            await self._renew()
            await self._reap()

    async def _renew(self) -> None:
        running = [a for a in self._running.values() if not a.lost]
        if not running:
            return
        now = self._queue.clock()
        # Armed while a renewal is on its way (it may hang on a cut network)
        # and after one failed; a renewal that lands disarms it.
        self._renewing = True
        for attempt in running:
            self._arm_fence(attempt)
        try:
            owned = await self._queue.store.renew(
                [a.key for a in running], now=now, lease=self._lease
            )
        except Exception as exc:
            self._renew_failed = True
            logger.error(
                "store renew failed for %d leases; trying again in %gs",
                len(running),
                self._lease / 3,
                exc_info=exc,
                extra={"store_call": "renew"},
            )
            return
        finally:
            self._renewing = False
        self._renew_failed = False
        until = now + self._lease
        for attempt, ok in zip(running, owned, strict=True):
            if ok:
                attempt.lease_until = until
                if attempt.scope is not None:
                    attempt.scope.deadline = math.inf
            # An attempt with an outcome may have been settled while the
            # renewal was on its way: the settle, not this, tells if it lost.
            elif not attempt.lost and attempt.outcome is None:
                attempt.lost = True
                self._counters.lost += 1
                logger.warning(
                    "job %d (%s) attempt %d lost its lease (the store reaped it); "
                    "stopping it",
                    attempt.job.id,
                    attempt.job.task,
                    attempt.job.attempts,
                    extra=_log_fields(attempt.job),
                )
                attempt.stop()

    def _arm_fence(self, attempt: _Attempt) -> None:
        """Stop the attempt's handler a margin before its lease ends."""
        if attempt.scope is not None:
            fence = self._trio_time(attempt.lease_until - self._margin)
            attempt.scope.deadline = fence
            attempt.armed = True

    def _fenced(self, attempt: _Attempt) -> None:
        attempt.fenced = True
        self._counters.fenced += 1
        job = attempt.job
        logger.warning(
            "job %d (%s) attempt %d: its lease could not be renewed and ends in "
            "%gs; stopped it, so that no other worker runs it at the same time",
            job.id,
            job.task,
            job.attempts,
            self._margin,
            extra=_log_fields(job, event="fenced"),
        )

    async def _reap(self) -> None:
        now = self._queue.clock()
        try:
            reaped = await self._queue.store.reap(now=now)
        except Exception as exc:
            logger.error(
                "store reap failed; trying again in %gs",
                self._lease / 3,
                exc_info=exc,
                extra={"store_call": "reap"},
            )
            return
        for job in reaped:
            kind = EventKind.DEAD if job.state is JobState.DEAD else EventKind.EXPIRED
            log_job_event(Event(job.id, kind, now, job.attempts, EXPIRED_ERROR), job)
            self._queue.notify(job_id=job.id)
        # Other workers of this process may be idle: recovered jobs are due now.
        for name in sorted(
            {job.queue for job in reaped if job.state is JobState.QUEUED}
        ):
            self._queue.notify(queue=name)
