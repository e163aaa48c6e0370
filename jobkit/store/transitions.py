"""The pure steps a store applies, for stores written outside jobkit.

A store never decides how a job moves on: it loads the job, calls one of
these functions with ``now``, and writes back the job and the event it
returns, all in one transaction. Claims take due QUEUED jobs in
:func:`claim_order`; a store that sorts in SQL restates that order (and
jobkit's tests prove its own stores agree). Schedules fire through
:func:`fire_all`, once per slot.

Example::

    >>> from jobkit.store import NewJob, Success
    >>> from jobkit.store.transitions import create, settle, start
    >>> job, _ = create(NewJob(task="t"), job_id=1, now=0.0)
    >>> job, _ = start(job, now=1.0, lease=30.0)
    >>> job, event = settle(job, Success(job_id=1, attempt=1), now=2.0)
    >>> job.state.value, event.kind.value
    ('succeeded', 'succeeded')
"""

from __future__ import annotations

from ..core.job import ACTIVE_STATES as ACTIVE_STATES
from ..core.job import EXPIRED_ERROR as EXPIRED_ERROR
from ..core.job import TERMINAL_STATES as TERMINAL_STATES
from ..core.job import TransitionError as TransitionError
from ..core.job import attempt_limit as attempt_limit
from ..core.job import cancel as cancel
from ..core.job import claim_order as claim_order
from ..core.job import create as create
from ..core.job import discard as discard
from ..core.job import dump_json as dump_json
from ..core.job import expire as expire
from ..core.job import lease_expired as lease_expired
from ..core.job import owns as owns
from ..core.job import renew as renew
from ..core.job import requeue as requeue
from ..core.job import settle as settle
from ..core.job import settled_kind as settled_kind
from ..core.job import start as start
from ..core.schedule import check_schedule as check_schedule
from ..core.schedule import due as due
from ..core.schedule import fire_all as fire_all
from ..core.schedule import slot_key as slot_key
from ..core.schedule import warn_dropped as warn_dropped
from .tallies import tally_events as tally_events

__all__ = [
    "ACTIVE_STATES",
    "EXPIRED_ERROR",
    "TERMINAL_STATES",
    "TransitionError",
    "attempt_limit",
    "cancel",
    "check_schedule",
    "claim_order",
    "create",
    "discard",
    "due",
    "dump_json",
    "expire",
    "fire_all",
    "lease_expired",
    "owns",
    "renew",
    "requeue",
    "settle",
    "settled_kind",
    "slot_key",
    "start",
    "tally_events",
    "warn_dropped",
]
