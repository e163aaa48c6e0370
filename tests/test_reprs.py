"""Records read well in a notebook: short plain reprs, HTML tables, a drawn backoff."""

from __future__ import annotations

from jobkit import Backoff, Job, JobState, QueueCounts, RetryPolicy, Schedule
from jobkit.sim import Burst, Simulation

TRACEBACK = (
    "ConnectionError: gateway timeout\n\nTraceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 4, in charge\n'
    "ConnectionError: gateway timeout"
)


def _job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "id": 7,
        "task": "charge",
        "queue": "payments",
        "payload": {"account": "acme"},
        "state": JobState.QUEUED,
        "attempts": 2,
        "max_attempts": 5,
        "priority": 0,
        "run_at": 1_764_633_600.0,  # 2025-12-02 00:00:00 UTC
        "created_at": 1_764_633_590.0,
        "updated_at": 1_764_633_595.0,
        "last_error": TRACEBACK,
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


def test_job_repr_is_one_short_line_with_dates_and_no_traceback() -> None:
    """Epoch times show as UTC dates, the error as its first line only."""
    text = repr(_job())
    assert text == (
        "<Job 7 charge on 'payments': queued, 2/5 attempts, due 2025-12-02 00:00:00Z, "
        "error 'ConnectionError: gateway timeout'>"
    )
    assert "\n" not in text and "Traceback" not in text
    assert repr(_job(run_at=12.5, last_error=None)).endswith("due t=12.5s>")


def test_job_repr_says_what_matters_in_each_state() -> None:
    """A running job shows its lease; a finished one when it finished, not when due."""
    running = _job(state=JobState.RUNNING, attempts=3, lease_until=40.0)
    assert repr(running).endswith(
        "running, attempt 3/5, lease until t=40s, error "
        "'ConnectionError: gateway timeout'>"
    )
    done = _job(state=JobState.SUCCEEDED, attempts=3, updated_at=21.0)
    assert repr(done) == (
        "<Job 7 charge on 'payments': succeeded, after 3/5 attempts, at t=21s>"
    )
    assert "last error (an earlier attempt)" in done._repr_html_()


def test_job_html_lists_its_fields_and_escapes_them() -> None:
    """The table has the payload, the dates and the error's first line, escaped."""
    page = _job(payload={"html": "<b>"}, result={"ok": True})._repr_html_()
    assert "job 7: charge on &#x27;payments&#x27;" in page
    assert "&lt;b&gt;" in page
    assert "2025-12-02 00:00:00Z" in page
    assert "ConnectionError: gateway timeout" in page and "Traceback" not in page


def test_queue_counts_html_has_a_row_per_queue_and_a_total() -> None:
    counts = QueueCounts(
        {("a", JobState.QUEUED): 3, ("b", JobState.DEAD): 1, ("b", JobState.QUEUED): 2}
    )
    page = counts._repr_html_()
    assert page.count("<tr>") == 4  # the header, a, b, all queues
    assert "<td>all queues</td><td>5</td>" in page


def test_backoff_html_draws_its_envelope() -> None:
    """The SVG has the band and the un-jittered line, scaled to the cap."""
    page = Backoff.exponential(1, 60, jitter="full")._repr_html_()
    assert "Backoff.exponential(1.0, 60.0, factor=2.0, jitter=&#x27;full&#x27;)" in page
    assert "<polygon" in page and "<polyline" in page and ">60 s<" in page


def test_decorrelated_envelope_grows_threefold_from_base_to_cap() -> None:
    backoff = Backoff.exponential(2, 100, jitter="decorrelated")
    assert backoff.envelope(5) == [
        (2.0, 6.0),
        (2.0, 18.0),
        (2.0, 54.0),
        (2.0, 100.0),
        (2.0, 100.0),
    ]
    assert Backoff.constant(5).envelope(2) == [(5.0, 5.0), (5.0, 5.0)]


def test_retry_policy_html_states_its_budget_in_seconds() -> None:
    """The default policy is dead within 1 + 2 + 4 + 8 = 15 s of its first failure."""
    page = RetryPolicy.default()._repr_html_()
    assert "at most 5, the first included" in page
    assert "15 s of the first failure, at most" in page
    assert "<svg" in page


def test_schedule_html_shows_its_grid_and_slots() -> None:
    schedule = Schedule.create("nightly", "purge", every=3600, start=0.0, now=0.0)
    page = schedule._repr_html_()
    assert "schedule &#x27;nightly&#x27;" in page
    assert "every 3600s" in page and "t=0s" in page and "SKIP" in page


def test_trace_summary_html_matches_the_trace_table() -> None:
    trace = Simulation(1, workload=Burst(3), progress=False).run()
    summary = trace.summary()._repr_html_()
    assert "Summary of a simulated run" in summary
    table = summary.split("</strong>", 1)[1].removesuffix("</div>")
    assert table in trace._repr_html_()
