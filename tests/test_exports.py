"""Each public module says what it exports in ``__all__``, and the list is pinned.

A change to the public API shows up here as a change to ``EXPORTS``: adding
a name is a decision, removing one breaks users. Renamed names stay
importable, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import jobkit

EXPORTS: dict[str, list[str]] = {
    "jobkit": [
        "AttemptSpan",
        "Backoff",
        "CancellationToken",
        "DepthPoint",
        "DepthSample",
        "DepthSampler",
        "Due",
        "EventKind",
        "FireResult",
        "Firing",
        "Histogram",
        "IncompatibleStore",
        "Interval",
        "JSONFormatter",
        "Jitter",
        "Job",
        "JobEvent",
        "JobNotFound",
        "JobState",
        "JoinSet",
        "MemoryStore",
        "Metrics",
        "MetricsSnapshot",
        "MissedTickBehavior",
        "NewJob",
        "Permanent",
        "PreparedJob",
        "PurgeTotals",
        "Queue",
        "QueueCounts",
        "Restart",
        "RetryLater",
        "RetryPolicy",
        "SQLiteStore",
        "Schedule",
        "ScheduleStore",
        "SettleClaimStore",
        "Store",
        "StoreBusy",
        "StoreDamaged",
        "StoreError",
        "Supervisor",
        "SupervisorStatistics",
        "TERMINAL_STATES",
        "Task",
        "TaskCancelled",
        "TaskHandle",
        "TaskOptions",
        "TaskResult",
        "TransitionError",
        "Worker",
        "WorkerStatistics",
        "attempt_spans",
        "cancel_on_signals",
        "collect_metrics",
        "current_job",
        "depth_points",
        "interval",
        "open_join_set",
        "open_supervisor",
        "run_worker",
        "store_from_url",
        "tally_events",
    ],
    "jobkit.store": [
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
    ],
    "jobkit.store.transitions": [
        "ACTIVE_STATES",
        "EXPIRED_ERROR",
        "TERMINAL_STATES",
        "TransitionError",
        "attempt_limit",
        "cancel",
        "check_schedule",
        "claim_order",
        "create",
        "discard",
        "due",
        "dump_json",
        "expire",
        "fire_all",
        "lease_expired",
        "owns",
        "renew",
        "requeue",
        "settle",
        "settled_kind",
        "slot_key",
        "start",
        "tally_events",
        "warn_dropped",
    ],
    "jobkit.charts": [
        "attempt_timeline",
        "attempts_per_job",
        "backoff_delays",
        "concurrency",
        "counter_rates",
        "durations",
        "job_timeline",
        "lost_work",
        "queue_depth",
        "restarts",
        "slot_runs",
        "throughput",
        "tick_lateness",
        "tick_runs",
    ],
    "jobkit.notebook": ["hide_logs", "run_cli", "short_traceback", "show_logs"],
    "jobkit.sim": [
        "Attempt",
        "AttemptSpan",
        "Burst",
        "Call",
        "Crash",
        "Dependency",
        "DependencyOverloaded",
        "DepthPoint",
        "Fault",
        "FaultPlan",
        "Hang",
        "KeyedRandom",
        "Kind",
        "Latency",
        "Mix",
        "PermanentErrors",
        "Poisson",
        "Progress",
        "SimulatedError",
        "SimulatedStoreError",
        "Simulation",
        "Steady",
        "StoreErrors",
        "StoreOperation",
        "Summary",
        "Trace",
        "TraceEvent",
        "TransientErrors",
        "Wait",
        "Workload",
    ],
    "jobkit.sim.charts": [
        "OUTCOME_COLORS",
        "attempts_histogram",
        "compare_load",
        "compare_work",
        "dependency_load",
        "queue_depth",
        "timeline",
    ],
    "jobkit.testing": ["run_virtual"],
    "jobkit.testing.store_contract": ["ScheduleStoreContract", "StoreContract"],
    "jobkit.testing.store_model": ["run_store_model"],
    "jobkit.examples.accounts": [
        "Accounts",
        "EmailTaken",
        "OutboxEntry",
        "User",
        "check_email",
    ],
    "jobkit.examples.process": ["app_process", "stop", "wait_for_state"],
    "jobkit.examples.timeline": [
        "Step",
        "job_steps",
        "load_timeline",
        "plot_timeline",
        "read_steps",
        "since_shutdown",
    ],
    "jobkit.examples.webapp": [
        "CatchErrors",
        "Settings",
        "WebApp",
        "WorkerCrash",
        "configure_logging",
        "main",
        "settings_from_args",
        "step",
    ],
}


@pytest.mark.parametrize("module_name", EXPORTS)
def test_the_exports_of_a_public_module_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == EXPORTS[module_name]
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}"


# Imported on first use (it needs an optional dependency), so not in __all__:
# ``from jobkit import *`` must work without psycopg.
LAZY = {"jobkit": {"PostgresStore"}}


@pytest.mark.parametrize("module_name", EXPORTS)
def test_a_public_module_exports_every_public_name_it_has(module_name: str) -> None:
    module = importlib.import_module(module_name)
    unlisted = [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not isinstance(obj, types.ModuleType)
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "") == module_name
        and name not in module.__all__
        and name not in LAZY.get(module_name, ())
    ]
    assert unlisted == []


def test_jobkit_event_is_a_deprecated_name_of_jobevent() -> None:
    with pytest.warns(DeprecationWarning, match="use jobkit.JobEvent"):
        from jobkit import Event
    assert Event is jobkit.JobEvent


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Evnet'"):
        jobkit.Evnet  # type: ignore[attr-defined]  # noqa: B018


async def test_queue_stats_is_a_deprecated_name_of_counts() -> None:
    queue = jobkit.Queue(jobkit.MemoryStore())

    @queue.task()
    async def noop() -> None: ...

    await noop.enqueue()
    with pytest.warns(DeprecationWarning, match=r"use Queue.counts\(\)"):
        counts = await queue.stats()
    assert counts == await queue.counts()
