"""The job record, its states and events, and the pure transitions between them.

Every store applies the same transitions: each function here takes a job and
the current time and returns the job's next version together with the event
that records the change. Nothing here does I/O, so the stores, the simulator
and the property tests all share one definition of the lifecycle.
"""

from __future__ import annotations

import enum
import json
import math
import operator
from collections.abc import Callable
from typing import Any, TypeAlias, cast

import attrs

from .. import _html
from .._checks import stored_int

JSON: TypeAlias = Any
"""A value that survives ``json.dumps``/``json.loads`` unchanged."""


class JobState(enum.Enum):
    """Where a job is in its lifecycle.

    Example::

        >>> JobState.QUEUED.value
        'queued'
        >>> JobState.DEAD in TERMINAL_STATES
        True
    """

    QUEUED = "queued"
    """Waiting for ``run_at`` and a free worker."""
    RUNNING = "running"
    """Claimed by a worker that holds its lease until ``lease_until``."""
    SUCCEEDED = "succeeded"
    """Finished; ``result`` holds the handler's return value."""
    DEAD = "dead"
    """Failed permanently or ran out of attempts; waits for a person."""
    CANCELLED = "cancelled"
    """Cancelled before it ran, or discarded from the dead letters."""


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
"""States a job stays in unless a person acts (DEAD can be requeued)."""

ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
"""States in which a job still holds its unique key."""


class EventKind(enum.Enum):
    """The transition an :class:`Event` records.

    Example::

        >>> EventKind.RETRIED.value
        'retried'
    """

    ENQUEUED = "enqueued"
    """A new job entered QUEUED."""
    STARTED = "started"
    """QUEUED to RUNNING: a worker claimed it and began an attempt."""
    SUCCEEDED = "succeeded"
    """RUNNING to SUCCEEDED."""
    RETRIED = "retried"
    """RUNNING to QUEUED after an error; the next attempt waits for ``run_at``."""
    EXPIRED = "expired"
    """RUNNING to QUEUED because the lease ran out (the worker died)."""
    DEAD = "dead"
    """RUNNING to DEAD: a permanent error, or no attempts left."""
    RELEASED = "released"
    """RUNNING to QUEUED, handed back by a worker shutting down; not an attempt."""
    REQUEUED = "requeued"
    """DEAD to QUEUED by a person; attempts start again from zero."""
    CANCELLED = "cancelled"
    """QUEUED to CANCELLED."""
    DISCARDED = "discarded"
    """DEAD to CANCELLED: a person gave up on it."""


# No __weakref__ slot: without it, _JobMaker below can lay out a Job.
@attrs.frozen(weakref_slot=False)
class Job:
    """One unit of background work and everything known about it.

    Jobs are immutable snapshots: a store returns a new ``Job`` after every
    transition. Times are seconds on the queue's clock (wall-clock epoch
    seconds for a real queue, virtual seconds in a simulation).

    Example::

        >>> job = Job(id=1, task="send_email", queue="default",
        ...           payload={"to": "ada@example.com"}, state=JobState.QUEUED,
        ...           attempts=0, max_attempts=5, priority=0, run_at=0.0,
        ...           created_at=0.0, updated_at=0.0)
        >>> job.state.value, job.attempts
        ('queued', 0)
        >>> job
        <Job 1 send_email on 'default': queued, 0/5 attempts, due t=0s>

    In a notebook a job shows as a table of its fields; times on an epoch
    clock show as UTC dates, and the last error as its first line.
    """

    id: int
    task: str
    queue: str
    payload: dict[str, JSON]
    state: JobState
    attempts: int
    """Attempts started so far, the current one included."""
    max_attempts: int | None
    """None until the first claim: the job was enqueued without knowing its
    task's default (``jobkit enqueue`` without ``--app``), and the claiming
    worker's retry policy decides it (see :func:`start`)."""
    priority: int
    """Higher runs first among jobs that are due."""
    run_at: float
    """The earliest time the next attempt may start."""
    created_at: float
    updated_at: float
    lease_until: float | None = None
    """While RUNNING: when the lease ends unless renewed."""
    unique_key: str | None = None
    last_error: str | None = None
    result: JSON = None
    retry_delay: float | None = None
    """The backoff delay recorded at the job's last retry (from
    :attr:`Failure.delay`); None before any retry and after a requeue.
    Decorrelated jitter draws the next delay from it."""

    def __repr__(self) -> str:
        tried = f"{self.attempts}/{self.max_attempts} attempts"
        if self.state is JobState.QUEUED:
            where = f"{tried}, due {_html.when(self.run_at)}"
        elif self.state is JobState.RUNNING:
            where = f"attempt {self.attempts}/{self.max_attempts}, lease until "
            where += _html.when(self.lease_until)
        else:
            where = f"after {tried}, at {_html.when(self.updated_at)}"
        error = _html.first_line(self.last_error, 60)
        if error and self.state is not JobState.SUCCEEDED:
            where += f", error {error!r}"
        state = self.state.value
        return f"<Job {self.id} {self.task} on {self.queue!r}: {state}, {where}>"

    def _repr_html_(self) -> str:
        pairs: list[tuple[str, object]] = [
            ("state", self.state.value),
            ("attempts", f"{self.attempts} of {self.max_attempts}"),
            ("payload", json.dumps(self.payload, ensure_ascii=False)),
            ("priority", self.priority),
            ("due", _html.when(self.run_at)),
            ("created", _html.when(self.created_at)),
            ("updated", _html.when(self.updated_at)),
        ]
        if self.lease_until is not None:
            pairs.append(("lease until", _html.when(self.lease_until)))
        if self.unique_key is not None:
            pairs.append(("unique key", self.unique_key))
        if self.result is not None:
            pairs.append(("result", json.dumps(self.result, ensure_ascii=False)))
        if self.last_error:
            earlier = (
                " (an earlier attempt)" if self.state is JobState.SUCCEEDED else ""
            )
            error = _html.first_line(self.last_error, 200)
            pairs.append(("last error" + earlier, error))
        title = f"job {self.id}: {self.task} on {self.queue!r}"
        return _html.fields(pairs, title=title)


@attrs.frozen
class JobEvent:
    """A record of one transition of one job.

    Named apart from :class:`trio.Event`, which jobkit's users hold too.

    Example::

        >>> event = JobEvent(job_id=1, kind=EventKind.ENQUEUED, at=0.0, attempt=0)
        >>> event.kind.value, event.error
        ('enqueued', None)
    """

    job_id: int
    kind: EventKind
    at: float
    attempt: int
    error: str | None = None


# The short name the layers inside the package use; users see JobEvent.
Event = JobEvent


@attrs.frozen
class NewJob:
    """What a producer asks for: a job not yet stored.

    ``Queue.enqueue`` builds these; stores turn them into :class:`Job` rows.

    Example::

        >>> NewJob(task="send_email", payload={"to": "ada@example.com"}).queue
        'default'
    """

    task: str
    payload: dict[str, JSON] = attrs.field(factory=dict)
    queue: str = "default"
    priority: int = 0
    run_at: float | None = None
    """None means "now", as the store sees it."""
    max_attempts: int | None = 1
    """None means the task's default, filled in by the first claim."""
    unique_key: str | None = None


@attrs.frozen(weakref_slot=False)  # as Job, for _SuccessMaker
class Success:
    """An attempt's outcome: the handler returned ``result``.

    Example::

        >>> Success(job_id=1, attempt=1, result={"sent": True}).result
        {'sent': True}
    """

    job_id: int
    attempt: int
    result: JSON = None


@attrs.frozen
class Failure:
    """An attempt's outcome: the handler failed with ``error``.

    ``retry_at`` is when the next attempt may start, or None to make the job
    DEAD (a permanent error, or no attempts left). ``delay`` is the backoff
    delay that gave ``retry_at``; a store records it on the job as
    :attr:`Job.retry_delay` when the job is retried.

    Example::

        >>> Failure(job_id=1, attempt=1, error="timeout", retry_at=30.0).retry_at
        30.0
    """

    job_id: int
    attempt: int
    error: str
    retry_at: float | None
    delay: float | None = None


@attrs.frozen
class Release:
    """An attempt's outcome: the worker stopped before it finished; run it again now.

    Example::

        >>> Release(job_id=1, attempt=1).attempt
        1
    """

    job_id: int
    attempt: int


Outcome: TypeAlias = Success | Failure | Release
"""What a worker reports about one attempt; stores apply it with ``settle``."""


class TransitionError(ValueError):
    """The job is not in a state that allows the requested change.

    Example::

        >>> try:
        ...     cancel(Job(id=1, task="t", queue="q", payload={},
        ...                state=JobState.SUCCEEDED, attempts=1, max_attempts=1,
        ...                priority=0, run_at=0.0, created_at=0.0, updated_at=0.0),
        ...            now=1.0)
        ... except TransitionError as e:
        ...     print(e)
        cannot cancel job 1: it is succeeded, not queued
    """


MAX_JSON_DEPTH = 100
"""How deeply a payload or result may nest lists and objects.

Far more than any real argument list needs, and far below what would
exhaust Python's recursion limit while checking, storing or loading it."""


def check_json(value: object, where: str = "payload") -> None:
    r"""Raise ``TypeError`` naming the first part of ``value`` that is not plain JSON.

    Plain JSON means dicts with string keys, lists, strings, finite numbers,
    booleans and None: what round-trips through ``json`` unchanged. Tuples are
    refused too, because they would come back as lists, and so are strings
    with a lone surrogate (what ``os.fsdecode`` makes of a file name's
    undecodable bytes), which have no UTF-8 form for a store to keep. A value
    nested deeper than :data:`MAX_JSON_DEPTH` lists and objects raises
    ``ValueError``.

    Example::

        >>> check_json({"to": "ada@example.com", "tags": ["welcome"]})
        >>> check_json({"when": {1, 2}})
        Traceback (most recent call last):
        ...
        TypeError: payload['when'] is a set ({1, 2}), which is not JSON-serializable
        >>> check_json({"file": "report-\udcff.csv"})
        Traceback (most recent call last):
        ...
        TypeError: payload['file'] holds '\udcff' at index 7, a lone surrogate that UTF-8 cannot encode
    """  # noqa: E501
    if not _plain(value, MAX_JSON_DEPTH):
        _check_json(value, where, MAX_JSON_DEPTH)


def _plain(value: Any, depth: int) -> bool:
    # The common case, answered without building the path of each item that
    # _check_json carries for its message: exact types only, ASCII text. A
    # False sends the value to _check_json, which decides (subclasses, other
    # text) and words the error. Scalars in containers are tested inline: a
    # call per item would cost as much as the test.
    kind = type(value)
    if kind is dict:
        if depth == 0:
            return False
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            kind = type(item)
            if kind is str:
                if not item.isascii():
                    return False
            elif kind is int or kind is bool or item is None:
                continue
            elif kind is float:
                if not math.isfinite(item):
                    return False
            elif not _plain(item, depth - 1):
                return False
        return True
    if kind is list:
        return depth > 0 and all(_plain(item, depth - 1) for item in value)
    if kind is str:
        return bool(value.isascii())
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    return False


def check_job_fields(
    *,
    task: object,
    queue: object,
    payload: object,
    priority: object,
    max_attempts: object,
) -> None:
    """Refuse job settings no store can keep, naming the setting that is wrong.

    Every store applies it to each :class:`NewJob`, and a schedule to the job
    it will enqueue, so that both refuse the same values in the same words.
    ``max_attempts`` may be None (the task's default, decided at the claim).

    Example::

        >>> check_job_fields(task="t", queue="", payload={}, priority=0,
        ...                  max_attempts=1)
        Traceback (most recent call last):
        ...
        ValueError: queue must be a non-empty string, got ''
    """
    if not isinstance(task, str) or not task:
        raise ValueError(f"task name must be a non-empty string, got {task!r}")
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    if not isinstance(payload, dict):
        raise TypeError(
            f"payload must be a dict of keyword arguments, got "
            f"{type(payload).__name__} (task {task!r})"
        )
    check_json(payload)
    stored_int(priority, "priority")
    if max_attempts is not None:
        stored_int(max_attempts, "max_attempts", minimum=1)


def _check_json(value: object, where: str, depth: int) -> None:
    # ``where`` is built for each item as the walk goes down, so that the
    # message can name the exact place; ``depth`` is what nesting is left.
    if isinstance(value, str):
        if not value.isascii():
            _check_text(value, where)
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, (list, dict)) and depth == 0:
        root = where.partition("[")[0]
        raise ValueError(
            f"{root} is nested deeper than {MAX_JSON_DEPTH} levels of lists and objects"
        )
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth - 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be strings"
                )
            if not key.isascii():
                _check_text(key, f"{where} key {key!r}")
            _check_json(item, f"{where}[{key!r}]", depth - 1)
        return
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise TypeError(
        f"{where} is a {type(value).__name__} ({shown}), which is not JSON-serializable"
    )


def _check_text(text: str, where: str) -> None:
    # A lone surrogate (what os.fsdecode makes of a file name's undecodable
    # bytes) lives happily in a str but has no UTF-8 form: a store refuses it.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"{where} holds {text[exc.start : exc.end]!r} at index {exc.start}, "
            "a lone surrogate that UTF-8 cannot encode"
        ) from None


def dump_json(value: JSON, where: str = "payload") -> str:
    """Serialize ``value`` compactly after :func:`check_json` has vetted it.

    Example::

        >>> dump_json({"a": [1, 2]})
        '{"a":[1,2]}'
    """
    check_json(value, where)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- transitions ---------------------------------------------------------------

_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))
_job_values = operator.attrgetter(*_JOB_FIELDS)


_JOB_POSITIONS = {name: i for i, name in enumerate(_JOB_FIELDS)}

# The members the hot transitions test and set, as module globals: Python
# 3.11 reads an attribute of an Enum class through EnumType.__getattr__'s
# slow path, several times the cost of a global, and a worker makes a few
# dozen such reads per attempt.
_QUEUED, _RUNNING = JobState.QUEUED, JobState.RUNNING
_SUCCEEDED, _DEAD = JobState.SUCCEEDED, JobState.DEAD
_EV_ENQUEUED, _EV_STARTED = EventKind.ENQUEUED, EventKind.STARTED
_EV_SUCCEEDED, _EV_RELEASED = EventKind.SUCCEEDED, EventKind.RELEASED
_EV_RETRIED, _EV_DEAD = EventKind.RETRIED, EventKind.DEAD


# The hot transitions (a claim, a success) build the next version with every
# field passed by position, which costs under half of ``_evolve``: they rely
# on this order, so a new field must be added to them too.
assert _JOB_FIELDS == (
    "id",
    "task",
    "queue",
    "payload",
    "state",
    "attempts",
    "max_attempts",
    "priority",
    "run_at",
    "created_at",
    "updated_at",
    "lease_until",
    "unique_key",
    "last_error",
    "result",
    "retry_delay",
), _JOB_FIELDS


class _JobMaker:
    """Makes a :class:`Job` from its fields by position, for a quarter of its cost.

    A frozen attrs class sets each field through ``object.__setattr__``,
    a call that costs several times a plain attribute store; a worker makes
    two jobs per attempt (the claim's and the outcome's). This class has
    the same slots, so its fields are stored plainly, and then the object
    becomes the Job it was laid out as.
    """

    __slots__ = _JOB_FIELDS

    def __init__(
        self,
        id: int,
        task: str,
        queue: str,
        payload: dict[str, JSON],
        state: JobState,
        attempts: int,
        max_attempts: int | None,
        priority: int,
        run_at: float,
        created_at: float,
        updated_at: float,
        lease_until: float | None,
        unique_key: str | None,
        last_error: str | None,
        result: JSON,
        retry_delay: float | None,
    ) -> None:
        self.id = id
        self.task = task
        self.queue = queue
        self.payload = payload
        self.state = state
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.priority = priority
        self.run_at = run_at
        self.created_at = created_at
        self.updated_at = updated_at
        self.lease_until = lease_until
        self.unique_key = unique_key
        self.last_error = last_error
        self.result = result
        self.retry_delay = retry_delay
        self.__class__ = Job  # type: ignore[assignment]


_make_job = cast(Callable[..., Job], _JobMaker)


class _SuccessMaker:
    """Makes a :class:`Success` as :class:`_JobMaker` makes a Job."""

    __slots__ = ("attempt", "job_id", "result")

    def __init__(self, job_id: int, attempt: int, result: JSON) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.result = result
        self.__class__ = Success  # type: ignore[assignment]


_make_success = cast(Callable[[int, int, JSON], Success], _SuccessMaker)


def _evolve(job: Job, **changes: Any) -> Job:
    # attrs.evolve, without looking up the class's fields on every call and
    # passing the values by position: a worker makes several transitions per
    # attempt, and this takes under two thirds of attrs.evolve's time.
    values = list(_job_values(job))
    for name, value in changes.items():
        values[_JOB_POSITIONS[name]] = value
    return _make_job(*values)


def _refuse(job: Job, action: str, allowed: str) -> TransitionError:
    return TransitionError(
        f"cannot {action} job {job.id}: it is {job.state.value}, not {allowed}"
    )


def create(
    spec: NewJob, *, job_id: int, now: float, payload: dict[str, JSON] | None = None
) -> tuple[Job, Event]:
    """Turn a :class:`NewJob` into a QUEUED job.

    ``payload``, if given, is stored instead of ``spec.payload`` (a store's
    private copy of it).

    Example::

        >>> job, event = create(NewJob(task="t"), job_id=7, now=5.0)
        >>> job.run_at, event.kind.value
        (5.0, 'enqueued')
    """
    job = Job(
        id=job_id,
        task=spec.task,
        queue=spec.queue,
        payload=spec.payload if payload is None else payload,
        state=_QUEUED,
        attempts=0,
        max_attempts=spec.max_attempts,
        priority=spec.priority,
        run_at=now if spec.run_at is None else spec.run_at,
        created_at=now,
        updated_at=now,
        unique_key=spec.unique_key,
    )
    return job, Event(job_id, _EV_ENQUEUED, now, 0)


def start(
    job: Job, *, now: float, lease: float, max_attempts: int | None = None
) -> tuple[Job, Event]:
    """Claim a QUEUED job: a new attempt begins, leased until ``now + lease``.

    A job enqueued without ``max_attempts`` gets one here, for good: the
    given ``max_attempts`` (the claiming worker's policy for its task), or
    1 when the claimer names none.

    Example::

        >>> job, _ = create(NewJob(task="t"), job_id=1, now=0.0)
        >>> job, event = start(job, now=1.0, lease=30.0)
        >>> job.state.value, job.attempts, job.lease_until
        ('running', 1, 31.0)
    """
    new = _started(job, now, lease, max_attempts)
    return new, Event(job.id, _EV_STARTED, now, new.attempts)


def _started(job: Job, now: float, lease: float, max_attempts: int | None) -> Job:
    """The job :func:`start` makes of ``job``, without its event."""
    if job.state is not _QUEUED:
        raise _refuse(job, "start", "queued")
    limit = job.max_attempts
    return _make_job(
        job.id,
        job.task,
        job.queue,
        job.payload,
        _RUNNING,
        job.attempts + 1,
        (max_attempts or 1) if limit is None else limit,
        job.priority,
        job.run_at,
        job.created_at,
        now,
        now + lease,
        job.unique_key,
        job.last_error,
        job.result,
        job.retry_delay,
    )


def owns(job: Job, attempt: int) -> bool:
    """Tell whether ``attempt`` is the job's current, running attempt.

    A worker whose lease ran out may still finish; its report then refers to
    an attempt that is no longer current, and stores ignore it. The attempt
    number is the fencing token, so no worker identity is needed.

    Example::

        >>> job, _ = start(create(NewJob(task="t"), job_id=1, now=0.0)[0],
        ...                now=0.0, lease=1.0)
        >>> owns(job, 1), owns(job, 2)
        (True, False)
    """
    return job.state is _RUNNING and job.attempts == attempt


def attempt_limit(job: Job) -> int:
    """Return how many attempts the job may use (1 while it has no limit yet).

    Example::

        >>> job, _ = create(NewJob(task="t", max_attempts=None), job_id=1, now=0.0)
        >>> attempt_limit(job), attempt_limit(start(job, now=0.0, lease=1.0,
        ...                                           max_attempts=4)[0])
        (1, 4)
    """
    return 1 if job.max_attempts is None else job.max_attempts


def settled_kind(job: Job, outcome: Outcome) -> EventKind:
    """Return the kind of event :func:`settle` records for ``outcome`` on ``job``.

    Example::

        >>> job, _ = start(create(NewJob(task="t", max_attempts=1), job_id=1,
        ...                       now=0.0)[0], now=0.0, lease=10.0)
        >>> settled_kind(job, Failure(1, 1, "boom", retry_at=4.0)).value
        'dead'
    """
    if isinstance(outcome, Success):
        return _EV_SUCCEEDED
    if isinstance(outcome, Release):
        return _EV_RELEASED
    if outcome.retry_at is None or job.attempts >= attempt_limit(job):
        return _EV_DEAD
    return _EV_RETRIED


def settle(job: Job, outcome: Outcome, *, now: float) -> tuple[Job, Event]:
    """Apply a worker's report on the running attempt.

    The caller checks :func:`owns` first. A :class:`Failure` with
    ``retry_at=None``, or one on the last allowed attempt, makes the job DEAD.

    Example::

        >>> job, _ = start(create(NewJob(task="t", max_attempts=3), job_id=1,
        ...                       now=0.0)[0], now=0.0, lease=10.0)
        >>> job, event = settle(job, Failure(1, 1, "boom", retry_at=4.0), now=2.0)
        >>> job.state.value, job.run_at, event.kind.value
        ('queued', 4.0, 'retried')
    """
    if not owns(job, outcome.attempt):
        raise TransitionError(
            f"attempt {outcome.attempt} of job {job.id} is not running "
            f"(job is {job.state.value} at attempt {job.attempts})"
        )
    kind = settled_kind(job, outcome)
    if kind is _EV_SUCCEEDED:
        assert isinstance(outcome, Success)
        return _succeeded(job, outcome.result, now), Event(
            job.id, _EV_SUCCEEDED, now, job.attempts
        )
    if kind is _EV_RELEASED:
        new = _evolve(
            job,
            state=_QUEUED,
            attempts=job.attempts - 1,
            run_at=now,
            lease_until=None,
            updated_at=now,
        )
        return new, Event(job.id, _EV_RELEASED, now, job.attempts)
    assert isinstance(outcome, Failure)
    if kind is _EV_DEAD:
        new = _evolve(
            job,
            state=_DEAD,
            last_error=outcome.error,
            lease_until=None,
            updated_at=now,
        )
        return new, Event(job.id, _EV_DEAD, now, job.attempts, outcome.error)
    new = _evolve(
        job,
        state=_QUEUED,
        last_error=outcome.error,
        run_at=outcome.retry_at,
        retry_delay=outcome.delay,
        lease_until=None,
        updated_at=now,
    )
    return new, Event(job.id, _EV_RETRIED, now, job.attempts, outcome.error)


def _succeeded(job: Job, result: JSON, now: float) -> Job:
    """The job :func:`settle` makes of ``job`` for a :class:`Success`."""
    return _make_job(
        job.id,
        job.task,
        job.queue,
        job.payload,
        _SUCCEEDED,
        job.attempts,
        job.max_attempts,
        job.priority,
        job.run_at,
        job.created_at,
        now,
        None,
        job.unique_key,
        job.last_error,
        result,
        job.retry_delay,
    )


def lease_expired(job: Job, now: float) -> bool:
    """Tell whether the job is RUNNING on a lease that ended before ``now``.

    Example::

        >>> job, _ = start(create(NewJob(task="t"), job_id=1, now=0.0)[0],
        ...                now=0.0, lease=10.0)
        >>> lease_expired(job, 10.0), lease_expired(job, 10.5)
        (False, True)
    """
    return (
        job.state is JobState.RUNNING
        and job.lease_until is not None
        and job.lease_until < now
    )


EXPIRED_ERROR = "lease expired: the worker stopped without reporting (crash or kill)"


def expire(job: Job, *, now: float) -> tuple[Job, Event]:
    """Recover a job whose worker died: the crashed attempt counts as a failure.

    The job runs again at once if attempts remain, otherwise it is DEAD, so a
    job that kills its worker every time cannot loop forever.

    Example::

        >>> job, _ = start(create(NewJob(task="t", max_attempts=1), job_id=1,
        ...                       now=0.0)[0], now=0.0, lease=10.0)
        >>> expire(job, now=11.0)[0].state.value
        'dead'
    """
    if not lease_expired(job, now):
        raise TransitionError(f"job {job.id} holds a live lease or is not running")
    if job.attempts >= attempt_limit(job):
        new = _evolve(
            job,
            state=JobState.DEAD,
            last_error=EXPIRED_ERROR,
            lease_until=None,
            updated_at=now,
        )
        return new, Event(job.id, EventKind.DEAD, now, job.attempts, EXPIRED_ERROR)
    new = _evolve(
        job,
        state=JobState.QUEUED,
        last_error=EXPIRED_ERROR,
        run_at=now,
        lease_until=None,
        updated_at=now,
    )
    return new, Event(job.id, EventKind.EXPIRED, now, job.attempts, EXPIRED_ERROR)


def renew(job: Job, *, now: float, lease: float) -> Job:
    """Extend a running job's lease to ``now + lease`` (a heartbeat; no event).

    Example::

        >>> job, _ = start(create(NewJob(task="t"), job_id=1, now=0.0)[0],
        ...                now=0.0, lease=10.0)
        >>> renew(job, now=8.0, lease=10.0).lease_until
        18.0
    """
    if job.state is not JobState.RUNNING:
        raise _refuse(job, "renew", "running")
    return _evolve(job, lease_until=now + lease, updated_at=now)


def cancel(job: Job, *, now: float) -> tuple[Job, Event]:
    """Cancel a job that has not started: QUEUED to CANCELLED.

    Example::

        >>> job, _ = create(NewJob(task="t"), job_id=1, now=0.0)
        >>> cancel(job, now=1.0)[0].state.value
        'cancelled'
    """
    if job.state is not JobState.QUEUED:
        raise _refuse(job, "cancel", "queued")
    new = _evolve(job, state=JobState.CANCELLED, updated_at=now)
    return new, Event(job.id, EventKind.CANCELLED, now, job.attempts)


def requeue(job: Job, *, now: float) -> tuple[Job, Event]:
    """Give a dead job a fresh start: DEAD to QUEUED with attempts reset to zero.

    Example::

        >>> job, _ = start(create(NewJob(task="t"), job_id=1, now=0.0)[0],
        ...                now=0.0, lease=10.0)
        >>> job, _ = settle(job, Failure(1, 1, "boom", retry_at=None), now=1.0)
        >>> job, _ = requeue(job, now=2.0)
        >>> job.state.value, job.attempts, job.run_at
        ('queued', 0, 2.0)
    """
    if job.state is not JobState.DEAD:
        raise _refuse(job, "requeue", "dead")
    new = _evolve(
        job,
        state=JobState.QUEUED,
        attempts=0,
        run_at=now,
        retry_delay=None,
        updated_at=now,
    )
    return new, Event(job.id, EventKind.REQUEUED, now, 0)


def discard(job: Job, *, now: float) -> tuple[Job, Event]:
    """Give up on a dead job for good: DEAD to CANCELLED.

    Example::

        >>> job, _ = start(create(NewJob(task="t"), job_id=1, now=0.0)[0],
        ...                now=0.0, lease=10.0)
        >>> job, _ = settle(job, Failure(1, 1, "boom", retry_at=None), now=1.0)
        >>> discard(job, now=2.0)[0].state.value
        'cancelled'
    """
    if job.state is not JobState.DEAD:
        raise _refuse(job, "discard", "dead")
    new = _evolve(job, state=JobState.CANCELLED, updated_at=now)
    return new, Event(job.id, EventKind.DISCARDED, now, job.attempts)


def claim_order(job: Job) -> tuple[int, float, int]:
    """Sort key for due jobs: higher priority first, then earlier ``run_at``, then id.

    Every store claims in this order, so they agree job for job.

    Example::

        >>> a, _ = create(NewJob(task="t", priority=5), job_id=2, now=0.0)
        >>> b, _ = create(NewJob(task="t"), job_id=1, now=0.0)
        >>> [j.id for j in sorted([b, a], key=claim_order)]
        [2, 1]
    """
    return (-job.priority, job.run_at, job.id)
