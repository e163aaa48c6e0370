"""The main job, ``jobkit demo``, runs from start to end and tells its story."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_runs_and_reports_each_part() -> None:
    """The demo exits 0 and prints the queue's outcome, the runtime and the storm."""
    done = subprocess.run(
        [sys.executable, "-m", "jobkit", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "41 succeeded, 1 dead" in out
    assert "'charge' needed 3 attempts and returned 'charged acme'" in out
    assert "SKIP ticks after a 12 s overrun: [4.0, 9.0, 14.0, 24.0]" in out
    assert "created at t=4 s" in out
    assert out.count(" jitter:") == 4
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_demo_shows_each_jobs_own_history_and_leaves_its_database() -> None:
    """Each history printed is the named job's; the commands printed at the end work."""
    done = subprocess.run(
        [sys.executable, "-m", "jobkit", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    dead_part = out[out.index("dead letter: job 42") : out.index("== The structured")]
    assert "attempt 1: dead  (Permanent: no data for 2026-10)" in dead_part
    assert "gateway timeout" not in dead_part
    commands = [
        shlex.split(line.split("#")[0])
        for line in out.splitlines()
        if line.strip().startswith("jobkit ")
    ]
    assert [c[1] for c in commands] == ["stats", "jobs", "dead", "show", "metrics"]
    db = Path(commands[0][-1])
    try:
        assert db.exists()
        for command in commands:
            ran = subprocess.run(
                [sys.executable, "-m", *command],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert ran.returncode == 0, (command, ran.stderr)
        dead = subprocess.run(
            [sys.executable, "-m", "jobkit", "dead", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "render_report" in dead.stdout
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)
