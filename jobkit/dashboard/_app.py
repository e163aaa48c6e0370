"""The dashboard's ASGI application: pages, actions, guards."""

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
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._job import TERMINAL_STATES, Job, JobState, TransitionError
from .._metrics import attempt_spans, collect_metrics
from .._queue import Queue
from .._store import JobNotFound, ScheduleStore, Store, StoreError
from . import _queries
from ._html import Safe, age, join, pretty_json, render, when
from ._static import CSS, JS
from ._svg import activity_chart, failure_chart, timeline_chart

__all__ = ["Dashboard"]

Handler = Callable[[Request], Awaitable[Response]]

_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_NAV = (
    ("", "Overview"),
    ("/jobs", "Jobs"),
    ("/dead", "Dead letters"),
    ("/schedules", "Schedules"),
    ("/workers", "Workers"),
    ("/metrics", "Metrics"),
)

_DONE = {
    "cancelled": "Cancelled job {n}.",
    "requeued": "Requeued job {n}.",
    "discarded": "Discarded job {n}.",
    "requeued-all": "Requeued {n} dead jobs.",
    "discarded-all": "Discarded {n} dead jobs.",
}

# "Requeue all" and "discard all" act on at most this many jobs per click, in
# batches, so that one click never holds the store for long.
_ALL_LIMIT = 10_000
_ALL_BATCH = 200


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
        if origin is not None and origin != _own_origin(request):
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


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _url(request: Request, path: str, **query: object) -> str:
    shown = {k: v for k, v in query.items() if v not in (None, "")}
    tail = "?" + urllib.parse.urlencode(shown) if shown else ""
    return _base(request) + path + tail


async def _form(request: Request) -> dict[str, str]:
    # URL-encoded forms only: the pages send nothing else, and parsing them
    # needs no extra dependency.
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body).items()}


# -- page layout -----------------------------------------------------------------------


def _state(state: JobState) -> Safe:
    return render('<span class="state {}">{}</span>', state.value, state.value)


def _page(
    dash: Dashboard,
    request: Request,
    title: str,
    body: Safe,
    *,
    here: str,
    live: bool = True,
    status: int = 200,
) -> HTMLResponse:
    nav = join(
        render(
            '<a href="{}"{}>{}</a>',
            _base(request) + (path or "/"),
            Safe(' class="here"') if path == here else Safe(""),
            text,
        )
        for path, text in _NAV
    )
    mode = "read-only" if dash.read_only else ""
    flash = _flash(request)
    refresh = (
        render(
            '<p class="refresh">Refreshes every {} s · '
            '<label><input type="checkbox" id="pause"> pause</label></p>',
            f"{dash.refresh:g}",
        )
        if live and dash.refresh > 0
        else Safe("")
    )
    live_attr = render(' data-refresh="{}"', f"{dash.refresh:g}") if live else ""
    html = render(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{} · jobkit</title>"
        '<link rel="stylesheet" href="{}/static/dashboard.css">'
        '<script src="{}/static/dashboard.js" defer></script></head><body>'
        '<header><div class="brand">jobkit</div><nav>{}</nav>'
        '<div class="mode">{}</div></header>'
        '<main><h1>{}</h1>{}{}<div id="live"{}>{}</div></main></body></html>',
        title,
        _base(request),
        _base(request),
        nav,
        mode,
        title,
        flash,
        refresh,
        live_attr,
        body,
    )
    return HTMLResponse(html, status_code=status)


def _flash(request: Request) -> Safe:
    # Only messages from a fixed list, with a number: a link cannot make the
    # page say something else.
    text = _DONE.get(request.query_params.get("done", ""))
    n = request.query_params.get("n", "")
    if text is None or not n.isdigit():
        return Safe("")
    return render('<p class="flash">{}</p>', text.format(n=n))


def _message(
    dash: Dashboard, request: Request, title: str, text: str, status: int
) -> HTMLResponse:
    body = render(
        '<p class="flash error">{}</p><p><a href="{}">Back to the overview</a></p>',
        text,
        _base(request) + "/",
    )
    return _page(dash, request, title, body, here="", live=False, status=status)


def _button(
    dash: Dashboard,
    request: Request,
    action: str,
    label: str,
    *,
    cls: str = "",
    confirm: str | None = None,
    extra: dict[str, str] | None = None,
) -> Safe:
    if dash.read_only:
        return Safe("")
    fields = join(
        render('<input type="hidden" name="{}" value="{}">', k, v)
        for k, v in (extra or {}).items()
    )
    return render(
        '<form class="inline" method="post" action="{}"{}>'
        '<input type="hidden" name="csrf" value="{}">{}'
        '<button type="submit" class="{}">{}</button></form>',
        _base(request) + action,
        render(' data-confirm="{}"', confirm) if confirm else Safe(""),
        dash.csrf,
        fields,
        cls,
        label,
    )


def _first_line(text: str | None, width: int = 90) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _jobs_table(
    request: Request, jobs: list[Job], now: float, *, extra: Any = None
) -> Safe:
    rows = []
    for job in jobs:
        rows.append(
            render(
                '<tr><td class=num><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
                '<td>{}</td><td class=num>{}/{}</td><td title="{}">{} ago</td>'
                '<td class=err title="{}">{}</td>{}</tr>',
                _url(request, f"/jobs/{job.id}"),
                job.id,
                job.task,
                job.queue,
                _state(job.state),
                job.attempts,
                job.max_attempts,
                when(job.updated_at),
                age(now - job.updated_at),
                _first_line(job.last_error, 300),
                _first_line(job.last_error),
                extra(job) if extra else Safe(""),
            )
        )
    head = render(
        "<tr><th class=num>id</th><th>task</th><th>queue</th><th>state</th>"
        "<th class=num>attempts</th><th>changed</th><th>last error</th>{}</tr>",
        Safe("<th></th>") if extra else Safe(""),
    )
    if not rows:
        return Safe('<p class="note">No jobs match.</p>')
    return render("<table>{}{}</table>", head, join(rows))


# -- pages -----------------------------------------------------------------------------


async def overview(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    counts = await store.counts()
    queues = await _queries.queue_rows(store, counts, now)
    activity = await dash.activity_now(now)
    known = None if dash.queue is None else list(dash.queue.tasks)
    stuck = await _queries.stuck_tasks(
        store, counts, now=now, threshold=dash.stuck_after, known_tasks=known
    )
    cards = join(
        render(
            '<div><div class="what">{}</div><div class="n">{}</div></div>',
            state.value,
            counts.total(state),
        )
        for state in (JobState.QUEUED, JobState.RUNNING, JobState.DEAD)
    )
    last = activity.last_event_at
    cards = join(
        [
            cards,
            render(
                '<div><div class="what">last event</div><div class="n">{}</div></div>',
                "none yet" if last is None else f"{age(now - last)} ago",
            ),
        ]
    )
    rows = []
    for q in queues:
        waiting = "-" if q.oldest_due is None else age(now - q.oldest_due)
        rows.append(
            render(
                '<tr><td><a href="{}">{}</a></td>{}<td class=num>{}</td></tr>',
                _url(request, "/jobs", queue=q.name),
                q.name,
                join(
                    render(
                        '<td class=num><a href="{}">{}</a></td>',
                        _url(request, "/jobs", queue=q.name, state=s.value),
                        q.counts[s],
                    )
                    for s in JobState
                ),
                waiting,
            )
        )
    head = render(
        "<tr><th>queue</th>{}<th class=num>oldest due job waiting</th></tr>",
        join(render("<th class=num>{}</th>", s.value) for s in JobState),
    )
    table = (
        render("<table>{}{}</table>", head, join(rows))
        if rows
        else Safe('<p class="note">The store holds no jobs yet.</p>')
    )
    buckets = activity.buckets(now)
    behind = (
        Safe(
            '<p class="warn">The log grows faster than this page reads it; '
            "the charts lag behind.</p>"
        )
        if activity.behind
        else Safe("")
    )
    charts = render(
        '<div class="two"><div><h2>Throughput <span class="muted">'
        "(attempts ended per {} s)</span></h2>{}"
        '<p class="legend"><span><i class="ok"></i>succeeded</span>'
        '<span><i class="fail"></i>failed</span></p></div>'
        "<div><h2>Failure rate</h2>{}</div></div>{}",
        f"{activity.bucket:g}",
        activity_chart(buckets, activity.bucket),
        failure_chart(buckets, activity.bucket),
        behind,
    )
    stuck_rows = [
        render(
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td class=num>{}</td>'
            "<td class=num>{}</td><td>{}</td></tr>",
            _url(request, "/jobs", state="queued", queue=s.queue, task=s.task),
            s.task,
            s.queue,
            s.waiting,
            age(now - s.oldest_due),
            "unknown"
            if s.registered is None
            else "yes"
            if s.registered
            else Safe('<span class="warn">no</span>'),
        )
        for s in stuck
    ]
    stuck_html = (
        render(
            "<table><tr><th>task</th><th>queue</th><th class=num>due jobs waiting</th>"
            "<th class=num>longest wait</th><th>handler in this app</th></tr>"
            "{}</table>",
            join(stuck_rows),
        )
        if stuck_rows
        else Safe('<p class="note">None.</p>')
    )
    body = render(
        '<div class="cards">{}</div><h2>Queues</h2>{}{}'
        "<h2>Waiting longer than {}</h2>"
        '<p class="note">Due jobs no worker has started for {}: no running worker '
        "may serve their task, or the workers are saturated. (The store does "
        "not know which tasks the workers serve.)</p>{}",
        cards,
        table,
        charts,
        age(dash.stuck_after),
        age(dash.stuck_after),
        stuck_html,
    )
    return _page(dash, request, "Overview", body, here="")


def _choice(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


async def jobs_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    state_text = _choice(request, "state")
    try:
        state = None if state_text is None else JobState(state_text)
        cursor_text = _choice(request, "after")
        cursor = None if cursor_text is None else int(cursor_text)
        size = int(request.query_params.get("size", "50"))
        if size not in _queries.PAGE_SIZES:
            raise ValueError(f"size must be one of {_queries.PAGE_SIZES}")
    except ValueError as exc:
        return _message(dash, request, "Jobs", f"Bad filter: {exc}", 400)
    queue, task = _choice(request, "queue"), _choice(request, "task")
    order = "oldest" if request.query_params.get("order") == "oldest" else "newest"
    page = await _queries.list_jobs(
        store,
        state=state,
        queue=queue,
        task=task,
        newest_first=order == "newest",
        cursor=cursor,
        limit=size,
    )
    queues = (await store.counts()).queues

    def options(values: list[str], chosen: str | None, empty: str) -> Safe:
        return join(
            render(
                '<option value="{}"{}>{}</option>',
                v,
                Safe(" selected") if v == (chosen or "") else Safe(""),
                v or empty,
            )
            for v in ["", *values]
        )

    filters = render(
        '<form class="filters" method="get" action="{}">'
        '<label>state<select name="state">{}</select></label>'
        '<label>queue<select name="queue">{}</select></label>'
        '<label>task<input type="text" name="task" value="{}" placeholder="any">'
        "</label>"
        '<label>order<select name="order">{}</select></label>'
        '<label>per page<select name="size">{}</select></label>'
        '<button type="submit" class="primary">Show</button></form>',
        _url(request, "/jobs"),
        options([s.value for s in JobState], state_text, "any"),
        options(sorted(set(queues) | ({queue} if queue else set())), queue, "any"),
        task or "",
        join(
            render(
                '<option value="{}"{}>{}</option>',
                v,
                Safe(" selected") if v == order else Safe(""),
                f"{v} first",
            )
            for v in ("newest", "oldest")
        ),
        join(
            render(
                '<option value="{}"{}>{}</option>',
                n,
                Safe(" selected") if n == size else Safe(""),
                n,
            )
            for n in _queries.PAGE_SIZES
        ),
    )
    filters_now = {
        "state": state_text,
        "queue": queue,
        "task": task,
        "order": order if order != "newest" else None,
        "size": size if size != 50 else None,
    }
    links = []
    if cursor is not None:
        links.append(
            render('<a href="{}">First page</a>', _url(request, "/jobs", **filters_now))
        )
    if page.next_cursor is not None:
        links.append(
            render(
                '<a href="{}" id="next-page">Next page →</a>',
                _url(request, "/jobs", after=page.next_cursor, **filters_now),
            )
        )
    pager = render('<div class="pager">{}</div>', join(links))
    body = render("{}{}{}", filters, _jobs_table(request, page.jobs, now), pager)
    return _page(dash, request, "Jobs", body, here="/jobs", live=cursor is None)


async def job_page(dash: Dashboard, request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    store, now = dash.store, dash.clock()
    try:
        job = await store.get(job_id)
    except JobNotFound:
        return _message(
            dash, request, f"Job {job_id}", f"No job with id {job_id}.", 404
        )
    pairs = await store.events(job_id=job_id, limit=1000)
    events = [event for _, event in pairs]
    actions = []
    if job.state is JobState.QUEUED:
        actions.append(
            _button(dash, request, f"/jobs/{job.id}/cancel", "Cancel", cls="danger")
        )
    if job.state is JobState.DEAD:
        actions.append(
            _button(dash, request, f"/jobs/{job.id}/requeue", "Requeue", cls="primary")
        )
        actions.append(
            _button(dash, request, f"/jobs/{job.id}/discard", "Discard", cls="danger")
        )
    if job.lease_until is None:
        lease = "-"
    elif job.lease_until >= now:
        lease = f"{when(job.lease_until)} (in {age(job.lease_until - now)})"
    else:
        lease = (
            f"{when(job.lease_until)} (ran out {age(now - job.lease_until)} ago: "
            "the worker is gone; the job goes back to the queue at the next reap)"
        )
    facts = [
        ("state", _state(job.state)),
        ("task", job.task),
        ("queue", job.queue),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("priority", job.priority),
        ("created", when(job.created_at)),
        (
            "runs at" if job.state is JobState.QUEUED else "last run at",
            when(job.run_at),
        ),
        ("last change", f"{when(job.updated_at)} ({age(now - job.updated_at)} ago)"),
        ("lease until", lease),
        ("unique key", job.unique_key or "-"),
    ]
    facts_html = join(render("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in facts)
    spans = attempt_spans(events)
    attempt_rows = join(
        render(
            "<tr><td class=num>{}</td><td>{}</td><td>{}</td><td class=num>{}</td>"
            "<td>{}</td><td class=err>{}</td></tr>",
            s.attempt,
            when(s.start),
            when(s.end),
            "-" if s.duration is None else age(s.duration),
            "running" if s.outcome is None else s.outcome.value,
            _first_line(s.error),
        )
        for s in spans
    )
    failures = [e for e in events if e.error]
    if not failures and job.last_error:
        # The events were purged; the job still keeps its last error.
        failure_html = render(
            "<details open><summary>last error</summary><pre>{}</pre></details>",
            job.last_error,
        )
    else:
        failure_html = join(
            render(
                "<details{}><summary>attempt {} · {} at {}: {}</summary>"
                '<pre class="traceback">{}</pre></details>',
                Safe(" open") if i == len(failures) - 1 else Safe(""),
                e.attempt,
                e.kind.value,
                when(e.at),
                _first_line(e.error),
                e.error,
            )
            for i, e in enumerate(failures)
        )
    result = (
        render("<pre>{}</pre>", pretty_json(job.result))
        if job.state is JobState.SUCCEEDED
        else Safe('<p class="note">No result yet.</p>')
    )
    legend = Safe(
        '<p class="legend"><span><i class="wait"></i>waiting</span>'
        '<span><i class="run"></i>running</span>'
        '<span><i class="ok"></i>succeeded</span>'
        '<span><i class="fail"></i>failed, retried</span>'
        '<span><i class="expired"></i>lease ran out</span>'
        '<span><i class="released"></i>handed back</span>'
        '<span><i class="dead"></i>dead</span></p>'
    )
    body = render(
        '<div class="actions">{}</div>'
        '<div class="two"><section class="card"><dl class="facts">{}</dl></section>'
        "<div><h2>Payload</h2><pre>{}</pre><h2>Result</h2>{}</div></div>"
        "<h2>Timeline</h2>{}{}"
        "<h2>Attempts</h2>{}<h2>Failures</h2>{}",
        join(actions),
        facts_html,
        pretty_json(job.payload),
        result,
        timeline_chart(job, events, now),
        legend,
        render(
            "<table><tr><th class=num>attempt</th><th>started</th><th>ended</th>"
            "<th class=num>took</th><th>outcome</th><th>error</th></tr>{}</table>",
            attempt_rows,
        )
        if spans
        else Safe('<p class="note">Not started yet.</p>'),
        failure_html or Safe('<p class="note">None.</p>'),
    )
    title = f"Job {job.id} · {job.task}"
    live = job.state not in TERMINAL_STATES
    return _page(dash, request, title, body, here="/jobs", live=live)


async def dead_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    queue = _choice(request, "queue")
    cursor_text = _choice(request, "after")
    cursor = int(cursor_text) if cursor_text and cursor_text.isdigit() else None
    page = await _queries.list_jobs(
        store,
        state=JobState.DEAD,
        queue=queue,
        newest_first=True,
        cursor=cursor,
        limit=50,
    )
    counts = await store.counts()
    total = counts.get(queue, JobState.DEAD) if queue else counts.total(JobState.DEAD)

    def row_actions(job: Job) -> Safe:
        return render(
            "<td>{} {}</td>",
            _button(
                dash,
                request,
                f"/jobs/{job.id}/requeue",
                "Requeue",
                extra={"back": "dead"},
            ),
            _button(
                dash,
                request,
                f"/jobs/{job.id}/discard",
                "Discard",
                cls="danger",
                extra={"back": "dead"},
            ),
        )

    scope = {"queue": queue} if queue else {}
    where = f" of queue {queue}" if queue else ""
    all_actions = (
        render(
            '<div class="actions">{}{}</div>',
            _button(
                dash,
                request,
                "/dead/requeue-all",
                f"Requeue all {total}",
                cls="primary",
                confirm=f"Requeue all {total} dead jobs{where}?",
                extra=scope,
            ),
            _button(
                dash,
                request,
                "/dead/discard-all",
                f"Discard all {total}",
                cls="danger",
                confirm=f"Discard all {total} dead jobs{where}? "
                "They cannot be requeued afterwards.",
                extra=scope,
            ),
        )
        if total
        else Safe("")
    )
    more = (
        render(
            '<div class="pager"><a href="{}">Next page →</a></div>',
            _url(request, "/dead", queue=queue, after=page.next_cursor),
        )
        if page.next_cursor
        else Safe("")
    )
    body = render(
        '<p class="note">{} dead jobs{}: a permanent error, or no attempts left. '
        "Requeue one to run it again from its first attempt; discard it to give "
        "up on it.</p>{}{}{}",
        total,
        where,
        all_actions,
        _jobs_table(
            request, page.jobs, now, extra=None if dash.read_only else row_actions
        ),
        more,
    )
    return _page(dash, request, "Dead letters", body, here="/dead", live=cursor is None)


async def schedules_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    if not isinstance(store, ScheduleStore):
        body = Safe('<p class="note">This store keeps no schedules.</p>')
        return _page(dash, request, "Schedules", body, here="/schedules")
    rows = []
    for s in await store.schedules():
        slots = [s.next_slot]
        while len(slots) < 3:
            slots.append(s.slot_after(slots[-1]))
        misfire = s.misfire.name.lower()
        if misfire == "burst":
            misfire += f" (at most {s.max_burst})"
        rows.append(
            render(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td><td>{}</td></tr>",
                s.name,
                s.task,
                s.queue,
                s.spec,
                misfire,
                join(
                    [
                        render(
                            "{} <span class=muted>({})</span>",
                            when(t),
                            f"in {age(t - now)}" if t >= now else "due",
                        )
                        for t in slots
                    ],
                    "<br>",
                ),
                when(s.last_slot),
            )
        )
    body = (
        render(
            '<p class="note">Each slot is enqueued once, by whichever worker fires '
            "it first. After downtime the misfire policy decides: burst runs every "
            "missed slot, delay runs once now and re-bases, skip runs once for the "
            "latest slot.</p><table><tr><th>name</th><th>task</th><th>queue</th>"
            "<th>every / cron</th><th>misfire</th><th>next slots</th>"
            "<th>last slot</th></tr>{}</table>",
            join(rows),
        )
        if rows
        else Safe('<p class="note">No schedules are stored.</p>')
    )
    return _page(dash, request, "Schedules", body, here="/schedules")


async def workers_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    held = await store.list(state=JobState.RUNNING, limit=200)
    counts = await store.counts()
    activity = await dash.activity_now(now)
    lapsed = [j for j in held if j.lease_until is not None and j.lease_until < now]
    last = activity.last_event_at
    rows = join(
        render(
            '<tr><td class=num><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
            "<td class=num>{}</td><td>{} ago</td><td>{}</td></tr>",
            _url(request, f"/jobs/{job.id}"),
            job.id,
            job.task,
            job.queue,
            job.attempts,
            age(now - job.updated_at),
            "-"
            if job.lease_until is None
            else f"in {age(job.lease_until - now)}"
            if job.lease_until >= now
            else render(
                '<span class="warn">ran out {} ago</span>', age(now - job.lease_until)
            ),
        )
        for job in held
    )
    table = (
        render(
            "<table><tr><th class=num>job</th><th>task</th><th>queue</th>"
            "<th class=num>attempt</th><th>started or renewed</th><th>lease ends</th>"
            "</tr>{}</table>",
            rows,
        )
        if held
        else Safe('<p class="note">No job is running.</p>')
    )
    shown = (
        f" (the first {len(held)} shown)"
        if counts.total(JobState.RUNNING) > len(held)
        else ""
    )
    body = render(
        '<p class="note">The store keeps no list of workers: it knows the leases '
        "they hold. A worker renews its leases while it runs a job; a lease that "
        "ran out means its worker is gone, and the job goes back to the queue "
        "when a worker next reaps.</p>"
        '<div class="cards"><div><div class="what">jobs held</div>'
        '<div class="n">{}</div></div>'
        '<div><div class="what">leases run out</div><div class="n">{}</div></div>'
        '<div><div class="what">last event</div><div class="n">{}</div></div></div>'
        "<h2>Leases held{}</h2>{}",
        counts.total(JobState.RUNNING),
        len(lapsed),
        "none yet" if last is None else f"{age(now - last)} ago",
        shown,
        table,
    )
    return _page(dash, request, "Workers", body, here="/workers")


async def metrics_page(dash: Dashboard, request: Request) -> Response:
    snapshot = await collect_metrics(dash.store)
    return PlainTextResponse(
        snapshot.to_prometheus(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


async def health_page(dash: Dashboard, request: Request) -> Response:
    try:
        counts = await dash.store.counts()
    except (StoreError, trio.ClosedResourceError) as exc:
        return JSONResponse(
            {"status": "unavailable", "error": str(exc)}, status_code=503
        )
    return JSONResponse(
        {
            "status": "ok",
            "read_only": dash.read_only,
            "jobs": {s.value: counts.total(s) for s in JobState},
        }
    )


# -- actions ---------------------------------------------------------------------------


_VERBS = ("cancel", "requeue", "discard")


async def job_action(dash: Dashboard, request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    verb = request.path_params["verb"]
    if verb not in _VERBS:
        return PlainTextResponse("Not Found", status_code=404)
    form = await _form(request)
    dash.check_post(request, form)
    store, queue = dash.store, dash.queue
    try:
        if queue is not None:
            # Through the queue: its workers in this process wake at once.
            change = {
                "cancel": queue.cancel,
                "requeue": queue.requeue,
                "discard": queue.discard,
            }
            await change[verb](job_id)
        else:
            now = dash.clock()
            if verb == "cancel":
                await store.cancel(job_id, now=now)
            elif verb == "requeue":
                await store.requeue(job_id, now=now)
            else:
                await store.discard(job_id, now=now)
    except JobNotFound:
        return _message(
            dash, request, f"Job {job_id}", f"No job with id {job_id}.", 404
        )
    except TransitionError as exc:
        return _message(dash, request, f"Job {job_id}", str(exc), 409)
    done = {"cancel": "cancelled", "requeue": "requeued", "discard": "discarded"}[verb]
    back = "/dead" if form.get("back") == "dead" else f"/jobs/{job_id}"
    return RedirectResponse(_url(request, back, done=done, n=job_id), status_code=303)


async def dead_action(dash: Dashboard, request: Request) -> Response:
    verb = request.path_params["verb"]
    if verb not in ("requeue", "discard"):
        return PlainTextResponse("Not Found", status_code=404)
    form = await _form(request)
    dash.check_post(request, form)
    queue_name = form.get("queue") or None
    store = dash.store
    done = 0
    skipped: set[int] = set()
    while done < _ALL_LIMIT:
        batch = [
            j
            for j in await store.list(
                state=JobState.DEAD, queue=queue_name, limit=_ALL_BATCH + len(skipped)
            )
            if j.id not in skipped
        ]
        if not batch:
            break
        for job in batch:
            try:
                if dash.queue is not None:
                    fn = dash.queue.requeue if verb == "requeue" else dash.queue.discard
                    await fn(job.id)
                else:
                    fn2 = store.requeue if verb == "requeue" else store.discard
                    await fn2(job.id, now=dash.clock())
            except (TransitionError, JobNotFound):
                # Changed meanwhile, or its unique key is taken again.
                skipped.add(job.id)
            else:
                done += 1
    code = "requeued-all" if verb == "requeue" else "discarded-all"
    return RedirectResponse(
        _url(request, "/dead", queue=queue_name, done=code, n=done), status_code=303
    )


# -- login -----------------------------------------------------------------------------


def _safe_next(request: Request, target: str | None) -> str:
    base = _base(request)
    # A path of this app only: "//host" and "/\\host" lead browsers elsewhere.
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith(("//", "/\\"))
    ):
        return target
    return base + "/"


def _login_form(
    dash: Dashboard, request: Request, error: str | None, status: int
) -> Response:
    body = render(
        '<section class="card login"><form method="post" action="{}">'
        '<input type="hidden" name="csrf" value="{}">'
        '<input type="hidden" name="next" value="{}">{}'
        '<label>Token<input type="password" name="token" autofocus></label>'
        '<button type="submit" class="primary">Open the dashboard</button></form>'
        "</section>",
        _url(request, "/login"),
        dash.csrf,
        _safe_next(request, request.query_params.get("next")),
        render('<p class="flash error">{}</p>', error) if error else Safe(""),
    )
    return _page(dash, request, "Sign in", body, here="-", live=False, status=status)


async def login_page(dash: Dashboard, request: Request) -> Response:
    if request.method == "GET":
        return _login_form(dash, request, None, 200)
    form = await _form(request)
    dash.check_post(request, form)
    assert dash.token is not None
    if not hmac.compare_digest(form.get("token", "").encode(), dash.token.encode()):
        return _login_form(dash, request, "That is not the token.", 401)
    response = RedirectResponse(_safe_next(request, form.get("next")), status_code=303)
    response.set_cookie(
        "jobkit_session",
        dash.session_cookie(),
        httponly=True,
        samesite="strict",
        path=_base(request) + "/",
    )
    return response


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
        path = request.url.path[len(_base(request)) :]
        if not (
            path == "/login" or path.startswith("/static/")
        ) and not self.dash.authorized(request):
            if "text/html" in request.headers.get("accept", ""):
                target = _url(request, "/login", next=request.url.path)
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


def build(dash: Dashboard) -> Starlette:
    """The Starlette app of ``dash``'s pages."""

    def bind(page: Callable[[Dashboard, Request], Awaitable[Response]]) -> Handler:
        async def handler(request: Request) -> Response:
            return await page(dash, request)

        return handler

    async def css(request: Request) -> Response:
        return Response(CSS, media_type="text/css")

    async def js(request: Request) -> Response:
        return Response(JS, media_type="text/javascript")

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

    return Starlette(routes=routes, exception_handlers={Forbidden: forbidden})
