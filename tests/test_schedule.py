"""Schedules: slot arithmetic, misfire policies, storage, firing by workers, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import jobkit
from jobkit import MissedTickBehavior as M
from jobkit import Schedule
from jobkit.core.schedule import due
from jobkit.store.sqlite import schema as sql
from jobkit.store.sqlite.schedules import TABLES
from tests.helpers.stores import WatchedStore

HELPERS = Path(__file__).parent / "helpers"

# A Tuesday, 2023-11-14 22:15:00 UTC: on a 5-minute boundary, so that cron
# slots fall at EPOCH + multiples of 300.
EPOCH = 1_700_000_100.0


def every(
    period: float = 10.0,
    *,
    misfire: M = M.SKIP,
    start: float = 0.0,
    max_burst: int = 100,
) -> Schedule:
    return Schedule.create(
        "tick",
        "t",
        every=period,
        misfire=misfire,
        start=start,
        max_burst=max_burst,
        now=start,
    )


def cron(
    expression: str = "*/5 * * * *", *, misfire: M = M.SKIP, **kw: Any
) -> Schedule:
    return Schedule.create(
        "tick", "t", cron=expression, misfire=misfire, now=EPOCH, **kw
    )


def advance(schedule: Schedule, *times: float) -> Schedule:
    for t in times:
        schedule = due(schedule, t).schedule
    return schedule


# -- the pure core: slots and policies ----------------------------------------------


@pytest.mark.parametrize("policy", list(M))
@pytest.mark.parametrize("now", [20.0, 20.001, 29.999])
def test_one_due_slot_is_on_time_under_every_policy(policy: M, now: float) -> None:
    """With only the next slot due, however late in its period, just it is enqueued."""
    s = advance(every(misfire=policy), 0.0, 10.0)
    d = due(s, now)
    assert d.slots == [(20.0, 20.0)]
    assert (d.schedule.next_slot, d.schedule.last_slot, d.schedule.anchor) == (
        30.0,
        20.0,
        0.0,
    )


def test_nothing_is_due_before_the_next_slot() -> None:
    """Before next_slot, due() returns no slot and the schedule unchanged."""
    s = every()
    d = due(s, -0.5)
    assert d.slots == [] and d.schedule is s


# Every 10 s from 0; slots 0, 10 and 20 were enqueued on time; the next call
# comes at ``now``.
EVERY_CASES = [
    # now, policy, slots (slot, run_at), next slot
    (40.0, M.BURST, [(30.0, 30.0), (40.0, 40.0)], 50.0),
    (40.0, M.SKIP, [(40.0, 40.0)], 50.0),
    (40.0, M.DELAY, [(30.0, 40.0)], 50.0),
    (73.0, M.BURST, [(s, s) for s in (30.0, 40.0, 50.0, 60.0, 70.0)], 80.0),
    (73.0, M.SKIP, [(70.0, 70.0)], 80.0),
    (73.0, M.DELAY, [(30.0, 73.0)], 83.0),
    (3600.5, M.SKIP, [(3600.0, 3600.0)], 3610.0),
    (3600.5, M.DELAY, [(30.0, 3600.5)], 3610.5),
]


@pytest.mark.parametrize(("now", "policy", "slots", "next_slot"), EVERY_CASES)
def test_every_schedule_after_an_outage(
    now: float, policy: M, slots: list[tuple[float, float]], next_slot: float
) -> None:
    """Missed slots of an every-schedule follow BURST, SKIP or DELAY exactly."""
    s = advance(every(misfire=policy), 0.0, 10.0, 20.0)
    d = due(s, now)
    assert d.slots == slots
    assert d.schedule.next_slot == next_slot
    assert d.schedule.last_slot == slots[-1][0]
    assert d.dropped is None


def test_delay_re_bases_the_grid_on_the_late_firing() -> None:
    """After DELAY fires late at 73, the slots are 83, 93, ... on time."""
    s = due(advance(every(misfire=M.DELAY), 0.0, 10.0, 20.0), 73.0).schedule
    fired = []
    for now in (83.0, 93.0, 103.0):
        d = due(s, now)
        fired += d.slots
        s = d.schedule
    assert fired == [(83.0, 83.0), (93.0, 93.0), (103.0, 103.0)]
    assert s.anchor == 73.0


def test_burst_keeps_only_the_latest_max_burst_slots() -> None:
    """A year of missed slots enqueues max_burst of them and names the dropped."""
    s = every(60.0, misfire=M.BURST, max_burst=3)
    year = 365 * 86400.0
    d = due(s, year + 30.0)
    assert d.slots == [
        (year - 120.0, year - 120.0),
        (year - 60.0, year - 60.0),
        (year, year),
    ]
    assert d.dropped == (0.0, year - 180.0)
    assert d.schedule.next_slot == year + 60.0


def test_burst_cap_of_cron_costs_max_burst_steps_however_long_the_outage() -> None:
    """A per-minute cron down for a year enqueues exactly the latest 100 minutes."""
    s = cron("* * * * *", misfire=M.BURST)
    now = EPOCH + 365 * 86400.0 + 30.0
    d = due(s, now)
    last = EPOCH + 365 * 86400.0
    assert [slot for slot, _ in d.slots] == [last - 60.0 * k for k in range(99, -1, -1)]
    assert d.dropped == (EPOCH, last - 6000.0)


# */5 from EPOCH: slots 0, 300, 600 enqueued on time; the next call comes at
# EPOCH + now.
CRON_CASES = [
    (1950.0, M.BURST, [(t, t) for t in (900.0, 1200.0, 1500.0, 1800.0)], 2100.0),
    (1950.0, M.SKIP, [(1800.0, 1800.0)], 2100.0),
    # DELAY: one job now for 900, then the first cron time >= now + 300.
    (1950.0, M.DELAY, [(900.0, 1950.0)], 2400.0),
    (2100.0, M.DELAY, [(900.0, 2100.0)], 2400.0),
    (1000.0, M.DELAY, [(900.0, 900.0)], 1200.0),  # on time: one slot due
]


@pytest.mark.parametrize(("now", "policy", "slots", "next_slot"), CRON_CASES)
def test_cron_schedule_after_an_outage(
    now: float, policy: M, slots: list[tuple[float, float]], next_slot: float
) -> None:
    """Missed cron slots follow BURST, SKIP or DELAY exactly."""
    s = advance(cron(misfire=policy), EPOCH, EPOCH + 300, EPOCH + 600)
    assert s.next_slot == EPOCH + 900
    d = due(s, EPOCH + now)
    assert [(a - EPOCH, b - EPOCH) for a, b in d.slots] == slots
    assert d.schedule.next_slot - EPOCH == next_slot


def test_cron_first_slot_is_at_or_after_start() -> None:
    """A cron schedule starts at start if that is a cron time, else at the next."""
    assert cron(start=EPOCH).next_slot == EPOCH
    assert cron(start=EPOCH + 0.5).next_slot == EPOCH + 300
    assert cron(start=EPOCH - 0.5).next_slot == EPOCH


def test_cron_reads_its_expression_in_its_time_zone() -> None:
    """'0 9 * * *' in New York stays at 9:00 local across the March DST change."""
    start = datetime(2024, 3, 8, 12, tzinfo=UTC).timestamp()
    s = Schedule.create("am", "t", cron="0 9 * * *", tz="America/New_York", now=start)
    slots = []
    for _ in range(3):
        slots.append(s.next_slot)
        s = due(s, s.next_slot).schedule
    local = [datetime.fromtimestamp(t, ZoneInfo("America/New_York")) for t in slots]
    assert [(d.day, d.hour, d.minute) for d in local] == [
        (8, 9, 0),
        (9, 9, 0),
        (10, 9, 0),
    ]
    # 24 hours, then 23: the clocks went forward on the night of the 10th.
    assert (slots[1] - slots[0], slots[2] - slots[1]) == (24 * 3600, 23 * 3600)


@given(
    period=st.sampled_from([0.1, 1.0, 7.0, 60.0, 3600.0]),
    anchor=st.floats(-1e6, 2e9),
    done=st.integers(0, 50),
    late=st.floats(0, 1e5),
    policy=st.sampled_from(list(M)),
    max_burst=st.integers(1, 20),
)
def test_due_invariants(
    period: float, anchor: float, done: int, late: float, policy: M, max_burst: int
) -> None:
    """Slots are on the grid, in order, due, capped; next_slot is after now."""
    s = every(period, misfire=policy, start=anchor, max_burst=max_burst)
    s = attrs.evolve(s, next_slot=anchor + done * period)
    now = s.next_slot + late
    d = due(s, now)
    slots = [slot for slot, _ in d.slots]
    assert d.schedule.next_slot > now
    assert 1 <= len(slots) <= max_burst
    assert slots == sorted(set(slots))
    assert all(s.next_slot <= slot <= now for slot in slots)
    assert all(
        math.isclose(
            (slot - anchor) / period, round((slot - anchor) / period), abs_tol=1e-6
        )
        for slot in slots
    )
    missed = s.slot_after(s.next_slot) <= now
    if policy is M.SKIP or (policy is M.BURST and missed) or not missed:
        assert slots[-1] == s.slot_at_or_before(now)
        assert d.schedule.next_slot == s.slot_after(now)
    if policy is M.BURST:
        # Contiguous on the grid, ending at the last slot before now.
        assert all(
            math.isclose(b - a, period, abs_tol=1e-6)
            for a, b in itertools.pairwise(slots)
        )
        total = round((s.slot_at_or_before(now) - s.next_slot) / period) + 1
        assert len(slots) == min(total, max_burst)
        assert (d.dropped is None) == (total <= max_burst)
    if policy is M.DELAY and missed:
        assert d.slots == [(s.next_slot, now)]
        assert d.schedule.next_slot == now + period


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"every": 5, "cron": "* * * * *"}, ValueError, "got both"),
        ({}, ValueError, "give either every=... or cron=..., got neither"),
        ({"every": 0}, ValueError, "every must be finite and > 0 seconds"),
        ({"every": -1}, ValueError, "every must be finite and > 0 seconds"),
        ({"every": math.nan}, ValueError, "every must be finite and > 0 seconds"),
        ({"every": math.inf}, ValueError, "every must be finite and > 0 seconds"),
        ({"every": "5m"}, TypeError, "every must be a number of seconds"),
        ({"every": 1e-4}, ValueError, "every must be at least 0.001 s"),
        ({"cron": "*/5 * * *"}, ValueError, "cron expression '*/5 * * *' is not valid"),
        ({"cron": "61 * * * *"}, ValueError, "cron expression '61 * * * *' is not"),
        ({"cron": ""}, ValueError, "cron must be a cron expression"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, ValueError, "'Mars/Olympus'"),
        ({"every": 5, "tz": "Europe/Paris"}, ValueError, "tz applies to cron"),
        ({"every": 5, "max_burst": 0}, ValueError, "max_burst must be >= 1"),
        ({"every": 5, "misfire": "skip"}, TypeError, "misfire must be"),
        ({"every": 5, "payload": {"when": {1}}}, TypeError, "payload['when'] is a set"),
    ],
)
def test_bad_definitions_are_refused_naming_the_problem(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad schedule definition raises a clear error naming what is wrong."""
    with pytest.raises(error) as info:
        Schedule.create("s", "t", now=0.0, **kwargs)
    assert message in str(info.value)


async def test_queue_schedule_refuses_unknown_tasks_and_bad_payloads() -> None:
    """An unknown task or a payload the handler would refuse stores nothing."""
    queue = jobkit.Queue(jobkit.MemoryStore(), clock=lambda: 0.0)

    @queue.task()
    async def purge(days: int) -> None: ...

    with pytest.raises(ValueError, match="unknown task 'prune'; tasks registered"):
        await queue.schedule("prune", every=60)
    with pytest.raises(TypeError, match="task 'purge': missing a required argument"):
        await queue.schedule(purge, every=60)
    with pytest.raises(ValueError, match="got neither"):
        await queue.schedule(purge, {"days": 1})
    assert await queue.schedules() == []


async def test_a_store_without_schedules_is_named() -> None:
    """Scheduling on a store that lacks the schedule primitives says so."""
    queue = jobkit.Queue(WatchedStore(), clock=lambda: 0.0)

    @queue.task()
    async def ping() -> None: ...

    with pytest.raises(TypeError, match="does not keep schedules"):
        await queue.schedule(ping, every=1)


# -- workers fire them, at exact instants ----------------------------------------------


async def run_for(queue: jobkit.Queue, seconds: float, **options: Any) -> None:
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(jobkit.run_worker, queue, shutdown=token, **options)
        )
        await trio.sleep(seconds)
        token.cancel()


def make_queue(store: Any) -> tuple[jobkit.Queue, list[tuple[float, str]]]:
    queue = jobkit.Queue(store, clock=trio.current_time)
    ran: list[tuple[float, str]] = []

    @queue.task()
    async def tick() -> None:
        key = jobkit.current_job().unique_key
        assert key is not None
        ran.append((trio.current_time(), key.rsplit(":", 1)[1]))

    return queue, ran


async def jobs_by_slot(store: Any) -> list[tuple[float, float, float]]:
    """(slot, created_at, run_at) of every scheduled job, by slot."""
    jobs = await store.list(limit=None)
    rows = [
        (float(j.unique_key.rsplit(":", 1)[1]), j.created_at, j.run_at) for j in jobs
    ]
    return sorted(rows)


def on_time(*slots: float) -> list[tuple[float, float, float]]:
    return [(slot, slot, slot) for slot in slots]


# The worker runs from 0 to 25 and from the restart to 95.
OUTAGES = [
    # restart, policy, (slot, created_at, run_at) of the jobs from 30 on
    (35.0, M.BURST, [(30, 35, 30), *on_time(40, 50, 60, 70, 80, 90)]),
    (35.0, M.DELAY, [(30, 35, 30), *on_time(40, 50, 60, 70, 80, 90)]),
    (35.0, M.SKIP, [(30, 35, 30), *on_time(40, 50, 60, 70, 80, 90)]),
    (40.0, M.BURST, [(30, 40, 30), *on_time(40, 50, 60, 70, 80, 90)]),
    (40.0, M.DELAY, [(30, 40, 40), *on_time(50, 60, 70, 80, 90)]),
    (40.0, M.SKIP, on_time(40, 50, 60, 70, 80, 90)),
    (73.0, M.BURST, [(s, 73, s) for s in (30, 40, 50, 60, 70)] + on_time(80, 90)),
    (73.0, M.DELAY, [(30, 73, 73), *on_time(83, 93)]),
    (73.0, M.SKIP, [(70, 73, 70), *on_time(80, 90)]),
]


@pytest.mark.parametrize(("restart", "policy", "expected"), OUTAGES)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_workers_fire_every_slot_and_misfires_after_an_outage(
    autojump_clock: Any,
    tmp_path: Path,
    kind: str,
    restart: float,
    policy: M,
    expected: list[tuple[float, float, float]],
) -> None:
    """A worker enqueues 0, 10, 20 on time, stops at 25, and catches up by policy."""
    store: Any = (
        jobkit.MemoryStore()
        if kind == "memory"
        else jobkit.SQLiteStore(tmp_path / "j.db")
    )
    queue, ran = make_queue(store)
    await queue.schedule("tick", every=10, misfire=policy)
    await run_for(queue, 25)
    await trio.sleep(restart - 25)
    await run_for(queue, 95 - restart)
    everything = on_time(0.0, 10.0, 20.0) + [
        (float(a), float(b), float(c)) for a, b, c in expected
    ]
    assert await jobs_by_slot(store) == everything
    # Each job ran once, as soon as it was enqueued.
    assert sorted(ran) == [(created, repr(slot)) for slot, created, _ in everything]
    await store.aclose()


CRON_OUTAGES = [
    (
        M.BURST,
        [
            (900, 1950, 900),
            (1200, 1950, 1200),
            (1500, 1950, 1500),
            (1800, 1950, 1800),
            (2100, 2100, 2100),
            (2400, 2400, 2400),
        ],
    ),
    (M.SKIP, [(1800, 1950, 1800), (2100, 2100, 2100), (2400, 2400, 2400)]),
    (M.DELAY, [(900, 1950, 1950), (2400, 2400, 2400)]),
]


@pytest.mark.parametrize(("policy", "expected"), CRON_OUTAGES)
async def test_workers_fire_cron_slots_on_a_clock_at_a_known_epoch(
    autojump_clock: Any,
    policy: M,
    expected: list[tuple[float, float, float]],
) -> None:
    """A */5 cron fires at the epoch's 5-minute marks and catches up by the policy."""
    autojump_clock.jump(EPOCH)
    store = jobkit.MemoryStore()
    queue, _ = make_queue(store)
    await queue.schedule("tick", cron="*/5 * * * *", misfire=policy)
    await run_for(queue, 750)
    await trio.sleep(1200)  # down from +750 to +1950
    await run_for(queue, 2500 - 1950)
    rows = [(s - EPOCH, c - EPOCH, r - EPOCH) for s, c, r in await jobs_by_slot(store)]
    assert rows == [(0, 0, 0), (300, 300, 300), (600, 600, 600), *expected]


async def test_a_restart_keeps_the_next_slot(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A process re-declaring its schedule on start neither repeats nor skips slots."""
    path = tmp_path / "jobs.db"
    for stop in (15.0, 42.0):
        # Each "process": its own store and queue, the same declaration.
        store = jobkit.SQLiteStore(path)
        queue, _ = make_queue(store)
        declared = await queue.schedule("tick", every=10, misfire=M.BURST)
        if stop == 42.0:
            assert (declared.next_slot, declared.last_slot) == (20.0, 10.0)
        await run_for(queue, stop - trio.current_time())
        await store.aclose()
    store = jobkit.SQLiteStore(path)
    assert [row[0] for row in await jobs_by_slot(store)] == [
        0.0,
        10.0,
        20.0,
        30.0,
        40.0,
    ]
    await store.aclose()


async def test_a_schedule_declared_while_a_worker_sleeps_fires_at_once(
    autojump_clock: Any,
) -> None:
    """Queue.schedule wakes this process's idle workers: the first slot runs on time."""
    store = jobkit.MemoryStore()
    queue, ran = make_queue(store)
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(jobkit.run_worker, queue, shutdown=token, poll_interval=60)
        )
        await trio.sleep(7.25)
        await queue.schedule("tick", every=100)
        await trio.sleep(1)
        token.cancel()
    assert ran == [(7.25, "7.25")]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_two_workers_in_one_process_enqueue_each_slot_once(
    autojump_clock: Any, tmp_path: Path, kind: str
) -> None:
    """Two workers (two stores on one file, for SQLite) enqueue each slot once.

    They stop once slot 49.5 has run, not at an instant: an SQLite store
    retries a database its checkpoint thread holds with trio.sleep, which on
    the virtual clock costs virtual time in proportion to real time, so the
    slots reached by a given instant depend on the host's load. Which slots
    were enqueued, each once and none skipped, does not.
    """
    if kind == "memory":
        shared = jobkit.MemoryStore()
        stores: list[Any] = [shared, shared]
    else:
        stores = [jobkit.SQLiteStore(tmp_path / "j.db") for _ in range(2)]
    last = trio.Event()
    queues = []
    for store in stores:
        queue = jobkit.Queue(store, clock=trio.current_time)

        @queue.task()
        async def tick() -> None:
            key = jobkit.current_job().unique_key
            assert key is not None
            if float(key.rsplit(":", 1)[1]) == 49.5:
                last.set()

        await queue.schedule("tick", every=0.5, misfire=M.BURST)
        queues.append(queue)
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        for q in queues:
            worker = partial(jobkit.run_worker, q, shutdown=token, poll_interval=0.1)
            await nursery.start(worker)
        await last.wait()
        token.cancel()
    slots = [row[0] for row in await jobs_by_slot(stores[0])]
    assert len(slots) >= 100
    assert slots == [k * 0.5 for k in range(len(slots))]
    for s in set(stores):
        await s.aclose()


# -- two processes, one SQLite file ----------------------------------------------------


def race(path: Path, count: int, first: float, last: float, step: float) -> list[Any]:
    """Run ``count`` firer processes at once over the same instants; their firings."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HELPERS / "schedule_firer.py"),
                str(path),
                str(first),
                str(last),
                str(step),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # all at once, before waiting on any
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs)
    return [json.loads(out) for out in outs]


def declare(path: Path, *schedules: Schedule) -> None:
    async def main() -> None:
        async with jobkit.SQLiteStore(path) as s:
            for schedule in schedules:
                await s.put_schedule(schedule)

    trio.run(main)


@pytest.mark.slow
def test_two_processes_enqueue_each_slot_once(tmp_path: Path) -> None:
    """Two processes firing one file at the same 400 instants enqueue each slot once."""
    path = tmp_path / "jobs.db"
    declare(
        path,
        every(1.0, misfire=M.BURST),
        Schedule.create("other", "t", every=2.0, start=0.0, now=0.0, misfire=M.SKIP),
    )
    a, b = race(path, 2, 0.0, 199.5, 0.5)
    fired = sorted((name, slot) for name, slot, _ in a + b)
    assert fired == sorted(
        [("tick", float(k)) for k in range(200)]
        + [("other", 2.0 * k) for k in range(100)]
    )

    async def stored() -> list[str | None]:
        async with jobkit.SQLiteStore(path) as s:
            return [j.unique_key for j in await s.list(limit=None)]

    keys = trio.run(stored)
    assert len(keys) == 300 == len(set(keys))


@pytest.mark.slow
def test_processes_restarting_after_downtime_apply_the_misfire_policy_once(
    tmp_path: Path,
) -> None:
    """Down from 0 to 95, two processes enqueue SKIP's 90 and BURST's 0..90 once."""
    path = tmp_path / "jobs.db"
    declare(
        path,
        Schedule.create("skip", "t", every=10, start=0.0, now=0.0, misfire=M.SKIP),
        Schedule.create("burst", "t", every=10, start=0.0, now=0.0, misfire=M.BURST),
    )
    a, b = race(path, 2, 95.0, 95.0, 1.0)
    fired = sorted((name, slot) for name, slot, _ in a + b)
    assert fired == [("burst", 10.0 * k) for k in range(10)] + [("skip", 90.0)]
    assert [] in (a, b)  # one process found them all done


# -- schema version 2 -----------------------------------------------------------------


def make_version_1_file(path: Path) -> None:
    """A file as jobkit wrote it before schedules: no schedules table, version 1."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in sql.SCHEMA:
        if statement in TABLES or statement == sql.PURGED:
            continue
        if statement == sql.COUNTED or "INTO counted" in statement:
            continue
        db.execute(
            statement.replace(
                f"user_version = {sql.SCHEMA_VERSION}", "user_version = 1"
            ).replace(
                "last_seq     INTEGER,\n        retry_delay  REAL", "last_seq INTEGER"
            )
        )
    db.execute(
        "INSERT INTO jobs (task, queue, payload, state, attempts, max_attempts, "
        "priority, run_at, created_at, updated_at, event) VALUES "
        "('old', 'default', '{\"n\": 1}', 'queued', 0, 1, 0, 5.0, 5.0, 5.0, 'enqueued')"
    )
    db.close()


async def test_a_version_1_file_gains_the_schedules_table_and_keeps_its_jobs(
    tmp_path: Path,
) -> None:
    """Opening a version 1 file upgrades it in place; its jobs and events stay."""
    path = tmp_path / "jobs.db"
    make_version_1_file(path)
    async with jobkit.SQLiteStore(path) as store:
        [job] = await store.list()
        assert (job.task, job.payload, job.run_at) == ("old", {"n": 1}, 5.0)
        assert [e.kind.value for _, e in await store.events()] == ["enqueued"]
        await store.put_schedule(every())
        fired = await store.fire_schedules(now=0.0)
        assert [f.job_id for f in fired.firings] == [2]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"schedules", "schedules_next", "jobs", "events", "counts"} <= tables
    db.close()
    # Opening again finds nothing left to do.
    async with jobkit.SQLiteStore(path) as store:
        assert [s.name for s in await store.schedules()] == ["tick"]


def test_a_newer_version_is_still_refused(tmp_path: Path) -> None:
    """A version after today's is refused, unchanged, even though 1 is upgraded."""
    path = tmp_path / "jobs.db"
    trio.run(jobkit.SQLiteStore(path).aclose)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(
        jobkit.IncompatibleStore,
        match=f"version {sql.SCHEMA_VERSION + 1}, newer than version "
        f"{sql.SCHEMA_VERSION}",
    ):
        jobkit.SQLiteStore(path)


# -- the command line ----------------------------------------------------------------


def jobkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_cli_lists_schedules_as_a_table_and_as_json(tmp_path: Path) -> None:
    """`jobkit schedules` shows name, task, grid, misfire, next and last slot."""
    path = tmp_path / "jobs.db"
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    declare(
        path,
        Schedule.create(
            "cleanup", "purge", every=timedelta(hours=1), now=now, payload={"days": 30}
        ),
        Schedule.create(
            "report",
            "send_report",
            cron="0 9 * * 1-5",
            tz="Europe/Paris",
            misfire=M.BURST,
            now=now,
        ),
    )

    async def fire() -> None:
        async with jobkit.SQLiteStore(path) as s:
            await s.fire_schedules(now=now)

    trio.run(fire)
    table = jobkit_cli("schedules", "--db", str(path))
    assert table.returncode == 0, table.stderr
    header, _, *rows = table.stdout.splitlines()
    assert header.split() == [
        "name",
        "task",
        "every/cron",
        "misfire",
        "next",
        "slot",
        "last",
        "slot",
    ]
    assert rows[0].split()[:4] == ["cleanup", "purge", "every", "3600s"]
    assert "skip" in rows[0] and "burst" in rows[1]
    assert "cron 0 9 * * 1-5 (Europe/Paris)" in rows[1]
    assert rows[1].rstrip().endswith("-")  # never enqueued yet
    out = jobkit_cli("schedules", "--db", str(path), "--json")
    data = json.loads(out.stdout)
    assert [
        (d["name"], d["misfire"], d["next_slot"], d["last_slot"]) for d in data
    ] == [
        ("cleanup", "skip", now + 3600, now),
        ("report", "burst", datetime(2024, 5, 2, 7, tzinfo=UTC).timestamp(), None),
    ]
    assert data[0]["payload"] == {"days": 30} and data[1]["tz"] == "Europe/Paris"
    missing = jobkit_cli("schedules", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr


def test_cron_without_croniter_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without croniter, a cron schedule raises ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, "croniter", None)
    with pytest.raises(ImportError, match=r"pip install 'jobkit\[cron\]'"):
        Schedule.create("s", "t", cron="* * * * *", now=0.0)
    assert every().every == 10.0  # every-schedules need nothing
