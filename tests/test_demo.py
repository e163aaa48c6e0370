"""The main job, ``jobkit demo``, runs from start to end and tells its story."""

from __future__ import annotations

import subprocess
import sys

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
    assert out.count(" jitter:") == 4
    assert "Traceback" not in done.stderr
