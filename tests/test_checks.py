"""Argument checks shared by every store: numbers a store can keep, JSON it can hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import jobkit
from jobkit import Backoff, MemoryStore, NewJob, Queue, RetryPolicy, SQLiteStore
from jobkit.core.job import MAX_JSON_DEPTH, _check_json, check_json

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


class Text(str):
    """A str subclass: plain JSON to the full check, not to the quick one."""


# Scalars the quick path of check_json settles itself, and the ones it hands
# to the full walk: subclasses, non-ASCII text, values that are not JSON.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from(["\udcff", "é", Text("x"), (1,), {1}, b"x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.sampled_from([1, "\udcff"])),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=12,
)


def full_check(value: object) -> str | None:
    try:
        _check_json(value, "payload", MAX_JSON_DEPTH)
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@settings(max_examples=300)
@given(values)
@example((1,))
@example({"a": [(1,)]})
@example({1: "a"})
@example({"a": Text("x")})
@example({"a": float("nan")})
@example({"a": "\udcff"})
@example({"\udcff": 1})
@example({"a": nested(MAX_JSON_DEPTH)})
def test_check_json_agrees_with_the_full_walk(value: object) -> None:
    """The quick path accepts only what the full walk does, with the same words."""
    try:
        check_json(value)
    except (TypeError, ValueError) as exc:
        assert full_check(value) == f"{type(exc).__name__}: {exc}"
    else:
        assert full_check(value) is None


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
