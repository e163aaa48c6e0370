"""The dashboard's pages, actions and guards, through its ASGI interface.

Each test builds the app over a store on a fixed clock and talks to it with
httpx in process; the browser tests (test_dashboard_browser.py) click
through the same pages in Chromium over real HTTP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from helpers.stores import WatchedStore
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

import jobkit
from jobkit import JobState, MemoryStore, NewJob
from jobkit._job import Failure, Success
from jobkit.dashboard import _queries, create_app

NOW = 1_800_000_000.0
SCRIPT = "<script>alert('pwned')</script>"


@asynccontextmanager
async def client_for(
    app: Any, *, base: str = "http://dash"
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no form with an anti-forgery token"
    return found.group(1)


async def make_dead(store: jobkit.Store, job_id: int, error: str, *, at: float) -> None:
    queue = (await store.get(job_id)).queue
    [job] = await store.claim(queues=[queue], limit=1, now=at, lease=30.0)
    assert job.id == job_id, "make_dead() needs the job first in its queue"
    await store.settle([Failure(job_id, job.attempts, error, None)], now=at + 1)


async def filled_store() -> MemoryStore:
    """Jobs in every state, one of them carrying markup everywhere it can."""
    store = MemoryStore()
    await store.enqueue(
        [NewJob(task=SCRIPT, queue="q<i>", payload={"html": SCRIPT})], now=NOW - 100
    )
    await make_dead(
        store, 1, f"ValueError: {SCRIPT}\n\nTraceback: {SCRIPT}", at=NOW - 90
    )
    await store.enqueue([NewJob(task="mail", queue="emails")], now=NOW - 80)
    await store.enqueue([NewJob(task="mail", queue="emails")], now=NOW - 70)
    await store.claim(queues=["emails"], limit=1, now=NOW - 60, lease=100)
    await store.enqueue([NewJob(task="report", payload={"day": 1})], now=NOW - 50)
    return store


PAGES = ["/", "/jobs", "/jobs/1", "/dead", "/workers", "/schedules"]


async def test_every_page_answers_and_escapes_job_data() -> None:
    """Task, queue, payload and error text holding markup show as text on every page."""
    app = create_app(await filled_store(), clock=lambda: NOW)
    async with client_for(app) as client:
        for path in PAGES:
            page = await client.get(path)
            assert page.status_code == 200, path
            assert "<script>alert" not in page.text, path
            assert "<i>" not in page.text.replace("<i class=", ""), path
        detail = (await client.get("/jobs/1")).text
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in detail
    assert "q&lt;i&gt;" in detail


async def test_pages_forbid_inline_script_and_framing() -> None:
    """Every answer carries a policy that runs only the app's own script file."""
    app = create_app(MemoryStore(), clock=lambda: NOW)
    async with client_for(app) as client:
        answer = await client.get("/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- actions and their guards ------------------------------------------------------


async def test_a_post_without_the_forms_token_is_refused() -> None:
    """A cross-site form cannot know the token: the post is refused, nothing changes."""
    store = await filled_store()
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        bare = await client.post("/jobs/3/cancel", data={})
        guessed = await client.post("/jobs/3/cancel", data={"csrf": "0" * 64})
    assert bare.status_code == 403 and guessed.status_code == 403
    assert "anti-forgery token" in bare.text
    assert (await store.get(3)).state is JobState.QUEUED


async def test_a_post_from_another_origin_is_refused_even_with_the_token() -> None:
    """The Origin and Sec-Fetch-Site headers a browser sends must name this site."""
    store = await filled_store()
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        token = csrf_of((await client.get("/jobs/3")).text)
        evil = await client.post(
            "/jobs/3/cancel",
            data={"csrf": token},
            headers={"origin": "http://evil.example"},
        )
        cross = await client.post(
            "/jobs/3/cancel",
            data={"csrf": token},
            headers={"sec-fetch-site": "cross-site"},
        )
    assert evil.status_code == 403 and "another origin" in evil.text
    assert cross.status_code == 403
    assert (await store.get(3)).state is JobState.QUEUED


async def test_a_post_through_a_proxy_that_ends_tls_is_accepted() -> None:
    """Behind a proxy the scheme differs and the host may be forwarded: same site."""
    store = await filled_store()
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app, base="http://10.0.0.5:8080") as client:
        token = csrf_of((await client.get("/jobs/3")).text)
        answer = await client.post(
            "/jobs/3/cancel",
            data={"csrf": token},
            headers={
                "origin": "https://jobs.example.com",
                "x-forwarded-host": "jobs.example.com",
            },
        )
    assert answer.status_code == 303
    assert (await store.get(3)).state is JobState.CANCELLED


async def test_cancel_a_queued_job_from_its_page() -> None:
    """The page's own form cancels the job and comes back to it with a message."""
    store = await filled_store()
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        token = csrf_of((await client.get("/jobs/3")).text)
        answer = await client.post(
            "/jobs/3/cancel",
            data={"csrf": token},
            headers={"origin": "http://dash", "sec-fetch-site": "same-origin"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/jobs/3?done=cancelled&n=3"
        page = await client.get(answer.headers["location"])
    assert "Cancelled job 3." in page.text
    assert (await store.get(3)).state is JobState.CANCELLED


async def test_an_action_the_job_no_longer_allows_says_why() -> None:
    """Requeueing a job that is not dead answers 409 with the store's reason."""
    app = create_app(await filled_store(), clock=lambda: NOW)
    async with client_for(app) as client:
        token = csrf_of((await client.get("/jobs/1")).text)
        answer = await client.post("/jobs/3/requeue", data={"csrf": token})
        missing = await client.post("/jobs/99/requeue", data={"csrf": token})
        unknown = await client.post("/jobs/3/explode", data={"csrf": token})
    assert answer.status_code == 409 and "queued, not dead" in answer.text
    assert missing.status_code == 404
    assert unknown.status_code == 404


async def test_requeue_and_discard_one_dead_letter() -> None:
    """Each dead job's row has both actions; they return to the dead letters."""
    store = await filled_store()
    [second] = await store.enqueue([NewJob(task="mail", queue="spare")], now=NOW)
    await make_dead(store, second, "boom", at=NOW)
    app = create_app(store, clock=lambda: NOW + 5)
    async with client_for(app) as client:
        page = (await client.get("/dead")).text
        assert "2 dead jobs" in page
        token = csrf_of(page)
        requeued = await client.post(
            "/jobs/1/requeue", data={"csrf": token, "back": "dead"}
        )
        discarded = await client.post(f"/jobs/{second}/discard", data={"csrf": token})
    assert requeued.headers["location"] == "/dead?done=requeued&n=1"
    assert discarded.headers["location"] == f"/jobs/{second}?done=discarded&n={second}"
    assert (await store.get(1)).state is JobState.QUEUED
    assert (await store.get(1)).attempts == 0
    assert (await store.get(second)).state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("verb", "after"), [("requeue", JobState.QUEUED), ("discard", JobState.CANCELLED)]
)
async def test_requeue_or_discard_all_dead_letters_of_a_queue(
    verb: str, after: JobState
) -> None:
    """ "All" acts on every dead job of the queue shown, and only on those."""
    store = MemoryStore()
    ids = await store.enqueue(
        [NewJob(task="t", queue="a")] * 3 + [NewJob(task="t", queue="b")], now=NOW
    )
    for job_id in ids:
        await make_dead(store, job_id, "boom", at=NOW)
    app = create_app(store, clock=lambda: NOW + 5)
    async with client_for(app) as client:
        page = (await client.get("/dead", params={"queue": "a"})).text
        assert f"{verb.capitalize()} all 3" in page
        answer = await client.post(
            f"/dead/{verb}-all", data={"csrf": csrf_of(page), "queue": "a"}
        )
    done = {"requeue": "requeued", "discard": "discarded"}[verb]
    assert answer.headers["location"] == f"/dead?queue=a&done={done}-all&n=3"
    states = [(await store.get(i)).state for i in ids]
    assert states == [after, after, after, JobState.DEAD]


async def test_read_only_shows_no_actions_and_refuses_them() -> None:
    """With read_only the pages have no forms and the action routes do not exist."""
    store = await filled_store()
    app = create_app(store, read_only=True, clock=lambda: NOW)
    async with client_for(app) as client:
        for path in PAGES:
            assert "<form" not in (await client.get(path)).text.replace(
                '<form class="filters" method="get"', ""
            ), path
        answer = await client.post("/jobs/1/requeue", data={})
        everything = await client.post("/dead/requeue-all", data={})
    assert answer.status_code in (404, 405) and everything.status_code in (404, 405)
    assert (await store.get(1)).state is JobState.DEAD


async def test_actions_through_a_queue_wake_its_workers() -> None:
    """Given a Queue, a requeued job runs at once on the worker of this process."""
    queue = jobkit.Queue(MemoryStore())
    fixed = False

    @queue.task(retry=jobkit.RetryPolicy(1, jobkit.Backoff.constant(0)))
    async def flaky() -> str:
        if not fixed:
            raise RuntimeError("not yet")
        return "done"

    job_id = await flaky.enqueue()
    app = create_app(queue)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: jobkit.run_worker(
                queue, poll_interval=3600, task_status=task_status
            )
        )
        dead = await queue.wait(job_id, poll_interval=0.01)
        assert dead.state is JobState.DEAD
        fixed = True
        async with client_for(app) as client:
            token = csrf_of((await client.get(f"/jobs/{job_id}")).text)
            await client.post(f"/jobs/{job_id}/requeue", data={"csrf": token})
        with trio.fail_after(5):
            # The worker polls once an hour: only the queue's wake-up can do it.
            done = await queue.wait(job_id, poll_interval=3600)
        assert done.state is JobState.SUCCEEDED
        nursery.cancel_scope.cancel()


# -- the token ---------------------------------------------------------------------


async def test_a_token_guards_every_page() -> None:
    """Without the token: 401 for scripts, the login page for browsers; with it: in."""
    app = create_app(await filled_store(), token="s3cret", clock=lambda: NOW)
    async with client_for(app) as client:
        for path in [*PAGES, "/metrics", "/health"]:
            assert (await client.get(path)).status_code == 401, path
        browser = await client.get("/jobs/1", headers={"accept": "text/html"})
        assert browser.status_code == 303
        assert browser.headers["location"] == "/login?next=%2Fjobs%2F1"
        wrong = await client.get("/", headers={"authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"authorization": "Bearer s3cret"})
        css = await client.get("/static/dashboard.css")
    assert wrong.status_code == 401
    assert right.status_code == 200 and "jobkit_jobs" in right.text
    assert css.status_code == 200


async def test_the_login_page_sets_a_cookie_that_opens_the_pages() -> None:
    """A wrong token stays on the login page; the right one leads where asked."""
    app = create_app(await filled_store(), token="s3cret", clock=lambda: NOW)
    async with client_for(app) as client:
        form = (await client.get("/login", params={"next": "/jobs/1"})).text
        token = csrf_of(form)
        wrong = await client.post(
            "/login", data={"csrf": token, "token": "guess", "next": "/jobs/1"}
        )
        assert wrong.status_code == 401 and "not the token" in wrong.text
        assert "jobkit_session" not in client.cookies
        right = await client.post(
            "/login", data={"csrf": token, "token": "s3cret", "next": "/jobs/1"}
        )
        assert right.status_code == 303 and right.headers["location"] == "/jobs/1"
        assert (await client.get("/jobs/1")).status_code == 200
        for elsewhere in (
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example",
        ):
            away = await client.post(
                "/login", data={"csrf": token, "token": "s3cret", "next": elsewhere}
            )
            assert away.headers["location"] == "/", elsewhere


# -- reads -------------------------------------------------------------------------


async def test_jobs_page_pages_newest_or_oldest_first() -> None:
    """Pages of 20 follow each other by id, without gaps or repeats, either way."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t")] * 45, now=NOW)
    app = create_app(store, clock=lambda: NOW)

    async def walk(client: httpx.AsyncClient, order: str) -> list[list[int]]:
        pages, url = [], f"/jobs?size=20&order={order}"
        while url:
            text = (await client.get(url)).text
            pages.append([int(i) for i in re.findall(r'/jobs/(\d+)">', text)])
            found = re.search(r'href="([^"]+)" id="next-page"', text)
            url = found.group(1).replace("&amp;", "&") if found else ""
        return pages

    async with client_for(app) as client:
        newest = await walk(client, "newest")
        oldest = await walk(client, "oldest")
    assert [len(p) for p in newest] == [20, 20, 5]
    assert [i for page in newest for i in page] == list(range(45, 0, -1))
    assert [i for page in oldest for i in page] == list(range(1, 46))


@given(
    st.lists(st.sampled_from(["a", "b"]), max_size=60),
    st.sampled_from([None, "a", "b"]),
    st.booleans(),
    st.integers(1, 7),
    st.integers(1, 9),
    st.integers(1, 3),
)
async def test_list_jobs_pages_through_every_match_in_order(
    tasks: list[str],
    task: str | None,
    newest_first: bool,
    size: int,
    window: int,
    windows: int,
) -> None:
    """Following the cursors yields each matching job once, in order."""
    store = MemoryStore()
    for name in tasks:
        await store.enqueue([NewJob(task=name)], now=NOW)
    seen, cursor = [], None
    while True:
        page = await _queries.list_jobs(
            store,
            task=task,
            newest_first=newest_first,
            cursor=cursor,
            limit=size,
            window=window,
            windows=windows,
        )
        assert len(page.jobs) <= size
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = [i for i, name in enumerate(tasks, 1) if task in (None, name)]
    assert seen == (expected[::-1] if newest_first else expected)


async def test_list_jobs_with_an_unindexed_filter_reads_a_bounded_range() -> None:
    """A task filter that matches nothing stops after its budget and says where."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="a")] * 50, now=NOW)
    bounds = {"window": 10, "windows": 2}
    page = await _queries.list_jobs(store, task="b", limit=5, **bounds)
    assert page.jobs == [] and page.searched_to == page.next_cursor == 31
    rest = await _queries.list_jobs(
        store, task="b", limit=5, cursor=page.next_cursor, **bounds
    )
    assert rest.searched_to == 11
    oldest = await _queries.list_jobs(
        store, task="b", newest_first=False, limit=5, **bounds
    )
    assert oldest.searched_to == 20


async def test_jobs_page_filters_by_state_queue_and_task() -> None:
    """Each filter narrows the list to the jobs that match it."""
    app = create_app(await filled_store(), clock=lambda: NOW)
    async with client_for(app) as client:

        async def ids(**params: str) -> list[int]:
            text = (await client.get("/jobs", params=params)).text
            return [int(i) for i in re.findall(r'/jobs/(\d+)">', text)]

        assert await ids() == [4, 3, 2, 1]
        assert await ids(state="queued") == [4, 3]
        page = (await client.get("/jobs", params={"state": "queued"})).text
        assert "2 jobs match." in page
        assert await ids(queue="emails") == [3, 2]
        assert await ids(task="mail", state="running") == [2]
        assert await ids(task="report", order="oldest") == [4]
        bad = await client.get("/jobs", params={"state": "sleeping"})
    assert bad.status_code == 400 and "sleeping" in bad.text


async def test_job_page_shows_payload_result_attempts_and_tracebacks() -> None:
    """Every failure's text is on the page, the last one open; the lease's end too."""
    store = MemoryStore()
    [job_id] = await store.enqueue(
        [NewJob(task="report", payload={"day": 3}, max_attempts=3)], now=NOW
    )
    for attempt, text in ((1, "first trace"), (2, "second trace")):
        await store.claim(queues=None, limit=1, now=NOW + attempt * 10, lease=30.0)
        await store.settle(
            [Failure(job_id, attempt, f"OSError: {text}", NOW)],
            now=NOW + attempt * 10 + 1,
        )
    await store.claim(queues=None, limit=1, now=NOW + 30, lease=30.0)
    app = create_app(store, clock=lambda: NOW + 40)
    async with client_for(app) as client:
        running = (await client.get(f"/jobs/{job_id}")).text
        await store.settle([Success(job_id, 3, {"pages": 12})], now=NOW + 45)
        done = (await client.get(f"/jobs/{job_id}")).text
        expired = create_app(store, clock=lambda: NOW + 80)
    assert "OSError: first trace" in running and "OSError: second trace" in running
    assert "<details open><summary>attempt 2 · retried" in running
    assert "in 20 s" in running  # the lease of attempt 3 ends at NOW + 60
    assert '<svg class="chart timeline"' in running
    assert running.count("<title>attempt ") == 3
    assert "&quot;day&quot;: 3" in running
    assert "&quot;pages&quot;: 12" in done
    assert 'id="live"' in running and 'data-refresh="5"' in running
    assert "data-refresh" not in done  # a finished job no longer changes
    del expired


async def test_job_page_says_when_a_lease_ran_out() -> None:
    """A running job whose lease ended is shown as left by its worker."""
    store = MemoryStore()
    [job_id] = await store.enqueue([NewJob(task="t")], now=NOW)
    await store.claim(queues=None, limit=1, now=NOW, lease=30.0)
    app = create_app(store, clock=lambda: NOW + 200)
    async with client_for(app) as client:
        page = (await client.get(f"/jobs/{job_id}")).text
        workers = (await client.get("/workers")).text
        missing = await client.get("/jobs/7")
    assert "ran out 3 min ago" in page and "the worker is gone" in page
    assert "ran out 3 min ago" in workers
    assert missing.status_code == 404 and "No job with id 7" in missing.text


async def test_overview_counts_waits_and_tasks_no_worker_runs() -> None:
    """Per queue counts, the longest wait of a due job, and tasks left waiting."""
    queue = jobkit.Queue(MemoryStore(), clock=lambda: NOW)

    @queue.task(queue="emails")
    async def mail() -> None: ...

    store = queue.store
    await store.enqueue([NewJob(task="mail", queue="emails")], now=NOW - 30)
    await store.enqueue([NewJob(task="legacy", queue="old")], now=NOW - 600)
    await store.enqueue(
        [NewJob(task="mail", queue="emails", run_at=NOW + 60)], now=NOW - 900
    )
    app = create_app(queue)
    async with client_for(app) as client:
        page = (await client.get("/")).text
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r'<tr><td><a href="/jobs\?queue=(\w+)">\w+</a></td>(.*?)</tr>', page
        )
    }
    assert re.findall(r">(\d+)</a></td>", rows["emails"]) == ["2", "0", "0", "0", "0"]
    assert rows["emails"].endswith("<td class=num>30 s</td>")
    assert rows["old"].endswith("<td class=num>10 min</td>")
    stuck = page[page.index("Waiting longer than") :]
    assert "legacy" in stuck and '<span class="warn">no</span>' in stuck
    assert "task=mail" not in stuck  # its due job waited 30 s only


class ListCounting(MemoryStore):
    """A MemoryStore that notes the arguments of each ``list`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[dict[str, Any]] = []

    async def list(self, **options: Any) -> list[jobkit.Job]:  # type: ignore[override]
        self.listed.append(options)
        return await super().list(**options)


async def test_overview_reads_no_queued_jobs_while_workers_keep_up() -> None:
    """Only a queue whose oldest due job is late has its queued jobs looked at."""
    store = ListCounting()
    await store.enqueue([NewJob(task="t", queue="fresh")] * 500, now=NOW - 5)
    await store.enqueue([NewJob(task="t", queue="late")], now=NOW - 500)
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        assert (await client.get("/")).status_code == 200
    assert [options.get("queue") for options in store.listed] == ["late"]


async def test_overview_charts_the_attempts_of_the_last_minutes() -> None:
    """The throughput chart has a bar per outcome and bucket, from the event log."""
    store = MemoryStore()
    ids = await store.enqueue([NewJob(task="t", max_attempts=2)] * 4, now=NOW - 100)
    await store.claim(queues=None, limit=4, now=NOW - 95, lease=30)
    await store.settle(
        [Success(ids[0], 1), Success(ids[1], 1), Failure(ids[2], 1, "x", NOW)],
        now=NOW - 80,
    )
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        page = (await client.get("/")).text
    assert "<title>2 succeeded (4/min)</title>" in page
    assert "<title>1 failed (2/min)</title>" in page
    assert "<title>33% of 3 attempts failed</title>" in page


async def test_schedules_show_next_slots_and_misfire_policy() -> None:
    """Each schedule lists its next three slots and how it treats missed ones."""
    store = MemoryStore()
    await store.put_schedule(
        jobkit.Schedule.create(
            "tick",
            "t",
            every=30,
            start=NOW + 30,
            now=NOW,
            misfire=jobkit.MissedTickBehavior.BURST,
            max_burst=4,
        )
    )
    app = create_app(store, clock=lambda: NOW)
    bare = create_app(WatchedStore(MemoryStore()), clock=lambda: NOW)
    async with client_for(app) as client:
        page = (await client.get("/schedules")).text
    async with client_for(bare) as client:
        none = (await client.get("/schedules")).text
    assert "burst (at most 4)" in page
    assert "(in 30 s)" in page and "(in 60 s)" in page and "(in 90 s)" in page
    assert "This store keeps no schedules." in none


async def test_metrics_and_health() -> None:
    """/metrics is Prometheus text from the event log; /health: is the store up."""
    from prometheus_client.parser import text_string_to_metric_families

    store = jobkit.SQLiteStore(":memory:")
    await store.enqueue([NewJob(task="t")] * 3, now=NOW)
    await make_dead(store, 1, "boom", at=NOW)
    app = create_app(store, clock=lambda: NOW)
    async with client_for(app) as client:
        metrics = await client.get("/metrics")
        health = await client.get("/health")
        await store.aclose()
        down = await client.get("/health")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    enqueued = families["jobkit_jobs_enqueued"]
    assert sum(s.value for s in enqueued.samples if s.name.endswith("_total")) == 3
    assert health.json()["jobs"]["dead"] == 1
    assert down.status_code == 503 and down.json()["status"] == "unavailable"


async def test_the_app_works_mounted_under_a_prefix() -> None:
    """Links, the stylesheet and forms keep the prefix the app is mounted at."""
    store = await filled_store()
    outer = Starlette(routes=[Mount("/ops/jobkit", app=create_app(store))])
    async with client_for(outer) as client:
        page = (await client.get("/ops/jobkit/jobs/3")).text
        assert 'href="/ops/jobkit/static/dashboard.css"' in page
        assert 'action="/ops/jobkit/jobs/3/cancel"' in page
        css = await client.get("/ops/jobkit/static/dashboard.css")
        answer = await client.post(
            "/ops/jobkit/jobs/3/cancel", data={"csrf": csrf_of(page)}
        )
    assert css.status_code == 200
    assert answer.headers["location"] == "/ops/jobkit/jobs/3?done=cancelled&n=3"
    assert (await store.get(3)).state is JobState.CANCELLED


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"token": ""}, "token must be a non-empty string"),
        ({"refresh": -1}, "refresh must be >= 0"),
        ({"stuck_after": 0}, "stuck_after must be > 0"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], error: str) -> None:
    """Each setting is checked when the app is built, naming what was wrong."""
    with pytest.raises(ValueError, match=error):
        create_app(MemoryStore(), **options)
    with pytest.raises(TypeError, match="takes a jobkit Store or Queue"):
        create_app("jobs.db")  # type: ignore[arg-type]


# -- the event log, followed ----------------------------------------------------------


@given(st.lists(st.integers(0, 50), max_size=40).map(sorted), st.integers(-1, 52))
async def test_seq_before_finds_where_a_time_starts(times: list[int], t: int) -> None:
    """The events after the sequence found are exactly those at or after ``t``."""
    store = MemoryStore()
    for at in times:
        await store.enqueue([NewJob(task="t")], now=float(at))
    seq = await _queries.seq_before(store, float(t))
    after = [event.at for _, event in await store.events(after=seq)]
    assert after == [float(at) for at in times if at >= t]


STORES = {
    "memory": MemoryStore,
    "sqlite": lambda: jobkit.SQLiteStore(":memory:"),
}


@pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())
async def test_activity_reads_only_new_events_and_at_most_max_read(
    make: Callable[[], jobkit.Store],
) -> None:
    """A busy log is followed in bounded steps; the page says when it lags."""
    store = make()
    await store.enqueue([NewJob(task="t")] * 30, now=NOW - 10)
    activity = _queries.Activity(max_read=20)
    await activity.update(store, NOW)
    assert activity.behind and activity.seq == 20
    await activity.update(store, NOW)
    assert not activity.behind and activity.seq == 30
    await store.enqueue([NewJob(task="t")] * 20, now=NOW - 5)
    await activity.update(store, NOW)
    assert not activity.behind and activity.seq == 50
    assert activity.last_event_at == NOW - 5
    await store.aclose()


async def test_activity_starts_at_the_window_and_knows_the_last_event_before() -> None:
    """Events older than the window are not read, but the last one is still shown."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t")] * 3, now=NOW - 5000)
    activity = _queries.Activity(window=900)
    await activity.update(store, NOW)
    assert activity.seq == 3 and activity.last_event_at == NOW - 5000
    assert sum(b.succeeded + b.failed for b in activity.buckets(NOW)) == 0


outcomes = st.lists(
    st.tuples(
        st.floats(-100, 100).map(round), st.sampled_from(["ok", "retry", "dead"])
    ),
    max_size=30,
)


@given(outcomes, st.integers(1, 7))
async def test_activity_counts_the_same_on_every_store(
    ends: list[tuple[float, str]], max_read: int
) -> None:
    """SQLite's counts, added up in SQL, equal the ones folded event by event."""
    found = []
    for make in STORES.values():
        store = make()
        for i, (at, how) in enumerate(ends):
            spec = NewJob(task="t", queue=f"q{i}", max_attempts=2)
            [job_id] = await store.enqueue([spec], now=at)
            await store.claim(queues=[f"q{i}"], limit=1, now=at, lease=9)
            outcome: Any = (
                Success(job_id, 1)
                if how == "ok"
                else Failure(job_id, 1, "x", None if how == "dead" else at + 1)
            )
            await store.settle([outcome], now=at)
        activity = _queries.Activity(window=300, bucket=30, max_read=max_read)
        while True:
            await activity.update(store, 100.0)
            if not activity.behind:
                break
        found.append(activity.buckets(100.0))
        await store.aclose()
    memory, sqlite = found
    assert memory == sqlite
    assert sum(b.succeeded for b in memory) == sum(how == "ok" for _, how in ends)
    assert sum(b.failed for b in memory) == sum(how != "ok" for _, how in ends)


# -- the command line ----------------------------------------------------------------


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_dashboard_refuses_a_missing_database(tmp_path: Path) -> None:
    """No database: one error line, exit 1, and no file created."""
    result = run_cli("dashboard", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 1
    assert result.stderr.startswith("jobkit: error: no database at")
    assert not (tmp_path / "none.db").exists()


def test_cli_dashboard_refuses_a_foreign_file_and_a_bad_port(tmp_path: Path) -> None:
    """A file that is not jobkit's is left as it was; a bad port is a usage error."""
    import sqlite3

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    before = foreign.read_bytes()
    refused = run_cli("dashboard", "--db", str(foreign))
    assert refused.returncode == 1
    assert refused.stderr.startswith("jobkit: error: ")
    assert "not a jobkit database" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert foreign.read_bytes() == before
    port = run_cli("dashboard", "--db", str(foreign), "--port", "70000")
    assert port.returncode == 2 and "a port is 0..65535" in port.stderr


@pytest.mark.slow
def test_cli_dashboard_serves_until_interrupted(tmp_path: Path) -> None:
    """It prints its address, answers there at low priority, and stops on SIGINT."""
    import signal

    db = str(tmp_path / "jobs.db")
    assert run_cli("enqueue", "--db", db, "t").returncode == 0
    with subprocess.Popen(
        # A URL names the store as well as a path does.
        [
            sys.executable,
            "-m",
            "jobkit",
            "dashboard",
            "--db",
            f"sqlite:///{db}",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = re.search(r"dashboard on (\S+)", line)
        assert url, line
        health = httpx.get(url.group(1) + "/health", timeout=10)
        assert health.json()["jobs"]["queued"] == 1
        assert url.group(1).startswith("http://127.0.0.1:")
        # Lower priority than its parent's, so workers on the host come first.
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(19, mine + 10)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
