"""jobkit: background jobs on trio.

Structured task spawning (:func:`open_supervisor`, :func:`open_join_set`),
periodic work (:func:`interval`), cancellation (:class:`CancellationToken`),
and a durable job queue with retries, backoff and dead letters.
"""

import typing as _typing

# Runtime: tasks, supervisors and join sets.
from ._joinset import JoinSet as JoinSet
from ._joinset import open_join_set as open_join_set
from ._supervisor import Restart as Restart
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._supervisor import open_supervisor as open_supervisor
from ._tasks import TaskCancelled as TaskCancelled
from ._tasks import TaskHandle as TaskHandle
from ._tasks import TaskResult as TaskResult

# Runtime: intervals and cancellation tokens.
from ._interval import Interval as Interval
from ._interval import MissedTickBehavior as MissedTickBehavior
from ._interval import interval as interval
from ._token import CancellationToken as CancellationToken
from ._token import cancel_on_signals as cancel_on_signals

# Retry policies and backoff.
from ._retry import Backoff as Backoff
from ._retry import Jitter as Jitter
from ._retry import Permanent as Permanent
from ._retry import RetryLater as RetryLater
from ._retry import RetryPolicy as RetryPolicy

# The job queue.
from ._job import TERMINAL_STATES as TERMINAL_STATES
from ._job import Event as Event
from ._job import EventKind as EventKind
from ._job import Job as Job
from ._job import JobState as JobState
from ._job import NewJob as NewJob
from ._job import TransitionError as TransitionError
from ._memory import MemoryStore as MemoryStore
from ._sqlite import SQLiteStore as SQLiteStore
from ._store import IncompatibleStore as IncompatibleStore
from ._store import JobNotFound as JobNotFound
from ._store import PurgeTotals as PurgeTotals
from ._store import QueueCounts as QueueCounts
from ._store import Store as Store
from ._store import StoreBusy as StoreBusy
from ._store import StoreError as StoreError
from ._url import store_from_url as store_from_url
from ._queue import PreparedJob as PreparedJob
from ._queue import Queue as Queue
from ._queue import Task as Task
from ._queue import TaskOptions as TaskOptions
from ._worker import Worker as Worker
from ._worker import WorkerStatistics as WorkerStatistics
from ._worker import current_job as current_job
from ._worker import run_worker as run_worker

# Schedules: periodic and cron jobs, stored, fired once per slot.
from ._schedule import Due as Due
from ._schedule import FireResult as FireResult
from ._schedule import Firing as Firing
from ._schedule import Schedule as Schedule
from ._store import ScheduleStore as ScheduleStore

# Observability: metrics, depth sampling and structured logs.
from ._logging import JSONFormatter as JSONFormatter
from ._metrics import AttemptSpan as AttemptSpan
from ._metrics import DepthSample as DepthSample
from ._metrics import DepthSampler as DepthSampler
from ._metrics import Histogram as Histogram
from ._metrics import Metrics as Metrics
from ._metrics import MetricsSnapshot as MetricsSnapshot
from ._metrics import tally_events as tally_events
from ._metrics import attempt_spans as attempt_spans
from ._metrics import collect_metrics as collect_metrics


if _typing.TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore


def __getattr__(name: str) -> _typing.Any:
    # PostgresStore needs psycopg, an optional dependency: imported on first use.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        PostgresStore.__module__ = "jobkit"
        globals()[name] = PostgresStore
        return PostgresStore
    raise AttributeError(f"module 'jobkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "PostgresStore"})


def _fix_module_names() -> None:
    # Tracebacks, reprs and docs should say ``jobkit.Name``, not the private module.
    for name, obj in globals().items():
        if not name.startswith("_") and getattr(obj, "__module__", "").startswith(
            "jobkit._"
        ):
            obj.__module__ = "jobkit"


_fix_module_names()
