"""MemoryStore: its private copies of payloads and results equal a JSON round trip,
and its claims follow claim order.
"""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from jobkit.core import job as _job
from jobkit.core.job import (
    Job,
    JobState,
    NewJob,
    Success,
    claim_order,
    create,
    dump_json,
)
from jobkit.store.memory import MemoryStore, _copy, _Lane


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


def _round_trip(value: Any) -> Any:
    return json.loads(dump_json(value, "payload"))


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),  # NaN and infinities included: both must refuse them
    st.text(),
    st.sampled_from([Level.LOW, Name("ada"), -0.0, 1 << 64, (1, 2), frozenset()]),
    # Too many digits for json; built lazily, since its repr fails too.
    st.builds(pow, st.just(10), st.just(5000)),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.dictionaries(st.integers(), inner, min_size=1, max_size=2),
        st.dictionaries(st.text(max_size=3), inner, max_size=2).map(OrderedDict),
    ),
    max_leaves=12,
)


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", fn(value)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


@given(_values)
def test_copy_is_exactly_a_json_round_trip(value: Any) -> None:
    """Any value is copied to what JSON gives back, or refused with the same error."""
    kind, copied = _outcome(_copy, value)
    expected_kind, expected = _outcome(_round_trip, value)
    assert kind == expected_kind
    if kind != "value":
        assert copied == expected  # the same message
        return
    # repr tells -0.0 from 0.0 and 1 from True, which == does not.
    assert repr(copied) == repr(expected)
    assert type(copied) is type(expected)


def test_copy_shares_nothing_with_the_original() -> None:
    """Nested dicts and lists are new objects; mutating the original leaves the copy."""
    original = {"items": [1, {"a": [2.5, None]}], "name": "x"}
    copied = _copy(original)
    original["items"][1]["a"].append(3)  # type: ignore[index]
    assert copied == {"items": [1, {"a": [2.5, None]}], "name": "x"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Level.LOW, 1), (Name("ada"), "ada"), (OrderedDict(a=1), {"a": 1})],
)
def test_subclasses_come_back_as_plain_json_types(value: Any, expected: Any) -> None:
    """Subclasses of int, str and dict are stored as the plain types, as JSON would."""
    copied = _copy(value)
    assert copied == expected and type(copied) is type(expected)


@pytest.mark.parametrize(
    "make",
    [lambda: 10**5000, lambda: [math.inf], lambda: {"a": {1: 2}}, lambda: [(1, 2)]],
    ids=["huge int", "infinity", "int key", "tuple"],
)
def test_what_json_refuses_is_refused_with_the_same_error(make: Any) -> None:
    """What a serializing store cannot hold raises exactly what the round trip does."""
    value = make()
    assert _outcome(_copy, value)[0] != "value"
    assert _outcome(_copy, value) == _outcome(_round_trip, value)


def test_bad_values_are_named_where_they_are() -> None:
    """A value JSON cannot hold is refused with its place in the payload."""
    with pytest.raises(TypeError, match=r"payload\['a'\]\[1\] is nan"):
        _copy({"a": [1, math.nan]})


_arrivals = st.lists(
    st.tuples(
        st.sampled_from([0, 5, -3]),  # priority
        st.sampled_from([0.0, 1.0, 2.0, 3.0, 9.0]),  # run_at
        st.sampled_from(["a", "b"]),  # task
    ),
    min_size=1,
    max_size=20,
)


@given(
    batches=st.lists(_arrivals, min_size=1, max_size=3), now=st.sampled_from([2.0, 9.0])
)
def test_claims_follow_claim_order_whatever_order_jobs_arrive_in(
    batches: list[list[tuple[int, float, str]]], now: float
) -> None:
    """Jobs enqueued out of order, in batches between claims, still come in claim order.

    In order, a lane keeps its jobs in a deque; out of order, in a heap: a
    claim takes the first of the two, and skips the tasks it does not want.
    """

    async def main() -> None:
        store = MemoryStore()
        waiting: list[Job] = []
        for batch in batches:
            specs = [NewJob(task=t, priority=p, run_at=r) for p, r, t in batch]
            ids = await store.enqueue(specs, now=0.0)
            waiting += [await store.get(i) for i in ids]
            # One job of task "a" per claim, then whatever is due of any task.
            [first] = await store.claim(
                queues=None, limit=1, now=now, lease=1.0, tasks=["a"]
            ) or [None]
            due = sorted(
                (j for j in waiting if j.run_at <= now and j.task == "a"),
                key=claim_order,
            )
            assert (first and first.id) == (due[0].id if due else None)
            waiting = [j for j in waiting if first is None or j.id != first.id]
        rest = await store.claim(queues=None, limit=100, now=now, lease=1.0)
        due = sorted((j for j in waiting if j.run_at <= now), key=claim_order)
        assert [j.id for j in rest] == [j.id for j in due]
        expected = min((j.run_at for j in waiting if j.run_at > now), default=None)
        assert await store.next_run_at(queues=None) == expected

    trio.run(main)


@settings(max_examples=300)
@given(
    entries=st.lists(
        st.tuples(st.sampled_from([0.0, 1.0, 2.5, 7.0]), st.integers(1, 12)),
        max_size=20,
        unique=True,
    ),
    accepted=st.frozensets(st.integers(1, 12)),
)
def test_first_where_is_the_first_accepted_entry_in_claim_order(
    entries: list[tuple[float, int]], accepted: frozenset[int]
) -> None:
    """A lane's first accepted entry, whether it sits in the deque or the heap."""
    lane = _Lane()
    for entry in entries:
        lane.push(entry)
    expected = min((e for e in entries if e[1] in accepted), default=None)
    assert lane.first_where(lambda e: e[1] in accepted) == expected


def test_first_where_walks_the_heap_smallest_first() -> None:
    """Down the heap's tree, entries come smallest first, in whichever subtree."""
    lane = _Lane()
    lane.heap = [(1.0, 1), (5.0, 5), (2.0, 2), (6.0, 6), (7.0, 7), (3.0, 3), (4.0, 4)]
    assert lane.first_where(lambda e: e[1] in (3, 6)) == (3.0, 3)
    assert lane.first_where(lambda e: e[1] in (5, 4)) == (4.0, 4)


def test_first_where_looks_only_as_far_as_the_entry_it_finds() -> None:
    """Finding the first entry of a long lane asks about a handful of entries."""
    lane = _Lane()
    lane.push((20_000.0, 1))  # in the deque
    for i in range(10_000, 0, -1):  # out of order: all in the heap
        lane.push((float(i), i))
    asked: list[tuple[float, int]] = []

    def ok(entry: tuple[float, int]) -> bool:
        asked.append(entry)
        return entry[1] % 2 == 0

    assert lane.first_where(ok) == (2.0, 2)
    assert sorted(asked) == [(1.0, 1), (2.0, 2), (20_000.0, 1)]


def test_made_jobs_and_successes_are_the_frozen_records_themselves() -> None:
    """What claims and settles make by position is a Job (a Success) like any."""
    job, _ = create(NewJob(task="t", payload={"a": 1}), job_id=3, now=1.0)
    made = _job._make_job(*(getattr(job, f.name) for f in attrs.fields(Job)))
    assert type(made) is Job and made == job and repr(made) == repr(job)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.id = 4  # type: ignore[misc]
    started = _job._started(job, 2.0, 30.0, 4)
    assert started == attrs.evolve(
        job,
        state=JobState.RUNNING,
        attempts=1,
        max_attempts=1,  # the job's own, not the claimer's
        updated_at=2.0,
        lease_until=32.0,
    )
    success = _job._make_success(3, 1, {"ok": True})
    assert type(success) is Success and success == Success(3, 1, {"ok": True})
    assert _job.settle(started, success, now=5.0)[0] == attrs.evolve(
        started,
        state=JobState.SUCCEEDED,
        result={"ok": True},
        lease_until=None,
        updated_at=5.0,
    )
