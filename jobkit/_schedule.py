"""Schedules: periodic and cron jobs, their slots, and what happens after downtime.

A :class:`Schedule` is a stored record: which task to enqueue with which
payload, on which grid of instants (``every`` seconds, or a ``cron``
expression in a time zone), and the misfire policy that decides what to do
with slots that fell due while no worker was running. Everything here is
pure: :func:`due` takes a schedule and "now" and returns the slots to enqueue
and the schedule's next version, so both stores, the tests and the book share
one definition.

Slots and on-time firing
    A slot is an instant on the schedule's grid; each one is enqueued at most
    once, as a job whose ``unique_key`` is ``schedule:<name>:<slot>``. A
    schedule whose next slot is due while the slot after it is not is *on
    time*, however late within that one period: it enqueues just that slot
    and stays on its grid, under every policy. (A worker wakes at the slot,
    or within its poll interval; that small lateness must not move a DELAY
    schedule bit by bit.)

Misfires
    When two or more slots are due, slots were *missed* (no worker ran
    through them), and :class:`~jobkit.MissedTickBehavior` decides, as it
    does for :func:`jobkit.interval`:

    ========  ==========================================================
    BURST     enqueue every missed slot (at most ``max_burst``, the latest
              ones; the older ones are dropped with a warning); stay on the
              grid.
    DELAY     enqueue one job, due now, for the first missed slot; then
              re-base: ``every`` schedules continue at ``now + every``,
              ``now + 2·every``...; cron schedules at the first cron time at
              least one period (the missed slot's own) after now.
    SKIP      enqueue one job for the latest missed slot, drop the others,
              stay on the grid. The default for schedules: after an outage
              of a day, a clean-up runs once, not 1440 times.
    ========  ==========================================================

Time base
    Slots are in the queue clock's seconds. ``every`` works on any clock
    (virtual seconds included); ``cron`` reads them as Unix epoch seconds,
    so a cron schedule needs a wall clock, or a virtual clock started at a
    known epoch.

Cron expressions need the optional ``croniter`` package (``pip install
'jobkit[cron]'``); ``every`` schedules need nothing.
"""

from __future__ import annotations

import json
import logging
import math
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

import attrs

from . import _html
from ._checks import stored_int
from ._duration import seconds
from ._interval import MissedTickBehavior
from ._job import JSON, NewJob, check_json

if TYPE_CHECKING:
    from croniter import croniter as _Croniter

__all__ = [
    "DEFAULT_MAX_BURST",
    "Due",
    "FireResult",
    "Firing",
    "Schedule",
    "due",
    "slot_key",
]

logger = logging.getLogger("jobkit")

DEFAULT_MAX_BURST = 100
"""How many missed slots a BURST schedule enqueues at most after an outage."""

MIN_EVERY = 0.001
"""The shortest ``every`` accepted, in seconds: below it, slots would crowd
the store (and, at epoch-sized times, stop being distinct floats)."""

_CRON_HELP = (
    "cron schedules need the croniter package: pip install 'jobkit[cron]' "
    "(or pip install croniter)"
)


# -- cron ------------------------------------------------------------------------


def _croniter() -> type[_Croniter]:
    try:
        from croniter import croniter
    except ImportError:
        raise ImportError(_CRON_HELP) from None
    return croniter


def _zone(tz: str) -> tzinfo:
    if tz == "UTC":
        return UTC
    return zoneinfo.ZoneInfo(tz)


def check_cron(expression: object) -> str:
    """Return ``expression`` if croniter accepts it; otherwise raise naming it.

    Example::

        >>> from jobkit._schedule import check_cron
        >>> check_cron("*/5 * * * *")
        '*/5 * * * *'
        >>> check_cron("*/5 * * *")
        Traceback (most recent call last):
        ...
        ValueError: cron expression '*/5 * * *' is not valid: Exactly 5, 6 or 7 ...
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(
            f"cron must be a cron expression such as '*/5 * * * *', got {expression!r}"
        )
    croniter = _croniter()
    try:
        croniter(expression, 0.0)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"cron expression {expression!r} is not valid: {exc}"
        ) from None
    return expression


def check_tz(tz: object) -> str:
    """Return the IANA name of a time zone given by name or as a ``tzinfo``.

    Example::

        >>> from jobkit._schedule import check_tz
        >>> check_tz("Europe/Paris")
        'Europe/Paris'
        >>> from datetime import UTC
        >>> check_tz(UTC)
        'UTC'
        >>> check_tz("Mars/Olympus")
        Traceback (most recent call last):
        ...
        ValueError: unknown time zone 'Mars/Olympus' (expected an IANA name ...)
    """
    if tz is UTC:
        return "UTC"
    if isinstance(tz, zoneinfo.ZoneInfo):
        return tz.key
    if not isinstance(tz, str) or not tz:
        raise TypeError(
            f"tz must be an IANA time zone name or a zoneinfo.ZoneInfo, got {tz!r}"
        )
    if tz == "UTC":
        return tz
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {tz!r} (expected an IANA name such as 'Europe/Paris')"
        ) from None
    return tz


def _cron_after(expression: str, tz: str, t: float) -> float:
    """The first cron time strictly after ``t``."""
    start = datetime.fromtimestamp(t, _zone(tz))
    return float(_croniter()(expression, start).get_next(float))


def _cron_before(expression: str, tz: str, t: float) -> float:
    """The last cron time strictly before ``t``."""
    start = datetime.fromtimestamp(t, _zone(tz))
    return float(_croniter()(expression, start).get_prev(float))


# -- the record ------------------------------------------------------------------


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a time in the queue clock's seconds, got {value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite time, got {value!r}")
    return float(value)


@attrs.frozen
class Schedule:
    """A stored periodic or cron job: what to enqueue, when, and after downtime.

    The first fields are the *definition*, given when the schedule is
    declared; ``anchor``, ``next_slot``, ``last_slot`` and the times are its
    *state*, advanced by :func:`due` each time slots are enqueued.
    Declaring a schedule again under the same name with the same definition
    keeps its state, so a restart neither repeats nor skips a slot; a
    changed definition replaces the schedule, which starts afresh.

    Build one with :meth:`create` (or :meth:`jobkit.Queue.schedule`, which
    also stores it); times are seconds on the queue's clock.

    Example::

        >>> from jobkit import Schedule
        >>> s = Schedule.create("cleanup", "purge", every=60, start=0.0, now=0.0)
        >>> s.next_slot, s.last_slot, s.misfire.value
        (0.0, None, 'skip')
        >>> s.slot_after(0.0), s.slot_after(59.5)
        (60.0, 60.0)
    """

    name: str
    task: str
    payload: dict[str, JSON] = attrs.field(factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    every: float | None = None
    """Seconds between slots, on the grid ``anchor + k·every``; or None."""
    cron: str | None = None
    """A cron expression (five fields, or six with seconds last); or None."""
    tz: str = "UTC"
    """The IANA time zone the cron expression is read in."""
    misfire: MissedTickBehavior = MissedTickBehavior.SKIP
    max_burst: int = DEFAULT_MAX_BURST
    """The most slots one BURST catch-up enqueues (the latest ones)."""
    start: float | None = None
    """The first slot as declared (None: the moment it was first stored)."""
    anchor: float = 0.0
    """The origin of an ``every`` grid; DELAY moves it to the late firing."""
    next_slot: float = 0.0
    """The earliest slot not enqueued yet."""
    last_slot: float | None = None
    """The latest slot enqueued, or None before the first."""
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def create(
        cls,
        name: str,
        task: str,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: str | tzinfo | None = None,
        payload: dict[str, JSON] | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        misfire: MissedTickBehavior = MissedTickBehavior.SKIP,
        max_burst: int = DEFAULT_MAX_BURST,
        start: float | None = None,
        now: float,
    ) -> Schedule:
        """Check a definition and return the new schedule, its first slot set.

        Give exactly one of ``every`` (seconds or a timedelta, > 0) and
        ``cron``. The first slot of an ``every`` schedule is ``start``
        (default: ``now``), as for :func:`jobkit.interval`; that of a cron
        schedule is the first cron time at or after ``start`` (default
        ``now``). ``tz`` (an IANA name, default UTC) applies to cron only.

        Example::

            >>> from jobkit import Schedule
            >>> s = Schedule.create("hourly", "report", cron="0 * * * *",
            ...                     now=1_700_000_000.0)
            >>> s.next_slot
            1700002800.0
            >>> Schedule.create("x", "t", now=0.0)
            Traceback (most recent call last):
            ...
            ValueError: schedule 'x': give either every=... or cron=..., got neither
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"schedule name must be a non-empty string, got {name!r}")
        if not isinstance(task, str) or not task:
            raise ValueError(f"task name must be a non-empty string, got {task!r}")
        if (every is None) == (cron is None):
            got = "both" if every is not None else "neither"
            raise ValueError(
                f"schedule {name!r}: give either every=... or cron=..., got {got}"
            )
        period = (
            None
            if every is None
            else seconds(every, "every", positive=True, finite=True, wording="duration")
        )
        if period is not None and period < MIN_EVERY:
            raise ValueError(
                f"every must be at least {MIN_EVERY:g} s (each slot is a stored "
                f"job), got {every!r}"
            )
        if cron is not None:
            cron = check_cron(cron)
            zone = "UTC" if tz is None else check_tz(tz)
        elif tz is not None:
            raise ValueError(
                f"schedule {name!r}: tz applies to cron schedules only, not every=..."
            )
        else:
            zone = "UTC"
        payload = {} if payload is None else payload
        if not isinstance(payload, dict):
            raise TypeError(
                f"payload must be a dict of keyword arguments, got "
                f"{type(payload).__name__}"
            )
        check_json(payload)
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"queue must be a non-empty string, got {queue!r}")
        for value, what, least in (
            (priority, "priority", None),
            (max_attempts, "max_attempts", 1),
            (max_burst, "max_burst", 1),
        ):
            stored_int(value, what, minimum=least)
        if not isinstance(misfire, MissedTickBehavior):
            raise TypeError(
                f"misfire must be a jobkit.MissedTickBehavior, got {misfire!r}"
            )
        now = _finite(now, "now")
        first = now if start is None else _finite(start, "start")
        schedule = cls(
            name=name,
            task=task,
            payload=payload,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            every=period,
            cron=cron,
            tz=zone,
            misfire=misfire,
            max_burst=max_burst,
            start=None if start is None else first,
            anchor=first,
            next_slot=first,
            created_at=now,
            updated_at=now,
        )
        if cron is not None:
            schedule = attrs.evolve(
                schedule, next_slot=schedule.slot_at_or_after(first)
            )
        return schedule

    # -- the definition ----------------------------------------------------------

    @property
    def definition(self) -> tuple[Any, ...]:
        """The declared fields; equal definitions keep the stored state.

        Example::

            >>> from jobkit import Schedule
            >>> a = Schedule.create("s", "t", every=5, now=0.0)
            >>> b = Schedule.create("s", "t", every=5, now=99.0)
            >>> a.definition == b.definition, a.next_slot == b.next_slot
            (True, False)
        """
        return (
            self.name,
            self.task,
            self.payload,
            self.queue,
            self.priority,
            self.max_attempts,
            self.every,
            self.cron,
            self.tz,
            self.misfire,
            self.max_burst,
            self.start,
        )

    @property
    def spec(self) -> str:
        """The grid in words: ``"every 300s"`` or ``"cron */5 * * * * (UTC)"``.

        Example::

            >>> from jobkit import Schedule
            >>> Schedule.create("s", "t", every=300, now=0.0).spec
            'every 300s'
        """
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron} ({self.tz})"

    def _repr_html_(self) -> str:
        pairs: list[tuple[str, object]] = [
            ("task", f"{self.task} on {self.queue!r}"),
            ("payload", json.dumps(self.payload, ensure_ascii=False)),
            ("grid", self.spec),
            (
                "after downtime",
                self.misfire.name
                + (
                    f" (at most {self.max_burst} slots)"
                    if self.misfire is MissedTickBehavior.BURST
                    else ""
                ),
            ),
            ("next slot", _html.when(self.next_slot)),
            ("last slot", _html.when(self.last_slot)),
        ]
        return _html.fields(pairs, title=f"schedule {self.name!r}")

    # -- slot arithmetic ---------------------------------------------------------

    def _index(self, t: float) -> int:
        """The k of the last grid slot at or before ``t`` (every only)."""
        assert self.every is not None
        k = math.floor((t - self.anchor) / self.every)
        # Division rounds; the slot itself is what must compare right.
        while self.anchor + (k + 1) * self.every <= t:
            k += 1
        while self.anchor + k * self.every > t:
            k -= 1
        return k

    def _slot(self, k: int) -> float:
        assert self.every is not None
        return self.anchor + k * self.every

    def slot_after(self, t: float) -> float:
        """Return the first slot of this schedule's grid strictly after ``t``.

        Example::

            >>> from jobkit import Schedule
            >>> Schedule.create("s", "t", every=10, start=5.0, now=0.0).slot_after(25.0)
            35.0
        """
        if self.every is not None:
            return self._slot(self._index(t) + 1)
        assert self.cron is not None
        return _cron_after(self.cron, self.tz, t)

    def slot_at_or_before(self, t: float) -> float:
        """Return the last slot of the grid at or before ``t``.

        Example::

            >>> from jobkit import Schedule
            >>> s = Schedule.create("s", "t", every=10, start=5.0, now=0.0)
            >>> s.slot_at_or_before(25.0), s.slot_at_or_before(24.9)
            (25.0, 15.0)
        """
        if self.every is not None:
            return self._slot(self._index(t))
        assert self.cron is not None
        # Cron times are whole seconds: look at the second t falls in first.
        whole = math.floor(t)
        candidate = _cron_after(self.cron, self.tz, whole - 1)
        return candidate if candidate <= t else _cron_before(self.cron, self.tz, whole)

    def slot_at_or_after(self, t: float) -> float:
        """Return the first slot of the grid at or after ``t``.

        Example::

            >>> from jobkit import Schedule
            >>> s = Schedule.create("s", "t", every=10, start=5.0, now=0.0)
            >>> s.slot_at_or_after(25.0), s.slot_at_or_after(25.1)
            (25.0, 35.0)
        """
        if self.every is not None:
            k = self._index(t)
            return self._slot(k) if self._slot(k) >= t else self._slot(k + 1)
        assert self.cron is not None
        whole = math.ceil(t)
        candidate = _cron_before(self.cron, self.tz, whole + 1)
        return candidate if candidate >= t else _cron_after(self.cron, self.tz, whole)

    def due(self, now: float) -> Due:
        """Return the slots to enqueue at ``now`` and the advanced schedule.

        The same as :func:`due`, which documents the rules.

        Example::

            >>> from jobkit import Schedule
            >>> s = Schedule.create("s", "t", every=10, start=0.0, now=0.0)
            >>> s.due(35.0).slots                     # SKIP: only the latest
            [(30.0, 30.0)]
        """
        return due(self, now)

    def to_dict(self) -> dict[str, JSON]:
        """Return every field as JSON data (what ``jobkit schedules --json`` prints).

        Example::

            >>> from jobkit import Schedule
            >>> Schedule.create("s", "t", every=5, now=0.0).to_dict()["misfire"]
            'skip'
        """
        data: dict[str, JSON] = attrs.asdict(self, recurse=False)
        data["misfire"] = self.misfire.value
        data["payload"] = dict(self.payload)
        return data


def check_schedule(schedule: object) -> Schedule:
    """Refuse what a store must not keep: not a :class:`Schedule`, or a broken one.

    Example::

        >>> from jobkit import Schedule
        >>> from jobkit._schedule import check_schedule
        >>> check_schedule("every minute")
        Traceback (most recent call last):
        ...
        TypeError: expected a jobkit.Schedule (see Schedule.create), got 'every minute'
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"expected a jobkit.Schedule (see Schedule.create), got {schedule!r}"
        )
    if (schedule.every is None) == (schedule.cron is None):
        raise ValueError(
            f"schedule {schedule.name!r} must have exactly one of every and cron"
        )
    if not isinstance(schedule.payload, dict):
        raise TypeError(
            f"schedule {schedule.name!r}: payload must be a dict, got "
            f"{type(schedule.payload).__name__}"
        )
    check_json(schedule.payload)
    return schedule


def slot_key(name: str, slot: float) -> str:
    """Return the unique key of the job for ``slot`` of schedule ``name``.

    Example::

        >>> from jobkit._schedule import slot_key
        >>> slot_key("cleanup", 60.0)
        'schedule:cleanup:60.0'
    """
    return f"schedule:{name}:{slot!r}"


# -- firing -----------------------------------------------------------------------


@attrs.frozen
class Due:
    """What :func:`due` decided: the slots to enqueue and the advanced schedule.

    ``slots`` holds ``(slot, run_at)`` pairs, oldest first. ``run_at`` is the
    slot itself (a late slot is due at once, and its ``run_at`` shows how late
    it is), except for DELAY's one late job, which is due ``now``.
    ``dropped`` is set when BURST hit ``max_burst``: the first and the last
    slot that were not enqueued.

    Example::

        >>> from jobkit import Schedule
        >>> from jobkit._schedule import due
        >>> s = Schedule.create("s", "t", every=10, start=0.0, now=0.0)
        >>> d = due(s, 0.0)
        >>> d.slots, d.schedule.next_slot, d.dropped
        ([(0.0, 0.0)], 10.0, None)
    """

    slots: list[tuple[float, float]]
    schedule: Schedule
    dropped: tuple[float, float] | None = None

    def jobs(self) -> list[NewJob]:
        """Return the jobs to enqueue for :attr:`slots`, one per slot.

        Example::

            >>> from jobkit import Schedule
            >>> from jobkit._schedule import due
            >>> s = Schedule.create("s", "t", every=10, start=0.0, now=0.0)
            >>> [job.unique_key for job in due(s, 0.0).jobs()]
            ['schedule:s:0.0']
        """
        s = self.schedule
        return [
            NewJob(
                task=s.task,
                payload=dict(s.payload),
                queue=s.queue,
                priority=s.priority,
                run_at=run_at,
                max_attempts=s.max_attempts,
                unique_key=slot_key(s.name, slot),
            )
            for slot, run_at in self.slots
        ]


def due(schedule: Schedule, now: float) -> Due:
    """Return the slots of ``schedule`` to enqueue at ``now``, and its next version.

    Nothing is due before ``next_slot``. When only ``next_slot`` is due, that
    slot is enqueued and the schedule moves to the following one, whatever
    the misfire policy. When more are due, the policy decides (see the
    module's documentation): BURST enqueues each (at most ``max_burst``, the
    latest), SKIP only the latest, DELAY one job due now and re-bases. After
    the call, ``next_slot`` is always after ``now``.

    Example: a schedule every 10 s from 0, and no worker between 15 and 47::

        >>> import attrs
        >>> from jobkit import Schedule
        >>> from jobkit._schedule import due
        >>> from jobkit import MissedTickBehavior as M
        >>> s = Schedule.create("s", "t", every=10, start=0.0, now=0.0)
        >>> s = due(due(s, 0.0).schedule, 10.0).schedule    # on time: 0, then 10
        >>> for policy in M:
        ...     d = due(attrs.evolve(s, misfire=policy), 47.0)
        ...     print(policy.value, d.slots, d.schedule.next_slot)
        burst [(20.0, 20.0), (30.0, 30.0), (40.0, 40.0)] 50.0
        delay [(20.0, 47.0)] 57.0
        skip [(40.0, 40.0)] 50.0
    """
    s = schedule
    first = s.next_slot
    if first > now:
        return Due([], s)
    second = s.slot_after(first)
    dropped: tuple[float, float] | None = None
    if second > now:
        slots = [(first, first)]
        advanced = attrs.evolve(s, next_slot=second)
    elif s.misfire is MissedTickBehavior.SKIP:
        latest = s.slot_at_or_before(now)
        slots = [(latest, latest)]
        advanced = attrs.evolve(s, next_slot=s.slot_after(latest))
    elif s.misfire is MissedTickBehavior.DELAY:
        slots = [(first, now)]
        if s.every is not None:
            advanced = attrs.evolve(s, anchor=now, next_slot=now + s.every)
        else:
            # A cron grid cannot move; keep at least the missed slot's own
            # period of rest before the next run, as DELAY does for every.
            advanced = attrs.evolve(
                s, next_slot=s.slot_at_or_after(now + second - first)
            )
    else:
        picked, dropped = _burst(s, first, now)
        slots = [(slot, slot) for slot in picked]
        advanced = attrs.evolve(s, next_slot=s.slot_after(picked[-1]))
    advanced = attrs.evolve(advanced, last_slot=slots[-1][0], updated_at=now)
    return Due(slots, advanced, dropped)


def _burst(
    s: Schedule, first: float, now: float
) -> tuple[list[float], tuple[float, float] | None]:
    """The due slots from ``first`` to ``now``: the latest ``max_burst`` of them."""
    if s.every is not None:
        k_first = s._index(first)
        k_last = s._index(now)
        k_keep = max(k_first, k_last - s.max_burst + 1)
        picked = [s._slot(k) for k in range(k_keep, k_last + 1)]
        if k_keep == k_first:
            return picked, None
        return picked, (s._slot(k_first), s._slot(k_keep - 1))
    # Walk back from now: at most max_burst + 1 cron steps, however long the
    # outage, so that a year of minutes costs no more than a short one.
    latest = s.slot_at_or_before(now)
    back = [latest]
    assert s.cron is not None
    while len(back) <= s.max_burst and back[-1] > first:
        back.append(_cron_before(s.cron, s.tz, back[-1]))
    if len(back) <= s.max_burst:
        return back[::-1], None
    return back[-2::-1], (first, back[-1])


def warn_dropped(schedule: Schedule, dropped: tuple[float, float] | None) -> None:
    """Log a warning on logger ``jobkit`` for slots a BURST catch-up left out.

    Example::

        >>> from jobkit import Schedule
        >>> from jobkit._schedule import warn_dropped
        >>> warn_dropped(Schedule.create("s", "t", every=1, now=0.0), None)
    """
    if dropped is None:
        return
    logger.warning(
        "schedule %r missed more than max_burst=%d slots; enqueued the latest "
        "%d and dropped the slots from %r to %r",
        schedule.name,
        schedule.max_burst,
        schedule.max_burst,
        dropped[0],
        dropped[1],
        extra={
            "schedule": schedule.name,
            "task": schedule.task,
            "queue": schedule.queue,
            "dropped_from": dropped[0],
            "dropped_to": dropped[1],
        },
    )


@attrs.frozen
class Firing:
    """A job that :meth:`~jobkit.ScheduleStore.fire_schedules` enqueued for a slot.

    Example::

        >>> from jobkit import Firing
        >>> f = Firing("cleanup", "purge", "default", slot=60.0, run_at=60.0, job_id=3)
        >>> f.task, f.job_id
        ('purge', 3)
    """

    schedule: str
    task: str
    queue: str
    slot: float
    run_at: float
    job_id: int


@attrs.frozen
class FireResult:
    """What one :meth:`~jobkit.ScheduleStore.fire_schedules` call did.

    ``firings`` lists the jobs enqueued, by schedule name then slot;
    ``next_slot`` is the earliest slot still to come across all schedules
    (None when there are none), so a worker knows when to look again.

    Example::

        >>> from jobkit import FireResult
        >>> FireResult([], next_slot=None).firings
        []
    """

    firings: list[Firing]
    next_slot: float | None


def fire_all(schedules: Sequence[Schedule], now: float) -> list[tuple[Schedule, Due]]:
    """Return ``(schedule, due)`` for every schedule with a slot due at ``now``.

    Stores call this inside the transaction that enqueues the jobs and saves
    the advanced schedules, so that the two commit together.

    Example::

        >>> from jobkit import Schedule
        >>> from jobkit._schedule import fire_all
        >>> s = Schedule.create("s", "t", every=10, start=0.0, now=0.0)
        >>> [(old.name, d.slots) for old, d in fire_all([s], 25.0)]
        [('s', [(20.0, 20.0)])]
    """
    plans = []
    for schedule in sorted(schedules, key=lambda s: s.name):
        if schedule.next_slot <= now:
            plans.append((schedule, due(schedule, now)))
    return plans
