"""What :meth:`Queue.enqueue_many` takes: a :class:`PreparedJob` per job.

A prepared job is checked when it is built (its options and that its payload
is JSON); the check against the handler's signature and the task's defaults
come when a queue resolves it (:meth:`Queue.enqueue_many`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from .._checks import instant, stored_int
from .._checks import seconds as check_seconds
from ..core.job import JSON, check_json

__all__ = ["EnqueueOptions", "PreparedJob", "check_name", "payload_dict"]


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string, else raise ``ValueError``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def payload_dict(payload: Mapping[str, JSON] | None) -> dict[str, JSON]:
    """Return a copy of ``payload`` as a dict; refuse what is not a mapping."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise TypeError(
            "payload must be a mapping of keyword arguments for the handler, "
            f"got {type(payload).__name__}"
        )
    return dict(payload)


@attrs.frozen(init=False)
class PreparedJob:
    """A job ready to be enqueued: a task name, its payload and its options.

    :meth:`Queue.enqueue_many` takes a list of these and stores them in one
    atomic call. Build them with :meth:`Task.prepare` (which checks the
    arguments against the handler's signature) or directly by task name.
    Options left as ``None`` take the task's defaults; ``delay`` counts from
    the moment the job is enqueued, not from when it was prepared.

    Example::

        >>> import jobkit
        >>> queue = jobkit.Queue(jobkit.MemoryStore())
        >>> @queue.task()
        ... async def send(to: str) -> None: ...
        >>> job = send.prepare(to="ada@example.com")
        >>> job.task, job.payload
        ('send', {'to': 'ada@example.com'})
        >>> jobkit.PreparedJob("send", {"to": "bob@example.com"}, delay=60).delay
        60.0
    """

    task: str = attrs.field()
    payload: dict[str, JSON] = attrs.field(factory=dict)
    delay: float | None = attrs.field(default=None)
    run_at: float | None = attrs.field(default=None)
    priority: int | None = attrs.field(default=None)
    queue: str | None = attrs.field(default=None)
    unique_key: str | None = attrs.field(default=None)
    max_attempts: int | None = attrs.field(default=None)

    def __init__(
        self,
        task: str,
        payload: Mapping[str, JSON] | None = None,
        *,
        delay: float | timedelta | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
    ) -> None:
        payload = payload_dict(payload)
        check_json(payload)
        if delay is not None and run_at is not None:
            raise ValueError("give either delay or run_at, not both")
        self.__attrs_init__(
            task=check_name(task, "task name"),
            payload=payload,
            delay=None if delay is None else check_seconds(delay, "delay", finite=True),
            run_at=None
            if run_at is None
            else instant(run_at, "run_at", datetime_ok=True),
            priority=None if priority is None else stored_int(priority, "priority"),
            queue=None if queue is None else check_name(queue, "queue"),
            unique_key=(
                None if unique_key is None else check_name(unique_key, "unique_key")
            ),
            max_attempts=(
                None
                if max_attempts is None
                else stored_int(max_attempts, "max_attempts", minimum=1)
            ),
        )

    @classmethod
    def _checked(cls, task: str, payload: dict[str, JSON]) -> PreparedJob:
        # For Task.prepare, which has just built and checked a fresh payload:
        # checking it again is a third of the cost of preparing a job.
        job = cls.__new__(cls)
        job.__attrs_init__(task=task, payload=payload)
        return job


@attrs.frozen
class EnqueueOptions:
    """The options of one enqueue, any of them left to the task's defaults."""

    delay: float | timedelta | None = None
    run_at: float | datetime | None = None
    priority: int | None = None
    queue: str | None = None
    unique_key: str | None = None
    max_attempts: int | None = None

    def prepare(self, task: str, payload: Mapping[str, JSON] | None) -> PreparedJob:
        return PreparedJob(
            task,
            payload,
            delay=self.delay,
            run_at=self.run_at,
            priority=self.priority,
            queue=self.queue,
            unique_key=self.unique_key,
            max_attempts=self.max_attempts,
        )
