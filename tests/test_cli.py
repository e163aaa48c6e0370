"""The ``jobkit`` command line, run as real processes against real SQLite files."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import pty
import queue as stdlib_queue
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from jobkit import JobState, NewJob, SQLiteStore
from jobkit.__main__ import main
from jobkit.cli.common import shown_url
from jobkit.cli.main import build_parser
from jobkit.core.job import Failure, Success

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import sys
    import trio
    import jobkit

    queue = jobkit.Queue()
    not_a_queue = 42

    @queue.task(retry=jobkit.RetryPolicy(2, jobkit.Backoff.constant(0.05)))
    async def add(a: int, b: int) -> int:
        return a + b

    @queue.task(retry=jobkit.RetryPolicy(2, jobkit.Backoff.constant(0.05)))
    async def boom() -> None:
        raise RuntimeError("kaput")

    @queue.task(queue="slow")
    async def nap(seconds: float) -> str:
        print("nap started", file=sys.stderr, flush=True)
        await trio.sleep(seconds)
        return "rested"
    """
)

BROKEN_APP = "raise ImportError('the settings file is missing')\n"

OWN_STORE_APP = textwrap.dedent(
    """
    import jobkit

    queue = jobkit.Queue(jobkit.SQLiteStore("own.db"))

    @queue.task()
    async def add(a: int, b: int) -> int:
        return a + b
    """
)

WAIT = 30.0
"""Seconds a test waits for a process to reach a state before failing."""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "broken_app.py").write_text(BROKEN_APP)
    (tmp_path / "own_store_app.py").write_text(OWN_STORE_APP)
    return tmp_path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "JOBKIT_DB": "", "JOBKIT_APP": ""}


def jobkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env(),
        timeout=WAIT,
    )


def jobkit_all(
    commands: Sequence[Sequence[str]], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Run several commands at once: each process mostly waits for imports."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobkit", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=WAIT)
        results.append(
            subprocess.CompletedProcess(list(args), proc.returncode, out, err)
        )
    return results


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the result is a one-line ``jobkit: error:`` and exit status 1."""
    lines = result.stderr.splitlines()
    assert result.returncode == 1, (result.args, result.returncode, result.stderr)
    assert len(lines) == 1, (result.args, result.stderr)
    assert lines[0].startswith("jobkit: error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def make_db(path: Path, *, dead: int = 0, queued: int = 0) -> None:
    """Create a jobkit database with ``dead`` dead and ``queued`` queued jobs."""

    async def main() -> None:
        async with SQLiteStore(path) as store:
            ids = await store.enqueue(
                [NewJob(task="boom") for _ in range(dead)], now=1e9
            )
            jobs = await store.claim(queues=None, limit=max(1, dead), now=1e9, lease=60)
            assert len(jobs) == dead
            await store.settle(
                [Failure(i, 1, "RuntimeError: kaput", retry_at=None) for i in ids],
                now=1e9 + 1,
            )
            await store.enqueue([NewJob(task="add") for _ in range(queued)], now=1e9)

    trio.run(main)


def states(path: Path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT id, state FROM jobs ORDER BY id").fetchall())


class Worker:
    """A ``jobkit worker`` process whose stderr lines can be awaited."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobkit", "worker", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.lines: list[str] = []
        self._new: stdlib_queue.Queue[str | None] = stdlib_queue.Queue()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr

        def read() -> None:
            with stderr:
                for line in stderr:
                    self._new.put(line.rstrip("\n"))
            self._new.put(None)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        for line in self.lines:
            if text in line:
                return line
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except stdlib_queue.Empty:
                raise AssertionError(
                    f"no {text!r} in worker output: {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"worker exited before {text!r}: {self.lines}")
            self.lines.append(line)
            if text in line:
                return line

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> int:
        code = self.proc.wait(timeout=WAIT)
        while (line := self._new.get(timeout=WAIT)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=WAIT)


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str, cwd: Path) -> Worker:
        worker = Worker(args, cwd)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def wait_until(
    condition: Callable[[], bool],
    what: str,
    explain: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {explain()}")
        time.sleep(0.05)


# -- help ---------------------------------------------------------------------------


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on the program and every command, and exits 0."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {
        "worker",
        "enqueue",
        "jobs",
        "show",
        "dead",
        "requeue",
        "discard",
        "stats",
        "metrics",
        "demo",
    } <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: jobkit {name}" in capsys.readouterr().out


def test_console_script_and_module_agree(workdir: Path) -> None:
    """The ``jobkit`` script and ``python -m jobkit`` print the same help."""
    script = Path(sys.executable).parent / "jobkit"
    via_script = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=WAIT
    )
    via_module = jobkit("--help", cwd=workdir)
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout
    assert "metrics" in via_module.stdout


# -- the happy path -------------------------------------------------------------------


def test_enqueue_work_inspect_and_operate(
    workdir: Path, workers: Callable[..., Worker]
) -> None:
    """Jobs enqueued on the command line are run by a worker and can be inspected."""
    db = str(workdir / "jobs.db")
    app = ["--app", "app:queue", "--db", db, "--json"]
    enq = jobkit_all(
        [
            ["enqueue", "add", '{"a": 2}', "--arg", "b=3", *app],
            ["enqueue", "boom", *app],
        ],
        workdir,
    )
    assert [r.returncode for r in enq] == [0, 0], [r.stderr for r in enq]
    add_id, boom_id = (json.loads(r.stdout)["id"] for r in enq)
    assert {add_id, boom_id} == {1, 2}

    worker = workers(
        "app:queue",
        "--db",
        db,
        "--concurrency",
        "2",
        "--log-format",
        "json",
        cwd=workdir,
    )
    worker.wait_for("worker started")
    wait_until(
        lambda: states(workdir / "jobs.db") == {add_id: "succeeded", boom_id: "dead"},
        "both jobs to finish",
        lambda: f"{states(workdir / 'jobs.db')}, worker said {worker.lines}",
    )
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0
    worker.wait_for("worker stopped")
    logged = [json.loads(line) for line in worker.lines]
    failures = [entry for entry in logged if "traceback" in entry]
    assert [(f["job_id"], f["attempt"]) for f in failures] == [
        (boom_id, 1),
        (boom_id, 2),
    ]
    for failure in failures:
        assert failure["error"] == "RuntimeError: kaput"
        assert json.dumps(failure).count("Traceback (most recent call last)") == 1

    jobs, dead, show, stats, metrics = jobkit_all(
        [
            ["jobs", "--db", db, "--json"],
            ["dead", "--db", db],
            ["show", str(boom_id), "--db", db],
            ["stats", "--db", db, "--json"],
            ["metrics", "--db", db],
        ],
        workdir,
    )
    listed = json.loads(jobs.stdout)
    assert {(j["id"], j["state"], j["result"]) for j in listed} == {
        (add_id, "succeeded", 5),
        (boom_id, "dead", None),
    }
    assert dead.stdout.splitlines()[0].split() == [
        "id",
        "task",
        "queue",
        "attempts",
        "died",
        "error",
    ]
    assert "RuntimeError: kaput" in dead.stdout.splitlines()[2]
    assert "state  dead" in show.stdout
    assert "Traceback (most recent call last)" in show.stdout
    kinds = [
        line.split()[3] for line in show.stdout.split("history:")[1].splitlines()[3:]
    ]
    assert kinds == ["enqueued", "started", "retried", "started", "dead"]
    assert json.loads(stats.stdout) == {
        "default": {
            "queued": 0,
            "running": 0,
            "succeeded": 1,
            "dead": 1,
            "cancelled": 0,
        }
    }
    samples = {
        (s.name, s.labels.get("task")): s.value
        for family in text_string_to_metric_families(metrics.stdout)
        for s in family.samples
        if "le" not in s.labels
    }
    assert samples[("jobkit_jobs_succeeded_total", "add")] == 1
    assert samples[("jobkit_jobs_retried_total", "boom")] == 1
    assert samples[("jobkit_jobs_dead_total", "boom")] == 1
    assert samples[("jobkit_job_duration_seconds_count", "boom")] == 2

    requeue = jobkit("requeue", str(boom_id), "--db", db, cwd=workdir)
    assert (requeue.returncode, requeue.stdout) == (0, "requeued 1 job\n")
    assert states(workdir / "jobs.db")[boom_id] == "queued"


def test_without_an_app_a_job_waits_for_a_worker_that_knows_its_task(
    workdir: Path,
) -> None:
    """enqueue warns it cannot check the task; the task's own limit applies later;
    stats --app counts the queued jobs of tasks the app does not know."""
    db = str(workdir / "jobs.db")
    ghost = jobkit("enqueue", "ghost", "--db", db, cwd=workdir)
    assert ghost.returncode == 0
    assert "without --app the task name 'ghost' cannot be checked" in ghost.stderr
    added = jobkit(
        "enqueue", "add", "--arg", "a=1", "--arg", "b=2", "--db", db, cwd=workdir
    )
    [first, second] = json.loads(
        jobkit("jobs", "--db", db, "--json", cwd=workdir).stdout
    )
    assert (first["max_attempts"], second["max_attempts"]) == (None, None)
    assert added.returncode == 0
    work = jobkit("worker", "app:queue", "--db", db, "--until-empty", cwd=workdir)
    assert work.returncode == 0, work.stderr
    jobs = json.loads(jobkit("jobs", "--db", db, "--json", cwd=workdir).stdout)
    assert [(j["task"], j["state"], j["max_attempts"]) for j in jobs] == [
        ("ghost", "queued", None),
        ("add", "succeeded", 2),  # the task's RetryPolicy(2, ...)
    ]
    stats = jobkit("stats", "--app", "app:queue", "--db", db, cwd=workdir)
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[-1] == (
        "1 queued job waits for tasks app:queue does not know: ghost"
    )


def test_enqueue_without_an_app_stores_the_job_as_given(workdir: Path) -> None:
    """Without --app the task name and options are stored unchecked."""
    db = str(workdir / "new.db")
    result = jobkit(
        "enqueue",
        "report",
        "--arg",
        "day=2024-05-01",
        "--arg",
        "pages=[1, 2]",
        "--queue",
        "reports",
        "--priority",
        "5",
        "--delay",
        "3600",
        "--max-attempts",
        "2",
        "--db",
        db,
        cwd=workdir,
    )
    assert (result.returncode, result.stdout) == (0, "enqueued job 1\n")
    [job] = json.loads(jobkit("jobs", "--db", db, "--json", cwd=workdir).stdout)
    assert job["payload"] == {"day": "2024-05-01", "pages": [1, 2]}
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("reports", 5, 2)
    assert job["run_at"] - job["created_at"] == pytest.approx(3600)


def test_without_db_the_worker_uses_the_apps_own_store(
    workdir: Path, workers: Callable[..., Worker]
) -> None:
    """An APP whose queue already has a store needs no --db."""
    enqueued = jobkit(
        "enqueue",
        "add",
        '{"a": 1, "b": 2}',
        "--db",
        str(workdir / "own.db"),
        cwd=workdir,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    worker = workers("own_store_app:queue", cwd=workdir)
    worker.wait_for("worker started")
    wait_until(lambda: states(workdir / "own.db") == {1: "succeeded"}, "the job")
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def test_second_signal_stops_at_once(
    workdir: Path, workers: Callable[..., Worker]
) -> None:
    """A first SIGINT starts a graceful shutdown; a second one stops at once."""
    db = workdir / "jobs.db"
    assert (
        jobkit(
            "enqueue",
            "nap",
            "--arg",
            "seconds=600",
            "--app",
            "app:queue",
            "--db",
            str(db),
            cwd=workdir,
        ).returncode
        == 0
    )
    worker = workers("app:queue", "--db", str(db), "--grace", "600", cwd=workdir)
    worker.wait_for("nap started")
    worker.signal(signal.SIGINT)
    worker.wait_for("shutting down")
    assert worker.proc.poll() is None  # still waiting for the job: graceful
    worker.signal(signal.SIGINT)
    assert worker.finish() == 130
    assert "stopped at once" in worker.lines[-1]
    # The interrupted attempt was handed back, not left to its lease.
    assert states(db) == {1: "queued"}


# -- progress on long operations ----------------------------------------------------


def test_requeue_of_thousands_draws_a_bar_on_a_terminal_only(workdir: Path) -> None:
    """requeue --all-dead draws a progress bar on a terminal, and nothing on a pipe."""
    db = workdir / "jobs.db"
    make_db(db, dead=1600, queued=3)
    piped = jobkit("requeue", "--all-dead", "--db", str(db), cwd=workdir)
    assert (piped.returncode, piped.stdout, piped.stderr) == (
        0,
        "requeued 1600 jobs\n",
        "",
    )
    assert set(states(db).values()) == {"queued"}

    make_db(workdir / "again.db", dead=1600)
    leader, follower = pty.openpty()
    # A terminal 80 columns wide: tqdm draws nothing on one of width 0.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    with open(leader, "rb", buffering=0) as terminal:
        proc = subprocess.run(
            [sys.executable, "-m", "jobkit", "requeue", "--all-dead"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**env(), "JOBKIT_DB": str(workdir / "again.db")},
            timeout=WAIT,
        )
        os.close(follower)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the terminal is drained
            while chunk := terminal.read(65536):
                drawn += chunk
    assert (proc.returncode, proc.stdout) == (0, b"requeued 1600 jobs\n")
    assert b"requeue:" in drawn and b"/1600" in drawn and b"\r" in drawn


# -- errors: one line, non-zero, and the file untouched -------------------------------

READ_COMMANDS = [
    ["jobs"],
    ["show", "1"],
    ["wait", "1", "--timeout", "0"],
    ["dead"],
    ["requeue", "1"],
    ["requeue", "--all-dead"],
    ["discard", "1"],
    ["stats"],
    ["purge", "--older-than", "0"],
    ["metrics"],
]


def test_a_missing_database_is_an_error_and_is_not_created(workdir: Path) -> None:
    """Every read or operator command refuses a missing file and creates none."""
    db = workdir / "missing.db"
    commands = [
        ["jobs"],
        ["show", "1"],
        ["requeue", "1"],
        ["purge", "--older-than", "0"],
        ["metrics"],
    ]
    results = jobkit_all([[*cmd, "--db", str(db)] for cmd in commands], workdir)
    for result in results:
        assert "no database at" in one_line_error(result)
    assert not any(p.name.startswith("missing") for p in workdir.iterdir())


def test_a_corrupt_or_foreign_database_is_refused_unchanged(workdir: Path) -> None:
    """Garbage, another app's SQLite file and an empty file are refused as they are."""
    corrupt = workdir / "corrupt.db"
    corrupt.write_bytes(b"jobkit? no.\x00" + bytes(range(256)) * 40)
    foreign = workdir / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    empty = workdir / "empty.db"
    empty.write_bytes(b"")
    files = [corrupt, foreign, empty]
    before = {path: path.read_bytes() for path in files}
    commands = [[*cmd, "--db", str(corrupt)] for cmd in READ_COMMANDS]
    commands += [
        [*cmd, "--db", str(path)]
        for path in (foreign, empty)
        for cmd in (["jobs"], ["requeue", "--all-dead"])
    ]
    commands += [
        ["enqueue", "add", "--db", str(corrupt)],
        ["worker", "app:queue", "--db", str(foreign)],
    ]
    for result in jobkit_all(commands, workdir):
        message = one_line_error(result)
        assert any(
            phrase in message
            for phrase in ("not an SQLite database", "not a jobkit database", "empty")
        ), message
    for path in files:
        assert path.read_bytes() == before[path], f"{path.name} was modified"
        assert not Path(f"{path}-wal").exists()


def test_a_wrong_app_is_a_one_line_error(workdir: Path) -> None:
    """Each way APP can be wrong is named in one line; no database is created."""
    db = str(workdir / "never.db")
    cases = {
        "app": "must be 'module:attribute'",
        "nosuchmodule:queue": "no module named 'nosuchmodule'",
        "app:missing": "has no attribute 'missing'",
        "app:not_a_queue": "names a int, not a jobkit.Queue",
        "broken_app:queue": "ImportError: the settings file is missing",
    }
    commands = [["worker", app, "--db", db] for app in cases]
    commands.append(["enqueue", "add", "--app", "nosuchmodule:queue", "--db", db])
    results = jobkit_all(commands, workdir)
    for result, expected in zip(results, [*cases.values(), "no module"], strict=True):
        assert expected in one_line_error(result)
    assert not Path(db).exists()


def test_unknown_job_ids_are_errors_and_change_nothing(workdir: Path) -> None:
    """An unknown or not-dead id is named, and no other job is touched."""
    db = workdir / "jobs.db"
    make_db(db, dead=2, queued=1)
    before = db.read_bytes()
    results = jobkit_all(
        [
            ["show", "999", "--db", str(db)],
            ["requeue", "1", "999", "--db", str(db)],
            ["discard", "999", "--db", str(db)],
            ["requeue", "1", "3", "--db", str(db)],
        ],
        workdir,
    )
    messages = [one_line_error(r) for r in results]
    assert messages[0] == "jobkit: error: no job with id 999"
    assert messages[1] == "jobkit: error: no job with id 999; nothing was changed"
    assert "job 3 is queued, not dead; nothing was changed" in messages[3]
    assert db.read_bytes() == before
    assert states(db) == {1: "dead", 2: "dead", 3: "queued"}


def test_bad_arguments_exit_with_status_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed arguments are usage errors: status 2 and a message naming them."""
    cases = {
        ("jobs", "--state", "sleeping", "--db", "x.db"): "unknown state 'sleeping'",
        ("show", "abc", "--db", "x.db"): "a job id is a number, got 'abc'",
        ("worker", "app:queue", "--concurrency", "0"): "must be at least 1, got 0",
        ("frobnicate",): "invalid choice: 'frobnicate'",
    }
    for argv, text in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        assert exit_info.value.code == 2
        assert text in capsys.readouterr().err.splitlines()[-1]
    assert main(["requeue", "--db", "x.db"]) == 1
    assert capsys.readouterr().err == (
        "jobkit: error: nothing to requeue: give job ids or --all-dead\n"
    )
    assert not (workdir / "x.db").exists()
    # The usage error of a real process looks the same.
    result = jobkit("frobnicate", cwd=workdir)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_a_bad_payload_is_refused_before_storing(workdir: Path) -> None:
    """Invalid JSON, a non-object payload or a bad --arg is a one-line error."""
    db = str(workdir / "jobs.db")
    results = jobkit_all(
        [
            ["enqueue", "add", "{not json", "--db", db],
            ["enqueue", "add", "[1, 2]", "--db", db],
            ["enqueue", "add", "--arg", "novalue", "--db", db],
        ],
        workdir,
    )
    messages = [one_line_error(r) for r in results]
    assert "PAYLOAD is not valid JSON" in messages[0]
    assert "must be a JSON object of keyword arguments, got list" in messages[1]
    assert "--arg takes KEY=VALUE, got 'novalue'" in messages[2]
    assert not Path(db).exists()


def test_refused_input_is_one_line_and_creates_no_database(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arguments no store can keep are refused by name, never with a traceback."""
    monkeypatch.chdir(workdir)
    db = str(workdir / "jobs.db")
    deep = "[" * 5000 + "]" * 5000
    nested = "[" * 500 + "]" * 500

    def argv(*args: str | bytes) -> list[str]:
        # Bytes as Python hands a command line's non-UTF-8 bytes over.
        return [os.fsdecode(a) for a in args]

    cases: list[tuple[list[str], int, str]] = [
        (argv("enqueue", ""), 2, "argument TASK: must not be empty"),
        (argv("enqueue", b"add\xff"), 2, "TASK: holds the byte 0xff at character 3"),
        (argv("enqueue", "add", "--queue", ""), 2, "--queue: must not be empty"),
        (argv("enqueue", "add", "--unique-key", ""), 2, "--unique-key: must not be"),
        (
            argv("enqueue", "add", "--priority", "99999999999999999999"),
            2,
            "--priority: must be at most 9223372036854775807",
        ),
        (
            argv("enqueue", "add", "--priority", "-9223372036854775809"),
            2,
            "--priority: must be at least -9223372036854775808",
        ),
        (
            argv("enqueue", "add", "--max-attempts", "9223372036854775808"),
            2,
            "--max-attempts: must be at most 9223372036854775807",
        ),
        (
            argv("enqueue", "add", b'{"a": "r-\xff.csv"}'),
            1,
            "PAYLOAD holds the byte 0xff at character 9, which is not UTF-8",
        ),
        (argv("enqueue", "add", "--arg", b"a=\xfe"), 1, "--arg a holds the byte 0xfe"),
        (
            argv("enqueue", "add", f'{{"a": {deep}}}'),
            1,
            "PAYLOAD is nested deeper than 100 levels",
        ),
        (
            argv("enqueue", "add", f'{{"a": {nested}}}'),
            1,
            "payload is nested deeper than 100 levels",
        ),
        (
            argv("enqueue", "add", '{"a": ["\\ud800"]}'),
            1,
            "payload['a'][0] holds '\\ud800' at index 0, a lone surrogate",
        ),
        (argv("show", "99999999999999999999"), 2, "ID: must be at most"),
        (argv("jobs", "--queue", ""), 2, "--queue: must not be empty"),
    ]
    for args, status, text in cases:
        try:
            code = main([*args, "--db", db])
        except SystemExit as exit_info:  # a usage error, from argparse
            code = exit_info.code  # type: ignore[assignment]
        out, err = capsys.readouterr()
        assert (code, out) == (status, ""), (args[:3], err)
        assert err.startswith("jobkit: error: ") and err.count("\n") == 1, err
        assert text in err
    assert not Path(db).exists()


def test_a_read_only_database_is_a_one_line_error(workdir: Path) -> None:
    """Writing to a file the process may only read names the file and the cause."""
    db = workdir / "jobs.db"
    make_db(db, queued=1)
    if os.geteuid() == 0:
        # Permissions do not stop root; an immutable file does.
        if subprocess.run(["chattr", "+i", str(db)], check=False).returncode:
            pytest.skip("running as root without chattr +i")
        undo = ["chattr", "-i", str(db)]
    else:
        db.chmod(0o444)
        undo = ["chmod", "644", str(db)]
    try:
        result = jobkit("enqueue", "add", "--db", str(db), cwd=workdir)
    finally:
        subprocess.run(undo, check=True)
    message = one_line_error(result)
    assert message == (
        f"jobkit: error: cannot write to {str(db)!r} (attempt to write a readonly "
        "database): check the permissions of the file and of its directory"
    )
    assert states(db) == {1: "queued"}


def test_a_damaged_jobs_table_is_a_one_line_error(workdir: Path) -> None:
    """A file whose header is intact but whose jobs table is not is named damaged."""
    db = workdir / "jobs.db"
    make_db(db, queued=200)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'jobs'"
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with db.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * size)
    commands = [["jobs"], ["show", "3"], ["enqueue", "add"], ["metrics"]]
    results = jobkit_all([[*cmd, "--db", str(db)] for cmd in commands], workdir)
    for result in results:
        assert one_line_error(result) == (
            f"jobkit: error: {str(db)!r} is damaged (database disk image is "
            "malformed): restore it from a backup, or try the sqlite3 shell's "
            ".recover"
        )


def test_a_worker_on_a_damaged_file_stops_with_one_error(workdir: Path) -> None:
    """A damaged file is not retried forever: the worker ends with the reason."""
    db = workdir / "jobs.db"
    make_db(db, queued=200)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'jobs'"
        ).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with db.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * size)
    result = jobkit(
        "worker", "app:queue", "--db", str(db), "--until-empty", cwd=workdir
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"jobkit: error: {str(db)!r} is damaged (database disk image is "
        "malformed): restore it from a backup, or try the sqlite3 shell's .recover"
    )


def test_no_database_given(workdir: Path) -> None:
    """Without --db or $JOBKIT_DB the error says how to give one."""
    assert "pass --db PATH or set JOBKIT_DB" in one_line_error(
        jobkit("stats", cwd=workdir)
    )


def test_json_output_of_jobs_and_metrics(workdir: Path) -> None:
    """--json prints machine-readable data for listings and metrics."""
    db = workdir / "jobs.db"
    make_db(db, dead=2, queued=1)
    dead, metrics, show = jobkit_all(
        [
            ["dead", "--db", str(db), "--json", "--limit", "1"],
            ["metrics", "--db", str(db), "--json"],
            ["show", "1", "--db", str(db), "--json"],
        ],
        workdir,
    )
    assert [j["id"] for j in json.loads(dead.stdout)] == [1]
    data: dict[str, Any] = json.loads(metrics.stdout)
    assert data["counters"]["dead"] == [
        {"task": "boom", "queue": "default", "value": 2}
    ]
    assert {"queue": "default", "state": "queued", "jobs": 1} in data["depth"]
    shown = json.loads(show.stdout)
    assert shown["job"]["state"] == JobState.DEAD.value
    assert [e["kind"] for e in shown["events"]] == ["enqueued", "started", "dead"]


def test_worker_until_empty_exits_by_itself_once_all_is_done(workdir: Path) -> None:
    """--until-empty runs every job, retries included, then exits 0 on its own."""
    db = str(workdir / "jobs.db")
    for args in (["add", '{"a": 1, "b": 2}'], ["add", '{"a": 3, "b": 4}'], ["boom"]):
        done = jobkit("enqueue", *args, "--app", "app:queue", "--db", db, cwd=workdir)
        assert done.returncode == 0, done.stderr
    result = jobkit(
        "worker",
        "app:queue",
        "--db",
        db,
        "--until-empty",
        "--poll-interval",
        "0.05",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "worker stopping: nothing queued or running" in result.stderr
    # boom fails twice (0.05 s apart) and ends dead; nothing is left to run.
    assert states(workdir / "jobs.db") == {1: "succeeded", 2: "succeeded", 3: "dead"}


def test_purge_deletes_old_finished_jobs(workdir: Path) -> None:
    """jobkit purge --older-than deletes old finished jobs; dead letters stay."""
    db = workdir / "jobs.db"

    async def finish_one() -> None:
        async with SQLiteStore(db) as store:
            await store.enqueue([NewJob(task="add")], now=1e9)
            await store.claim(queues=None, limit=1, now=1e9, lease=60)
            await store.settle([Success(1, 1, 3)], now=1e9)

    trio.run(finish_one)
    make_db(db, dead=2, queued=1)
    result = jobkit("purge", "--older-than", "0", "--db", str(db), cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("purged 1 finished job last changed before ")
    assert states(db) == {2: "dead", 3: "dead", 4: "queued"}
    again = jobkit(
        "purge", "--older-than", "7d", "--db", str(db), "--json", cwd=workdir
    )
    assert json.loads(again.stdout)["purged"] == 0


@pytest.mark.parametrize("age", ["-1", "7w", "d", "nan"])
def test_purge_refuses_a_bad_age(workdir: Path, age: str) -> None:
    """A bad --older-than is refused before the database is opened."""
    db = workdir / "jobs.db"
    result = jobkit("purge", f"--older-than={age}", "--db", str(db), cwd=workdir)
    assert result.returncode == 2
    assert "--older-than" in result.stderr
    assert not db.exists()


def test_wait_returns_when_a_worker_has_run_the_job(
    workdir: Path, workers: Callable[..., Worker]
) -> None:
    """jobkit wait exits 0 with the result once a worker process has run the job."""
    db = str(workdir / "jobs.db")
    add = jobkit(
        "enqueue",
        "add",
        '{"a": 1, "b": 2}',
        "--app",
        "app:queue",
        "--db",
        db,
        cwd=workdir,
    )
    assert add.returncode == 0, add.stderr
    worker = workers("app:queue", "--db", db, "--poll-interval", "0.05", cwd=workdir)
    done = jobkit(
        "wait",
        "1",
        "--timeout",
        "30",
        "--poll-interval",
        "0.05",
        "--db",
        db,
        cwd=workdir,
    )
    assert (done.returncode, done.stdout) == (0, "job 1 succeeded: 3\n"), done.stderr
    worker.signal(signal.SIGTERM)
    assert worker.finish() == 0


def test_wait_exits_1_for_a_dead_job_and_124_when_time_is_up(workdir: Path) -> None:
    """A dead job exits 1 with its error; an unfinished one 124 after --timeout."""
    db = workdir / "jobs.db"
    make_db(db, dead=1, queued=1)
    dead = jobkit("wait", "1", "--db", str(db), cwd=workdir)
    assert (dead.returncode, dead.stdout) == (1, "job 1 is dead: RuntimeError: kaput\n")
    late = jobkit(
        "wait", "2", "--timeout", "0.2", "--db", str(db), "--json", cwd=workdir
    )
    assert late.returncode == 124
    assert json.loads(late.stdout)["state"] == "queued"
    missing = jobkit("wait", "9", "--db", str(db), cwd=workdir)
    assert missing.returncode == 1
    assert "9" in one_line_error(missing)


# -- habits of the ecosystem ----------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"jobkit {importlib.metadata.version('jobkit')}\n"


def test_options_go_before_or_after_the_command(workdir: Path) -> None:
    """--db and --json are taken before the command as well as after it."""
    db = workdir / "jobs.db"
    make_db(db, dead=1, queued=1)
    before, after, both = jobkit_all(
        [
            ["--db", str(db), "--json", "stats"],
            ["stats", "--db", str(db), "--json"],
            ["--db", "elsewhere.db", "stats", "--db", str(db), "--json"],
        ],
        workdir,
    )
    assert build_parser().parse_args(["--db", "x.db", "dashboard"]).db == "x.db"
    assert before.returncode == after.returncode == both.returncode == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(both.stdout) == json.loads(after.stdout)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1e3", 1000.0),
    ],
)
def test_every_duration_option_takes_units(text: str, seconds: float) -> None:
    """Every option that takes a duration reads plain seconds and 1h, 10m, 500ms."""
    parser = build_parser()
    for argv, dest in [
        (["worker", "app:q", "--lease", text], "lease"),
        (["worker", "app:q", "--grace", text], "grace"),
        (["worker", "app:q", "--poll-interval", text], "poll_interval"),
        (["wait", "1", "--timeout", text], "timeout"),
        (["wait", "1", "--poll-interval", text], "poll_interval"),
        (["enqueue", "add", "--delay", text], "delay"),
        (["purge", "--older-than", text], "older_than"),
        (["dashboard", "--refresh", text], "refresh"),
    ]:
        assert getattr(parser.parse_args(argv), dest) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["worker", "--lease", "0"], "--lease: must be more than 0 seconds, got '0'"),
        (["wait", "1", "--poll-interval", "0s"], "--poll-interval: must be more"),
        (["wait", "1", "--timeout", "1w"], "--timeout: expected seconds or a durat"),
        (["worker", "--grace", "-1"], "--grace: expected seconds or a duration"),
        (["enqueue", "a", "--delay", "inf"], "--delay: expected seconds or a durat"),
        (["enqueue", "a", "--delay", "1e999"], "--delay: must be a finite duration"),
    ],
)
def test_a_bad_duration_is_a_usage_error(
    argv: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A duration that is negative, zero where time must pass, or unknown is refused."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("jobkit: error: argument ") and text in line, line


def test_app_and_db_from_the_environment(
    workdir: Path, workers: Callable[..., Worker]
) -> None:
    """$JOBKIT_APP and $JOBKIT_DB stand for --app and --db, on every command."""
    db = workdir / "jobs.db"
    environment = {**env(), "JOBKIT_APP": "app:queue", "JOBKIT_DB": str(db)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobkit", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=environment,
            timeout=WAIT,
        )

    refused = run("enqueue", "nope")
    assert "no task 'nope' on app:queue; its tasks: add, boom, nap" in (
        one_line_error(refused)
    )
    assert run("enqueue", "add", '{"a": 1, "b": 2}').returncode == 0
    done = run("worker", "--until-empty", "--poll-interval", "50ms")
    assert done.returncode == 0, done.stderr
    assert f"serving app:queue on {db}: tasks add, boom, nap" in done.stderr
    assert states(db) == {1: "succeeded"}
    twice = run("worker", "app:other", "--app", "app:queue")
    assert "APP given twice" in one_line_error(twice)


def test_worker_json_logs_json_lines_that_name_the_database_and_tasks(
    workdir: Path,
) -> None:
    """worker --json writes its log as JSON lines; the first names db and tasks."""
    db = workdir / "jobs.db"
    result = jobkit(
        "--json",
        "worker",
        "app:queue",
        "--db",
        str(db),
        "--until-empty",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert logged[0]["message"] == f"serving app:queue on {db}: tasks add, boom, nap"
    assert (logged[0]["database"], logged[0]["tasks"]) == (
        str(db),
        ["add", "boom", "nap"],
    )
    assert any(entry["message"].startswith("worker started") for entry in logged)


def test_cancel_moves_queued_jobs_to_cancelled(workdir: Path) -> None:
    """jobkit cancel cancels queued jobs; an unknown or dead one changes nothing."""
    db = workdir / "jobs.db"
    make_db(db, dead=1, queued=3)
    refused = jobkit_all(
        [["cancel", "2", "1", "--db", str(db)], ["cancel", "2", "9", "--db", str(db)]],
        workdir,
    )
    assert one_line_error(refused[0]) == (
        "jobkit: error: job 1 is dead, not queued; nothing was changed"
    )
    assert one_line_error(refused[1]) == (
        "jobkit: error: no job with id 9; nothing was changed"
    )
    assert states(db) == {1: "dead", 2: "queued", 3: "queued", 4: "queued"}
    done = jobkit("cancel", "2", "3", "--db", str(db), cwd=workdir)
    assert (done.returncode, done.stdout) == (0, "cancelled 2 jobs\n")
    assert states(db) == {1: "dead", 2: "cancelled", 3: "cancelled", 4: "queued"}


def test_listings_say_when_more_jobs_match_and_show_attempts_alike(
    workdir: Path,
) -> None:
    """jobs and dead hint at what --limit left out; attempts read n/max in both."""
    db = workdir / "jobs.db"
    make_db(db, dead=3, queued=2)
    jobs, dead, everything = jobkit_all(
        [
            ["jobs", "--limit", "4", "--db", str(db)],
            ["dead", "--db", str(db)],
            ["jobs", "--limit", "5", "--db", str(db)],
        ],
        workdir,
    )
    assert len(jobs.stdout.splitlines()) == 2 + 4
    assert jobs.stderr == (
        "jobkit: more jobs match: --after 4 shows the next 4, --limit 0 all\n"
    )
    assert (everything.stderr, len(everything.stdout.splitlines())) == ("", 2 + 5)
    assert dead.stderr == ""
    dead_row = dead.stdout.splitlines()[2].split()
    jobs_row = jobs.stdout.splitlines()[2].split()
    assert dead_row[3] == jobs_row[4] == "1/1"


def test_listings_filter_by_task_and_page_both_ways(workdir: Path) -> None:
    """--task filters, --newest reverses, --after ID gives the next page."""
    db = workdir / "jobs.db"
    make_db(db, dead=3, queued=2)  # 1-3 dead (boom), 4-5 queued (add)
    ghost = jobkit("enqueue", "ghost", "--db", str(db), cwd=workdir)
    assert ghost.returncode == 0, ghost.stderr
    listings = {
        ("jobs", "--after", "4"): [5, 6],
        ("jobs", "--newest", "--limit", "2"): [6, 5],
        ("jobs", "--newest", "--after", "5"): [4, 3, 2, 1],
        ("jobs", "--task", "add"): [4, 5],
        ("jobs", "--task", "add", "--newest", "--limit", "1"): [5],
        ("dead", "--newest", "--after", "3", "--limit", "1"): [2],
        ("dead", "--task", "add"): [],
    }
    results = jobkit_all(
        [[*argv, "--db", str(db), "--json"] for argv in listings], workdir
    )
    for (argv, ids), result in zip(listings.items(), results, strict=True):
        assert [j["id"] for j in json.loads(result.stdout)] == ids, argv
    assert results[1].stderr == (
        "jobkit: more jobs match: --after 5 shows the next 2, --limit 0 all\n"
    )
    table = jobkit("jobs", "--task", "ghost", "--db", str(db), cwd=workdir)
    # A job stored without --app has the limit its first worker decides.
    assert table.stdout.splitlines()[2].split()[:5] == [
        "6",
        "queued",
        "ghost",
        "default",
        "0/-",
    ]


def test_a_reader_that_leaves_early_is_not_an_error(workdir: Path) -> None:
    """``jobkit jobs | head`` exits 0 and prints nothing on stderr."""
    db = workdir / "jobs.db"
    make_db(db, queued=3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobkit", "jobs", "--limit", "0", "--db", str(db)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().split()[0] == b"id"
    proc.stdout.close()  # as head does once it has its lines
    assert proc.wait(timeout=WAIT) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("jobs.db", "jobs.db"),
        ("postgresql://ada:s3c:et@db/jobs", "postgresql://ada:***@db/jobs"),
        ("postgresql://ada@db/jobs", "postgresql://ada@db/jobs"),
        (
            "postgresql:///jobs?ssl=1&password=s3c",
            "postgresql:///jobs?ssl=1&password=***",
        ),
        ("sqlite:///odd:name@x.db", "sqlite:///odd:name@x.db"),
    ],
)
def test_the_start_up_log_never_shows_a_password(url: str, logged: str) -> None:
    """The database named in the worker's first log line has no password in it."""
    assert shown_url(url) == logged


def test_a_one_shot_command_says_why_it_failed_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's warning for each failed connection attempt does not bury the
    command's own one-line error (a worker's log keeps them)."""
    import logging

    from jobkit.cli.main import run
    from jobkit.store import StoreError

    def unreachable(_: object) -> int:
        logging.getLogger("psycopg.pool").warning("error connecting in 'jobkit'")
        raise StoreError("cannot connect to PostgreSQL db:5432/app within 30 s")

    args = build_parser().parse_args(["--db", "postgresql://db/app", "stats"])
    monkeypatch.setattr(args, "handler", unreachable)
    # As in a shell: no handler anywhere, so Python's last resort prints
    # warnings to stderr (pytest's own capture handler is taken away).
    pool_log = logging.getLogger("psycopg.pool")
    monkeypatch.setattr(pool_log, "handlers", [])
    monkeypatch.setattr(pool_log, "propagate", True)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    assert run(args) == 1
    assert capsys.readouterr().err.splitlines() == [
        "jobkit: error: cannot connect to PostgreSQL db:5432/app within 30 s"
    ]
