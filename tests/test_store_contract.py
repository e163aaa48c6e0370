"""The store contract, run on every store of :data:`tests.helpers.stores.STORES`.

The tests themselves ship in :mod:`jobkit.testing.store_contract`, so that a
store written outside jobkit runs the same suite; to put a new store of
jobkit's under the contract, add one line to ``STORES``. Every store of
jobkit's keeps schedules, so each runs the schedule part too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobkit import Store
from jobkit.testing.store_contract import ScheduleStoreContract, StoreContract
from tests.helpers.stores import STORES, dispose, store_params

pytest_plugins = ["pytester"]


class TestStoreContract(StoreContract, ScheduleStoreContract):
    @pytest.fixture(params=store_params())
    async def store(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[Store]:
        made = STORES[request.param](tmp_path)
        try:
            yield made
        finally:
            await dispose(made)


# A project of its own, outside jobkit's tests and their settings: a store
# that only delegates to MemoryStore, and the few lines the module shows.
THIRD_PARTY = """
import pytest

from jobkit.store import MemoryStore
from jobkit.testing.store_contract import StoreContract


class WrappedStore:
    def __init__(self):
        self._inner = MemoryStore()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class TestWrappedStore(StoreContract):
    @pytest.fixture
    async def store(self):
        store = WrappedStore()
        yield store
        await store.aclose()
"""


def test_a_store_of_another_project_runs_the_whole_suite(
    pytester: pytest.Pytester,
) -> None:
    """Subclassing StoreContract with a ``store`` fixture runs every test, and
    they pass for a store that is correct."""
    pytester.makepyfile(test_wrapped_store=THIRD_PARTY)
    run = pytester.inline_run("-p", "no:cacheprovider")
    passed, skipped, failed = run.listoutcomes()
    assert (skipped, failed) == ([], [])
    ran = {report.nodeid.split("::")[-1].partition("[")[0] for report in passed}
    assert ran == {name for name in vars(StoreContract) if name.startswith("test_")}


def test_a_subclass_without_a_store_fixture_is_told_what_is_missing(
    pytester: pytest.Pytester,
) -> None:
    """Forgetting the fixture fails each test with a message saying what to add."""
    pytester.makepyfile(
        "from jobkit.testing.store_contract import StoreContract\n"
        "class TestNothing(StoreContract):\n"
        "    pass\n"
    )
    run = pytester.runpytest("-p", "no:cacheprovider", "-x")
    run.stdout.fnmatch_lines(["*TestNothing must define a `store` fixture*"])


def test_jobkit_and_jobkit_testing_import_without_the_test_tools() -> None:
    """pytest and hypothesis are in the ``test`` extra: only the suite needs them."""
    code = (
        "import sys\n"
        "sys.modules.update(pytest=None, hypothesis=None)  # as if not installed\n"
        "import jobkit, jobkit.store, jobkit.testing\n"
        "for suite in ('store_contract', 'store_model'):\n"
        "    try:\n"
        "        __import__(f'jobkit.testing.{suite}')\n"
        "    except ImportError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError(f'{suite} imported without the test tools')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
