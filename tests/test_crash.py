"""Real processes on one SQLite file: kill -9, several workers at once, and a restart.

Each test waits on what it can observe (a state in the database, a file, a
process exit), each wait bounded by a deadline; nothing sleeps for a guessed
time.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import trio

import jobkit

APP = Path(__file__).parent / "helpers" / "worker_app.py"

pytestmark = pytest.mark.slow


class Execution(NamedTuple):
    kind: str
    job_id: int
    attempt: int
    pid: int
    at: float


class Env:
    """One test's database, execution logs and processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = str(root / "jobs.db")
        self.logs = root / "executions"
        self.logs.mkdir()
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.root / f"{name}.out").open("wb")
        err = (self.root / f"{name}.err").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(APP), *args], stdout=out, stderr=err
        )
        out.close()
        err.close()
        self.procs.append((name, proc))
        return proc

    def enqueue(self, count: int, seconds: float) -> list[int]:
        proc = self.spawn(
            "producer",
            "enqueue",
            self.db,
            "--count",
            str(count),
            "--seconds",
            str(seconds),
        )
        assert proc.wait(timeout=30) == 0, self.stderr("producer")
        return [int(i) for i in (self.root / "producer.out").read_text().split()]

    def worker(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        return self.spawn(name, "work", self.db, "--log-dir", str(self.logs), *options)

    def stderr(self, name: str) -> str:
        return (self.root / f"{name}.err").read_text()

    def states(self) -> dict[int, tuple[str, int]]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            rows = conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
        conn.close()
        return {job_id: (state, attempts) for job_id, state, attempts in rows}

    def executions(self) -> list[Execution]:
        found = []
        for path in self.logs.glob("exec-*.log"):
            for line in path.read_text().splitlines():
                kind, job_id, attempt, pid, at = line.split()
                found.append(
                    Execution(kind, int(job_id), int(attempt), int(pid), float(at))
                )
        return found

    def close(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path)
    yield environment
    environment.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def count(states: dict[int, tuple[str, int]], state: str) -> int:
    return sum(1 for s, _ in states.values() if s == state)


def assert_clean(env: Env, *names: str) -> None:
    for name in names:
        text = env.stderr(name)
        assert "locked" not in text, text
        assert "Traceback" not in text, text
        assert "ERROR" not in text, text


def assert_no_overlap(executions: list[Execution]) -> None:
    """No job ever ran in two places at once: its executions follow one another."""
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    starts = {
        (e.job_id, e.attempt, e.pid): e.at for e in executions if e.kind == "start"
    }
    for e in executions:
        if e.kind == "end":
            spans[e.job_id].append((starts[(e.job_id, e.attempt, e.pid)], e.at))
    for job_id, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"job {job_id} ran twice at once: {intervals}"


def test_kill_9_mid_jobs_loses_nothing(env: Env) -> None:
    """After kill -9 a new worker finishes every job; only in-flight ones ran twice."""
    ids = env.enqueue(24, seconds=0.3)
    first = env.worker("first", "--concurrency", "4", "--lease", "1")

    def mid_way() -> bool:
        # A RUNNING job may be claimed but not yet started (a settle claims
        # the next job before its slot starts it): wait for a started one.
        states = env.states()
        started = {e.job_id for e in env.executions() if e.kind == "start"}
        running = {i for i, (s, _) in states.items() if s == "running"}
        return count(states, "succeeded") >= 4 and bool(running & started)

    wait_until(mid_way, "the first worker to be mid-way")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    at_kill = env.states()
    in_flight = {i for i, (s, _) in at_kill.items() if s == "running"}
    done_before = {i for i, (s, _) in at_kill.items() if s == "succeeded"}
    assert in_flight and done_before

    second = env.worker("second", "--concurrency", "8", "--lease", "1", "--until-done")
    assert second.wait(timeout=30) == 0, env.stderr("second")

    final = env.states()
    assert sorted(final) == ids
    assert all(state == "succeeded" for state, _ in final.values()), final
    runs = Counter(e.job_id for e in env.executions() if e.kind == "end")
    starts_by: dict[int, set[int]] = defaultdict(set)
    for e in env.executions():
        if e.kind == "start":
            starts_by[e.job_id].add(e.pid)
    for job_id in ids:
        attempts = final[job_id][1]
        if job_id in in_flight:
            # the killed attempt counts: the job went through expiry
            assert attempts == 2
            assert second.pid in starts_by[job_id]
        else:
            assert attempts == 1
            assert len(starts_by[job_id]) == 1
            assert runs[job_id] == 1
    twice = {j for j, pids in starts_by.items() if len(pids) == 2}
    assert twice and twice <= in_flight
    assert all(
        first.pid not in starts_by[j] for j in set(ids) - done_before - in_flight
    )
    assert "lease expired" in env.stderr("second")
    assert_clean(env, "second")


def test_three_workers_share_one_file(env: Env) -> None:
    """Three processes on one file run every job exactly once, with no lock errors."""
    names = ["w1", "w2", "w3"]
    ready = [env.root / f"{name}.ready" for name in names]
    workers = [
        env.worker(
            name, "--concurrency", "4", "--until-done", "--ready-file", str(path)
        )
        for name, path in zip(names, ready, strict=True)
    ]
    wait_until(lambda: all(p.exists() for p in ready), "all workers to start")
    ids = env.enqueue(60, seconds=0.05)
    for name, proc in zip(names, workers, strict=True):
        assert proc.wait(timeout=30) == 0, env.stderr(name)

    final = env.states()
    assert sorted(final) == ids
    assert all(v == ("succeeded", 1) for v in final.values()), final
    executions = env.executions()
    assert Counter(e.job_id for e in executions if e.kind == "start") == dict.fromkeys(
        ids, 1
    )
    assert Counter(e.job_id for e in executions if e.kind == "end") == dict.fromkeys(
        ids, 1
    )
    assert_no_overlap(executions)
    assert len({e.pid for e in executions}) >= 2
    assert_clean(env, *names)


def test_restart_runs_what_an_earlier_process_enqueued(env: Env) -> None:
    """Jobs enqueued by a process that exited are run by a new process on the file."""
    ids = env.enqueue(10, seconds=0.01)
    assert all(v == ("queued", 0) for v in env.states().values())
    worker = env.worker("worker", "--until-done")
    assert worker.wait(timeout=30) == 0, env.stderr("worker")
    assert all(v == ("succeeded", 1) for v in env.states().values())
    executions = env.executions()
    assert sorted(e.job_id for e in executions if e.kind == "end") == ids
    assert {e.pid for e in executions} == {worker.pid}
    assert_clean(env, "worker")


def test_sigterm_finishes_running_jobs_then_exits(env: Env) -> None:
    """SIGTERM stops claiming; running jobs finish within the grace period; exit 0."""
    ids = env.enqueue(12, seconds=0.5)
    worker = env.worker("worker", "--concurrency", "3")
    wait_until(lambda: count(env.states(), "running") == 3, "three jobs to be running")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, env.stderr("worker")
    states = env.states()
    assert count(states, "running") == 0
    assert count(states, "succeeded") >= 3
    assert count(states, "queued") == len(ids) - count(states, "succeeded")
    assert "shutting down" in env.stderr("worker")
    assert_clean(env, "worker")


def test_wait_sees_a_job_another_process_runs(env: Env) -> None:
    """Queue.wait in one process returns each job a worker process finishes."""
    ids = env.enqueue(5, 0.05)
    worker = env.worker("worker", "--until-done")

    async def wait_for_all() -> list[tuple[int, str]]:
        async with jobkit.SQLiteStore(env.db) as store:
            queue = jobkit.Queue(store)
            with trio.fail_after(60):
                jobs = [await queue.wait(i, poll_interval=0.02) for i in ids]
        return [(job.id, job.state.value) for job in jobs]

    assert trio.run(wait_for_all) == [(i, "succeeded") for i in ids]
    assert worker.wait(timeout=30) == 0
    assert_clean(env, "worker")


def test_purge_beside_a_working_process_keeps_the_books(env: Env) -> None:
    """Purging while another process works loses no job and keeps counts true."""
    ids = env.enqueue(300, 0.002)
    worker = env.worker("worker", "--until-done", "--concurrency", "8")

    async def purge_until_done() -> tuple[list[int], dict[str, int]]:
        deleted = []
        async with jobkit.SQLiteStore(env.db) as store:
            queue = jobkit.Queue(store)
            while worker.poll() is None:
                deleted.append(await queue.purge(0))
                await trio.sleep(0.01)
            deleted.append(await queue.purge(0))  # and once all is done
            counts = await store.counts()
        return deleted, {state.value: n for (_, state), n in counts.counts.items()}

    purges, counted = trio.run(purge_until_done)
    assert worker.wait(timeout=60) == 0
    assert_clean(env, "worker")
    ends = [e.job_id for e in env.executions() if e.kind == "end"]
    assert sorted(set(ends)) == ids  # every job ran to its end
    with sqlite3.connect(env.db) as conn:
        rows = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
        orphans = conn.execute(
            "SELECT count(*) FROM events WHERE job_id NOT IN (SELECT id FROM jobs)"
        ).fetchone()[0]
    conn.close()
    assert counted == rows  # the per-state counts match the rows left
    # The newest job stays, and so does the job of the newest event (which
    # may be the same one), so that no event outlives its job.
    assert set(rows) == {"succeeded"} and rows["succeeded"] in (1, 2)
    assert sum(purges) == len(ids) - rows["succeeded"]
    assert orphans == 0
