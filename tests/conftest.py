from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers.stores import postgres_problem

# "dev" keeps the edit-test loop quick; "ci" tries more examples, derandomized
# so that a failure seen in CI reproduces from the same run.
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# Without a PostgreSQL server the tests that need one are left out, and one
# line says so and how to run them; under $CI they run, and fail.
def _postgres_note() -> str | None:
    problem = postgres_problem()
    if problem is None or os.environ.get("CI"):
        return None
    return (
        f"PostgreSQL tests not run: {problem}; to run them, start a server "
        "there or set JOBKIT_TEST_POSTGRES_URL=postgresql://user@host:port/db"
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    marked = [item for item in items if item.get_closest_marker("postgres")]
    if not marked or _postgres_note() is None:
        return
    items[:] = [item for item in items if not item.get_closest_marker("postgres")]
    config.hook.pytest_deselected(items=marked)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    note = _postgres_note()
    if note is not None:
        terminalreporter.write_line(note)
