"""jobkit.interval: Tokio's tick rules, exact instants on a virtual clock."""

from __future__ import annotations

import itertools
import math
import re
from datetime import timedelta

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import jobkit

BURST = jobkit.MissedTickBehavior.BURST
DELAY = jobkit.MissedTickBehavior.DELAY
SKIP = jobkit.MissedTickBehavior.SKIP

# Lateness values are binary fractions, so every instant below is exact.
UNDER_GRACE = 2.0**-8  # 0.00390625 < 5 ms
OVER_GRACE = 2.0**-7  # 0.0078125 > 5 ms


async def late_consumer(
    ticker: jobkit.Interval, late_by: float, ticks: int
) -> list[tuple[float, float]]:
    """Tick once, overrun the next deadline by `late_by`, then tick as fast as possible.

    Returns (instant returned, clock when returned) for the ticks after the first.
    """
    assert await ticker.tick() == trio.current_time()
    await trio.sleep_until(ticker.deadline + late_by)
    seen = []
    for _ in range(ticks):
        instant = await ticker.tick()
        seen.append((instant, trio.current_time()))
    return seen


# (late_by, behaviour, expected [(instant, delivered at), ...]) with period 1 s
# and start 0: the tick due at 1.0 is delivered at 1.0 + late_by.
SCENARIOS = [
    # Within the grace every behaviour keeps the grid.
    (UNDER_GRACE, BURST, [(1.0, 1 + UNDER_GRACE), (2.0, 2.0), (3.0, 3.0)]),
    (UNDER_GRACE, DELAY, [(1.0, 1 + UNDER_GRACE), (2.0, 2.0), (3.0, 3.0)]),
    (UNDER_GRACE, SKIP, [(1.0, 1 + UNDER_GRACE), (2.0, 2.0), (3.0, 3.0)]),
    # Just past the grace, less than a period late.
    (OVER_GRACE, BURST, [(1.0, 1 + OVER_GRACE), (2.0, 2.0), (3.0, 3.0)]),
    (
        OVER_GRACE,
        DELAY,
        [
            (1.0, 1 + OVER_GRACE),
            (2 + OVER_GRACE, 2 + OVER_GRACE),
            (3 + OVER_GRACE,) * 2,
        ],
    ),
    (OVER_GRACE, SKIP, [(1.0, 1 + OVER_GRACE), (2.0, 2.0), (3.0, 3.0)]),
    # Half a period late.
    (0.5, BURST, [(1.0, 1.5), (2.0, 2.0), (3.0, 3.0)]),
    (0.5, DELAY, [(1.0, 1.5), (2.5, 2.5), (3.5, 3.5)]),
    (0.5, SKIP, [(1.0, 1.5), (2.0, 2.0), (3.0, 3.0)]),
    # Exactly one period late: now is on the grid point 2.0. SKIP drops it
    # (it is not strictly after now), BURST delivers it at once.
    (1.0, BURST, [(1.0, 2.0), (2.0, 2.0), (3.0, 3.0)]),
    (1.0, DELAY, [(1.0, 2.0), (3.0, 3.0), (4.0, 4.0)]),
    (1.0, SKIP, [(1.0, 2.0), (3.0, 3.0), (4.0, 4.0)]),
    # Several periods late (back at 3.5).
    (2.5, BURST, [(1.0, 3.5), (2.0, 3.5), (3.0, 3.5), (4.0, 4.0), (5.0, 5.0)]),
    (2.5, DELAY, [(1.0, 3.5), (4.5, 4.5), (5.5, 5.5), (6.5, 6.5), (7.5, 7.5)]),
    (2.5, SKIP, [(1.0, 3.5), (4.0, 4.0), (5.0, 5.0), (6.0, 6.0), (7.0, 7.0)]),
]


@pytest.mark.parametrize(
    ("late_by", "behavior", "expected"),
    SCENARIOS,
    ids=[f"{b.name}-late-{late}" for late, b, _ in SCENARIOS],
)
async def test_late_consumer_gets_exact_instants(
    autojump_clock: trio.testing.MockClock,
    late_by: float,
    behavior: jobkit.MissedTickBehavior,
    expected: list[tuple[float, float]],
) -> None:
    """Each behaviour gives Tokio's instants, at Tokio's times, to a late consumer."""
    ticker = jobkit.interval(1.0, missed_tick_behavior=behavior)
    assert await late_consumer(ticker, late_by, len(expected)) == expected


async def test_first_tick_completes_at_once_and_returns_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without start the first deadline is now; the tick returns it without waiting."""
    await trio.sleep(7)
    ticker = jobkit.interval(2.0)
    assert await ticker.tick() == 7.0
    assert trio.current_time() == 7.0
    assert await ticker.tick() == 9.0
    assert trio.current_time() == 9.0


async def test_start_in_the_future_waits_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With start= the first tick waits for that instant and the grid is built on it."""
    ticker = jobkit.interval(timedelta(milliseconds=500), start=3.0)
    assert [await ticker.tick() for _ in range(3)] == [3.0, 3.5, 4.0]
    assert trio.current_time() == 4.0


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [(BURST, [1.0, 2.0, 3.0]), (DELAY, [1.0, 3.0, 4.0]), (SKIP, [1.0, 3.0, 4.0])],
)
async def test_start_in_the_past_counts_as_missed(
    autojump_clock: trio.testing.MockClock,
    behavior: jobkit.MissedTickBehavior,
    expected: list[float],
) -> None:
    """A start more than the grace in the past is a missed tick."""
    await trio.sleep(2)
    ticker = jobkit.interval(1.0, start=1.0, missed_tick_behavior=behavior)
    assert [await ticker.tick() for _ in range(3)] == expected


async def test_grace_boundary_is_inclusive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Delivered at exactly D + 5 ms is on time; one float step later is missed."""
    on_time = jobkit.interval(1.0, missed_tick_behavior=DELAY)
    missed = jobkit.interval(1.0, missed_tick_behavior=DELAY)
    await on_time.tick()
    await missed.tick()
    autojump_clock.jump(1.0 + 0.005)
    assert await on_time.tick() == 1.0
    assert on_time.deadline == 2.0
    autojump_clock.jump(math.nextafter(1.005, math.inf) - trio.current_time())
    assert await missed.tick() == 1.0
    assert missed.deadline == trio.current_time() + 1.0 > 2.0


async def test_behaviour_can_be_changed_between_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Setting missed_tick_behavior applies to the next missed tick."""
    ticker = jobkit.interval(1.0)
    assert ticker.missed_tick_behavior is BURST
    await ticker.tick()
    ticker.missed_tick_behavior = SKIP
    await trio.sleep(3.5)
    assert [await ticker.tick() for _ in range(2)] == [1.0, 4.0]


async def test_tick_is_cancel_safe_while_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tick cancelled while waiting consumes nothing: the next call returns it."""
    ticker = jobkit.interval(1.0)
    assert await ticker.tick() == 0.0
    with trio.move_on_after(0.5) as scope:
        await ticker.tick()
    assert scope.cancelled_caught
    assert trio.current_time() == 0.5
    assert await ticker.tick() == 1.0
    assert trio.current_time() == 1.0
    assert await ticker.tick() == 2.0


async def test_tick_is_cancel_safe_when_already_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tick that is due but cancelled at its checkpoint is not consumed either."""
    ticker = jobkit.interval(1.0, missed_tick_behavior=SKIP)
    await ticker.tick()
    await trio.sleep(1.5)
    with trio.CancelScope() as scope:
        scope.cancel()
        await ticker.tick()
    assert scope.cancelled_caught
    assert await ticker.tick() == 1.0
    assert await ticker.tick() == 2.0


async def test_tick_is_a_checkpoint_even_when_due() -> None:
    """tick() lets other tasks run even when its deadline has passed."""
    ticker = jobkit.interval(1.0)
    with trio.CancelScope() as scope:
        scope.cancel()
        await ticker.tick()
        pytest.fail("tick() did not checkpoint")


async def test_reset_moves_the_grid_one_period_from_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """reset(): next tick at now + period, then on that new grid."""
    ticker = jobkit.interval(10.0)
    await ticker.tick()
    await trio.sleep(3)
    ticker.reset()
    assert ticker.deadline == 13.0
    assert [await ticker.tick() for _ in range(2)] == [13.0, 23.0]


async def test_reset_immediately_ticks_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """reset_immediately(): next tick at now, then a period after it."""
    ticker = jobkit.interval(10.0)
    await ticker.tick()
    await trio.sleep(3)
    ticker.reset_immediately()
    assert [await ticker.tick() for _ in range(2)] == [3.0, 13.0]
    assert trio.current_time() == 13.0


@pytest.mark.parametrize("delay", [0.25, timedelta(milliseconds=250)])
async def test_reset_after(
    autojump_clock: trio.testing.MockClock, delay: float | timedelta
) -> None:
    """reset_after(d): next tick at now + d (seconds or timedelta)."""
    ticker = jobkit.interval(10.0)
    await ticker.tick()
    await trio.sleep(1)
    ticker.reset_after(delay)
    assert [await ticker.tick() for _ in range(2)] == [1.25, 11.25]


async def test_reset_at(autojump_clock: trio.testing.MockClock) -> None:
    """reset_at(t): next tick at t, then on the grid t + k * period."""
    ticker = jobkit.interval(10.0)
    ticker.reset_at(7.0)
    assert [await ticker.tick() for _ in range(3)] == [7.0, 17.0, 27.0]


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [(BURST, [2.0, 12.0, 22.0]), (DELAY, [2.0, 15.0, 25.0]), (SKIP, [2.0, 12.0, 22.0])],
)
async def test_reset_at_in_the_past_is_a_missed_tick(
    autojump_clock: trio.testing.MockClock,
    behavior: jobkit.MissedTickBehavior,
    expected: list[float],
) -> None:
    """A reset to an instant already past fires at once and counts as missed."""
    ticker = jobkit.interval(10.0, missed_tick_behavior=behavior)
    await ticker.tick()
    await trio.sleep(5)
    ticker.reset_at(2.0)
    assert [await ticker.tick() for _ in range(3)] == expected


@pytest.mark.parametrize(
    ("reset", "expected"),
    [("earlier", (3.0, 3.0)), ("later", (23.0, 23.0))],
)
async def test_reset_applies_to_a_tick_already_waiting(
    autojump_clock: trio.testing.MockClock, reset: str, expected: tuple[float, float]
) -> None:
    """A reset from another task re-targets a tick() that is already asleep."""
    ticker = jobkit.interval(10.0)
    await ticker.tick()
    got: list[tuple[float, float]] = []

    async def waiter() -> None:
        got.append((await ticker.tick(), trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(3)
        if reset == "earlier":
            ticker.reset_immediately()
        else:
            ticker.reset_after(20)
    assert got == [expected]


async def test_two_waiters_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    """Only one task may wait in tick() at a time."""
    ticker = jobkit.interval(10.0, start=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.tick)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="another task"):
            await ticker.tick()
    assert ticker.deadline == 15.0


async def test_async_for_yields_scheduled_instants(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`async for` yields the same instants as tick(), late ticks included."""
    ticker = jobkit.interval(0.25, missed_tick_behavior=SKIP)
    seen = []
    async for instant in ticker:
        seen.append((instant, trio.current_time()))
        if len(seen) == 2:
            await trio.sleep(0.625)  # overrun: the ticks at 0.5 and 0.75 are late
        if len(seen) == 5:
            break
    assert seen == [(0.0, 0.0), (0.25, 0.25), (0.5, 0.875), (1.0, 1.0), (1.25, 1.25)]


async def test_infinite_period_ticks_once_then_waits_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """period=math.inf: one tick at start, then none; a reset schedules one more."""
    ticker = jobkit.interval(math.inf, missed_tick_behavior=SKIP)
    assert await ticker.tick() == 0.0
    assert ticker.deadline == math.inf
    with trio.move_on_after(1e9):
        await ticker.tick()
    assert trio.current_time() == 1e9
    ticker.reset_immediately()
    assert await ticker.tick() == 1e9
    assert ticker.deadline == math.inf


@pytest.mark.parametrize("behavior", [BURST, DELAY, SKIP], ids=lambda b: str(b.name))
async def test_infinite_period_late_tick(
    autojump_clock: trio.testing.MockClock, behavior: jobkit.MissedTickBehavior
) -> None:
    """A late first tick of an infinite period still leaves the next one at infinity."""
    ticker = jobkit.interval(math.inf, start=0.0, missed_tick_behavior=behavior)
    await trio.sleep(5)
    assert await ticker.tick() == 0.0
    assert ticker.deadline == math.inf


def test_grid_instants_do_not_accumulate_rounding() -> None:
    """BURST instants are start + k * period exactly, even for 0.1 over 10,000 ticks."""
    count = 10_000

    async def main() -> list[float]:
        ticker = jobkit.interval(0.1, start=0.0)
        return [await ticker.tick() for _ in range(count)]

    instants = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert instants == [k * 0.1 for k in range(count)]
    accumulated = 0.0
    for _ in range(count - 1):
        accumulated += 0.1
    assert accumulated != instants[-1]  # what adding the period each tick would give


@pytest.mark.parametrize("period", [0, -1, -0.5, math.nan, timedelta(0)])
def test_non_positive_period_is_refused(period: float | timedelta) -> None:
    """period <= 0 (or NaN) raises ValueError naming the value."""
    with pytest.raises(
        ValueError, match=re.escape(f"period must be > 0 seconds, got {period!r}")
    ):
        jobkit.interval(period, start=0.0)


@pytest.mark.parametrize("period", ["1", None, True])
def test_period_of_wrong_type_is_refused(period: object) -> None:
    """A period that is not seconds or a timedelta raises TypeError naming it."""
    with pytest.raises(TypeError, match="period must be a number of seconds"):
        jobkit.interval(period, start=0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("start", [math.nan, -math.inf])
def test_bad_start_is_refused(start: float) -> None:
    """start must be a real instant (math.inf allowed)."""
    with pytest.raises(ValueError, match="start must be"):
        jobkit.interval(1.0, start=start)


def test_bad_reset_arguments_are_refused() -> None:
    """reset_after needs a non-negative delay and reset_at a real instant."""
    ticker = jobkit.interval(1.0, start=0.0)
    with pytest.raises(ValueError, match="delay must be >= 0 seconds, got -1"):
        ticker.reset_after(-1)
    with pytest.raises(ValueError, match="deadline must be"):
        ticker.reset_at(math.nan)
    assert ticker.deadline == 0.0


def test_behavior_must_be_the_enum() -> None:
    """missed_tick_behavior refuses anything but a MissedTickBehavior."""
    with pytest.raises(TypeError, match="'skip'"):
        jobkit.interval(1.0, start=0.0, missed_tick_behavior="skip")  # type: ignore[arg-type]
    ticker = jobkit.interval(1.0, start=0.0)
    with pytest.raises(TypeError, match="MissedTickBehavior"):
        ticker.missed_tick_behavior = "skip"  # type: ignore[assignment]
    assert ticker.missed_tick_behavior is BURST


def test_without_start_outside_trio_is_a_clear_error() -> None:
    """interval() without start= needs trio's clock, and says so."""
    with pytest.raises(RuntimeError, match=r"inside trio\.run"):
        jobkit.interval(1.0)


def test_readable_attributes_and_repr() -> None:
    """period and the behaviour are readable, timedelta periods become seconds."""
    ticker = jobkit.interval(
        timedelta(minutes=5), start=10.0, missed_tick_behavior=SKIP
    )
    assert ticker.period == 300.0
    assert ticker.missed_tick_behavior is SKIP
    assert repr(ticker) == "<jobkit.Interval period=300.0 next=10.0 SKIP>"


def test_behaviours_are_documented() -> None:
    """Each MissedTickBehavior member carries its own explanation."""
    docs = {member: member.__doc__ or "" for member in jobkit.MissedTickBehavior}
    assert "back to back" in docs[BURST]
    assert "now + period" in docs[DELAY]
    assert "grid" in docs[SKIP]
    assert len(set(docs.values())) == 3


# --- properties over random periods and random lateness ----------------------

# A consumer's step after a tick: ("sleep", f) works for f periods;
# ("grid", j) works until the grid point j periods after the instant just
# returned, so that "now" lands on grid points, where SKIP must drop the point.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("sleep"), st.floats(0.0, 4.0)),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, UNDER_GRACE, OVER_GRACE])),
        st.tuples(st.just("grid"), st.integers(0, 4)),
    ),
    max_size=25,
)


def drive(
    period: float,
    start: float,
    behavior: jobkit.MissedTickBehavior,
    plan: list[tuple[str, float]],
) -> list[tuple[float, float]]:
    """Tick once per step of the plan; return (instant, clock when returned)."""

    async def main() -> list[tuple[float, float]]:
        ticker = jobkit.interval(period, start=start, missed_tick_behavior=behavior)
        seen = []
        for kind, amount in [*plan, ("sleep", 0.0)]:
            instant = await ticker.tick()
            seen.append((instant, trio.current_time()))
            if kind == "sleep":
                await trio.sleep(amount * period)
            elif behavior is DELAY:  # its grid is re-based on each miss
                await trio.sleep_until(instant + amount * period)
            else:
                k = round((instant - start) / period)
                await trio.sleep_until(start + (k + amount) * period)
        return seen

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


periods = st.floats(1e-3, 1e3)
starts = st.floats(0.0, 100.0)


def assert_never_early(seen: list[tuple[float, float]]) -> None:
    for instant, returned_at in seen:
        assert instant <= returned_at


def missed(instant: float, returned_at: float) -> bool:
    return returned_at > instant + 0.005


@given(periods, starts, steps)
def test_burst_instants_are_the_whole_grid(
    period: float, start: float, plan: list[tuple[str, float]]
) -> None:
    """BURST returns exactly start + k * period for k = 0, 1, 2, ..., none missing."""
    seen = drive(period, start, BURST, plan)
    assert [instant for instant, _ in seen] == [
        start + k * period for k in range(len(seen))
    ]
    assert_never_early(seen)


@given(periods, starts, steps)
def test_skip_instants_stay_on_the_grid(
    period: float, start: float, plan: list[tuple[str, float]]
) -> None:
    """SKIP stays on the grid, rising; after a miss it takes the next point past now."""
    seen = drive(period, start, SKIP, plan)
    ks = [round((instant - start) / period) for instant, _ in seen]
    assert [start + k * period for k in ks] == [instant for instant, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(ks))
    for (instant, returned_at), k_next in zip(seen, ks[1:], strict=False):
        if missed(instant, returned_at):
            assert start + k_next * period > returned_at
            assert start + (k_next - 1) * period <= returned_at
    assert_never_early(seen)


# Binary fractions (n / 64) keep every sum exact, so gaps compare exactly.
dyadic_periods = st.integers(1, 6400).map(lambda n: n / 64)
dyadic_steps = st.lists(
    st.one_of(
        st.tuples(st.just("sleep"), st.integers(0, 256).map(lambda n: n / 64)),
        st.tuples(st.just("grid"), st.integers(0, 4)),
    ),
    max_size=25,
)


@given(dyadic_periods, dyadic_steps)
def test_delay_never_ticks_closer_than_a_period(
    period: float, plan: list[tuple[str, float]]
) -> None:
    """DELAY: gaps are >= period; after a miss the next tick is exactly now + period."""
    seen = drive(period, 0.0, DELAY, plan)
    for (instant, returned_at), (next_instant, _) in itertools.pairwise(seen):
        assert next_instant - instant >= period
        if missed(instant, returned_at):
            assert next_instant == returned_at + period
        else:
            assert next_instant == instant + period
    assert_never_early(seen)


@given(
    periods,
    starts,
    st.sampled_from(list(jobkit.MissedTickBehavior)),
    steps,
)
def test_no_tick_is_ever_early(
    period: float,
    start: float,
    behavior: jobkit.MissedTickBehavior,
    plan: list[tuple[str, float]],
) -> None:
    """Under every behaviour no tick returns before its instant, and instants rise."""
    seen = drive(period, start, behavior, plan)
    assert_never_early(seen)
    instants = [instant for instant, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(instants))
