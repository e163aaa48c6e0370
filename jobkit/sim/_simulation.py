"""The simulation: the real queue and worker, in virtual time, under a fault plan.

:class:`Simulation` wires a :class:`jobkit.Queue`, one or more
:func:`jobkit.run_worker` processes and a producer together on a virtual
clock that jumps ahead whenever every task waits (as
``trio.testing.MockClock(autojump_threshold=0)`` does, in fewer passes of
trio's loop; see ``_clock``), so a day of traffic takes seconds. Nothing of
the queue is re-implemented here: the simulation only registers one task
whose handler runs the fault plan, and puts a thin layer between the worker
and the store that injects store errors, plays dead for a crashed worker
process, and takes notes for the trace.

Determinism rests on three things. Every random draw comes from a stream
keyed by what it decides (fault, job, attempt), never from a shared stream
whose order would depend on the scheduler. trio's own scheduler, which
shuffles the order of tasks that wake together, is seeded from the
simulation's seed for the duration of the run. And the trace is read from
the store's event log in the order the store recorded it.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import functools
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeAlias

import trio

from .._checks import int_at_least, seconds
from ..core.job import Failure, Job, JobState, Outcome, Success, attempt_limit
from ..core.retry import RetryPolicy
from ..queue.facade import PreparedJob, Queue
from ..store.memory import MemoryStore, _EventRow
from ..store.protocol import Store
from ..worker.slots import current_job
from ..worker.worker import run_worker
from . import _clock
from ._clock import new_clock
from ._faults import (
    Attempt,
    Dependency,
    DependencyOverloaded,
    Fault,
    FaultPlan,
    SimulatedStoreError,
    StoreErrors,
)
from ._processes import LabStore, Process, current_process, worker_process
from ._progress import Progress, ProgressOption, Reporter
from ._rng import KeyedRandom, derive, salt
from ._trace import Call, Trace, TraceEvent
from ._workload import Burst, Workload

__all__ = ["Simulation"]

_TASK = "sim.job"
_SALT_WORKLOAD = salt("workload")
_SALT_WORKER = salt("worker")
_SALT_BACKOFF = salt("backoff")
_SALT_SCHEDULER = salt("scheduler")
# A producer whose enqueue failed tries again after this long.
_ENQUEUE_RETRY = 1.0


class _WorkerRandom(KeyedRandom):
    """The worker's random source: inside a handler's context, one stream per attempt.

    The worker draws its jitter after an attempt failed, while the attempt's
    job is still its current job; keying the draw by that job and attempt
    makes the delay independent of which other failures were handled
    first. Outside a job (the worker's own store-retry backoff) it is a
    plain per-process stream.
    """

    def __init__(self, seed: int, slot: int, incarnation: int) -> None:
        super().__init__(seed, _SALT_WORKER, slot, incarnation)
        self._seed = seed
        self._key: tuple[int, int] | None = None
        self._draws = 0

    def random(self) -> float:
        try:
            job = current_job()
        except RuntimeError:
            return super().random()
        key = (job.id, job.attempts)
        if key != self._key:
            self._key, self._draws = key, 0
        self._draws += 1
        return KeyedRandom(
            self._seed, _SALT_BACKOFF, job.id, job.attempts, self._draws
        ).random()


# -- the dependency --------------------------------------------------------------------


class _DependencyState:
    def __init__(self, dependency: Dependency) -> None:
        self.dependency = dependency
        self.sent: list[float] = []  # request times, non-decreasing

    def load(self, at: float) -> int:
        """Requests sent in ``(at - window, at]``."""
        sent = self.sent
        hi = bisect.bisect_right(sent, at)
        lo = bisect.bisect_right(sent, at - self.dependency.window, 0, hi)
        return hi - lo


# -- one run ---------------------------------------------------------------------------


class _Run:
    """Everything one call of :meth:`Simulation.run` needs and notes down."""

    def __init__(self, sim: Simulation, store: Store, clock: trio.abc.Clock):
        self.sim = sim
        self.seed = sim.seed
        self.plan = sim.faults
        self.store = store
        self.clock = clock
        self.arrivals = sim.workload.arrivals(KeyedRandom(sim.seed, _SALT_WORKLOAD))
        self.lab_store = LabStore(store, self)
        # The clock's own method: what trio.current_time() returns, without
        # looking up the running loop for every read.
        self.queue = Queue(self.lab_store, clock=clock.current_time)
        self.queue.task(_TASK, retry=sim.retry, timeout=sim.timeout)(self._handler)
        # (position, derive(seed, position), fault): each fault's stream
        # prefix, mixed once per run rather than for every attempt.
        self.attempt_faults: tuple[tuple[int, int, Fault], ...] = tuple(
            (index, derive(self.seed, index), fault)
            for index, fault in self.plan.attempt_faults
        )
        self.dependencies = {
            dep.name: _DependencyState(dep) for dep in self.plan.dependencies
        }
        # Notes for the trace, keyed by (job id, attempt).
        self.workers: dict[tuple[int, int], str] = {}
        self.failed_at: dict[tuple[int, int], float] = {}
        self.delays: dict[tuple[int, int], float] = {}
        self.dues: dict[tuple[int, int], float] = {}
        self.causes: dict[tuple[int, int], str] = {}
        # The cause as it stood when the store reaped the attempt: what the
        # attempt did after it lost its lease did not make it lose it.
        self.expiry_causes: dict[tuple[int, int], str | None] = {}
        # Attempts whose jobs the store holds for a worker process: claimed,
        # neither settled nor reaped yet. A crash ends every one of them,
        # whether its handler had started or not.
        self.held: dict[tuple[int, int], Process] = {}
        self.crash_events: dict[tuple[int, int], TraceEvent] = {}
        self.errors: dict[tuple[int, int], BaseException] = {}
        self.max_attempts: dict[int, int] = {}
        self.calls: list[Call] = []
        self.system_events: list[TraceEvent] = []
        # Progress towards draining.
        self.enqueued = 0
        self.done = 0
        self.started = 0
        self.produced = False
        self.processes: list[Process] = []
        self.producer = Process("producer", 0, 0)
        self.stopping = False
        self.wake = trio.Event()
        self.drained = False
        self.wall_start = time.monotonic()
        self.last_report = self.wall_start
        self.reporter = Reporter(sim.progress, len(self.arrivals))
        self._reported = 0
        self.sim_until: float | None = None

    # -- notes from the store layer ------------------------------------------------

    def claimed(self, process: Process, jobs: Sequence[Job]) -> None:
        held = self.held
        for job in jobs:
            key = (job.id, job.attempts)
            self.workers[key] = process.name
            self.max_attempts[job.id] = attempt_limit(job)
            held[key] = process
            if process.crashed_at is not None:
                # The claim committed after its process had died.
                self._crashed(process, key, process.crashed_at, "worker crashed")
        self.started += len(jobs)

    def settled(
        self,
        process: Process,
        outcomes: Sequence[Outcome],
        applied: Sequence[bool],
        now: float,
    ) -> None:
        finished = 0
        held = self.held
        for outcome, ok in zip(outcomes, applied, strict=True):
            if not ok:
                continue
            key = (outcome.job_id, outcome.attempt)
            held.pop(key, None)
            if process.crashed_at is not None:
                # The settle committed after its process had died: the crash
                # did not end this attempt after all.
                self._uncrashed(key)
            if isinstance(outcome, Success):
                finished += 1
            elif isinstance(outcome, Failure):
                if outcome.retry_at is None or outcome.attempt >= self.max_attempts.get(
                    outcome.job_id, math.inf
                ):
                    finished += 1
                else:
                    failed_at = self.failed_at.get(key, now)
                    self.delays[key] = outcome.retry_at - failed_at
                    self.dues[key] = outcome.retry_at
        self._finished(finished)

    def reaped(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            key = (job.id, job.attempts)
            self.held.pop(key, None)
            self.expiry_causes[key] = (
                "crash" if key in self.crash_events else self.causes.get(key)
            )
        self._finished(sum(job.state is JobState.DEAD for job in jobs))

    def store_error(self, process: Process, op: str, *, committed: bool) -> None:
        when = "after committing" if committed else "before committing"
        self.system_events.append(
            TraceEvent(
                time=trio.current_time(),
                kind="store_error",
                job=None,
                attempt=None,
                worker=process.name,
                error=f"SimulatedStoreError: {op} failed {when} (injected)",
            )
        )

    def _finished(self, count: int) -> None:
        self.done += count
        if self.produced and self.done >= self.enqueued:
            self.wake.set()
        elif self.done // 64 != self._reported and self.reporter.enabled:
            # Reported right here, never by waking a task: an extra wake-up
            # would change the order trio runs tasks in, and with it the run,
            # depending on how fast this machine is.
            self._reported = self.done // 64
            now = time.monotonic()
            if now - self.last_report >= self.reporter.interval:
                self.last_report = now
                self.reporter.report(self.snapshot(trio.current_time()))

    # -- what Attempt calls -----------------------------------------------------------

    def note(self, attempt: Attempt, cause: str) -> None:
        self.causes[(attempt.job.id, attempt.number)] = cause

    async def crash(self, attempt: Attempt) -> NoReturn:
        process = worker_process()
        now = trio.current_time()
        # Claimed attempts whose handlers had not begun, or had ended with
        # their outcome not yet written, die too; so does a handler still
        # running after its lease was lost.
        ended = {key for key, holder in self.held.items() if holder is process}
        ended.update(process.inflight)
        mine = (attempt.job.id, attempt.number)
        for key in sorted(ended):
            self._crashed(
                process, key, now, "crash" if key == mine else "worker crashed"
            )
        process.gone = True
        process.crashed = True
        process.crashed_at = now
        process.scope.cancel()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    def _crashed(
        self, process: Process, key: tuple[int, int], at: float, cause: str
    ) -> None:
        event = TraceEvent(at, "crashed", key[0], key[1], process.name, cause=cause)
        self.crash_events[key] = event
        self.system_events.append(event)

    def _uncrashed(self, key: tuple[int, int]) -> None:
        event = self.crash_events.pop(key, None)
        if event is not None:
            self.system_events.remove(event)

    async def call(self, dependency: Dependency, attempt: Attempt) -> None:
        state = self.dependencies[dependency.name]
        sent = trio.current_time()
        state.sent.append(sent)
        await _clock.sleep(dependency.latency)
        # By now every request sent at the same instant has been counted.
        load = state.load(sent)
        p = dependency.failure_probability(load)
        ok = not (p > 0 and attempt.rng().random() < p)
        self.calls.append(
            Call(sent, attempt.job.id, attempt.number, dependency.name, load, ok)
        )
        if not ok:
            attempt.note("overloaded")
            raise DependencyOverloaded(
                f"{dependency.name} refused the request: {load} requests in "
                f"{dependency.window:g}s, capacity {dependency.capacity:g}"
            )

    # -- the tasks -----------------------------------------------------------------

    async def _handler(self) -> None:
        job = current_job()
        process = worker_process()
        attempt = Attempt(self, job, worker=process.name, started=trio.current_time())
        key = (job.id, job.attempts)
        process.inflight[key] = attempt
        try:
            for index, stream, fault in self.attempt_faults:
                attempt._index, attempt._stream = index, stream
                await fault.inject(attempt)
        except trio.Cancelled:
            self.failed_at[key] = trio.current_time()
            if self.causes.get(key) == "hang":
                self.errors[key] = trio.TooSlowError()
            raise
        except Exception as exc:
            self.failed_at[key] = trio.current_time()
            try:
                self.errors[key] = copy.copy(exc)
            except Exception:  # an exception type that cannot be copied
                self.errors[key] = exc
            raise
        finally:
            del process.inflight[key]

    async def process_slot(self, slot: int) -> None:
        incarnation = 0
        while not self.stopping:
            incarnation += 1
            name = f"w{slot}" if incarnation == 1 else f"w{slot}.{incarnation}"
            process = Process(name, slot, incarnation)
            self.processes.append(process)
            if incarnation > 1:
                self.system_events.append(
                    TraceEvent(trio.current_time(), "restarted", None, None, name)
                )
            current_process.set(process)
            sim = self.sim
            with process.scope:
                try:
                    await run_worker(
                        self.queue,
                        concurrency=sim.concurrency,
                        lease=sim.lease,
                        poll_interval=sim.poll_interval,
                        rng=_WorkerRandom(self.seed, slot, incarnation),
                    )
                except BaseException:
                    # A dead process's last gasps (its attempt to hand back
                    # leases) are not errors of the simulation.
                    if not process.gone:
                        raise
            if not process.crashed:
                return
            await _clock.sleep(sim.restart_delay)

    async def produce(self) -> None:
        arrivals = self.arrivals
        # Every arrival is the same job; a PreparedJob is immutable, so one serves.
        job = PreparedJob(_TASK)
        i, n = 0, len(arrivals)
        while i < n:
            at = arrivals[i]
            j = i + 1
            while j < n and arrivals[j] == at:
                j += 1
            await _clock.sleep_until(at)
            batch = [job] * (j - i)
            while True:
                try:
                    ids = await self.queue.enqueue_many(batch)
                except SimulatedStoreError:
                    await _clock.sleep(_ENQUEUE_RETRY)
                else:
                    break
            self.enqueued += len(ids)
            i = j
        self.produced = True
        self._finished(0)

    def snapshot(self, now: float) -> Progress:
        return Progress(
            time=now,
            until=self.sim_until,
            done=self.done,
            jobs=len(self.arrivals),
            attempts=self.started,
            wall=time.monotonic() - self.wall_start,
        )

    async def main(self, until: float | None) -> None:
        self.sim_until = until
        deadline = math.inf if until is None else until
        async with trio.open_nursery() as nursery:
            try:
                for slot in range(1, self.sim.workers + 1):
                    nursery.start_soon(self.process_slot, slot, name=f"worker {slot}")
                nursery.start_soon(self.produce, name="producer")
                with trio.move_on_at(deadline):
                    await self.wake.wait()
                    self.drained = True
            finally:
                # Freeze the world: stopped processes make no more store
                # calls, so the log ends here rather than with hand-backs.
                self.stopping = True
                for process in self.processes:
                    process.gone = True
                nursery.cancel_scope.cancel()

    # -- the trace -----------------------------------------------------------------

    async def collect(
        self, *, until: float | None, interrupted: bool, wall: float
    ) -> Trace:
        store = self.store
        rows: list[tuple[int, _EventRow]]
        if type(store) is MemoryStore:  # not a subclass, which may log otherwise
            rows = store._event_rows()
        else:
            rows = [
                (seq, (e.job_id, e.kind._value_, e.at, e.attempt, e.error))
                for seq, e in await store.events()
            ]
        jobs = {job.id: job for job in await store.list(limit=None)}
        workers, delays, dues, causes, expiry_causes = (
            self.workers,
            self.delays,
            self.dues,
            self.causes,
            self.expiry_causes,
        )
        events: list[TraceEvent] = []
        append = events.append
        in_order = True  # the store's events, in sequence, are in time order
        last = -math.inf
        for _, (job_id, kind, at, attempt, error) in rows:
            key = (job_id, attempt)
            error = error or None
            if error is not None:
                # Only the summary line; the traceback stays on the job.
                cut = error.find("\n")
                if cut >= 0:
                    error = error[:cut]
            retried = kind == "retried"
            if at < last:
                in_order = False
            last = at
            append(
                TraceEvent(
                    at,
                    kind,  # type: ignore[arg-type]
                    job_id,
                    attempt,
                    workers.get(key) if attempt else None,
                    error,
                    delays.get(key) if retried else None,
                    dues.get(key) if retried else None,
                    None
                    if kind == "enqueued" or kind == "started"
                    else expiry_causes[key]
                    if key in expiry_causes and (kind == "expired" or kind == "dead")
                    else causes.get(key),
                )
            )
        if self.system_events or not in_order:
            # By (time, 0 for the store's events and 1 for the system's,
            # position): plain tuples sort in C, and never compare their events.
            keyed = [(e.time, 0, i, e) for i, e in enumerate(events)]
            keyed += [(e.time, 1, i, e) for i, e in enumerate(self.system_events)]
            keyed.sort()
            events = [row[3] for row in keyed]
        calls = sorted(self.calls, key=lambda c: (c.time, c.job, c.attempt))
        for exc in self.errors.values():
            exc.__traceback__ = None
        end = self.clock.current_time()
        if until is not None and not interrupted and not self.drained:
            end = until
        return Trace(
            seed=self.seed,
            label=self.sim.label,
            events=events,
            calls=calls,
            jobs=jobs,
            policy=self.sim.retry,
            dependencies=self.plan.dependencies,
            arrivals=len(self.arrivals) if self.drained else self.enqueued,
            errors=self.errors,
            end=end,
            until=until,
            drained=self.drained,
            interrupted=interrupted,
            wall=wall,
        )


# -- determinism helpers ---------------------------------------------------------------


@contextlib.contextmanager
def _seeded_scheduler(seed: int) -> Iterator[None]:
    # trio runs the tasks that wake together in an order it randomizes from
    # a private generator. Under hypothesis, trio's plugin switches that to a
    # deterministic order (sorted, then shuffled by a seeded generator); the
    # simulation does the same for its own run, then puts everything back.
    core: Any = getattr(trio, "_core", None)
    run_module: Any = getattr(core, "_run", None)
    rng = getattr(run_module, "_r", None)
    flag = "_ALLOW_DETERMINISTIC_SCHEDULING"
    if rng is None or not hasattr(run_module, flag):  # pragma: no cover
        yield  # a trio without these knobs: rely on keyed draws alone
        return
    state = rng.getstate()
    before = getattr(run_module, flag)
    rng.seed(derive(seed, _SALT_SCHEDULER))
    setattr(run_module, flag, True)
    try:
        yield
    finally:
        setattr(run_module, flag, before)
        rng.setstate(state)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    # A simulation fails thousands of attempts on purpose; the worker logs
    # each one with its traceback. Silence the package logger for the run.
    logger = logging.getLogger("jobkit")
    before = logger.disabled
    logger.disabled = enabled or before
    try:
        yield
    finally:
        logger.disabled = before


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    # A run allocates millions of objects, so Python's cycle collector makes
    # full collections during it, each walking every object of the process:
    # in a notebook with plotting and data libraries loaded, many times the
    # run's own (with 115,000 objects loaded, a burst of 10,000 jobs spent a
    # sixth of its time there). Objects older than the run are set aside
    # for its duration, and handed back to the collector afterwards, which
    # then reclaims any that became garbage meanwhile. A program that froze
    # its heap itself (gc.freeze before forking workers) is left as it is.
    if gc.get_freeze_count():
        yield
        return

    def refreeze(phase: str, info: dict[str, int]) -> None:
        # What a full collection leaves is all reachable: set it aside too.
        # The store's jobs and events grow all run long, and each full
        # collection walked every one of them again.
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()

    gc.freeze()
    gc.callbacks.append(refreeze)
    try:
        yield
    finally:
        gc.callbacks.remove(refreeze)
        gc.unfreeze()


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split((KeyboardInterrupt, trio.Cancelled))
        return (
            matched is not None
            and rest is None
            and bool(matched.subgroup(KeyboardInterrupt))
        )
    return False


# -- the public face -------------------------------------------------------------------


StoreOption: TypeAlias = Store | Callable[[], Store] | None


class Simulation:
    """Run the real queue and workers in virtual time under a seeded fault plan.

    ``workers`` worker processes, each :func:`jobkit.run_worker` with
    ``concurrency`` slots, ``lease`` and ``poll_interval``, serve one task
    whose retry policy is ``retry`` and whose attempts may last ``timeout``
    seconds. The ``workload`` says when jobs arrive; the ``faults`` say what
    each attempt goes through. A crashed process is started again after
    ``restart_delay`` seconds, as a process supervisor would. The producer
    and the workers share one :class:`jobkit.Queue`, as in one process, so
    an enqueue wakes the idle workers at once.

    ``store`` is a store factory (default :class:`jobkit.MemoryStore`) called
    once per run, or a store instance, which can then run only once. Virtual
    time starts at 0 and the queue's clock is trio's, so every time in the
    trace is seconds since the start.

    :meth:`run` returns a :class:`Trace`. The same seed and settings give
    the same trace, event for event; another seed gives another run.

    ``progress`` shows how a long run is going: ``"auto"`` (the default)
    draws a bar once a run has taken 3 seconds of wall time, on a terminal
    or in a notebook (not into a log file), ``True`` at once, ``False``
    never; the bar is tqdm's (notebook-aware with ipywidgets), drawn only
    when tqdm is installed: ``pip install 'jobkit[progress]'``. A callable
    instead receives
    a :class:`Progress` snapshot every 64 finished jobs and at the end.
    ``quiet`` mutes the ``jobkit`` logger for the run, since a simulation
    fails thousands of attempts on purpose. ``label`` names the run in
    charts and comparisons.

    Example::

        >>> from jobkit import Backoff, RetryPolicy
        >>> from jobkit.sim import (Simulation, Poisson, FaultPlan, Latency,
        ...                         TransientErrors)
        >>> sim = Simulation(
        ...     seed=7,
        ...     workload=Poisson(rate=5, count=200),
        ...     faults=FaultPlan(Latency.exponential(0.1), TransientErrors(0.2)),
        ...     retry=RetryPolicy(4, Backoff.exponential(1, 30, jitter="full")),
        ...     concurrency=4,
        ... )
        >>> trace = sim.run()
        >>> trace.summary().jobs, trace.drained
        (200, True)
        >>> trace == sim.run()      # a replay is identical
        True
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        store: StoreOption = None,
        workers: int = 1,
        concurrency: int = 10,
        faults: FaultPlan | Fault | StoreErrors | None = None,
        workload: Workload | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        restart_delay: float = 5.0,
        label: str | None = None,
        progress: ProgressOption = "auto",
        quiet: bool = True,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.workers = int_at_least(workers, "workers", 1)
        self.concurrency = int_at_least(concurrency, "concurrency", 1)
        if faults is None:
            faults = FaultPlan()
        elif isinstance(faults, Fault | StoreErrors):
            faults = FaultPlan(faults)
        if not isinstance(faults, FaultPlan):
            raise TypeError(f"faults must be a FaultPlan, got {faults!r}")
        self.faults: FaultPlan = faults
        if workload is None:
            workload = Burst(100)
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {workload!r}")
        self.workload: Workload = workload
        if retry is None:
            retry = RetryPolicy.default()
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {retry!r}")
        self.retry: RetryPolicy = retry
        self.timeout = (
            None
            if timeout is None
            else seconds(
                timeout, "timeout", positive=True, finite=True, timedelta_ok=False
            )
        )
        if self.timeout is None and faults.hangs_forever:
            raise ValueError(
                "the fault plan has a Hang with no end, but timeout is None: "
                "those jobs would never finish; set timeout= (seconds)"
            )
        self.lease = seconds(
            lease, "lease", positive=True, finite=True, timedelta_ok=False
        )
        self.poll_interval = seconds(
            poll_interval,
            "poll_interval",
            positive=True,
            finite=True,
            timedelta_ok=False,
        )
        self.restart_delay = seconds(
            restart_delay, "restart_delay", finite=True, timedelta_ok=False
        )
        self.label = f"seed {seed}" if label is None else str(label)
        self.progress = progress
        Reporter(progress, 0)  # refuse a bad option now
        self.quiet = quiet
        if store is not None and not (isinstance(store, Store) or callable(store)):
            raise TypeError(
                f"store must be a Store or a function returning one, got {store!r}"
            )
        self._store = store
        self._store_used = False

    def __repr__(self) -> str:
        return (
            f"Simulation(seed={self.seed}, workers={self.workers}, "
            f"concurrency={self.concurrency}, workload={self.workload!r}, "
            f"faults={self.faults!r}, retry={self.retry!r}, "
            f"timeout={self.timeout!r}, lease={self.lease!r}, "
            f"poll_interval={self.poll_interval!r}, "
            f"restart_delay={self.restart_delay!r})"
        )

    def _new_store(self) -> tuple[Store, bool]:
        if self._store is None:
            return MemoryStore(), True
        # A store class satisfies the Store protocol too; it is a factory.
        if isinstance(self._store, Store) and not isinstance(self._store, type):
            if self._store_used:
                raise RuntimeError(
                    "this Simulation was given a store instance, which holds the "
                    "previous run's jobs; pass a factory (store=MemoryStore) to "
                    "run it again"
                )
            self._store_used = True
            return self._store, False
        store = self._store()
        if not isinstance(store, Store):
            raise TypeError(f"the store factory returned {store!r}, not a Store")
        return store, True

    def run(self, until: float | None = None) -> Trace:
        """Run the simulation and return its :class:`Trace`.

        With ``until=None`` it runs until every job the workload produces has
        reached a terminal state; otherwise it stops at virtual time
        ``until`` and the trace shows what was still queued or running. A
        KeyboardInterrupt (the stop button in a notebook) ends the run
        cleanly: the trace so far is returned, with ``interrupted`` set.

        Example::

            >>> from jobkit.sim import Simulation, Steady, FaultPlan, Latency
            >>> sim = Simulation(1, workload=Steady(1.0, duration=3600),
            ...                  faults=FaultPlan(Latency.constant(0.5)))
            >>> trace = sim.run(until=60)
            >>> trace.end, trace.summary().succeeded
            (60.0, 60)
        """
        if until is not None:
            until = seconds(until, "until", finite=True, timedelta_ok=False)
        store, owned = self._new_store()
        clock = new_clock()
        run = _Run(self, store, clock)
        interrupted = False
        started = time.perf_counter()
        with _quiet(self.quiet), _seeded_scheduler(self.seed), _frozen_heap():
            try:
                trio.run(functools.partial(run.main, until), clock=clock)
            except BaseException as exc:
                if not _is_interrupt(exc):
                    raise
                interrupted = True
            wall = time.perf_counter() - started
            run.reporter.close(run.snapshot(clock.current_time()))

            async def collect() -> Trace:
                trace = await run.collect(
                    until=until, interrupted=interrupted, wall=wall
                )
                if owned:
                    await store.aclose()
                return trace

            return trio.run(collect, clock=new_clock())
