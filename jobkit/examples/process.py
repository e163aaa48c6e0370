"""Run the example web app as a child process and talk to it, as a deployment would.

Chapter 4 of the book starts :mod:`jobkit.examples.webapp` as a real
process, sends it real HTTP requests and stops it with a real signal. These
helpers hold that plumbing:

- :func:`app_process` starts the app with ``--port 0``, waits until
  ``GET /health`` answers, and kills the process on the way out whatever
  happened in between;
- :func:`wait_for_state` polls ``GET /jobs/{id}`` until a job is in one of
  the states asked for;
- :func:`stop` sends SIGTERM and waits for the exit status.

They need the ``web`` extra (httpx): ``pip install 'jobkit[web]'``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["app_process", "stop", "wait_for_state"]


def _first_line(
    out: Path, proc: subprocess.Popen[bytes], log: Path, deadline: float
) -> str:
    # The app prints its URL as the only line on stdout once it listens.
    while True:
        lines = out.read_text().splitlines()
        if lines:
            return lines[0]
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the app did not start:\n{log.read_text()}")
        time.sleep(0.02)


@contextmanager
def app_process(
    workdir: str | Path, name: str, *options: str, timeout: float = 20
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """Start the example app with ``options``; yield ``(process, url, log path)``.

    stdout and stderr go to ``NAME.out`` and ``NAME.log`` in ``workdir``
    (the app's JSON log lines are on stderr). The block is entered once
    ``GET /health`` answers 200; leaving it kills the process if it is still
    running, so a failed cell never leaves a server behind.

    Example::

        >>> from jobkit.examples.process import app_process
        >>> app_process.__name__
        'app_process'
    """
    import httpx

    workdir = Path(workdir)
    out, log = workdir / f"{name}.out", workdir / f"{name}.log"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobkit.examples.webapp", *options],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + timeout
        url = _first_line(out, proc, log, deadline)
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not answer /health in time")
            time.sleep(0.02)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_state(
    client: Any, job_id: int, *states: str, timeout: float = 20
) -> dict[str, Any]:
    """Poll ``GET /jobs/{job_id}`` with ``client`` until its state is in ``states``.

    Returns the job as the app shows it; after ``timeout`` seconds it
    returns the job as it is then, whatever its state.

    Example::

        >>> from jobkit.examples.process import wait_for_state
        >>> class Answer:
        ...     def json(self):
        ...         return {"state": "succeeded"}
        >>> class Client:  # answers like the app's GET /jobs/{id}
        ...     def get(self, path):
        ...         return Answer()
        >>> wait_for_state(Client(), 1, "succeeded")
        {'state': 'succeeded'}
    """
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Do what a deployment does: send SIGTERM, then wait for the exit status.

    Example::

        >>> import subprocess, sys
        >>> from jobkit.examples.process import stop
        >>> nap = "import time; time.sleep(60)"
        >>> child = subprocess.Popen([sys.executable, "-c", nap])
        >>> stop(child) != 0
        True
    """
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)
