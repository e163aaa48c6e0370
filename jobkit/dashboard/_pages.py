"""The dashboard's pages and the actions their buttons post."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import trio
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from ..core.job import TERMINAL_STATES, Job, JobState, TransitionError
from ..observe.metrics import collect_metrics
from ..observe.spans import attempt_spans
from ..store.protocol import JobNotFound, QueueCounts, ScheduleStore, StoreError
from . import _queries
from ._html import Safe, age, join, pretty_json, render, when
from ._layout import (
    badge,
    base_path,
    button,
    first_line,
    frame,
    jobs_table,
    link,
    message_page,
    read_form,
)
from ._svg import activity_chart, failure_chart, timeline_chart

if TYPE_CHECKING:
    from ._app import Dashboard

__all__ = [
    "dead_action",
    "dead_page",
    "health_page",
    "job_action",
    "job_page",
    "jobs_page",
    "login_page",
    "metrics_page",
    "overview",
    "schedules_page",
    "workers_page",
]

# "Requeue all" and "discard all" act on at most this many jobs per click, in
# batches, so that one click never holds the store for long.
_ALL_LIMIT = 10_000
_ALL_BATCH = 200


# -- pages -----------------------------------------------------------------------------


async def overview(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    counts = await store.counts()
    queues = await _queries.queue_rows(store, counts, now)
    activity = await dash.activity_now(now)
    known = None if dash.queue is None else list(dash.queue.tasks)
    stuck = await _queries.stuck_tasks(
        store, queues, now=now, threshold=dash.stuck_after, known_tasks=known
    )
    body = render(
        '<div class="cards">{}</div><h2>Queues</h2>{}{}'
        "<h2>Waiting longer than {}</h2>"
        '<p class="note">Due jobs no worker has started for {}: no running worker '
        "may serve their task, or the workers are saturated. (The store does "
        "not know which tasks the workers serve.)</p>{}",
        _cards(counts, activity, now),
        _queue_table(request, queues, now),
        _charts(activity, now),
        age(dash.stuck_after),
        age(dash.stuck_after),
        _stuck_table(request, stuck, now),
    )
    return frame(dash, request, "Overview", body, here="")


def _card(what: str, value: object) -> Safe:
    return render(
        '<div><div class="what">{}</div><div class="n">{}</div></div>', what, value
    )


def _last_event(activity: _queries.Activity, now: float) -> str:
    last = activity.last_event_at
    return "none yet" if last is None else f"{age(now - last)} ago"


def _cards(counts: QueueCounts, activity: _queries.Activity, now: float) -> Safe:
    states = (JobState.QUEUED, JobState.RUNNING, JobState.DEAD)
    return join(
        [
            *(_card(state.value, counts.total(state)) for state in states),
            _card("last event", _last_event(activity, now)),
        ]
    )


def _queue_table(request: Request, queues: list[_queries.QueueRow], now: float) -> Safe:
    if not queues:
        return Safe('<p class="note">The store holds no jobs yet.</p>')
    rows = (
        render(
            '<tr><td><a href="{}">{}</a></td>{}<td class=num>{}</td></tr>',
            link(request, "/jobs", queue=q.name),
            q.name,
            join(
                render(
                    '<td class=num><a href="{}">{}</a></td>',
                    link(request, "/jobs", queue=q.name, state=s.value),
                    q.counts[s],
                )
                for s in JobState
            ),
            "-" if q.oldest_due is None else age(now - q.oldest_due),
        )
        for q in queues
    )
    head = render(
        "<tr><th>queue</th>{}<th class=num>oldest due job waiting</th></tr>",
        join(render("<th class=num>{}</th>", s.value) for s in JobState),
    )
    return render("<table>{}{}</table>", head, join(rows))


def _charts(activity: _queries.Activity, now: float) -> Safe:
    buckets = activity.buckets(now)
    behind = (
        Safe(
            '<p class="warn">The log grows faster than this page reads it; '
            "the charts lag behind.</p>"
        )
        if activity.behind
        else Safe("")
    )
    return render(
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


def _stuck_table(request: Request, stuck: list[_queries.Stuck], now: float) -> Safe:
    if not stuck:
        return Safe('<p class="note">None.</p>')
    handler = {None: Safe("unknown"), True: Safe("yes")}
    rows = (
        render(
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td class=num>{}</td>'
            "<td class=num>{}</td><td>{}</td></tr>",
            link(request, "/jobs", state="queued", queue=s.queue, task=s.task),
            s.task,
            s.queue,
            s.waiting,
            age(now - s.oldest_due),
            handler.get(s.registered, Safe('<span class="warn">no</span>')),
        )
        for s in stuck
    )
    return render(
        "<table><tr><th>task</th><th>queue</th><th class=num>due jobs waiting</th>"
        "<th class=num>longest wait</th><th>handler in this app</th></tr>{}</table>",
        join(rows),
    )


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
        return message_page(dash, request, "Jobs", f"Bad filter: {exc}", 400)
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
    counts = await store.counts()
    queues = counts.queues

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
        link(request, "/jobs"),
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
            render('<a href="{}">First page</a>', link(request, "/jobs", **filters_now))
        )
    if page.next_cursor is not None:
        links.append(
            render(
                '<a href="{}" id="next-page">Next page →</a>',
                link(request, "/jobs", after=page.next_cursor, **filters_now),
            )
        )
    if page.searched_to is not None:
        links.insert(
            0,
            render(
                '<span class="muted">Looked through the ids down to {}; the next '
                "page looks further.</span>"
                if order == "newest"
                else '<span class="muted">Looked through the ids up to {}; the next '
                "page looks further.</span>",
                page.searched_to,
            ),
        )
    pager = render('<div class="pager">{}</div>', join(links))
    body = render(
        "{}{}{}{}",
        filters,
        _matching(counts, state, queue) if task is None else Safe(""),
        jobs_table(request, page.jobs, now),
        pager,
    )
    return frame(dash, request, "Jobs", body, here="/jobs", live=cursor is None)


def _matching(counts: QueueCounts, state: JobState | None, queue: str | None) -> Safe:
    """How many jobs the filter matches, from the counts the store keeps."""
    states = list(JobState) if state is None else [state]
    names = counts.queues if queue is None else [queue]
    total = sum(counts.get(name, s) for name in names for s in states)
    return render('<p class="note">{} jobs match.</p>', f"{total:,}")


async def job_page(dash: Dashboard, request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    store, now = dash.store, dash.clock()
    try:
        job = await store.get(job_id)
    except JobNotFound:
        return message_page(
            dash, request, f"Job {job_id}", f"No job with id {job_id}.", 404
        )
    pairs = await store.events(job_id=job_id, limit=1000)
    events = [event for _, event in pairs]
    actions = []
    if job.state is JobState.QUEUED:
        actions.append(
            button(dash, request, f"/jobs/{job.id}/cancel", "Cancel", cls="danger")
        )
    if job.state is JobState.DEAD:
        actions.append(
            button(dash, request, f"/jobs/{job.id}/requeue", "Requeue", cls="primary")
        )
        actions.append(
            button(dash, request, f"/jobs/{job.id}/discard", "Discard", cls="danger")
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
        ("state", badge(job.state)),
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
            first_line(s.error),
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
                first_line(e.error),
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
    return frame(dash, request, title, body, here="/jobs", live=live)


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
            button(
                dash,
                request,
                f"/jobs/{job.id}/requeue",
                "Requeue",
                extra={"back": "dead"},
            ),
            button(
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
            button(
                dash,
                request,
                "/dead/requeue-all",
                f"Requeue all {total}",
                cls="primary",
                confirm=f"Requeue all {total} dead jobs{where}?",
                extra=scope,
            ),
            button(
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
            link(request, "/dead", queue=queue, after=page.next_cursor),
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
        jobs_table(
            request, page.jobs, now, extra=None if dash.read_only else row_actions
        ),
        more,
    )
    return frame(dash, request, "Dead letters", body, here="/dead", live=cursor is None)


async def schedules_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    if not isinstance(store, ScheduleStore):
        body = Safe('<p class="note">This store keeps no schedules.</p>')
        return frame(dash, request, "Schedules", body, here="/schedules")
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
    return frame(dash, request, "Schedules", body, here="/schedules")


async def workers_page(dash: Dashboard, request: Request) -> Response:
    store, now = dash.store, dash.clock()
    held = await store.list(state=JobState.RUNNING, limit=200)
    counts = await store.counts()
    activity = await dash.activity_now(now)
    lapsed = [j for j in held if j.lease_until is not None and j.lease_until < now]
    rows = join(
        render(
            '<tr><td class=num><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
            "<td class=num>{}</td><td>{} ago</td><td>{}</td></tr>",
            link(request, f"/jobs/{job.id}"),
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
        '<div class="cards">{}</div><h2>Leases held{}</h2>{}',
        join(
            [
                _card("jobs held", counts.total(JobState.RUNNING)),
                _card("leases run out", len(lapsed)),
                _card("last event", _last_event(activity, now)),
            ]
        ),
        shown,
        table,
    )
    return frame(dash, request, "Workers", body, here="/workers")


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
    form = await read_form(request)
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
        return message_page(
            dash, request, f"Job {job_id}", f"No job with id {job_id}.", 404
        )
    except TransitionError as exc:
        return message_page(dash, request, f"Job {job_id}", str(exc), 409)
    done = {"cancel": "cancelled", "requeue": "requeued", "discard": "discarded"}[verb]
    back = "/dead" if form.get("back") == "dead" else f"/jobs/{job_id}"
    return RedirectResponse(link(request, back, done=done, n=job_id), status_code=303)


async def dead_action(dash: Dashboard, request: Request) -> Response:
    verb = request.path_params["verb"]
    if verb not in ("requeue", "discard"):
        return PlainTextResponse("Not Found", status_code=404)
    form = await read_form(request)
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
        link(request, "/dead", queue=queue_name, done=code, n=done), status_code=303
    )


# -- login -----------------------------------------------------------------------------


def _safe_next(request: Request, target: str | None) -> str:
    base = base_path(request)
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
        link(request, "/login"),
        dash.csrf,
        _safe_next(request, request.query_params.get("next")),
        render('<p class="flash error">{}</p>', error) if error else Safe(""),
    )
    return frame(dash, request, "Sign in", body, here="-", live=False, status=status)


async def login_page(dash: Dashboard, request: Request) -> Response:
    if request.method == "GET":
        return _login_form(dash, request, None, 200)
    form = await read_form(request)
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
        path=base_path(request) + "/",
    )
    return response
