"""Queue depth over time, sampled from a store.

A :class:`DepthSampler` asks a store how many jobs each queue holds in each
state, every few seconds: the only view of a long-running queue whose log is
purged. :func:`jobkit.charts.queue_depth` draws the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ..store.protocol import QueueCounts
from .metrics import _store_of

__all__ = ["DepthSample", "DepthSampler"]


@attrs.frozen
class DepthSample:
    """The number of jobs per queue and state at one instant.

    Example::

        >>> from jobkit import DepthSample, JobState, QueueCounts
        >>> s = DepthSample(at=5.0, counts=QueueCounts({("q", JobState.QUEUED): 2}))
        >>> s.counts.get("q", JobState.QUEUED)
        2
    """

    at: float
    counts: QueueCounts


class DepthSampler:
    """Record queue depth on a fixed period, for charts of depth over time.

    Run :meth:`run` in a nursery; it samples at once and then every
    ``every`` seconds of trio's clock (so a ``MockClock`` drives it) until
    cancelled, appending :class:`DepthSample` records to :attr:`samples`.
    Sample times come from ``clock``, by default the queue's own clock when
    given a queue (so they line up with event times) and trio's otherwise.

    Example::

        >>> import trio, jobkit.testing
        >>> from jobkit import DepthSampler, JobState, MemoryStore, NewJob
        >>> async def main():
        ...     store = MemoryStore()
        ...     sampler = DepthSampler(store, every=10)
        ...     async with trio.open_nursery() as nursery:
        ...         nursery.start_soon(sampler.run)
        ...         await trio.sleep(15)
        ...         await store.enqueue([NewJob(task="t")], now=15.0)
        ...         await trio.sleep(10)
        ...         nursery.cancel_scope.cancel()
        ...     return [(s.at, s.counts.total(JobState.QUEUED))
        ...             for s in sampler.samples]
        >>> jobkit.testing.run_virtual(main)
        [(0.0, 0), (10.0, 0), (20.0, 1)]
    """

    def __init__(
        self,
        source: Any,
        *,
        every: float,
        clock: Callable[[], float] | None = None,
        limit: int | None = None,
    ) -> None:
        _store_of(source)
        if not (isinstance(every, int | float) and math.isfinite(every) and every > 0):
            raise ValueError(
                f"every must be a positive number of seconds, got {every!r}"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        self._source = source
        self.every = float(every)
        if clock is None:
            queue_clock = getattr(source, "clock", None)
            clock = queue_clock if callable(queue_clock) else trio.current_time
        self._clock = clock
        self._limit = limit
        self.samples: list[DepthSample] = []
        """Every sample taken, oldest first (the oldest dropped past ``limit``)."""

    def __repr__(self) -> str:
        return f"<DepthSampler every {self.every:g}s, {len(self.samples)} samples>"

    async def sample(self) -> DepthSample:
        """Take one sample now, record it and return it."""
        counts = await _store_of(self._source).counts()
        sample = DepthSample(self._clock(), counts)
        self.samples.append(sample)
        if self._limit is not None and len(self.samples) > self._limit:
            del self.samples[0]
        return sample

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample now and then every ``every`` seconds, until cancelled."""
        from ..runtime.interval import MissedTickBehavior, interval

        # DELAY: after a slow store call, keep the spacing, not a burst.
        ticker = interval(self.every, missed_tick_behavior=MissedTickBehavior.DELAY)
        started = False
        while True:
            await ticker.tick()
            await self.sample()
            if not started:
                task_status.started()
                started = True
