"""The :class:`jobkit.Queue` facade: tasks, enqueueing, inspection, schedules.

- ``facade.py``: :class:`~jobkit.Queue`, looking at jobs, operating on them
  (cancel, requeue, discard, purge, wait) and schedules;
- ``base.py``: what it builds on: the store, the clock, the task registry,
  and enqueueing;
- ``task.py``: :class:`~jobkit.Task` and :class:`~jobkit.TaskOptions`, and
  how a call's arguments become a payload;
- ``prepared.py``: :class:`~jobkit.PreparedJob`, an enqueue request;
- ``wakeup.py``: who in this process is told when a job or schedule changes.

The public names are exported from :mod:`jobkit`.
"""
