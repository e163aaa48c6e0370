"""The worker: claims due jobs, runs their handlers, reports how each attempt went.

One :class:`Worker` is a handful of small trio tasks that share its state:

- the *claim loop* takes up to the free slots' worth of due jobs per store
  call, then sleeps until the next job is due, the poll interval ends, a slot
  frees up, or this process enqueues something;
- up to ``concurrency`` *slot* tasks each run one attempt at a time: the
  handler (on trio, or in a thread for a plain function) under its timeout,
  then its outcome; between attempts a slot waits for the next claimed job;
- the *settler* writes the outcomes of the attempts that finished meanwhile
  in one store call;
- the *maintainer* renews the leases of running attempts in one call, and
  reaps leases that ran out (a crashed worker's jobs), every ``lease / 3``.

Store calls run on the trio thread: a trio-to-thread hop costs several times
a whole SQLite transaction, so the worker batches instead of hopping.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import random
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import attrs
import trio

from . import _job
from ._interval import MissedTickBehavior, interval
from ._job import (
    EXPIRED_ERROR,
    Event,
    EventKind,
    Failure,
    Job,
    JobState,
    Outcome,
    Release,
    Success,
    check_json,
)
from ._logging import log_job_event, logs_job_event
from ._queue import Queue, Task
from ._retry import Backoff, Permanent, RetryLater
from ._store import ScheduleStore
from ._token import CancellationToken

__all__ = ["Worker", "WorkerStatistics", "current_job", "run_worker"]

logger = logging.getLogger("jobkit")

T = TypeVar("T")

#: How long a worker that is being cancelled may spend handing its leases back.
RELEASE_TIMEOUT = 5.0

#: How often a worker run with ``until_empty`` looks at the store while only
#: jobs running in other workers keep it going (a power of two, so that its
#: instants add up exactly).
TAIL_CHECK = 1 / 16

#: Tracebacks stored on a job are cut to this many characters (the end is kept).
MAX_TRACEBACK = 8000

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


@attrs.frozen
class WorkerStatistics:
    """Counts of what a :class:`Worker` has done since it started.

    ``failed`` counts attempts that raised or timed out; each of them is
    then either ``retried`` or ``dead`` (unless its lease was lost).
    ``released`` counts attempts handed back unfinished at shutdown, and
    ``lost`` those whose lease another worker had already reaped, so their
    outcome was discarded.

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


@attrs.define
class _Counters:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    lost: int = 0


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
    scope: trio.CancelScope | None = None
    """Its slot's cancel scope, while the handler runs."""

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

    async def park(self) -> _Attempt:
        """Wait until the claim loop hands this slot its next attempt."""
        self.attempt = None
        self.idle.append(self)
        await trio.lowlevel.wait_task_rescheduled(self._abort)
        assert self.attempt is not None
        return self.attempt

    def _abort(self, _: object) -> trio.lowlevel.Abort:
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


class _RememberedFrames(traceback.StackSummary):
    """A stack summary that formats each distinct frame line only once.

    Python 3.11 parses a frame's source line to draw its ``^^^`` markers;
    a handler failing over and over repeats the same few frames, so their
    text is kept and reused. The key holds everything the text is made of
    (file, position, function and the source line as read), so reusing it
    gives the very text ``traceback`` would.
    """

    _formatted: ClassVar[dict[tuple[object, ...], str]] = {}
    _LIMIT: ClassVar[int] = 4096

    def format_frame_summary(
        self, frame_summary: traceback.FrameSummary, **kwargs: Any
    ) -> str:
        source = getattr(frame_summary, "_original_line", None)
        if kwargs or frame_summary.locals or source is None:
            return super().format_frame_summary(frame_summary, **kwargs)
        key = (
            frame_summary.filename,
            frame_summary.lineno,
            frame_summary.end_lineno,
            frame_summary.colno,
            frame_summary.end_colno,
            frame_summary.name,
            source,
        )
        formatted = self._formatted.get(key)
        if formatted is None:
            formatted = super().format_frame_summary(frame_summary)
            if len(self._formatted) >= self._LIMIT:
                self._formatted.clear()
            self._formatted[key] = formatted
        return formatted


def _traceback(error: BaseException) -> traceback.TracebackException:
    """``error``'s traceback, chained exceptions included, with frames remembered."""
    root = traceback.TracebackException.from_exception(error)
    todo, seen = [root], set()
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        te.stack = _RememberedFrames(te.stack)
        todo.extend(t for t in (te.__cause__, te.__context__) if t is not None)
        todo.extend(te.exceptions or ())
    return root


# Formatted frames by traceback position: (id(code), tb_lasti, tb_lineno) ->
# (code, (filename, lineno, name), text). The code object is kept so that its
# id cannot be reused by another while the entry lives.
_FrameEntry = tuple[Any, tuple[str, int | None, str], str]
_frames_by_position: dict[tuple[int, int, int], _FrameEntry] = {}


def _plain_traceback(error: BaseException) -> str | None:
    """The standard traceback text of a lone exception from remembered frames.

    Extracting a frame is what costs (its column positions are found by
    walking the code's positions table, and its file is stat-ed for changes),
    and a handler failing over and over fails at the same few positions. So
    each position is formatted once by :mod:`traceback` itself and its text
    reused, the source line as read the first time. Returns None when a
    frame was not seen yet, or when the exception is not the plain case
    (chained, a group, a syntax error, recursion, a traceback limit): the
    caller then formats it in full.
    """
    if (
        error.__cause__ is not None
        or (error.__context__ is not None and not error.__suppress_context__)
        or isinstance(error, BaseExceptionGroup | SyntaxError)
        or getattr(sys, "tracebacklimit", None) is not None
    ):
        return None
    parts = ["Traceback (most recent call last):\n"]
    last: tuple[str, int | None, str] | None = None
    tb = error.__traceback__
    if tb is None:
        parts.clear()
    while tb is not None:
        code = tb.tb_frame.f_code
        entry = _frames_by_position.get((id(code), tb.tb_lasti, tb.tb_lineno))
        if entry is None or entry[0] is not code or entry[1] == last:
            # Unseen, or a repeated line that ``traceback`` would fold.
            return None
        last = entry[1]
        parts.append(entry[2])
        tb = tb.tb_next
    parts.extend(_exception_only(error))
    return "".join(parts)


# The last lines of tracebacks by (exception type, message): formatting them
# builds a whole TracebackException, and a handler failing over and over
# fails with the same few. Types whose line says more than the message (a
# syntax error's source, the "Did you mean" of a name, attribute or import
# error) and exceptions with notes are formatted each time.
_lines_by_message: dict[tuple[type[BaseException], str], list[str]] = {}
_OWN_LINES = (SyntaxError, NameError, AttributeError, ImportError)


def _exception_only(error: BaseException) -> list[str]:
    if isinstance(error, _OWN_LINES) or getattr(error, "__notes__", None) is not None:
        return traceback.format_exception_only(error)
    try:
        message = str(error)
    except Exception:  # traceback has its own words for that
        return traceback.format_exception_only(error)
    key = (type(error), message)
    lines = _lines_by_message.get(key)
    if lines is None:
        lines = traceback.format_exception_only(error)
        if len(_lines_by_message) >= _RememberedFrames._LIMIT:
            _lines_by_message.clear()
        _lines_by_message[key] = lines
    return lines


def _remember_frames(error: BaseException, te: traceback.TracebackException) -> None:
    """Keep the formatted frames of ``error``'s own traceback, by position."""
    tb = error.__traceback__
    stack = te.stack
    if getattr(sys, "tracebacklimit", None) is not None:
        return  # the stack may not hold every frame of ``tb``
    if len(_frames_by_position) + len(stack) > _RememberedFrames._LIMIT:
        _frames_by_position.clear()
    for frame in stack:
        assert tb is not None
        code = tb.tb_frame.f_code
        _frames_by_position[(id(code), tb.tb_lasti, tb.tb_lineno)] = (
            code,
            (frame.filename, frame.lineno, frame.name),
            stack.format_frame_summary(frame),
        )
        tb = tb.tb_next


def describe_error(error: BaseException) -> str:
    """Return the text stored on a job for ``error``: a summary, then the traceback.

    The first line is ``"ExcType: message"`` (what listings show); after a
    blank line comes the formatted traceback, its end kept if it is long.

    Example::

        >>> from jobkit._worker import describe_error
        >>> try:
        ...     raise ValueError("no such user")
        ... except ValueError as e:
        ...     text = describe_error(e)
        >>> text.splitlines()[0]
        'ValueError: no such user'
        >>> "Traceback (most recent call last)" in text
        True
    """
    message = str(error)
    summary = type(error).__name__ + (f": {message}" if message else "")
    summary = summary.splitlines()[0] if summary else type(error).__name__
    trace = _plain_traceback(error)
    if trace is None:
        te = _traceback(error)
        trace = "".join(te.format())
        _remember_frames(error, te)
    if len(trace) > MAX_TRACEBACK:
        trace = "...\n" + trace[-MAX_TRACEBACK:]
    text = f"{summary}\n\n{trace}"
    if not text.isascii():
        # A message may hold text that UTF-8 cannot encode (a lone surrogate
        # from a file name): stored as is, it would make the settle fail.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# -- store calls that survive store errors ------------------------------------------


class _GaveUp(Exception):
    """A store call failed after the worker stopped retrying them."""


#: What a store raises for data it cannot hold, rather than for being
#: unavailable: retrying the same call cannot help.
_REFUSED = (ValueError, TypeError, OverflowError, RecursionError)


class _StoreCaller:
    """Runs store calls; a failing call is logged and retried with backoff.

    Once :meth:`stop_retrying` is called (a stopping worker's grace is
    over), a failing call raises :class:`_GaveUp` instead, and a call
    waiting to retry tries once more at once.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._backoff = Backoff.exponential(0.05, 5.0, jitter="equal")
        self._stopped = trio.Event()

    def stop_retrying(self) -> None:
        self._stopped.set()

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        shield: bool = False,
        refused: tuple[type[Exception], ...] = (),
    ) -> T:
        """``fn()``'s result; errors of the ``refused`` types are raised at once."""
        # ``fn`` is called afresh on every try, so each one reads the clock anew.
        failures = 0
        while True:
            try:
                if shield:
                    # A claim cancelled after its transaction committed would
                    # leave jobs leased to nobody: finish what was started.
                    with trio.CancelScope(shield=True):
                        result = await fn()
                else:
                    result = await fn()
            except refused:
                raise
            except Exception as exc:
                failures += 1
                if self._stopped.is_set():
                    logger.error(
                        "store %s failed while the worker stops; not retrying",
                        what,
                        exc_info=exc,
                        extra={"store_call": what, "failures": failures},
                    )
                    raise _GaveUp(what) from exc
                delay = self._backoff.delay(failures, rng=self._rng)
                if failures == 1:
                    logger.error(
                        "store %s failed; retrying in %.2fs",
                        what,
                        delay,
                        exc_info=exc,
                        extra={"store_call": what, "failures": failures},
                    )
                else:
                    logger.warning(
                        "store %s failed again (%d times in a row); "
                        "retrying in %.2fs: %s",
                        what,
                        failures,
                        delay,
                        exc,
                        extra={"store_call": what, "failures": failures},
                    )
                with trio.move_on_after(delay):
                    await self._stopped.wait()
            else:
                if failures:
                    logger.warning(
                        "store %s works again after %d failures",
                        what,
                        failures,
                        extra={"store_call": what, "failures": failures},
                    )
                return result


# -- settling outcomes in batches ----------------------------------------------------


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


# -- the worker ------------------------------------------------------------------


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


def _positive(value: float | timedelta, name: str, *, zero_ok: bool = False) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be seconds (float) or a timedelta, got {value!r}")
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return float(seconds)


class Worker:
    """Runs the jobs of a :class:`Queue`: claims, executes, retries, recovers.

    Usually started with :func:`run_worker`; build one directly to keep a
    reference for :meth:`statistics`, then ``await worker.run()``. The
    options are those of :func:`run_worker`.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
        >>> @queue.task()
        ... async def double(n: int) -> int:
        ...     return 2 * n
        >>> async def main():
        ...     token = jobkit.CancellationToken()
        ...     worker = jobkit.Worker(queue, shutdown=token)
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(worker.run)
        ...         for n in range(3):
        ...             await double.enqueue(n=n)
        ...         await trio.sleep(1)
        ...         token.cancel()
        ...     return worker.statistics().succeeded
        >>> jobkit.testing.run_virtual(main)
        3
    """

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        lease: float | timedelta = 30.0,
        poll_interval: float | timedelta = 1.0,
        shutdown: CancellationToken | None = None,
        grace: float | timedelta = 10.0,
        rng: random.Random | None = None,
        until_empty: bool = False,
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a jobkit.Queue, got {queue!r}")
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if queues is not None:
            if isinstance(queues, str):
                raise TypeError(
                    f"queues must be a list of queue names, not the string {queues!r}"
                )
            queues = tuple(queues)
            if not queues or not all(isinstance(q, str) and q for q in queues):
                raise ValueError(
                    f"queues must be None (all) or non-empty names, got {queues!r}"
                )
        self._queue = queue
        self._concurrency = concurrency
        self._queues: tuple[str, ...] | None = queues
        self._lease = _positive(lease, "lease")
        self._poll_interval = _positive(poll_interval, "poll_interval")
        self._grace = _positive(grace, "grace", zero_ok=True)
        self._shutdown = shutdown
        self._until_empty = bool(until_empty)
        # Set once the due slots of the store's schedules have been enqueued
        # for the first time: until then an empty store is not a finished one.
        self._schedules_fired = trio.Event()
        self._rng = rng if rng is not None else random.Random()
        self._caller = _StoreCaller(self._rng)
        self._settler = _Settler(queue, self._caller, self._finish, self._drop)
        self._limiter: trio.CapacityLimiter | None = None
        self._running: dict[int, _Attempt] = {}
        self._idle: list[_Slot] = []
        self._counters = _Counters()
        self._poked: trio.Event | None = None
        self._slot_free = False  # the claim loop waits with a slot free
        self._waiting: trio.CancelScope | None = None  # ... until this deadline
        self._claiming = trio.CancelScope()  # the claim loop, and its store calls
        self._stopping = False
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<jobkit.Worker running {len(self._running)}/{self._concurrency} "
            f"jobs of queues {self._queues or 'all'}>"
        )

    def statistics(self) -> WorkerStatistics:
        """Return a snapshot of this worker's counters.

        Example::

            >>> import jobkit
            >>> jobkit.Worker(jobkit.Queue()).statistics().succeeded
            0
        """
        return WorkerStatistics(
            running=len(self._running), **attrs.asdict(self._counters)
        )

    @property
    def stopping(self) -> bool:
        """True once shutdown was requested: no new job will be claimed."""
        return self._stopping

    # -- wiring ------------------------------------------------------------------

    def _poke(self) -> None:
        # Wakes the claim loop (and a draining shutdown) to look again.
        if self._poked is not None:
            self._poked.set()

    def _on_enqueue(self, queue: str) -> None:
        if self._queues is None or queue in self._queues:
            self._poke()

    async def run(
        self, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until the shutdown token is cancelled, then return after draining.

        See :func:`run_worker` for what happens at shutdown and on
        cancellation. A worker runs once.

        Example::

            >>> import trio, jobkit, jobkit.testing
            >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
            >>> token = jobkit.CancellationToken()
            >>> token.cancel()                 # already cancelled: returns at once
            >>> jobkit.testing.run_virtual(jobkit.Worker(queue, shutdown=token).run)
        """
        if self._started:
            raise RuntimeError("this Worker has already run; create a new one")
        self._started = True
        store = self._queue.store  # fail now, with the message, if there is none
        del store
        self._limiter = trio.CapacityLimiter(self._concurrency)
        self._poked = trio.Event()
        self._queue._listeners.add(self._on_enqueue)
        logger.info(
            "worker started: concurrency %d, queues %s, lease %gs",
            self._concurrency,
            ", ".join(self._queues) if self._queues else "all",
            self._lease,
            extra={"concurrency": self._concurrency, "queues": self._queues},
        )
        try:
            async with trio.open_nursery() as service:
                service.start_soon(self._settler.run, name="jobkit settler")
                service.start_soon(self._maintain, name="jobkit lease maintainer")
                service.start_soon(self._fire_schedules, name="jobkit scheduler")
                # A store that hears other processes' enqueues (PostgreSQL's
                # NOTIFY) offers wait_for_jobs; the others need no such task.
                wait_for_jobs = getattr(self._queue.store, "wait_for_jobs", None)
                if wait_for_jobs is not None:
                    service.start_soon(
                        self._listen, wait_for_jobs, name="jobkit listener"
                    )
                if self._shutdown is not None:
                    service.start_soon(self._watch, self._shutdown)
                async with trio.open_nursery() as attempts:
                    task_status.started(self)
                    with self._claiming:
                        await self._claim_loop(attempts)
                    await self._drain()
                    attempts.cancel_scope.cancel()  # the parked slots
                service.cancel_scope.cancel()
        finally:
            self._queue._listeners.discard(self._on_enqueue)
            await self._hand_back()
            logger.info("worker stopped", extra={"statistics": self.statistics()})

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

    # -- claiming ----------------------------------------------------------------

    async def _claim_loop(self, attempts: trio.Nursery) -> None:
        while not self._stopping and not (
            self._shutdown is not None and self._shutdown.cancelled
        ):
            # A fresh event before looking at the store, so that an enqueue
            # landing while we look is not missed.
            self._poked = trio.Event()
            free = self._concurrency - len(self._running)
            deadline = math.inf
            if free > 0:
                jobs = await self._caller.call(
                    "claim", functools.partial(self._claim, free), shield=True
                )
                for job in jobs:
                    self._start(attempts, job)
                if len(jobs) == free:
                    continue
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
                await self._poked.wait()
            else:
                with trio.move_on_at(deadline) as self._waiting:
                    await self._poked.wait()
                self._waiting = None
            self._slot_free = False

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
        # Only jobs of tasks this worker can run: a job of a task that only a
        # newer deploy knows waits QUEUED for a worker that knows it. A job
        # enqueued without max_attempts gets its task's policy's here.
        tasks = self._queue.tasks
        return await self._queue.store.claim(
            queues=self._queues,
            limit=limit,
            now=self._queue.clock(),
            lease=self._lease,
            tasks=list(tasks),
            max_attempts={
                name: task.retry.max_attempts for name, task in tasks.items()
            },
        )

    async def _next_deadline(self) -> float | None:
        """Return the trio time to look again, or None if a job is due already."""
        store = self._queue.store
        clock = self._queue.clock
        next_due = await self._caller.call(
            "next_run_at",
            lambda: store.next_run_at(
                queues=self._queues, tasks=list(self._queue.tasks)
            ),
        )
        poll = trio.current_time() + self._poll_interval
        if next_due is None:
            return poll
        if next_due <= clock():
            return None
        return min(poll, self._trio_time(next_due))

    def _trio_time(self, at: float) -> float:
        """The trio time at which the queue's clock reads ``at``."""
        clock = self._queue.clock
        if clock is trio.current_time:
            return at  # the same time base: the exact instant, free of rounding
        return trio.current_time() + (at - clock())

    def _start(self, nursery: trio.Nursery, job: Job) -> None:
        attempt = _Attempt(job)
        self._running[job.id] = attempt
        self._counters.claimed += 1
        if not self._idle:
            nursery.start_soon(self._slot, attempt, name="jobkit worker slot")
            return
        # Waking a parked slot costs a fraction of starting a task (and of
        # entering a cancel scope, which each task would need). The slot gets
        # a fresh copy of this context, as a new task would, so that what a
        # handler sets in a context variable never reaches the next job.
        slot = self._idle.pop()
        slot.attempt = attempt
        slot.task.context = contextvars.copy_context()
        trio.lowlevel.reschedule(slot.task)

    # -- running attempts --------------------------------------------------------

    async def _slot(self, attempt: _Attempt) -> None:
        slot = _Slot(trio.lowlevel.current_task(), self._idle)
        error: Exception | None = None
        result: Any = None
        with trio.CancelScope() as scope:
            while True:
                error, result = await self._execute(attempt, scope)
                if scope.cancel_called:
                    break
                await self._conclude(attempt, error, result, cancelled=False)
                attempt = await slot.park()
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
        elif cancelled:
            attempt.outcome = Release(job.id, job.attempts)
        elif error is not None:
            attempt.error = error
            task = self._queue._tasks.get(job.task)
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
            self._queue._watchers.notify(attempt.job.id)
        if applied and isinstance(attempt.outcome, Release):
            # A released job is due now: let an idle local worker take it.
            self._queue._listeners.notify(attempt.job.queue)
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
        if (
            not self._slot_free
            or self._stopping
            or (self._until_empty and not self._running)
        ):
            self._poke()
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
        elif not isinstance(outcome, Success | Release):
            self._poke()

    async def _execute(
        self, attempt: _Attempt, scope: trio.CancelScope
    ) -> tuple[Exception | None, Any]:
        """Run the handler inside the slot's ``scope``: its error, or its result."""
        job = attempt.job
        # The dict itself, not the read-only view ``tasks`` builds per call.
        task = self._queue._tasks.get(job.task)
        _current_job.set(job)
        attempt.started = self._queue.clock()
        if logs_job_event(_STARTED):
            log_job_event(Event(job.id, _STARTED, job.updated_at, job.attempts), job)
        attempt.scope = scope
        if attempt.stopped:
            scope.cancel()
        try:
            if task is None:
                known = ", ".join(sorted(self._queue.tasks)) or "none"
                raise LookupError(
                    f"no task named {job.task!r} is registered with this "
                    f"worker's queue (known: {known})"
                )
            shape = task._shape
            if shape is None or not shape.accepts(job.payload):
                _check_payload(task, job.payload)
            result = await self._invoke(task, job)
            try:
                check_json(result, "result")
            except (TypeError, ValueError) as exc:
                # The side effects happened; running it again would repeat
                # them and fail the same way.
                raise Permanent(
                    f"the handler's result is not storable JSON: {exc}"
                ) from exc
        except Exception as exc:
            return exc, None
        finally:
            attempt.scope = None
        return None, result

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
        if isinstance(outcome, Failure):
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
        kind = _job.settled_kind(job, outcome)
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

    # -- leases --------------------------------------------------------------------

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
            self._queue._watchers.notify(job.id)
        # Other workers of this process may be idle: recovered jobs are due now.
        for name in sorted(
            {job.queue for job in reaped if job.state is JobState.QUEUED}
        ):
            self._queue._listeners.notify(name)

    # -- stopping --------------------------------------------------------------------

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
                self._queue._watchers.notify(attempt.job.id)
        for name in sorted({a.job.queue for a in leftover}):
            self._queue._listeners.notify(name)
        logger.info("worker cancelled: handed back %d jobs", len(outcomes))

    # -- schedules ---------------------------------------------------------------------

    async def _fire_schedules(self) -> None:
        # Every worker fires every schedule: the store enqueues each slot once,
        # whoever asks first. It looks at each next slot, when this process
        # changes a schedule, and every poll interval (for other processes').
        store = self._queue.store
        if not isinstance(store, ScheduleStore):
            self._schedules_fired.set()
            return
        clock = self._queue.clock
        changed = trio.Event()

        def on_change(name: str) -> None:
            changed.set()

        self._queue._schedule_listeners.add(on_change)
        try:
            while not self._stopping:
                changed = trio.Event()
                fired = await self._caller.call(
                    "fire_schedules",
                    lambda: store.fire_schedules(now=clock()),
                    shield=True,
                )
                for firing in fired.firings:
                    logger.info(
                        "schedule %r enqueued job %d for its slot %r",
                        firing.schedule,
                        firing.job_id,
                        firing.slot,
                        extra=attrs.asdict(firing),
                    )
                for name in sorted({firing.queue for firing in fired.firings}):
                    self._queue._listeners.notify(name)
                self._schedules_fired.set()
                deadline = trio.current_time() + self._poll_interval
                if fired.next_slot is not None:
                    deadline = min(deadline, self._trio_time(fired.next_slot))
                with trio.move_on_at(deadline):
                    await changed.wait()
        finally:
            self._queue._schedule_listeners.discard(on_change)


async def run_worker(
    queue: Queue,
    *,
    concurrency: int = 10,
    queues: Sequence[str] | None = None,
    lease: float | timedelta = 30.0,
    poll_interval: float | timedelta = 1.0,
    shutdown: CancellationToken | None = None,
    grace: float | timedelta = 10.0,
    rng: random.Random | None = None,
    until_empty: bool = False,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the jobs of ``queue`` until ``shutdown`` is cancelled, then drain and return.

    ``await nursery.start(run_worker, queue)`` returns the :class:`Worker`
    (for its :meth:`~Worker.statistics`) once it runs; ``nursery.start``
    passes no keyword arguments, so give options with
    ``functools.partial(run_worker, queue, concurrency=4, ...)``. The worker:

    - runs at most ``concurrency`` jobs at once, claiming up to the free
      slots in one store call, from ``queues`` (None: all);
    - runs ``async def`` handlers on trio and plain functions in threads,
      each attempt under its task's timeout (a timeout is a failed attempt)
      and in a fresh copy of the worker's context: a context variable a
      handler sets (a request id for its logs) never reaches the next job;
    - never runs a job again while a thread of an earlier attempt still
      runs: a thread cannot be interrupted, so an attempt past its timeout
      keeps its slot and its renewed lease until the thread returns, and
      only then fails as timed out (its result dropped). A handler that can
      stop early calls ``trio.from_thread.check_cancelled()``, which raises
      once its attempt timed out or must stop;
    - binds each payload to the handler's parameters before calling it: a
      missing or unknown argument fails the job at once, for good (a
      ``TypeError`` raised inside the handler is retried like any error);
    - fails a job for good whose result cannot be stored (not JSON, or
      text UTF-8 cannot encode) and escapes such text in error messages,
      so that one job's data never holds up another job's outcome;
    - on failure asks the task's :class:`RetryPolicy` (drawing jitter from
      ``rng``) and stores the error on the job as ``"ExcType: message"``, a
      blank line, and the traceback;
    - logs every transition it causes once on logger ``jobkit`` with the
      fields ``job_id``, ``task``, ``queue``, ``attempt``, ``state``,
      ``event``, ``duration`` and ``error`` in ``extra``; a failure's record
      carries its traceback (a :class:`RetryLater` request does not);
    - holds each running job's lease for ``lease`` seconds and renews all of
      them in one call every ``lease / 3``; at the same pace reaps leases
      that ran out elsewhere (a crashed attempt counts as an attempt);
    - sleeps until the next job is due, at most ``poll_interval``, and wakes
      at once when this process enqueues a job;
    - logs store errors and retries them with backoff; they never stop it,
      nor keep it from stopping;
    - enqueues the due slots of the store's schedules
      (:meth:`Queue.schedule`; all of them, whatever ``queues`` it serves)
      at each next slot and at least every ``poll_interval``; with several
      workers, each slot still once.

    When ``shutdown`` (a :class:`CancellationToken`) is cancelled it stops
    claiming at once, lets running jobs finish for up to ``grace`` seconds,
    then cancels the rest and releases their leases (the jobs are QUEUED
    again with their attempt not counted, so another worker starts them
    at once) and returns. A handler running in a thread cannot be
    interrupted: the worker waits for it, its lease renewed, and settles
    what it returns, so a worker with thread handlers may stop later than
    ``grace`` (give a process manager's stop timeout room for the longest).
    A store that keeps failing does not hold it up: once the grace is over,
    each outcome it could not write gets one more try, then the worker
    returns and leaves those jobs' leases to expire, after which they run
    again (at least once, as after a crash).

    With ``until_empty=True`` it also stops by itself, the same graceful
    way, once it runs nothing and the store holds no job of its queues that
    is QUEUED (due now or later: it waits for retries and delayed jobs) or
    RUNNING (in another worker, which may still retry it): a batch run
    from cron, a script or a test that drains the queue and exits. It looks
    when its own last attempt ends, at each job's due time, every
    ``poll_interval``, and, while only jobs running in other workers keep
    it going (whose end no event of this process reports), every
    1/16 s: it stops within 1/16 s (or its ``poll_interval``, if shorter)
    of another worker settling the last job.

    If instead the worker is cancelled from outside (its nursery's cancel
    scope), it still hands back every lease it holds, in one shielded store
    call bounded by a few seconds, rather than leave the jobs to wait for
    their leases to expire.

    Example::

        >>> import trio, jobkit, jobkit.testing
        >>> from functools import partial
        >>> queue = jobkit.Queue(jobkit.MemoryStore(), clock=trio.current_time)
        >>> @queue.task(timeout=5)
        ... async def greet(name: str) -> str:
        ...     await trio.sleep(1)
        ...     return f"hello {name}"
        >>> async def main():
        ...     token = jobkit.CancellationToken()
        ...     async with trio.open_nursery() as nursery:
        ...         worker = await nursery.start(
        ...             partial(jobkit.run_worker, queue, concurrency=4, shutdown=token)
        ...         )
        ...         job_id = await greet.enqueue(name="ada")
        ...         await trio.sleep(2)
        ...         token.cancel()
        ...     job = await queue.get(job_id)
        ...     return job.state.value, job.result, worker.statistics().succeeded
        >>> jobkit.testing.run_virtual(main)
        ('succeeded', 'hello ada', 1)
    """
    worker = Worker(
        queue,
        concurrency=concurrency,
        queues=queues,
        lease=lease,
        poll_interval=poll_interval,
        shutdown=shutdown,
        grace=grace,
        rng=rng,
        until_empty=until_empty,
    )
    await worker.run(task_status=task_status)
