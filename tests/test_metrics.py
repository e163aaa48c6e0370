"""Metrics folded from the event log: counters, histograms, depth, Prometheus text."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import jobkit
from jobkit import (
    DepthSampler,
    Event,
    EventKind,
    Histogram,
    JobState,
    MemoryStore,
    Metrics,
    MetricsSnapshot,
    NewJob,
    SQLiteStore,
    attempt_spans,
    collect_metrics,
)
from jobkit._job import EXPIRED_ERROR, Failure, Release, Success
from jobkit._metrics import COUNTERS, DURATION_BUCKETS

# -- a known history -----------------------------------------------------------------


async def known_history(store: MemoryStore) -> dict[str, int]:
    """Drive ``store`` through every kind of transition at exact times."""
    a, b, c, d, e = await store.enqueue(
        [
            NewJob(task="a", queue="q1"),
            NewJob(task="b", queue="q1", max_attempts=3),
            NewJob(task="c", queue="q2"),
            NewJob(task="a", queue="q1", max_attempts=2),
            NewJob(task="b", queue="q2"),
        ],
        now=0.0,
    )
    jobs = await store.claim(queues=["q1", "q2"], limit=4, now=1.0, lease=30.0)
    assert [j.id for j in jobs] == [a, b, c, d]
    await store.settle(
        [
            Success(a, 1),
            Failure(b, 1, "ValueError: flaky\n\nTraceback ...", retry_at=10.0),
            Failure(c, 1, "KeyError: 'x'", retry_at=None),
        ],
        now=3.0,
    )
    await store.cancel(e, now=4.0)
    [job_b] = await store.claim(queues=None, limit=1, now=10.0, lease=30.0)
    await store.settle([Success(job_b.id, 2)], now=10.5)
    assert [j.id for j in await store.reap(now=40.0)] == [d]  # expired, retried
    await store.claim(queues=None, limit=1, now=40.0, lease=30.0)
    await store.settle([Release(d, 2)], now=41.0)
    await store.claim(queues=None, limit=1, now=42.0, lease=30.0)
    await store.reap(now=80.0)  # attempt 2 of 2 lost: dead
    await store.requeue(c, now=81.0)
    await store.discard(d, now=82.0)
    return {"a": a, "b": b, "c": c, "d": d, "e": e}


EXPECTED = {
    "enqueued": {("a", "q1"): 2, ("b", "q1"): 1, ("b", "q2"): 1, ("c", "q2"): 1},
    "started": {("a", "q1"): 4, ("b", "q1"): 2, ("c", "q2"): 1},
    "succeeded": {("a", "q1"): 1, ("b", "q1"): 1},
    "failed": {("a", "q1"): 2, ("b", "q1"): 1, ("c", "q2"): 1},
    "retried": {("a", "q1"): 1, ("b", "q1"): 1},
    "dead": {("a", "q1"): 1, ("c", "q2"): 1},
    "expired": {("a", "q1"): 2},
    "released": {("a", "q1"): 1},
    "requeued": {("c", "q2"): 1},
    "cancelled": {("b", "q2"): 1},
    "discarded": {("a", "q1"): 1},
}


async def test_counters_after_a_known_history_are_exact() -> None:
    """Every counter, per task and queue, matches a hand-counted history."""
    store = MemoryStore()
    await known_history(store)
    snap = await collect_metrics(store)
    assert {name: dict(snap.counters[name]) for name in COUNTERS} == EXPECTED
    assert snap.total("started") == 7
    assert snap.total("failed", queue="q1") == 3
    assert snap.total("dead", task="c") == 1
    assert snap.seq == len(await store.events())


async def test_durations_pair_start_and_end_of_the_same_attempt() -> None:
    """Reported attempts are timed; lost and released attempts are not."""
    store = MemoryStore()
    await known_history(store)
    snap = await collect_metrics(store)
    assert sorted(snap.durations) == [
        ("a", "succeeded"),
        ("b", "failed"),
        ("b", "succeeded"),
        ("c", "failed"),
    ]
    assert (snap.duration("a").count, snap.duration("a").sum) == (1, 2.0)
    assert snap.duration("b", "succeeded").sum == 0.5
    assert snap.duration("b", "failed").sum == 2.0
    assert snap.duration().count == 4
    assert snap.duration(outcome="failed").count == 2


async def test_attempts_per_finished_job() -> None:
    """Each SUCCEEDED or DEAD event observes the attempts that job used."""
    store = MemoryStore()
    await known_history(store)
    snap = await collect_metrics(store)
    a = snap.attempts_of("a")
    assert (a.count, a.sum) == (2, 3.0)  # succeeded on 1, dead after 2
    assert snap.attempts_of("b").cumulative()[:2] == [(1.0, 0), (2.0, 1)]
    assert snap.attempts_of().count == 4


async def test_depth_comes_from_the_store_counts() -> None:
    """Depth is the store's per-queue, per-state count when the snapshot is taken."""
    store = MemoryStore()
    await known_history(store)
    snap = await collect_metrics(store)
    assert snap.depth == await store.counts()
    assert snap.depth.get("q2", JobState.QUEUED) == 1
    assert snap.depth.get("q1", JobState.CANCELLED) == 1


async def test_started_equals_finished_plus_running() -> None:
    """started = succeeded + failed + released + running, per task."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t")] * 3, now=0.0)
    await store.claim(queues=None, limit=3, now=0.0, lease=10.0)
    await store.settle([Success(1, 1)], now=1.0)
    snap = await collect_metrics(store)
    running = snap.depth.total(JobState.RUNNING)
    assert running == 2
    assert snap.total("started") == (
        snap.total("succeeded")
        + snap.total("failed")
        + snap.total("released")
        + running
    )


async def test_repeated_collection_reads_only_new_events() -> None:
    """A second snapshot of the same store folds in only what happened since."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="t")], now=0.0)
    first = await collect_metrics(store)
    seen: list[int] = []
    original = store.events

    async def spying_events(**kwargs: Any) -> list[tuple[int, Event]]:
        seen.append(kwargs["after"])
        return await original(**kwargs)

    store.events = spying_events  # type: ignore[method-assign]
    await store.enqueue([NewJob(task="t")], now=1.0)
    second = await collect_metrics(store)
    assert first.total("enqueued") == 1  # snapshots are frozen
    assert second.total("enqueued") == 2
    assert seen[0] == first.seq == 1


async def test_a_long_log_is_caught_up_with_one_listing() -> None:
    """Many unknown jobs are labelled from one store.list, not one get each."""
    store = MemoryStore()
    await store.enqueue(
        [NewJob(task=f"t{i % 3}", queue=f"q{i % 2}") for i in range(200)], now=0.0
    )
    gets = 0
    original = store.get

    async def counting_get(job_id: int) -> Any:
        nonlocal gets
        gets += 1
        return await original(job_id)

    store.get = counting_get  # type: ignore[method-assign]
    snap = await collect_metrics(store)
    assert gets == 0
    assert snap.counters["enqueued"] == {
        ("t0", "q0"): 34,
        ("t0", "q1"): 33,
        ("t1", "q0"): 33,
        ("t1", "q1"): 34,
        ("t2", "q0"): 33,
        ("t2", "q1"): 33,
    }


async def test_collect_metrics_reads_a_queue_store() -> None:
    """A Queue is accepted and its current store is read; other values are refused."""
    queue = jobkit.Queue(MemoryStore(), clock=lambda: 5.0)

    @queue.task()
    async def noop() -> None: ...

    await noop.enqueue()
    assert (await collect_metrics(queue)).total("enqueued", task="noop") == 1
    queue.store = MemoryStore()
    assert (await collect_metrics(queue)).total("enqueued") == 0
    with pytest.raises(TypeError, match="expected a jobkit Queue or Store, got int"):
        await collect_metrics(42)


async def test_queue_metrics_follow_the_log(autojump_clock: Any) -> None:
    """queue.metrics() snapshots grow with the log and read it incrementally."""
    queue = jobkit.Queue(MemoryStore(), clock=trio.current_time)

    @queue.task()
    async def noop() -> None: ...

    await noop.enqueue()
    first = await queue.metrics()
    await noop.enqueue()
    second = await queue.metrics()
    assert (first.total("enqueued"), second.total("enqueued")) == (1, 2)
    assert (first.seq, second.seq) == (1, 2)


async def test_a_worker_run_is_measured_end_to_end(autojump_clock: Any) -> None:
    """Counters and durations reflect what a real worker did, in virtual time."""
    queue = jobkit.Queue(MemoryStore(), clock=trio.current_time)
    policy = jobkit.RetryPolicy(3, jobkit.Backoff.constant(10))

    @queue.task(retry=policy)
    async def flaky(n: int) -> None:
        await trio.sleep(0.25)
        if n % 2 and jobkit.current_job().attempts < 3:
            raise RuntimeError("not yet")

    token = jobkit.CancellationToken()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobkit.Worker(queue, shutdown=token).run)
        for n in range(4):
            await flaky.enqueue(n=n)
        await trio.sleep(60)
        token.cancel()
    snap = await collect_metrics(queue)
    assert snap.total("succeeded") == 4
    assert snap.total("retried") == 4  # two odd jobs, two retries each
    assert snap.total("started") == 8
    assert snap.duration("flaky").count == 8
    assert snap.duration("flaky").sum == pytest.approx(8 * 0.25)
    assert snap.attempts_of("flaky").cumulative()[2] == (3.0, 4)


# -- folding is order-preserving and split-insensitive --------------------------------


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 40))):
        op = draw(st.sampled_from(["enqueue", "claim", "settle", "reap", "operate"]))
        ops.append((op, draw(st.integers(0, 10**6))))
    return ops


async def play(
    store: MemoryStore,
    ops: Sequence[tuple[str, int]],
    after_each: Callable[[int, float], Awaitable[None]] | None = None,
) -> None:
    now = 0.0
    for step, (op, r) in enumerate(ops):
        if after_each is not None and step:
            await after_each(step, now)
        now += 1 + r % 7
        if op == "enqueue":
            await store.enqueue(
                [NewJob(task=f"t{r % 3}", queue=f"q{r % 2}", max_attempts=1 + r % 3)],
                now=now,
            )
        elif op == "claim":
            await store.claim(queues=None, limit=1 + r % 3, now=now, lease=5.0)
        elif op == "settle":
            running = await store.list(state=JobState.RUNNING, limit=None)
            outcomes: list[Any] = []
            for i, job in enumerate(running):
                kind = (r >> i) % 4
                if kind == 0:
                    outcomes.append(Success(job.id, job.attempts))
                elif kind == 1:
                    outcomes.append(Failure(job.id, job.attempts, "E", now + 2))
                elif kind == 2:
                    outcomes.append(Failure(job.id, job.attempts, "E", None))
                else:
                    outcomes.append(Release(job.id, job.attempts))
            await store.settle(outcomes, now=now)
        elif op == "reap":
            await store.reap(now=now + 10)
        else:
            for job in await store.list(state=JobState.DEAD, limit=None):
                if r % 2:
                    await store.requeue(job.id, now=now)
                else:
                    await store.discard(job.id, now=now)
            for job in await store.list(state=JobState.QUEUED, limit=2):
                if r % 5 == 0:
                    await store.cancel(job.id, now=now)


@given(histories(), st.lists(st.integers(1, 50), max_size=5))
def test_split_reads_give_the_same_snapshot(
    ops: list[tuple[str, int]], cuts: list[int]
) -> None:
    """Folding the log in any batches gives exactly the snapshot of one read."""

    async def main() -> tuple[MetricsSnapshot, MetricsSnapshot]:
        store = MemoryStore()
        await play(store, ops)
        whole = Metrics()
        await whole.update(store)
        pieces = Metrics(batch=3)
        for cut in cuts:
            for seq, event in await store.events(after=pieces.seq, limit=cut):
                job = await store.get(event.job_id)
                pieces.observe(seq, event, task=job.task, queue=job.queue)
        await pieces.update(store)
        depth = await store.counts()
        return whole.snapshot(depth), pieces.snapshot(depth)

    whole, pieces = trio.run(main)
    assert whole == pieces


@given(histories())
def test_counter_identities_hold_for_any_history(ops: list[tuple[str, int]]) -> None:
    """failed = retried + dead, and started = finished + released + running."""

    async def main() -> MetricsSnapshot:
        store = MemoryStore()
        await play(store, ops)
        return await collect_metrics(store)

    snap = trio.run(main)
    for task in snap.tasks:
        assert snap.total("failed", task=task) == snap.total(
            "retried", task=task
        ) + snap.total("dead", task=task)
    running = snap.depth.total(JobState.RUNNING)
    assert snap.total("started") == (
        snap.total("succeeded")
        + snap.total("failed")
        + snap.total("released")
        + running
    )
    assert snap.duration().count <= snap.total("succeeded") + snap.total("failed")


def test_events_already_folded_are_ignored() -> None:
    """observe() skips sequences it has seen, so overlapping reads count once."""
    metrics = Metrics()
    event = Event(1, EventKind.ENQUEUED, 0.0, 0)
    metrics.observe(1, event, task="t", queue="q")
    metrics.observe(1, event, task="t", queue="q")
    assert metrics.snapshot().total("enqueued") == 1


def test_a_dead_lease_expiry_counts_as_expired_and_dead() -> None:
    """A crashed last attempt is dead and expired, and has no duration."""
    metrics = Metrics()
    metrics.observe(1, Event(1, EventKind.STARTED, 0.0, 1), task="t", queue="q")
    metrics.observe(
        2, Event(1, EventKind.DEAD, 45.0, 1, EXPIRED_ERROR), task="t", queue="q"
    )
    snap = metrics.snapshot()
    assert (snap.total("dead"), snap.total("expired"), snap.total("failed")) == (
        1,
        1,
        1,
    )
    assert snap.duration().count == 0


# -- histograms ----------------------------------------------------------------------


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    """A value equal to a bound lands in that bound's bucket; larger ones overflow."""
    h = Histogram.of([0.005, 0.0051, 3600.0, 3600.5], bounds=DURATION_BUCKETS)
    assert h.counts[0] == 1
    assert h.counts[1] == 1
    assert h.counts[-2] == 1
    assert h.counts[-1] == 1
    assert h.cumulative()[-1] == (math.inf, 4)
    assert h.sum == pytest.approx(0.005 + 0.0051 + 3600.0 + 3600.5)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    """histogram_quantile's interpolation, capped at the last finite bound."""
    h = Histogram.of([1.0, 2.0, 3.0, 4.0], bounds=(2.0, 4.0))
    assert h.quantile(0.5) == 2.0
    assert h.quantile(0.75) == 3.0
    assert Histogram.of([9.0], bounds=(2.0, 4.0)).quantile(0.99) == 4.0
    assert math.isnan(Histogram.empty((1.0,)).quantile(0.5))
    with pytest.raises(ValueError, match="q must be between 0 and 1, got 2"):
        h.quantile(2)


def test_histograms_add_only_with_equal_bounds() -> None:
    """Adding merges counts and sums; different bounds are refused."""
    a = Histogram.of([1.0], bounds=(1.0, 2.0))
    b = Histogram.of([1.5, 3.0], bounds=(1.0, 2.0))
    assert (a + b).counts == (1, 1, 1)
    with pytest.raises(ValueError, match="different bucket bounds"):
        a + Histogram.empty((5.0,))


@pytest.mark.parametrize(
    "bounds, message",
    [
        ((), "must not be empty"),
        ((1.0, 1.0), "strictly increasing"),
        ((1.0, math.inf), "must be finite"),
    ],
)
def test_bad_bucket_bounds_are_refused(bounds: tuple[float, ...], message: str) -> None:
    """Bucket bounds must be finite, non-empty and strictly increasing."""
    with pytest.raises(ValueError, match=message):
        Metrics(duration_buckets=bounds)


# -- presentation ------------------------------------------------------------------


async def test_repr_and_html_show_the_numbers() -> None:
    """The repr sums the main counters; the HTML table escapes task names."""
    store = MemoryStore()
    await store.enqueue([NewJob(task="<b>x</b>")], now=0.0)
    snap = await collect_metrics(store)
    assert repr(snap) == (
        "<MetricsSnapshot enqueued=1 started=0 succeeded=0 failed=0 retried=0 "
        "dead=0; depth queued=1 running=0 dead=0>"
    )
    page = snap._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "<table>" in page
    assert "<b>x</b> @ default: enqueued 1" in str(snap)
    assert snap.rows()[0]["enqueued"] == 1


def test_unknown_counter_names_are_refused() -> None:
    """total() names the counters it knows when given another."""
    with pytest.raises(ValueError, match="unknown counter 'finished'"):
        MetricsSnapshot.empty().total("finished")


# -- Prometheus text -------------------------------------------------------------------

LINE = re.compile(
    r"(?:# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*"
    r"|# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (?:counter|gauge|histogram)"
    r'|[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?\})? '
    r"(?:[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[-+]Inf|NaN))\Z"
)


def strict_check(text: str) -> None:
    """Check the 0.0.4 text format strictly: syntax, family order, uniqueness."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    current: str | None = None
    seen: set[str] = set()
    for line in text.splitlines():
        assert LINE.match(line), f"malformed line: {line!r}"
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in families, f"family {current} repeated"
        elif line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert name == current, "TYPE must follow its HELP"
            families[name] = kind
        else:
            assert current is not None
            name = line.split("{")[0].split()[0]
            kind = families[current]
            allowed = (
                {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
                if kind == "histogram"
                else {current}
            )
            assert name in allowed, f"{name} outside its family {current}"
            assert line.rsplit(" ", 1)[0] not in seen, f"duplicate series: {line}"
            seen.add(line.rsplit(" ", 1)[0])


async def test_prometheus_text_parses_and_carries_every_value() -> None:
    """prometheus_client parses the text back to the snapshot's numbers."""
    store = MemoryStore()
    await known_history(store)
    snap = await collect_metrics(store)
    text = snap.to_prometheus()
    strict_check(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["jobkit_jobs_dead"].type == "counter"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    for name in COUNTERS:
        for (task, queue), n in EXPECTED[name].items():
            key = (f"jobkit_jobs_{name}_total", (("queue", queue), ("task", task)))
            assert samples[key] == n

    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted(labels.items())))

    base = {"outcome": "succeeded", "task": "b"}
    assert samples[key("jobkit_job_duration_seconds_count", **base)] == 1
    assert samples[key("jobkit_job_duration_seconds_sum", **base)] == 0.5
    assert samples[key("jobkit_job_duration_seconds_bucket", le="0.5", **base)] == 1
    assert samples[key("jobkit_job_duration_seconds_bucket", le="0.25", **base)] == 0
    assert samples[("jobkit_job_attempts_count", (("task", "a"),))] == 2
    assert samples[("jobkit_jobs", (("queue", "q2"), ("state", "queued")))] == 1
    assert samples[("jobkit_jobs", (("queue", "q2"), ("state", "running")))] == 0
    assert families["jobkit_job_duration_seconds"].type == "histogram"
    assert families["jobkit_jobs"].type == "gauge"


async def test_prometheus_histogram_buckets_are_cumulative() -> None:
    """Bucket counts never decrease and the +Inf bucket equals _count."""
    store = MemoryStore()
    await known_history(store)
    text = (await collect_metrics(store)).to_prometheus()
    buckets: dict[tuple[Any, ...], list[float]] = {}
    counts: dict[tuple[Any, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                buckets.setdefault((family.name, labels), []).append(s.value)
            elif s.name.endswith("_count"):
                counts[(family.name, labels)] = s.value
    assert buckets
    for key, values in buckets.items():
        assert values == sorted(values)
        assert values[-1] == counts[key]


def test_prometheus_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in names survive a parse round trip."""
    metrics = Metrics()
    name = 'say "hi"\\ \nnow'
    metrics.observe(1, Event(1, EventKind.ENQUEUED, 0.0, 0), task=name, queue="q")
    text = metrics.snapshot().to_prometheus()
    strict_check(text)
    [sample] = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "jobkit_jobs_enqueued_total"
    ]
    assert sample.labels == {"task": name, "queue": "q"}


def test_prometheus_prefix_is_checked() -> None:
    """A custom prefix renames every family; an invalid one is refused."""
    text = MetricsSnapshot.empty().to_prometheus(prefix="app_jobs")
    assert "# TYPE app_jobs_jobs_dead_total counter" in text
    with pytest.raises(ValueError, match="prefix must be a Prometheus metric name"):
        MetricsSnapshot.empty().to_prometheus(prefix="9lives")


# -- spans and depth sampling ---------------------------------------------------------


def test_attempt_spans_pair_events_and_keep_open_attempts() -> None:
    """Spans close on the event that ends the same attempt; others stay open."""
    spans = attempt_spans(
        [
            (1, Event(1, EventKind.STARTED, 0.0, 1)),
            (2, Event(2, EventKind.STARTED, 1.0, 1)),
            (3, Event(1, EventKind.SUCCEEDED, 4.0, 1)),
            (4, Event(2, EventKind.RELEASED, 5.0, 1)),
            (5, Event(2, EventKind.STARTED, 6.0, 1)),
        ]
    )
    assert [(s.job_id, s.start, s.end, s.outcome) for s in spans] == [
        (1, 0.0, 4.0, EventKind.SUCCEEDED),
        (2, 1.0, 5.0, EventKind.RELEASED),
        (2, 6.0, None, None),
    ]
    assert spans[2].duration is None


async def test_depth_sampler_samples_on_the_period(autojump_clock: Any) -> None:
    """Samples are taken at once and every period, at exact instants."""
    queue = jobkit.Queue(MemoryStore(), clock=trio.current_time)

    @queue.task()
    async def noop() -> None: ...

    sampler = DepthSampler(queue, every=5, limit=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        await trio.sleep(7)
        await noop.enqueue()
        await noop.enqueue()
        await trio.sleep(9)
        nursery.cancel_scope.cancel()
    # Taken at 0, 5, 10, 15; the limit keeps the last three.
    assert [(s.at, s.counts.total(JobState.QUEUED)) for s in sampler.samples] == [
        (5.0, 0),
        (10.0, 2),
        (15.0, 2),
    ]


def test_depth_sampler_checks_its_arguments() -> None:
    """A bad period, limit or source is refused with a clear message."""
    with pytest.raises(ValueError, match="every must be a positive number"):
        DepthSampler(MemoryStore(), every=0)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        DepthSampler(MemoryStore(), every=1, limit=0)
    with pytest.raises(TypeError, match="expected a jobkit Queue or Store"):
        DepthSampler("jobs.db", every=1)


# -- purges take nothing back ---------------------------------------------------------


def never_lower(before: MetricsSnapshot, after: MetricsSnapshot) -> None:
    """Every counter, histogram count, sum and cumulative bucket is at least as high."""
    for name in COUNTERS:
        for key, n in before.counters[name].items():
            assert after.counters[name].get(key, 0) >= n, (name, key)
    pairs = [(before.durations, after.durations), (before.attempts, after.attempts)]
    for old, new in pairs:
        for key, hist in old.items():  # type: ignore[attr-defined]
            assert key in new, key
            assert new[key].sum >= hist.sum - 1e-9  # type: ignore[index]
            for (_, a), (_, b) in zip(
                hist.cumulative(),
                new[key].cumulative(),  # type: ignore[index]
                strict=True,
            ):
                assert b >= a, key


@given(histories(), st.sets(st.integers(1, 40)))
def test_purges_never_take_metrics_back(
    ops: list[tuple[str, int]], purges: set[int]
) -> None:
    """Whatever is purged when, a follower's numbers only grow, and end where a
    store that never purged ends: counters and histograms alike."""

    async def main() -> tuple[MetricsSnapshot, MetricsSnapshot]:
        store, twin = MemoryStore(), MemoryStore()
        follower = Metrics()
        last = MetricsSnapshot.empty()

        async def step(i: int, now: float) -> None:
            nonlocal last
            if i in purges:
                await store.purge(before=now + 1)
            await follower.update(store)
            snap = follower.snapshot()
            never_lower(last, snap)
            last = snap

        await play(store, ops, step)
        await play(twin, ops)
        await follower.update(store)
        await store.purge(before=1e9)
        fresh = Metrics()
        await fresh.update(store)
        never_lower(last, fresh.snapshot())
        full = Metrics()
        await full.update(twin)
        return fresh.snapshot(), full.snapshot()

    purged, kept = trio.run(main)
    assert purged.counters == kept.counters
    assert "unknown" not in purged.tasks
    for got, want in (
        (purged.durations, kept.durations),
        (purged.attempts, kept.attempts),
    ):
        assert got.keys() == want.keys()  # type: ignore[attr-defined]
        for key, hist in want.items():  # type: ignore[attr-defined]
            assert got[key].counts == hist.counts  # type: ignore[index]
            assert got[key].sum == pytest.approx(hist.sum)  # type: ignore[index]


async def succeed(store: jobkit.Store, n: int, now: float) -> None:
    ids = await store.enqueue([NewJob(task="t")] * n, now=now)
    jobs = await store.claim(queues=None, limit=n, now=now, lease=60.0)
    assert {j.id for j in jobs} == set(ids)
    await store.settle([Success(j.id, 1) for j in jobs], now=now + 0.2)


async def test_counters_survive_a_purge_and_a_restart(tmp_path: Path) -> None:
    """20 succeeded jobs stay 20 after purging them, and after reopening the file."""
    path = tmp_path / "jobs.db"
    async with SQLiteStore(path) as store:
        await succeed(store, 20, 0.0)
        before = await collect_metrics(store)
        assert before.total("succeeded") == 20
        assert await store.purge(before=100.0) == 19  # the newest job stays
        after = await collect_metrics(store)
        assert after.total("succeeded") == 20
        assert after.tasks == ["t"]  # no "unknown" series
        assert after.counters == before.counters
        assert after.durations == before.durations
        assert after.attempts == before.attempts
    async with SQLiteStore(path) as store:
        again = await collect_metrics(store)
        assert again.counters == before.counters
        assert again.durations == before.durations
        await succeed(store, 1, 200.0)
        assert (await collect_metrics(store)).total("succeeded") == 21


def test_purged_durations_fall_into_the_lowest_possible_bucket() -> None:
    """With bounds of its own, a follower never counts a purged duration too high."""
    metrics = Metrics(duration_buckets=(0.3, 2.0))
    metrics.start_from(
        jobkit.PurgeTotals(
            1,
            {
                ("t", "q", "duration:succeeded", 5): (2, 0.4),  # in (0.1, 0.25]
                ("t", "q", "duration:succeeded", 6): (1, 0.4),  # in (0.25, 0.5]
            },
        )
    )
    hist = metrics.snapshot().duration("t")
    assert (hist.counts, hist.sum) == ((3, 0, 0), 0.8)


async def test_a_follower_that_keeps_up_lists_only_the_new_jobs() -> None:
    """Catching up on many new jobs reads their range of ids, not the whole table."""
    store = MemoryStore()
    listed: list[int] = []
    inner_list = store.list

    async def counting_list(**options: Any) -> list[jobkit.Job]:
        jobs = await inner_list(**options)
        listed.append(len(jobs))
        return jobs

    store.list = counting_list  # type: ignore[method-assign]
    await store.enqueue([NewJob(task="old")] * 1000, now=0.0)
    metrics = Metrics()
    await metrics.update(store)
    listed.clear()
    await store.enqueue([NewJob(task="new", queue="q")] * 100, now=1.0)
    assert await metrics.update(store) == 100
    assert listed == [100]
    assert metrics.snapshot().total("enqueued", task="new", queue="q") == 100
