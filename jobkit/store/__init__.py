"""The store layer: the contract a job store implements, and the stores.

A store keeps jobs, their events and schedules, and applies the pure
transitions of the queue core atomically; it never reads a clock. Everything a
store needs is public here: the :class:`Store` and :class:`ScheduleStore`
protocols (and :class:`SettleClaimStore`, an optional shortcut a worker
uses when a store offers it), the records and outcomes it receives, its
errors, and the argument checks every store applies before it changes
anything.
:mod:`jobkit.store.transitions` holds the pure steps a store applies (claim,
settle, expire, ...), so that a store written outside jobkit needs nothing
from a private module. :mod:`jobkit.testing.store_contract` is the suite of
tests every store passes; a store of your own runs it with a few lines.

Example::

    >>> from jobkit.store import MemoryStore, NewJob, Store
    >>> store = MemoryStore()
    >>> isinstance(store, Store)
    True
"""

from __future__ import annotations

from ..core.job import EventKind as EventKind
from ..core.job import Failure as Failure
from ..core.job import Job as Job
from ..core.job import JobEvent as JobEvent
from ..core.job import JobState as JobState
from ..core.job import NewJob as NewJob
from ..core.job import Outcome as Outcome
from ..core.job import Release as Release
from ..core.job import Success as Success
from ..core.job import check_job_fields as check_job_fields
from ..core.job import check_json as check_json
from ..core.schedule import FireResult as FireResult
from ..core.schedule import Firing as Firing
from ..core.schedule import Schedule as Schedule
from .memory import MemoryStore as MemoryStore
from .protocol import IncompatibleStore as IncompatibleStore
from .protocol import JobNotFound as JobNotFound
from .protocol import QueueCounts as QueueCounts
from .protocol import ScheduleStore as ScheduleStore
from .protocol import SettleClaimStore as SettleClaimStore
from .protocol import Store as Store
from .protocol import StoreBusy as StoreBusy
from .protocol import StoreDamaged as StoreDamaged
from .protocol import StoreError as StoreError
from .protocol import check_limit as check_limit
from .protocol import check_new_jobs as check_new_jobs
from .protocol import check_outcomes as check_outcomes
from .protocol import check_time as check_time
from .sqlite.store import SQLiteStore as SQLiteStore
from .url import store_from_url as store_from_url

__all__ = [
    "EventKind",
    "Failure",
    "FireResult",
    "Firing",
    "IncompatibleStore",
    "Job",
    "JobEvent",
    "JobNotFound",
    "JobState",
    "MemoryStore",
    "NewJob",
    "Outcome",
    "QueueCounts",
    "Release",
    "SQLiteStore",
    "Schedule",
    "ScheduleStore",
    "SettleClaimStore",
    "Store",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
    "Success",
    "check_job_fields",
    "check_json",
    "check_limit",
    "check_new_jobs",
    "check_outcomes",
    "check_time",
    "store_from_url",
]


def _fix_module_names() -> None:
    # Reprs and tracebacks should name this public package, not the module
    # inside it; names that :mod:`jobkit` also exports are labelled ``jobkit``.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith(("jobkit.core.", "jobkit.store.")):
            obj.__module__ = __name__


_fix_module_names()
