"""What every page shares: links, the frame around a page, tables, buttons."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .._job import Job, JobState
from ._html import Safe, age, join, render, when

if TYPE_CHECKING:
    from ._app import Dashboard

__all__ = [
    "badge",
    "base_path",
    "button",
    "first_line",
    "frame",
    "jobs_table",
    "link",
    "message_page",
    "read_form",
]

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


def base_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def link(request: Request, path: str, **query: object) -> str:
    shown = {k: v for k, v in query.items() if v not in (None, "")}
    tail = "?" + urllib.parse.urlencode(shown) if shown else ""
    return base_path(request) + path + tail


async def read_form(request: Request) -> dict[str, str]:
    # URL-encoded forms only: the pages send nothing else, and parsing them
    # needs no extra dependency.
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body).items()}


# -- page layout -----------------------------------------------------------------------


def badge(state: JobState) -> Safe:
    return render('<span class="state {}">{}</span>', state.value, state.value)


def frame(
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
            base_path(request) + (path or "/"),
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
        '<link rel="icon" href="{}/static/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="{}/static/dashboard.css">'
        '<script src="{}/static/dashboard.js" defer></script></head><body>'
        '<header><div class="brand">jobkit</div><nav>{}</nav>'
        '<div class="mode">{}</div></header>'
        '<main><h1>{}</h1>{}{}<div id="live"{}>{}</div></main></body></html>',
        title,
        base_path(request),
        base_path(request),
        base_path(request),
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


def message_page(
    dash: Dashboard, request: Request, title: str, text: str, status: int
) -> HTMLResponse:
    body = render(
        '<p class="flash error">{}</p><p><a href="{}">Back to the overview</a></p>',
        text,
        base_path(request) + "/",
    )
    return frame(dash, request, title, body, here="", live=False, status=status)


def button(
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
        base_path(request) + action,
        render(' data-confirm="{}"', confirm) if confirm else Safe(""),
        dash.csrf,
        fields,
        cls,
        label,
    )


def first_line(text: str | None, width: int = 90) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def jobs_table(
    request: Request, jobs: list[Job], now: float, *, extra: Any = None
) -> Safe:
    rows = []
    for job in jobs:
        rows.append(
            render(
                '<tr><td class=num><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
                '<td>{}</td><td class=num>{}/{}</td><td title="{}">{} ago</td>'
                '<td class=err title="{}">{}</td>{}</tr>',
                link(request, f"/jobs/{job.id}"),
                job.id,
                job.task,
                job.queue,
                badge(job.state),
                job.attempts,
                job.max_attempts,
                when(job.updated_at),
                age(now - job.updated_at),
                first_line(job.last_error, 300),
                first_line(job.last_error),
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
