"""Benchmark: spawning and joining trivial tasks through JoinSet against a bare nursery.

Run it with ``python tests/benchmarks/bench_joinset.py`` (about a minute).
Each run spawns 100,000 trivial tasks (``async def f(i): return i``) and
collects their values, in one ``trio.run``:

- the baseline is a bare trio nursery whose tasks append their values to a
  list: no handles, no results, no completion order, no per-task abort;
- ``JoinSet.join_all`` and a ``join_next`` loop do the same through
  :func:`jobkit.open_join_set`, dropping the handles that ``spawn`` returns,
  as a fan-out usually does;
- "handles kept" keeps every handle, so each task can be aborted alone and
  therefore runs in a cancel scope of its own; it is shown next to a bare
  nursery whose tasks each open a cancel scope too, the fair baseline for it.

Times are the process's CPU time (``time.process_time``): trio runs on one
thread, so on an idle machine that is the wall time, and on a busy one other
processes do not count against either side. Every run is a fresh
interpreter, so that no variant inherits another's heap and garbage-collector
state, and the variants take turns, round after round, so that a slow moment
of the machine hits them all. Each figure is the median over the rounds
(five for the main comparison, three for the others), and each ratio is a
rate over the bare nursery's rate from the same run.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import trio

import jobkit

TASKS = 100_000
ROUNDS = 5
TARGET = 0.7


async def trivial(i: int) -> int:
    return i


async def bare_nursery() -> list[int]:
    results: list[int] = []

    async def run(i: int) -> None:
        results.append(await trivial(i))

    async with trio.open_nursery() as nursery:
        for i in range(TASKS):
            nursery.start_soon(run, i)
    return results


async def bare_nursery_scoped() -> list[int]:
    results: list[int] = []

    async def run(i: int) -> None:
        with trio.CancelScope():
            results.append(await trivial(i))

    async with trio.open_nursery() as nursery:
        for i in range(TASKS):
            nursery.start_soon(run, i)
    return results


async def join_set_join_all() -> list[int]:
    async with jobkit.open_join_set() as js:
        for i in range(TASKS):
            js.spawn(trivial, i)
        return await js.join_all()


async def join_set_join_next() -> list[int]:
    results: list[int] = []
    async with jobkit.open_join_set() as js:
        for i in range(TASKS):
            js.spawn(trivial, i)
        while (result := await js.join_next()) is not None:
            results.append(result.unwrap())
    return results


async def join_set_handles_kept() -> list[int]:
    async with jobkit.open_join_set() as js:
        handles = [js.spawn(trivial, i) for i in range(TASKS)]
        values = await js.join_all()
    assert all(handle.done for handle in handles)
    return values


# The comparison the target is about, measured in every round...
MAIN: dict[str, Callable[[], Awaitable[list[int]]]] = {
    "bare nursery": bare_nursery,
    "JoinSet.join_all": join_set_join_all,
}
# ...and the other ways to use a JoinSet, measured in the first EXTRA_ROUNDS
# rounds only, to keep the whole run under a minute.
EXTRA: dict[str, Callable[[], Awaitable[list[int]]]] = {
    "JoinSet.join_next loop": join_set_join_next,
    "bare nursery + cancel scopes": bare_nursery_scoped,
    "JoinSet, handles kept": join_set_handles_kept,
}
EXTRA_ROUNDS = 3


def once(name: str) -> float:
    """Run one variant in a fresh interpreter and return its CPU time.

    A fresh process per run keeps the variants from inheriting each other's
    heap and garbage-collector state, which skews in-process comparisons.
    """
    out = subprocess.run(
        [sys.executable, __file__, "--one", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out)


def run_one(name: str) -> None:
    fn = {**MAIN, **EXTRA}[name]
    gc.collect()
    start = time.process_time()
    values = trio.run(fn)
    elapsed = time.process_time() - start
    if sorted(values) != list(range(TASKS)):
        raise AssertionError(f"{name} lost or duplicated results")
    print(elapsed)


def main() -> int:
    times: dict[str, list[float]] = {name: [] for name in {**MAIN, **EXTRA}}
    for round_ in range(ROUNDS):
        variants = {**MAIN, **EXTRA} if round_ < EXTRA_ROUNDS else MAIN
        for name in variants:
            times[name].append(once(name))
    rates = {name: TASKS / statistics.median(t) for name, t in times.items()}
    base = rates["bare nursery"]
    print(f"{TASKS:,} trivial tasks per run; CPU time, median over rounds")
    print(f"{'':32} {'runs':>4} {'tasks/s':>10} {'vs bare':>8}")
    for name, rate in rates.items():
        runs = len(times[name])
        print(f"{name:32} {runs:>4} {rate:>10,.0f} {rate / base:>8.2f}")
    ratio = rates["JoinSet.join_all"] / base
    print(f"JoinSet.join_all / bare nursery = {ratio:.2f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        run_one(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
