"""Settle batching: the outcomes of the attempts that finished meanwhile,
written in one store call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import trio

from ..core.job import (
    Failure,
    Success,
)
from ..queue.facade import Queue
from .state import _Attempt, _log_fields
from .storecalls import _REFUSED, _GaveUp, _StoreCaller

logger = logging.getLogger("jobkit")


class _Settler:
    """Writes the outcomes that piled up since the last write in one store call.

    Each written outcome is handed to ``finish`` with whether the store
    applied it and the time it was written. An outcome the store refuses
    (its data, not its availability) never holds up the others: the batch
    is split until the refused one is alone, which then becomes a failure
    saying why. Outcomes that cannot be written at all, after the worker
    stopped retrying, go to ``drop``: their leases expire and the jobs run
    again, as after a crash.
    """

    def __init__(
        self,
        queue: Queue,
        caller: _StoreCaller,
        finish: Callable[[_Attempt, bool, float], None],
        drop: Callable[[_Attempt], None],
    ) -> None:
        self._queue = queue
        self._caller = caller
        self._finish = finish
        self._drop = drop
        self._pending: list[_Attempt] = []
        self._ready = trio.Event()
        self._writing = 0  # settle calls in flight

    async def submit(self, attempt: _Attempt, *, alone: bool) -> None:
        """Write the attempt's outcome now or soon, then finish it.

        ``alone`` says no other attempt of this worker is running.
        """
        if alone and not self._writing and not self._pending:
            # Nothing to batch with: write it from the attempt's slot task,
            # which spares a switch to the settler when jobs come one at a
            # time.
            await self._write([attempt])
            return
        # Attempts that finish together share one store call. Their tasks
        # end here rather than wait for it: the settler finishes them, which
        # spares each a wake-up (the attempt stays in ``_running`` until then).
        self._pending.append(attempt)
        self._ready.set()

    async def _write(self, batch: list[_Attempt]) -> None:
        self._writing += 1
        try:
            applied, now = await self._caller.call(
                "settle", functools.partial(self._settle, batch), refused=_REFUSED
            )
        except _REFUSED as exc:
            refusal: Exception | None = exc
        except _GaveUp:
            for attempt in batch:
                self._drop(attempt)
            return
        else:
            refusal = None
        finally:
            self._writing -= 1
        if refusal is None:
            for attempt, ok in zip(batch, applied, strict=True):
                self._finish(attempt, ok, now)
        elif len(batch) > 1:
            half = len(batch) // 2
            await self._write(batch[:half])
            await self._write(batch[half:])
        else:
            await self._write_refused(batch[0], refusal)

    async def _write_refused(self, attempt: _Attempt, refusal: Exception) -> None:
        """Write, as a failure, the outcome of an attempt the store refused."""
        job, outcome = attempt.job, attempt.outcome
        why = f"{type(refusal).__name__}: {refusal}".splitlines()[0]
        if isinstance(outcome, Success):
            error, retry_at = f"the store refused the handler's result ({why})", None
        elif isinstance(outcome, Failure) and not outcome.error.startswith(
            "the store refused"
        ):
            first = ascii(outcome.error.splitlines()[0] if outcome.error else "")
            error = f"the store refused the error text {first} ({why})"
            retry_at = outcome.retry_at
        else:
            logger.error(
                "the store refused the outcome of job %d (%s) attempt %d; its "
                "lease expires and it runs again",
                job.id,
                job.task,
                job.attempts,
                exc_info=refusal,
                extra=_log_fields(job),
            )
            self._drop(attempt)
            return
        attempt.outcome = Failure(job.id, job.attempts, error, retry_at)
        await self._write([attempt])

    async def _settle(self, batch: list[_Attempt]) -> tuple[list[bool], float]:
        now = self._queue.clock()
        outcomes = [a.outcome for a in batch if a.outcome is not None]
        return await self._queue.store.settle(outcomes, now=now), now

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            batch, self._pending = self._pending, []
            await self._write(batch)
