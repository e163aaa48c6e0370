"""Structured logging of job events through the standard :mod:`logging` module.

Every job event is logged on the ``jobkit`` logger, once, by the code that
caused it, with the fields ``job_id``, ``task``, ``queue``, ``attempt``,
``state``, ``event``, ``duration`` and ``error`` in the record's ``extra``.
A failed attempt's line carries the traceback (``exc_info``) and the error's
one-line summary in ``error``, so the traceback appears exactly once.

:class:`JSONFormatter` turns records into one JSON object per line for log
aggregation; any handler and level configuration works as usual.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeAlias

from ..core.job import Event, EventKind, Job
from ..runtime.tasks import first_line

__all__ = [
    "FIELDS",
    "JSONFormatter",
    "first_line",
    "job_fields",
    "log_job_event",
]

logger = logging.getLogger("jobkit")

FIELDS: tuple[str, ...] = (
    "job_id",
    "task",
    "queue",
    "attempt",
    "max_attempts",
    "state",
    "event",
    "duration",
    "error",
)
"""The structured fields every job event's log record carries in ``extra``."""

_ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
)

_LEVELS: dict[EventKind, int] = {
    EventKind.ENQUEUED: logging.INFO,
    EventKind.STARTED: logging.INFO,
    EventKind.SUCCEEDED: logging.INFO,
    EventKind.RETRIED: logging.WARNING,
    EventKind.EXPIRED: logging.WARNING,
    EventKind.DEAD: logging.ERROR,
    EventKind.RELEASED: logging.INFO,
    EventKind.REQUEUED: logging.INFO,
    EventKind.CANCELLED: logging.INFO,
    EventKind.DISCARDED: logging.INFO,
}
# By value: a worker asks twice per attempt, and an enum member's hash runs
# Python code (Enum.__hash__) where a str's is cached.
_LEVEL_OF = {kind.value: level for kind, level in _LEVELS.items()}

# The attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def job_fields(
    event: Event, job: Job, *, duration: float | None = None
) -> dict[str, Any]:
    """Return the structured ``extra`` fields for ``event`` of ``job``.

    ``job`` is the job as the event left it, so ``state`` is the new state.

    Example::

        >>> from jobkit import JobEvent, EventKind, Job, JobState
        >>> from jobkit.observe.logs import job_fields
        >>> job = Job(id=3, task="email", queue="mail", payload={},
        ...           state=JobState.RUNNING, attempts=1, max_attempts=5,
        ...           priority=0, run_at=0.0, created_at=0.0, updated_at=0.0)
        >>> job_fields(JobEvent(3, EventKind.STARTED, 1.0, 1), job)
        ... # doctest: +NORMALIZE_WHITESPACE
        {'job_id': 3, 'task': 'email', 'queue': 'mail', 'attempt': 1,
         'max_attempts': 5, 'state': 'running', 'event': 'started',
         'duration': None, 'error': None}
    """
    return {
        "job_id": event.job_id,
        "task": job.task,
        "queue": job.queue,
        "attempt": event.attempt,
        "max_attempts": job.max_attempts,
        "state": job.state.value,
        "event": event.kind.value,
        "duration": duration,
        "error": first_line(event.error),
    }


def _message(event: Event, job: Job, duration: float | None) -> str:
    head = f"job {event.job_id} ({job.task} on {job.queue})"
    of = f"attempt {event.attempt}/{job.max_attempts}"
    took = "" if duration is None else f" after {duration:.3f}s"
    error = f": {first_line(event.error)}" if event.error else ""
    kind = event.kind
    if kind is EventKind.ENQUEUED:
        return f"{head} enqueued"
    if kind is EventKind.STARTED:
        return f"{head} started {of}"
    if kind is EventKind.SUCCEEDED:
        return f"{head} succeeded on {of}{took}"
    if kind is EventKind.RETRIED:
        wait = max(0.0, job.run_at - event.at)
        return f"{head} failed {of}{took}, retrying in {wait:.3g}s{error}"
    if kind is EventKind.EXPIRED:
        return f"{head} lost its worker on {of} (lease expired), retrying now"
    if kind is EventKind.DEAD:
        return f"{head} is dead after {of}{took}{error}"
    if kind is EventKind.RELEASED:
        return f"{head} released unfinished by a worker shutting down ({of})"
    if kind is EventKind.REQUEUED:
        return f"{head} requeued from the dead letters"
    if kind is EventKind.CANCELLED:
        return f"{head} cancelled"
    return f"{head} discarded from the dead letters"


def logs_job_event(kind: EventKind, log: logging.Logger | None = None) -> bool:
    """Tell whether :func:`log_job_event` would emit a record for an event of ``kind``.

    Callers on a hot path use it to skip building what only the record needs.

    Example::

        >>> import logging
        >>> from jobkit import EventKind
        >>> from jobkit.observe.logs import logs_job_event
        >>> quiet = logging.getLogger("jobkit.example.quiet")
        >>> quiet.setLevel(logging.ERROR)
        >>> [logs_job_event(k, quiet) for k in (EventKind.STARTED, EventKind.DEAD)]
        [False, True]
    """
    target = logger if log is None else log
    return target.isEnabledFor(_LEVEL_OF.get(kind._value_, logging.INFO))


def log_job_event(
    event: Event,
    job: Job,
    *,
    duration: float | None = None,
    exc: BaseException | None = None,
    log: logging.Logger | None = None,
) -> None:
    """Log one job event on the ``jobkit`` logger with its structured fields.

    Failures (RETRIED, EXPIRED) log at WARNING, DEAD at ERROR, the rest at
    INFO. Pass the exception as ``exc`` for a failed attempt: its traceback
    is attached once, as ``exc_info``.

    Example::

        >>> import logging, sys
        >>> from jobkit import JobEvent, EventKind, Job, JobState
        >>> from jobkit.observe.logs import log_job_event
        >>> handler = logging.StreamHandler(sys.stdout)
        >>> handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        >>> log = logging.getLogger("jobkit.example")
        >>> log.addHandler(handler); log.setLevel(logging.INFO)
        >>> log.propagate = False
        >>> job = Job(id=3, task="email", queue="mail", payload={},
        ...           state=JobState.SUCCEEDED, attempts=1, max_attempts=5,
        ...           priority=0, run_at=0.0, created_at=0.0, updated_at=2.5)
        >>> log_job_event(JobEvent(3, EventKind.SUCCEEDED, 2.5, 1), job,
        ...               duration=1.5, log=log)
        INFO job 3 (email on mail) succeeded on attempt 1/5 after 1.500s
    """
    target = logger if log is None else log
    level = _LEVELS.get(event.kind, logging.INFO)
    if not target.isEnabledFor(level):
        return
    exc_info: _ExcInfo | None = None
    if exc is not None:
        exc_info = (type(exc), exc, exc.__traceback__)
    target.log(
        level,
        _message(event, job, duration),
        exc_info=exc_info,
        extra=job_fields(event, job, duration=duration),
    )


def _jsonable(value: object) -> Any:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    return str(value)


class JSONFormatter(logging.Formatter):
    """Format each log record as one line of JSON, for log aggregation.

    The object holds ``time`` (ISO 8601, UTC), ``level``, ``logger`` and
    ``message``; then every field given in ``extra`` (for job events:
    ``job_id``, ``task``, ``queue``, ``attempt``, ``state``, ``event``,
    ``duration``, ``error``); then, when the record carries an exception,
    ``exc_type`` and ``traceback`` (the formatted traceback, once) and
    ``stack`` for ``stack_info``. Values JSON cannot hold are written as
    strings. ``static`` adds fixed fields to every line (a service name,
    a host).

    Example::

        >>> import json, logging
        >>> from jobkit import JSONFormatter
        >>> record = logging.LogRecord("jobkit", logging.INFO, "app.py", 1,
        ...                            "job %d started", (7,), None)
        >>> record.job_id = 7
        >>> line = JSONFormatter(static={"service": "mailer"}).format(record)
        >>> fields = json.loads(line)
        >>> fields["message"], fields["job_id"], fields["level"], fields["service"]
        ('job 7 started', 7, 'INFO', 'mailer')
    """

    def __init__(
        self,
        *,
        static: Mapping[str, Any] | None = None,
        ensure_ascii: bool = False,
    ) -> None:
        super().__init__()
        self._static = dict(static or {})
        self._ensure_ascii = ensure_ascii

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        when = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(self._static)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=_jsonable, ensure_ascii=self._ensure_ascii)
