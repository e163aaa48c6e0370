"""Invariants of simulated runs over generated fault plans, workloads and policies."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobkit import Backoff, RetryPolicy
from jobkit._job import EXPIRED_ERROR
from jobkit.sim import (
    Burst,
    Crash,
    Dependency,
    Fault,
    FaultPlan,
    Hang,
    KeyedRandom,
    Latency,
    PermanentErrors,
    Poisson,
    Simulation,
    Steady,
    StoreErrors,
    TransientErrors,
    Workload,
)

small = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
chance = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@st.composite
def latencies(draw: st.DrawFn) -> Latency:
    kind = draw(st.sampled_from(["constant", "uniform", "exponential", "lognormal"]))
    a = draw(small)
    if kind == "constant":
        return Latency.constant(a)
    if kind == "uniform":
        return Latency.uniform(a, a + draw(small))
    if kind == "exponential":
        return Latency.exponential(a + 0.01)
    return Latency.lognormal(a + 0.01, draw(st.floats(0.0, 1.5)))


@st.composite
def faults(draw: st.DrawFn) -> Fault | StoreErrors:
    kind = draw(
        st.sampled_from(
            [
                "latency",
                "transient",
                "permanent",
                "hang",
                "crash",
                "dependency",
                "store",
            ]
        )
    )
    per_job = draw(st.booleans())
    if kind == "latency":
        return draw(latencies())
    if kind == "transient":
        return TransientErrors(draw(st.floats(0.0, 0.8)), per_job=per_job)
    if kind == "permanent":
        return PermanentErrors(draw(chance), per_job=per_job)
    if kind == "hang":
        duration = draw(st.one_of(st.just(float("inf")), st.floats(0.1, 20.0)))
        return Hang(draw(chance), per_job=per_job, duration=duration)
    if kind == "crash":
        return Crash(draw(chance), per_job=per_job)
    if kind == "dependency":
        return Dependency(
            capacity=draw(st.integers(1, 10)),
            window=draw(st.floats(0.2, 3.0)),
            latency=draw(st.floats(0.01, 0.5)),
            base_failure=draw(st.floats(0.0, 0.3)),
        )
    operations = draw(
        st.sets(
            st.sampled_from(["enqueue", "claim", "settle", "renew", "reap"]),
            min_size=1,
        )
    )
    return StoreErrors(
        draw(st.floats(0.0, 0.3)),
        operations=operations,  # type: ignore[arg-type]
        after_commit=draw(st.floats(0.0, 1.0)),
    )


@st.composite
def plans(draw: st.DrawFn) -> FaultPlan:
    chosen = draw(st.lists(faults(), max_size=4))
    # Distinct names, so that two generated dependencies never clash.
    named = []
    for i, fault in enumerate(chosen):
        if isinstance(fault, Dependency):
            fault = Dependency(
                fault.capacity,
                window=fault.window,
                latency=fault.latency,
                base_failure=fault.base_failure,
                name=f"dep{i}",
            )
        named.append(fault)
    return FaultPlan(*named)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    def one() -> Workload:
        kind = draw(st.sampled_from(["burst", "steady", "poisson"]))
        count = draw(st.integers(0, 10))
        start = draw(st.floats(0.0, 5.0))
        if kind == "burst":
            return Burst(count, at=start)
        rate = draw(st.floats(0.2, 5.0))
        if kind == "steady":
            return Steady(rate, count=count, start=start)
        return Poisson(rate, count=count, start=start)

    workload = one()
    if draw(st.booleans()):
        workload = workload + one()
    return workload


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    kind = draw(st.sampled_from(["constant", "linear", "exponential"]))
    jitter = draw(st.sampled_from([None, "full", "equal", "decorrelated"]))
    base = draw(st.floats(0.0, 4.0))
    cap = base + draw(st.floats(0.0, 20.0))
    if kind == "constant":
        backoff = Backoff.constant(base, jitter=jitter)
    elif kind == "linear":
        backoff = Backoff.linear(base, cap, jitter=jitter)
    else:
        factor = draw(st.floats(1.0, 4.0))
        backoff = Backoff.exponential(base, cap, factor, jitter=jitter)
    return RetryPolicy(draw(st.integers(1, 5)), backoff)


@st.composite
def simulations(draw: st.DrawFn) -> Simulation:
    plan = draw(plans())
    retry = draw(policies())
    timeout = draw(st.none() | st.floats(0.5, 10.0))
    if plan.hangs_forever and timeout is None:
        timeout = 5.0
    settings_: dict[str, Any] = dict(
        workload=draw(workloads()),
        faults=plan,
        retry=retry,
        workers=draw(st.integers(1, 3)),
        concurrency=draw(st.integers(1, 4)),
        lease=draw(st.floats(1.0, 10.0)),
        restart_delay=draw(st.floats(0.0, 5.0)),
        timeout=timeout,
        progress=False,
    )
    return Simulation(draw(st.integers(0, 2**32)), **settings_)


# A plan that prevents draining would be a bug; the horizon only keeps a
# failing example from running forever.
HORIZON = 100_000.0


@settings(max_examples=40)
@given(simulations())
def test_every_generated_run_keeps_the_queues_promises(sim: Simulation) -> None:
    """No job lost, all end terminal, attempts and delays obey policy, replays agree."""
    trace = sim.run(until=HORIZON)
    assert trace.drained, trace
    assert trace.violations() == []
    summary = trace.summary()
    assert summary.succeeded + summary.dead + summary.cancelled == summary.jobs
    # Generated workloads are bounded by count, so the number never varies.
    expected = len(sim.workload.arrivals(KeyedRandom(0)))
    assert summary.jobs == trace.arrivals == expected
    assert all(n <= sim.retry.max_attempts for n in trace.attempts_per_job().values())
    assert sim.run(until=HORIZON) == trace


@given(workloads(), st.integers(0, 2**64))
def test_arrivals_are_sorted_and_counted(workload: Workload, seed: int) -> None:
    """Every workload yields its jobs in time order, the same way for one seed."""
    times = workload.arrivals(KeyedRandom(seed))
    assert times == sorted(times)
    assert times == workload.arrivals(KeyedRandom(seed))
    assert all(t >= 0 for t in times)


@given(st.integers(0, 2**64), st.lists(st.integers(0, 2**64), max_size=4))
def test_keyed_streams_stay_in_the_unit_interval(seed: int, keys: list[int]) -> None:
    """A keyed stream draws floats in [0, 1) and replays from its key."""
    a, b = KeyedRandom(seed, *keys), KeyedRandom(seed, *keys)
    draws = [a.random() for _ in range(20)]
    assert all(0.0 <= x < 1.0 for x in draws)
    assert draws == [b.random() for _ in range(20)]


@st.composite
def crashing_simulations(draw: st.DrawFn) -> Simulation:
    # Without store errors or hangs the worker keeps every lease alive, so
    # only a crash can make one expire.
    steps = draw(
        st.lists(
            st.one_of(
                latencies(),
                st.builds(Crash, st.floats(0.05, 0.5), per_job=st.booleans()),
                st.builds(TransientErrors, chance),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return Simulation(
        draw(st.integers(0, 2**32)),
        workload=Burst(draw(st.integers(1, 12))),
        faults=FaultPlan(*steps),
        retry=draw(policies()),
        workers=draw(st.integers(1, 2)),
        concurrency=draw(st.integers(1, 4)),
        lease=draw(st.floats(1.0, 10.0)),
        restart_delay=draw(st.floats(0.0, 5.0)),
        progress=False,
    )


@settings(max_examples=40)
@given(crashing_simulations())
def test_every_attempt_a_crash_ended_is_recorded_as_crashed(sim: Simulation) -> None:
    """Each expired lease follows a crash of the worker holding it, and says so."""
    trace = sim.run(until=HORIZON)
    crashed = {
        (e.job, e.attempt): (e.time, e.worker) for e in trace if e.kind == "crashed"
    }
    started = {(e.job, e.attempt): e.worker for e in trace if e.kind == "started"}
    for key, (_, worker) in crashed.items():
        assert started[key] == worker
    for e in trace:
        if e.kind == "expired" or (e.kind == "dead" and e.error == EXPIRED_ERROR):
            key = (e.job, e.attempt)
            assert key in crashed, e
            assert crashed[key][0] <= e.time
            assert e.cause == "crash"
