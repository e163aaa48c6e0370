"""A web page to watch and operate a job queue, served by jobkit itself.

:func:`create_app` returns an ASGI application (Starlette) for any store or
queue: an overview with charts, a paged job list, each job's detail and
timeline, dead letters to requeue or discard, schedules, the leases the
workers hold, ``/metrics`` (Prometheus text) and ``/health``. Mount it in an
application's own server, or run it with :func:`serve` (what ``jobkit
dashboard`` does). Pages are rendered on the server, charts are inline SVG,
and the only script refreshes the page: nothing is fetched from elsewhere.

It is safe by default: actions are POSTs guarded against cross-site
requests, ``read_only=True`` removes them, ``token=`` guards every page
(``Authorization: Bearer`` or a login cookie), and every piece of job data
is escaped. It needs the ``web`` extra: ``pip install 'jobkit[web]'``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import cast

import trio
from starlette.types import ASGIApp

from .._queue import Queue
from .._store import Store
from ._app import Dashboard, build

__all__ = ["create_app", "serve"]


def create_app(
    source: Store | Queue,
    *,
    read_only: bool = False,
    token: str | None = None,
    refresh: float = 5.0,
    stuck_after: float = 60.0,
    clock: Callable[[], float] | None = None,
) -> ASGIApp:
    """Return the dashboard of a store or queue as an ASGI application.

    Given a :class:`~jobkit.Queue`, actions go through it (its workers in
    this process wake at once) and the overview can tell which waiting
    tasks have no handler on it; times come from its clock. Given a store,
    times are wall-clock seconds unless ``clock`` says otherwise.
    ``refresh`` is how often open pages update themselves, in seconds (0:
    never); ``stuck_after`` is how long a due job waits before the overview
    lists its task as waiting too long.

    Example::

        >>> import trio, httpx
        >>> from jobkit import MemoryStore, NewJob
        >>> from jobkit.dashboard import create_app
        >>> store = MemoryStore()
        >>> async def main():
        ...     await store.enqueue([NewJob(task="<b>hi</b>")], now=0.0)
        ...     app = create_app(store, read_only=True, clock=lambda: 5.0)
        ...     transport = httpx.ASGITransport(app=app)
        ...     async with httpx.AsyncClient(transport=transport,
        ...                                  base_url="http://dash") as client:
        ...         page = await client.get("/jobs/1")
        ...         health = await client.get("/health")
        ...     shown = "&lt;b&gt;hi&lt;/b&gt;" in page.text
        ...     return page.status_code, shown, health.json()["status"]
        >>> trio.run(main)
        (200, True, 'ok')
    """
    dash = Dashboard(
        source,
        read_only=read_only,
        token=token,
        refresh=refresh,
        stuck_after=stuck_after,
        clock=clock,
    )
    return build(dash)


async def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with Hypercorn on trio until cancelled; start with its URL.

    ``port=0`` takes any free port. Use ``await nursery.start(serve, app)``
    to learn the address once the server listens.

    Example::

        >>> import trio, httpx
        >>> from jobkit import MemoryStore
        >>> from jobkit.dashboard import create_app, serve
        >>> async def main():
        ...     async with trio.open_nursery() as nursery:
        ...         url = await nursery.start(
        ...             lambda task_status: serve(create_app(MemoryStore()), port=0,
        ...                                       task_status=task_status))
        ...         async with httpx.AsyncClient() as client:
        ...             answer = await client.get(url + "/health")
        ...         nursery.cancel_scope.cancel()
        ...     return answer.json()["status"]
        >>> trio.run(main)
        'ok'
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve
    from hypercorn.typing import ASGIFramework

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    # Hypercorn's own start-up lines would go to stderr; a logger keeps them
    # for whoever configures logging.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        # Starlette types ASGI messages as plain dicts, Hypercorn as
        # TypedDicts; the protocol is the same.
        binds: list[str] = await nursery.start(
            functools.partial(hypercorn_serve, cast(ASGIFramework, app), config)
        )
        task_status.started(binds[0])
