"""Wake-ups within one process: who is told when a queue changes a job.

A :class:`~jobkit.Queue` keeps one :class:`WakeUps`. Idle workers subscribe
to hear of claimable jobs and changed schedules at once, instead of at their
next poll; :meth:`Queue.wait` watches one job id. Other processes are never
told: they find changes when they next look at the store.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["Listeners", "WakeUps", "Watchers"]


class Listeners:
    """Callbacks told a name (a queue's, a schedule's) each time it changes."""

    def __init__(self) -> None:
        self._callbacks: set[Callable[[str], None]] = set()

    def add(self, callback: Callable[[str], None]) -> None:
        self._callbacks.add(callback)

    def discard(self, callback: Callable[[str], None]) -> None:
        self._callbacks.discard(callback)

    def notify(self, name: str) -> None:
        for callback in list(self._callbacks):
            callback(name)


class Watchers:
    """Tasks in :meth:`Queue.wait` by job id, woken when this process changes one."""

    def __init__(self) -> None:
        self._events: dict[int, set[trio.Event]] = {}

    def watch(self, job_id: int) -> trio.Event:
        event = trio.Event()
        self._events.setdefault(job_id, set()).add(event)
        return event

    def unwatch(self, job_id: int, event: trio.Event) -> None:
        events = self._events.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[job_id]

    def notify(self, job_id: int) -> None:
        for event in self._events.pop(job_id, ()):
            event.set()


class WakeUps:
    """Who hears of ready queues, of changed schedules and of changed jobs."""

    def __init__(self) -> None:
        self.ready = Listeners()
        """Told a queue's name when a job on it may have become claimable."""
        self.schedules = Listeners()
        """Told a schedule's name when it was added, changed or removed."""
        self.jobs = Watchers()
        """Wake the waiters on a job id when the job changed."""
        self.enqueued: list[int] | None = None
        """While ``ready`` is told of an enqueue: the ids it returned."""

    def subscribe(
        self,
        ready: Callable[[str], None] | None,
        schedules: Callable[[str], None] | None,
    ) -> Callable[[], None]:
        """Add the callbacks given; return the function that removes them."""
        if ready is not None:
            self.ready.add(ready)
        if schedules is not None:
            self.schedules.add(schedules)

        def unsubscribe() -> None:
            if ready is not None:
                self.ready.discard(ready)
            if schedules is not None:
                self.schedules.discard(schedules)

        return unsubscribe
