"""Fault models: small, composable descriptions of what goes wrong, and how often.

A :class:`FaultPlan` lists faults in order. Every attempt of every job runs
the plan's attempt faults one after the other, as if the handler were made of
those steps: a :class:`Latency` takes time, an error fault may raise, a
:class:`Crash` kills the worker process, a :class:`Dependency` call may be
refused when the downstream service is overloaded. The first step that fails
ends the attempt. :class:`StoreErrors` act on the store instead: they make a
fraction of the worker's store calls fail.

Faults are frozen configuration. Every random choice a fault makes is drawn
from a stream keyed by ``(seed, position of the fault in the plan, job id,
attempt)``, so outcomes do not depend on the order in which tasks happen to
run, and two runs that differ only in their retry policy meet the same luck
on the same attempts.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Iterable, Iterator
from typing import Literal, NoReturn, Protocol, TypeAlias

import attrs

from .._checks import seconds as check_seconds
from ..core.job import Job
from ..core.retry import Permanent
from . import _clock
from ._rng import KeyedRandom, derive

__all__ = [
    "Attempt",
    "Crash",
    "Dependency",
    "DependencyOverloaded",
    "Fault",
    "FaultPlan",
    "Hang",
    "Latency",
    "PermanentErrors",
    "SimulatedError",
    "SimulatedStoreError",
    "StoreErrors",
    "StoreOperation",
    "TransientErrors",
]


class SimulatedError(Exception):
    """An error injected by the simulator; the default policy retries it.

    Example::

        >>> from jobkit.sim import SimulatedError
        >>> raise SimulatedError("transient failure (injected)")
        Traceback (most recent call last):
        ...
        jobkit.sim.SimulatedError: transient failure (injected)
    """


class DependencyOverloaded(SimulatedError):
    """A simulated downstream service refused a request because it is overloaded.

    Example::

        >>> from jobkit.sim import DependencyOverloaded
        >>> str(DependencyOverloaded("downstream refused: 240 requests in 1s"))
        'downstream refused: 240 requests in 1s'
    """


class SimulatedStoreError(SimulatedError):
    """A store call failed, injected by :class:`StoreErrors`.

    Example::

        >>> from jobkit.sim import SimulatedError, SimulatedStoreError
        >>> isinstance(SimulatedStoreError("claim failed"), SimulatedError)
        True
    """


def _probability(value: float, name: str = "probability") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


class _Lab(Protocol):
    """What an :class:`Attempt` needs from the running simulation."""

    seed: int

    async def crash(self, attempt: Attempt) -> NoReturn: ...

    async def call(self, dependency: Dependency, attempt: Attempt) -> None: ...

    def note(self, attempt: Attempt, cause: str) -> None: ...


class Attempt:
    """One attempt of one job, as the faults of a plan see it.

    The simulation builds one for every attempt and passes it to each
    fault's :meth:`Fault.inject` in turn. A custom fault uses it to draw its
    random numbers (:meth:`rng`), to kill the worker (:meth:`crash`), to call
    a :class:`Dependency` (:meth:`call`), and to say what it did
    (:meth:`note`, shown in traces and timelines).

    Not constructed directly; see :class:`Fault` for an example.
    """

    __slots__ = ("_index", "_lab", "_stream", "job", "number", "started", "worker")

    def __init__(self, lab: _Lab, job: Job, *, worker: str, started: float) -> None:
        self._lab = lab
        self._index = 0
        # derive(seed, _index), the prefix of every stream of the current
        # fault; None until asked for, unless the simulation sets it with
        # _index from its own table.
        self._stream: int | None = None
        self.job = job
        """The job as the worker claimed it."""
        self.number = job.attempts
        """The attempt number: 1 for the first."""
        self.worker = worker
        """The name of the simulated worker process running it."""
        self.started = started
        """The virtual time the attempt began."""

    def __repr__(self) -> str:
        return f"<Attempt {self.number} of job {self.job.id} on {self.worker}>"

    def rng(self, *, per_job: bool = False) -> random.Random:
        """Return this fault's random stream for this attempt (or for the whole job).

        The stream depends only on the seed, the fault's position in the
        plan, the job id and, unless ``per_job``, the attempt number.
        """
        stream = self._stream
        if stream is None:
            stream = self._stream = derive(self._lab.seed, self._index)
        if per_job:
            return KeyedRandom.extending(stream, self.job.id)
        return KeyedRandom.extending(stream, self.job.id, self.number)

    async def crash(self) -> NoReturn:
        """Kill the worker process running this attempt, at this instant."""
        self._lab.note(self, "crash")
        await self._lab.crash(self)

    async def call(self, dependency: Dependency) -> None:
        """Send one request to ``dependency``; raise if it refuses."""
        await self._lab.call(dependency, self)

    def note(self, cause: str) -> None:
        """Record what a fault did to this attempt (e.g. ``"transient"``)."""
        self._lab.note(self, cause)


class Fault(abc.ABC):
    """One step that every attempt of a simulated job goes through.

    Subclass it to model a fault of your own: :meth:`inject` may sleep
    (virtual time), raise an exception (the attempt fails with it), or do
    nothing. Draw random numbers only from ``attempt.rng()`` so that runs
    replay exactly.

    Example::

        >>> import trio
        >>> import attrs
        >>> from jobkit.sim import Attempt, Fault, FaultPlan, Latency
        >>> @attrs.frozen
        ... class SlowMondays(Fault):
        ...     '''Every seventh job takes a minute longer.'''
        ...     async def inject(self, attempt: Attempt) -> None:
        ...         if attempt.job.id % 7 == 0:
        ...             attempt.note("slow")
        ...             await trio.sleep(60)
        >>> FaultPlan(Latency.constant(0.1), SlowMondays())
        FaultPlan(Latency.constant(0.1), SlowMondays())
    """

    @abc.abstractmethod
    async def inject(self, attempt: Attempt) -> None:
        """Apply the fault to one attempt: sleep, raise, or return."""


_LatencyKind: TypeAlias = Literal["constant", "uniform", "exponential", "lognormal"]


@attrs.frozen(repr=False)
class Latency(Fault):
    """The time an attempt spends working, drawn from a distribution.

    Build one with :meth:`constant`, :meth:`uniform`, :meth:`exponential`
    or :meth:`lognormal` (the usual shape of service times: most are quick,
    a few are very slow).

    Example::

        >>> from jobkit.sim import Latency
        >>> import random
        >>> Latency.constant(0.25).sample(random.Random(0))
        0.25
        >>> 1.0 <= Latency.uniform(1, 2).sample(random.Random(0)) <= 2.0
        True
        >>> Latency.lognormal(median=0.2, sigma=0.5)
        Latency.lognormal(median=0.2, sigma=0.5)
    """

    kind: _LatencyKind
    a: float
    b: float = 0.0

    @classmethod
    def constant(cls, seconds: float) -> Latency:
        """Every attempt takes exactly ``seconds``.

        Example::

            >>> from jobkit.sim import Latency
            >>> Latency.constant(2).mean
            2.0
        """
        return cls("constant", check_seconds(seconds, "seconds", timedelta_ok=False))

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        """Attempts take between ``low`` and ``high`` seconds, uniformly.

        Example::

            >>> from jobkit.sim import Latency
            >>> Latency.uniform(1, 3).mean
            2.0
        """
        low, high = (
            check_seconds(low, "low", timedelta_ok=False),
            check_seconds(high, "high", timedelta_ok=False),
        )
        if high < low:
            raise ValueError(f"high must be >= low ({low!r}), got {high!r}")
        return cls("uniform", low, high)

    @classmethod
    def exponential(cls, mean: float) -> Latency:
        """Attempts take an exponentially distributed time with this ``mean``.

        Example::

            >>> from jobkit.sim import Latency
            >>> Latency.exponential(0.5).mean
            0.5
        """
        return cls(
            "exponential",
            check_seconds(mean, "mean", positive=True, timedelta_ok=False),
        )

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        """Attempts take ``median * exp(sigma * Z)`` seconds, Z standard normal.

        Example::

            >>> from jobkit.sim import Latency
            >>> round(Latency.lognormal(1.0, 0.5).mean, 3)
            1.133
        """
        return cls(
            "lognormal",
            check_seconds(median, "median", positive=True, timedelta_ok=False),
            check_seconds(sigma, "sigma", timedelta_ok=False),
        )

    @property
    def mean(self) -> float:
        """The distribution's mean, in seconds."""
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        return self.a

    def sample(self, rng: random.Random) -> float:
        """Draw one duration from ``rng``."""
        if self.kind == "constant":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.a)
        return self.a * math.exp(self.b * rng.gauss(0.0, 1.0))

    async def inject(self, attempt: Attempt) -> None:
        """Sleep for one sampled duration."""
        await _clock.sleep(self.sample(attempt.rng()))

    def __repr__(self) -> str:
        if self.kind == "constant":
            return f"Latency.constant({self.a!r})"
        if self.kind == "uniform":
            return f"Latency.uniform({self.a!r}, {self.b!r})"
        if self.kind == "exponential":
            return f"Latency.exponential({self.a!r})"
        return f"Latency.lognormal(median={self.a!r}, sigma={self.b!r})"


def _chance(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    _probability(value, attribute.name)


@attrs.frozen
class _Chance(Fault):
    probability: float = attrs.field(validator=_chance)
    per_job: bool = attrs.field(default=False, kw_only=True)
    """Decide once per job instead of once per attempt: the same jobs are hit
    every time (a "poison" job), the others never."""

    def hits(self, attempt: Attempt) -> bool:
        """Decide, from this attempt's stream, whether the fault strikes."""
        if self.probability <= 0.0:
            return False
        if self.probability >= 1.0:
            return True
        return attempt.rng(per_job=self.per_job).random() < self.probability


@attrs.frozen
class TransientErrors(_Chance):
    """With ``probability``, the attempt fails with a :class:`SimulatedError`.

    The default retry policy retries it: a flaky network, a deadlock victim,
    a 503 from a service that will be back in a moment.

    Example::

        >>> from jobkit.sim import TransientErrors
        >>> TransientErrors(0.2)
        TransientErrors(probability=0.2, per_job=False)
    """

    async def inject(self, attempt: Attempt) -> None:
        """Raise :class:`SimulatedError` if the fault strikes this attempt."""
        if self.hits(attempt):
            attempt.note("transient")
            raise SimulatedError("transient failure (injected)")


@attrs.frozen
class PermanentErrors(_Chance):
    """With ``probability``, the attempt fails with :class:`jobkit.Permanent`.

    Retrying cannot help (a malformed payload, a deleted account), so the
    job goes dead at once whatever attempts it has left.

    Example::

        >>> from jobkit.sim import PermanentErrors
        >>> PermanentErrors(0.01, per_job=True)
        PermanentErrors(probability=0.01, per_job=True)
    """

    async def inject(self, attempt: Attempt) -> None:
        """Raise :class:`jobkit.Permanent` if the fault strikes this attempt."""
        if self.hits(attempt):
            attempt.note("permanent")
            raise Permanent("permanent failure (injected)")


@attrs.frozen
class Hang(_Chance):
    """With ``probability``, the attempt stops making progress for ``duration``.

    With the default infinite duration only the task's timeout ends it: the
    attempt then fails with :class:`trio.TooSlowError`, which the retry
    policy treats like any other error. A simulation refuses an infinite
    hang for a task without a timeout, since such a job would never finish.

    Example::

        >>> from jobkit.sim import Hang
        >>> Hang(0.05)
        Hang(probability=0.05, per_job=False, duration=inf)
    """

    duration: float = attrs.field(default=math.inf, kw_only=True)

    @duration.validator
    def _check_duration(self, _: attrs.Attribute[float], value: float) -> None:
        check_seconds(value, "duration", positive=True, timedelta_ok=False)

    async def inject(self, attempt: Attempt) -> None:
        """Sleep for ``duration`` (forever by default) if the fault strikes."""
        if self.hits(attempt):
            attempt.note("hang")
            await _clock.sleep(self.duration)


@attrs.frozen
class Crash(_Chance):
    """With ``probability``, the worker process dies at this point of the attempt.

    Everything the process was running stops at once and nothing is
    reported to the store, as with ``kill -9`` or an out-of-memory kill.
    Every attempt the process held ends with it, jobs it had claimed but not
    yet begun included; the trace records each as ``crashed`` at that instant
    (cause ``"crash"`` for the attempt that struck, ``"worker crashed"`` for
    the others). The store recovers each job when its lease expires,
    counting the crashed attempt as failed; the simulation restarts the
    process after its ``restart_delay``. Put latencies around the crash in
    the plan to crash mid-job:
    ``FaultPlan(Latency.constant(1), Crash(0.01), Latency.constant(1))``.

    Example::

        >>> from jobkit.sim import Crash
        >>> Crash(0.01)
        Crash(probability=0.01, per_job=False)
    """

    async def inject(self, attempt: Attempt) -> None:
        """Kill the worker running this attempt if the fault strikes."""
        if self.hits(attempt):
            await attempt.crash()


@attrs.frozen
class Dependency(Fault):
    """A downstream service that refuses more requests the busier it is.

    Each attempt sends one request. The service handles ``capacity``
    requests per ``window`` seconds; beyond that it sheds the excess, so a
    request fails with probability::

        base_failure + (1 - base_failure) * max(0, 1 - capacity / load)

    where ``load`` counts the requests sent in the ``window`` seconds up to
    and including the instant this one was sent. The answer comes back after
    ``latency`` seconds (which must be > 0: by then every request sent at
    the same instant has been counted, so the outcome does not depend on the
    order of tasks). A refusal raises :class:`DependencyOverloaded`.

    This is the retry-storm case: when a burst of jobs fails together and
    retries on the same schedule, every wave of retries overloads the
    service again; jitter spreads the waves out.

    Example::

        >>> from jobkit.sim import Dependency
        >>> api = Dependency(capacity=50, window=1.0)
        >>> api.failure_probability(25), api.failure_probability(200)
        (0.0, 0.75)
    """

    capacity: float = attrs.field()
    window: float = attrs.field(default=1.0, kw_only=True)
    latency: float = attrs.field(default=0.05, kw_only=True)
    base_failure: float = attrs.field(default=0.0, kw_only=True)
    name: str = attrs.field(default="downstream", kw_only=True)

    def __attrs_post_init__(self) -> None:
        check_seconds(self.capacity, "capacity", positive=True, timedelta_ok=False)
        check_seconds(self.window, "window", positive=True, timedelta_ok=False)
        check_seconds(self.latency, "latency", positive=True, timedelta_ok=False)
        _probability(self.base_failure, "base_failure")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")

    def failure_probability(self, load: int) -> float:
        """Return the chance a request fails with ``load`` requests in the window."""
        shed = max(0.0, 1.0 - self.capacity / load) if load > 0 else 0.0
        return self.base_failure + (1.0 - self.base_failure) * shed

    async def inject(self, attempt: Attempt) -> None:
        """Send one request; raise :class:`DependencyOverloaded` if it is refused."""
        await attempt.call(self)


StoreOperation: TypeAlias = Literal["enqueue", "claim", "settle", "renew", "reap"]
"""The store calls that :class:`StoreErrors` can make fail."""

_WORKER_OPERATIONS: frozenset[StoreOperation] = frozenset(
    {"claim", "settle", "renew", "reap"}
)
_ALL_OPERATIONS: frozenset[StoreOperation] = _WORKER_OPERATIONS | {"enqueue"}


def _operations(value: Iterable[StoreOperation]) -> frozenset[StoreOperation]:
    if isinstance(value, str):
        value = (value,)  # type: ignore[assignment]
    ops = frozenset(value)
    unknown = ops - _ALL_OPERATIONS
    if unknown or not ops:
        raise ValueError(
            f"operations must be a non-empty set of {sorted(_ALL_OPERATIONS)}, "
            f"got {sorted(ops)!r}"
        )
    return ops


@attrs.frozen
class StoreErrors:
    """With ``probability``, a store call fails with :class:`SimulatedStoreError`.

    ``operations`` chooses which calls may fail; by default those a worker
    makes. A fraction ``after_commit`` of the failures happen after the store
    applied the change, as when a connection drops before the reply arrives:
    the worker believes the call failed although it succeeded (a lost claim
    is then recovered when its lease expires). A failed ``enqueue`` is
    retried by the simulated producer a second later, so no job is lost.

    Example::

        >>> from jobkit.sim import StoreErrors
        >>> StoreErrors(0.01, operations={"claim", "settle"}).operations == {
        ...     "claim", "settle"}
        True
    """

    probability: float = attrs.field(validator=_chance)
    operations: frozenset[StoreOperation] = attrs.field(
        default=_WORKER_OPERATIONS, converter=_operations, kw_only=True
    )
    after_commit: float = attrs.field(default=0.0, validator=_chance, kw_only=True)


def _fault_repr(fault: Fault | StoreErrors) -> str:
    return repr(fault)


class FaultPlan:
    """An ordered, immutable list of faults for a simulation.

    Attempt faults (:class:`Fault` subclasses) run in the order given for
    every attempt; :class:`StoreErrors` apply to store calls. Plans add up:
    ``plan + Crash(0.01)`` or ``plan_a + plan_b`` is a new plan. An empty
    plan is a world where nothing goes wrong and work takes no time.

    Example::

        >>> from jobkit.sim import Crash, FaultPlan, Latency, TransientErrors
        >>> plan = FaultPlan(Latency.exponential(0.2), TransientErrors(0.2))
        >>> plan + Crash(0.01)
        FaultPlan(Latency.exponential(0.2), TransientErrors(probability=0.2, \
per_job=False), Crash(probability=0.01, per_job=False))
        >>> len(plan.attempt_faults), len(plan.store_faults)
        (2, 0)
    """

    __slots__ = ("_faults",)

    def __init__(self, *faults: Fault | StoreErrors) -> None:
        for fault in faults:
            if not isinstance(fault, Fault | StoreErrors):
                raise TypeError(
                    f"FaultPlan takes Fault or StoreErrors objects, got {fault!r}"
                )
        deps: dict[str, Dependency] = {}
        for fault in faults:
            if isinstance(fault, Dependency):
                other = deps.setdefault(fault.name, fault)
                if other != fault:
                    raise ValueError(
                        f"two different dependencies are named {fault.name!r}: "
                        f"{other!r} and {fault!r}; give them distinct names"
                    )
        self._faults = tuple(faults)

    @property
    def faults(self) -> tuple[Fault | StoreErrors, ...]:
        """Every fault, in order."""
        return self._faults

    @property
    def attempt_faults(self) -> tuple[tuple[int, Fault], ...]:
        """``(position, fault)`` for the faults every attempt runs through."""
        return tuple((i, f) for i, f in enumerate(self._faults) if isinstance(f, Fault))

    @property
    def store_faults(self) -> tuple[tuple[int, StoreErrors], ...]:
        """``(position, fault)`` for the faults that act on store calls."""
        return tuple(
            (i, f) for i, f in enumerate(self._faults) if isinstance(f, StoreErrors)
        )

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        """The distinct dependencies the plan calls, by name."""
        seen: dict[str, Dependency] = {}
        for fault in self._faults:
            if isinstance(fault, Dependency):
                seen.setdefault(fault.name, fault)
        return tuple(seen.values())

    @property
    def hangs_forever(self) -> bool:
        """True if some attempt may hang until a timeout stops it."""
        return any(
            isinstance(f, Hang) and math.isinf(f.duration) and f.probability > 0
            for f in self._faults
        )

    def __add__(self, other: FaultPlan | Fault | StoreErrors) -> FaultPlan:
        if isinstance(other, FaultPlan):
            return FaultPlan(*self._faults, *other._faults)
        if isinstance(other, Fault | StoreErrors):
            return FaultPlan(*self._faults, other)
        return NotImplemented

    def __iter__(self) -> Iterator[Fault | StoreErrors]:
        return iter(self._faults)

    def __len__(self) -> int:
        return len(self._faults)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultPlan):
            return NotImplemented
        return self._faults == other._faults

    def __hash__(self) -> int:
        return hash(self._faults)

    def __repr__(self) -> str:
        return f"FaultPlan({', '.join(_fault_repr(f) for f in self._faults)})"
