"""The delay a job records at each retry, and the jitter drawn from it."""

from __future__ import annotations

import attrs
import trio

from jobkit import Backoff, RetryPolicy
from jobkit.sim import (
    Attempt,
    Burst,
    Fault,
    FaultPlan,
    Simulation,
    StoreErrors,
    TransientErrors,
)


@attrs.frozen
class SlowFirstAttempt(Fault):
    """The first attempt of every job outlives a 3 s lease."""

    async def inject(self, attempt: Attempt) -> None:
        if attempt.job.attempts == 1:
            await trio.sleep(5)


def test_decorrelated_jitter_draws_from_the_delay_the_store_recorded() -> None:
    """A delay chosen for an attempt whose lease was lost never took effect.

    Attempt 1 outlives its lease (no renewal gets through) and fails late:
    its outcome is discarded, so the job recorded no delay, and the delay
    after attempt 2 must be drawn as a first one, within [base, 3 * base].
    """
    trace = Simulation(
        1,
        workload=Burst(1),
        concurrency=1,
        lease=3,
        faults=FaultPlan(
            SlowFirstAttempt(),
            TransientErrors(1.0),
            StoreErrors(1.0, operations={"renew"}),
        ),
        retry=RetryPolicy(3, Backoff.exponential(1, 100, jitter="decorrelated")),
    ).run()
    assert trace.violations() == []
    [wait] = trace.waits()
    assert wait.attempt == 2 and 1.0 <= wait.delay <= 3.0
