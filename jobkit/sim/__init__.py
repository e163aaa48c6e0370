"""The fault-injection laboratory: the real queue and worker, in virtual time.

A :class:`Simulation` runs :class:`jobkit.Queue` and :func:`jobkit.run_worker`
in virtual time (a clock that jumps ahead as ``trio.testing.MockClock`` does
when every task waits), feeds them a :class:`Workload`, and puts every
attempt through a seeded :class:`FaultPlan`: latencies, transient and
permanent errors, hangs, worker crashes, store errors, an overloaded
dependency. A day of traffic runs in seconds, and the same seed replays the
same run, event for event. The :class:`Trace` it returns holds every event,
summary figures and invariant checks; :mod:`jobkit.sim.charts` (matplotlib,
imported separately) draws it.

Example::

    >>> from jobkit import Backoff, RetryPolicy
    >>> from jobkit.sim import Simulation, Burst, FaultPlan, TransientErrors
    >>> trace = Simulation(
    ...     seed=1,
    ...     workload=Burst(100),
    ...     faults=FaultPlan(TransientErrors(0.2)),
    ...     retry=RetryPolicy(5, Backoff.exponential(1, 60, jitter="full")),
    ... ).run()
    >>> s = trace.summary()
    >>> s.jobs, s.succeeded + s.dead, trace.violations()
    (100, 100, [])
"""

from __future__ import annotations

# The trace's spans and depth points are observe's: one model, two homes.
from ..observe.depth import DepthPoint as DepthPoint
from ..observe.spans import AttemptSpan as AttemptSpan
from ._faults import Attempt as Attempt
from ._faults import Crash as Crash
from ._faults import Dependency as Dependency
from ._faults import DependencyOverloaded as DependencyOverloaded
from ._faults import Fault as Fault
from ._faults import FaultPlan as FaultPlan
from ._faults import Hang as Hang
from ._faults import Latency as Latency
from ._faults import PermanentErrors as PermanentErrors
from ._faults import SimulatedError as SimulatedError
from ._faults import SimulatedStoreError as SimulatedStoreError
from ._faults import StoreErrors as StoreErrors
from ._faults import StoreOperation as StoreOperation
from ._faults import TransientErrors as TransientErrors
from ._progress import Progress as Progress
from ._rng import KeyedRandom as KeyedRandom
from ._simulation import Simulation as Simulation
from ._trace import Call as Call
from ._trace import Kind as Kind
from ._trace import Summary as Summary
from ._trace import Trace as Trace
from ._trace import TraceEvent as TraceEvent
from ._trace import Wait as Wait
from ._workload import Burst as Burst
from ._workload import Mix as Mix
from ._workload import Poisson as Poisson
from ._workload import Steady as Steady
from ._workload import Workload as Workload

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
    "Progress",
    "KeyedRandom",
    "Simulation",
    "AttemptSpan",
    "Call",
    "DepthPoint",
    "Kind",
    "Summary",
    "Trace",
    "TraceEvent",
    "Wait",
    "Burst",
    "Mix",
    "Poisson",
    "Steady",
    "Workload",
]


def _fix_module_names() -> None:
    # Reprs and tracebacks should say ``jobkit.sim.Name``.
    for name, obj in globals().items():
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith(
            "jobkit.sim._"
        ):
            obj.__module__ = "jobkit.sim"


_fix_module_names()
