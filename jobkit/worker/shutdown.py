"""Shutdown: a worker stops claiming, lets its attempts finish within its grace,
and hands the leases of the rest back.
"""

from __future__ import annotations

import logging

import trio

from ..core.job import (
    Release,
)
from ..runtime.token import CancellationToken
from .base import _WorkerState

logger = logging.getLogger("jobkit")


#: How long a worker that is being cancelled may spend handing its leases back.
RELEASE_TIMEOUT = 5.0


class _Shutdown(_WorkerState):
    """Stop claiming, let attempts finish within the grace, hand back the rest."""

    async def _watch(self, token: CancellationToken) -> None:
        await token.wait()
        if not self._stopping:
            logger.info(
                "worker shutting down: %d jobs running, grace %gs",
                len(self._running),
                self._grace,
            )
        self._stopping = True
        # Also ends a store call the claim loop is retrying: a store that
        # keeps failing must not keep the worker from stopping.
        self._claiming.cancel()
        self._poke()

    async def _drain(self) -> None:
        with trio.move_on_after(self._grace):
            while self._running:
                self._poked = trio.Event()
                await self._poked.wait()
        if self._running:
            logger.warning(
                "grace period over: cancelling %d running jobs and releasing "
                "their leases (handlers in threads run on until they return)",
                len(self._running),
                extra={"job_ids": sorted(self._running)},
            )
        for attempt in self._running.values():
            attempt.stop()
        # The cancelled attempts end at once, with outcomes the settler is
        # still to write: wait for that, but a store that keeps failing now
        # gets one more try per outcome, then the leases are left to expire.
        self._caller.stop_retrying()
        while self._running:
            self._poked = trio.Event()
            await self._poked.wait()

    async def _hand_back(self) -> None:
        # Reached with attempts left only when the worker was cancelled from
        # outside (or crashed): report what finished, release the rest, so no
        # job waits for its lease to expire.
        leftover = [a for a in self._running.values() if not a.lost]
        self._running.clear()
        if not leftover:
            return
        for attempt in leftover:
            if attempt.outcome is None:
                attempt.outcome = Release(attempt.job.id, attempt.job.attempts)
        outcomes = [a.outcome for a in leftover if a.outcome is not None]
        now = self._queue.clock()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + RELEASE_TIMEOUT
            try:
                applied = await self._queue.store.settle(outcomes, now=now)
            except Exception as exc:
                logger.error(
                    "could not release %d leases on exit; those jobs run again "
                    "when their leases expire",
                    len(outcomes),
                    exc_info=exc,
                    extra={"job_ids": [o.job_id for o in outcomes]},
                )
                return
        if scope.cancelled_caught:
            logger.error(
                "releasing %d leases on exit took over %gs; gave up",
                len(outcomes),
                RELEASE_TIMEOUT,
            )
            return
        # Each job's transition is logged once, as for any other outcome.
        for attempt, done in zip(leftover, applied, strict=True):
            self._report(attempt, done, now)
            if done:
                self._queue.notify(job_id=attempt.job.id)
        for name in sorted({a.job.queue for a in leftover}):
            self._queue.notify(queue=name)
        logger.info("worker cancelled: handed back %d jobs", len(outcomes))
