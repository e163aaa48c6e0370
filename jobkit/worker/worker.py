"""The worker: claims due jobs, runs their handlers, reports how each attempt went.

One :class:`Worker` is a handful of small trio tasks that share its state
(declared in :mod:`.base`), each part in a module of its own:

- the *claim loop* (:mod:`.claims`) takes up to the free slots' worth of due
  jobs per store call, then sleeps until the next job is due, the poll
  interval ends, a slot frees up, or this process enqueues something;
- up to ``concurrency`` *slot* tasks (:mod:`.slots`) each run one attempt at
  a time: the handler (on trio, or in a thread for a plain function) under
  its timeout, then its outcome; between attempts a slot waits for the next
  claimed job; a failure's traceback is trimmed in :mod:`.tracebacks`;
- the *settler* (:mod:`.settle`) writes the outcomes of the attempts that
  finished meanwhile in one store call;
- the *maintainer* (:mod:`.leases`) renews the leases of running attempts in
  one call, and reaps leases that ran out (a crashed worker's jobs), every
  ``lease / 3``; while a renewal is on its way or after one failed, each
  handler runs under a deadline a margin before its lease ends, lifted when
  a renewal lands: when renewals keep failing, the handler stops before
  another worker may reap the job and run it;
- the *scheduler* (:mod:`.schedules`) enqueues the due slots of schedules;
- :mod:`.shutdown` stops claiming, drains within the grace and hands back
  the rest; every store call retries through :mod:`.storecalls`.

Store calls run on the trio thread: a trio-to-thread hop costs several times
a whole SQLite transaction, so the worker batches instead of hopping.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Sequence
from datetime import timedelta

import attrs
import trio

from .._checks import seconds
from ..queue.facade import Queue
from ..runtime.token import CancellationToken
from .base import _Deadline
from .claims import _Claims
from .leases import FENCE_MARGIN, _Leases
from .schedules import _Schedules
from .settle import _Refill, _Settler
from .shutdown import _Shutdown
from .slots import _Slots
from .state import WorkerStatistics, _Attempt, _Counters, _Slot
from .storecalls import _StoreCaller

__all__ = ["Worker", "run_worker"]

logger = logging.getLogger("jobkit")


# -- store calls that survive store errors ------------------------------------------


# -- settling outcomes in batches ----------------------------------------------------


# -- the worker ------------------------------------------------------------------


class Worker(_Claims, _Slots, _Leases, _Schedules, _Shutdown):
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
        self._tasks = queue.tasks  # a live view: tasks registered later show
        self._concurrency = concurrency
        self._queues: tuple[str, ...] | None = queues
        self._lease = seconds(lease, "lease", positive=True)
        self._poll_interval = seconds(poll_interval, "poll_interval", positive=True)
        self._grace = seconds(grace, "grace")
        self._shutdown = shutdown
        self._until_empty = bool(until_empty)
        # Set once the due slots of the store's schedules have been enqueued
        # for the first time: until then an empty store is not a finished one.
        self._schedules_fired = trio.Event()
        self._rng = rng if rng is not None else random.Random()
        self._caller = _StoreCaller(self._rng)
        self._settler = _Settler(
            queue,
            self._caller,
            self._finish,
            self._drop,
            refill=_Refill(self._refill_limit, self._claim_args, self._refill),
        )
        self._limiter: trio.CapacityLimiter | None = None
        self._running: dict[int, _Attempt] = {}
        self._idle: list[_Slot] = []
        self._counters = _Counters()
        self._poked: trio.Event | None = None
        # During a claim: the last id of each enqueue heard of meanwhile;
        # None once anything else poked.
        self._heard: list[int] | None = None
        self._margin = self._lease * FENCE_MARGIN
        # The fence: while a renewal is on its way or after one failed, each
        # handler runs under a deadline a margin before its lease ends.
        self._renewing = False
        self._renew_failed = False
        self._slot_free = False  # the claim loop waits with a slot free
        self._full = False  # the claim loop waits for a slot to free up
        self._attempts: trio.Nursery | None = None  # where slot tasks run
        # What each attempt's handler starts from: a copy of the context the
        # worker runs in, never what a previous handler left in its own.
        self._base_context = contextvars.copy_context()
        self._waiting: _Deadline | None = None  # ... until this deadline
        self._tasks_seen = (-1, (), {})
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
        self._heard = None
        if self._poked is not None:
            self._poked.set()

    def _on_enqueue(self, queue: str) -> None:
        if self._queues is None or queue in self._queues:
            ids = self._queue._wakeups.enqueued
            if ids and self._heard is not None and self._poked is not None:
                self._heard.append(ids[-1])
                self._poked.set()
            else:
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
        self._base_context = contextvars.copy_context()
        unsubscribe = self._queue.subscribe(ready=self._on_enqueue)
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
                    self._attempts = attempts
                    try:
                        task_status.started(self)
                        with self._claiming:
                            await self._claim_loop(attempts)
                        await self._drain()
                        attempts.cancel_scope.cancel()  # the parked slots
                    finally:
                        # Closed to new slot tasks from here on.
                        self._attempts = None
                service.cancel_scope.cancel()
        finally:
            unsubscribe()
            await self._hand_back()
            logger.info("worker stopped", extra={"statistics": self.statistics()})

    # -- claiming ----------------------------------------------------------------

    def _trio_time(self, at: float) -> float:
        """The trio time at which the queue's clock reads ``at``."""
        clock = self._queue.clock
        if clock is trio.current_time:
            return at  # the same time base: the exact instant, free of rounding
        return trio.current_time() + (at - clock())

    # -- running attempts --------------------------------------------------------

    # -- leases --------------------------------------------------------------------

    # -- stopping --------------------------------------------------------------------

    # -- schedules ---------------------------------------------------------------------


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
    - fences itself: when renewals keep failing (the store unreachable, a
      network cut), it cancels a job's handler ``lease / 6`` before the
      lease ends and records a failed attempt, retried after the task's
      backoff (whatever its ``retry_on``) or DEAD if it was the last, as an
      expired lease counts; so no two workers ever run the job at the same
      time, as long as the hosts' clocks agree within that margin (a
      handler running in a thread cannot be stopped: it is abandoned);
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
