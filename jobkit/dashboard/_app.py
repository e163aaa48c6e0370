"""The dashboard's ASGI application: its settings, its guards, its routes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._queue import Queue
from .._store import Store
from . import _queries
from ._layout import base_path, link
from ._pages import (
    dead_action,
    dead_page,
    health_page,
    job_action,
    job_page,
    jobs_page,
    login_page,
    metrics_page,
    overview,
    schedules_page,
    workers_page,
)
from ._static import CSS, ICON, JS

__all__ = ["Dashboard", "Forbidden", "build"]

Handler = Callable[[Request], Awaitable[Response]]

_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Forbidden(Exception):
    """A request the guards refuse, with the reason shown to the client."""


class Dashboard:
    """What every page needs: the store, the clock, the settings, the guards."""

    def __init__(
        self,
        source: Store | Queue,
        *,
        read_only: bool,
        token: str | None,
        refresh: float,
        stuck_after: float,
        clock: Callable[[], float] | None,
    ) -> None:
        if isinstance(source, Queue):
            self.queue: Queue | None = source
            self._store_of: Callable[[], Store] = lambda: source.store
            self.clock = clock or source.clock
        elif isinstance(source, Store):
            self.queue = None
            self._store_of = lambda: source
            self.clock = clock or time.time
        else:
            raise TypeError(
                f"create_app() takes a jobkit Store or Queue, got {source!r}"
            )
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string, or None for no token")
        if not refresh >= 0:
            raise ValueError(f"refresh must be >= 0 seconds, got {refresh!r}")
        if not stuck_after > 0:
            raise ValueError(f"stuck_after must be > 0 seconds, got {stuck_after!r}")
        self.read_only = read_only
        self.token = token
        self.refresh = refresh
        self.stuck_after = stuck_after
        # Per process: a restart invalidates open forms and login cookies.
        self._secret = secrets.token_bytes(32)
        self.csrf = self._sign("csrf")
        self.activity = _queries.Activity()
        self._activity_lock = trio.Lock()

    @property
    def store(self) -> Store:
        return self._store_of()

    def _sign(self, what: str) -> str:
        return hmac.new(self._secret, what.encode(), hashlib.sha256).hexdigest()

    # -- guards ------------------------------------------------------------------

    def session_cookie(self) -> str:
        assert self.token is not None
        return self._sign("session:" + self.token)

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get("jobkit_session", "")
        return hmac.compare_digest(cookie.encode(), self.session_cookie().encode())

    def check_post(self, request: Request, form: dict[str, str]) -> None:
        """Refuse a POST another site made the browser send."""
        if request.headers.get("sec-fetch-site", "same-origin") not in (
            "same-origin",
            "none",
        ):
            raise Forbidden("cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and not _same_host(origin, request):
            raise Forbidden(f"request from another origin ({origin}) refused")
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.csrf.encode()):
            raise Forbidden(
                "the form's anti-forgery token is missing or stale; reload the page"
            )

    # -- reads -------------------------------------------------------------------

    async def activity_now(self, now: float) -> _queries.Activity:
        # One reader at a time: two would fold the same events twice.
        async with self._activity_lock:
            await self.activity.update(self.store, now)
        return self.activity


def _same_host(origin: str, request: Request) -> bool:
    # Host and port only: behind a proxy that ends TLS the scheme differs,
    # and the proxy may pass the browser's host on in X-Forwarded-Host.
    host = urllib.parse.urlsplit(origin).netloc
    allowed = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    return bool(host) and host in allowed


# -- the application -------------------------------------------------------------------


class _Guard:
    """ASGI middleware: security headers on every answer, the token before any page."""

    def __init__(self, app: ASGIApp, dash: Dashboard) -> None:
        self.app = app
        self.dash = dash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        path = request.url.path[len(base_path(request)) :]
        if not (
            path == "/login" or path.startswith("/static/")
        ) and not self.dash.authorized(request):
            if "text/html" in request.headers.get("accept", ""):
                target = link(request, "/login", next=request.url.path)
                response: Response = RedirectResponse(target, status_code=303)
            else:
                response = PlainTextResponse(
                    "a token is needed: send 'Authorization: Bearer TOKEN'",
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def build(dash: Dashboard) -> ASGIApp:
    """The app of ``dash``'s pages, behind its guard."""

    def bind(page: Callable[[Dashboard, Request], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            return await page(dash, request)

        return handler

    async def css(request: Request) -> Response:
        return Response(CSS, media_type="text/css")

    async def js(request: Request) -> Response:
        return Response(JS, media_type="text/javascript")

    async def icon(request: Request) -> Response:
        return Response(ICON, media_type="image/svg+xml")

    routes = [
        Route("/", bind(overview)),
        Route("/jobs", bind(jobs_page)),
        Route("/jobs/{job_id:int}", bind(job_page)),
        Route("/dead", bind(dead_page)),
        Route("/schedules", bind(schedules_page)),
        Route("/workers", bind(workers_page)),
        Route("/metrics", bind(metrics_page)),
        Route("/health", bind(health_page)),
        Route("/static/dashboard.css", css),
        Route("/static/dashboard.js", js),
        Route("/static/icon.svg", icon),
    ]
    if not dash.read_only:
        routes += [
            Route(
                "/jobs/{job_id:int}/{verb:str}",
                bind(job_action),
                methods=["POST"],
            ),
            Route("/dead/{verb:str}-all", bind(dead_action), methods=["POST"]),
        ]
    if dash.token is not None:
        routes.append(Route("/login", bind(login_page), methods=["GET", "POST"]))

    async def forbidden(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"forbidden: {exc}", status_code=403)

    app = Starlette(routes=routes, exception_handlers={Forbidden: forbidden})
    return _Guard(app, dash)
