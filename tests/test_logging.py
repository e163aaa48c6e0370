"""Structured job-event logging and the JSON formatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import jobkit
from jobkit import EventKind, Job, JobEvent, JobState, JSONFormatter, MemoryStore
from jobkit.core.job import Failure
from jobkit.observe.logs import FIELDS, first_line, job_fields, log_job_event
from jobkit.runtime.tasks import error_summary

TRACEBACK = "Traceback (most recent call last)"


def make_job(state: JobState = JobState.RUNNING, **changes: Any) -> Job:
    fields: dict[str, Any] = dict(
        id=7,
        task="email",
        queue="mail",
        payload={},
        state=state,
        attempts=2,
        max_attempts=3,
        priority=0,
        run_at=20.0,
        created_at=0.0,
        updated_at=10.0,
    )
    fields.update(changes)
    return Job(**fields)


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Capture the ``jobkit`` logger as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    log = logging.getLogger("jobkit")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def parse(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- the formatter -----------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line() -> None:
    """Standard fields, extras and static fields land in one JSON object."""
    record = logging.LogRecord(
        "jobkit", logging.WARNING, "w.py", 3, "job %d: %s", (7, "slow"), None
    )
    record.job_id = 7
    record.queues = ("a", "b")
    record.when = object()
    line = JSONFormatter(static={"service": "mailer"}).format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "job 7: slow"
    assert data["level"] == "WARNING"
    assert data["logger"] == "jobkit"
    assert data["time"].endswith("Z")
    assert data["service"] == "mailer"
    assert data["job_id"] == 7
    assert data["queues"] == ["a", "b"]
    assert data["when"].startswith("<object object")
    assert "exc_type" not in data and "traceback" not in data
    assert not {"args", "msg", "levelno", "pathname"} & data.keys()


def test_json_formatter_puts_the_traceback_in_one_field_once() -> None:
    """An exception becomes exc_type plus a traceback field, and appears once."""
    error = raised(ValueError("bad address"))
    record = logging.LogRecord(
        "jobkit",
        logging.ERROR,
        "w.py",
        3,
        "failed: %s",
        (error,),
        (type(error), error, error.__traceback__),
    )
    line = JSONFormatter().format(record)
    data = json.loads(line)
    assert data["exc_type"] == "ValueError"
    assert data["traceback"].startswith(TRACEBACK)
    assert data["traceback"].endswith("ValueError: bad address")
    assert line.count(TRACEBACK) == 1


def test_json_formatter_keeps_non_ascii_readable() -> None:
    """Text is written as UTF-8 unless ensure_ascii is asked for."""
    record = logging.LogRecord("jobkit", logging.INFO, "w.py", 3, "café", (), None)
    assert "café" in JSONFormatter().format(record)
    assert "caf\\u00e9" in JSONFormatter(ensure_ascii=True).format(record)


# -- job events --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, state, level",
    [
        (EventKind.ENQUEUED, JobState.QUEUED, "INFO"),
        (EventKind.STARTED, JobState.RUNNING, "INFO"),
        (EventKind.SUCCEEDED, JobState.SUCCEEDED, "INFO"),
        (EventKind.RETRIED, JobState.QUEUED, "WARNING"),
        (EventKind.EXPIRED, JobState.QUEUED, "WARNING"),
        (EventKind.DEAD, JobState.DEAD, "ERROR"),
        (EventKind.RELEASED, JobState.QUEUED, "INFO"),
        (EventKind.REQUEUED, JobState.QUEUED, "INFO"),
        (EventKind.CANCELLED, JobState.CANCELLED, "INFO"),
        (EventKind.DISCARDED, JobState.CANCELLED, "INFO"),
    ],
)
def test_every_event_kind_logs_its_fields(
    json_lines: io.StringIO, kind: EventKind, state: JobState, level: str
) -> None:
    """Each kind of event logs one line with every structured field."""
    log_job_event(JobEvent(7, kind, 10.0, 2), make_job(state), duration=1.25)
    [line] = parse(json_lines)
    assert line["level"] == level
    assert set(FIELDS) <= line.keys()
    assert line["job_id"] == 7
    assert (line["task"], line["queue"], line["attempt"]) == ("email", "mail", 2)
    assert line["state"] == state.value
    assert line["event"] == kind.value
    assert line["duration"] == 1.25
    assert line["message"].startswith("job 7 (email on mail) ")


def test_a_failure_line_carries_the_traceback_once(json_lines: io.StringIO) -> None:
    """The stored error's traceback is not repeated; the exception's is attached."""
    error = raised(RuntimeError("smtp down"))
    stored = "RuntimeError: smtp down\n\n" + TRACEBACK + ":\n  ...\nRuntimeError"
    event = JobEvent(7, EventKind.RETRIED, 10.0, 2, stored)
    log_job_event(event, make_job(JobState.QUEUED), duration=0.5, exc=error)
    text = json_lines.getvalue()
    [line] = parse(json_lines)
    assert line["error"] == "RuntimeError: smtp down"
    assert line["message"] == (
        "job 7 (email on mail) failed attempt 2/3 after 0.500s, "
        "retrying in 10s: RuntimeError: smtp down"
    )
    assert line["exc_type"] == "RuntimeError"
    assert text.count(TRACEBACK) == 1


def test_disabled_levels_cost_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is formatted when the logger would drop the record."""
    caplog.set_level(logging.ERROR, logger="jobkit")
    log_job_event(JobEvent(7, EventKind.STARTED, 1.0, 1), make_job())
    assert caplog.records == []


def test_summaries_stay_on_one_line() -> None:
    """Error summaries and stored errors are reduced to their first line."""
    assert error_summary(ValueError("a\nb")) == "ValueError: a ..."
    assert error_summary(KeyError()) == "KeyError"
    assert first_line(None) is None
    assert first_line("") == ""
    fields = job_fields(JobEvent(1, EventKind.DEAD, 0.0, 1, "E: x\n\ntb"), make_job())
    assert fields["error"] == "E: x"


async def test_the_worker_logs_a_failure_with_its_traceback_once(
    json_lines: io.StringIO, autojump_clock: Any
) -> None:
    """A failing job's log line names the job and carries one traceback."""
    queue = jobkit.Queue(MemoryStore(), clock=trio.current_time)

    @queue.task(retry=jobkit.RetryPolicy(2, jobkit.Backoff.constant(5)))
    async def boom() -> None:
        raise RuntimeError("kaput")

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobkit.Worker(queue, shutdown=token).run)
        job_id = await boom.enqueue()
        await trio.sleep(30)
        token.cancel()
    failures = [line for line in parse(json_lines) if "traceback" in line]
    assert [line["attempt"] for line in failures] == [1, 2]
    for line in failures:
        assert line["job_id"] == job_id
        assert (line["task"], line["queue"]) == ("boom", "default")
        assert line["error"] == "RuntimeError: kaput"
        assert json.dumps(line).count(TRACEBACK) == 1


async def test_the_worker_logs_each_event_it_causes_exactly_once(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """Starts, successes, retries, deaths and lease expiries: one record each."""
    caplog.set_level(logging.DEBUG, logger="jobkit")
    store = MemoryStore()
    queue = jobkit.Queue(store, clock=trio.current_time)
    policy = jobkit.RetryPolicy(2, jobkit.Backoff.constant(5))

    @queue.task(retry=policy)
    async def fine() -> None:
        await trio.sleep(1)

    @queue.task(retry=policy)
    async def flaky() -> None:
        if jobkit.current_job().attempts == 1:
            raise ValueError("first try")

    @queue.task(retry=policy)
    async def doomed() -> None:
        raise RuntimeError("never")

    orphan = await fine.enqueue()
    # A worker elsewhere claims the orphan and dies: its lease runs out.
    [claimed] = await store.claim(queues=None, limit=1, now=0.0, lease=2.0)
    assert claimed.id == orphan
    await fine.enqueue()
    await flaky.enqueue()
    await doomed.enqueue()
    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobkit.Worker(queue, shutdown=token, lease=3).run)
        await trio.sleep(60)
        token.cancel()

    worker_kinds = {"started", "succeeded", "retried", "dead", "expired", "released"}
    elsewhere = (orphan, "started", 1)  # the other worker's claim
    expected = sorted(
        (e.job_id, e.kind.value, e.attempt)
        for _, e in await store.events()
        if e.kind.value in worker_kinds
        and (e.job_id, e.kind.value, e.attempt) != elsewhere
    )
    # Only the worker's own records: the queue may log its operations too.
    records = [r for r in caplog.records if getattr(r, "event", None) in worker_kinds]
    logged = sorted((r.job_id, r.event, r.attempt) for r in records)  # type: ignore[attr-defined]
    assert logged == expected
    assert {kind for _, kind, _ in logged} == worker_kinds - {"released"}
    for record in records:
        for name in FIELDS:
            assert hasattr(record, name), (name, record.getMessage())
        failed = record.event in ("retried", "dead") and record.task != "fine"  # type: ignore[attr-defined]
        assert (record.exc_info is not None) == failed, record.getMessage()
        text = JSONFormatter().format(record)
        assert text.count(TRACEBACK) == (1 if failed else 0)


async def test_a_worker_cancelled_from_outside_logs_each_handed_back_job(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    """Jobs released by a cancelled worker get one 'released' record each."""
    caplog.set_level(logging.INFO, logger="jobkit")
    queue = jobkit.Queue(MemoryStore(), clock=trio.current_time)

    @queue.task()
    async def slow() -> None:
        await trio.sleep(100)

    async with trio.open_nursery() as nursery:
        await nursery.start(jobkit.run_worker, queue)
        ids = [await slow.enqueue() for _ in range(3)]
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    released = [
        r.job_id  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "released"
    ]
    assert sorted(released) == ids
    for job_id in ids:
        assert (await queue.get(job_id)).state is JobState.QUEUED


async def test_the_queue_logs_each_operation_it_performs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Enqueue, cancel, requeue and discard each log one record; a duplicate none."""
    caplog.set_level(logging.INFO, logger="jobkit")
    store = MemoryStore()
    ticks = iter(range(100))
    queue = jobkit.Queue(store, clock=lambda: float(next(ticks)))

    @queue.task()
    async def work(n: int) -> None: ...

    first = await work.options(unique_key="k").enqueue(n=1)
    assert await work.options(unique_key="k").enqueue(n=1) == first
    second = await work.enqueue(n=2)
    await queue.cancel(second)
    [job] = await store.claim(queues=None, limit=1, now=50.0, lease=1.0)
    await store.settle([Failure(job.id, 1, "boom", retry_at=None)], now=50.0)
    await queue.requeue(first)
    [job] = await store.claim(queues=None, limit=1, now=60.0, lease=1.0)
    await store.settle([Failure(job.id, 1, "boom", retry_at=None)], now=60.0)
    await queue.discard(first)
    logged = [
        (r.job_id, r.event)  # type: ignore[attr-defined]
        for r in caplog.records
        if hasattr(r, "event")
    ]
    assert logged == [
        (first, "enqueued"),
        (second, "enqueued"),
        (second, "cancelled"),
        (first, "requeued"),
        (first, "discarded"),
    ]
