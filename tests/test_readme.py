"""The README's user example and its command lines, run exactly as written."""

from __future__ import annotations

import contextlib
import os
import queue as stdlib_queue
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from jobkit import NewJob, SQLiteStore

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = 60.0
"""Seconds any one process may take before the test fails."""


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``, in order."""
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def user_example() -> str:
    [example] = [code for code in blocks("python") if "jobkit.Queue(" in code]
    return example


def command_lines() -> list[list[str]]:
    """The ``jobkit`` and ``export`` lines of the shell block that serves the
    user example."""
    [block] = [code for code in blocks("bash") if "myapp.jobs:queue" in code]
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert all(line[0] in ("jobkit", "export") for line in lines if line), block
    return [line for line in lines if line]


def jobkit_command(words: list[str]) -> list[str]:
    """``jobkit ...`` through the console script installed beside this Python."""
    script = Path(sys.executable).with_name("jobkit")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "jobkit"]
    return head + words[1:]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "JOBKIT_DB": "", "JOBKIT_APP": ""}


def states(db: Path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT id, state FROM jobs ORDER BY id").fetchall())


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A directory holding the user example saved as myapp/jobs.py."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "jobs.py").write_text(user_example(), encoding="utf-8")
    return tmp_path


class Process:
    """A process whose stderr lines are read as they come, to wait for one."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env(), stderr=subprocess.PIPE, text=True
        )
        self.lines: stdlib_queue.Queue[str | None] = stdlib_queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, wanted: str) -> None:
        """Return once a line of stderr contains ``wanted``."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except stdlib_queue.Empty:
                self.proc.kill()
                raise AssertionError(
                    f"{self.argv} did not log {wanted!r} in {WAIT}s: {self.seen}"
                ) from None
            if line is None:
                raise AssertionError(f"{self.argv} ended early: {self.seen}")
            self.seen.append(line)
            if wanted in line:
                return

    def stop(self, how: signal.Signals) -> str:
        """Signal the process, expect exit status 0, return the rest of stderr."""
        self.proc.send_signal(how)
        try:
            self.proc.wait(timeout=WAIT)
        finally:
            self.proc.kill()
        self.reader.join(WAIT)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        assert self.proc.returncode == 0, (self.seen, rest)
        return "".join(rest)


def test_the_user_example_runs_as_a_script_and_logs_its_job(app: Path) -> None:
    """``python myapp/jobs.py`` enqueues, runs and logs its job, and stops on SIGINT."""
    proc = Process([sys.executable, "myapp/jobs.py"], app)
    proc.wait_for("job 1 (send_welcome on default) succeeded on attempt 1/5")
    rest = proc.stop(signal.SIGINT)
    assert "worker stopped" in rest
    assert states(app / "jobs.db") == {1: "succeeded"}


def test_the_command_lines_serve_the_user_example(app: Path) -> None:
    """Every command line of the README, against the example's own database."""
    db = app / "jobs.db"

    async def enqueue() -> None:
        # Jobs 1 to 42, so that the lines naming job 42 have it to work on.
        async with SQLiteStore(db) as store:
            jobs = [
                NewJob(task="send_welcome", payload={"user_id": i}, max_attempts=5)
                for i in range(1, 43)
            ]
            await store.enqueue(jobs, now=0.0)

    trio.run(enqueue)
    lines = command_lines()
    endless, *rest = lines
    assert "--until-empty" not in endless
    # The first line serves until stopped: it must run the jobs, then stop
    # on SIGTERM; the example module must not run its own worker on import.
    proc = Process(jobkit_command(endless), app)
    proc.wait_for("worker started")
    # --until-empty on the same file ends once the two workers have done all.
    batch = rest[0]
    assert "--until-empty" in batch
    done = subprocess.run(
        jobkit_command(batch),
        cwd=app,
        env=env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    proc.stop(signal.SIGTERM)
    assert set(states(db).values()) == {"succeeded"}
    exported = env()
    for words in rest[1:]:
        if words[0] == "export":
            exported.update(word.split("=", 1) for word in words[1:])
            continue
        result = subprocess.run(
            jobkit_command(words),
            cwd=app,
            env=exported,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert result.returncode == 0, (words, result.stderr)
        assert "Traceback" not in result.stderr
    # purge --older-than 7d kept the fresh jobs; job 43 was cancelled.
    assert len(states(db)) == 43 and states(db)[43] == "cancelled"
