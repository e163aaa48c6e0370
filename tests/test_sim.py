"""The fault-injection simulator: faults, workloads, exact virtual runs, traces."""

from __future__ import annotations

import io
import math
import os
import random
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import jobkit
from jobkit import Backoff, EventKind, JobState, RetryPolicy
from jobkit.sim import (
    Attempt,
    Burst,
    Crash,
    Dependency,
    Fault,
    FaultPlan,
    Hang,
    KeyedRandom,
    Latency,
    Mix,
    PermanentErrors,
    Poisson,
    Progress,
    Simulation,
    Steady,
    StoreErrors,
    Trace,
    TraceEvent,
    TransientErrors,
    _progress,
)

POLICY = RetryPolicy(3, Backoff.exponential(1, 60))


@attrs.frozen
class CrashOnFirstAttempt(Fault):
    """Kills the worker during every job's first attempt."""

    async def inject(self, attempt: Attempt) -> None:
        if attempt.number == 1:
            await attempt.crash()


def rows(trace: Trace, *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(getattr(e, f) for f in fields) for e in trace.events]


# -- keyed randomness ---------------------------------------------------------------


def test_keyed_random_depends_only_on_its_key() -> None:
    """Equal keys give equal streams; any change of key gives another stream."""
    a, b = KeyedRandom(5, 1, 2), KeyedRandom(5, 1, 2)
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]
    firsts = {KeyedRandom(5, 1, k).random() for k in range(1000)}
    assert len(firsts) == 1000
    assert KeyedRandom(5, 1, 2).random() != KeyedRandom(6, 1, 2).random()


def test_keyed_random_is_uniform_enough_for_its_distributions() -> None:
    """Its floats fill [0, 1) evenly and Random's distributions work on it."""
    rng = KeyedRandom(1)
    draws = [rng.random() for _ in range(20_000)]
    assert all(0.0 <= x < 1.0 for x in draws)
    deciles = [0] * 10
    for x in draws:
        deciles[int(x * 10)] += 1
    assert all(1800 < n < 2200 for n in deciles)
    assert 0.9 < sum(rng.expovariate(1.0) for _ in range(5000)) / 5000 < 1.1
    assert rng.getrandbits(130) < 2**130
    state = rng.getstate()
    x = rng.random()
    rng.setstate(state)
    assert rng.random() == x


# -- fault models ------------------------------------------------------------------


def test_latency_distributions_have_their_documented_means() -> None:
    """Each Latency samples around its mean; constant samples exactly."""
    rng = random.Random(3)
    assert Latency.constant(0.25).sample(rng) == 0.25
    for latency in (
        Latency.uniform(1, 3),
        Latency.exponential(0.5),
        Latency.lognormal(0.2, 0.5),
    ):
        mean = sum(latency.sample(rng) for _ in range(20_000)) / 20_000
        assert mean == pytest.approx(latency.mean, rel=0.05)
    assert all(1 <= Latency.uniform(1, 3).sample(rng) <= 3 for _ in range(100))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Latency.uniform(3, 1), "high must be >= low"),
        (lambda: Latency.exponential(0), "mean must be > 0"),
        (lambda: Latency.constant(-1), "seconds must be >= 0"),
        (lambda: TransientErrors(1.5), "probability must be between 0 and 1"),
        (lambda: Crash(-0.1), "probability must be between 0 and 1"),
        (lambda: Hang(0.1, duration=0), "duration must be > 0"),
        (lambda: Dependency(capacity=0), "capacity must be > 0"),
        (lambda: Dependency(capacity=5, latency=0), "latency must be > 0"),
        (lambda: StoreErrors(0.1, operations={"claim", "fly"}), "operations must be"),
        (lambda: FaultPlan(Latency.constant(1), "crash"), "FaultPlan takes Fault"),
        (
            lambda: FaultPlan(Dependency(5), Dependency(6)),
            "two different dependencies are named 'downstream'",
        ),
        (lambda: Burst(-1), "n must be an int >= 0"),
        (lambda: Steady(0, count=3), "rate must be finite and > 0"),
        (lambda: Poisson(1.0), "give count=, duration= or both"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(make: Any, message: str) -> None:
    """A fault or workload with an impossible setting names what is wrong."""
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_probability_must_be_a_number() -> None:
    """A probability given as text is a TypeError, not a silent conversion."""
    with pytest.raises(TypeError, match="probability must be a number"):
        TransientErrors("0.5")  # type: ignore[arg-type]


def test_dependency_sheds_the_load_above_its_capacity() -> None:
    """The failure probability is the fraction of requests above capacity."""
    api = Dependency(capacity=50, base_failure=0.1)
    assert api.failure_probability(0) == pytest.approx(0.1)
    assert api.failure_probability(50) == pytest.approx(0.1)
    assert api.failure_probability(100) == pytest.approx(0.1 + 0.9 * 0.5)
    assert api.failure_probability(500) == pytest.approx(0.1 + 0.9 * 0.9)


def test_fault_plans_compose_in_order() -> None:
    """Adding faults or plans keeps their order; attempt and store faults split."""
    store = StoreErrors(0.1)
    plan = FaultPlan(Latency.constant(1)) + TransientErrors(0.2) + FaultPlan(store)
    assert [type(f).__name__ for f in plan] == [
        "Latency",
        "TransientErrors",
        "StoreErrors",
    ]
    assert [i for i, _ in plan.attempt_faults] == [0, 1]
    assert plan.store_faults == ((2, store),)
    assert plan == FaultPlan(Latency.constant(1), TransientErrors(0.2), store)
    assert not plan.hangs_forever
    assert (plan + Hang(0.1)).hangs_forever
    assert not (plan + Hang(0.1, duration=3)).hangs_forever


def test_a_plan_that_hangs_forever_needs_a_timeout() -> None:
    """Without a timeout a hung attempt would never end, so the simulation refuses."""
    with pytest.raises(ValueError, match="set timeout="):
        Simulation(faults=FaultPlan(Hang(0.1)))
    Simulation(faults=FaultPlan(Hang(0.1)), timeout=10)


# -- workloads -----------------------------------------------------------------------


def test_workloads_produce_their_arrival_times() -> None:
    """Burst, Steady and Mix arrive exactly when they say; Poisson averages its rate."""
    rng = random.Random(0)
    assert Burst(3, at=2).arrivals(rng) == [2.0, 2.0, 2.0]
    assert Steady(4, count=5, start=1).arrivals(rng) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert Steady(1, duration=3.5, count=10).arrivals(rng) == [0.0, 1.0, 2.0, 3.0]
    assert Steady(1, duration=3).arrivals(rng) == [0.0, 1.0, 2.0]
    mix = Burst(1, at=1.5) + Steady(1, count=3)
    assert isinstance(mix, Mix)
    assert mix.arrivals(rng) == [0.0, 1.0, 1.5, 2.0]
    times = Poisson(20, duration=500).arrivals(KeyedRandom(9))
    assert times == sorted(times) and all(t < 500 for t in times)
    assert len(times) / 500 == pytest.approx(20, rel=0.05)
    assert len(Poisson(20, count=7).arrivals(rng)) == 7


# -- simulated runs at exact instants ------------------------------------------------


def test_a_clean_run_finishes_every_job_at_once() -> None:
    """Without faults every job succeeds on its first attempt, with no time passing."""
    trace = Simulation(0, workload=Burst(25)).run()
    s = trace.summary()
    assert (s.jobs, s.succeeded, s.attempts, s.end) == (25, 25, 25, 0.0)
    assert trace.drained and not trace.interrupted
    assert trace.violations() == []


def test_latency_and_concurrency_set_when_each_attempt_runs() -> None:
    """Three one-second jobs on one slot run back to back, at exact instants."""
    trace = Simulation(
        0, workload=Burst(3), concurrency=1, faults=FaultPlan(Latency.constant(1))
    ).run()
    assert [(s.job_id, s.start, s.end) for s in trace.spans()] == [
        (1, 0.0, 1.0),
        (2, 1.0, 2.0),
        (3, 2.0, 3.0),
    ]
    assert trace.latencies() == {1: 1.0, 2: 2.0, 3: 3.0}
    assert [(p.time, p.ready, p.running) for p in trace.queue_depth()] == [
        (0.0, 2, 1),
        (1.0, 1, 1),
        (2.0, 0, 1),
        (3.0, 0, 0),
    ]


def test_transient_errors_retry_with_the_policys_backoff_then_go_dead() -> None:
    """A job that always fails waits 1 s, then 2 s, and is dead after attempt 3."""
    trace = Simulation(
        0,
        workload=Burst(1),
        retry=POLICY,
        faults=FaultPlan(Latency.constant(0.5), TransientErrors(1.0)),
    ).run()
    assert rows(trace, "time", "kind", "attempt", "delay", "due", "cause") == [
        (0.0, "enqueued", 0, None, None, None),
        (0.0, "started", 1, None, None, None),
        (0.5, "retried", 1, 1.0, 1.5, "transient"),
        (1.5, "started", 2, None, None, None),
        (2.0, "retried", 2, 2.0, 4.0, "transient"),
        (4.0, "started", 3, None, None, None),
        (4.5, "dead", 3, None, None, "transient"),
    ]
    assert trace.events[-1].error == "SimulatedError: transient failure (injected)"
    assert [(w.delay, w.bounds) for w in trace.waits()] == [
        (1.0, (1.0, 1.0)),
        (2.0, (2.0, 2.0)),
    ]
    assert trace.jobs[1].state is JobState.DEAD
    assert trace.violations() == []


def test_permanent_errors_go_dead_on_the_first_attempt() -> None:
    """A permanent error skips the remaining attempts."""
    trace = Simulation(
        0, workload=Burst(2), retry=POLICY, faults=FaultPlan(PermanentErrors(1.0))
    ).run()
    assert trace.summary().dead == 2
    assert {(e.kind, e.attempt, e.cause) for e in trace if e.kind == "dead"} == {
        ("dead", 1, "permanent")
    }
    assert trace.violations() == []


def test_a_hang_fails_the_attempt_at_the_task_timeout() -> None:
    """A hung attempt ends with TooSlowError exactly when the timeout runs out."""
    trace = Simulation(
        0, workload=Burst(1), timeout=5, retry=POLICY, faults=FaultPlan(Hang(1.0))
    ).run()
    assert rows(trace, "time", "kind", "attempt", "cause")[2:] == [
        (5.0, "retried", 1, "hang"),
        (6.0, "started", 2, None),
        (11.0, "retried", 2, "hang"),
        (13.0, "started", 3, None),
        (18.0, "dead", 3, "hang"),
    ]
    assert trace.events[2].error == "TooSlowError: attempt timed out after 5s"
    assert trace.violations() == []


def test_a_crashed_worker_is_restarted_and_its_job_recovered_after_the_lease() -> None:
    """A crashed worker's job waits out its lease, then runs on the new worker."""
    trace = Simulation(
        0,
        workload=Burst(1),
        lease=6,
        restart_delay=5,
        faults=FaultPlan(
            Latency.constant(1), CrashOnFirstAttempt(), Latency.constant(1)
        ),
    ).run()
    # Crash at 1; restart at 6; the new worker reaps every lease/3 = 2 s from
    # its start and the lease (until 6) must have ended strictly: reaped at 8.
    assert rows(trace, "time", "kind", "attempt", "worker", "cause") == [
        (0.0, "enqueued", 0, None, None),
        (0.0, "started", 1, "w1", None),
        (1.0, "crashed", 1, "w1", "crash"),
        (6.0, "restarted", None, "w1.2", None),
        (8.0, "expired", 1, "w1", "crash"),
        (8.0, "started", 2, "w1.2", None),
        (10.0, "succeeded", 2, "w1.2", None),
    ]
    first, _ = trace.spans()
    assert (first.crashed_at, first.end, first.outcome) == (1.0, 8.0, EventKind.EXPIRED)
    assert (first.worker, first.cause) == ("w1", "crash")
    assert trace.summary().crashes == 1
    assert trace.violations() == []


def test_a_crash_takes_every_job_of_that_worker_down_with_it() -> None:
    """Jobs running beside the crashing one are lost too, and recovered the same way."""
    trace = Simulation(
        0,
        workload=Burst(3),
        concurrency=3,
        lease=3,
        restart_delay=1,
        faults=FaultPlan(
            Latency.constant(1),
            CrashOnFirstAttempt(),
        ),
    ).run()
    crashed = [(e.time, e.job, e.worker) for e in trace if e.kind == "crashed"]
    assert crashed == [(1.0, 1, "w1"), (1.0, 2, "w1"), (1.0, 3, "w1")]
    causes = sorted(e.cause for e in trace if e.kind == "crashed")
    assert causes == ["crash", "worker crashed", "worker crashed"]
    assert trace.summary().crashes == 1
    assert trace.summary().succeeded == 3
    assert trace.attempts_per_job() == {1: 2, 2: 2, 3: 2}
    assert trace.violations() == []


@attrs.frozen
class CrashFirstJobAtOnce(Fault):
    """Kills the worker the instant job 1's first attempt begins."""

    async def inject(self, attempt: Attempt) -> None:
        if (attempt.job.id, attempt.number) == (1, 1):
            await attempt.crash()


def test_a_crash_ends_the_claimed_attempts_whose_handlers_had_not_started() -> None:
    """Jobs claimed in the same batch as the crashing one are crashed with it."""
    trace = Simulation(
        0,
        workload=Burst(3),
        concurrency=3,
        faults=FaultPlan(CrashFirstJobAtOnce(), Latency.constant(1)),
    ).run()
    # One claim takes all three at 0; job 1's handler kills the process
    # before the other two handlers begin. Lease 30 s, restart after 5 s,
    # reaped on the new process's first sweep after 30 s, at 35.
    assert rows(trace, "time", "kind", "job", "attempt", "worker", "cause") == [
        (0.0, "enqueued", 1, 0, None, None),
        (0.0, "enqueued", 2, 0, None, None),
        (0.0, "enqueued", 3, 0, None, None),
        (0.0, "started", 1, 1, "w1", None),
        (0.0, "started", 2, 1, "w1", None),
        (0.0, "started", 3, 1, "w1", None),
        (0.0, "crashed", 1, 1, "w1", "crash"),
        (0.0, "crashed", 2, 1, "w1", "worker crashed"),
        (0.0, "crashed", 3, 1, "w1", "worker crashed"),
        (5.0, "restarted", None, None, "w1.2", None),
        (35.0, "expired", 1, 1, "w1", "crash"),
        (35.0, "expired", 2, 1, "w1", "crash"),
        (35.0, "expired", 3, 1, "w1", "crash"),
        (35.0, "started", 1, 2, "w1.2", None),
        (35.0, "started", 2, 2, "w1.2", None),
        (35.0, "started", 3, 2, "w1.2", None),
        (36.0, "succeeded", 3, 2, "w1.2", None),
        (36.0, "succeeded", 2, 2, "w1.2", None),
        (36.0, "succeeded", 1, 2, "w1.2", None),
    ]
    first = [(s.job_id, s.crashed_at, s.end) for s in trace.spans() if s.attempt == 1]
    assert first == [(1, 0.0, 35.0), (2, 0.0, 35.0), (3, 0.0, 35.0)]
    assert trace.summary().crashes == 1
    assert trace.violations() == []


@attrs.frozen
class SlowFirstAttempt(Fault):
    """Job 1's first attempt works for 5 s, longer than its lease."""

    async def inject(self, attempt: Attempt) -> None:
        if attempt.number == 1:
            attempt.note("slow")
            await trio.sleep(5)


def test_a_fenced_attempt_takes_its_cause_from_before_it_was_stopped() -> None:
    """An attempt whose lease cannot be renewed is stopped, and its cause kept."""
    trace = Simulation(
        0,
        workload=Burst(1),
        concurrency=1,
        lease=3,
        retry=RetryPolicy(2, Backoff.constant(1)),
        faults=FaultPlan(
            SlowFirstAttempt(),
            TransientErrors(1.0),
            StoreErrors(1.0, operations={"renew"}),
        ),
    ).run()
    # The renewals at 1 and 2 fail, so the lease taken at 0 would end at 3:
    # the worker stops the still slow attempt half a second before (lease/6)
    # and records it as failed, retried after the 1 s backoff; no other
    # worker ever reaps it. The second attempt fails for good at once.
    assert rows(trace, "time", "kind", "attempt", "cause") == [
        (0.0, "enqueued", 0, None),
        (0.0, "started", 1, None),
        (1.0, "store_error", None, None),
        (2.0, "store_error", None, None),
        (2.5, "retried", 1, "slow"),
        (3.5, "started", 2, None),
        (3.5, "dead", 2, "transient"),
    ]
    assert trace.violations() == []


def test_a_poison_job_that_always_crashes_its_worker_ends_dead() -> None:
    """Crashed attempts count, so a job that kills every worker goes dead."""
    trace = Simulation(
        0,
        workload=Burst(1),
        retry=RetryPolicy(3, Backoff.constant(1)),
        lease=3,
        restart_delay=1,
        faults=FaultPlan(Crash(1.0)),
    ).run()
    assert [e.kind for e in trace if e.kind in ("expired", "dead")] == [
        "expired",
        "expired",
        "dead",
    ]
    assert trace.jobs[1].state is JobState.DEAD
    assert trace.summary().crashes == 3
    assert trace.violations() == []


def test_store_errors_are_survived_and_recorded() -> None:
    """Failing store calls, before or after they commit, lose no job."""
    trace = Simulation(
        4,
        workload=Poisson(5, count=60),
        concurrency=4,
        lease=4,
        faults=FaultPlan(
            Latency.exponential(0.3),
            StoreErrors(0.2, operations={"enqueue", "claim", "settle"}),
            StoreErrors(0.2, operations={"claim"}, after_commit=1.0),
        ),
    ).run()
    s = trace.summary()
    assert s.store_errors > 10
    # A claim that committed but never reached the worker is recovered by
    # lease expiry, like a crash.
    assert s.expired > 0
    assert s.succeeded + s.dead == 60
    assert trace.violations() == []


def test_an_overloaded_dependency_refuses_what_exceeds_its_capacity() -> None:
    """Thirty requests at once to a service for ten: about two thirds refused."""
    api = Dependency(capacity=10, window=1.0, latency=0.1)
    # Stop before the first retry's answer (after 0.1 + 0.1 s at the soonest).
    trace = Simulation(
        0, workload=Burst(30), concurrency=30, faults=FaultPlan(api)
    ).run(until=0.15)
    assert {c.load for c in trace.calls} == {30}
    assert all(c.time == 0.0 for c in trace.calls)
    refused = sum(not c.ok for c in trace.calls)
    assert 14 <= refused <= 26
    assert trace.load() == [(0.0, 30, refused)]
    assert trace.summary().peak_load == 30


def test_jitter_breaks_up_a_retry_storm() -> None:
    """Without jitter retries come back in waves that overload the service again."""
    api = Dependency(capacity=20, window=1.0)
    runs = {
        jitter: Simulation(
            1,
            workload=Burst(200),
            concurrency=200,
            faults=FaultPlan(api),
            retry=RetryPolicy(12, Backoff.exponential(1, 60, jitter=jitter)),
        ).run()
        for jitter in (None, "full")
    }
    plain, full = runs[None].summary(), runs["full"].summary()
    assert plain.succeeded == full.succeeded == 200
    assert full.attempts < plain.attempts
    assert full.end < plain.end
    # Without jitter the jobs stay in lockstep: each wave is sent 0.05 s
    # (the answer) plus the capped exponential delay after the one before.
    grid = [0.0]
    for k in range(11):
        grid.append(grid[-1] + 0.05 + min(60, 2**k))
    waves = {round(c.time, 6) for c in runs[None].calls}
    assert waves <= {round(t, 6) for t in grid}
    assert len(waves) > 6


def test_until_stops_the_run_at_that_instant() -> None:
    """A horizon leaves later work undone and records nothing after it."""
    trace = Simulation(
        0,
        workload=Steady(1, duration=100),
        faults=FaultPlan(Latency.constant(0.5)),
    ).run(until=10.25)
    s = trace.summary()
    assert trace.end == 10.25 and not trace.drained
    assert s.succeeded == 10 and s.jobs == 11 and s.unfinished == 1
    assert max(e.time for e in trace) == 10.0
    assert trace.jobs[11].state is JobState.RUNNING
    assert trace.violations() == []


# -- determinism ----------------------------------------------------------------------

RICH = dict(
    workers=3,
    concurrency=3,
    lease=4,
    timeout=6,
    workload=Poisson(4, count=80),
    faults=FaultPlan(
        Latency.lognormal(0.3, 0.8),
        TransientErrors(0.15),
        Crash(0.03),
        Latency.exponential(0.3),
        Dependency(capacity=6),
        Hang(0.02),
        StoreErrors(0.03, after_commit=0.3),
    ),
    retry=RetryPolicy(6, Backoff.exponential(0.5, 30, jitter="decorrelated")),
)


def test_the_same_seed_replays_the_same_trace_event_for_event() -> None:
    """Two runs with one seed agree on every event; another seed differs."""
    a = Simulation(11, **RICH).run()  # type: ignore[arg-type]
    b = Simulation(11, **RICH).run()  # type: ignore[arg-type]
    assert a.events == b.events and a.calls == b.calls and a == b
    assert a.fingerprint() == b.fingerprint()
    assert a.summary().crashes > 0 and a.summary().store_errors > 0
    c = Simulation(12, **RICH).run()  # type: ignore[arg-type]
    assert c.events != a.events


REPLAY = """
import sys
from jobkit import Backoff, RetryPolicy
from jobkit.sim import *
sys.path.insert(0, {tests!r})
from test_sim import RICH
print(Simulation(11, **RICH).run().fingerprint())
"""


@pytest.mark.slow
def test_replays_agree_across_processes_and_hash_seeds() -> None:
    """Fresh interpreters with different hash seeds and memory layouts agree."""
    here = str(Path(__file__).parent)
    prints = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", REPLAY.format(tests=here)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        prints.add(out.stdout.strip())
    assert prints == {Simulation(11, **RICH).run().fingerprint()}  # type: ignore[arg-type]


def test_a_run_leaves_trios_scheduler_and_the_logger_as_it_found_them() -> None:
    """Seeding trio's scheduler and muting the jobkit logger last only for the run."""
    import logging

    run_module: Any = trio._core._run
    before = run_module._r.getstate()
    flag = run_module._ALLOW_DETERMINISTIC_SCHEDULING
    Simulation(0, workload=Burst(3), faults=FaultPlan(TransientErrors(0.5))).run()
    assert run_module._r.getstate() == before
    assert flag == run_module._ALLOW_DETERMINISTIC_SCHEDULING
    assert logging.getLogger("jobkit").disabled is False


def test_a_run_sets_older_objects_aside_from_the_collector_only_meanwhile() -> None:
    """During a run the older heap is frozen; after it, the freeze is as it was."""
    import gc

    seen: list[int] = []

    def look(progress: Progress) -> None:
        seen.append(gc.get_freeze_count())

    Simulation(0, workload=Burst(3), progress=look).run()
    assert seen and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0
    # What survives a full collection during the run is set aside as well,
    # so the next one does not walk it again.
    grew: list[tuple[int, int]] = []

    def collect(progress: Progress) -> None:
        before = gc.get_freeze_count()
        gc.collect()
        grew.append((before, gc.get_freeze_count()))

    callbacks = list(gc.callbacks)
    Simulation(0, workload=Burst(200), progress=collect).run()
    assert grew and all(after > before for before, after in grew)
    assert gc.get_freeze_count() == 0 and gc.callbacks == callbacks
    # A program's own freeze (before forking, say) is neither added to nor undone.
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        seen.clear()
        Simulation(0, workload=Burst(3), progress=look).run()
        assert seen == [frozen] * len(seen) and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_faults_hit_the_same_attempts_whatever_the_retry_policy() -> None:
    """Draws are keyed by job and attempt: two policies meet the same first failures."""
    plan = FaultPlan(TransientErrors(0.3))
    runs = [
        Simulation(3, workload=Burst(50), faults=plan, retry=policy).run()
        for policy in (
            RetryPolicy(5, Backoff.constant(1)),
            RetryPolicy(5, Backoff.exponential(2, 60, jitter="full")),
        )
    ]
    firsts = [
        {e.job for e in run if e.kind == "retried" and e.attempt == 1} for run in runs
    ]
    assert firsts[0] == firsts[1] and 5 < len(firsts[0]) < 30


def test_decorrelated_jitter_after_a_delayed_settle() -> None:
    """A settle held up by store errors must not shrink the next decorrelated wait."""
    # With base == cap every decorrelated delay is exactly 0.25 s.
    trace = Simulation(
        0,
        workload=Steady(5.0, count=3),
        concurrency=1,
        lease=1.0,
        restart_delay=0.0,
        faults=FaultPlan(
            TransientErrors(0.5, per_job=True),
            StoreErrors(0.28125, operations={"enqueue", "settle", "claim"}),
        ),
        retry=RetryPolicy(3, Backoff.constant(0.25, jitter="decorrelated")),
    ).run()
    assert [w.delay for w in trace.waits()] == [0.25, 0.25]


# -- options, progress and interruption ---------------------------------------------


def test_a_store_instance_runs_once_and_a_factory_every_time() -> None:
    """A store holds its run's jobs, so only a factory may be run twice."""
    store = jobkit.MemoryStore()
    sim = Simulation(0, workload=Burst(2), store=store)
    assert sim.run().summary().succeeded == 2
    with pytest.raises(RuntimeError, match="pass a factory"):
        sim.run()
    again = Simulation(0, workload=Burst(2), store=jobkit.MemoryStore)
    assert again.run() == again.run()


def test_the_sqlite_store_gives_the_same_trace_as_the_memory_store(
    tmp_path: Path,
) -> None:
    """Both stores apply the same transitions in the same order, so traces agree."""
    settings: dict[str, Any] = dict(
        workload=Poisson(3, count=25),
        concurrency=2,
        faults=FaultPlan(Latency.exponential(0.5), TransientErrors(0.3)),
        retry=RetryPolicy(4, Backoff.exponential(1, 10, jitter="equal")),
    )
    paths = iter(tmp_path / f"{i}.db" for i in range(10))
    memory = Simulation(8, **settings).run()
    sqlite = Simulation(
        8, store=lambda: jobkit.SQLiteStore(next(paths)), **settings
    ).run()
    assert sqlite.events == memory.events


def test_progress_callback_hears_the_end_of_the_run() -> None:
    """A callable progress option receives snapshots, the last one complete."""
    seen: list[Progress] = []
    Simulation(
        0,
        workload=Burst(300),
        faults=FaultPlan(TransientErrors(0.1)),
        progress=seen.append,
    ).run()
    assert len(seen) >= 4  # every 64th finished job, and the end
    assert seen[-1].done == seen[-1].jobs == 300
    assert seen[-1].fraction == 1.0
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_an_interrupt_returns_the_trace_so_far() -> None:
    """KeyboardInterrupt mid-run stops it cleanly and keeps what happened."""
    calls = 0

    def stop_on_second(progress: Progress) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    trace = Simulation(
        0,
        workload=Steady(1, duration=1000),
        faults=FaultPlan(Latency.constant(0.5)),
        progress=stop_on_second,
    ).run()
    assert trace.interrupted and not trace.drained
    done = trace.summary().succeeded
    assert 128 <= done < 1000
    assert "interrupted" in repr(trace)
    assert trace.violations() == []
    # Nothing was handed back or recorded after the interrupt.
    assert not any(e.kind == "released" for e in trace)


def test_a_real_sigint_also_returns_the_trace_so_far() -> None:
    """Ctrl-C (SIGINT, the notebook's stop button) ends the run the same way."""
    sent = False

    def interrupt_once(progress: Progress) -> None:
        nonlocal sent
        if not sent and progress.done >= 128:
            sent = True
            signal.raise_signal(signal.SIGINT)

    trace = Simulation(
        0,
        workload=Steady(1, duration=1000),
        faults=FaultPlan(Latency.constant(0.5)),
        progress=interrupt_once,
    ).run()
    assert sent and trace.interrupted
    assert 128 <= trace.summary().succeeded < 1000
    assert trace.violations() == []


def test_bad_simulation_settings_are_refused() -> None:
    """Workers, concurrency, faults, workload and progress are checked up front."""
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        Simulation(workers=0)
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        Simulation(concurrency=0)
    with pytest.raises(TypeError, match="faults must be a FaultPlan"):
        Simulation(faults=[Crash(0.1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workload must be a Workload"):
        Simulation(workload=100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="progress must be"):
        Simulation(progress="loud")
    with pytest.raises(TypeError, match="seed must be an int"):
        Simulation(seed="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease must be finite and > 0"):
        Simulation(lease=0)
    assert Simulation(faults=Crash(0.1)).faults == FaultPlan(Crash(0.1))


# -- the trace -------------------------------------------------------------------------


def test_trace_records_and_displays() -> None:
    """Rows, repr and HTML repr show the run's figures."""
    trace = Simulation(
        2,
        workload=Burst(10),
        faults=FaultPlan(TransientErrors(0.3)),
        label="demo",
        retry=POLICY,
    ).run()
    records = trace.records()
    assert len(records) == len(trace) and records[0]["kind"] == "enqueued"
    assert set(records[0]) == {
        "time",
        "kind",
        "job",
        "attempt",
        "worker",
        "error",
        "delay",
        "due",
        "cause",
    }
    s = trace.summary()
    assert repr(trace).startswith(f"<Trace 'demo' seed=2: 10 jobs: {s.succeeded}")
    page = trace._repr_html_()
    assert "<table>" in page and f"{s.attempts} ({s.attempts_per_job:.2f})" in page


def test_to_dataframe_hands_the_records_to_pandas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With pandas, the trace becomes a DataFrame with one column per field."""
    made: dict[str, Any] = {}

    def data_frame(records: list[dict[str, Any]], columns: list[str]) -> str:
        made.update(records=records, columns=columns)
        return "frame"

    monkeypatch.setitem(
        sys.modules, "pandas", types.SimpleNamespace(DataFrame=data_frame)
    )
    trace = Simulation(0, workload=Burst(2)).run()
    assert trace.to_dataframe() == "frame"
    assert made["records"] == trace.records()
    assert made["columns"][:4] == ["time", "kind", "job", "attempt"]


def test_to_dataframe_without_pandas_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without pandas the error names the package and the alternative."""
    monkeypatch.setitem(sys.modules, "pandas", None)
    trace = Simulation(0, workload=Burst(1)).run()
    with pytest.raises(ImportError, match="pip install pandas"):
        trace.to_dataframe()


def _hand_made(events: list[TraceEvent], **overrides: Any) -> Trace:
    job = jobkit.Job(
        id=1,
        task="t",
        queue="default",
        payload={},
        state=JobState.DEAD,
        attempts=2,
        max_attempts=3,
        priority=0,
        run_at=0.0,
        created_at=0.0,
        updated_at=0.0,
    )
    settings: dict[str, Any] = dict(
        seed=0,
        label="hand-made",
        events=events,
        calls=[],
        jobs={1: job},
        policy=RetryPolicy(3, Backoff.exponential(1, 60, jitter="equal")),
        dependencies=[],
        arrivals=1,
        errors={},
        end=10.0,
        until=None,
        drained=True,
        interrupted=False,
        wall=0.0,
    )
    settings.update(overrides)
    return Trace(**settings)


def test_violations_catch_a_broken_run() -> None:
    """The checker reports early deads, out-of-bounds delays and early starts."""
    events = [
        TraceEvent(0.0, "enqueued", 1, 0),
        TraceEvent(0.0, "started", 1, 1, "w1"),
        TraceEvent(1.0, "retried", 1, 1, "w1", "E", delay=5.0, due=6.0),
        TraceEvent(3.0, "started", 1, 2, "w1"),
        TraceEvent(4.0, "dead", 1, 2, "w1", "E"),
    ]
    problems = _hand_made(events).violations()
    assert any("outside its bounds [0.5, 1.0]" in p for p in problems)
    assert any("before it was due at 6.0" in p for p in problems)
    assert any("went dead after attempt 2 of 3" in p for p in problems)


def test_violations_catch_lost_jobs_and_extra_attempts() -> None:
    """A job missing from the store, or an attempt past the limit, is reported."""
    events = [
        TraceEvent(0.0, "enqueued", 1, 0),
        TraceEvent(0.0, "enqueued", 2, 0),
        TraceEvent(0.0, "started", 1, 1),
        TraceEvent(0.0, "started", 1, 3),
    ]
    problems = _hand_made(events, arrivals=3).violations()
    assert any("3 jobs arrived but 2 were enqueued" in p for p in problems)
    assert any("jobs [2] were enqueued but are not in the store" in p for p in problems)
    assert any("started attempt 3, expected 2" in p for p in problems)
    running = attrs.evolve(
        _hand_made([]).jobs[1], state=JobState.RUNNING, max_attempts=2
    )
    problems = _hand_made(events[:1] + events[2:], jobs={1: running}).violations()
    assert any("started attempt 3 of at most 2" in p for p in problems)
    assert any("job 1 is running after the run drained" in p for p in problems)


def test_load_bins_requests_by_window() -> None:
    """load() counts requests and refusals per bin, empty bins included."""
    api = Dependency(capacity=1000, window=2.0)
    trace = Simulation(
        0, workload=Steady(1, count=3, start=1) + Burst(2, at=7), faults=FaultPlan(api)
    ).run()
    assert trace.load() == [(0.0, 1, 0), (2.0, 2, 0), (4.0, 0, 0), (6.0, 2, 0)]
    assert trace.load(bin=4) == [(0.0, 3, 0), (4.0, 2, 0)]
    with pytest.raises(ValueError, match="no dependency named 'db'"):
        trace.load("db")
    assert math.isclose(trace.calls[0].time, 1.0)


class _Stderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("option", "tty", "shown"),
    [("auto", True, True), ("auto", False, False), (True, False, True)],
)
def test_auto_progress_draws_a_bar_only_where_a_person_watches(
    monkeypatch: pytest.MonkeyPatch, option: Any, tty: bool, shown: bool
) -> None:
    """'auto' draws on a terminal or in a notebook, never into a log file."""
    out = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", out)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    reporter = _progress.Reporter(option, 10)
    late = Progress(time=5.0, until=None, done=4, jobs=10, attempts=5, wall=60.0)
    reporter.report(late)
    reporter.close(late)
    assert ("simulating: " in out.getvalue()) is shown
    assert ("4/10" in out.getvalue()) is shown


def test_without_tqdm_no_bar_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar is tqdm's: without the progress extra a run draws nothing."""
    out = _Stderr(True)
    monkeypatch.setattr(sys, "stderr", out)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    reporter = _progress.Reporter(True, 10)
    late = Progress(time=5.0, until=None, done=4, jobs=10, attempts=5, wall=60.0)
    reporter.report(late)
    reporter.close(late)
    assert out.getvalue() == ""


# -- the simulation's clock ------------------------------------------------------


class _Passes(trio.abc.Instrument):
    """Counts the passes of trio's run loop."""

    def __init__(self) -> None:
        self.passes = 0

    def after_io_wait(self, timeout: float) -> None:
        self.passes += 1


def _sleepers(sleep: Any) -> Any:
    """A program of sleeps, timeouts and cancellations that logs what happened when.

    Deadlines and sleeps meet at the same instants on purpose: a sleep that
    ends as its timeout expires, a task cancelled by another at the instant
    its own sleep ends.
    """
    log: list[tuple[float, str]] = []

    async def steady(name: str, durations: list[float]) -> None:
        for d in durations:
            await sleep(d)
            log.append((trio.current_time(), name))

    async def timed_out(name: str, sleeps: list[float], limit: float) -> None:
        with trio.move_on_after(limit) as scope:
            for d in sleeps:
                await sleep(d)
                log.append((trio.current_time(), f"{name} slept {d}"))
        log.append((trio.current_time(), f"{name} timed out: {scope.cancelled_caught}"))

    async def victim(scope: trio.CancelScope) -> None:
        with scope:
            await sleep(4)
            log.append((trio.current_time(), "victim woke"))
            await sleep(1)
        log.append((trio.current_time(), f"victim cancelled: {scope.cancelled_caught}"))

    async def killer(scope: trio.CancelScope) -> None:
        await sleep(4)
        scope.cancel()
        log.append((trio.current_time(), "killer struck"))

    async def main() -> list[tuple[float, str]]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady, "a", [0.5, 0, 1e-300, 0.25, 3.25, 0.1] * 5)
            nursery.start_soon(steady, "b", [1.0, 0.7, 2.3, 0.3] * 4)
            nursery.start_soon(steady, "t", [1.0, 1.0, 1.0])  # trio's own sleeps
            nursery.start_soon(timed_out, "tie", [1, 1], 2)
            nursery.start_soon(timed_out, "early", [1, 1], 2.5)
            nursery.start_soon(timed_out, "late", [1, 1], 1.5)
            for _ in range(3):
                scope = trio.CancelScope()
                nursery.start_soon(victim, scope)
                nursery.start_soon(killer, scope)
        return log

    return main


def _run_sleepers(sleep: Any, clock: trio.abc.Clock) -> tuple[Any, int]:
    from jobkit.sim._simulation import _seeded_scheduler

    passes = _Passes()
    with _seeded_scheduler(5):
        log = trio.run(_sleepers(sleep), clock=clock, instruments=[passes])
    return log, passes.passes


def test_the_simulation_clock_runs_sleeps_as_mockclock_does_in_fewer_passes() -> None:
    """Same wake-ups, order and timeouts as trio.sleep on MockClock; fewer passes."""
    from jobkit.sim import _clock

    expected, mock_passes = _run_sleepers(
        trio.sleep, trio.testing.MockClock(autojump_threshold=0)
    )
    log, passes = _run_sleepers(_clock.sleep, _clock.JumpingClock())
    assert log == expected
    # A sleep that ends as its timeout expires is cut short, as trio's is.
    assert [entry for entry in log if entry[1].startswith("tie")] == [
        (1.0, "tie slept 1"),
        (2.0, "tie timed out: True"),
    ]
    # MockClock spends an idle pass on every jump; this clock none.
    assert passes < mock_passes * 0.75
    # Outside a simulation's clock, the same sleeps are trio's.
    again, again_passes = _run_sleepers(
        _clock.sleep, trio.testing.MockClock(autojump_threshold=0)
    )
    assert again == expected and again_passes == mock_passes


def test_the_simulation_clock_lets_idle_waiters_run_before_it_jumps() -> None:
    """wait_all_tasks_blocked returns before time moves, as on MockClock."""
    from jobkit.sim import _clock

    async def main() -> list[tuple[str, float]]:
        log: list[tuple[str, float]] = []

        async def sleeper() -> None:
            await _clock.sleep(5)
            log.append(("slept", trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            log.append(("all blocked", trio.current_time()))
        return log

    expected = [("all blocked", 0.0), ("slept", 5.0)]
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == (
        expected
    )
    assert trio.run(main, clock=_clock.JumpingClock()) == expected


def test_the_simulation_clock_forgets_the_timers_of_cancelled_sleepers() -> None:
    """Time does not stop at the deadline of a sleep that was cut short."""
    from jobkit.sim import _clock

    async def main() -> list[float]:
        stops: list[float] = []

        class Stops(trio.abc.Instrument):
            def after_io_wait(self, timeout: float) -> None:
                stops.append(trio.current_time())

        trio.lowlevel.add_instrument(Stops())
        with trio.move_on_after(1):
            await _clock.sleep(50)
        await trio.sleep(99)
        return stops

    stops = trio.run(main, clock=_clock.JumpingClock())
    assert 50.0 not in stops and stops[-1] == 100.0


def test_a_simulation_on_the_jumping_clock_matches_one_on_mockclock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clock and its timers change how fast a run goes, never what it does."""
    from jobkit.sim import _simulation

    def sims() -> list[Simulation]:
        return [
            Simulation(11, **RICH),  # type: ignore[arg-type]
            # Sleeps that end just as the attempt times out, and crashes at
            # the instants other sleeps end.
            Simulation(
                3,
                workload=Steady(2.0, duration=200),
                faults=FaultPlan(
                    Latency.constant(1),
                    Crash(0.05),
                    Latency.constant(1),
                    TransientErrors(0.3),
                ),
                retry=RetryPolicy(3, Backoff.exponential(1, 10)),
                timeout=2,
                lease=5,
                restart_delay=1,
                concurrency=3,
                workers=2,
            ),
            # Retries due before the next poll, and at once: the worker's
            # wait is brought forward, or ends at the instant it began.
            Simulation(
                5,
                workload=Steady(0.25, duration=100),
                faults=FaultPlan(Latency.exponential(0.5), TransientErrors(0.4)),
                retry=RetryPolicy(4, Backoff.constant(0)),
                poll_interval=30,
            ),
            Simulation(
                6,
                workload=Steady(0.25, duration=100),
                faults=FaultPlan(Latency.exponential(0.5), TransientErrors(0.4)),
                retry=RetryPolicy(4, Backoff.exponential(0.5, 8)),
                poll_interval=30,
            ),
        ]

    fast = [sim.run() for sim in sims()]
    monkeypatch.setattr(
        _simulation,
        "new_clock",
        lambda: trio.testing.MockClock(autojump_threshold=0),
    )
    slow = [sim.run() for sim in sims()]
    assert fast == slow
    assert [t.fingerprint() for t in fast] == [t.fingerprint() for t in slow]
    timed_out = [e for e in fast[1].events if e.error and "TooSlowError" in e.error]
    assert timed_out and fast[1].summary().crashes > 0
