"""A live dashboard for the browser tests and the screenshots: a real worker,
a real SQLite file, Hypercorn on 127.0.0.1, all on trio in a thread of its own.

``reports.build`` fails (ConnectionError) while ``site.broken`` is set, and
goes dead after two attempts; clearing it lets a requeued job succeed.
``legacy.sync`` jobs sit on a queue no worker serves. A second server, on
another port and so another origin, serves a page that tries to post to
the dashboard behind the reader's back.
"""

from __future__ import annotations

import functools
import os
import queue as thread_queue
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

import jobkit
from jobkit._job import Failure, Success
from jobkit.dashboard import create_app, serve

SERVED = ["default", "emails", "reports", "images"]
SCRIPT_PAYLOAD = "<script>window.pwned = 1</script>"


@attrs.define
class Site:
    """The running site, as the test thread sees it."""

    url: str
    evil_url: str
    queue: jobkit.Queue
    broken: threading.Event
    trio_token: trio.lowlevel.TrioToken

    def call(self, fn: Any, *args: Any) -> Any:
        """Run the async ``fn(*args)`` on the site's event loop; return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self.trio_token)


def build_queue(db: str, broken: threading.Event) -> jobkit.Queue:
    queue = jobkit.Queue(jobkit.SQLiteStore(db))

    @queue.task("emails.send", queue="emails")
    async def send(to: str, subject: str = "hello") -> dict[str, str]:
        await trio.sleep(0.02)
        return {"sent_to": to}

    @queue.task(
        "reports.build",
        queue="reports",
        retry=jobkit.RetryPolicy(2, jobkit.Backoff.constant(0.1)),
    )
    async def build(day: str) -> str:
        await trio.sleep(0.05)
        if broken.is_set():
            raise ConnectionError(
                "report service at reports.internal:8443 refused the connection"
            )
        return f"report-{day}.pdf"

    @queue.task("exports.run", queue="default")
    async def export(table: str, seconds: float) -> str:
        await trio.sleep(seconds)
        return f"{table}.csv"

    @queue.task("images.resize", queue="images")
    def resize(path: str, width: int = 800) -> dict[str, Any]:
        return {"path": path, "width": width}

    return queue


async def backfill(store: jobkit.Store, now: float, *, minutes: int = 14) -> None:
    """Fifteen minutes of history in the event log: jobs run in the past."""
    rng = random.Random(8)
    start = now - minutes * 60
    t = start
    while t < now - 20:
        n = rng.randint(6, 16) + int(8 * (t - start) / (now - start))
        jobs = [
            jobkit.NewJob(
                task="emails.send",
                queue="emails",
                payload={"to": f"user{i}@example.com"},
                max_attempts=3,
            )
            for i in range(n)
        ]
        await store.enqueue(jobs, now=t)
        claimed = await store.claim(queues=["emails"], limit=n, now=t, lease=30)
        outcomes: list[Any] = []
        failing = rng.random() < 0.3
        ended = t + rng.uniform(1, 20)
        for job in claimed:
            if failing and rng.random() < 0.25:
                error = "TimeoutError: smtp.example.com did not answer in 10 s"
                outcomes.append(Failure(job.id, 1, error, ended + 5))
            else:
                outcomes.append(Success(job.id, 1, {"sent_to": job.payload["to"]}))
        await store.settle(outcomes, now=ended)
        t += 30


async def _evil(dashboard_url: str, request: Request) -> HTMLResponse:
    target = request.query_params.get("target", "/jobs/1/cancel")
    return HTMLResponse(
        '<!doctype html><title>win a prize</title><body><form id="f" method="post" '
        f'action="{dashboard_url}{target}"><input name="csrf" value="guess"></form>'
        "<script>document.getElementById('f').submit()</script></body>"
    )


async def _run(
    db: str,
    broken: threading.Event,
    out: thread_queue.Queue[Site | BaseException],
    stop: trio.Event,
    *,
    history: bool,
    refresh: float,
    token: str | None,
) -> None:
    queue = build_queue(db, broken)
    now = queue.clock()
    if history:
        await backfill(queue.store, now)
    app = create_app(queue, refresh=refresh, token=token)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                jobkit.run_worker,
                queue,
                queues=SERVED,
                concurrency=4,
                poll_interval=0.1,
            )
        )
        url = await nursery.start(functools.partial(serve, app, port=0))
        evil_app = Starlette(routes=[Route("/", functools.partial(_evil, url))])
        evil_url = await nursery.start(functools.partial(serve, evil_app, port=0))
        out.put(Site(url, evil_url, queue, broken, trio.lowlevel.current_trio_token()))
        await stop.wait()
        nursery.cancel_scope.cancel()
    await queue.store.aclose()


@contextmanager
def running_site(
    directory: str,
    *,
    history: bool = False,
    refresh: float = 1.0,
    token: str | None = None,
) -> Iterator[Site]:
    """Serve a dashboard over a worker in a thread; stop both on leaving."""
    broken = threading.Event()
    broken.set()
    out: thread_queue.Queue[Site | BaseException] = thread_queue.Queue()
    stop_box: list[trio.Event] = []

    def main() -> None:
        async def body() -> None:
            stop = trio.Event()
            stop_box.append(stop)
            await _run(
                os.path.join(directory, "jobs.db"),
                broken,
                out,
                stop,
                history=history,
                refresh=refresh,
                token=token,
            )

        try:
            trio.run(body)
        except BaseException as exc:  # handed to the test thread
            out.put(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    got = out.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        trio.from_thread.run_sync(stop_box[0].set, trio_token=got.trio_token)
        thread.join(timeout=30)


async def populate(site: Site) -> dict[str, int]:
    """The jobs every page shows: sent e-mails, a dead report, a stuck task."""
    queue = site.queue
    now = queue.clock()
    store = queue.store
    ids: dict[str, int] = {}
    ids["script"] = await queue.enqueue(
        "emails.send", {"to": SCRIPT_PAYLOAD, "subject": "<b>bold</b> & co"}
    )
    for day in ("2026-11-29", "2026-11-30"):
        ids[f"report {day}"] = await queue.enqueue("reports.build", {"day": day})
    ids["resize"] = await queue.enqueue(
        "images.resize", {"path": "/srv/img/cat.png", "width": 640}
    )
    [ids["legacy"]] = await store.enqueue(
        [
            jobkit.NewJob(
                task="legacy.sync",
                queue="legacy",
                payload={"account": 42},
                run_at=now - 600,
            )
        ],
        now=now - 600,
    )
    for table in ("orders", "invoices"):
        ids[f"export {table}"] = await queue.enqueue(
            "exports.run", {"table": table, "seconds": 3600}
        )
    ids["later"] = await queue.enqueue(
        "emails.send", {"to": "grace@example.com"}, run_at=now + 3600
    )
    await queue.schedule(
        "reports.build", {"day": "today"}, cron="0 3 * * *", name="nightly-report"
    )
    await queue.schedule(
        "emails.send",
        {"to": "ops@example.com", "subject": "still alive"},
        every=3600,
        start=now + 600,
        name="hourly-heartbeat",
        misfire=jobkit.MissedTickBehavior.BURST,
        max_burst=3,
    )
    return ids
