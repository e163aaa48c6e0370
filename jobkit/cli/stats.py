"""Counting: ``jobkit stats`` and ``jobkit metrics``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..core.job import JobState
from ..observe.metrics import collect_metrics
from ..store.protocol import Store
from . import options
from .common import app_spec, load_app, print_json, render_table, run_with_store
from .options import Subparsers


def add_stats(commands: Subparsers) -> None:
    options.add_command(
        commands,
        "stats",
        "count jobs per queue and state",
        "Count the jobs of each queue in each state. With --app, also count\n"
        "the queued jobs of tasks that app does not know: they wait for a\n"
        "worker that does.",
        cmd_stats,
        app=True,
    )


def cmd_stats(args: argparse.Namespace) -> int:
    spec = app_spec(args)
    app = load_app(spec) if spec else None

    async def body(store: Store) -> Any:
        return await store.counts(), await store.queued_tasks()

    counts, queued = run_with_store(args, body)
    unknown: dict[str, int] = {}
    if app is not None:
        for (_, task), n in sorted(queued.items()):
            if task not in app.tasks:
                unknown[task] = unknown.get(task, 0) + n
    states = list(JobState)
    if args.json:
        shown: dict[str, Any] = {
            q: {s.value: counts.get(q, s) for s in states} for q in counts.queues
        }
        if app is not None:
            shown = {"queues": shown, "unknown_tasks": unknown}
        print_json(shown)
        return 0
    rows: list[list[object]] = [
        [q, *(counts.get(q, s) for s in states), sum(counts.get(q, s) for s in states)]
        for q in counts.queues
    ]
    totals = [counts.total(s) for s in states]
    rows.append(["all", *totals, sum(totals)])
    headers = ["queue", *(s.value for s in states), "total"]
    print(render_table(headers, rows, right=",".join(headers[1:])))
    if unknown:
        n = sum(unknown.values())
        print(
            f"{n} queued {'job waits' if n == 1 else 'jobs wait'} for tasks "
            f"{spec} does not know: {', '.join(sorted(unknown))}"
        )
    return 0


def add_metrics(commands: Subparsers) -> None:
    options.add_command(
        commands,
        "metrics",
        "print metrics in the Prometheus text format",
        "Print counters, attempt durations, attempts per job and queue depth,\n"
        "derived from the database's event log, in the Prometheus text\n"
        "exposition format (or as JSON with --json).",
        cmd_metrics,
        epilog=(
            "example:\n"
            "  jobkit metrics --db jobs.db > /var/lib/node_exporter/jobkit.prom"
        ),
    )


def cmd_metrics(args: argparse.Namespace) -> int:
    snapshot = run_with_store(args, collect_metrics)
    if args.json:
        print_json(snapshot.to_dict())
    else:
        sys.stdout.write(snapshot.to_prometheus())
    return 0
