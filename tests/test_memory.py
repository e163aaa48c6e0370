"""MemoryStore's private copies of payloads and results equal a JSON round trip."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobkit.core.job import dump_json
from jobkit.store.memory import _copy


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
