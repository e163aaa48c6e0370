"""Argument checks shared by every store: numbers a store can keep, JSON it can hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jobkit
from jobkit import Backoff, MemoryStore, NewJob, Queue, RetryPolicy, SQLiteStore
from jobkit._job import MAX_JSON_DEPTH, check_json

DEEP = "payload is nested deeper than 100 levels of lists and objects"
SURROGATE = "a lone surrogate that UTF-8 cannot encode"
INT64 = "must fit in a signed 64-bit integer"


def nested(levels: int) -> list[object]:
    """A list holding a list ... ``levels`` lists in all."""
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[jobkit.Store]:
    if request.param == "memory":
        made: jobkit.Store = MemoryStore()
    else:
        made = SQLiteStore(tmp_path / "jobs.db")
    try:
        yield made
    finally:
        await made.aclose()


def test_check_json_accepts_the_deepest_payload_allowed() -> None:
    """The payload object is the first level, so it may hold 99 more."""
    check_json({"a": nested(MAX_JSON_DEPTH - 1)})
    with pytest.raises(ValueError, match=DEEP):
        check_json({"a": nested(MAX_JSON_DEPTH)})


async def test_a_payload_nested_a_thousand_deep_is_refused_by_name(
    store: jobkit.Store,
) -> None:
    """Not a bare RecursionError from deep inside the check or the store."""
    queue = Queue(store)

    @queue.task()
    async def walk(tree: object) -> None: ...

    with pytest.raises(ValueError, match=DEEP):
        await walk.enqueue(tree=nested(1000))
    with pytest.raises(ValueError, match=DEEP):
        await store.enqueue([NewJob(task="walk", payload={"t": nested(5000)})], now=0)
    assert await store.list() == []


async def test_a_lone_surrogate_in_a_payload_is_refused_with_its_path(
    store: jobkit.Store,
) -> None:
    """A file name decoded with os.fsdecode is a str that no store can keep."""
    queue = Queue(store)
    queue.task("upload")(lambda **files: None)
    odd = b"report-\xff.csv".decode("utf-8", "surrogateescape")
    with pytest.raises(
        TypeError, match=rf"payload\['files'\]\[1\] holds .*{SURROGATE}"
    ):
        await queue.enqueue("upload", {"files": ["a.csv", odd]})
    with pytest.raises(TypeError, match=rf"payload key .*{SURROGATE}"):
        await queue.enqueue("upload", {odd: 1})
    assert await store.list() == []


@pytest.mark.parametrize("field", ["priority", "max_attempts"])
@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**20])
async def test_numbers_beyond_64_bits_are_refused_by_name(
    store: jobkit.Store, field: str, value: int
) -> None:
    """Not SQLite's raw OverflowError: the error names the argument."""
    queue = Queue(store)

    @queue.task()
    async def ping() -> None: ...

    with pytest.raises(ValueError, match=f"{field} (must|{INT64})"):
        await queue.enqueue("ping", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"{field} (must|{INT64})"):
        await ping.options(**{field: value}).enqueue()  # type: ignore[arg-type]
    if value > 0:
        # Straight to the store, past the queue: every store checks too.
        with pytest.raises(ValueError, match=f"{field} {INT64}"):
            await store.enqueue([NewJob(task="ping", **{field: value})], now=0)
    assert await store.list() == []


async def test_the_64_bit_limits_themselves_are_kept(store: jobkit.Store) -> None:
    """The check refuses exactly what a store cannot hold."""
    queue = Queue(store)
    queue.task("t")(lambda: None)
    low = await queue.enqueue("t", priority=-(2**63), max_attempts=2**63 - 1)
    high = await queue.enqueue("t", priority=2**63 - 1)
    assert (await queue.get(low)).priority == -(2**63)
    assert (await queue.get(low)).max_attempts == 2**63 - 1
    assert (await queue.get(high)).priority == 2**63 - 1


def test_task_defaults_beyond_64_bits_are_refused_when_declared() -> None:
    """A task's default priority and retry policy are checked where they are set."""
    queue = Queue()
    with pytest.raises(ValueError, match=f"priority {INT64}"):
        queue.task(priority=2**63)
    with pytest.raises(ValueError, match=f"max_attempts {INT64}"):
        RetryPolicy(2**63, Backoff.constant(1))
