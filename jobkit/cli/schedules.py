"""``jobkit schedules``: list the periodic and cron schedules."""

from __future__ import annotations

import argparse

from ..core.schedule import Schedule
from ..store.protocol import ScheduleStore
from . import options
from .common import print_json, render_table, run_with_store, when
from .options import Subparsers


def add_schedules(commands: Subparsers) -> None:
    options.add_command(
        commands,
        "schedules",
        "list the periodic and cron schedules",
        "List the schedules stored in the database: the task each enqueues,\n"
        "its grid (every N seconds, or a cron expression and time zone), its\n"
        "misfire policy, the next slot to enqueue and the last one enqueued.\n"
        "Schedules are declared by the application (Queue.schedule); any\n"
        "running worker enqueues their slots.",
        cmd_schedules,
        epilog="example:\n  jobkit schedules --db jobs.db --json",
    )


def cmd_schedules(args: argparse.Namespace) -> int:
    async def body(store: ScheduleStore) -> list[Schedule]:
        return await store.schedules()

    schedules = run_with_store(args, body)
    if args.json:
        print_json([schedule.to_dict() for schedule in schedules])
    elif schedules:
        rows = [
            [
                s.name,
                s.task,
                s.spec,
                s.misfire.value,
                when(s.next_slot),
                when(s.last_slot),
            ]
            for s in schedules
        ]
        headers = ["name", "task", "every/cron", "misfire", "next slot", "last slot"]
        print(render_table(headers, rows))
    else:
        print("no schedules")
    return 0
