"""Every store agrees with a small model of the queue, step by step.

The model test ships in :mod:`jobkit.testing.store_model`, so that a store
written outside jobkit runs it too; here it runs on every store of
:data:`tests.helpers.stores.STORES`.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from jobkit.testing.store_model import run_store_model
from tests.helpers.stores import REMOTE, STORES, dispose, require, store_params

pytest_plugins = ["pytester"]


@pytest.mark.timeout(600)  # a server round trip per step adds up on a busy host
@pytest.mark.parametrize("name", store_params(slow_remote=True))
def test_stores_agree_with_a_model_of_the_queue(name: str) -> None:
    """Each store and the model agree after every step of random runs."""
    require(name)
    # A remote store pays a schema per example: fewer examples keep the run
    # within minutes, and the local stores still try the profile's number.
    examples = settings().max_examples
    if name in REMOTE:
        examples = min(examples, 40)
    run_store_model(STORES[name], dispose=dispose, max_examples=examples)


# A project of its own, outside jobkit's tests and their settings: a store
# that only delegates to MemoryStore, and the lines the module shows.
THIRD_PARTY = """
from jobkit.store import MemoryStore
from jobkit.testing.store_model import run_store_model


class WrappedStore:
    def __init__(self):
        self._inner = MemoryStore()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_my_store_agrees_with_the_model():
    run_store_model(lambda directory: WrappedStore(), max_examples=5)
"""


def test_a_store_of_another_project_runs_the_model_test(
    pytester: pytest.Pytester,
) -> None:
    """One call, with a function that opens a store, runs the model test."""
    pytester.makepyfile(test_wrapped_store=THIRD_PARTY)
    run = pytester.runpytest("-p", "no:cacheprovider")
    run.assert_outcomes(passed=1)
