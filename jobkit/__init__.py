"""jobkit: background jobs on trio.

Structured task spawning (:func:`open_supervisor`, :func:`open_join_set`),
periodic work (:func:`interval`), cancellation (:class:`CancellationToken`),
and a durable job queue with retries, backoff and dead letters.

How the package is laid out
---------------------------
Every public name is exported here; the public modules besides this one are
:mod:`jobkit.store` and :mod:`jobkit.store.transitions` (for writing and
choosing stores), :mod:`jobkit.charts`, :mod:`jobkit.sim`,
:mod:`jobkit.sim.charts`, :mod:`jobkit.testing` and :mod:`jobkit.notebook`.
The sub-packages are layers, and each imports only the layers below it::

    cli/  dashboard/  examples/  testing          the command line,
    notebook  _demo  __main__                     the apps, the book's helpers
    ----------------------------------------------------------------------
    sim/                 the fault-injection lab: the real queue and
                         worker in virtual time, with faults and a trace
                         (its spans and depth are observe/'s)
    jobkit (this file)   the public names of the layers below
    worker/              claims jobs and runs their handlers
    queue/               the Queue facade: tasks, enqueue, inspection
    observe/  charts     metrics, Prometheus text, logs, charts; the one
                         model of attempts (spans) and queue depth that
                         the simulator's trace and charts build on
    store/               the Store protocol, its checks and errors,
                         transitions, tallies; memory.py, sqlite/,
                         postgres/, and url.py (store_from_url)
    core/                job records and pure transitions, claim order,
                         retry and backoff, schedules: no I/O, no clock
    runtime/             tasks, supervisors, join sets, intervals,
                         cancellation tokens: no knowledge of jobs
    _checks              argument checks shared by every layer;
    _html                the HTML tables of the records' notebook reprs

The rules, which ``tests/test_layers.py`` enforces on every import (lazy and
``TYPE_CHECKING`` ones included):

- a module imports only its own layer and the layers drawn below it;
- nothing below the command line and apps imports ``jobkit`` itself (this
  file), only the modules it needs;
- the core imports neither trio nor anything that does I/O or reads a clock:
  stores, the worker and the simulator all pass ``now`` in;
- a store imports only the core and the store protocol: it never sees the
  queue, the worker or the metrics;
- the examples import only the public modules, as users' code does.
"""

import typing as _typing
import warnings

# Runtime: tasks, supervisors and join sets.
from .runtime.joinset import JoinSet as JoinSet
from .runtime.joinset import open_join_set as open_join_set
from .runtime.supervisor import Restart as Restart
from .runtime.supervisor import Supervisor as Supervisor
from .runtime.supervisor import SupervisorStatistics as SupervisorStatistics
from .runtime.supervisor import open_supervisor as open_supervisor
from .runtime.tasks import TaskCancelled as TaskCancelled
from .runtime.tasks import TaskHandle as TaskHandle
from .runtime.tasks import TaskResult as TaskResult

# Runtime: intervals and cancellation tokens.
from .runtime.interval import Interval as Interval
from .runtime.interval import MissedTickBehavior as MissedTickBehavior
from .runtime.interval import interval as interval
from .runtime.token import CancellationToken as CancellationToken
from .runtime.token import cancel_on_signals as cancel_on_signals

# Retry policies and backoff.
from .core.retry import Backoff as Backoff
from .core.retry import Jitter as Jitter
from .core.retry import Permanent as Permanent
from .core.retry import RetryLater as RetryLater
from .core.retry import RetryPolicy as RetryPolicy

# The job queue.
from .core.job import TERMINAL_STATES as TERMINAL_STATES
from .core.job import JobEvent as JobEvent
from .core.job import EventKind as EventKind
from .core.job import Job as Job
from .core.job import JobState as JobState
from .core.job import NewJob as NewJob
from .core.job import TransitionError as TransitionError
from .store.memory import MemoryStore as MemoryStore
from .store.sqlite.store import SQLiteStore as SQLiteStore
from .store.protocol import IncompatibleStore as IncompatibleStore
from .store.protocol import StoreDamaged as StoreDamaged
from .store.protocol import JobNotFound as JobNotFound
from .store.protocol import PurgeTotals as PurgeTotals
from .store.protocol import QueueCounts as QueueCounts
from .store.protocol import Store as Store
from .store.protocol import StoreBusy as StoreBusy
from .store.protocol import StoreError as StoreError
from .store.url import store_from_url as store_from_url
from .queue.prepared import PreparedJob as PreparedJob
from .queue.facade import Queue as Queue
from .queue.task import Task as Task
from .queue.task import TaskOptions as TaskOptions
from .worker.worker import Worker as Worker
from .worker.state import WorkerStatistics as WorkerStatistics
from .worker.slots import current_job as current_job
from .worker.worker import run_worker as run_worker

# Schedules: periodic and cron jobs, stored, fired once per slot.
from .core.schedule import Due as Due
from .core.schedule import FireResult as FireResult
from .core.schedule import Firing as Firing
from .core.schedule import Schedule as Schedule
from .store.protocol import ScheduleStore as ScheduleStore
from .store.protocol import SettleClaimStore as SettleClaimStore

# Observability: metrics, attempt spans, queue depth and structured logs.
from .observe.logs import JSONFormatter as JSONFormatter
from .observe.depth import DepthPoint as DepthPoint
from .observe.depth import DepthSample as DepthSample
from .observe.depth import DepthSampler as DepthSampler
from .observe.depth import depth_points as depth_points
from .observe.metrics import Histogram as Histogram
from .observe.metrics import Metrics as Metrics
from .observe.metrics import MetricsSnapshot as MetricsSnapshot
from .observe.metrics import tally_events as tally_events
from .observe.metrics import collect_metrics as collect_metrics
from .observe.spans import AttemptSpan as AttemptSpan
from .observe.spans import attempt_spans as attempt_spans


__all__ = [
    "JoinSet",
    "open_join_set",
    "Restart",
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
    "TaskCancelled",
    "TaskHandle",
    "TaskResult",
    "Interval",
    "MissedTickBehavior",
    "interval",
    "CancellationToken",
    "cancel_on_signals",
    "Backoff",
    "Jitter",
    "Permanent",
    "RetryLater",
    "RetryPolicy",
    "TERMINAL_STATES",
    "JobEvent",
    "EventKind",
    "Job",
    "JobState",
    "NewJob",
    "TransitionError",
    "MemoryStore",
    "SQLiteStore",
    "IncompatibleStore",
    "JobNotFound",
    "PurgeTotals",
    "QueueCounts",
    "Store",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
    "store_from_url",
    "PreparedJob",
    "Queue",
    "Task",
    "TaskOptions",
    "Worker",
    "WorkerStatistics",
    "current_job",
    "run_worker",
    "Due",
    "FireResult",
    "Firing",
    "Schedule",
    "ScheduleStore",
    "SettleClaimStore",
    "JSONFormatter",
    "AttemptSpan",
    "DepthPoint",
    "DepthSample",
    "DepthSampler",
    "Histogram",
    "Metrics",
    "MetricsSnapshot",
    "tally_events",
    "attempt_spans",
    "collect_metrics",
    "depth_points",
]


def _fix_module_names() -> None:
    # Tracebacks, reprs and docs should say ``jobkit.Name``, not the layer's module.
    for name, obj in globals().items():
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith(
            "jobkit."
        ):
            obj.__module__ = "jobkit"


_fix_module_names()

if _typing.TYPE_CHECKING:
    from .store.postgres import PostgresStore as PostgresStore

# Old names kept for one release; each use warns.
_DEPRECATED = {"Event": ("JobEvent", JobEvent)}


def __getattr__(name: str) -> _typing.Any:
    # PostgresStore needs psycopg, an optional dependency: imported on first use.
    if name == "PostgresStore":
        from .store.postgres import PostgresStore

        PostgresStore.__module__ = "jobkit"
        globals()[name] = PostgresStore
        return PostgresStore
    if name in _DEPRECATED:
        new_name, obj = _DEPRECATED[name]
        warnings.warn(
            f"jobkit.{name} is deprecated, use jobkit.{new_name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj
    raise AttributeError(f"module 'jobkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "PostgresStore"})
