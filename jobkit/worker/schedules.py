"""Schedule firing: a worker enqueues the due slots of the store's schedules."""

from __future__ import annotations

import logging

import attrs
import trio

from ..store.protocol import ScheduleStore
from .base import _WorkerState

logger = logging.getLogger("jobkit")


class _Schedules(_WorkerState):
    """Schedule firing: enqueue each schedule's due slots, once per slot."""

    async def _fire_schedules(self) -> None:
        # Every worker fires every schedule: the store enqueues each slot once,
        # whoever asks first. It looks at each next slot, when this process
        # changes a schedule, and every poll interval (for other processes').
        store = self._queue.store
        if not isinstance(store, ScheduleStore):
            self._schedules_fired.set()
            return
        clock = self._queue.clock
        changed = trio.Event()

        def on_change(name: str) -> None:
            changed.set()

        unsubscribe = self._queue.subscribe(schedules=on_change)
        try:
            while not self._stopping:
                changed = trio.Event()
                fired = await self._caller.call(
                    "fire_schedules",
                    lambda: store.fire_schedules(now=clock()),
                    shield=True,
                )
                for firing in fired.firings:
                    logger.info(
                        "schedule %r enqueued job %d for its slot %r",
                        firing.schedule,
                        firing.job_id,
                        firing.slot,
                        extra=attrs.asdict(firing),
                    )
                for name in sorted({firing.queue for firing in fired.firings}):
                    self._queue.notify(queue=name)
                self._schedules_fired.set()
                deadline = trio.current_time() + self._poll_interval
                if fired.next_slot is not None:
                    deadline = min(deadline, self._trio_time(fired.next_slot))
                with trio.move_on_at(deadline):
                    await changed.wait()
        finally:
            unsubscribe()
