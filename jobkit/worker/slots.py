"""Slot tasks: each runs one claimed attempt at a time and parks between jobs."""

from __future__ import annotations

import functools
import logging
import math
from contextvars import ContextVar
from typing import Any

import attrs
import trio

from ..core import job as _job
from ..core.job import (
    Event,
    EventKind,
    Failure,
    Job,
    Release,
    Success,
    _make_success,
    check_json,
)
from ..core.retry import Permanent, RetryLater
from ..observe.logs import log_job_event, logs_job_event
from ..queue.facade import Task
from .base import _WorkerState
from .leases import FENCED_ERROR
from .state import _Attempt, _log_fields, _Slot
from .tracebacks import describe_error

__all__ = ["current_job"]

logger = logging.getLogger("jobkit")


_current_job: ContextVar[Job] = ContextVar("jobkit.current_job")

# Read for every attempt: Python 3.11 reads an attribute of an Enum class
# through EnumType.__getattr__'s slow path, several times a global's cost.
_STARTED, _SUCCEEDED = EventKind.STARTED, EventKind.SUCCEEDED

_RETRIED, _RELEASED, _DEAD = EventKind.RETRIED, EventKind.RELEASED, EventKind.DEAD


def current_job() -> Job:
    """Return the job whose handler is running in this task (or its thread).

    Handlers use it for an idempotency key that stays the same across
    retries (``job.id``, ``job.unique_key``), or to behave differently on a
    later attempt (``job.attempts``). Outside a handler it raises
    ``RuntimeError``.

    Example::

        >>> import jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore())
        >>> @queue.task()
        ... async def charge(order: str) -> str:
        ...     job = jobkit.current_job()
        ...     return f"charge {order} with idempotency key job-{job.id}"
        >>> jobkit.current_job()
        Traceback (most recent call last):
        ...
        RuntimeError: current_job() was called outside a job handler
    """
    try:
        return _current_job.get()
    except LookupError:
        raise RuntimeError("current_job() was called outside a job handler") from None


def _check_payload(task: Task[Any, Any], payload: dict[str, Any]) -> None:
    """Raise :class:`Permanent` if the handler cannot be called with ``payload``."""
    signature = task._signature
    if signature is None:
        return  # a builtin's: it checks its arguments when called
    try:
        signature.bind(**payload)
    except TypeError as exc:
        # The same payload would fail the same way on every attempt.
        raise Permanent(
            f"the payload of task {task.name!r} does not fit its handler: {exc}"
        ) from None


def _check_result(result: Any) -> None:
    """Raise :class:`Permanent` if the handler's result cannot be stored."""
    try:
        check_json(result, "result")
    except (TypeError, ValueError) as exc:
        # The side effects happened; running it again would repeat them
        # and fail the same way.
        raise Permanent(f"the handler's result is not storable JSON: {exc}") from exc


class _Slots(_WorkerState):
    """Slot tasks: each runs one attempt at a time, then hands its outcome on."""

    def _start(self, nursery: trio.Nursery, job: Job) -> None:
        attempt = _Attempt(job)
        if job.lease_until is not None:
            attempt.lease_until = job.lease_until
        self._running[job.id] = attempt
        self._counters.claimed += 1
        # Each attempt starts from a fresh copy of the worker's context, so
        # that what a handler sets in a context variable never reaches the
        # next job (this may run in a slot task that has just run one).
        context = self._base_context.copy()
        if not self._idle:
            start = functools.partial(
                nursery.start_soon, self._slot, attempt, name="jobkit worker slot"
            )
            context.run(start)
            return
        # Waking a parked slot costs a fraction of starting a task (and of
        # entering a cancel scope, which each task would need).
        slot = self._idle.pop()
        slot.attempt = attempt
        slot.task.context = context
        trio.lowlevel.reschedule(slot.task)

    async def _slot(self, attempt: _Attempt) -> None:
        idle = self._idle
        slot = _Slot(trio.lowlevel.current_task(), idle)
        abort = slot.abort
        settler = self._settler
        running = self._running
        error: Exception | None = None
        result: Any = None
        with trio.CancelScope() as scope:
            while True:
                # The attempt runs here, not in a coroutine of its own: most
                # of a fast handler's time goes to what surrounds it.
                try:
                    task = self._begin(attempt, scope)
                    if task._is_async and task._timeout is None:
                        result = await task._fn(**attempt.job.payload)
                    else:
                        result = await self._invoke(task, attempt.job)
                    if result is not None:
                        _check_result(result)
                    error = None
                except Exception as exc:
                    error, result = exc, None
                finally:
                    attempt.scope = None
                    if attempt.armed:
                        scope.deadline = math.inf
                # Only a stop and the fence's deadline cancel the scope; asking
                # it (cancel_called reads the clock) is left to after a fence.
                if attempt.stopped or (attempt.armed and scope.cancel_called):
                    break
                if error is None and not attempt.lost:
                    # A success, as _conclude would make it, without the
                    # coroutines: most attempts end so.
                    job = attempt.job
                    attempt.outcome = _make_success(job.id, job.attempts, result)
                    if not settler.offer(attempt, alone=len(running) == 1):
                        # Nothing cancels the slot's scope itself now (the
                        # attempt has let go of it, its deadline is lifted),
                        # so shielding it shields the write as a new one would.
                        await settler.write(attempt, scope=scope)
                else:
                    await self._conclude(attempt, error, result, cancelled=False)
                # Parked until the claim loop (or the settler) hands this
                # slot its next attempt.
                slot.attempt = None
                idle.append(slot)
                await trio.lowlevel.wait_task_rescheduled(abort)
                assert slot.attempt is not None
                attempt = slot.attempt
        # The attempt was stopped, or its handler ended just as it was. The
        # scope is spent (any checkpoint inside it would raise), so the
        # attempt is concluded out here and the slot ends; the claim loop
        # starts a new one when it needs one.
        await self._conclude(attempt, error, result, cancelled=scope.cancelled_caught)

    async def _conclude(
        self,
        attempt: _Attempt,
        error: Exception | None,
        result: Any,
        *,
        cancelled: bool,
    ) -> None:
        # If the worker is cancelled from outside before the outcome is
        # written, the attempt stays in ``_running`` and ``_hand_back``
        # reports it when the worker exits.
        job = attempt.job
        if attempt.lost:
            attempt.outcome = None
        elif cancelled and not attempt.stopped:
            # Only the slot's deadline cancels without a stop: the lease could
            # not be renewed in time. As for an expired lease, the attempt
            # counts, so that a job whose worker can never renew it ends DEAD
            # rather than loop; it is retried after the task's backoff,
            # whatever its retry_on.
            self._fenced(attempt)
            task = self._tasks.get(job.task)
            failure = await self._failure(job, task, RetryLater())
            attempt.outcome = attrs.evolve(failure, error=FENCED_ERROR)
        elif cancelled:
            attempt.outcome = Release(job.id, job.attempts)
        elif error is not None:
            attempt.error = error
            task = self._tasks.get(job.task)
            attempt.outcome = await self._failure(job, task, error)
        else:
            attempt.outcome = Success(job.id, job.attempts, result)
        if attempt.outcome is None:
            self._retire(attempt)
        else:
            await self._settler.submit(attempt, alone=len(self._running) == 1)

    def _finish(self, attempt: _Attempt, applied: bool, now: float) -> None:
        """Count and log the written outcome, then retire the attempt."""
        self._report(attempt, applied, now)
        if applied:
            self._queue.notify(job_id=attempt.job.id)
            if type(attempt.outcome) is Release:
                # A released job is due now: let an idle local worker take it.
                self._queue.notify(queue=attempt.job.queue)
        self._retire(attempt)

    def _drop(self, attempt: _Attempt) -> None:
        """Give up on writing the attempt's outcome: its lease runs out instead."""
        job = attempt.job
        logger.error(
            "job %d (%s) attempt %d: its outcome could not be written; the job "
            "runs again once its lease expires",
            job.id,
            job.task,
            job.attempts,
            extra=_log_fields(job, event="dropped"),
        )
        attempt.outcome = None
        self._retire(attempt)

    def _retire(self, attempt: _Attempt) -> None:
        # A lost attempt may still be winding down when the reaped job is
        # claimed again under the same id: leave the new attempt's entry.
        if self._running.get(attempt.job.id) is attempt:
            del self._running[attempt.job.id]
        outcome = attempt.outcome
        kind = type(outcome)
        if (
            # Unless the slots were all filled again along with the settle.
            (not self._slot_free and len(self._running) < self._concurrency)
            or self._stopping
            or (self._until_empty and not self._running)
        ):
            self._poke()
        elif kind is Success or kind is Release:
            pass
        elif isinstance(outcome, Failure):
            # The claim loop waits with a slot free and nothing due before
            # its deadline; a retry makes the job due at retry_at, so it only
            # has to look again by then (a dead job makes nothing due).
            job = attempt.job
            if (
                self._waiting is not None
                and outcome.retry_at is not None
                and job.attempts < _job.attempt_limit(job)
            ):
                wake = self._trio_time(outcome.retry_at)
                self._waiting.deadline = min(self._waiting.deadline, wake)
        else:
            self._poke()

    def _begin(self, attempt: _Attempt, scope: trio.CancelScope) -> Task[Any, Any]:
        """Start the attempt in the slot's ``scope``: return its task, or raise why not.

        The slot then runs the handler, under ``scope``, and resets
        ``attempt.scope`` (and the scope's deadline, if a fence set it).
        """
        job = attempt.job
        task = self._tasks.get(job.task)
        _current_job.set(job)
        attempt.started = self._queue.clock()
        if logs_job_event(_STARTED):
            log_job_event(Event(job.id, _STARTED, job.updated_at, job.attempts), job)
        attempt.scope = scope
        if attempt.stopped:
            scope.cancel()
        if self._renewing or self._renew_failed:
            self._arm_fence(attempt)
        if task is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise LookupError(
                f"no task named {job.task!r} is registered with this "
                f"worker's queue (known: {known})"
            )
        shape = task._shape
        if shape is None or not shape.accepts(job.payload):
            _check_payload(task, job.payload)
        return task

    async def _invoke(self, task: Task[Any, Any], job: Job) -> Any:
        timeout = task.timeout
        if timeout is None:
            return await self._call(task, job)
        with trio.move_on_after(timeout) as scope:
            result = await self._call(task, job)
            # A thread returns whenever it ends, its deadline passed or not.
            if not scope.cancel_called:
                return result
        raise trio.TooSlowError(f"attempt timed out after {timeout:g}s")

    async def _call(self, task: Task[Any, Any], job: Job) -> Any:
        if task.is_async:
            return await task.fn(**job.payload)
        call = functools.partial(task.fn, **job.payload)
        # A thread cannot be interrupted, so the attempt waits for it even
        # past its timeout or the shutdown grace, its lease renewed: were it
        # abandoned, the job could run again while this thread still runs.
        # trio.from_thread.check_cancelled() in the handler raises once the
        # attempt is asked to stop, for handlers that can stop early.
        return await trio.to_thread.run_sync(
            call, abandon_on_cancel=False, limiter=self._limiter
        )

    async def _failure(
        self, job: Job, task: Task[Any, Any] | None, error: Exception
    ) -> Failure:
        policy = task.retry if task is not None else self._queue.default_retry
        if policy.max_attempts != job.max_attempts:
            # The job's own limit (set at enqueue or at its first claim) is
            # the one the store enforces.
            policy = attrs.evolve(policy, max_attempts=_job.attempt_limit(job))
        # Decorrelated jitter draws from the delay the store recorded at the
        # job's last retry: a delay chosen for an attempt whose lease was
        # lost never took effect.
        delay = policy.decide(
            error, job.attempts, previous_delay=job.retry_delay, rng=self._rng
        )
        now = self._queue.clock()
        text = describe_error(error)
        return Failure(
            job.id, job.attempts, text, None if delay is None else now + delay, delay
        )

    def _report(self, attempt: _Attempt, applied: bool, now: float) -> None:
        """Count the attempt's outcome and log it once, as the store recorded it."""
        job, outcome = attempt.job, attempt.outcome
        assert outcome is not None
        counters = self._counters
        success = type(outcome) is Success
        if not success and isinstance(outcome, Failure):
            counters.failed += 1
        if not applied:
            counters.lost += 1
            logger.warning(
                "job %d (%s) attempt %d finished after losing its lease; its "
                "outcome was discarded (another worker may have run it)",
                job.id,
                job.task,
                job.attempts,
                extra=_log_fields(job, event="lost"),
            )
            return
        kind = _SUCCEEDED if success else _job.settled_kind(job, outcome)
        if logs_job_event(kind):
            # The store applied this same pure transition to this same
            # snapshot; rebuilt only for the log record.
            new, event = _job.settle(job, outcome, now=now)
            error = attempt.error
            log_job_event(
                event,
                new,
                duration=now - attempt.started,
                # Asking to retry later is not a crash: no traceback for it.
                exc=None if isinstance(error, RetryLater) else error,
            )
        if kind is _SUCCEEDED:
            counters.succeeded += 1
        elif kind is _RELEASED:
            counters.released += 1
        elif kind is _RETRIED:
            counters.retried += 1
        elif kind is _DEAD:
            counters.dead += 1
