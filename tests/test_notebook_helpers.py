"""``jobkit.notebook.run_cli``: a command run in process answers as its process does."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.notebook import run_cli

APP = textwrap.dedent(
    """
    import jobkit

    queue = jobkit.Queue()

    @queue.task()
    async def add(a: int, b: int) -> int:
        return a + b
    """
)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An application module in ``tmp_path``, its name unique to the test."""
    name = f"nbapp_{abs(hash(tmp_path))}"
    (tmp_path / f"{name}.py").write_text(APP, encoding="utf-8")
    # An in-process --app puts the folder on sys.path and imports the module.
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield f"{name}:queue"
    sys.modules.pop(name, None)


def answer(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_in_process_answers_as_the_process_does(tmp_path: Path, app: str) -> None:
    """Output, error output and exit status are the same, command by command."""
    db = tmp_path / "jobs.db"
    for payload in ('{"a": 1, "b": 2}', '{"a": 3, "b": 4}'):
        enqueued = run_cli(
            "enqueue", "add", payload, "--app", app, db=db, cwd=tmp_path, show=False
        )
        assert enqueued.returncode == 0, enqueued.stderr
    commands = [
        ("jobs",),
        ("jobs", "--json"),
        ("show", "1"),
        ("stats",),
        ("dead",),
        ("wait", "2", "--timeout", "0"),  # still queued: 124
        ("show", "99"),  # no such job: 1
        ("jobs", "--no-such-option"),  # a usage error: 2
        ("enqueue", "add", '{"a": 1}', "--app", app),  # refused by the signature
        ("--help",),
    ]
    for args in commands:
        process = run_cli(*args, db=db, cwd=tmp_path, show=False)
        here = run_cli(*args, db=db, cwd=tmp_path, show=False, in_process=True)
        assert answer(here) == answer(process), args
        assert here.args == ["jobkit", *args]
    assert {run_cli(*a, db=db, show=False).returncode for a in commands[5:8]} == {
        124,
        1,
        2,
    }


def test_in_process_prints_what_the_command_says(
    tmp_path: Path, app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line after a ``$``, then its output, without the folder of ``db``."""
    db = tmp_path / "jobs.db"
    done = run_cli(
        "enqueue",
        "add",
        '{"a": 1, "b": 2}',
        "--app",
        app,
        db=db,
        cwd=tmp_path,
        in_process=True,
    )
    assert done.returncode == 0
    run_cli("show", "7", db=db, in_process=True)
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        f'$ jobkit enqueue add {{"a": 1, "b": 2}} --app {app}',
        "enqueued job 1",
        "",
        "$ jobkit show 7",
        "jobkit: error: no job with id 7",
        "",
    ]
    assert printed.err == ""
    assert str(tmp_path) not in printed.out


def test_in_process_leaves_environment_and_folder_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOBKIT_DB and the current folder are the command's only while it runs."""
    monkeypatch.delenv("JOBKIT_DB", raising=False)
    here = os.getcwd()
    done = run_cli(
        "stats", db=tmp_path / "none.db", cwd=tmp_path, show=False, in_process=True
    )
    assert done.returncode == 1
    assert "none.db" in done.stderr  # it read JOBKIT_DB
    assert "JOBKIT_DB" not in os.environ
    assert os.getcwd() == here
    monkeypatch.setenv("JOBKIT_DB", "elsewhere.db")
    run_cli("stats", db=tmp_path / "none.db", show=False, in_process=True)
    assert os.environ["JOBKIT_DB"] == "elsewhere.db"


def test_commands_run_in_process_many_times_quiet_the_pool_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each one-shot command quiets PostgreSQL's pool log; the handler is added once."""
    pool_log = logging.getLogger("psycopg.pool")
    monkeypatch.setattr(pool_log, "handlers", [])
    monkeypatch.setattr(pool_log, "propagate", True)
    for _ in range(3):
        run_cli("stats", db=tmp_path / "none.db", show=False, in_process=True)
    assert [type(h) for h in pool_log.handlers] == [logging.NullHandler]
    assert pool_log.propagate is False
