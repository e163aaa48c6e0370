"""What a simulated run did: every event, derived series, summary figures, checks.

A :class:`Trace` is built from the store's own event log (the transitions the
real queue and worker made), enriched with what only the simulation knows:
which worker ran each attempt, the backoff delay the worker chose, what the
fault plan did to each attempt, worker crashes and store errors, and every
request sent to a simulated dependency.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from ..core.job import TERMINAL_STATES, EventKind, Job, JobState
from ..core.retry import RetryPolicy
from ..observe.depth import DepthPoint, replay_depth
from ..observe.metrics import percentile
from ..observe.spans import AttemptSpan, SpanBuilder
from ._faults import Dependency

__all__ = [
    "Call",
    "Kind",
    "Summary",
    "Trace",
    "TraceEvent",
    "Wait",
]

Kind: TypeAlias = Literal[
    "enqueued",
    "started",
    "succeeded",
    "retried",
    "expired",
    "dead",
    "released",
    "requeued",
    "cancelled",
    "discarded",
    "crashed",
    "restarted",
    "store_error",
]
"""What a :class:`TraceEvent` records: a job transition (the store's event
kinds) or something that happened to the system (a worker ``crashed`` or
``restarted``, a ``store_error``)."""

# The job transitions are exactly the store's event kinds.
_KINDS = {kind.value: kind for kind in EventKind}
_JOB_KINDS = frozenset(_KINDS)
_ENDS = frozenset({"succeeded", "retried", "expired", "dead", "released"})
# Relative tolerance for float round trips (retry_at - failed_at).
_EPS = 1e-9


@attrs.frozen
class TraceEvent:
    """One thing that happened during a simulated run.

    ``job`` and ``attempt`` are None for events of the system (a store error
    outside any job). On ``retried`` events, ``delay`` is the backoff wait
    the worker chose and ``due`` the time the next attempt may start (the
    job's ``run_at``: the failure time plus ``delay``, which may be a little
    before the event's ``time`` when the store call that recorded it was
    retried). ``cause`` says what the fault plan did to the
    attempt that this event ends (``"transient"``, ``"crash"``, ...).

    Example::

        >>> from jobkit.sim import TraceEvent
        >>> TraceEvent(time=3.0, kind="retried", job=7, attempt=1, worker="w1",
        ...            error="SimulatedError: transient failure (injected)",
        ...            delay=2.0, due=5.0, cause="transient").due
        5.0
    """

    time: float
    kind: Kind
    job: int | None
    attempt: int | None
    worker: str | None = None
    error: str | None = None
    delay: float | None = None
    due: float | None = None
    cause: str | None = None


@attrs.frozen
class Call:
    """One request from an attempt to a simulated :class:`Dependency`.

    ``load`` is the number of requests the dependency counted in its window
    when it answered, this one included.

    Example::

        >>> from jobkit.sim import Call
        >>> Call(time=1.0, job=3, attempt=2, dependency="api", load=120, ok=False).ok
        False
    """

    time: float
    job: int
    attempt: int
    dependency: str
    load: int
    ok: bool


@attrs.frozen
class Wait:
    """A backoff wait: from a failed attempt to the start of the next one.

    ``time`` is when the failure was recorded, ``delay`` what the retry
    policy chose, ``due`` when the next attempt could start, and ``bounds``
    the interval the policy's formula allows for ``delay``. ``started`` is
    when the next attempt actually began (after ``due`` if every worker was
    busy), None if it never did.

    Example::

        >>> from jobkit.sim import Wait
        >>> w = Wait(job=1, attempt=2, time=10.0, delay=4.0, due=14.0,
        ...          bounds=(0.0, 4.0), started=14.5)
        >>> w.within_bounds, w.late_by
        (True, 0.5)
    """

    job: int
    attempt: int
    """The attempt that failed and is waited after."""
    time: float
    delay: float
    due: float
    bounds: tuple[float, float]
    started: float | None

    @property
    def within_bounds(self) -> bool:
        """True if the delay lies within its formula's bounds."""
        lo, hi = self.bounds
        slack = _EPS * max(1.0, abs(hi))
        return lo - slack <= self.delay <= hi + slack

    @property
    def late_by(self) -> float | None:
        """How long after its due time the next attempt started (None if it did not)."""
        if self.started is None:
            return None
        return max(0.0, self.started - self.due)


@attrs.frozen
class Summary:
    """The headline figures of a simulated run.

    Latencies run from enqueue to success, over the jobs that succeeded
    (None if none did). ``peak_load`` is the most requests any dependency
    counted in its window (None without dependencies).

    Example::

        >>> from jobkit.sim import Summary
        >>> s = Summary(jobs=10, succeeded=9, dead=1, cancelled=0, unfinished=0,
        ...             attempts=14, max_attempts=4, latency_p50=1.5,
        ...             latency_p95=7.0, latency_max=9.0, calls=14, refused=3,
        ...             peak_load=12, crashes=0, store_errors=0, expired=0,
        ...             end=30.0, wall=0.02)
        >>> s.attempts_per_job, s.success_rate
        (1.4, 0.9)
    """

    jobs: int
    succeeded: int
    dead: int
    cancelled: int
    unfinished: int
    attempts: int
    max_attempts: int
    latency_p50: float | None
    latency_p95: float | None
    latency_max: float | None
    calls: int
    refused: int
    peak_load: int | None
    crashes: int
    store_errors: int
    expired: int
    end: float
    """Virtual seconds from the start to the last event."""
    wall: float
    """Wall-clock seconds the run took."""

    def _rows(self) -> list[tuple[str, str]]:
        s = self
        rows: list[tuple[str, str]] = [
            ("jobs", f"{s.jobs}"),
            ("succeeded / dead", f"{s.succeeded} / {s.dead}"),
            ("unfinished", f"{s.unfinished}"),
            ("attempts (per job)", f"{s.attempts} ({s.attempts_per_job:.2f})"),
            ("most attempts on one job", f"{s.max_attempts}"),
            (
                "latency p50 / p95 / max",
                f"{_fmt(s.latency_p50)} / {_fmt(s.latency_p95)} / "
                f"{_fmt(s.latency_max)}",
            ),
        ]
        if s.calls:
            rows.append(("dependency calls (refused)", f"{s.calls} ({s.refused})"))
            rows.append(("peak load on the dependency", f"{s.peak_load}"))
        if s.crashes or s.expired:
            rows.append(
                ("worker crashes / leases expired", f"{s.crashes} / {s.expired}")
            )
        if s.store_errors:
            rows.append(("store errors", f"{s.store_errors}"))
        rows.append(("virtual time", f"{s.end:,.1f}s"))
        rows.append(("wall time", f"{s.wall:.2f}s"))
        return rows

    def _table(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:right'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return f"<table>{body}</table>"

    def _repr_html_(self) -> str:
        return f"<div><strong>Summary of a simulated run</strong>{self._table()}</div>"

    @property
    def attempts_per_job(self) -> float:
        """Mean attempts per job."""
        return self.attempts / self.jobs if self.jobs else 0.0

    @property
    def success_rate(self) -> float:
        """Fraction of jobs that succeeded."""
        return self.succeeded / self.jobs if self.jobs else 0.0


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3g}s"
    return f"{value:.3g}"


class Trace:
    """The record of one simulated run, with its figures, series and checks.

    Returned by :meth:`Simulation.run`; not constructed directly. Two traces
    compare equal when their events, calls and final job states are equal
    (wall time aside), which is how a replay is checked.

    - ``events``: every :class:`TraceEvent`, in the order they happened;
      :meth:`records` and :meth:`to_dataframe` give them as rows;
    - ``calls``: every request to a dependency;
    - ``jobs``: the final state of every job;
    - :meth:`summary`, :meth:`spans`, :meth:`waits`, :meth:`queue_depth`,
      :meth:`load`, :meth:`attempts_per_job`, :meth:`latencies`;
    - :meth:`violations` checks the queue's promises on this run.

    Example::

        >>> from jobkit.sim import Simulation, Burst, FaultPlan, TransientErrors
        >>> trace = Simulation(1, workload=Burst(20),
        ...                    faults=FaultPlan(TransientErrors(0.3))).run()
        >>> trace.summary().succeeded + trace.summary().dead
        20
        >>> trace.violations()
        []
    """

    def __init__(
        self,
        *,
        seed: int,
        label: str,
        events: Sequence[TraceEvent],
        calls: Sequence[Call],
        jobs: Mapping[int, Job],
        policy: RetryPolicy,
        dependencies: Sequence[Dependency],
        arrivals: int,
        errors: Mapping[tuple[int, int], BaseException],
        end: float,
        until: float | None,
        drained: bool,
        interrupted: bool,
        wall: float,
    ) -> None:
        self.seed = seed
        """The seed the run used."""
        self.label = label
        """A short name for charts and comparisons."""
        self.events: tuple[TraceEvent, ...] = tuple(events)
        """Every event, in order."""
        self.calls: tuple[Call, ...] = tuple(calls)
        """Every request to a simulated dependency, in order."""
        self.jobs: Mapping[int, Job] = dict(jobs)
        """Each job's final state, by id."""
        self.policy = policy
        """The retry policy the simulated task used."""
        self.dependencies: tuple[Dependency, ...] = tuple(dependencies)
        """The dependencies the fault plan called."""
        self.arrivals = arrivals
        """How many jobs the producer enqueued: all the workload's jobs once the
        run drained, those whose arrival came before the end otherwise."""
        self._errors = dict(errors)
        self.end = end
        """The virtual time the run stopped."""
        self.until = until
        """The horizon asked for, or None for "until drained"."""
        self.drained = drained
        """True if every job reached a terminal state."""
        self.interrupted = interrupted
        """True if the run was stopped early (KeyboardInterrupt)."""
        self.wall = wall
        """Wall-clock seconds the run took."""

    # -- identity ------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.seed == other.seed
            and self.events == other.events
            and self.calls == other.calls
            and self.jobs == other.jobs
        )

    __hash__ = None  # type: ignore[assignment]

    def fingerprint(self) -> str:
        """Return a short hash of the events and calls: equal runs, equal prints.

        Example::

            >>> from jobkit.sim import Simulation, Burst
            >>> a = Simulation(3, workload=Burst(5)).run()
            >>> a.fingerprint() == Simulation(3, workload=Burst(5)).run().fingerprint()
            True
        """
        digest = hashlib.sha256()
        for event in self.events:
            digest.update(repr(attrs.astuple(event)).encode())
        for call in self.calls:
            digest.update(repr(attrs.astuple(call)).encode())
        return digest.hexdigest()[:16]

    # -- rows ----------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Return the events as dicts with keys time, job, attempt, kind, worker, ...

        Example::

            >>> from jobkit.sim import Simulation, Burst
            >>> Simulation(0, workload=Burst(1)).run().records()[0]["kind"]
            'enqueued'
        """
        return [attrs.asdict(event) for event in self.events]

    def to_dataframe(self) -> Any:
        """Return the events as a :class:`pandas.DataFrame` (pandas is optional).

        Example::

            >>> from jobkit.sim import Simulation, Burst
            >>> trace = Simulation(0, workload=Burst(1)).run()
            >>> try:
            ...     frame = trace.to_dataframe()
            ... except ImportError:
            ...     pass   # pandas is not installed
        """
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ImportError(
                "Trace.to_dataframe() needs pandas (pip install pandas); "
                "Trace.records() gives the same rows as dicts"
            ) from None
        columns = [field.name for field in attrs.fields(TraceEvent)]
        return pandas.DataFrame(self.records(), columns=columns)

    # -- derived series ------------------------------------------------------------

    def attempts_per_job(self) -> dict[int, int]:
        """Return the number of attempts that counted, per job.

        An attempt handed back at shutdown (``released``) does not count,
        as in the store.

        Example::

            >>> from jobkit.sim import Simulation, Burst
            >>> Simulation(0, workload=Burst(2)).run().attempts_per_job()
            {1: 1, 2: 1}
        """
        # A plain dict: a Counter's item update runs Python code, per event.
        counts: dict[int, int] = {}
        for event in self.events:
            job, kind = event.job, event.kind
            if job is None:
                continue
            if kind == "started":
                counts[job] = counts.get(job, 0) + 1
            elif kind == "enqueued":
                counts.setdefault(job, 0)
            elif kind == "released":
                counts[job] = counts.get(job, 0) - 1
        return dict(sorted(counts.items()))

    def latencies(self) -> dict[int, float]:
        """Return seconds from enqueue to success, for each job that succeeded.

        Example::

            >>> from jobkit.sim import Simulation, Burst, FaultPlan, Latency
            >>> trace = Simulation(0, workload=Burst(1),
            ...                    faults=FaultPlan(Latency.constant(2))).run()
            >>> trace.latencies()
            {1: 2.0}
        """
        enqueued: dict[int, float] = {}
        out: dict[int, float] = {}
        for event in self.events:
            if event.job is None:
                continue
            if event.kind == "enqueued":
                enqueued[event.job] = event.time
            elif event.kind == "succeeded" and event.job in enqueued:
                out[event.job] = event.time - enqueued[event.job]
        return out

    def spans(self, jobs: Sequence[int] | None = None) -> list[AttemptSpan]:
        """Return every attempt as a span from start to end, for ``jobs`` (default all).

        These are the spans :func:`jobkit.attempt_spans` pairs from the
        store's log, with the worker, the fault plan's ``cause`` and, for a
        crashed worker, ``crashed_at`` added; attempts still running when
        the run stopped have no ``end``. Sorted by job, then attempt.

        Example::

            >>> from jobkit.sim import Simulation, Burst, FaultPlan, Latency
            >>> trace = Simulation(0, workload=Burst(1),
            ...                    faults=FaultPlan(Latency.constant(2))).run()
            >>> [(s.start, s.end, s.outcome.value) for s in trace.spans()]
            [(0.0, 2.0, 'succeeded')]
        """
        wanted = None if jobs is None else set(jobs)
        builder = SpanBuilder()
        for event in self.events:
            job, attempt, kind = event.job, event.attempt, event.kind
            if job is None or attempt is None:
                continue
            if wanted is not None and job not in wanted:
                continue
            if kind == "started":
                builder.start(job, attempt, event.time, worker=event.worker)
            elif kind == "crashed":
                builder.crash(job, attempt, event.time)
            elif kind in _ENDS:
                builder.end(
                    job,
                    attempt,
                    _KINDS[kind],
                    event.time,
                    error=event.error,
                    cause=event.cause,
                )
        return sorted(builder.spans(), key=lambda s: (s.job_id, s.attempt, s.start))

    def waits(self) -> list[Wait]:
        """Return every backoff wait with the bounds its formula allows.

        Decorrelated jitter's bounds depend on the previous delay of the same
        job, which the trace knows.

        Example::

            >>> from jobkit import Backoff, RetryPolicy
            >>> from jobkit.sim import Simulation, Burst, FaultPlan, TransientErrors
            >>> policy = RetryPolicy(3, Backoff.exponential(1, 60))
            >>> trace = Simulation(0, workload=Burst(1), retry=policy,
            ...                    faults=FaultPlan(TransientErrors(1.0))).run()
            >>> [(w.attempt, w.delay, w.bounds) for w in trace.waits()]
            [(1, 1.0, (1.0, 1.0)), (2, 2.0, (2.0, 2.0))]
        """
        backoff = self.policy.backoff
        previous: dict[int, float | None] = {}
        pending: dict[int, int] = {}
        out: list[Wait] = []
        for event in self.events:
            if event.job is None:
                continue
            if event.kind == "requeued":
                previous.pop(event.job, None)
            elif event.kind == "retried" and event.delay is not None:
                assert event.attempt is not None
                prev = previous.get(event.job)
                bounds = backoff.bounds(event.attempt, prev)
                pending[event.job] = len(out)
                out.append(
                    Wait(
                        job=event.job,
                        attempt=event.attempt,
                        time=event.time,
                        delay=event.delay,
                        due=event.time if event.due is None else event.due,
                        bounds=bounds,
                        started=None,
                    )
                )
                previous[event.job] = event.delay
            elif event.kind == "started" and event.job in pending:
                i = pending.pop(event.job)
                out[i] = attrs.evolve(out[i], started=event.time)
        return out

    def queue_depth(self) -> list[DepthPoint]:
        """Return the jobs ready, waiting out a backoff, and running, over time.

        One point per change; each holds until the next. This is the replay
        of :func:`jobkit.depth_points`, over a log that knows when each
        backoff wait ended.

        Example::

            >>> from jobkit.sim import Simulation, Burst, FaultPlan, Latency
            >>> trace = Simulation(0, workload=Burst(3), concurrency=1,
            ...                    faults=FaultPlan(Latency.constant(1))).run()
            >>> [(d.time, d.ready, d.running) for d in trace.queue_depth()]
            [(0.0, 2, 1), (1.0, 1, 1), (2.0, 0, 1), (3.0, 0, 0)]
        """
        rows = [
            (event.time, kind, event.job, event.due)
            for event in self.events
            if (kind := _KINDS.get(event.kind)) is not None and event.job is not None
        ]
        return replay_depth(rows, until=self.end)

    def load(
        self, dependency: str | None = None, *, bin: float | None = None
    ) -> list[tuple[float, int, int]]:
        """Return ``(bin start, requests, refused)`` for one dependency, per time bin.

        ``dependency`` defaults to the only one; ``bin`` to its window, so
        each count is directly comparable with its capacity.

        Example::

            >>> from jobkit.sim import Simulation, Burst, FaultPlan, Dependency
            >>> api = Dependency(capacity=10, window=1.0)
            >>> trace = Simulation(0, workload=Burst(30), concurrency=30,
            ...                    faults=FaultPlan(api)).run(until=0.1)
            >>> trace.load()      # 30 requests in the first second, 22 refused
            [(0.0, 30, 22)]
        """
        dep = self._dependency(dependency)
        width = dep.window if bin is None else bin
        if not width > 0:
            raise ValueError(f"bin must be > 0 seconds, got {bin!r}")
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for call in self.calls:
            if call.dependency != dep.name:
                continue
            cell = counts[math.floor(call.time / width)]
            cell[0] += 1
            cell[1] += not call.ok
        if not counts:
            return []
        first, last = min(counts), max(counts)
        return [
            (i * width, counts[i][0], counts[i][1])
            if i in counts
            else (i * width, 0, 0)
            for i in range(first, last + 1)
        ]

    def _dependency(self, name: str | None) -> Dependency:
        if name is None:
            if len(self.dependencies) != 1:
                names = [d.name for d in self.dependencies]
                raise ValueError(
                    f"this run has {len(names)} dependencies ({names}); name one"
                )
            return self.dependencies[0]
        for dep in self.dependencies:
            if dep.name == name:
                return dep
        raise ValueError(f"no dependency named {name!r} in this run")

    # -- figures -------------------------------------------------------------------

    def summary(self) -> Summary:
        """Return the run's headline figures.

        Example::

            >>> from jobkit.sim import Simulation, Burst
            >>> s = Simulation(0, workload=Burst(4)).run().summary()
            >>> s.jobs, s.succeeded, s.attempts
            (4, 4, 4)
        """
        # By value: an enum member's hash runs Python code, a str's is cached.
        states = Counter(job.state._value_ for job in self.jobs.values())
        per_job = self.attempts_per_job()
        latencies = sorted(self.latencies().values())
        kinds = Counter(event.kind for event in self.events)
        return Summary(
            jobs=len(self.jobs),
            succeeded=states[JobState.SUCCEEDED.value],
            dead=states[JobState.DEAD.value],
            cancelled=states[JobState.CANCELLED.value],
            unfinished=states[JobState.QUEUED.value] + states[JobState.RUNNING.value],
            attempts=sum(per_job.values()),
            max_attempts=max(per_job.values(), default=0),
            latency_p50=percentile(latencies, 0.50),
            latency_p95=percentile(latencies, 0.95),
            latency_max=latencies[-1] if latencies else None,
            calls=len(self.calls),
            refused=sum(not call.ok for call in self.calls),
            peak_load=max((c.load for c in self.calls), default=None),
            crashes=len(
                {(e.time, e.worker) for e in self.events if e.kind == "crashed"}
            ),
            store_errors=kinds["store_error"],
            expired=kinds["expired"],
            end=self.end,
            wall=self.wall,
        )

    # -- checks --------------------------------------------------------------------

    def violations(self) -> list[str]:
        """Check the queue's promises on this run; return what was broken (empty: none).

        - no job lost: every arrival was enqueued, and every enqueued job
          is in the store;
        - once drained, every job is SUCCEEDED, DEAD or CANCELLED;
        - attempt numbers count up by one and never exceed ``max_attempts``;
        - a job is DEAD only on its last attempt, or after an error the
          retry policy does not retry (a permanent error);
        - every backoff delay lies within its formula's bounds, and no
          retry starts before its delay is over.

        Example::

            >>> from jobkit.sim import Simulation, Poisson, FaultPlan, Crash
            >>> trace = Simulation(5, workload=Poisson(2, count=30),
            ...                    faults=FaultPlan(Crash(0.1))).run()
            >>> trace.violations()
            []
        """
        problems: list[str] = []
        enqueued = [e.job for e in self.events if e.kind == "enqueued"]
        ids = {job for job in enqueued if job is not None}
        if len(enqueued) != self.arrivals:
            problems.append(
                f"{self.arrivals} jobs arrived but {len(enqueued)} were enqueued"
            )
        if len(ids) != len(enqueued):
            problems.append("a job id was enqueued twice")
        lost = sorted(ids - set(self.jobs))
        if lost:
            problems.append(f"jobs {lost[:10]} were enqueued but are not in the store")
        if self.drained:
            for job in self.jobs.values():
                if job.state not in TERMINAL_STATES:
                    problems.append(
                        f"job {job.id} is {job.state.value} after the run drained"
                    )
        problems += self._attempt_violations()
        for wait in self.waits():
            if not wait.within_bounds:
                lo, hi = wait.bounds
                problems.append(
                    f"job {wait.job}: the delay after attempt {wait.attempt} was "
                    f"{wait.delay!r}s, outside its bounds [{lo!r}, {hi!r}]"
                )
            if wait.started is not None and wait.started < wait.due:
                problems.append(
                    f"job {wait.job}: attempt {wait.attempt + 1} started at "
                    f"{wait.started!r}, before it was due at {wait.due!r}"
                )
        return problems

    def _attempt_violations(self) -> list[str]:
        problems: list[str] = []
        last: dict[int, int] = {}
        decide_rng = random.Random(0)
        for event in self.events:
            job_id, attempt = event.job, event.attempt
            if job_id is None or attempt is None or event.kind not in _JOB_KINDS:
                continue
            job = self.jobs.get(job_id)
            limit = (
                job.max_attempts if job is not None else None
            ) or self.policy.max_attempts
            if event.kind == "started":
                expected = last.get(job_id, 0) + 1
                if attempt != expected:
                    problems.append(
                        f"job {job_id} started attempt {attempt}, expected {expected}"
                    )
                if attempt > limit:
                    problems.append(
                        f"job {job_id} started attempt {attempt} of at most {limit}"
                    )
                last[job_id] = attempt
            elif event.kind == "released":
                last[job_id] = attempt - 1
            elif event.kind == "requeued":
                last[job_id] = 0
            elif event.kind == "dead" and attempt < limit:
                error = self._errors.get((job_id, attempt))
                policy = attrs.evolve(self.policy, max_attempts=limit)
                if error is None or (
                    policy.decide(error, attempt, rng=decide_rng) is not None
                ):
                    problems.append(
                        f"job {job_id} went dead after attempt {attempt} of {limit} "
                        f"on an error the policy retries: {event.error!r}"
                    )
        return problems

    # -- display -------------------------------------------------------------------

    def _headline(self) -> str:
        s = self.summary()
        if self.interrupted:
            status = f"interrupted at t={self.end:g}s"
        elif self.drained:
            status = f"drained at t={self.end:g}s"
        else:
            status = f"stopped at t={self.end:g}s"
        return (
            f"{s.jobs} jobs: {s.succeeded} succeeded, {s.dead} dead"
            + (f", {s.unfinished} unfinished" if s.unfinished else "")
            + f"; {s.attempts} attempts; {status} ({s.wall:.2f}s wall)"
        )

    def __repr__(self) -> str:
        return f"<Trace {self.label!r} seed={self.seed}: {self._headline()}>"

    def _repr_html_(self) -> str:
        title = html.escape(f"Trace {self.label!r}, seed {self.seed}")
        note = ""
        if self.interrupted:
            note = "<p><b>interrupted</b>: the figures cover the run so far.</p>"
        return f"<div><b>{title}</b>{note}{self.summary()._table()}</div>"

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
