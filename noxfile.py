"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``notebooks``,
``chapters``, ``demo`` and ``bench``."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
# The tests session lints and type-checks first: one command checks everything.
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Jupyter warns about its own path migration unless told which layout to use;
# pytest turns warnings into errors, so settle it here once.
ENV = {"JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}

# croniter and tqdm ship no type information of their own.
TYPING = ["mypy", "types-croniter", "types-tqdm"]


def _lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Lint and type-check (seconds), then run the whole suite, notebooks included."""
    session.install("-e", ".[test]", "ruff", *TYPING)
    _lint(session)
    session.run("mypy")
    env = dict(ENV)
    if os.environ.get("CI"):
        env["HYPOTHESIS_PROFILE"] = "ci"
    # One process per core: the notebooks and real-process tests dominate,
    # and they spread well over the cores.
    args = session.posargs or ["-n", "auto"]
    session.run("pytest", *args, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    _lint(session)


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package with mypy in strict mode."""
    session.install("-e", ".[test]", *TYPING)
    session.run("mypy")


@nox.session
def notebooks(session: nox.Session) -> None:
    """Execute every notebook in a fresh kernel."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_notebooks.py", *session.posargs, env=ENV)


@nox.session
def chapters(session: nox.Session) -> None:
    """Execute every notebook and render it, with its figures, into chapters/."""
    session.install("-e", ".[notebooks]")
    session.run("python", "tests/helpers/book.py", "render", *session.posargs, env=ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a short tour of jobkit at work."""
    session.install("-e", ".")
    session.run("python", "-m", "jobkit", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print rates and ratios against a baseline from the same run."""
    # Peers only this session needs: the dashboard's benchmark serves it over
    # HTTP, the PostgreSQL ones measure against procrastinate, and
    # bench_peers.py against huey, persist-queue and litequeue.
    session.install(
        "-e",
        ".[web,postgres]",
        "procrastinate",
        "huey",
        "persist-queue",
        "litequeue",
    )
    for script in sorted(os.listdir("tests/benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"tests/benchmarks/{script}", *session.posargs)
