"""Lease upkeep: every ``lease / 3``, one call renews the running attempts' leases,
and another reaps the leases that ran out (a crashed worker's jobs).
"""

from __future__ import annotations

import logging

from ..core.job import (
    EXPIRED_ERROR,
    Event,
    EventKind,
    JobState,
)
from ..observe.logs import log_job_event
from ..runtime.interval import MissedTickBehavior, interval
from .base import _WorkerState
from .state import _log_fields

logger = logging.getLogger("jobkit")


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
        try:
            owned = await self._queue.store.renew(
                [a.key for a in running], now=self._queue.clock(), lease=self._lease
            )
        except Exception as exc:
            logger.error(
                "store renew failed for %d leases; trying again in %gs",
                len(running),
                self._lease / 3,
                exc_info=exc,
                extra={"store_call": "renew"},
            )
            return
        for attempt, ok in zip(running, owned, strict=True):
            # An attempt with an outcome may have been settled while the
            # renewal was on its way: the settle, not this, tells if it lost.
            if not ok and not attempt.lost and attempt.outcome is None:
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
