"""A real web application with background jobs: one process, one nursery, one token.

An HTTP API (Starlette, served by Hypercorn on trio) registers users; each
registration enqueues a welcome e-mail that a jobkit worker in the same
process sends; a periodic clean-up prunes old outbox entries and finished
jobs. The three show the integration points of background work beside a web
server:

- **Shared state.** One :class:`Settings` object and one
  :class:`~jobkit.SQLiteStore` (through one :class:`~jobkit.Queue`) are built
  at start-up and handed to the HTTP handlers, the worker and the clean-up
  alike, as is the application's own database (:class:`Accounts`).
- **Coordinated shutdown.** One :class:`~jobkit.CancellationToken` stops all
  three: the server stops accepting connections and finishes the requests in
  flight, the worker stops claiming and lets the job in hand finish within
  ``grace`` seconds (a job that cannot finish is handed back, QUEUED, for the
  next start), and the clean-up stops between two ticks.
- **Error isolation.** A request handler that raises gets a 500 and a log
  line, and the server carries on; a worker that crashes is logged and
  restarted by a supervisor, and the server never notices.

Run it with::

    python -m jobkit.examples.webapp --db jobs.db --port 8000

then ``curl -X POST localhost:8000/users -d '{"email": "ada@example.com",
"name": "Ada"}'``, ``curl localhost:8000/jobs/1`` and ``curl
localhost:8000/health``. Logs are JSON lines on stderr; lines about the
application's lifecycle carry a ``step`` field (see
:mod:`jobkit.examples.timeline`). SIGINT or SIGTERM shuts it down gracefully
and the process exits 0; a second SIGINT stops it at once.

The routes:

- ``POST /users`` with ``{"email": ..., "name": ...}``: 201 with the user
  and the id of the welcome-email job; 422 on bad input, 409 if the address
  is taken.
- ``GET /jobs/{id}``: the job's state, attempts, result or last error;
  with ``?wait=SECONDS`` (at most 30) the answer waits until the job has
  finished or the seconds are up, whichever comes first (a long poll).
- ``GET /health``: 200 while the server answers, with the worker's state,
  its restarts and the queue's counts in the body.
- With ``--debug`` only: ``POST /debug/crash-worker`` makes the worker task
  crash (the supervisor restarts it), ``GET /debug/fail`` is a handler that
  raises.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import jobkit

from .accounts import Accounts, EmailTaken

__all__ = [
    "CatchErrors",
    "Settings",
    "WebApp",
    "WorkerCrash",
    "configure_logging",
    "main",
    "settings_from_args",
    "step",
]

log = logging.getLogger("jobkit.examples.webapp")

#: The name the welcome-email task is stored under.
WELCOME_TASK = "emails.welcome"


def step(name: str, message: str, *args: object, **fields: object) -> None:
    """Log one lifecycle step of the app: an INFO line with ``step`` and ``at``.

    ``at`` is the wall-clock time (epoch seconds) with full precision, so
    that a timeline can be drawn from the log.

    Example::

        >>> import logging
        >>> from jobkit.examples.webapp import step
        >>> logging.getLogger("jobkit.examples.webapp").disabled = True
        >>> step("demo", "nothing to see")
        >>> logging.getLogger("jobkit.examples.webapp").disabled = False
    """
    log.info(message, *args, extra={"step": name, "at": time.time(), **fields})


# -- configuration --------------------------------------------------------------


# The example checks its own settings: it uses nothing but jobkit's public API.
def _seconds(name: str, *, zero_ok: bool = False) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number of seconds, got {value!r}")
        if not (value >= 0 if zero_ok else value > 0):  # NaN fails both
            bound = ">= 0" if zero_ok else "> 0"
            raise ValueError(f"{name} must be {bound} seconds, got {value!r}")

    return check


def _default_app_db(settings: Settings) -> str:
    if settings.db in (":memory:", "memory:"):
        return ":memory:"
    if "://" in settings.db:
        # A URL (PostgreSQL, or sqlite:///): no plain file path to sit next to.
        return "webapp.app.db"
    root, _ = os.path.splitext(settings.db)
    return f"{root}.app.db"


def _check_port(_: object, __: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise ValueError(
            f"port must be an int in 0..65535 (0: any free port), got {value!r}"
        )


def _check_positive_int(name: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class Settings:
    """The app's configuration, built once and shared by the server and the workers.

    ``db`` is jobkit's job store, as a path or a URL
    (:func:`jobkit.store_from_url`: ``sqlite:///...``, ``postgresql://...``,
    ``memory:``); ``app_db`` the application's own SQLite file (users and
    outbox), by default next to a ``db`` given as a file path, with the
    suffix ``.app.db``, else ``webapp.app.db``.
    ``port=0`` takes any free port (the one chosen is logged). ``grace`` is
    how long shutdown waits for the job in hand (and for requests in
    flight). ``email_delay`` is how long sending an e-mail pretends to take.
    ``cleanup_period`` is the clean-up's interval, ``outbox_retention`` how
    old an outbox entry gets before the clean-up deletes it, and
    ``job_retention`` how long a finished job is kept (dead letters stay).
    ``max_restarts`` bounds how often the supervisor restarts a crashed
    worker. ``debug`` enables the fault switches under ``/debug/``.

    Example::

        >>> from jobkit.examples.webapp import Settings
        >>> settings = Settings(db="data/jobs.db", port=0, grace=2.0)
        >>> settings.app_db, settings.grace, settings.debug
        ('data/jobs.app.db', 2.0, False)
        >>> Settings(db="jobs.db", grace=-1)
        Traceback (most recent call last):
        ...
        ValueError: grace must be >= 0 seconds, got -1
    """

    db: str
    app_db: str = attrs.field(default=attrs.Factory(_default_app_db, takes_self=True))
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_check_port)
    grace: float = attrs.field(default=10.0, validator=_seconds("grace", zero_ok=True))
    email_delay: float = attrs.field(
        default=0.2, validator=_seconds("email_delay", zero_ok=True)
    )
    email_timeout: float = attrs.field(
        default=30.0, validator=_seconds("email_timeout")
    )
    cleanup_period: float = attrs.field(
        default=60.0, validator=_seconds("cleanup_period")
    )
    outbox_retention: float = attrs.field(
        default=7 * 24 * 3600.0, validator=_seconds("outbox_retention", zero_ok=True)
    )
    job_retention: float = attrs.field(
        default=7 * 24 * 3600.0, validator=_seconds("job_retention", zero_ok=True)
    )
    concurrency: int = attrs.field(
        default=4, validator=_check_positive_int("concurrency")
    )
    poll_interval: float = attrs.field(default=1.0, validator=_seconds("poll_interval"))
    lease: float = attrs.field(default=30.0, validator=_seconds("lease"))
    max_restarts: int = attrs.field(
        default=5, validator=_check_positive_int("max_restarts")
    )
    debug: bool = False


# -- error isolation for requests ------------------------------------------------


class CatchErrors:
    """ASGI middleware: a handler that raises gets a 500, is logged once, and no more.

    The error is logged with its traceback on the app's logger, with the
    request's method and path as structured fields; the client gets
    ``{"error": "internal server error"}`` (if the response had not started)
    and the server goes on serving other requests. Cancellation passes
    through untouched: it is how trio stops a request at shutdown.
    ``on_error`` is called with each error, e.g. to count them.

    Example::

        >>> import trio, httpx
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from starlette.routing import Route
        >>> from jobkit.examples.webapp import CatchErrors
        >>> async def broken(request):
        ...     raise KeyError("oops")
        >>> errors = []
        >>> app = Starlette(
        ...     routes=[Route("/", broken)],
        ...     middleware=[Middleware(CatchErrors, on_error=errors.append)])
        >>> async def main():
        ...     transport = httpx.ASGITransport(app=app)
        ...     async with httpx.AsyncClient(transport=transport,
        ...                                  base_url="http://app") as client:
        ...         response = await client.get("/")
        ...     return response.status_code, response.json()
        >>> trio.run(main)
        (500, {'error': 'internal server error'})
        >>> errors
        [KeyError('oops')]
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app for one connection, turning its errors into 500s."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            method, path = scope.get("method", "?"), scope.get("path", "?")
            log.error(
                "request %s %s failed: %s: %s",
                method,
                path,
                type(exc).__name__,
                exc,
                exc_info=exc,
                extra={"method": method, "path": path, "error": type(exc).__name__},
            )
            if self.on_error is not None:
                self.on_error(exc)
            if not started:
                response = JSONResponse(
                    {"error": "internal server error"}, status_code=500
                )
                await response(scope, receive, send)


# -- the application ------------------------------------------------------------


class WorkerCrash(RuntimeError):
    """The error the debug fault switch raises in the worker task.

    It stands for any bug that kills the worker task itself (rather than
    one job, which the worker would just record as a failed attempt).

    Example::

        >>> from jobkit.examples.webapp import WorkerCrash
        >>> str(WorkerCrash("crash requested"))
        'crash requested'
    """


#: How long after the grace period the supervisor cancels a part that hangs.
_BACKSTOP = 5.0


def _restart_delay(restart: int) -> float:
    """Seconds before restart number ``restart``: 0.1, 0.2, 0.4, ... up to 5."""
    return float(min(5.0, 0.1 * 2 ** (restart - 1)))


def _json_body(text: bytes) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(
            f"the request body must be a JSON object, got {type(body).__name__}"
        )
    return body


MAX_WAIT = 30.0
"""The longest ``?wait=`` a request to ``GET /jobs/{id}`` may ask for, in seconds."""


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT:  # False for NaN
        raise ValueError(
            f"wait must be a number of seconds from 0 to {MAX_WAIT:g}, got {text!r}"
        )
    return seconds


def _job_view(job: jobkit.Job) -> dict[str, Any]:
    error = None if job.last_error is None else job.last_error.splitlines()[0]
    return {
        "id": job.id,
        "task": job.task,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "result": job.result,
        "last_error": error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


class WebApp:
    """The example application: HTTP API, welcome-email worker and clean-up.

    Building it opens both databases and registers the task; :meth:`run`
    serves until the token is cancelled, then shuts everything down in
    order and returns; :meth:`aclose` closes the databases. ``asgi`` is the
    Starlette app, usable on its own with any ASGI client for tests.

    Example::

        >>> import os, tempfile, trio, httpx
        >>> import jobkit
        >>> from jobkit.examples.webapp import Settings, WebApp
        >>> db = os.path.join(tempfile.mkdtemp(), "jobs.db")
        >>> async def main():
        ...     app = WebApp(Settings(db=db, port=0, email_delay=0.01))
        ...     token = jobkit.CancellationToken()
        ...     async with trio.open_nursery() as nursery:
        ...         url = await nursery.start(app.run, token)
        ...         async with httpx.AsyncClient(base_url=url) as client:
        ...             created = await client.post(
        ...                 "/users", json={"email": "ada@example.com", "name": "Ada"})
        ...             job_url = created.json()["job_url"]
        ...             state = None
        ...             while state != "succeeded":
        ...                 state = (await client.get(job_url)).json()["state"]
        ...         token.cancel()
        ...     sent = [entry.to for entry in app.accounts.outbox()]
        ...     await app.aclose()
        ...     return created.status_code, sent
        >>> trio.run(main)
        (201, ['ada@example.com'])
    """

    def __init__(self, settings: Settings) -> None:
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a Settings, got {settings!r}")
        self.settings = settings
        """The configuration shared by every part of the app."""
        self.store = jobkit.store_from_url(settings.db)
        """jobkit's store, shared by the HTTP handlers and the worker."""
        self.queue = jobkit.Queue(self.store)
        """The queue facade over :attr:`store`, with the welcome-email task."""
        self.accounts = Accounts(settings.app_db)
        """The app's own database: users and the e-mail outbox."""
        self.url: str | None = None
        """The server's address once it listens, e.g. ``http://127.0.0.1:8000``."""
        self.welcome = self.queue.task(
            WELCOME_TASK,
            retry=jobkit.RetryPolicy(5, jobkit.Backoff.exponential(1.0, 60.0)),
            timeout=settings.email_timeout,
        )(self._send_welcome_email)
        """The task that sends a new user's welcome e-mail."""
        self.asgi = self._build_asgi()
        """The Starlette application."""
        self._worker: jobkit.Worker | None = None
        self._worker_starts = 0
        self._worker_crashes = 0
        self._request_errors = 0
        self._crash_requested: trio.Event | None = None
        self._supervisor: jobkit.Supervisor | None = None
        self._given_up: list[str] = []

    def __repr__(self) -> str:
        return f"<WebApp {self.url or 'not listening'} on {self.settings.db!r}>"

    # -- the job -------------------------------------------------------------------

    async def _send_welcome_email(self, user_id: int) -> dict[str, Any]:
        user = self.accounts.get_user(user_id)
        if user is None:
            # Retrying cannot make a deleted user reappear.
            raise jobkit.Permanent(f"no user with id {user_id}")
        # Stands for the SMTP round trip.
        await trio.sleep(self.settings.email_delay)
        job = jobkit.current_job()
        first = self.accounts.record_email(
            job_id=job.id,
            user_id=user.id,
            to=user.email,
            subject=f"Welcome, {user.name}!",
            now=time.time(),
        )
        step(
            "email_sent",
            "welcome e-mail for user %d sent by job %d",
            user.id,
            job.id,
            job_id=job.id,
        )
        return {"to": user.email, "first_delivery": first}

    # -- HTTP ----------------------------------------------------------------------

    def _build_asgi(self) -> Starlette:
        routes = [
            Route("/users", self._create_user, methods=["POST"]),
            Route("/jobs/{job_id:int}", self._get_job, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
        ]
        if self.settings.debug:
            routes += [
                Route("/debug/crash-worker", self._crash_worker, methods=["POST"]),
                Route("/debug/fail", self._fail, methods=["GET"]),
            ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(CatchErrors, on_error=self._count_request_error)],
            max_body_size=64 * 1024,
        )

    def _count_request_error(self, error: Exception) -> None:
        self._request_errors += 1

    async def _create_user(self, request: Request) -> Response:
        try:
            body = _json_body(await request.body())
            user = self.accounts.add_user(
                body.get("email"), body.get("name"), now=time.time()
            )
        except EmailTaken as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        # Two databases cannot commit together: if the job cannot be stored,
        # undo the user so that a retry of the request starts clean.
        try:
            job_id = await self.welcome.enqueue(user_id=user.id)
        except BaseException:
            self.accounts.delete_user(user.id)
            raise
        return JSONResponse(
            {
                "user": attrs.asdict(user),
                "job_id": job_id,
                "job_url": f"/jobs/{job_id}",
            },
            status_code=201,
        )

    async def _get_job(self, request: Request) -> Response:
        job_id: int = request.path_params["job_id"]
        try:
            wait = _wait_seconds(request.query_params.get("wait"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        try:
            job = await self.queue.get(job_id)
            if wait and job.state not in jobkit.TERMINAL_STATES:
                with trio.move_on_after(wait) as waited:
                    job = await self.queue.wait(
                        job_id, poll_interval=self.settings.poll_interval
                    )
                if waited.cancelled_caught:  # not finished: say where it is now
                    job = await self.queue.get(job_id)
        except jobkit.JobNotFound:
            return JSONResponse({"error": f"no job with id {job_id}"}, status_code=404)
        return JSONResponse(_job_view(job))

    async def _health(self, request: Request) -> Response:
        # Liveness: 200 whenever the server answers. The body says how the
        # background side is doing, for a person or a readiness check.
        counts = await self.queue.counts()
        worker = self._worker
        return JSONResponse(
            {
                "status": "ok",
                "worker": {
                    "running": worker is not None,
                    "starts": self._worker_starts,
                    "crashes": self._worker_crashes,
                    "statistics": (
                        None if worker is None else attrs.asdict(worker.statistics())
                    ),
                },
                "supervisor": {
                    "restarts": (
                        0
                        if self._supervisor is None
                        else self._supervisor.statistics().restarted
                    ),
                    "gave_up": self._given_up,
                },
                "request_errors": self._request_errors,
                "jobs": {state.value: counts.total(state) for state in jobkit.JobState},
            }
        )

    async def _crash_worker(self, request: Request) -> Response:
        if self._crash_requested is None:
            return JSONResponse({"error": "the worker is not running"}, status_code=409)
        self._crash_requested.set()
        return JSONResponse({"crash": "requested"}, status_code=202)

    async def _fail(self, request: Request) -> Response:
        raise RuntimeError("this handler fails on purpose (debug fault switch)")

    # -- background tasks ------------------------------------------------------------

    async def _serve_http(
        self,
        token: jobkit.CancellationToken,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        config = HypercornConfig()
        config.bind = [f"{self.settings.host}:{self.settings.port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        # Requests in flight at shutdown get the same grace as the job in hand.
        config.graceful_timeout = self.settings.grace

        async def stop_accepting() -> None:
            await token.wait()
            step("server_closing", "server stops accepting connections")

        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                functools.partial(
                    serve,
                    # Starlette types ASGI messages as plain dicts, Hypercorn
                    # as TypedDicts; the protocol is the same.
                    cast(ASGIFramework, self.asgi),
                    config,
                    shutdown_trigger=stop_accepting,
                )
            )
            self.url = binds[0]
            step("listening", "listening on %s", self.url, url=self.url)
            task_status.started(self.url)
        step("server_stopped", "server stopped; requests in flight are done")

    async def _work(self, token: jobkit.CancellationToken) -> None:
        """Run one worker until shutdown, or until the fault switch crashes it."""
        crash = self._crash_requested = trio.Event()
        crashed = False
        worker = jobkit.Worker(
            self.queue,
            concurrency=self.settings.concurrency,
            lease=self.settings.lease,
            poll_interval=self.settings.poll_interval,
            shutdown=token,
            grace=self.settings.grace,
        )
        self._worker_starts += 1
        try:
            async with trio.open_nursery() as nursery:

                async def crash_when_asked() -> None:
                    nonlocal crashed
                    await crash.wait()
                    crashed = True
                    # Cancelling the worker from outside makes it hand back
                    # the leases of the jobs it holds, as a real crash that
                    # unwinds would; a hard kill leaves them to expire.
                    nursery.cancel_scope.cancel()

                nursery.start_soon(crash_when_asked)
                self._worker = worker
                step("worker_started", "worker started", start=self._worker_starts)
                await worker.run()
                nursery.cancel_scope.cancel()
        finally:
            self._worker = None
            self._crash_requested = None
        if crashed:
            self._worker_crashes += 1
            step("worker_crashed", "worker crashed", start=self._worker_starts)
            raise WorkerCrash("the worker crashed (debug fault switch)")
        stats = worker.statistics()
        step(
            "worker_stopped",
            "worker stopped: %d succeeded, %d released",
            stats.succeeded,
            stats.released,
            succeeded=stats.succeeded,
            released=stats.released,
        )

    async def _clean_up(self, token: jobkit.CancellationToken) -> None:
        """Prune old outbox entries and jobs every ``cleanup_period``, between ticks."""
        ticker = jobkit.interval(
            self.settings.cleanup_period,
            missed_tick_behavior=jobkit.MissedTickBehavior.SKIP,
        )
        # Only the wait for the next tick is cancellable: a clean-up that has
        # started finishes, so shutdown never leaves one half done.
        while await token.run_until_cancelled(ticker.tick) is not None:
            removed = self.accounts.prune_outbox(
                before=time.time() - self.settings.outbox_retention
            )
            purged = await self.queue.purge(self.settings.job_retention)
            counts = await self.queue.counts()
            step(
                "cleanup_tick",
                "clean-up removed %d outbox entries and %d finished jobs; "
                "%d jobs queued",
                removed,
                purged,
                counts.total(jobkit.JobState.QUEUED),
                removed=removed,
                purged=purged,
            )
        step("cleanup_stopped", "clean-up stopped between ticks")

    async def _supervise(self, token: jobkit.CancellationToken) -> None:
        """Run the worker and the clean-up under a supervisor that restarts them."""
        restart = jobkit.Restart(
            max_restarts=self.settings.max_restarts,
            backoff=_restart_delay,
            # Crashes a minute apart are separate incidents, not a crash loop.
            within=60.0,
        )
        async with jobkit.open_supervisor(
            name="webapp",
            on_error=self._gave_up,
            # The worker drains by itself within ``grace``; the supervisor
            # only steps in if that hangs, and restarts nothing after the
            # shutdown request.
            token=token,
            grace=self.settings.grace + _BACKSTOP,
        ) as supervisor:
            self._supervisor = supervisor
            supervisor.spawn(self._work, token, name="worker", restart=restart)
            supervisor.spawn(self._clean_up, token, name="clean-up", restart=restart)

    def _gave_up(self, handle: jobkit.TaskHandle[Any], error: Exception) -> None:
        # The supervisor has logged the traceback; the health check says it too.
        self._given_up.append(handle.name)
        step(
            "gave_up",
            "%s stays down after %d restarts",
            handle.name,
            self.settings.max_restarts,
            part=handle.name,
        )

    async def _relay_shutdown(
        self, token: jobkit.CancellationToken, parts: jobkit.CancellationToken
    ) -> None:
        await token.wait()
        step(
            "shutdown",
            "shutdown requested: grace %gs",
            self.settings.grace,
            grace=self.settings.grace,
        )
        parts.cancel()

    async def run(
        self,
        token: jobkit.CancellationToken,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP, run the worker and the clean-up until ``token`` is cancelled.

        ``await nursery.start(app.run, token)`` returns the server's URL
        once it listens. When the token is cancelled, the server stops
        accepting and finishes the requests in flight, the worker finishes
        the job in hand within ``grace`` seconds (or hands it back), the
        clean-up stops before its next tick, and ``run`` returns. A worker
        that crashes is restarted, up to ``max_restarts`` times; the server
        is not affected. See the class docstring for an example.
        """
        # The parts watch a token of their own, cancelled just after the
        # request is logged, so that the log always shows the request first.
        parts = jobkit.CancellationToken()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._relay_shutdown, token, parts)
            url: str = await nursery.start(self._serve_http, parts)
            nursery.start_soon(self._supervise, parts)
            task_status.started(url)
        step("stopped", "all parts of the app have stopped")

    async def aclose(self) -> None:
        """Close the job store and the app's database.

        Example::

            >>> import os, tempfile, trio
            >>> from jobkit.examples.webapp import Settings, WebApp
            >>> app = WebApp(Settings(db=os.path.join(tempfile.mkdtemp(), "j.db")))
            >>> trio.run(app.aclose)
        """
        await self.store.aclose()
        self.accounts.close()


# -- the command line ------------------------------------------------------------


def _exact_time(record: logging.LogRecord) -> bool:
    # The formatter's ``time`` has milliseconds; a timeline of a shutdown
    # that takes a few of them needs the record's own float.
    if not hasattr(record, "at"):
        record.at = record.created
    return True


def configure_logging(level: int | str = logging.INFO) -> None:
    """Send every log record to stderr as one line of JSON.

    Each line carries ``at``, the record's time in epoch seconds at full
    precision, besides the formatter's ISO ``time``.

    Example::

        >>> import logging
        >>> from jobkit.examples.webapp import configure_logging
        >>> before = logging.getLogger().handlers[:]
        >>> configure_logging("WARNING")
        >>> logging.getLogger().handlers = before
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(jobkit.JSONFormatter(static={"pid": os.getpid()}))
    handler.addFilter(_exact_time)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


def _parser() -> argparse.ArgumentParser:
    defaults = attrs.fields(Settings)
    parser = argparse.ArgumentParser(
        prog="python -m jobkit.examples.webapp",
        description=(
            "An HTTP API whose requests enqueue jobs that a worker in the same "
            "process runs, next to a periodic clean-up. SIGINT/SIGTERM shut it "
            "down gracefully."
        ),
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("JOBKIT_DB") or None,
        required=not os.environ.get("JOBKIT_DB"),
        help="jobkit's job store: a file path or a URL (default: $JOBKIT_DB)",
    )
    parser.add_argument(
        "--app-db", help="the app's own database file (default: DB with .app.db)"
    )
    parser.add_argument(
        "--host", default=defaults.host.default, help="address to listen on"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=defaults.port.default,
        help="port to listen on; 0 takes any free port (default: %(default)s)",
    )

    def seconds(name: str, what: str) -> None:
        default = getattr(defaults, name.replace("-", "_")).default
        parser.add_argument(
            f"--{name}",
            type=float,
            default=default,
            help=f"{what} (seconds, default: %(default)s)",
        )

    seconds("grace", "how long shutdown waits for the job in hand")
    seconds("email-delay", "how long sending an e-mail pretends to take")
    seconds("email-timeout", "how long one e-mail attempt may take")
    seconds("cleanup-period", "how often the clean-up runs")
    seconds("outbox-retention", "how long sent e-mails are kept")
    seconds("poll-interval", "how often the worker looks for jobs at most")
    seconds("lease", "how long a claimed job stays leased without renewal")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency.default,
        help="jobs the worker runs at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=defaults.max_restarts.default,
        help="restarts of a crashed worker within a minute (default: %(default)s)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="enable the /debug/ fault switches"
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR"
    )
    return parser


def settings_from_args(argv: Sequence[str]) -> tuple[Settings, str]:
    """Parse command-line arguments into :class:`Settings` and a log level.

    Example::

        >>> from jobkit.examples.webapp import settings_from_args
        >>> settings, level = settings_from_args(["--db", "j.db", "--port", "0"])
        >>> settings.port, settings.app_db, level
        (0, 'j.app.db', 'INFO')
    """
    args = _parser().parse_args(list(argv))
    options: dict[str, Any] = {
        field.name: getattr(args, field.name)
        for field in attrs.fields(Settings)
        if getattr(args, field.name, None) is not None
    }
    return Settings(**options), args.log_level


async def _serve(settings: Settings) -> None:
    app = WebApp(settings)
    token = jobkit.CancellationToken()
    try:
        async with jobkit.cancel_on_signals(token), trio.open_nursery() as nursery:
            url = await nursery.start(app.run, token)
            # The one line on stdout: where to find the server.
            print(url, flush=True)
    finally:
        await app.aclose()


def _leaves(group: BaseExceptionGroup[OSError]) -> list[OSError]:
    found: list[OSError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += _leaves(exc)
        else:
            found.append(exc)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example web app from the command line; return the exit status.

    The status is 0 after a graceful shutdown (SIGINT or SIGTERM), 1 if the
    app cannot start (e.g. the port is taken), 2 for bad options, and 130
    when a second SIGINT cut the shutdown short.

    Example::

        >>> from jobkit.examples.webapp import main
        >>> try:
        ...     main(["--help"])
        ... except SystemExit as exc:
        ...     print("exit status", exc.code)
        usage: python -m jobkit.examples.webapp [-h] --db DB ...
        exit status 0
    """
    try:
        settings, level = settings_from_args(sys.argv[1:] if argv is None else argv)
        configure_logging(level.upper())
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = False
    try:
        try:
            trio.run(_serve, settings)
        except* OSError as group:
            # Most likely the port is taken: say so, without a traceback.
            failed = True
            for error in _leaves(group):
                log.error("cannot start: %s", error)
    except KeyboardInterrupt:
        step("exit", "stopped at once by a second SIGINT; exiting with status 130")
        return 130
    if failed:
        return 1
    step("exit", "exiting with status 0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
