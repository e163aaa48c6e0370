"""Fire the schedules of one store at given instants, as one process of several.

Usage: ``python tests/helpers/schedule_firer.py DB FROM TO STEP``, where DB
is an SQLite file or a store URL.

Opens the store, prints ``ready``, waits for a line on stdin (so that several
processes start racing at once), then calls ``fire_schedules(now=t)`` for
``t = FROM, FROM + STEP, ... <= TO`` and prints, as one JSON line, the slots
this process enqueued: ``[[schedule, slot, job_id], ...]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from jobkit import store_from_url


async def main(url: str, first: float, last: float, step: float) -> None:
    fired: list[list[object]] = []
    store: Any = store_from_url(url)  # a path, or a postgresql:// URL
    try:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        k = 0
        while (now := first + k * step) <= last:
            result = await store.fire_schedules(now=now)
            fired += [[f.schedule, f.slot, f.job_id] for f in result.firings]
            k += 1
    finally:
        await store.aclose()
    print(json.dumps(fired), flush=True)


if __name__ == "__main__":
    db, start, stop, every = sys.argv[1:5]
    trio.run(main, db, float(start), float(stop), float(every))
