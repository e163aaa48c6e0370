from __future__ import annotations

import decimal
import doctest
import math
import pickle
import random
import re
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import jobkit
import jobkit.core.retry
from jobkit import Backoff, Permanent, RetryLater, RetryPolicy

JITTERS: list[jobkit.Jitter | None] = [None, "full", "equal", "decorrelated"]
HUGE = [10**6, 10**18, 10**400]

seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=200) | st.sampled_from(HUGE)
previous = st.none() | seconds
seeds = st.integers(min_value=0, max_value=2**64)


@st.composite
def backoffs(
    draw: st.DrawFn, jitter: st.SearchStrategy[jobkit.Jitter | None] | None = None
) -> Backoff:
    kind = draw(st.sampled_from(["constant", "linear", "exponential"]))
    j = draw(st.sampled_from(JITTERS) if jitter is None else jitter)
    a, b = sorted((draw(seconds), draw(seconds)))
    if kind == "constant":
        return Backoff.constant(a, jitter=j)
    if kind == "linear":
        return Backoff.linear(a, b, jitter=j)
    factor = draw(st.floats(min_value=1, max_value=10))
    return Backoff.exponential(a, b, factor, jitter=j)


def reference_nominal(b: Backoff, attempt: int) -> float:
    """The un-jittered formula evaluated without floats, for any attempt."""
    if b.kind == "constant":
        return b.base
    if b.kind == "linear":
        return float(min(Fraction(b.cap), Fraction(b.base) * attempt))
    if b.base == 0 or b.factor == 1:
        return b.base
    # factor ** (attempt - 1) is out of reach for huge attempts even exactly;
    # compare logarithms at high precision instead.
    with decimal.localcontext(prec=60):
        log_v = Decimal(b.base).ln() + (attempt - 1) * Decimal(b.factor).ln()
        if log_v >= Decimal(b.cap).ln():
            return b.cap
        return float(log_v.exp())


def reference_bounds(
    b: Backoff, attempt: int, prev: float | None
) -> tuple[float, float]:
    """The interval each jitter's formula allows, written out independently."""
    if b.jitter == "decorrelated":
        p = b.base if prev is None else prev
        return min(b.cap, min(b.base, 3 * p)), min(b.cap, max(b.base, 3 * p))
    v = reference_nominal(b, attempt)
    return {None: (v, v), "full": (0.0, v), "equal": (v / 2, v)}[b.jitter]


# --- Backoff: properties -----------------------------------------------------


@given(backoffs(), attempts, previous, seeds)
def test_delay_lies_within_formula_bounds(
    b: Backoff, attempt: int, prev: float | None, seed: int
) -> None:
    """Every delay, for every kind, jitter, attempt and previous, obeys its formula."""
    lo, hi = reference_bounds(b, attempt, prev)
    got_lo, got_hi = b.bounds(attempt, prev)
    assert got_lo == pytest.approx(lo, rel=1e-12, abs=0)
    assert got_hi == pytest.approx(hi, rel=1e-12, abs=0)
    d = b.delay(attempt, previous=prev, rng=random.Random(seed))
    assert got_lo <= d <= got_hi
    assert 0 <= d <= b.cap


@given(backoffs(jitter=st.none()), st.integers(min_value=1, max_value=300))
def test_unjittered_delay_never_decreases(b: Backoff, attempt: int) -> None:
    """Without jitter, the delay never decreases as attempts grow, up to the cap."""
    rng = random.Random(0)
    here = b.delay(attempt, rng=rng)
    assert here <= b.delay(attempt + 1, rng=rng) <= b.delay(10**18, rng=rng)
    assert b.delay(10**18, rng=rng) <= b.cap


@pytest.mark.parametrize("jitter", [None, "full", "equal"])
@pytest.mark.parametrize(
    ("backoff", "attempt"),
    [
        *((Backoff.linear(1, 300), n) for n in HUGE),
        *((Backoff.exponential(1, 300), n) for n in HUGE),
        *((Backoff.exponential(0.01, 3600, factor=1.001), n) for n in HUGE),
        # Extremes: growth far beyond the float range before reaching the cap.
        (Backoff.exponential(1e-300, 1e300, factor=1.0001), 10**18),
        (Backoff.exponential(1e-300, 1e300, factor=1.0001), 10**400),
        (Backoff.linear(5e-324, 1e-10), 10**400),
    ],
    ids=str,
)
def test_huge_attempt_reaches_cap_without_overflow(
    backoff: Backoff, jitter: jobkit.Jitter | None, attempt: int
) -> None:
    """A huge attempt number gives exactly the cap as the un-jittered value."""
    b = Backoff(backoff.kind, backoff.base, backoff.cap, backoff.factor, jitter)
    assert b.nominal(attempt) == b.cap
    assert b.bounds(attempt)[1] == b.cap
    assert b.delay(attempt, rng=random.Random(1)) <= b.cap


# Each check averages N draws of a uniform on a range of width w, whose mean has
# standard deviation w / sqrt(12 N). A 5-sigma band fails a correct
# implementation with probability ~6e-7 per example, while a wrong mean (say
# v/3 instead of v/2, off by 0.17 v) lies ~35 sigma away at N = 4000.
N = 4000
SIGMAS = 5


@settings(max_examples=25)
@given(
    st.floats(min_value=0.01, max_value=1e6),
    st.integers(min_value=1, max_value=40),
    seeds,
)
def test_full_jitter_mean_is_half_of_value(
    base: float, attempt: int, seed: int
) -> None:
    """Full jitter's delays average to half of the un-jittered value."""
    b = Backoff.exponential(base, base * 1000, jitter="full")
    v = b.nominal(attempt)
    rng = random.Random(seed)
    mean = sum(b.delay(attempt, rng=rng) for _ in range(N)) / N
    assert abs(mean - v / 2) <= SIGMAS * v / math.sqrt(12 * N)


@settings(max_examples=25)
@given(
    st.floats(min_value=0.01, max_value=1e6),
    st.integers(min_value=1, max_value=40),
    seeds,
)
def test_equal_jitter_mean_is_three_quarters_of_value(
    base: float, attempt: int, seed: int
) -> None:
    """Equal jitter's delays average to three quarters of the un-jittered value."""
    b = Backoff.exponential(base, base * 1000, jitter="equal")
    v = b.nominal(attempt)
    rng = random.Random(seed)
    mean = sum(b.delay(attempt, rng=rng) for _ in range(N)) / N
    assert abs(mean - 3 * v / 4) <= SIGMAS * (v / 2) / math.sqrt(12 * N)


@given(backoffs(), st.integers(min_value=0, max_value=50), seeds)
def test_same_seed_gives_same_delays(b: Backoff, count: int, seed: int) -> None:
    """Two runs seeded alike produce identical delay sequences."""
    first = b.delays(count, rng=random.Random(seed))
    assert first == b.delays(count, rng=random.Random(seed))
    assert len(first) == count


def test_different_seeds_give_different_delays() -> None:
    """Jitter really draws from the rng: different seeds disagree."""
    b = Backoff.exponential(1, 60, jitter="full")
    assert b.delays(5, rng=random.Random(1)) != b.delays(5, rng=random.Random(2))


@given(backoffs(), attempts, previous)
def test_no_jitter_ignores_rng(b: Backoff, attempt: int, prev: float | None) -> None:
    """Without jitter the rng is left untouched."""
    b = Backoff(b.kind, b.base, b.cap, b.factor, None)
    rng = random.Random(3)
    state = rng.getstate()
    b.delay(attempt, previous=prev, rng=rng)
    assert rng.getstate() == state


@given(backoffs(jitter=st.just("decorrelated")), st.integers(1, 30), seeds)
def test_decorrelated_sequence_feeds_previous(
    b: Backoff, count: int, seed: int
) -> None:
    """Each decorrelated delay lies within the bounds set by the delay before it."""
    ds = b.delays(count, rng=random.Random(seed))
    prev: float | None = None
    for n, d in enumerate(ds, start=1):
        lo, hi = b.bounds(n, prev)
        assert lo <= d <= hi
        prev = d


# --- Backoff: exact examples -------------------------------------------------


def test_exponential_exact_values() -> None:
    """Exponential backoff doubles from base and stops at the cap."""
    b = Backoff.exponential(0.5, 10)
    assert b.delays(7, rng=random.Random(0)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_exponential_with_factor_three() -> None:
    """The factor sets the growth ratio between successive delays."""
    b = Backoff.exponential(2, 1000, factor=3)
    assert [b.nominal(n) for n in (1, 2, 3, 4, 7, 8)] == [2, 6, 18, 54, 1000, 1000]


def test_linear_exact_values() -> None:
    """Linear backoff adds one step per attempt up to the cap."""
    b = Backoff.linear(3, 10)
    assert [b.nominal(n) for n in (1, 2, 3, 4, 100)] == [3, 6, 9, 10, 10]


def test_constant_exact_values() -> None:
    """Constant backoff waits the same for every attempt."""
    assert Backoff.constant(7).delays(3, rng=random.Random(0)) == [7.0, 7.0, 7.0]


def test_full_jitter_draws_uniform_zero_to_value() -> None:
    """Full jitter is exactly uniform(0, v) drawn from the caller's rng."""
    b = Backoff.exponential(1, 60, jitter="full")
    assert b.delay(4, rng=random.Random(9)) == random.Random(9).uniform(0, 8)


def test_equal_jitter_draws_half_plus_uniform_half() -> None:
    """Equal jitter is exactly v/2 + uniform(0, v/2)."""
    b = Backoff.exponential(1, 60, jitter="equal")
    assert b.delay(4, rng=random.Random(9)) == 4 + random.Random(9).uniform(0, 4)


def test_decorrelated_jitter_formula() -> None:
    """Decorrelated jitter is min(cap, uniform(base, 3 * previous or base))."""
    b = Backoff.exponential(2, 50, jitter="decorrelated")
    assert b.delay(1, rng=random.Random(5)) == random.Random(5).uniform(2, 6)
    assert b.delay(7, previous=10, rng=random.Random(5)) == min(
        50, random.Random(5).uniform(2, 30)
    )
    assert b.bounds(3, 100) == (2, 50)


def test_bounds_per_jitter() -> None:
    """bounds() gives the closed interval each jitter allows."""
    assert Backoff.exponential(1, 60).bounds(3) == (4, 4)
    assert Backoff.exponential(1, 60, jitter="full").bounds(3) == (0, 4)
    assert Backoff.exponential(1, 60, jitter="equal").bounds(3) == (2, 4)
    assert Backoff.exponential(1, 60, jitter="decorrelated").bounds(3) == (1, 3)


def test_zero_durations_give_zero_delay() -> None:
    """A zero base never divides by zero and waits nothing."""
    assert Backoff.exponential(0, 0).delay(10**18, rng=random.Random(0)) == 0
    assert Backoff.linear(0, 5).nominal(10**18) == 0
    assert Backoff.exponential(0, 5, jitter="decorrelated").bounds(2, 1) == (0, 3)


def test_timedelta_durations() -> None:
    """Every duration accepts a timedelta as well as float seconds."""
    b = Backoff.exponential(timedelta(milliseconds=500), timedelta(minutes=1))
    assert (b.base, b.cap) == (0.5, 60.0)
    assert Backoff.linear(timedelta(seconds=2), 5).nominal(2) == 4
    assert Backoff.constant(timedelta(hours=1)).nominal(1) == 3600
    d = Backoff.exponential(1, 60, jitter="decorrelated").delay(
        2, previous=timedelta(seconds=4), rng=random.Random(0)
    )
    assert 1 <= d <= 12
    assert RetryLater(timedelta(seconds=3)).delay == 3


@pytest.mark.parametrize(
    "backoff",
    [
        Backoff.constant(2),
        Backoff.constant(0.25, jitter="full"),
        Backoff.linear(1, 9, jitter="equal"),
        Backoff.exponential(0.1, 30, factor=1.5, jitter="decorrelated"),
    ],
)
def test_repr_reads_as_constructor_call(backoff: Backoff) -> None:
    """A Backoff's repr is the constructor call that rebuilds it."""
    assert eval(repr(backoff), {"Backoff": Backoff}) == backoff
    assert repr(backoff).startswith("Backoff.")


# --- Backoff: validation -----------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Backoff.exponential(-1, 10),
            "base must be finite and >= 0 seconds, got -1",
        ),
        (
            lambda: Backoff.exponential(1, -10),
            "cap must be finite and >= 0 seconds, got -10",
        ),
        (lambda: Backoff.exponential(10, 5), "cap must be >= base (10.0), got 5.0"),
        (
            lambda: Backoff.exponential(1, 10, 0.5),
            "factor must be a finite number >= 1, got 0.5",
        ),
        (
            lambda: Backoff.exponential(1, math.inf),
            "cap must be finite and >= 0 seconds, got inf",
        ),
        (
            lambda: Backoff.exponential(math.nan, 1),
            "base must be finite and >= 0 seconds, got nan",
        ),
        (
            lambda: Backoff.linear(-2, 10),
            "step must be finite and >= 0 seconds, got -2",
        ),
        (lambda: Backoff.linear(5, 1), "cap must be >= step (5.0), got 1.0"),
        (lambda: Backoff.constant(-3), "delay must be finite and >= 0 seconds, got -3"),
        (
            lambda: Backoff.constant(timedelta(seconds=-1)),
            "delay must be finite and >= 0 seconds, got "
            "datetime.timedelta(days=-1, seconds=86399)",
        ),
        (
            lambda: Backoff.exponential(1, 10, jitter="half"),  # type: ignore[arg-type]
            "jitter must be None or one of ('full', 'equal', 'decorrelated'), "
            "got 'half'",
        ),
        (
            lambda: Backoff.constant(1).delay(0, rng=random.Random()),
            "attempt must be >= 1, got 0",
        ),
        (lambda: Backoff.linear(1, 2).bounds(-5), "attempt must be >= 1, got -5"),
        (
            lambda: Backoff.exponential(1, 9, jitter="decorrelated").delay(
                1, previous=-1, rng=random.Random()
            ),
            "previous must be finite and >= 0 seconds, got -1",
        ),
        (lambda: RetryLater(-1), "delay must be finite and >= 0 seconds, got -1"),
        (
            lambda: RetryPolicy(0, Backoff.constant(1)),
            "max_attempts must be an int >= 1, got 0",
        ),
        (
            lambda: RetryPolicy(1, Backoff.constant(1)).decide(
                ValueError(), 0, rng=random.Random()
            ),
            "attempt must be >= 1, got 0",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_field(make: object, message: str) -> None:
    """Bad values raise ValueError naming the field and the value given."""
    assert callable(make)
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda: Backoff.constant("5"),  # type: ignore[arg-type]
            "delay must be a number of seconds or a timedelta, got '5'",
        ),
        (
            lambda: Backoff.linear(1, True),
            "cap must be a number of seconds or a timedelta, got True",
        ),
        (
            lambda: Backoff.constant(1).delay(
                1.5,  # type: ignore[arg-type]
                rng=random.Random(),
            ),
            "attempt must be an int, got 1.5",
        ),
        (
            lambda: RetryPolicy(2, 5),  # type: ignore[arg-type]
            "backoff must be a Backoff, got 5",
        ),
        (
            lambda: RetryPolicy(
                2,
                Backoff.constant(1),
                retry_on=(ValueError, "x"),  # type: ignore[arg-type]
            ),
            "expected exception classes, got 'x'",
        ),
    ],
)
def test_wrong_types_raise_type_error(make: object, fragment: str) -> None:
    """Values of the wrong type raise TypeError saying what was expected."""
    assert callable(make)
    with pytest.raises(TypeError, match=re.escape(fragment)):
        make()


def test_backoff_is_frozen() -> None:
    """A Backoff cannot be changed after construction."""
    b = Backoff.constant(1)
    with pytest.raises(AttributeError):
        b.cap = 5  # type: ignore[misc]


# --- RetryPolicy -------------------------------------------------------------

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=20),
    backoff=backoffs(),
)


@given(policies, st.integers(min_value=1, max_value=30), seeds)
def test_ordinary_error_retried_until_attempts_run_out(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    """An ordinary error gets the backoff's delay until max_attempts, then None."""
    got = policy.decide(RuntimeError("boom"), attempt, rng=random.Random(seed))
    if attempt >= policy.max_attempts:
        assert got is None
    else:
        assert got == policy.backoff.delay(attempt, rng=random.Random(seed))


@given(policies, st.integers(min_value=1, max_value=30), seeds)
def test_permanent_never_retried(policy: RetryPolicy, attempt: int, seed: int) -> None:
    """A Permanent error gives up at once, whatever attempts remain."""
    assert policy.decide(Permanent("bad"), attempt, rng=random.Random(seed)) is None


@given(
    policies,
    st.integers(min_value=1, max_value=30),
    st.none() | seconds,
    seeds,
)
def test_retry_later_is_bounded_by_max_attempts(
    policy: RetryPolicy, attempt: int, delay: float | None, seed: int
) -> None:
    """RetryLater retries after its delay (or the backoff's) and uses up an attempt."""
    got = policy.decide(RetryLater(delay), attempt, rng=random.Random(seed))
    if attempt >= policy.max_attempts:
        assert got is None
    elif delay is None:
        assert got == policy.backoff.delay(attempt, rng=random.Random(seed))
    else:
        assert got == delay


def test_retry_later_overrides_filters() -> None:
    """An explicit RetryLater retries even when retry_on and give_up_on would not."""
    policy = RetryPolicy(
        3, Backoff.constant(4), retry_on=(OSError,), give_up_on=(RetryLater,)
    )
    assert policy.decide(RetryLater(1.5), 1, rng=random.Random(0)) == 1.5
    assert policy.decide(RetryLater(), 2, rng=random.Random(0)) == 4


def test_retry_on_filters_errors() -> None:
    """Only errors matching retry_on are retried; others give up at once."""
    policy = RetryPolicy(5, Backoff.constant(2), retry_on=(OSError, LookupError))
    rng = random.Random(0)
    assert policy.decide(ConnectionResetError(), 1, rng=rng) == 2
    assert policy.decide(KeyError("k"), 1, rng=rng) == 2
    assert policy.decide(ValueError(), 1, rng=rng) is None


def test_give_up_on_wins_over_retry_on() -> None:
    """An error in give_up_on gives up even though it also matches retry_on."""
    policy = RetryPolicy(5, Backoff.constant(2), give_up_on=(PermissionError,))
    rng = random.Random(0)
    assert policy.decide(PermissionError(), 1, rng=rng) is None
    assert policy.decide(FileNotFoundError(), 1, rng=rng) == 2


def test_single_exception_class_accepted() -> None:
    """retry_on and give_up_on accept one class as well as a tuple."""
    policy = RetryPolicy(
        5,
        Backoff.constant(1),
        retry_on=OSError,
        give_up_on=FileNotFoundError,
    )
    assert policy.retry_on == (OSError,)
    assert policy.give_up_on == (FileNotFoundError,)


def test_base_exceptions_are_not_retried_by_default() -> None:
    """KeyboardInterrupt and friends are not Exceptions, so the default gives up."""
    policy = RetryPolicy(5, Backoff.constant(1))
    assert policy.decide(KeyboardInterrupt(), 1, rng=random.Random(0)) is None


def test_timeout_counts_as_failed_attempt() -> None:
    """A job timeout (trio.TooSlowError) is retried like any failure, using attempts."""
    policy = RetryPolicy(3, Backoff.exponential(1, 60))
    rng = random.Random(0)
    assert policy.decide(trio.TooSlowError(), 1, rng=rng) == 1
    assert policy.decide(trio.TooSlowError(), 2, rng=rng) == 2
    assert policy.decide(trio.TooSlowError(), 3, rng=rng) is None
    strict = RetryPolicy(3, Backoff.constant(1), give_up_on=(trio.TooSlowError,))
    assert strict.decide(trio.TooSlowError(), 1, rng=rng) is None


def test_decorrelated_policy_uses_previous_delay() -> None:
    """decide() passes previous_delay on to decorrelated jitter."""
    policy = RetryPolicy(9, Backoff.exponential(1, 100, jitter="decorrelated"))
    got = policy.decide(OSError(), 4, previous_delay=20, rng=random.Random(2))
    assert got == min(100, random.Random(2).uniform(1, 60))


def test_max_attempts_one_never_retries() -> None:
    """max_attempts counts the first attempt, so 1 means no retries."""
    policy = RetryPolicy(1, Backoff.constant(1))
    assert policy.decide(RetryLater(0), 1, rng=random.Random(0)) is None


def test_default_policy() -> None:
    """The default policy makes 5 attempts with capped full-jitter exponential waits."""
    policy = RetryPolicy.default()
    assert policy == RetryPolicy(5, Backoff.exponential(1, 300, jitter="full"))
    assert policy.retry_on == (Exception,)
    assert policy.give_up_on == ()
    rng = random.Random(0)
    waits = [policy.decide(OSError(), n, rng=rng) for n in range(1, 6)]
    assert waits[-1] is None
    assert all(
        w is not None and 0 <= w <= 2 ** (n - 1) for n, w in enumerate(waits[:-1], 1)
    )


def test_exceptions_pickle_and_print() -> None:
    """RetryLater and Permanent survive pickling (thread/process hops) and read well."""
    later = pickle.loads(pickle.dumps(RetryLater(2)))
    assert later.delay == 2
    assert str(later) == "retry requested in 2s"
    assert str(RetryLater()) == "retry requested"
    assert str(pickle.loads(pickle.dumps(Permanent("no such user")))) == "no such user"


def test_public_names_belong_to_jobkit() -> None:
    """The retry names are exported from jobkit and say so in tracebacks."""
    for cls in (Backoff, RetryPolicy, RetryLater, Permanent):
        assert getattr(jobkit, cls.__name__) is cls
        assert cls.__module__ == "jobkit"


def test_docstring_examples_run() -> None:
    """Every example in the retry module's docstrings produces the output shown."""
    # The public classes claim to live in ``jobkit``, which hides them from
    # doctest's module filter: collect their examples explicitly.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for name in jobkit.core.retry.__all__:
        obj = getattr(jobkit.core.retry, name)
        for test in finder.find(obj, name, module=False, globs=vars(jobkit.core.retry)):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 20
    assert result.failed == 0
