"""The example web app over real HTTP on 127.0.0.1: jobs, shutdown, error isolation.

In-process tests run the app on a real trio clock on a free port (port 0) and
talk to it with httpx; the shutdown tests start it as a real process and send
it SIGTERM. Each wait polls something observable (an HTTP answer, a log line,
a process exit) under a deadline; nothing sleeps for a guessed time.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import jobkit
from jobkit.examples import webapp
from jobkit.examples.timeline import Step, load_timeline, read_steps, since_shutdown
from jobkit.examples.webapp import Settings, WebApp
from tests.helpers.stores import fresh_schema, postgres_url

# -- in-process helpers --------------------------------------------------------------


@asynccontextmanager
async def serving(
    settings: Settings,
) -> AsyncIterator[tuple[WebApp, httpx.AsyncClient]]:
    """Run the app in this trio run; stop it through its token on the way out."""
    app = WebApp(settings)
    token = jobkit.CancellationToken()
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(app.run, token)
            try:
                async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                    yield app, client
            finally:
                token.cancel()
    finally:
        await app.aclose()


def settings(tmp_path: Path, **options: Any) -> Settings:
    defaults: dict[str, Any] = {
        "db": str(tmp_path / "jobs.db"),
        "port": 0,
        "email_delay": 0.01,
        "grace": 2.0,
        "poll_interval": 0.05,
    }
    return Settings(**{**defaults, **options})


WAIT = 10.0
"""How long any one wait may take before the test fails."""


async def wait_for(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (an HTTP request) until it holds; fail naming ``what``."""
    with trio.move_on_after(WAIT):
        # Polling, not an event: the state lives behind HTTP, as for any client.
        while not await check():  # noqa: ASYNC110
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {WAIT}s waiting for {what}")


async def job_state(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def wait_for_state(
    client: httpx.AsyncClient, job_id: int, state: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await job_state(client, job_id))
        return seen["state"] == state

    await wait_for(reached, f"job {job_id} to be {state} (last seen: {seen})")
    return seen


async def register(client: httpx.AsyncClient, email: str, name: str = "Ada") -> int:
    response = await client.post("/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    job_id: int = response.json()["job_id"]
    return job_id


# -- the API -------------------------------------------------------------------------


async def test_posting_a_user_enqueues_a_welcome_email_that_succeeds(
    tmp_path: Path,
) -> None:
    """POST /users answers 201 with a job id; the job succeeds and GET reports it."""
    async with serving(settings(tmp_path)) as (app, client):
        response = await client.post(
            "/users", json={"email": "ada@example.com", "name": "Ada"}
        )
        assert response.status_code == 201
        body = response.json()
        assert body["user"]["email"] == "ada@example.com"
        assert body["job_url"] == f"/jobs/{body['job_id']}"

        job = await wait_for_state(client, body["job_id"], "succeeded")

        assert job["task"] == webapp.WELCOME_TASK
        assert job["attempts"] == 1
        assert job["result"] == {"to": "ada@example.com", "first_delivery": True}
        [sent] = app.accounts.outbox()
        assert (sent.job_id, sent.to) == (body["job_id"], "ada@example.com")
        assert sent.subject == "Welcome, Ada!"


async def test_get_job_with_wait_answers_when_the_job_finishes(
    tmp_path: Path,
) -> None:
    """?wait= holds the answer until the job is done, or answers when time is up."""
    async with serving(settings(tmp_path, email_delay=1.5)) as (_, client):
        job_id = await register(client, "ada@example.com")
        short = await client.get(f"/jobs/{job_id}", params={"wait": "0.05"})
        assert short.status_code == 200
        assert short.json()["state"] in ("queued", "running")
        done = await client.get(f"/jobs/{job_id}", params={"wait": "5"})
        assert (done.status_code, done.json()["state"]) == (200, "succeeded")
        assert done.json()["result"]["to"] == "ada@example.com"
        # A finished job is answered at once, however long the wait asked.
        with trio.fail_after(1):
            again = await client.get(f"/jobs/{job_id}", params={"wait": "30"})
        assert again.json()["state"] == "succeeded"


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan"])
async def test_get_job_refuses_a_bad_wait(tmp_path: Path, wait: str) -> None:
    """A wait that is not 0 to 30 seconds gets 422, naming the parameter."""
    async with serving(settings(tmp_path)) as (_, client):
        response = await client.get("/jobs/1", params={"wait": wait})
        assert response.status_code == 422
        assert (
            "wait must be a number of seconds from 0 to 30" in response.json()["error"]
        )


async def test_the_clean_up_purges_finished_jobs_past_their_retention(
    tmp_path: Path,
) -> None:
    """The periodic clean-up deletes finished jobs older than job_retention."""
    options = {"cleanup_period": 0.05, "job_retention": 0.0}
    async with serving(settings(tmp_path, **options)) as (_, client):
        first = await register(client, "ada@example.com")
        await wait_for_state(client, first, "succeeded")
        second = await register(client, "grace@example.com")
        await wait_for_state(client, second, "succeeded")

        async def first_is_gone() -> bool:
            return (await client.get(f"/jobs/{first}")).status_code == 404

        await wait_for(first_is_gone, f"job {first} to be purged")
        # The newest job always stays, whatever its age.
        assert (await job_state(client, second))["state"] == "succeeded"


async def test_bad_requests_are_refused_and_store_nothing(tmp_path: Path) -> None:
    """Bad input gets 422 naming the problem, a taken address 409; no job is stored."""
    async with serving(settings(tmp_path)) as (app, client):
        await register(client, "ada@example.com")
        cases = [
            (b"not json", 422, "not JSON"),
            (b"[1, 2]", 422, "must be a JSON object"),
            (json.dumps({"email": "ada", "name": "A"}).encode(), 422, "name@domain"),
            (json.dumps({"email": "b@example.com"}).encode(), 422, "name must be"),
            (
                json.dumps({"email": "ada@example.com", "name": "A"}).encode(),
                409,
                "already exists",
            ),
        ]
        for content, status, needle in cases:
            response = await client.post("/users", content=content)
            assert response.status_code == status, content
            assert needle in response.json()["error"], response.text

        assert len(await app.queue.list(limit=None)) == 1
        assert (await client.get("/jobs/999")).status_code == 404


async def test_debug_routes_exist_only_in_debug_mode(tmp_path: Path) -> None:
    """Without --debug the fault switches are not routes at all."""
    async with serving(settings(tmp_path)) as (_, client):
        assert (await client.post("/debug/crash-worker")).status_code == 404
        assert (await client.get("/debug/fail")).status_code == 404


# -- error isolation -------------------------------------------------------------------


async def test_a_failing_handler_gets_500_and_the_server_keeps_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises is logged with its traceback; other requests still work."""
    async with serving(settings(tmp_path, debug=True)) as (_, client):
        response = await client.get("/debug/fail")
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error"}

        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["request_errors"] == 1
        job_id = await register(client, "ada@example.com")
        await wait_for_state(client, job_id, "succeeded")

    [record] = [r for r in caplog.records if r.getMessage().startswith("request GET")]
    assert record.exc_info is not None
    assert getattr(record, "path", None) == "/debug/fail"


async def test_a_crashed_worker_is_restarted_while_health_keeps_answering(
    tmp_path: Path,
) -> None:
    """After the worker crashes, /health answers 200 throughout and jobs run again."""
    async with serving(settings(tmp_path, debug=True)) as (_, client):
        assert (await client.post("/debug/crash-worker")).status_code == 202
        answers: list[int] = []

        async def restarted() -> bool:
            response = await client.get("/health")
            answers.append(response.status_code)
            worker = response.json()["worker"]
            return bool(worker["crashes"] == 1 and worker["running"])

        await wait_for(restarted, "the worker to be restarted")
        assert set(answers) == {200}

        job_id = await register(client, "ada@example.com")
        await wait_for_state(client, job_id, "succeeded")
        health = (await client.get("/health")).json()
        assert health["worker"]["starts"] == 2
        assert health["supervisor"] == {"restarts": 1, "gave_up": []}


async def test_a_worker_that_keeps_crashing_is_given_up_on_but_the_server_is_not(
    tmp_path: Path,
) -> None:
    """Past max_restarts the worker stays down, says so in /health, and HTTP works."""
    async with serving(settings(tmp_path, debug=True, max_restarts=1)) as (_, c):

        async def restarted() -> bool:
            response = await c.get("/health")
            assert response.status_code == 200
            worker = response.json()["worker"]
            return bool(worker["crashes"] == 1 and worker["running"])

        assert (await c.post("/debug/crash-worker")).status_code == 202
        await wait_for(restarted, "the first restart")
        assert (await c.post("/debug/crash-worker")).status_code == 202

        async def given_up() -> bool:
            response = await c.get("/health")
            assert response.status_code == 200
            return bool(response.json()["supervisor"]["gave_up"] == ["worker"])

        await wait_for(given_up, "the supervisor to give up on the worker")
        health = (await c.get("/health")).json()
        assert health["worker"]["running"] is False
        assert health["worker"]["crashes"] == 2
        # Requests still work; the job waits, QUEUED, for a worker.
        job_id = await register(c, "ada@example.com")
        assert (await job_state(c, job_id))["state"] == "queued"
        # With no worker there is nothing to crash.
        assert (await c.post("/debug/crash-worker")).status_code == 409


async def test_a_job_in_hand_when_the_worker_crashes_is_handed_back_and_finished(
    tmp_path: Path,
) -> None:
    """The crash releases the running job's lease; the restarted worker completes it."""
    async with serving(settings(tmp_path, debug=True, email_delay=0.5)) as (
        app,
        client,
    ):
        job_id = await register(client, "ada@example.com")
        await wait_for_state(client, job_id, "running")
        assert (await client.post("/debug/crash-worker")).status_code == 202

        job = await wait_for_state(client, job_id, "succeeded")

        # The released attempt was given back, so the job took one attempt.
        assert job["attempts"] == 1
        kinds = [e.kind.value for _, e in await app.queue.events(job_id=job_id)]
        assert kinds == ["enqueued", "started", "released", "started", "succeeded"]
        assert len(app.accounts.outbox()) == 1


# -- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("grace", -1, "grace must be >= 0 seconds, got -1"),
        ("port", 70000, "port must be an int in 0..65535"),
        ("concurrency", 0, "concurrency must be an int >= 1, got 0"),
        ("cleanup_period", 0, "cleanup_period must be > 0 seconds, got 0"),
    ],
)
def test_settings_refuse_bad_values_by_name(
    option: str, value: Any, message: str
) -> None:
    """Settings name the option that is wrong and the value given."""
    with pytest.raises(ValueError, match=message):
        Settings(db="jobs.db", **{option: value})


def test_the_command_line_refuses_bad_settings_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option value ends the program at once with a one-line error."""
    status = webapp.main(["--db", str(tmp_path / "jobs.db"), "--grace", "-1"])
    assert status == 2
    assert capsys.readouterr().err == "error: grace must be >= 0 seconds, got -1.0\n"


# -- real processes and signals -------------------------------------------------


class AppProcess:
    """The app started with ``python -m jobkit.examples.webapp``, killed on close."""

    def __init__(self, tmp_path: Path, name: str, *options: str) -> None:
        self.stdout = tmp_path / f"{name}.out"
        self.stderr = tmp_path / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobkit.examples.webapp", *options],
                stdout=out,
                stderr=err,
            )

    def wait_for_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.stdout.read_text().splitlines()
            if lines:
                return lines[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited early:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"the app did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.stderr.read_text()

    def steps(self, db: Path) -> list[Step]:
        return load_timeline(self.stderr, db)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    started: list[AppProcess] = []

    def start(name: str, *options: str) -> AppProcess:
        app = AppProcess(tmp_path, name, *options)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


def sync_wait_for_state(client: httpx.Client, job_id: int, state: str) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if client.get(f"/jobs/{job_id}").json()["state"] == state:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not become {state}")


def register_sync(client: httpx.Client) -> int:
    response = client.post("/users", json={"email": "ada@example.com", "name": "A"})
    assert response.status_code == 201, response.text
    job_id: int = response.json()["job_id"]
    return job_id


def stored_job(db: Path, job_id: int) -> tuple[str, int, float | None]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT state, attempts, lease_until FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"job {job_id} is not in the database"
    return row[0], row[1], row[2]


def times(steps: list[Step]) -> dict[str, float]:
    """Seconds after the shutdown request of each step's first occurrence."""
    found: dict[str, float] = {}
    for name, at in since_shutdown(steps):
        found.setdefault(name, at)
    return found


def sigterm_while_a_job_runs(
    launch: Callable[..., AppProcess], db: Path, *, delay: float, grace: float
) -> tuple[AppProcess, int]:
    app = launch(
        "app",
        "--db", str(db), "--port", "0", "--grace", str(grace),
        "--email-delay", str(delay), "--poll-interval", "0.05",
    )  # fmt: skip
    with httpx.Client(base_url=app.wait_for_url(), timeout=5) as client:
        job_id = register_sync(client)
        sync_wait_for_state(client, job_id, "running")
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(timeout=grace + 15) == 0, app.log()
    return app, job_id


@pytest.mark.slow
def test_sigterm_lets_the_job_in_hand_finish_within_the_grace_period(
    launch: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """SIGTERM mid-job: the server stops, the job finishes, the process exits 0."""
    db = tmp_path / "jobs.db"
    app, job_id = sigterm_while_a_job_runs(launch, db, delay=0.5, grace=10.0)

    assert stored_job(db, job_id) == ("succeeded", 1, None)
    at = times(app.steps(db))
    # The server stopped taking requests at once, not after the job.
    assert at["server_closing"] <= at["server_stopped"] < at["job_succeeded"]
    assert at["cleanup_stopped"] < at["job_succeeded"]
    assert at["job_succeeded"] <= at["worker_stopped"] <= at["stopped"] <= at["exit"]
    assert "job_released" not in at


@pytest.mark.slow
def test_sigterm_hands_back_a_job_that_outlasts_the_grace_period(
    launch: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """A job longer than the grace is left QUEUED, unleased; the next start runs it."""
    db = tmp_path / "jobs.db"
    grace = 0.5
    app, job_id = sigterm_while_a_job_runs(launch, db, delay=60.0, grace=grace)

    # Queued again with its attempt given back: not running, not lost.
    assert stored_job(db, job_id) == ("queued", 0, None)
    at = times(app.steps(db))
    assert at["job_released"] >= grace  # the worker waited the whole grace
    assert at["job_released"] <= at["worker_stopped"] <= at["exit"]
    assert "email_sent" not in at

    again = launch("again", "--db", str(db), "--port", "0", "--email-delay", "0.01")
    with httpx.Client(base_url=again.wait_for_url(), timeout=5) as client:
        sync_wait_for_state(client, job_id, "succeeded")
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(timeout=15) == 0, again.log()
    assert stored_job(db, job_id) == ("succeeded", 1, None)


@pytest.mark.slow
def test_a_second_sigint_stops_at_once_and_still_hands_the_job_back(
    launch: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """Ctrl-C twice cuts the grace short: exit 130, the job QUEUED and unleased."""
    db = tmp_path / "jobs.db"
    app = launch(
        "app",
        "--db", str(db), "--port", "0", "--grace", "60",
        "--email-delay", "60", "--poll-interval", "0.05",
    )  # fmt: skip
    with httpx.Client(base_url=app.wait_for_url(), timeout=5) as client:
        job_id = register_sync(client)
        sync_wait_for_state(client, job_id, "running")
    app.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    while not any(s.name == "shutdown" for s in read_steps(app.log().splitlines())):
        assert time.monotonic() < deadline, app.log()
        time.sleep(0.02)
    app.proc.send_signal(signal.SIGINT)

    assert app.proc.wait(timeout=20) == 130, app.log()
    assert stored_job(db, job_id) == ("queued", 0, None)


@pytest.mark.slow
def test_a_taken_port_ends_the_process_with_status_1_and_a_clear_message(
    launch: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """If the port is in use the app says so and exits 1 instead of hanging."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        app = launch("app", "--db", str(tmp_path / "jobs.db"), "--port", str(port))
        assert app.proc.wait(timeout=20) == 1
    messages = [json.loads(line)["message"] for line in app.log().splitlines()]
    assert any(m.startswith("cannot start: ") for m in messages), messages


@pytest.mark.postgres
async def test_the_app_runs_on_a_postgresql_url(tmp_path: Path) -> None:
    """--db takes a store URL: on PostgreSQL the welcome job is sent and succeeds."""
    import psycopg

    schema = fresh_schema()
    base = postgres_url()
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    try:
        options = {"db": url, "app_db": str(tmp_path / "app.db")}
        async with serving(settings(tmp_path, **options)) as (app, client):
            job_id = await register(client, "ada@example.com")
            job = await wait_for_state(client, job_id, "succeeded")
            assert job["task"] == webapp.WELCOME_TASK
            assert isinstance(app.store, jobkit.PostgresStore)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
