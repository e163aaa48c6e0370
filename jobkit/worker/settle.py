"""Settle batching: the outcomes of the attempts that finished meanwhile,
written in one store call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import attrs
import trio

from ..core.job import (
    Failure,
    Job,
    Success,
)
from ..queue.facade import Queue
from ..store.protocol import SettleClaimStore
from .state import _Attempt, _log_fields
from .storecalls import _REFUSED, _GaveUp, _StoreCaller

logger = logging.getLogger("jobkit")


@attrs.frozen
class _Refill:
    """The worker's side of a settle that also claims."""

    limit: Callable[[int], int]
    """How many jobs to claim for so many finished attempts (0: none)."""
    claim_args: Callable[[int], dict[str, Any]]
    """The claim's arguments for a limit."""
    start: Callable[[list[Job]], None]
    """What starts the claimed jobs."""


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
        *,
        refill: _Refill | None = None,
    ) -> None:
        self._queue = queue
        self._refill = refill
        self._checked_store: object = None
        self._store_fuses = False
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
        if not self.offer(attempt, alone=alone):
            await self.write(attempt)

    def offer(self, attempt: _Attempt, *, alone: bool) -> bool:
        """Hand the outcome to the settler, or return False: the caller writes it.

        ``alone`` says no other attempt of this worker is running.
        """
        if alone and not self._writing and not self._pending:
            # Nothing to batch with: the caller writes it from the attempt's
            # slot task, which spares a switch to the settler when jobs come
            # one at a time.
            return False
        # Attempts that finish together share one store call. Their tasks
        # go on rather than wait for it: the settler finishes them, which
        # spares each a wake-up (the attempt stays in ``_running`` until then).
        pending = self._pending
        pending.append(attempt)
        if len(pending) == 1:  # the settler swaps in a new event as it takes them
            self._ready.set()
        return True

    async def write(
        self, attempt: _Attempt, *, scope: trio.CancelScope | None = None
    ) -> None:
        """Write the attempt's outcome now, then finish it.

        ``scope``: one the calling task is in, shielded while the write claims.
        """
        await self._write([attempt], scope=scope)

    async def _write(
        self,
        batch: list[_Attempt],
        *,
        refill: bool = True,
        scope: trio.CancelScope | None = None,
    ) -> None:
        """Write the batch's outcomes (and claim along, if ``refill``).

        ``scope``: one the calling task is in, shielded while a write claims
        (see :meth:`_StoreCaller.call`).
        """
        limit = 0
        if refill and self._refill is not None and self._fused():
            limit = self._refill.limit(len(batch))
        self._writing += 1
        try:
            # Shielded when it claims: a claim cancelled after its transaction
            # committed would leave jobs leased to nobody.
            applied, now, claimed = await self._caller.call(
                "settle",
                functools.partial(self._settle, batch, limit),
                refused=_REFUSED,
                shield=limit > 0,
                scope=scope,
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
            if claimed:
                assert self._refill is not None
                # Started before the finished attempts retire, so that the
                # claim loop, seeing its slots filled again, sleeps on.
                self._refill.start(claimed)
            for attempt, ok in zip(batch, applied, strict=True):
                self._finish(attempt, ok, now)
        elif len(batch) > 1:
            half = len(batch) // 2
            await self._write(batch[:half], refill=False)
            await self._write(batch[half:], refill=False)
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
        await self._write([attempt], refill=False)

    def _fused(self) -> bool:
        # A protocol isinstance check costs microseconds: once per store.
        store = self._queue.store
        if store is not self._checked_store:
            self._checked_store = store
            self._store_fuses = isinstance(store, SettleClaimStore)
        return self._store_fuses

    async def _settle(
        self, batch: list[_Attempt], limit: int
    ) -> tuple[list[bool], float, list[Job]]:
        now = self._queue.clock()
        outcomes = [a.outcome for a in batch if a.outcome is not None]
        store = self._queue.store
        if limit:
            assert self._refill is not None
            fused = cast(SettleClaimStore, store)  # as _fused found
            applied, claimed = await fused.settle_and_claim(
                outcomes, now=now, **self._refill.claim_args(limit)
            )
            return applied, now, claimed
        return await store.settle(outcomes, now=now), now, []

    async def run(self) -> None:
        # The settler's own scope, shielded while a write claims.
        with trio.CancelScope() as scope:
            while True:
                await self._ready.wait()
                self._ready = trio.Event()
                batch, self._pending = self._pending, []
                await self._write(batch, scope=scope)
